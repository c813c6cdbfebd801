"""Numba kernels for per-track displacement statistics (private).

Arrays in, preallocated arrays out; the slow twin is
``tests/reference/diffusion_ref.py``.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def track_moments(starts, frames, x, y, max_lag, sq_sum, pair_cnt, cov_sum, cov_cnt):  # pragma: no cover - numba
    """Per-track sums of squared displacements by lag and of products of consecutive steps.

    Parameters
    ----------
    starts : (n_tracks + 1,) int64
        Offsets of each track in the position arrays (sorted by track, then frame).
    frames : (n,) int64
        Frame numbers (strictly increasing within a track).
    x, y : (n,) float64
        Positions.
    max_lag : int
        Largest lag (in frames) accumulated.
    sq_sum : (n_tracks, max_lag) float64, zeroed
        Out: sum over position pairs ``lag`` frames apart of ``Δx² + Δy²``.
    pair_cnt : (n_tracks, max_lag) int64, zeroed
        Out: number of such pairs.
    cov_sum : (n_tracks,) float64, zeroed
        Out: sum of ``ΔxₙΔxₙ₊₁ + ΔyₙΔyₙ₊₁`` over pairs of adjacent one-frame steps
        (positions at frames f, f+1, f+2 all present).
    cov_cnt : (n_tracks,) int64, zeroed
        Out: number of such step pairs.
    """
    n_tracks = starts.size - 1
    for t in range(n_tracks):
        a = starts[t]
        b = starts[t + 1]
        for i in range(a, b):
            fi = frames[i]
            for j in range(i + 1, b):
                lag = frames[j] - fi
                if lag > max_lag:
                    break
                dx = x[j] - x[i]
                dy = y[j] - y[i]
                sq_sum[t, lag - 1] += dx * dx + dy * dy
                pair_cnt[t, lag - 1] += 1
            if i + 2 < b and frames[i + 1] == fi + 1 and frames[i + 2] == fi + 2:
                cov_sum[t] += (x[i + 1] - x[i]) * (x[i + 2] - x[i + 1]) + (y[i + 1] - y[i]) * (y[i + 2] - y[i + 1])
                cov_cnt[t] += 1


def allocate(n_tracks: int, max_lag: int):
    """Zeroed output arrays for :func:`track_moments`."""
    return (np.zeros((n_tracks, max_lag)), np.zeros((n_tracks, max_lag), dtype=np.int64),
            np.zeros(n_tracks), np.zeros(n_tracks, dtype=np.int64))
