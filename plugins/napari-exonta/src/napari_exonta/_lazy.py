"""A numpy-like, lazily read view of an exonta Video for napari layers.

napari only needs ``shape``, ``dtype``, ``ndim``, ``size`` and ``__getitem__``
(its ``LayerDataProtocol``); this adapter reads one frame at a time from the
underlying :class:`exonta.io.Video`, keeps a few recent frames in a small LRU
cache, and serialises access with a lock (video decoders are not thread-safe and
napari slices in a worker thread).
"""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["LazyVideoArray", "display_contrast_limits"]


class LazyVideoArray:
    """Array-like ``(n_frames, height, width)`` view of a Video, read frame by frame.

    Parameters
    ----------
    video : exonta.io.Video
        Anything with ``shape`` ``(n, h, w)``, ``dtype`` and ``__getitem__(int)``
        returning one frame as a 2-D array.
    cache_frames : int
        Number of recently read frames kept in memory.
    """

    def __init__(self, video: Any, cache_frames: int = 8):
        self.video = video
        shape = tuple(int(s) for s in video.shape)
        if len(shape) != 3:
            raise ValueError(f"expected a (n_frames, height, width) video, got shape {shape}")
        self._shape = shape
        self._dtype = np.dtype(video.dtype)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_frames = max(int(cache_frames), 1)
        self._lock = threading.RLock()
        self.n_reads = 0  # frames actually decoded (for tests and diagnostics)

    # --- LayerDataProtocol -------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return 3

    @property
    def size(self) -> int:
        return int(np.prod(self._shape))

    def __len__(self) -> int:
        return self._shape[0]

    def __repr__(self) -> str:
        return f"LazyVideoArray(shape={self._shape}, dtype={self._dtype}, path={getattr(self.video, 'path', None)!s})"

    def frame(self, index: int) -> np.ndarray:
        """One frame as a read-only 2-D array (cached)."""
        n = self._shape[0]
        i = operator.index(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"frame {index} out of range for a video of {n} frames")
        with self._lock:
            hit = self._cache.get(i)
            if hit is not None:
                self._cache.move_to_end(i)
                return hit
            arr = np.asarray(self.video[i])
            if arr.ndim != 2:
                arr = arr.reshape(self._shape[1:])
            arr.setflags(write=False)
            self.n_reads += 1
            self._cache[i] = arr
            while len(self._cache) > self._cache_frames:
                self._cache.popitem(last=False)
            return arr

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(j for j, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (3 - (len(key) - 1))
            key = key[:i] + fill + key[i + 1:]
        if not key:
            key = (slice(None),)
        k0, rest = key[0], key[1:]
        if isinstance(k0, (int, np.integer)):
            return self.frame(int(k0))[rest] if rest else self.frame(int(k0))
        if isinstance(k0, slice):
            idx = range(self._shape[0])[k0]
        else:
            a = np.asarray(k0)
            if a.dtype == bool:
                idx = np.flatnonzero(a)
            elif a.ndim == 0:
                return self.frame(int(a))[rest] if rest else self.frame(int(a))
            else:
                idx = a.astype(np.int64).ravel()
        out = np.empty((len(idx),) + self._shape[1:], dtype=self._dtype)
        for j, i in enumerate(idx):
            out[j] = self.frame(int(i))
        return out[(slice(None),) + rest] if rest else out

    def __array__(self, dtype=None, copy=None):
        """Materialise the whole video (avoid: reads every frame)."""
        arr = self[:]
        return arr if dtype is None else arr.astype(dtype)


def display_contrast_limits(data: Any, n_sample: int = 5) -> tuple[float, float]:
    """Contrast limits for display from a few frames (never the whole video).

    Uses the 0.1 and 99.99 percentiles of up to ``n_sample`` evenly spaced
    frames, so the background stays visible and spots are bright.
    """
    n = int(data.shape[0])
    idx = np.unique(np.linspace(0, max(n - 1, 0), num=min(n_sample, max(n, 1))).astype(int))
    sample = np.stack([np.asarray(data[int(i)], dtype=np.float64) for i in idx])
    lo, hi = (float(v) for v in np.percentile(sample, [0.1, 99.99]))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi
