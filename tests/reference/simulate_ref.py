"""Slow, obviously-correct numpy twins of the simulator kernels (exonta._simkernels)."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf, gammaln, ndtr


def render_spots_ref(shape, x_px, y_px, sigma_px, photons):
    """Expected photons per pixel of pixel-integrated Gaussian spots, no window.

    Pixel ``(r, c)`` covers ``[c-0.5, c+0.5] × [r-0.5, r+0.5]``.
    """
    h, w = shape
    out = np.zeros((h, w))
    ce = np.arange(w + 1) - 0.5
    re = np.arange(h + 1) - 0.5
    for x, y, s, n in zip(np.atleast_1d(x_px), np.atleast_1d(y_px), np.atleast_1d(sigma_px),
                          np.atleast_1d(photons)):
        fx = 0.5 * np.diff(erf((ce - x) / (math.sqrt(2) * s)))
        fy = 0.5 * np.diff(erf((re - y) / (math.sqrt(2) * s)))
        out += n * np.outer(fy, fx)
    return out


def camera_expected_ref(expected_photons, gain, offset, max_adu):
    """Noise-free camera: ``floor(gain·λ + offset + 0.5)`` clipped to ``[0, max_adu]``."""
    return np.clip(np.floor(gain * np.asarray(expected_photons) + offset + 0.5), 0, max_adu)


def adu_pmf_ref(lam, gain, read_noise_e, offset, max_adu):
    """Exact distribution of ``clip(floor(gain·(K + read·Z) + offset + 0.5))``, K ~ Poisson(lam).

    Returns ``(values, pmf)`` over every ADU value with non-negligible probability.
    """
    kmax = int(lam + 20 * math.sqrt(lam + 1) + 40)
    k = np.arange(kmax + 1)
    pmf_k = np.exp(-lam + k * math.log(lam) - gammaln(k + 1)) if lam > 0 else (k == 0).astype(float)
    values = np.arange(0, int(max_adu) + 1)
    pmf = np.zeros(values.size)
    for kk, pk in zip(k, pmf_k):
        if pk < 1e-300:
            continue
        if read_noise_e > 0:
            hi = ndtr(((values + 0.5 - offset) / gain - kk) / read_noise_e)
            lo = ndtr(((values - 0.5 - offset) / gain - kk) / read_noise_e)
            hi[-1] = 1.0
            lo[0] = 0.0
            pmf += pk * (hi - lo)
        else:
            v = min(max(math.floor(gain * kk + offset + 0.5), 0), int(max_adu))
            pmf[v] += pk
    return values, pmf


def brownian_msd_per_axis_ref(d_um2_s, dt_s, exposure_s, n_substeps):
    """Lag-1 displacement variance and lag-1 covariance of exposure-mean positions (per axis).

    Positions are the mean of ``n_substeps`` samples at the mid-points of equal
    sub-intervals of the exposure; computed directly from the Brownian
    covariance ``Cov(B(s), B(t)) = 2D·min(s, t)``.
    """
    tau = exposure_s / n_substeps
    s = (np.arange(n_substeps) + 0.5) * tau
    ts = np.concatenate([s, s + dt_s, s + 2 * dt_s])
    cov = 2 * d_um2_s * np.minimum.outer(ts, ts)
    n = n_substeps
    a = np.zeros((3, 3 * n))
    for i in range(3):
        a[i, i * n:(i + 1) * n] = 1.0 / n
    c = a @ cov @ a.T
    var1 = c[1, 1] + c[0, 0] - 2 * c[0, 1]
    cov12 = c[1, 2] - c[1, 1] - c[0, 2] + c[0, 1]
    return float(var1), float(cov12)
