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
nothing (lossless files, MJPEG) or by what a lossy codec does to a repeated picture: MPEG-4 rounds it
(0.07–0.10 grey levels on the bundled 100 nm sample against 1.3–1.7 between its distinct frames), H.264
(x264) codes a refinement of the copy it already sent, so its repeats change by up to 0.37 of the distinct
frames' level (CRF 18–28, every picture written twice, or every fifth repeated) while its distinct frames
change by at least 0.61 of it. A frame that did not change at all is a repeat. The others are split in two
groups at a threshold ``t`` when the changes leave a gap there: the largest ``t`` between
:data:`REPEAT_FRACTION` and :data:`MAX_REPEAT_FRACTION` of the level (:data:`REFERENCE_QUANTILE` of all
changes, so that up to 90 % of the frames may be repeats) with at most :data:`AMBIGUOUS_SHARE` of the frames
in ``[t, GAP_FACTOR·t)`` and at least one frame below it; the frames below ``t`` are repeats if their spots did
not move (:func:`confirm_near_repeats`: a distinct frame that a codec happened to change little, e.g. a coarsely
coded noise-only field, shows its spots moved; on such a field, x264 at CRF 28, one distinct frame changed by
0.34 of the level and the next-smallest by 0.55). In a noise-free
dark field with a few particles the change follows their motion and varies continuously, there is no such
gap, and only frames that did not change at all are taken. On the 20 generated real-like recordings
(bright-field and fluorescence, JPEG folders and MJPEG AVIs), the three bundled samples (also as H.264 at
CRF 18–28) and the 1500-frame benchmark video, no frame changed by less than 0.56 of the level.

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

__all__ = ["AMBIGUOUS_SHARE", "GAP_FACTOR", "IRREGULAR_FRAMES", "MAX_REPEAT_FRACTION", "REFERENCE_QUANTILE",
           "REPEAT_FRACTION", "ROW_STEP", "FrameChanges", "RepeatedFrames",
           "analysed_frame_count", "frames_on_grid",
           "confirm_near_repeats", "drop_repeated", "find_repeated_frames", "frame_changes",
           "nearest_previous_distances_px", "spot_shifts_px"]

#: Every ROW_STEP-th row enters a frame's change (a spot of sigma ≥ 1 px has ≥ 1/3 of its peak on one).
ROW_STEP = 4
#: Smallest threshold (share of the distinct frames' level) below which changed frames may be taken as repeats.
REPEAT_FRACTION = 0.1
#: Largest such threshold: distinct frames of real videos changed by ≥ 0.56 of the level, H.264 repeats by ≤ 0.37.
MAX_REPEAT_FRACTION = 0.45
#: Width (ratio) of the band above the threshold that must be (nearly) empty: two clear groups.
GAP_FACTOR = 1.35
#: Largest share of the frames allowed in that band.
AMBIGUOUS_SHARE = 0.01
#: A changed frame below the gap is a repeat only if its spots moved at most this share of the distinct frames'
#: (median distance to the nearest spot of the frame before; :func:`confirm_near_repeats`).
STILL_FRACTION = 0.3
#: Fewest detections in a frame (and in the frame before) for that distance.
MIN_SPOTS = 3
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


def _repeat_threshold(ratios: np.ndarray, n_frames: int) -> float | None:
    """Largest gap threshold for the changed frames' ``ratios`` (change over the level), or None."""
    s = np.sort(ratios)
    allowed = AMBIGUOUS_SHARE * n_frames
    for t in np.geomspace(MAX_REPEAT_FRACTION, REPEAT_FRACTION, 64):
        below = np.searchsorted(s, t, side="left")
        if below == 0:
            return None  # no changed frame below any smaller threshold either
        if np.searchsorted(s, GAP_FACTOR * t, side="left") - below <= allowed:
            return float(t)
    return None


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
    t = _repeat_threshold(finite[finite > 0.0] / ref, finite.size)
    if t is not None:  # a lossy codec's version of a repeat
        rep |= np.isfinite(c) & (c > 0.0) & (c < t * ref)
    return _timed(rep, ref)


