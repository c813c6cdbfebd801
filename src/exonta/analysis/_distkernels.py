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
def dst_loglik_kernel(track_index, one_minus_cos, power, sigma2_um2, alpha_um2, blur_r, out):  # pragma: no cover
    """Accumulate the exact Gaussian log-likelihood of DST-I components.

    Component ``e`` belongs to track ``track_index[e]`` and has
    ``c_e = 1 - cos(pi k / (N + 1))`` and ``power[e] = y_x,k^2 + y_y,k^2``
    (both axes).  For grid point ``j`` with ``alpha_j = 2 D_j dt``, the
    eigenvalue is ``lam = alpha_j + (2 sigma^2 - 2 R alpha_j) c_e`` and the
    two-axis contribution is ``-(log(2 pi) + log lam) - power / (2 lam)``.

    Parameters
    ----------
    track_index : int64[n_comp]
    one_minus_cos, power : float64[n_comp]
    sigma2_um2 : float64[n_tracks]
    alpha_um2 : float64[n_bins]
    blur_r : float
    out : float64[n_tracks, n_bins]
        Added to in place (zero it first).
    """
    n_bins = alpha_um2.shape[0]
    log2pi = math.log(2.0 * math.pi)
    for e in range(track_index.shape[0]):
        t = track_index[e]
        c = one_minus_cos[e]
        p = power[e]
        s2 = 2.0 * sigma2_um2[t] * c
        for j in range(n_bins):
            a = alpha_um2[j]
            lam = a + s2 - 2.0 * blur_r * a * c
            out[t, j] -= log2pi + math.log(lam) + 0.5 * p / lam
