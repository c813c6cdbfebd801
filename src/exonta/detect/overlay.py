"""Burned-in overlays: text and graphics that the capture software drew into the frames.

Microscope and phone capture software often writes a time stamp, a frame counter or a scale bar
into every frame. A static overlay is part of the background and gives no spots, but a counter or
clock changes from frame to frame: its digits appear and vanish at fixed places, the detector finds
them, the linker joins them into "tracks" that jump between character cells, and those tracks look
like very fast, very small particles. On a generated recording of 1 µm beads (bright-field and
fluorescence, MJPEG) with a clock and a scale bar the D50 read 34–76 nm instead of ~1000 nm.

Overlays are drawn at the camera's extreme levels (white or black) and stay at the same place.
:func:`find_overlay_regions` flags the pixels that are at an extreme level in at least
:data:`MIN_FRAME_FRACTION` of a sample of frames spread over the video — the lit pixels of a digit
that changes, as well as static text — and returns the bounding boxes of their groups, widened by
the spot size. A moving particle that clips the camera covers a given pixel in a few frames only;
large, slow ones that clip for longer (8-bit NTA videos of EVs or 200 nm beads) are told apart by
shape — text is drawn in strokes one to three pixels wide, a clipped spot has a filled core
(:data:`MAX_SOLID_FRACTION`) — and groups in the middle of the field are not taken
(:data:`EDGE_BAND`: capture software writes at the edges and corners). Extremes that are the field's
own level are not counted: black in a dark (fluorescence) field, white in an over-exposed one. When the flagged
boxes would cover more than :data:`MAX_AREA_FRACTION` of the field nothing is excluded (a clipped
illumination, not an overlay).

Before detection the boxes are filled with the background plus noise of the frame's own level
(:func:`fill_regions`), so that the overlay's edges neither make spots nor raise the local noise
estimate (and the threshold) around it; detections inside the boxes are dropped
(:func:`drop_in_regions`), and the boxes' area is left out of the analysed area of the concentration
(:func:`excluded_pixels`).

Coloured overlays (yellow, green or cyan text, a red scale bar) are not at an extreme grey level (yellow
is ~89 % of white). In colour sources they are found by their colour instead: capture software draws them
in a saturated colour, one channel at or near the white level and another far below it, whereas a grey
scene stored as RGB (a monochrome camera, MJPEG) has channels within a few levels of each other and a
colour camera's scene (a halogen lamp's tint, a fluorescent dye) is rarely both that bright and that
saturated. A pixel whose brightest channel is at least :data:`COLOUR_TOP` of the white level and whose
channels spread by at least :data:`CHROMA_LEVEL` of the range counts like an extreme pixel, under the same
frame-share, stroke, edge and area rules. Without the brightness condition, the Airy rings of a slow 1 µm
fluorescent bead near the edge of a generated colour recording were taken for strokes; with it none of the
generated real-like recordings (bright-field with a halogen tint, green and red fluorescence) gets a box,
and yellow, green, cyan and red clocks are found in them also after JPEG q85. Not found: text in an
unsaturated or dark colour (e.g. 0, 128, 0) or in a grey level that is not extreme: give its rectangle with
``--exclude-region`` (``DetectParams.exclude_regions``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["CHROMA_LEVEL", "COLOUR_TOP", "MAX_AREA_FRACTION", "MIN_FRAME_FRACTION", "OverlayCounts", "OverlayRegions",
           "drop_in_regions", "excluded_pixels", "fill_regions", "find_overlay_regions", "noise_sigma_outside", "regions_mask"]

#: Smallest share of the sampled frames in which a pixel is at an extreme level for it to be an overlay pixel.
MIN_FRAME_FRACTION = 0.25
#: Largest share of the field the boxes may cover; above it nothing is excluded.
MAX_AREA_FRACTION = 0.2
#: Levels within this share of the range from the extreme count as extreme (JPEG/MJPEG ringing).
LEVEL_TOLERANCE = 0.04
#: The field's median level must be at least this share of the range away from an extreme for that extreme
#: to be counted (a dark fluorescence field is mostly near black, an over-exposed one near white).
FIELD_MARGIN = 0.25
#: Fewest flagged pixels of a group (a lit pixel or two is not text).
MIN_GROUP_PIXELS = 6
#: Largest share of a group's extreme pixels (summed over frames) that may lie inside a filled blob (all four
#: neighbours extreme): text is drawn in strokes one to three pixels wide, whereas a particle that clips the
#: camera has a filled core. Measured: clocks and counters (OpenCV Hershey font, MJPEG q85) 0.00–0.39 (the
#: higher values on a dark fluorescence field, where compression fills the strokes); the groups of clipped
#: particles in the bundled 8-bit ``ev`` and ``bimodal`` samples 0.55–0.76.
MAX_SOLID_FRACTION = 0.47
#: Overlays sit at the frame's edges: a group is only taken when its box reaches into the outer band of this
#: share of the frame's height or width.
EDGE_BAND = 0.25
#: Smallest spread between the colour channels (share of the range) for a pixel of a colour source, with a
#: bright channel (:data:`COLOUR_TOP`), to count as drawn in colour. Saturated overlay colours spread by the
#: whole range on their strokes (yellow, green, cyan, red, magenta: 1.0); a grey scene stored as RGB by a few
#: levels.
CHROMA_LEVEL = 0.25
#: Smallest level of the brightest channel of such a pixel (share of the white level): overlay colours are
#: drawn at full intensity; JPEG/MJPEG (q85, chroma subsampled) leaves thin green or cyan strokes at 80–95 %.
COLOUR_TOP = 0.75
# cell side (px) of the grid on which flagged pixels are grouped
_CELL = 8


def _top_level(dtype: np.dtype, sample_max: float) -> float:
    """The camera's white level: ``2^bits − 1`` of the data (12-bit data in 16-bit words: 4095), or
    the sample's maximum for float data."""
    dt = np.dtype(dtype)
    if dt.kind in "ui":
        bits = max(int(sample_max).bit_length(), 1)
        return float(min(2 ** bits - 1, np.iinfo(dt).max))
    return float(sample_max)