def _timed(rep: np.ndarray, ref: float) -> RepeatedFrames:
    """The repeated frames ``rep`` with the distinct pictures' rate and regularity."""
    idx = np.flatnonzero(~rep).astype(float)
    if not rep.any() or idx.size < 2:
        return RepeatedFrames(rep, 1.0 if not rep.any() else 1.0 / rep.size, reference_change=ref)
    j = np.arange(idx.size, dtype=float)
    slope, intercept = np.polyfit(j, idx, 1)
    offset = float(np.max(np.abs(idx - (intercept + slope * j))))
    return RepeatedFrames(rep, float(1.0 / slope), offset, ref)


def spot_shifts_px(features: pd.DataFrame, frames: np.ndarray) -> np.ndarray:
    """Median distance (px) from the detections of each of ``frames`` to the nearest detection of the frame
    before; NaN where either frame has fewer than :data:`MIN_SPOTS` detections."""
    return np.array([float(np.median(d)) if d.size else np.nan
                     for d in nearest_previous_distances_px(features, frames, MIN_SPOTS)])


def nearest_previous_distances_px(features: pd.DataFrame, frames: np.ndarray, min_spots: int = 1) -> list[np.ndarray]:
    """For each of ``frames``: the distance (px) from each of its detections to the nearest detection of the frame
    before; an empty array where either frame has fewer than ``min_spots`` detections (at least 1)."""
    from scipy.spatial import cKDTree

    f = features["frame"].to_numpy(np.int64)
    order = np.argsort(f, kind="stable")
    f_sorted = f[order]
    xy = np.column_stack([features["x"].to_numpy(float), features["y"].to_numpy(float)])[order]

    def spots(k):
        lo, hi = np.searchsorted(f_sorted, [k, k + 1])
        return xy[lo:hi]

    need = max(int(min_spots), 1)
    out = []
    for k in np.asarray(frames, np.int64):
        a, b = spots(k), spots(k - 1)
        out.append(cKDTree(b).query(a)[0] if len(a) >= need and len(b) >= need else np.zeros(0))
    return out


def _finite_median(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    return float(np.median(v)) if v.size else float("nan")


def confirm_near_repeats(repeats: RepeatedFrames, changes: np.ndarray, features: pd.DataFrame) -> RepeatedFrames:
    """Keep the changed frames taken as repeats only if their spots did not move.

    A lossy codec's repeat changes a little, but its particles stay where they were; a distinct frame that a
    codec happened to change little (coarsely coded, a noise-only field) shows them moved. The median
    :func:`spot_shifts_px` of the changed repeats must be at most :data:`STILL_FRACTION` of the distinct
    frames' (up to 200 of them, evenly spaced); otherwise, or when either cannot be measured (fewer than
    :data:`MIN_SPOTS` detections), only the frames that did not change at all stay repeats.
    """
    c = np.asarray(changes, float)
    near = repeats.repeated & (c > 0.0)
    if not near.any():
        return repeats
    distinct = np.flatnonzero(~repeats.repeated[1:]) + 1
    distinct = distinct[np.unique(np.linspace(0, distinct.size - 1, min(200, distinct.size)).astype(int))]
    still = _finite_median(spot_shifts_px(features, np.flatnonzero(near)))
    moving = _finite_median(spot_shifts_px(features, distinct))
    if np.isfinite(still) and np.isfinite(moving) and still <= STILL_FRACTION * moving:
        return repeats
    return _timed(repeats.repeated & ~near, repeats.reference_change)


def analysed_frame_count(input_info: dict) -> int:
    """Frames an analysis used: the file's ``n_frames`` less the repeated frames left out
    (``input["repeated_frames"]`` of a result)."""
    return int((input_info.get("repeated_frames") or {}).get("n_frames_analysed", input_info["n_frames"]))


def frames_on_grid(input_info: dict) -> tuple[int, np.ndarray | None]:
    """``(n, present)``: the ``frame`` values of an analysis run over ``range(n)``; ``present`` lists those
    the movie holds when its dropped frames left gaps in the camera's time grid (``input["dropped_frames"]``
    of a result, :func:`exonta.pipeline.resolve_dropped_frames`), else None (every frame is there)."""
    dropped = input_info.get("dropped_frames")
    if not dropped:
        return analysed_frame_count(input_info), None
    n = int(dropped["n_frames_grid"])
    present = np.ones(n, bool)
    present[np.asarray(dropped.get("missing") or [], np.int64)] = False
    return n, np.flatnonzero(present)


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
