"""Repeated frames: a video file that holds the same picture twice in a row.

Many video files hold fewer distinct pictures than frames. Capture software that cannot keep up
writes the previous picture again to keep its nominal frame rate (dropped frames); a camera read out at
15 frames/s into a 30 frames/s file writes every picture twice; a recording converted to a standard
rate (25 → 30 frames/s) repeats every fifth picture. The file's frame rate is then not the rate at which
the particles were sampled. A repeated picture is a step of exactly zero for every particle, which the
diffusion estimators read as slower motion and a smaller localisation noise: on the bundled 100 nm
sample, one repeat per five pictures moved the D50 by +6 % (D10 +20 %), one per ten by +3 %, and with every
picture written twice no track was sized at all (half the steps are zero, so the sample's own search
radius, :func:`exonta.track.quality.sample_search_range_um`, measured from the median step, came out 0).

Detection (:class:`FrameChanges`, :func:`find_repeated_frames`): the mean absolute difference of each
frame from the one before, over every :data:`ROW_STEP`-th row (computed while the frames are read for
detection, outside the burned-in overlays: capture software may draw its time stamp afresh on a repeated
picture). Two distinct frames differ by the camera noise and the particles' motion; a repeat differs by
nothing (lossless files, MJPEG) or by a lossy codec's rounding (MPEG-4: 0.07–0.10 grey levels on the
bundled 100 nm sample against 1.3–1.7 between its distinct frames). A frame that did not change at all is
a repeat. A frame that changed by at most :data:`REPEAT_FRACTION` of the distinct frames' level
(:data:`REFERENCE_QUANTILE` of all changes, so that up to 90 % of the frames may be repeats) is one too,
provided the changes fall in two clear groups (at most :data:`AMBIGUOUS_SHARE` of the frames between
that and :data:`DISTINCT_FRACTION` of the level): in a noise-free dark field with a few particles the
change follows their motion and varies continuously, and no frame is then taken for a codec's repeat.
On the 20 generated real-like recordings (bright-field and fluorescence, JPEG folders and MJPEG AVIs), the
three bundled samples and the 1500-frame benchmark video, no frame changed by less than 0.56 of the level.

Timing: the distinct pictures are taken as sampled at a uniform rate, ``fps × (slope)⁻¹`` with the slope
of a straight line through their frame indices — exact for a rate conversion or a constant
multiple (every picture written 2 or 3 times), and right on average for dropped frames (the mean time
between the distinct pictures is the same; its spread is not modelled). When the distinct pictures stray
by more than :data:`IRREGULAR_FRAMES` frames from that line (dropped frames in bursts), the result says
that the sampling was irregular.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit

__all__ = ["IRREGULAR_FRAMES", "REFERENCE_QUANTILE", "REPEAT_FRACTION", "ROW_STEP", "FrameChanges", "RepeatedFrames",
           "analysed_frame_count", "drop_repeated", "find_repeated_frames", "frame_changes"]

#: Every ROW_STEP-th row enters a frame's change (a spot of sigma ≥ 1 px has ≥ 1/3 of its peak on one).
ROW_STEP = 4
#: A frame that changed, but by at most this share of the distinct frames' change, is a repeat (a lossy codec's
#: rounding) — when the changes fall in two clear groups: at most :data:`AMBIGUOUS_SHARE` of the frames between
#: this and :data:`DISTINCT_FRACTION`.
REPEAT_FRACTION = 0.1
#: Changes of at least this share of the distinct frames' level are distinct frames.
DISTINCT_FRACTION = 0.4
#: Largest share of frames with a change between the two groups for the codec's repeats to be taken.
AMBIGUOUS_SHARE = 0.01
#: Quantile of all changes taken as the distinct frames' level.
REFERENCE_QUANTILE = 0.9
#: Largest offset (frames) of a distinct picture from uniform sampling before the sampling is called irregular.
IRREGULAR_FRAMES = 1.5


@njit(cache=True, nogil=True, fastmath=True)
def _row_abs_diff(a, b, integer):
    """``Σ_x |a[x] − b[x]|`` of two rows: exact in int32 for integer rows, float64 otherwise."""
    if integer:
        acc = 0
        for x in range(a.shape[0]):
            d = np.int32(a[x]) - np.int32(b[x])
            acc += d if d >= 0 else -d
        return np.float64(acc)
    facc = 0.0
    for x in range(a.shape[0]):
        facc += abs(np.float64(a[x]) - np.float64(b[x]))
    return facc


@njit(cache=True, nogil=True)
def _row_changes(prev, frames, row_step, integer, out):
    """``out[i]`` = sum of ``|frames[i] − frames[i−1]|`` over rows ``0, row_step, …`` (``frames[−1]`` =
    ``prev``; NaN for ``i = 0`` when ``prev`` has no rows)."""
    k, h, w = frames.shape
    for i in range(k):
        if i == 0 and prev.shape[0] == 0:
            out[0] = np.nan
            continue
        s = 0.0
        for y in range(0, h, row_step):
            s += _row_abs_diff(frames[i, y], frames[i - 1, y] if i > 0 else prev[y], integer)
        out[i] = s


def frame_changes(frames: np.ndarray, previous: np.ndarray | None = None, row_step: int = ROW_STEP,
                  exclude_regions=()) -> np.ndarray:
    """Mean absolute change of each frame from the one before, over every ``row_step``-th row.

    Parameters
    ----------
    frames : ndarray (k, h, w)
        Grey frames (uint8, uint16 or float).
    previous : ndarray (h, w), optional
        The frame before ``frames[0]``; without it the first change is NaN.
    row_step : int
    exclude_regions : sequence of (x0, y0, x1, y1)
        Rectangles (px, half-open) left out: a burned-in clock that capture software draws afresh on a
        repeated picture.

    Returns
    -------
    ndarray of float64, shape (k,)
    """
    from .overlay import regions_mask

    a = np.ascontiguousarray(frames)
    prev = np.zeros((0, 0), a.dtype) if previous is None else np.ascontiguousarray(previous, dtype=a.dtype)
    out = np.empty(a.shape[0], np.float64)
    if not a.shape[0]:
        return out
    _row_changes(prev, a, int(row_step), a.dtype.kind in "ui", out)
    h, w = a.shape[1:]
    rows = np.arange(0, h, int(row_step))
    n_pix = rows.size * w
    if len(exclude_regions):
        mask = regions_mask((h, w), exclude_regions)[rows]
        if mask.any():  # subtract the rectangles' share of the sums (exact for integer frames)
            inside = a[:, rows][:, mask].astype(np.float64)
            before = np.concatenate([prev[rows][mask][None].astype(np.float64) if prev.shape[0] else inside[:1],
                                     inside[:-1]])
            out -= np.abs(inside - before).sum(axis=1)
            n_pix -= int(mask.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return out / n_pix if n_pix > 0 else np.full(a.shape[0], np.nan)


class FrameChanges:
    """Accumulates :func:`frame_changes` chunk by chunk, in frame order (``exonta.detect.locate_frames``
    fills it while it reads the frames), leaving out ``exclude_regions`` (burned-in overlays)."""

    def __init__(self, exclude_regions=()) -> None:
        self.exclude_regions = list(exclude_regions)
        self._parts: list[np.ndarray] = []
        self._last: np.ndarray | None = None
        self._next = 0

    def add(self, first: int, frames: np.ndarray) -> None:
        """Add the changes of ``frames`` (frame indices ``first …``); chunks must come in order."""
        if first != self._next:
            raise ValueError(f"frame changes: chunk starts at frame {first}, expected {self._next}")
        if frames.shape[0] == 0:
            return
        self._parts.append(frame_changes(frames, self._last, exclude_regions=self.exclude_regions))
        self._last = np.array(frames[-1])
        self._next = first + frames.shape[0]

    @property
    def values(self) -> np.ndarray:
        """Change of every frame added so far (NaN for frame 0)."""
        return np.concatenate(self._parts) if self._parts else np.empty(0)


@dataclass(frozen=True)
class RepeatedFrames:
    """Which frames of a video repeat the one before, and the rate of its distinct pictures.

    Attributes
    ----------
    repeated : ndarray of bool (n_frames,)
    rate_factor : float
        Sampling rate of the distinct pictures over the file's frame rate (1 without repeats).
    max_offset_frames : float
        Largest offset of a distinct picture from uniform sampling, frames.
    reference_change : float
        The distinct frames' change level (grey levels) the repeats were judged against.
    """

    repeated: np.ndarray
    rate_factor: float = 1.0
    max_offset_frames: float = 0.0
    reference_change: float = float("nan")

    @property
    def n_frames(self) -> int:
        return int(self.repeated.size)

    @property
    def n_repeated(self) -> int:
        return int(self.repeated.sum())

    @property
    def regular(self) -> bool:
        """``max_offset_frames`` ≤ :data:`IRREGULAR_FRAMES`."""
        return self.max_offset_frames <= IRREGULAR_FRAMES

    @property
    def analysed_frames(self) -> np.ndarray:
        """Indices of the distinct frames (the frames analysed)."""
        return np.flatnonzero(~self.repeated)


def find_repeated_frames(changes: np.ndarray) -> RepeatedFrames:
    """Find the frames that repeat the frame before (see the module docstring).

    Parameters
    ----------
    changes : ndarray (n_frames,)
        :func:`frame_changes` of every frame in order (the first NaN).

    Returns
    -------
    RepeatedFrames
    """
    c = np.asarray(changes, float)
    finite = c[np.isfinite(c)]
    if finite.size < 2:
        return RepeatedFrames(np.zeros(c.size, bool))
    ref = float(np.quantile(finite, REFERENCE_QUANTILE))
    if not ref > 0:  # every frame the same picture: nothing to tell apart
        return RepeatedFrames(np.zeros(c.size, bool), reference_change=ref)
    rep = c == 0.0  # the same picture, bit for bit (lossless files, MJPEG)
    near = np.isfinite(c) & (c > 0.0) & (c <= REPEAT_FRACTION * ref)  # a lossy codec's rounding of a repeat
    between = np.isfinite(c) & (c > REPEAT_FRACTION * ref) & (c < DISTINCT_FRACTION * ref)
    if near.any() and between.sum() <= AMBIGUOUS_SHARE * finite.size:
        rep |= near
    idx = np.flatnonzero(~rep).astype(float)
    if not rep.any() or idx.size < 2:
        return RepeatedFrames(rep, 1.0 if not rep.any() else 1.0 / c.size, reference_change=ref)
    j = np.arange(idx.size, dtype=float)
    slope, intercept = np.polyfit(j, idx, 1)
    offset = float(np.max(np.abs(idx - (intercept + slope * j))))
    return RepeatedFrames(rep, float(1.0 / slope), offset, ref)


def analysed_frame_count(input_info: dict) -> int:
    """Frames an analysis used: the file's ``n_frames`` less the repeated frames left out
    (``input["repeated_frames"]`` of a result)."""
    return int((input_info.get("repeated_frames") or {}).get("n_frames_analysed", input_info["n_frames"]))


def drop_repeated(features: pd.DataFrame, repeats: RepeatedFrames) -> pd.DataFrame:
    """Leave out the detections of repeated frames and number the distinct frames 0, 1, … in order.

    The file's frame index is kept in a column ``video_frame`` (to draw the detections over the video).

    Parameters
    ----------
    features : DataFrame
        Detections with ``frame`` (the file's frame index).
    repeats : RepeatedFrames

    Returns
    -------
    DataFrame
        A new table (the input is not changed); ``features`` itself when no frame repeats.
    """
    if repeats.n_repeated == 0:
        return features
    frame = features["frame"].to_numpy(np.int64)
    rank = np.cumsum(~repeats.repeated) - 1
    keep = ~repeats.repeated[frame]
    out = features.loc[keep].copy()
    out.insert(out.columns.get_loc("frame") + 1, "video_frame", frame[keep])
    out["frame"] = rank[frame[keep]].astype(np.int64)
    return out.reset_index(drop=True)