def bright_clip_level(dtype: Any, level: float | None = None) -> float | None:
    """Raw value at which bright pixels of integer data clip: ``level`` (``DetectParams.saturation_level``, e.g.
    4095 for a 12-bit camera in 16-bit words) capped at the type's largest value, else that largest value; None
    for float data (no known clipping level). The one rule for the fits' censoring, the spot-width measurement
    and :func:`exonta.analysis.concentration.saturation_level_of`."""
    dt = np.dtype(dtype)
    if dt.kind not in "ui":
        return None
    top = float(np.iinfo(dt).max)
    return min(float(level), top) if level is not None else top


#: Fewest sampled pixels at ``2^bits − 1`` for :func:`clipping_level` to take it as the camera's clipping level.
MIN_PIXELS_AT_CLIP = 4


def clipping_level(counts: "OverlayCounts") -> float | None:
    """The level at which a camera whose data fill fewer bits than their integer type clips, else None.

    A 10-, 12- or 14-bit camera stored in 16-bit words clips at ``2^bits − 1`` (1023, 4095, 16383), not at 65535:
    when the brightest sampled pixel is exactly ``2^bits − 1`` below the type's largest value, and at least
    :data:`MIN_PIXELS_AT_CLIP` sampled pixels sit there, that is the camera's clipping level. Stored left-aligned
    (every value a multiple of ``2^k``: the low ``k`` bits always 0) the same camera clips at the largest such
    multiple (65520 for 12 bits). Data that never reach such a value (nothing clips in the sample) keep the type's
    largest value, as do 8-bit and float data.
    """
    dt = np.dtype(counts.dtype)
    if dt.kind not in "ui" or counts.n_at_max < MIN_PIXELS_AT_CLIP or counts.sample_max < 255:
        return None
    top = int(counts.sample_max)
    tmax = int(np.iinfo(dt).max)
    if top >= tmax:
        return None
    if top == 2 ** top.bit_length() - 1:
        return float(top)
    k = 0  # left-aligned: trailing bits that no sampled value sets
    while k < 8 and not (counts.low_bits >> k) & 1:
        k += 1
    if 0 < k < 8 and top == tmax - (2 ** k - 1):
        return float(top)
    return None


