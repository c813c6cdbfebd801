"""Slow, obviously-correct references and synthetic-track generators for
:mod:`exonta.analysis.distribution`.

- :func:`track_loglik_ref`: exact log-likelihood of one track's displacements
  from the full tridiagonal Toeplitz covariance (``scipy.stats.multivariate_normal``),
  per axis and per contiguous segment; no DST.
- :func:`simulate_tracks`: Brownian tracks with exact exposure blur and
  localisation noise, drawn directly (no video).
- :func:`cve_particles`: the particles table (CVE per track, Vestergaard 2014)
  computed inline from such tracks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import multivariate_normal

from exonta.physics import diameter_from_diffusion, diffusion_from_diameter


def displacement_covariance_ref(n_steps, d_um2_s, sigma2_um2, dt_s, blur_r):
    """Per-axis covariance of ``n_steps`` consecutive 1-frame displacements (Berglund 2010)."""
    diag = 2 * d_um2_s * dt_s * (1 - 2 * blur_r) + 2 * sigma2_um2
    off = 2 * blur_r * d_um2_s * dt_s - sigma2_um2
    cov = np.zeros((n_steps, n_steps))
    for i in range(n_steps):
        cov[i, i] = diag
        if i + 1 < n_steps:
            cov[i, i + 1] = cov[i + 1, i] = off
    return cov


def track_loglik_ref(frames, x_um, y_um, d_um2_s, sigma2_um2, dt_s, blur_r):
    """Exact log-likelihood of one track at diffusion coefficient ``d_um2_s``.

    The track is split into runs of consecutive frames; each run with ``N >= 1``
    steps contributes ``logpdf`` of its x and of its y displacements under the
    full ``N x N`` covariance.
    """
    order = np.argsort(frames)
    f = np.asarray(frames)[order]
    x = np.asarray(x_um, float)[order]
    y = np.asarray(y_um, float)[order]
    total = 0.0
    start = 0
    for i in range(1, len(f) + 1):
        if i == len(f) or f[i] != f[i - 1] + 1:
            seg = slice(start, i)
            if i - start >= 2:
                cov = displacement_covariance_ref(i - start - 1, d_um2_s, sigma2_um2, dt_s, blur_r)
                mvn = multivariate_normal(mean=np.zeros(i - start - 1), cov=cov)
                total += mvn.logpdf(np.diff(x[seg])) + mvn.logpdf(np.diff(y[seg]))
            start = i
    return float(total)


def simulate_tracks(diameters_nm, rng, *, fps=30.0, exposure_s=0.02, pixel_size_um=0.166, temperature_c=22.0,
                    viscosity_mpas=0.9544, sigma_nm=(30.0, 50.0), min_positions=10, mean_extra_positions=20,
                    max_positions=200, gap_prob=0.0):
    """Draw one track per diameter: exact blurred Brownian motion plus localisation noise.

    Track lengths are ``min_positions + Geometric`` (mean ``min_positions + mean_extra_positions``),
    capped at ``max_positions``.  The blurred position of frame ``n`` is the mean
    of the path over the exposure; with ``B`` the increment over the exposure and
    ``I`` the exposure-average offset, ``var B = 2 D t_E``, ``var I = 2 D t_E / 3``,
    ``cov(B, I) = D t_E`` (exact).  Each frame after the first is dropped with
    probability ``gap_prob`` (missing detections).

    Returns
    -------
    tracks : DataFrame
        ``frame, particle, x, y, x_corrected, y_corrected`` (px).
    """
    dt = 1.0 / fps
    te = exposure_s
    d_um2 = diffusion_from_diameter(np.asarray(diameters_nm, float), temperature_c, viscosity_mpas)
    rows_f, rows_p, rows_x, rows_y = [], [], [], []
    for pid, dd in enumerate(np.atleast_1d(d_um2)):
        n = min(max_positions, min_positions + int(rng.geometric(1.0 / (mean_extra_positions + 1))) - 1)
        sig = rng.uniform(*sigma_nm) / 1000.0 if np.ndim(sigma_nm) else float(sigma_nm) / 1000.0
        cov_bi = np.array([[2 * dd * te, dd * te], [dd * te, 2 * dd * te / 3]])
        pos = np.empty((n, 2))
        for ax in range(2):
            bi = rng.multivariate_normal([0.0, 0.0], cov_bi, size=n)  # (B, I) per frame
            g = rng.normal(0.0, np.sqrt(2 * dd * max(dt - te, 0.0)), size=n)
            start = np.concatenate([[0.0], np.cumsum(bi[:-1, 0] + g[:-1])])
            pos[:, ax] = start + bi[:, 1] + rng.normal(0.0, sig, size=n)
        frames = int(rng.integers(0, 500)) + np.arange(n)
        keep = np.ones(n, bool)
        if gap_prob > 0:
            keep[1:] = rng.random(n - 1) >= gap_prob
        off = rng.uniform(50, 500, size=2)
        rows_f.append(frames[keep])
        rows_p.append(np.full(keep.sum(), pid))
        rows_x.append(pos[keep, 0] / pixel_size_um + off[0])
        rows_y.append(pos[keep, 1] / pixel_size_um + off[1])
    tracks = pd.DataFrame({
        "frame": np.concatenate(rows_f).astype(np.int64) if rows_f else np.zeros(0, np.int64),
        "particle": np.concatenate(rows_p).astype(np.int64) if rows_p else np.zeros(0, np.int64),
        "x": np.concatenate(rows_x) if rows_x else np.zeros(0),
        "y": np.concatenate(rows_y) if rows_y else np.zeros(0),
    })
    tracks["x_corrected"] = tracks["x"]
    tracks["y_corrected"] = tracks["y"]
    return tracks


def cve_particles(tracks, acquisition, min_track_length=10):
    """Particles table from tracks with the CVE (Vestergaard, Blainey & Flyvbjerg 2014), slow and simple."""
    dt = acquisition.frame_interval_s
    r = acquisition.blur_coefficient
    px = acquisition.pixel_size_um
    rows = []
    for pid, g in tracks.groupby("particle", sort=True):
        g = g.sort_values("frame")
        f = g["frame"].to_numpy()
        xy = g[["x_corrected", "y_corrected"]].to_numpy() * px
        ok = np.diff(f) == 1
        d = np.diff(xy, axis=0)
        sq = (d[ok] ** 2).ravel()
        pair = ok[:-1] & ok[1:]
        prod = (d[:-1][pair] * d[1:][pair]).ravel()
        msd1 = sq.mean() if sq.size else np.nan
        cov1 = prod.mean() if prod.size else 0.0
        dhat = msd1 / (2 * dt) + cov1 / dt
        s2 = r * msd1 + (2 * r - 1) * cov1
        n_steps = int(ok.sum())
        valid = bool(len(f) >= min_track_length and np.isfinite(dhat) and dhat > 0)
        diam = diameter_from_diffusion(dhat, acquisition.temperature_c, acquisition.viscosity_mpas) if dhat > 0 \
            else np.nan
        rows.append(dict(particle=pid, n_positions=len(f), n_steps=n_steps, D_um2_s=dhat,
                         D_se_um2_s=np.nan, sigma_loc_um=np.sqrt(max(s2, 0.0)), diameter_nm=diam, valid=valid,
                         msd1_um2=msd1, cov1_um2=cov1))
    return pd.DataFrame(rows)


def dst1_ortho_ref(x):
    """Orthonormal DST-I of a 1-D array by its defining sum, term by term (pure Python).

    ``y_k = sqrt(2/(N+1)) Σ_n x_n sin(π(n+1)(k+1)/(N+1))``; the products ``(n+1)(k+1)`` are reduced
    modulo ``2(N+1)`` (the period of the sine) as integers before the multiplication by ``π/(N+1)``,
    and each sum is exact up to the final rounding (``math.fsum``). ``O(N²)`` sines: small ``N``.
    """
    import math

    x = [float(v) for v in x]
    n = len(x)
    period = 2 * (n + 1)
    norm = math.sqrt(2.0 / (n + 1))
    return np.array([norm * math.fsum(x[j] * math.sin(math.pi * (((j + 1) * (k + 1)) % period) / (n + 1))
                                      for j in range(n)) for k in range(n)])
