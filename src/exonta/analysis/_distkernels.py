"""Numba kernels for :mod:`exonta.analysis.distribution` (private).

Arrays and scalars in, preallocated arrays out.  Each kernel has a slow numpy
twin in ``tests/reference/distribution_ref.py``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["dst_loglik_kernel"]


@numba.njit(cache=False, nogil=True)
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
    one_minus_cos, power, scale : float64[n_comp]
    sigma2_um2 : float64[n_tracks]
    alpha_um2 : float64[n_bins]
    blur_r : float
    out : float64[n_tracks, n_bins]
        Added to in place (zero it first).
    """
    n_bins = alpha_um2.shape[0]
    log2pi = math.log(2.0 * math.pi)
    # Σ log λ is accumulated as the log of running products of up to 16 eigenvalues of one track
    # (λ is a variance in µm², far from the float64 range limits even to the 16th power): 16× fewer logs.
    prod = np.ones(n_bins)
    cur = -1
    cnt = 0
    for e in range(track_index.shape[0]):
        t = track_index[e]
        if t != cur or cnt == 16:
            if cur >= 0:
                for j in range(n_bins):
                    out[cur, j] -= math.log(prod[j])
                    prod[j] = 1.0
            cur = t
            cnt = 0
        c = one_minus_cos[e]
        p = power[e]
        m = scale[e]
        s2 = 2.0 * sigma2_um2[t] * c
        for j in range(n_bins):
            a = alpha_um2[j]
            lam = m * a + s2 - 2.0 * blur_r * a * c
            out[t, j] -= log2pi + 0.5 * p / lam
            prod[j] *= lam
        cnt += 1
    if cur >= 0:
        for j in range(n_bins):
            out[cur, j] -= math.log(prod[j])


@numba.njit(cache=False, nogil=True)
def posterior_gram_kernel(lik, w, lw, c, gram_out, colsum_out):  # pragma: no cover
    """Posterior Gram matrix and column sums of a mixture fit.

    With ``q_ij = lik_ij w_j / lw_i``: ``gram_out = Σ_i c_i q_i q_iᵀ`` and
    ``colsum_out = Σ_i c_i q_i``.  Posteriors below ``1e-13`` are skipped (the
    rows are concentrated on a few bins), so the cost is ``O(n · k²)`` with
    ``k`` the number of bins a track's posterior really covers.

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
    q = np.empty(m)
    nz = np.empty(m, dtype=np.int64)
    for i in range(n):
        k = 0
        inv = 1.0 / lw[i]
        for j in range(m):
            v = lik[i, j] * w[j] * inv
            if v > 1e-13:
                q[k] = v
                nz[k] = j
                k += 1
        ci = c[i]
        for a in range(k):
            qa = ci * q[a]
            ja = nz[a]
            colsum_out[ja] += qa
            for b in range(k):
                gram_out[ja, nz[b]] += qa * q[b]


@numba.njit(cache=False, nogil=True)
def dst_loglik_sigma_derivs_kernel(track_index, one_minus_cos, power, scale, sigma2_um2, alpha_um2, blur_r,
                                   d1_out, d2_out):  # pragma: no cover
    """First and second derivatives of :func:`dst_loglik_kernel`'s output with respect to σ².

    With ``g = 2 c_e`` (``∂λ/∂σ²``): ``∂ℓ/∂σ² = Σ_e g (p/(2λ²) − 1/λ)`` and
    ``∂²ℓ/∂(σ²)² = Σ_e g² (1/λ² − p/λ³)``.  Added to ``d1_out``, ``d2_out``
    (float64[n_tracks, n_bins]) in place.
    """
    n_bins = alpha_um2.shape[0]
    for e in range(track_index.shape[0]):
        t = track_index[e]
        c = one_minus_cos[e]
        p = power[e]
        g = 2.0 * c
        m = scale[e]
        s2 = 2.0 * sigma2_um2[t] * c
        for j in range(n_bins):
            a = alpha_um2[j]
            lam = m * a + s2 - 2.0 * blur_r * a * c
            inv = 1.0 / lam
            d1_out[t, j] += g * (0.5 * p * inv * inv - inv)
            d2_out[t, j] += g * g * (inv * inv - p * inv * inv * inv)


@numba.njit(cache=False, nogil=True)
def replicate_likelihood_kernel(loglik, d1, d2, rows, delta, out):  # pragma: no cover
    """Likelihood rows of a bootstrap replicate with a shifted localisation variance.

    ``out[k, j] = exp(ℓ_kj − max_j ℓ_kj)`` with
    ``ℓ_kj = loglik[r, j] + δ_k d1[r, j] + ½ δ_k² d2[r, j]`` and ``r = rows[k]``: the
    second-order Taylor expansion of the log-likelihood in σ², each row scaled
    to a maximum of 1.

    Parameters
    ----------
    loglik, d1, d2 : float64[n, m]
    rows : int64[k]
    delta : float64[k]
    out : float64[k, m]
        Overwritten.
    """
    m = loglik.shape[1]
    for k in range(rows.shape[0]):
        r = rows[k]
        dk = delta[k]
        hk = 0.5 * dk * dk
        mx = -np.inf
        for j in range(m):
            v = loglik[r, j] + dk * d1[r, j] + hk * d2[r, j]
            out[k, j] = v
            if v > mx:
                mx = v
        for j in range(m):
            out[k, j] = math.exp(out[k, j] - mx)


@numba.njit(cache=False, nogil=True)
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