@dataclass
class OverlayCounts:
    """Running per-pixel counts of extreme levels over sampled frames (one frame at a time: a sample of
    full frames is never held in memory).

    Attributes
    ----------
    high, low : ndarray of int32 (h, w)
        Frames in which the pixel was at the white / black level (within :data:`LEVEL_TOLERANCE`).
    solid : ndarray of int32 (h, w)
        Frames in which the pixel and its four neighbours were all at the same extreme level (or all
        coloured).
    colour : ndarray of int32 (h, w)
        Frames in which the pixel's brightest colour channel was at least :data:`COLOUR_TOP` of the white
        level and its channels spread by at least :data:`CHROMA_LEVEL` of the range (colour sources only).
    n_frames : int
    n_colour_frames : int
        Frames counted in ``colour``.
    field_levels : list of float
        Median level of each frame (a strided subsample of its pixels).
    sample_max : float
    dtype : numpy dtype
    """

    high: np.ndarray
    low: np.ndarray
    solid: np.ndarray
    colour: np.ndarray
    n_frames: int = 0
    n_colour_frames: int = 0
    field_levels: list = field(default_factory=list)
    sample_max: float = 0.0
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.uint8))
    n_at_max: int = 0
    low_bits: int = 0  # bitwise OR of the sampled integer values: 0 in its low k bits for left-aligned data

    @classmethod
    def for_shape(cls, shape: tuple[int, int], dtype) -> "OverlayCounts":
        h, w = (int(v) for v in shape)
        return cls(*(np.zeros((h, w), np.int32) for _ in range(4)), dtype=np.dtype(dtype))

    def add(self, frame: np.ndarray, rgb: np.ndarray | None = None) -> None:
        """Count the extreme pixels of one (h, w) frame, and its coloured ones when ``rgb``, the same frame
        in colour ((h, w, 3), :meth:`exonta.io.Video.read_with_colour`), is given."""
        f = np.asarray(frame)
        fmax = float(f.max()) if f.size else 0.0
        if f.size and fmax >= self.sample_max:
            at = int(np.count_nonzero(f == fmax))
            self.n_at_max = at + (self.n_at_max if fmax == self.sample_max else 0)
        if f.size and f.dtype.kind in "ui" and self.low_bits & 0xFF != 0xFF:
            self.low_bits |= int(np.bitwise_or.reduce(f, axis=None)) & 0xFF
        self.sample_max = max(self.sample_max, fmax)
        top = _top_level(self.dtype, max(self.sample_max, 1.0))
        tol = LEVEL_TOLERANCE * top
        hi = f >= top - tol
        lo = f <= tol
        level = float(np.median(f[::7, ::7])) if f.size else 0.0
        self.high += hi
        self.low += lo
        marked = [hi, lo]
        if rgb is not None:
            c = np.asarray(rgb)  # in the same units as the frame: its range is the frame's
            brightest = c.max(axis=-1)
            col = (brightest - c.min(axis=-1) >= CHROMA_LEVEL * top) & (brightest >= COLOUR_TOP * top)
            self.colour += col
            self.n_colour_frames += 1
            marked.append(col)
        for ext in marked:  # marked pixels whose 4 neighbours are marked too: inside a blob, not a stroke
            if ext.any():
                self.solid[1:-1, 1:-1] += (ext[1:-1, 1:-1] & ext[:-2, 1:-1] & ext[2:, 1:-1] & ext[1:-1, :-2]
                                           & ext[1:-1, 2:])
        self.field_levels.append(level)
        self.n_frames += 1


@dataclass(frozen=True)
class OverlayRegions:
    """Result of :func:`find_overlay_regions`.

    Attributes
    ----------
    boxes : list of (x0, y0, x1, y1)
        Regions to exclude, px, half-open (``x0 <= x < x1``), x = column; empty when none or too large.
    area_fraction : float
        Share of the field the boxes cover (also when they were too large to be used).
    too_large : bool
        The boxes would cover more than :data:`MAX_AREA_FRACTION`: nothing is excluded.
    n_pixels : int
        Flagged pixels.
    """

    boxes: list
    area_fraction: float
    too_large: bool
    n_pixels: int


