"""Private numba kernels of :mod:`exonta.simulate`.

Each kernel takes arrays and scalars and fills a preallocated output; the
public wrapper in :mod:`exonta.simulate` validates, allocates and seeds.
Slow numpy twins live in ``tests/reference/simulate_ref.py``.

Random numbers come from an explicit SplitMix64 stream (Steele, Lea & Flood,
OOPSLA 2014) held in a local ``uint64`` so that every frame has its own
reproducible stream, independent of how the video is chunked.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S11 = np.uint64(11)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_INV_2_53 = 1.0 / 9007199254740992.0
_SQRT1_2 = 1.0 / math.sqrt(2.0)


@njit(inline="always", cache=True)
def _uniform(s):
    """One double in [0, 1) and the advanced SplitMix64 state."""
    s = s + _GOLDEN
    z = (s ^ (s >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    z = z ^ (z >> _S31)
    return (z >> _S11) * _INV_2_53, s


@njit(cache=True)
def _normal_pair(s):
    """Two independent standard normal deviates (Marsaglia polar method) and the new state."""
    while True:
        u1, s = _uniform(s)
        u2, s = _uniform(s)
        v1 = 2.0 * u1 - 1.0
        v2 = 2.0 * u2 - 1.0
        r2 = v1 * v1 + v2 * v2
        if 0.0 < r2 < 1.0:
            f = math.sqrt(-2.0 * math.log(r2) / r2)
            return v1 * f, v2 * f, s


@njit(cache=True)
def _poisson(lam, s):
    """Poisson deviate with mean ``lam`` ≥ 0 and the new state.

    Inversion by sequential search for ``lam < 12``; otherwise the transformed
    rejection method PTRS of Hörmann, Insurance Math. Econom. 12:39 (1993).
    """
    if lam <= 0.0:
        return 0.0, s
    if lam < 12.0:
        p = math.exp(-lam)
        cdf = p
        k = 0
        u, s = _uniform(s)
        while u > cdf and k < 1000:
            k += 1
            p *= lam / k
            cdf += p
        return float(k), s
    slam = math.sqrt(lam)
    loglam = math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    v_r = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        u, s = _uniform(s)
        v, s = _uniform(s)
        u -= 0.5
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= v_r:
            return k, s
        if k < 0.0 or (us < 0.013 and v > us):
            continue
        if (math.log(v) + math.log(inv_alpha) - math.log(a / (us * us) + b)
                <= -lam + k * loglam - math.lgamma(k + 1.0)):
            return k, s


@njit(cache=True)
def _render_spots(out, x_px, y_px, sigma_px, photons, max_sigmas, eps_photons):
    """Add pixel-integrated 2-D Gaussian spots to ``out`` (expected photons).

    Pixel ``(r, c)`` covers ``[c-0.5, c+0.5] × [r-0.5, r+0.5]``; the photons a
    spot puts in it are ``N·ΔΦx·ΔΦy`` with erf differences at the pixel edges.
    The window half-width is ``max_sigmas·σ``, shrunk where the peak pixel
    value times the Gaussian tail drops below ``eps_photons`` (speed; the
    photons left out are far below the shot noise).

    Parameters
    ----------
    out : (h, w) float64, modified in place
    x_px, y_px, sigma_px, photons : (n,) float64
        Spot centres (x = column, y = row), Gaussian sigma and integrated
        expected photons of every spot.
    max_sigmas, eps_photons : float
    """
    h, w = out.shape
    n = x_px.size
    ex = np.empty(w + 1)
    ey = np.empty(h + 1)
    for i in range(n):
        ph = photons[i]
        sig = sigma_px[i]
        if not (ph > 0.0) or not (sig > 0.0):
            continue
        peak = ph / (2.0 * math.pi * sig * sig)
        half = max_sigmas
        if peak < eps_photons:
            continue
        lim = math.sqrt(2.0 * math.log(peak / eps_photons))
        if lim < half:
            half = lim
        rad = half * sig + 1.0
        xc = x_px[i]
        yc = y_px[i]
        c0 = int(math.floor(xc - rad + 0.5))
        c1 = int(math.ceil(xc + rad - 0.5))
        r0 = int(math.floor(yc - rad + 0.5))
        r1 = int(math.ceil(yc + rad - 0.5))
        if c0 < 0:
            c0 = 0
        if r0 < 0:
            r0 = 0
        if c1 > w - 1:
            c1 = w - 1
        if r1 > h - 1:
            r1 = h - 1
        if c0 > c1 or r0 > r1:
            continue
        scale = _SQRT1_2 / sig
        for c in range(c0, c1 + 2):
            ex[c - c0] = math.erf((c - 0.5 - xc) * scale)
        for r in range(r0, r1 + 2):
            ey[r - r0] = math.erf((r - 0.5 - yc) * scale)
        for c in range(c1 - c0 + 1):
            ex[c] = 0.5 * (ex[c + 1] - ex[c])
        for r in range(r1 - r0 + 1):
            ey[r] = 0.5 * ph * (ey[r + 1] - ey[r])
        for r in range(r0, r1 + 1):
            fy = ey[r - r0]
            for c in range(c0, c1 + 1):
                out[r, c] += fy * ex[c - c0]


@njit(cache=True)
def _slow_pixel(rest, u, q, base_cdf, base_guide, gain, read_noise_e, offset_adu, max_adu, s, spare):
    """ADU value of a pixel whose ``Poisson(rest)`` part is not known to be 0.

    For ``rest < 12`` the caller has drawn ``u`` and found ``u ≥ exp(−rest)``:
    the inversion goes on from k = 1. For larger ``rest`` the transformed
    rejection sampler is used (``u`` unused). ``spare`` is a cached normal
    deviate (NaN when none). Returns ``(adu, state, spare)``.
    """
    if rest < 12.0:
        p = math.exp(-rest)
        cdf = p
        k_rest = 0
        while u > cdf and k_rest < 1000:
            k_rest += 1
            p *= rest / k_rest
            cdf += p
        e = float(k_rest)
    else:
        e, s = _poisson(rest, s)
    u, s = _uniform(s)
    k = base_guide[q, int(u * base_guide.shape[1])]
    while base_cdf[q, k] < u:
        k += 1
    e += k
    if read_noise_e > 0.0:
        if spare == spare:
            nz = spare
            spare = math.nan
        else:
            nz, spare, s = _normal_pair(s)
        e += read_noise_e * nz
    v = math.floor(gain * e + offset_adu + 0.5)
    if v < 0.0:
        v = 0.0
    elif v > max_adu:
        v = max_adu
    return v, s, spare


@njit(cache=True)
def _camera(signal, level, bg_rest, bg_p0, base_cdf, base_guide, adu_ok, adu_values, adu_cdf, adu_guide,
            gain, read_noise_e, offset_adu, max_adu, seed, out):
    """Camera model: shot noise, read noise, gain, offset, rounding, saturation.

    Every pixel collects ``Poisson(λ)`` photo-electrons with
    ``λ = λ_q + bg_rest + signal`` (``λ_q`` the background level ``q = level[r, c]``,
    ``bg_rest`` the small remainder of the background above it), adds
    ``N(0, read_noise_e²)`` and is converted as ``floor(gain·e + offset + 0.5)``
    clipped to ``[0, max_adu]``. As a sum of independent Poisson variables,
    ``e = Poisson(λ_q) + Poisson(rest)``: when the second part is 0 (always when
    ``rest == 0``) the final ADU value is drawn directly from the exact
    precomputed distribution of a pure-background pixel of level q
    (``adu_*[q]``); otherwise ``Poisson(λ_q)`` comes from its table
    (``base_*[q]``) and the read noise is added explicitly.

    Parameters
    ----------
    signal, bg_rest : (h, w) float64
        Expected signal photons; background above the pixel's level.
    level : (h, w) int64
        Background level index of each pixel.
    bg_p0 : (h, w) float64
        ``exp(−bg_rest)``, precomputed.
    base_cdf, base_guide : (L, K) float64, (L, G) int64
        CDF of ``Poisson(λ_q)`` over k = 0.. (padded with 1) and guide tables.
    adu_ok : (L,) bool
        Whether level q has an ADU table (very bright backgrounds have none:
        their pixels all take the explicit path).
    adu_values, adu_cdf, adu_guide : (L, M) out dtype, (L, M) float64, (L, G') int64
        Distribution of the ADU value of a pure-background pixel of each level.
    seed : uint64
        SplitMix64 state for this frame.
    out : (h, w) uint8 or uint16, filled
    """
    s = seed
    spare = math.nan
    h, w = signal.shape
    ga = adu_guide.shape[1]
    for r in range(h):
        for c in range(w):
            sig = signal[r, c]
            rest = sig + bg_rest[r, c]
            q = level[r, c]
            ok = adu_ok[q]
            if rest > 0.0 or not ok:
                # e = Poisson(λ_q) + Poisson(rest); when the second part is 0 the level table is exact
                if rest < 12.0:
                    u, s = _uniform(s)
                    if not ok or u >= (bg_p0[r, c] if sig == 0.0 else math.exp(-rest)):
                        v, s, spare = _slow_pixel(rest, u, q, base_cdf, base_guide, gain, read_noise_e,
                                                  offset_adu, max_adu, s, spare)
                        out[r, c] = v
                        continue
                else:
                    v, s, spare = _slow_pixel(rest, 0.0, q, base_cdf, base_guide, gain, read_noise_e,
                                              offset_adu, max_adu, s, spare)
                    out[r, c] = v
                    continue
            u, s = _uniform(s)
            k = adu_guide[q, int(u * ga)]
            while adu_cdf[q, k] < u:
                k += 1
            out[r, c] = adu_values[q, k]
