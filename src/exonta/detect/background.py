"""Static and rolling background estimates for spot detection.

The background of a light-sheet NTA video (stray light, uneven illumination,
camera offset pattern) is nearly static while the particles move, so a
per-pixel temporal order statistic over a subsample of frames is a good
estimate of it. The default is the lower quartile
(``DetectParams.background_quantile`` = 0.25; the upper one for dark spots):
a particle over a pixel in fewer than 3/4 of the sampled frames does not
reach it. The median would only allow half, and large, slow particles (400 nm
beads move ~10 px per second) do stay that long: their halo became
background, and the negative "hole" it left in ``frame − background`` once
they moved on gave persistent false spots at its rim (the band-pass filter
responds positively just outside a negative blob), 9 % of the counted
detections of a simulated 400 nm sample. The quartile sits ~0.67 noise
sigmas below the mean; that offset varies only as slowly as the illumination,
so the band-pass filter and the per-spot local background remove it.
Detection then works on ``frame − background``.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from .._threads import prefer_passive_omp_wait
from ..errors import ExontaInputError

__all__ = ["estimate_background", "frame_source"]

# Row blocks of the median: small float32 copies (≈ 8 MB), spread over threads.
_BLOCK_BYTES = 8 * 2**20

class _ArraySource:
    """Uniform view of an ndarray (n, h, w) as a frame source."""

    def __init__(self, arr: np.ndarray):
        self.arr = arr
        self.n_frames = int(arr.shape[0])
        self.frame_shape = (int(arr.shape[1]), int(arr.shape[2]))
        self.dtype = arr.dtype

    def read(self, i: int) -> np.ndarray:
        return self.arr[i]

    def iter_chunks(self, chunk_frames: int, start: int = 0, stop: int | None = None):
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        for a in range(start, stop, chunk_frames):
            yield a, self.arr[a:min(a + chunk_frames, stop)]


class FirstFrames:
    """The first ``n`` frames of a frame source (streamed from it, not copied): a video shortened for a
    detection that needs only part of it."""

    def __init__(self, source: Any, n: int):
        self.source = frame_source(source)
        self.n_frames = int(min(max(int(n), 0), int(self.source.n_frames)))
        self.frame_shape = tuple(self.source.frame_shape)
        self.dtype = getattr(self.source, "dtype", None)

    def read(self, i: int) -> np.ndarray:
        if not 0 <= int(i) < self.n_frames:
            raise IndexError(f"frame {i} is outside the first {self.n_frames}")
        return self.source.read(int(i))

    def iter_chunks(self, chunk_frames: int, start: int = 0, stop: int | None = None):
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        yield from self.source.iter_chunks(chunk_frames, start, stop)


def frame_source(frames_or_video: Any):
    """Wrap an array (n, h, w) — or a single frame (h, w) — or a Video-like object.

    Anything with an ``iter_chunks`` method is used as is (it must also have
    ``n_frames``, ``frame_shape`` and ``read``); anything else is converted
    with :func:`numpy.asarray`.
    """
    if hasattr(frames_or_video, "iter_chunks"):
        return frames_or_video
    arr = np.asarray(frames_or_video)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ExontaInputError(
            f"frames must be a 3-D array (n_frames, height, width) or a Video, got an array of shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ExontaInputError(f"frames array is empty (shape {arr.shape}); give at least one non-empty frame")
    return _ArraySource(arr)


@njit(cache=True, parallel=True)
def _order_stat_int_kernel(stack, bits, k0, k1, out):
    """Per-pixel mean of the ``k0``-th and ``k1``-th smallest values (0-based)
    over axis 0 of an unsigned-integer stack, by bitwise selection: the k-th
    smallest of each pixel is built bit by bit from the top, keeping a bit
    when fewer than k+1 values lie below the candidate. Every pass is a count
    over contiguous rows (vectorised); no sorting, no transposed copy.
    ``bits`` = significant bits of the data (8 for uint8).
    """
    n, h, w = stack.shape
    for y in prange(h):
        cnt = np.empty(w, np.int32)
        ans = np.empty(w, np.int32)
        cand = np.empty(w, np.int32)
        res = np.zeros(w, np.float64)
        for kk in range(2):
            k = k0 if kk == 0 else k1
            if kk == 1 and k1 == k0:
                for x in range(w):
                    res[x] *= 2.0
                break
            ans[:] = 0
            for bit in range(bits - 1, -1, -1):
                one = np.int32(1 << bit)
                for x in range(w):
                    cand[x] = ans[x] | one
                cnt[:] = 0
                for f in range(n):
                    r = stack[f, y]
                    for x in range(w):
                        cnt[x] += np.int32(r[x]) < cand[x]
                for x in range(w):
                    if cnt[x] <= k:
                        ans[x] = cand[x]
            for x in range(w):
                res[x] += ans[x]
        for x in range(w):
            out[y, x] = np.float32(0.5 * res[x])


def _order_indices(n: int, quantile: float) -> tuple[int, int]:
    """0-based order statistics whose mean is the ``quantile`` of ``n`` values:
    ``floor`` and ``ceil`` of ``quantile·(n−1)`` (``numpy.quantile``'s
    "midpoint" rule; the median of :func:`numpy.median` at 0.5)."""
    pos = quantile * (n - 1)
    return int(math.floor(pos)), int(math.ceil(pos))


def _quantile_stack(stack: np.ndarray, quantile: float = 0.5) -> np.ndarray:
    """Per-pixel ``quantile`` over axis 0, as float32.

    Equals ``np.quantile(stack, quantile, axis=0, method="midpoint")`` (the
    median of ``np.median`` at 0.5). Unsigned-integer
    video (8/16-bit cameras): bitwise selection in a parallel numba kernel
    (:func:`_order_stat_int_kernel`, ≈ 20× faster than partitioning a
    transposed copy). Other types: row blocks made frame-last and contiguous,
    then partitioned (no sort) on a few threads (numpy releases the GIL).
    """
    prefer_passive_omp_wait()  # before numba's thread pool starts (the kernel, or get_num_threads)
    n, h, w = stack.shape
    out = np.empty((h, w), np.float32)
    k0, k1 = _order_indices(n, quantile) if n > 0 else (0, 0)
    if stack.dtype.kind == "u" and n > 0:
        top = int(stack.max())
        _order_stat_int_kernel(np.ascontiguousarray(stack), max(1, top.bit_length()), k0, k1, out)
        return out
    rows = max(1, int(_BLOCK_BYTES // max(1, n * w * 4)))

    def block(r: int) -> None:
        b = np.ascontiguousarray(stack[:, r:r + rows].transpose(1, 2, 0), dtype=np.float32)
        b.partition((k0, k1) if k1 != k0 else k0, axis=-1)
        out[r:r + rows] = 0.5 * (b[..., k0] + b[..., k1])

    starts = list(range(0, h, rows))
    workers = min(len(starts), max(1, numba.get_num_threads()))
    if workers == 1:
        for r in starts:
            block(r)
    else:
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(block, starts))
    return out


def _median_stack(stack: np.ndarray) -> np.ndarray:
    """Per-pixel median over axis 0, as float32 (:func:`_quantile_stack` at 0.5)."""
    return _quantile_stack(stack, 0.5)


def sample_indices(start: int, stop: int, n_max: int) -> np.ndarray:
    """At most ``n_max`` frame indices evenly spread over ``[start, stop)``."""
    n = stop - start
    if n <= n_max:
        return np.arange(start, stop)
    return np.unique(np.linspace(start, stop - 1, n_max).round().astype(np.int64))


def background_from_indices(src: Any, indices: np.ndarray, quantile: float = 0.5) -> np.ndarray:
    """Per-pixel temporal ``quantile`` of the frames ``indices`` of a frame source, float32 (h, w)."""
    frames = [np.asarray(src.read(int(i))) for i in indices]
    stack = np.stack(frames)
    if stack.dtype.kind == "f" and not np.all(np.isfinite(stack)):
        raise ExontaInputError("the video contains NaN or infinite pixel values; replace them before detection")
    return _quantile_stack(stack, quantile)


def estimate_background(frames_or_video: Any, params: Any = None, **kwargs: Any) -> np.ndarray:
    """Static background of a video: per-pixel temporal quantile of a frame subsample.

    Parameters
    ----------
    frames_or_video : ndarray (n, h, w) or Video
        Frames (uint8, uint16 or float) or any object with ``read(i)``,
        ``n_frames`` and ``iter_chunks`` (see :mod:`exonta.io`).
    params : DetectParams, optional
        Uses ``background_frames`` (number of frames sampled evenly over the
        video, default 64) and ``background_quantile`` (default 0.25; 0.75
        with ``invert``, :func:`background_quantile`).
    **kwargs
        Overrides of DetectParams fields.

    Returns
    -------
    background : float32 ndarray (h, w)
        In the raw intensity units of the video (not inverted, whatever
        ``params.invert``), ready for ``locate(frame, background=...)``.

    Notes
    -----
    A particle that stays in a pixel for more than 1 − quantile of the
    sampled frames (3/4 by default) becomes background (stuck particles are
    removed). With very few frames (< 10) the quantile still contains the
    particles: :func:`locate_frames` then uses no temporal background.
    """
    from .locate import _resolve_params

    p = _resolve_params(params, kwargs)
    src = frame_source(frames_or_video)
    n = int(src.n_frames)
    if n < 1:
        raise ExontaInputError("the video has no frames")
    return background_from_indices(src, sample_indices(0, n, p.background_frames), background_quantile(p))


def background_quantile(p: Any) -> float:
    """Temporal quantile of the background for detection parameters ``p``:
    ``background_quantile``, or ``1 − background_quantile`` for dark spots
    (``invert``: the particles are below the background, so a high quantile
    is the one they do not reach)."""
    q = float(p.background_quantile)
    return 1.0 - q if p.invert else q