def _groups(cells: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (cell units, half-open) of the 8-connected groups of True cells."""
    seen = np.zeros_like(cells, bool)
    ny, nx = cells.shape
    out = []
    for i0, j0 in zip(*np.nonzero(cells)):
        if seen[i0, j0]:
            continue
        stack = [(int(i0), int(j0))]
        seen[i0, j0] = True
        ya, yb, xa, xb = i0, i0, j0, j0
        while stack:
            i, j = stack.pop()
            ya, yb, xa, xb = min(ya, i), max(yb, i), min(xa, j), max(xb, j)
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    a, b = i + di, j + dj
                    if 0 <= a < ny and 0 <= b < nx and cells[a, b] and not seen[a, b]:
                        seen[a, b] = True
                        stack.append((a, b))
        out.append((int(xa), int(ya), int(xb) + 1, int(yb) + 1))
    return out


def _merge_boxes(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Merge overlapping boxes until none overlap."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                p, q = boxes[a], boxes[b]
                if p[0] < q[2] and q[0] < p[2] and p[1] < q[3] and q[1] < p[3]:
                    boxes[a] = (min(p[0], q[0]), min(p[1], q[1]), max(p[2], q[2]), max(p[3], q[3]))
                    del boxes[b]
                    merged = True
                    break
            if merged:
                break
    return sorted(boxes, key=lambda r: (r[1], r[0]))


def find_overlay_regions(counts: OverlayCounts, pad_px: int) -> OverlayRegions:
    """Boxes around the pixels that are at the white or black level in at least
    :data:`MIN_FRAME_FRACTION` of the sampled frames.

    Parameters
    ----------
    counts : OverlayCounts
        Counts over frames spread over the video (at least 4).
    pad_px : int
        Margin added around each group of flagged pixels, px (the band-pass filter responds up to
        a few spot widths from an edge).

    Returns
    -------
    OverlayRegions
    """
    h, w = counts.high.shape
    n = counts.n_frames
    if n < 4 or h == 0 or w == 0:
        return OverlayRegions([], 0.0, False, 0)
    top = _top_level(counts.dtype, max(counts.sample_max, 1.0))
    level = float(np.median(counts.field_levels)) / max(top, 1e-12)
    need = max(2, int(np.ceil(MIN_FRAME_FRACTION * n)))
    flagged = np.zeros((h, w), bool)
    if level <= 1.0 - FIELD_MARGIN:
        flagged |= counts.high >= need
    if level >= FIELD_MARGIN:
        flagged |= counts.low >= need
    if counts.n_colour_frames >= 4:
        flagged |= counts.colour >= max(2, int(np.ceil(MIN_FRAME_FRACTION * counts.n_colour_frames)))
    n_px = int(flagged.sum())
    if n_px < MIN_GROUP_PIXELS:
        return OverlayRegions([], 0.0, False, n_px)
    # group on a coarse grid: cells holding flagged pixels, joined when they touch
    ny, nx = -(-h // _CELL), -(-w // _CELL)
    padded = np.zeros((ny * _CELL, nx * _CELL), np.int32)
    padded[:h, :w] = flagged
    per_cell = padded.reshape(ny, _CELL, nx, _CELL).sum(axis=(1, 3))
    ext = np.where(flagged, counts.high + counts.low + counts.colour, 0)
    solid = np.where(flagged, counts.solid, 0)
    boxes = []
    for cx0, cy0, cx1, cy1 in _groups(per_cell > 0):
        if per_cell[cy0:cy1, cx0:cx1].sum() < MIN_GROUP_PIXELS:
            continue
        gy0, gy1, gx0, gx1 = cy0 * _CELL, min(cy1 * _CELL, h), cx0 * _CELL, min(cx1 * _CELL, w)
        win = (slice(gy0, gy1), slice(gx0, gx1))
        if solid[win].sum() > MAX_SOLID_FRACTION * max(ext[win].sum(), 1):
            continue  # filled blobs: clipped particles or illumination, not the strokes of text
        if not (gy0 < EDGE_BAND * h or gy1 > (1 - EDGE_BAND) * h or gx0 < EDGE_BAND * w or gx1 > (1 - EDGE_BAND) * w):
            continue  # in the middle of the field: not where capture software writes
        ys, xs = np.nonzero(flagged[win])
        x0 = gx0 + int(xs.min()) - pad_px
        x1 = gx0 + int(xs.max()) + 1 + pad_px
        y0 = gy0 + int(ys.min()) - pad_px
        y1 = gy0 + int(ys.max()) + 1 + pad_px
        boxes.append((max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)))
    boxes = _merge_boxes(boxes)
    frac = float(regions_mask((h, w), boxes).mean()) if boxes else 0.0
    if frac > MAX_AREA_FRACTION:
        return OverlayRegions([], frac, True, n_px)
    return OverlayRegions(boxes, frac, False, n_px)


def regions_mask(shape: tuple[int, int], boxes) -> np.ndarray:
    """Boolean (h, w) mask of the union of ``boxes`` ((x0, y0, x1, y1), half-open, clipped to the frame)."""
    h, w = (int(v) for v in shape)
    m = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes or ():
        m[max(int(y0), 0):max(min(int(y1), h), 0), max(int(x0), 0):max(min(int(x1), w), 0)] = True
    return m


def excluded_pixels(shape: tuple[int, int], boxes, edge_px: int) -> int:
    """Pixels of the analysed interior (``edge_px`` from every border) that ``boxes`` cover."""
    h, w = (int(v) for v in shape)
    if not boxes or h <= 2 * edge_px or w <= 2 * edge_px:
        return 0
    return int(regions_mask((h, w), boxes)[edge_px:h - edge_px, edge_px:w - edge_px].sum())


def drop_in_regions(features: pd.DataFrame, boxes) -> pd.DataFrame:
    """``features`` without the detections whose position (``x``, ``y``, px; pixel centres at integers)
    falls inside any of ``boxes``; the index is renumbered."""
    if not boxes or not len(features):
        return features
    x = features["x"].to_numpy(float)
    y = features["y"].to_numpy(float)
    inside = np.zeros(len(features), bool)
    for x0, y0, x1, y1 in boxes:
        inside |= (x >= x0 - 0.5) & (x < x1 - 0.5) & (y >= y0 - 0.5) & (y < y1 - 0.5)
    if not inside.any():
        return features
    return features.loc[~inside].reset_index(drop=True)


def noise_sigma_outside(frame: np.ndarray, level, boxes) -> float:
    """Robust noise sigma (1.4826 × MAD, on every 3rd pixel of every 3rd row) of ``frame − level`` outside
    ``boxes``; ``level`` is an (h, w) background or a scalar."""
    f = np.asarray(frame, np.float32)
    r = f - (np.asarray(level, np.float32) if np.ndim(level) else np.float32(level))
    keep = ~regions_mask(f.shape, boxes)
    v = r[::3, ::3][keep[::3, ::3]]
    if v.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def fill_regions(frames: np.ndarray, boxes, level, sigma: float, first_frame: int) -> np.ndarray:
    """A copy of ``frames`` (k, h, w) whose ``boxes`` hold the background ``level`` ((h, w) or a scalar)
    plus Gaussian noise of ``sigma`` instead of their pixels.

    Before detection an overlay is replaced by what the detector expects there, so that its bright edges
    neither make spots nor raise the noise estimate (and so the threshold) of the tiles around it. The
    noise is seeded by the frame index: the same frame gives the same pixels whatever the chunking.
    """
    if not boxes:
        return frames
    out = np.array(frames, copy=True)
    dt = out.dtype
    lo, hi = (float(np.iinfo(dt).min), float(np.iinfo(dt).max)) if dt.kind in "ui" else (-np.inf, np.inf)
    h, w = out.shape[1:]
    lev = np.asarray(level, np.float32)
    for i in range(out.shape[0]):
        rng = np.random.default_rng([0x0E7A, int(first_frame) + i])
        for x0, y0, x1, y1 in boxes:
            ya, yb, xa, xb = max(int(y0), 0), min(int(y1), h), max(int(x0), 0), min(int(x1), w)
            if ya >= yb or xa >= xb:
                continue
            base = lev[ya:yb, xa:xb] if lev.ndim == 2 else np.full((yb - ya, xb - xa), lev, np.float32)
            v = base + np.float32(sigma) * rng.standard_normal((yb - ya, xb - xa), dtype=np.float32)
            if dt.kind in "ui":
                v = np.clip(np.rint(v), lo, hi)
            out[i, ya:yb, xa:xb] = v.astype(dt)
    return out
