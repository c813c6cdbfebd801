"""Numba kernels for :mod:`exonta.analysis.distribution` (private).

Arrays and scalars in, preallocated arrays out.  Each kernel has a slow numpy
twin in ``tests/reference/distribution_ref.py``.

The kernels are single-threaded on purpose: they run beside the input checksum
thread, and on a shared 2-core machine numba's parallel loops (and threaded BLAS)
were measured 1.8× slower in wall time than serial code (size distribution of a
1500-frame video: 7.3 s vs 4.0 s at a load average of 5).  The likelihood
kernels accumulate each track's row in local buffers (components are sorted by
track), which lets the inner loops over the size grid vectorise.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["cholesky_inverse_kernel", "dst_loglik_kernel", "dst_loglik_sigma_derivs_kernel", "exp_nonpositive", "find_peaks",
           "posterior_gram_kernel", "replicate_likelihood_kernel"]

_N_BLOCKS = 16  # blocks of tracks (kept for a future parallel loop; the results do not depend on it)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _track_starts(track_index):  # pragma: no cover
    """Start of each run of equal ``track_index`` (plus the end). When ``track_index`` is not
    sorted, every component is a run of its own (``0, 1, …, n``): a track then has several runs,
    whose contributions the kernels add."""
    n = track_index.shape[0]
    n_runs = 0
    for e in range(n):
        if e == 0 or track_index[e] != track_index[e - 1]:
            if e > 0 and track_index[e] < track_index[e - 1]:
                return np.arange(n + 1)
            n_runs += 1
    starts = np.empty(n_runs + 1, dtype=np.int64)
    k = 0
    for e in range(n):
        if e == 0 or track_index[e] != track_index[e - 1]:
            starts[k] = e
            k += 1
    starts[n_runs] = n
    return starts


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _loglik_run(lo, hi, one_minus_cos, power, scale, s2t, alpha_um2, blur_r, acc, prod):  # pragma: no cover
    """Σ over components lo..hi−1 of one track of ``log λ + p/(2λ)`` per grid point, into ``acc``.

    ``Σ log λ`` is the log of the product of the eigenvalues, kept as mantissa × 2^exponent: every
    8 factors the binary exponent is moved from ``prod`` into an integer count (bit operations, no
    log; λ > 0 is a variance in µm², so 8 factors stay far inside the float64 range), and one log per
    grid point ends the track.
    """
    n_bins = alpha_um2.shape[0]
    pbits = prod.view(np.int64)
    expo = np.zeros(n_bins, dtype=np.int64)
    for j in range(n_bins):
        acc[j] = 0.0
        prod[j] = 1.0
    cnt = 0
    for e in range(lo, hi):
        c = one_minus_cos[e]
        hp = 0.5 * power[e]
        ca = scale[e] - 2.0 * blur_r * c  # λ = ca·α + cb
        cb = s2t * c
        for j in range(n_bins):
            lam = ca * alpha_um2[j] + cb
            acc[j] += hp / lam
            prod[j] *= lam
        cnt += 1
        if cnt == 8:
            for j in range(n_bins):
                bj = pbits[j]
                expo[j] += ((bj >> 52) & 0x7FF) - 1023
                pbits[j] = (bj & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000
            cnt = 0
    ln2 = math.log(2.0)
    for j in range(n_bins):
        acc[j] += math.log(prod[j]) + expo[j] * ln2


@numba.njit(cache=True, nogil=True, error_model="numpy")
def dst_loglik_kernel(track_index, one_minus_cos, power, scale, sigma2_um2, alpha_um2, blur_r, out):  # pragma: no cover
    """Accumulate the exact Gaussian log-likelihood of DST-I components.

    Component ``e`` belongs to track ``track_index[e]`` and has
    ``c_e = 1 - cos(pi k / (N + 1))`` and ``power[e] = y_x,k^2 + y_y,k^2``
    (both axes).  For grid point ``j`` with ``alpha_j = 2 D_j dt``, the
    eigenvalue is ``lam = m_e alpha_j + (2 sigma^2 - 2 R alpha_j) c_e`` and the
    two-axis contribution is ``-(log(2 pi) + log lam) - power / (2 lam)``.
    ``m_e = scale[e]`` is 1 for DST components and ``k`` for a displacement
    across a gap of ``k`` frames (with ``c_e = 1``).

    Parameters
    ----------
    track_index : int64[n_comp]
        Sorted by track (as :func:`~exonta.analysis.distribution.track_components` makes it) for the
        fast path; any order works.
    one_minus_cos, power, scale : float64[n_comp]
    sigma2_um2 : float64[n_tracks]
    alpha_um2 : float64[n_bins]
    blur_r : float
    out : float64[n_tracks, n_bins]
        Added to in place (zero it first).
    """
    n_bins = alpha_um2.shape[0]
    log2pi = math.log(2.0 * math.pi)
    starts = _track_starts(track_index)
    n_runs = starts.shape[0] - 1
    for b in range(_N_BLOCKS):
        acc = np.empty(n_bins)
        prod = np.empty(n_bins)
        for r in range(b * n_runs // _N_BLOCKS, (b + 1) * n_runs // _N_BLOCKS):
            lo = starts[r]
            hi = starts[r + 1]
            t = track_index[lo]
            _loglik_run(lo, hi, one_minus_cos, power, scale, 2.0 * sigma2_um2[t], alpha_um2, blur_r, acc, prod)
            base = (hi - lo) * log2pi
            for j in range(n_bins):
                out[t, j] -= base + acc[j]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _posterior_gram_rows(lo, hi, lik, w, lw, c, gram, colsum, q):  # pragma: no cover
    """Upper triangle of ``Σ_i c_i q_i q_iᵀ`` and ``Σ_i c_i q_i`` over rows lo..hi−1, added to ``gram``/``colsum``.

    Only the band of bins from the first to the last posterior above ``1e-13`` of each row is
    accumulated (a track's posterior covers a contiguous range of sizes; the band keeps the loops
    dense).
    """
    m = lik.shape[1]
    for i in range(lo, hi):
        inv = 1.0 / lw[i]
        first = m
        last = -1
        for j in range(m):
            v = lik[i, j] * w[j] * inv
            q[j] = v
            if v > 1e-13:
                if first == m:
                    first = j
                last = j
        ci = c[i]
        for a in range(first, last + 1):
            qa = ci * q[a]
            colsum[a] += qa
            ga = gram[a]  # a row view: the inner loop is then a plain vectorisable axpy
            for b in range(a, last + 1):
                ga[b] += qa * q[b]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def posterior_gram_kernel(lik, w, lw, c, gram_out, colsum_out):  # pragma: no cover
    """Posterior Gram matrix and column sums of a mixture fit.

    With ``q_ij = lik_ij w_j / lw_i``: ``gram_out = Σ_i c_i q_i q_iᵀ`` and
    ``colsum_out = Σ_i c_i q_i``.  Only the band of bins where a row's posterior
    exceeds ``1e-13`` is accumulated (the rows are concentrated on a few bins), so
    the cost is ``O(n · k²/2)`` with ``k`` the width of that band (upper
    triangle, mirrored).

    Parameters
    ----------
    lik : float64[n, m]
    w : float64[m]
    lw : float64[n]
        ``lik @ w``.
    c : float64[n]
    gram_out : float64[m, m]
        Overwritten.
    colsum_out : float64[m]
        Overwritten.
    """
    n, m = lik.shape
    gram_out[:, :] = 0.0
    colsum_out[:] = 0.0
    _posterior_gram_rows(0, n, lik, w, lw, c, gram_out, colsum_out, np.empty(m))
    for a in range(m):
        for b in range(a + 1, m):
            gram_out[b, a] = gram_out[a, b]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def dst_loglik_sigma_derivs_kernel(track_index, one_minus_cos, power, scale, sigma2_um2, alpha_um2, blur_r,
                                   d1_out, d2_out):  # pragma: no cover
    """First and second derivatives of :func:`dst_loglik_kernel`'s output with respect to σ².

    With ``g = 2 c_e`` (``∂λ/∂σ²``): ``∂ℓ/∂σ² = Σ_e g (p/(2λ²) − 1/λ)`` and
    ``∂²ℓ/∂(σ²)² = Σ_e g² (1/λ² − p/λ³)``.  Added to ``d1_out``, ``d2_out``
    (float64[n_tracks, n_bins]) in place.  Per-track buffers when ``track_index`` is
    sorted.
    """
    n_bins = alpha_um2.shape[0]
    starts = _track_starts(track_index)
    n_runs = starts.shape[0] - 1
    for blk in range(_N_BLOCKS):
        a1 = np.empty(n_bins)
        a2 = np.empty(n_bins)
        for r in range(blk * n_runs // _N_BLOCKS, (blk + 1) * n_runs // _N_BLOCKS):
            lo = starts[r]
            hi = starts[r + 1]
            t = track_index[lo]
            s2t = 2.0 * sigma2_um2[t]
            for j in range(n_bins):
                a1[j] = 0.0
                a2[j] = 0.0
            for e in range(lo, hi):
                c = one_minus_cos[e]
                p = power[e]
                g = 2.0 * c
                ca = scale[e] - 2.0 * blur_r * c
                cb = s2t * c
                for j in range(n_bins):
                    inv = 1.0 / (ca * alpha_um2[j] + cb)
                    inv2 = inv * inv
                    a1[j] += g * (0.5 * p * inv2 - inv)
                    a2[j] += g * g * (inv2 - p * inv2 * inv)
            for j in range(n_bins):
                d1_out[t, j] += a1[j]
                d2_out[t, j] += a2[j]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def exp_nonpositive(x, bits):  # pragma: no cover
    """``x[j] ← exp(x[j])`` in place for ``x[j] ≤ 0`` (values below −708 give ``exp(−708)`` ≈ 3e-308).

    Branch-free and vectorisable: ``x = k ln 2 + r`` (Cody–Waite, ``|r| ≤ ln2/2``),
    ``exp(r)`` by its degree-13 Taylor polynomial (truncation < 2e-16 relative),
    ``2^k`` assembled in the exponent bits.  Within 2 ulp of ``math.exp``.

    Parameters
    ----------
    x : float64[n]
    bits : int64[n]
        Scratch.
    """
    n = x.shape[0]
    for j in range(n):
        v = max(x[j], -708.0)
        kf = math.floor(v * 1.4426950408889634 + 0.5)
        r = (v - kf * 6.93147180369123816490e-01) - kf * 1.90821492927058770002e-10
        p = 1.0 / 6227020800.0
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        x[j] = p * r + 1.0
        bits[j] = (np.int64(kf) + 1023) << 52
    scale = bits.view(np.float64)
    for j in range(n):
        x[j] *= scale[j]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def replicate_likelihood_kernel(loglik, d1, d2, rows, delta, out):  # pragma: no cover
    """Likelihood rows of a bootstrap replicate with a shifted localisation variance.

    ``out[k, j] = exp(ℓ_kj − max_j ℓ_kj)`` with
    ``ℓ_kj = loglik[r, j] + δ_k d1[r, j] + ½ δ_k² d2[r, j]`` and ``r = rows[k]``: the
    second-order Taylor expansion of the log-likelihood in σ², each row scaled
    to a maximum of 1 (exponential by :func:`exp_nonpositive`).

    Parameters
    ----------
    loglik, d1, d2 : float64[n, m]
    rows : int64[k]
    delta : float64[k]
    out : float64[k, m]
        Overwritten.
    """
    m = loglik.shape[1]
    n_rows = rows.shape[0]
    for blk in range(_N_BLOCKS):
        bits = np.empty(m, dtype=np.int64)
        for k in range(blk * n_rows // _N_BLOCKS, (blk + 1) * n_rows // _N_BLOCKS):
            r = rows[k]
            dk = delta[k]
            hk = 0.5 * dk * dk
            mx = -np.inf
            for j in range(m):
                v = loglik[r, j] + dk * d1[r, j] + hk * d2[r, j]
                out[k, j] = v
                mx = max(mx, v)
            row = out[k]
            for j in range(m):
                row[j] -= mx
            exp_nonpositive(row, bits)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def cholesky_inverse_kernel(chol, out):  # pragma: no cover
    """Inverse of ``A = L Lᵀ`` from its lower Cholesky factor ``L``, single-threaded.

    Solves ``L Y = I`` by forward substitution (``Y = L⁻¹``, lower triangular),
    then ``A⁻¹ = Yᵀ Y``.  Small matrices (the size grid, ~10² bins) only; a
    threaded BLAS is slower than this on a busy machine.

    Parameters
    ----------
    chol : float64[m, m]
        Lower triangular.
    out : float64[m, m]
        Overwritten with ``A⁻¹`` (symmetric).
    """
    m = chol.shape[0]
    y = np.zeros((m, m))
    for c in range(m):
        y[c, c] = 1.0 / chol[c, c]
        for i in range(c + 1, m):
            s = 0.0
            for k in range(c, i):
                s += chol[i, k] * y[k, c]
            y[i, c] = -s / chol[i, i]
    for i in range(m):
        for j in range(i, m):
            s = 0.0
            for k in range(j, m):
                s += y[k, i] * y[k, j]
            out[i, j] = s
            out[j, i] = s


def find_peaks(x, prominence):
    """Local maxima of a 1-D array with a topographic prominence of at least ``prominence``.

    Same result as ``scipy.signal.find_peaks(x, prominence=prominence)`` (a flat
    maximum is reported at its middle sample, rounded down; the prominence of a
    peak is its height above the higher of the lowest points between it and the
    nearest higher sample on each side, or the array's end), without importing
    ``scipy.signal`` (about 1 s on a cold start, most of it ``scipy.stats``).
    Plain Python: the arrays are a size grid (~10² values).

    Parameters
    ----------
    x : ndarray (n,)
    prominence : float

    Returns
    -------
    peaks : ndarray of int64
    properties : dict
        ``{"prominences": ndarray}`` of the returned peaks.
    """
    v = np.asarray(x, dtype=float).tolist()
    n = len(v)
    peaks = []
    i = 1
    while i < n - 1:
        if v[i - 1] < v[i]:
            ahead = i + 1
            while ahead < n - 1 and v[ahead] == v[i]:
                ahead += 1
            if v[ahead] < v[i]:
                peaks.append((i + ahead - 1) // 2)
                i = ahead
        i += 1
    keep, proms = [], []
    for p in peaks:
        top = v[p]
        left_min = top
        i = p
        while i >= 0 and v[i] <= top:
            left_min = min(left_min, v[i])
            i -= 1
        right_min = top
        i = p
        while i < n and v[i] <= top:
            right_min = min(right_min, v[i])
            i += 1
        prom = top - max(left_min, right_min)
        if prom >= prominence:
            keep.append(p)
            proms.append(prom)
    return np.asarray(keep, dtype=np.int64), {"prominences": np.asarray(proms, dtype=float)}
