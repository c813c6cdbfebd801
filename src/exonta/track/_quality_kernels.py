"""Numba kernel of :mod:`exonta.track.quality`: arrays and scalars in, preallocated arrays out."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _scores(fr, x, y, idx, m, q):
    """Normalised squared residual ``q[k]`` of each of the ``m`` active positions ``idx[:m]``.

    Interior position: squared distance from the time-weighted interpolation of its two neighbours over
    ``2 t1 t2 / (t1 + t2)`` (``t1``, ``t2`` the frames to each neighbour); end position: squared step to its
    neighbour over ``2 t``. Both have mean ``2 D Δt`` (px²) for a freely diffusing particle.
    """
    for k in range(m):
        i = idx[k]
        if k == 0 or k == m - 1:
            j = idx[1] if k == 0 else idx[m - 2]
            t = abs(fr[j] - fr[i])
            dx = x[j] - x[i]
            dy = y[j] - y[i]
            q[k] = (dx * dx + dy * dy) / (2.0 * t)
        else:
            a = idx[k - 1]
            b = idx[k + 1]
            t1 = fr[i] - fr[a]
            t2 = fr[b] - fr[i]
            f = t1 / (t1 + t2)
            dx = x[i] - (x[a] + f * (x[b] - x[a]))
            dy = y[i] - (y[a] + f * (y[b] - y[a]))
            q[k] = (dx * dx + dy * dy) * (t1 + t2) / (2.0 * t1 * t2)


@njit(cache=True, nogil=True)
def prune_kernel(offsets, fr, x, y, log_alpha, log_suspect, min_others, max_removed_fraction, keep):
    """Remove, track by track, the positions that one Brownian particle does not explain.

    Parameters
    ----------
    offsets : int64 (n_tracks + 1,)
        Start of each track in the arrays (sorted by track, then frame).
    fr : int64 (n,)
        Frames.
    x, y : float64 (n,)
        Positions, px.
    log_alpha : float
        Natural log of the per-position false-rejection probability.
    log_suspect : float
        Positions whose normalised residual exceeds this many times the robust scale (median / ln 2) leave
        the references (with their neighbours).
    min_others : int
        Smallest number of other positions a test needs.
    max_removed_fraction : float
        At most this fraction of a track's positions is removed.
    keep : bool (n,)
        Output: False for removed positions (set to True first).
    """
    n_tr = offsets.size - 1
    for t in range(n_tr):
        s = offsets[t]
        e = offsets[t + 1]
        n = e - s
        for i in range(s, e):
            keep[i] = True
        if n < min_others + 3:
            continue
        idx = np.empty(n, dtype=np.int64)
        for k in range(n):
            idx[k] = s + k
        m = n
        max_remove = int(max_removed_fraction * n)
        removed = 0
        q = np.empty(n)
        lp = np.empty(n)
        excluded = np.empty(n, dtype=np.bool_)
        while removed < max_remove and m >= min_others + 3:
            _scores(fr, x, y, idx, m, q)
            # round 1 (suspects): each position against a robust scale, the median over ln 2 (the mean of an
            # exponential); junk positions and their neighbours then leave every reference of round 2, so that
            # a second junk position does not inflate the scale the first is judged against
            cut = np.median(q[:m]) / np.log(2.0) * log_suspect
            n_sus = 0
            for k in range(m):
                excluded[k] = False
            for k in range(m):
                if q[k] > cut:
                    n_sus += 1
                    for j in range(max(k - 1, 0), min(k + 2, m)):
                        excluded[j] = True
            if n_sus == 0:
                break
            # round 2: F(2, 2 n_o) test against the mean of the positions that are not excluded and share
            # no step with the tested one
            _log_p_values(q, m, excluded, min_others, lp)
            best_lp = 0.0
            best_k = -1
            for k in range(m):
                if lp[k] < best_lp:
                    best_lp = lp[k]
                    best_k = k
            if best_k < 0 or best_lp >= log_alpha:
                break
            keep[idx[best_k]] = False
            for k in range(best_k, m - 1):
                idx[k] = idx[k + 1]
            m -= 1
            removed += 1


@njit(cache=True, nogil=True)
def _log_p_values(q, m, excluded, min_others, lp):
    """``log P(F(2, 2n_o) > q_k / mean_ref)`` for each position (0 when it cannot be tested).

    The reference of position ``k`` is every position that shares no step with it (``k − 1, k, k + 1``
    left out) and is not ``excluded``; ``n_o`` is their number.
    """
    total = 0.0
    cnt = 0
    for j in range(m):
        if not excluded[j]:
            total += q[j]
            cnt += 1
    for k in range(m):
        rest = total
        n_o = cnt
        for j in range(max(k - 1, 0), min(k + 2, m)):
            if not excluded[j]:
                rest -= q[j]
                n_o -= 1
        if n_o < min_others or rest <= 0.0:
            lp[k] = 0.0
            continue
        u = q[k] / (rest / n_o)
        # survival of F(2, 2 n_o) at u: (1 + u / n_o)^(-n_o)
        lp[k] = -n_o * np.log1p(u / n_o)
