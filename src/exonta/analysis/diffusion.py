"""Per-track diffusion coefficients, their uncertainty, and sizes.

Model (per axis, one-frame steps ``Δxₙ`` of a freely diffusing particle seen
with a static localisation error ``σ`` and a uniform exposure ``t_E``):

    Var(Δxₙ)          = 2DΔt(1 − 2R) + 2σ²
    Cov(Δxₙ, Δxₙ₊₁)   = 2RDΔt − σ²          (zero for |n − m| > 1)
    R = t_E / (6Δt)   motion-blur coefficient (Berglund 2010)

Estimators
----------
CVE (covariance-based estimator; Vestergaard, Blainey & Flyvbjerg 2014), both
axes pooled::

    D̂  = ⟨Δx²⟩/(2Δt) + ⟨ΔxₙΔxₙ₊₁⟩/Δt
    σ̂² = R⟨Δx²⟩ + (2R − 1)⟨ΔxₙΔxₙ₊₁⟩

unbiased for any ``σ`` and ``R``; its variance (their eq. 16, per axis, ``N``
steps, ``ε = σ²/(DΔt) − 2R``) is ``D²[(6 + 4ε + 2ε²)/N + 4(1 + ε)²/N²]``,
halved for two pooled axes. It is close to the Cramér–Rao bound
(:func:`cramer_rao_D_rel_se`) when ``ε`` is small.

MSD fit: unweighted least-squares line ``MSD(nΔt) = a + 4D nΔt`` through the
first ``p`` lags, ``p`` chosen from the reduced localisation error
``x = σ̂²/(D̂Δt)`` as in Michalet (2010): ``p = 2`` when ``x ≪ 1``, growing
like ``√x`` (``p ≈ 2 + 2.7√x``, at most ``n_steps/2`` and
:data:`MSD_MAX_LAG`). The intercept absorbs noise and blur, so the slope is
unbiased too, but noisier than the CVE.

Gaps
----
Tracks may skip frames (gap closing). Only *one-frame* steps enter ``⟨Δx²⟩``,
and only pairs of *adjacent* one-frame steps (positions at f, f+1, f+2) enter
``⟨ΔxₙΔxₙ₊₁⟩``: this is the CVE applied to the contiguous segments of the
track and pooled. ``n_steps`` counts the one-frame steps. MSD lags use every
pair of positions the given number of frames apart.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..config import Acquisition, SizingParams
from ..errors import ExontaInputError
from ..physics import diameter_from_diffusion
from . import _diffusion_kernels as _k

__all__ = ["particle_table", "cve_variance", "cramer_rao_D_rel_se", "valid_track_rows", "PARTICLE_COLUMNS",
           "MSD_MAX_LAG"]

#: Largest lag (frames) used by the MSD fit.
MSD_MAX_LAG = 10
#: z-value of a two-sided 95 % interval.
_Z95 = 1.959963984540054

#: Columns of the particles table, in order.
PARTICLE_COLUMNS = (
    "particle", "n_positions", "n_steps", "first_frame", "D_um2_s", "D_se_um2_s", "sigma_loc_um",
    "diameter_nm", "diameter_ci95_low_nm", "diameter_ci95_high_nm", "D_msd_um2_s", "mean_mass",
    "x_mean", "y_mean", "valid", "D_cve_um2_s", "sigma2_loc_um2", "msd1_um2", "cov1_um2", "n_cov",
)


def cve_variance(d_um2_s, sigma2_um2, n_steps, blur_r, dt_s, n_dims=2):
    """Variance of the CVE estimate of ``D`` (Vestergaard et al. 2014, eq. 16).

    Parameters
    ----------
    d_um2_s : float or array
        Diffusion coefficient, µm²/s (true or estimated).
    sigma2_um2 : float or array
        Localisation variance per axis, µm² (negative values are treated as 0).
    n_steps : int or array
        Number of one-frame steps per axis.
    blur_r : float
        Motion-blur coefficient ``R``.
    dt_s : float
        Frame interval, s.
    n_dims : int
        Number of independent axes pooled (2 for x and y).

    Returns
    -------
    float or ndarray
        Var(D̂) in (µm²/s)².
    """
    d = np.asarray(d_um2_s, dtype=float)
    s2 = np.clip(np.asarray(sigma2_um2, dtype=float), 0.0, None)
    n = np.asarray(n_steps, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = s2 / (d * dt_s) - 2.0 * blur_r
        var = d * d * ((6.0 + 4.0 * eps + 2.0 * eps * eps) / n + 4.0 * (1.0 + eps) ** 2 / (n * n)) / n_dims
    return float(var) if var.ndim == 0 else var


def _fisher_axis(n: int, d: float, s2: float, r: float, dt: float) -> np.ndarray:
    """Fisher information matrix of (D, σ²) for the N steps of one axis."""
    c = np.cos(np.pi * np.arange(1, n + 1) / (n + 1.0))
    a = 2.0 * d * dt * (1.0 - 2.0 * r) + 2.0 * s2
    b = 2.0 * r * d * dt - s2
    lam = a + 2.0 * b * c
    g_d = 2.0 * dt * (1.0 - 2.0 * r) + 4.0 * r * dt * c  # ∂λ/∂D
    g_s = 2.0 - 2.0 * c  # ∂λ/∂σ²
    w = 0.5 / lam**2
    return np.array([[np.sum(w * g_d * g_d), np.sum(w * g_d * g_s)],
                     [np.sum(w * g_d * g_s), np.sum(w * g_s * g_s)]])


def cramer_rao_D_rel_se(n_steps, D, sigma_loc, R, dt, n_dims=2, sigma_known=False):
    """Cramér–Rao lower bound on the relative standard error of ``D``.

    Exact for the Gaussian displacement model of the module docstring: per
    axis the ``N`` steps have a tridiagonal Toeplitz covariance (diagonal
    ``a = 2DΔt(1 − 2R) + 2σ²``, off-diagonal ``b = 2RDΔt − σ²``), which the
    DST-I diagonalises with eigenvalues ``λ_k = a + 2b cos(πk/(N+1))``. The
    Fisher information is ``I_ij = ½ Σ_k ∂_iλ_k ∂_jλ_k / λ_k²`` per axis
    (``n_dims`` independent axes add up).

    Parameters
    ----------
    n_steps : int or array of int
        Steps per axis, ``N ≥ 2`` (``≥ 1`` with ``sigma_known``).
    D : float
        Diffusion coefficient, µm²/s.
    sigma_loc : float
        Localisation error per axis, µm.
    R : float
        Motion-blur coefficient (0 ≤ R ≤ 1/6 for a uniform exposure).
    dt : float
        Frame interval, s.
    n_dims : int
        Number of axes (2).
    sigma_known : bool
        If False (default), ``σ`` is estimated jointly with ``D`` (2 × 2
        Fisher matrix, bound = ``[I⁻¹]_DD``): the right comparison for the
        CVE, which estimates both. If True, ``1/I_DD``.

    Returns
    -------
    float or ndarray
        ``sqrt(CRB(D)) / D``.

    References
    ----------
    Michalet, X. & Berglund, A. J., "Optimal diffusion coefficient estimation
    in single-particle tracking", Phys. Rev. E 85:061916 (2012).
    Vestergaard, C. L., Blainey, P. C. & Flyvbjerg, H., Phys. Rev. E 89:022726 (2014).
    """
    ns = np.atleast_1d(np.asarray(n_steps, dtype=np.int64))
    out = np.empty(ns.size)
    s2 = float(sigma_loc) ** 2
    for idx, n in enumerate(ns):
        if n < (1 if sigma_known else 2):
            out[idx] = np.nan
            continue
        fim = n_dims * _fisher_axis(int(n), float(D), s2, float(R), float(dt))
        if sigma_known:
            crb = 1.0 / fim[0, 0]
        else:
            det = fim[0, 0] * fim[1, 1] - fim[0, 1] ** 2
            crb = fim[1, 1] / det if det > 0 else np.inf
        out[idx] = math.sqrt(crb) / float(D)
    return float(out[0]) if np.ndim(n_steps) == 0 else out


def _optimal_msd_points(x_reduced: np.ndarray, n_steps: np.ndarray) -> np.ndarray:
    """Number of MSD points for the slope fit (approximation to Michalet 2010)."""
    x = np.nan_to_num(np.clip(x_reduced, 0.0, None), nan=0.0, posinf=1e6)
    p = np.rint(2.0 + 2.7 * np.sqrt(x)).astype(np.int64)
    cap = np.maximum(np.minimum(n_steps // 2, MSD_MAX_LAG), 2)
    return np.clip(p, 2, cap)


def valid_track_rows(tracks: pd.DataFrame, particles: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the rows (positions) of ``tracks`` that belong to a valid track of ``particles``
    (every track when the table has no ``valid`` column; none without ``particle`` columns)."""
    if not len(tracks) or not len(particles) or "particle" not in tracks or "particle" not in particles:
        return np.zeros(len(tracks), bool)
    ids = particles["particle"][particles["valid"].astype(bool)] if "valid" in particles else particles["particle"]
    return np.isin(tracks["particle"].to_numpy(), ids.to_numpy())


def particle_table(tracks: pd.DataFrame, acquisition: Acquisition, params: SizingParams | None = None) -> pd.DataFrame:
    """Diffusion coefficient, localisation error and size of every track.

    Parameters
    ----------
    tracks : DataFrame
        Tracks table: ``particle``, ``frame`` and ``x_corrected`` /
        ``y_corrected`` (drift removed; ``x`` / ``y`` are used when absent), px.
        ``mass`` is averaged when present.
    acquisition : Acquisition
        Pixel size, frame rate, exposure (blur coefficient ``R``),
        temperature and viscosity (Stokes–Einstein).
    params : SizingParams, optional
        ``estimator`` (``"cve"`` or ``"msd"``) chooses ``D_um2_s``;
        ``min_track_length`` (positions) sets ``valid``.

    Returns
    -------
    DataFrame
        One row per track, columns :data:`PARTICLE_COLUMNS`:

        - ``n_positions``; ``n_steps`` one-frame steps; ``first_frame``;
        - ``D_um2_s`` (chosen estimator), ``D_se_um2_s`` (its standard error
          from the CVE variance formula at the track's own ``D̂``, ``σ̂``;
          for the MSD estimator an approximation from below);
        - ``sigma_loc_um`` = ``sqrt(max(σ̂², 0))``, ``sigma2_loc_um2`` = ``σ̂²``
          (may be negative by chance);
        - ``diameter_nm`` (Stokes–Einstein) and its 95 % interval
          ``d·exp(∓1.96·SE/D)`` (delta method on ``log D``; NaN when D ≤ 0);
        - ``D_msd_um2_s`` (MSD fit), ``D_cve_um2_s`` (CVE);
        - ``msd1_um2`` (mean squared one-frame step per axis, both axes
          pooled), ``cov1_um2`` (mean product of adjacent steps per axis),
          ``n_cov`` (number of adjacent step pairs): the sufficient statistics
          the size-distribution likelihood uses;
        - ``mean_mass``, ``x_mean``, ``y_mean`` (px);
        - ``valid``: ``n_positions ≥ min_track_length`` and ``D_um2_s > 0``.

    Raises
    ------
    ExontaInputError
        Missing columns or a particle seen twice in one frame.

    References
    ----------
    Vestergaard, C. L., Blainey, P. C. & Flyvbjerg, H., "Optimal estimation of
    diffusion coefficients from single-particle trajectories", Phys. Rev. E
    89:022726 (2014).
    Berglund, A. J., "Statistics of camera-based single-particle tracking",
    Phys. Rev. E 82:011917 (2010).
    Michalet, X., "Mean square displacement analysis of single-particle
    trajectories with localization error: Brownian motion in an isotropic
    medium", Phys. Rev. E 82:041914 (2010).
    """
    params = params if params is not None else SizingParams()
    for c in ("particle", "frame"):
        if c not in tracks.columns:
            raise ExontaInputError(f"the tracks table has no column {c!r}; link the features first "
                                   "(exonta.track.link_features)")
    if "x_corrected" in tracks.columns and "y_corrected" in tracks.columns:
        xc, yc = "x_corrected", "y_corrected"
    elif "x" in tracks.columns and "y" in tracks.columns:
        xc, yc = "x", "y"
    else:
        raise ExontaInputError("the tracks table needs x/y (or x_corrected/y_corrected) columns")

    px = float(acquisition.pixel_size_um)
    dt = float(acquisition.frame_interval_s)
    r = float(acquisition.blur_coefficient)
    p = tracks["particle"].to_numpy().astype(np.int64)
    f = tracks["frame"].to_numpy().astype(np.int64)
    x = tracks[xc].to_numpy(dtype=np.float64)
    y = tracks[yc].to_numpy(dtype=np.float64)
    if x.size and not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ExontaInputError(f"columns {xc}/{yc} of the tracks table contain NaN or infinite values")
    mass = tracks["mass"].to_numpy(dtype=np.float64) if "mass" in tracks.columns else np.full(p.size, np.nan)

    order = np.lexsort((f, p))
    p, f, x, y, mass = p[order], f[order], x[order], y[order], mass[order]
    if p.size > 1 and np.any((p[1:] == p[:-1]) & (f[1:] == f[:-1])):
        raise ExontaInputError("a particle appears twice in the same frame in the tracks table; "
                               "relink the features")
    ids, starts, n_pos = np.unique(p, return_index=True, return_counts=True)
    n_tr = ids.size
    if n_tr == 0:
        return _empty_table()
    offsets = np.append(starts, p.size).astype(np.int64)

    sq_sum, pair_cnt, cov_sum, cov_cnt = _k.allocate(n_tr, MSD_MAX_LAG)
    _k.track_moments(offsets, f, x * px, y * px, MSD_MAX_LAG, sq_sum, pair_cnt, cov_sum, cov_cnt)

    n_steps = pair_cnt[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        msd1 = sq_sum[:, 0] / (2.0 * n_steps)  # per axis
        cov1 = np.where(cov_cnt > 0, cov_sum / (2.0 * cov_cnt), np.nan)
        d_cve = msd1 / (2.0 * dt) + cov1 / dt
        s2 = r * msd1 + (2.0 * r - 1.0) * cov1

        # MSD fit over lags 1..p (2-D MSD = 4 D n Δt + offset)
        msd = sq_sum / pair_cnt
        lags = np.arange(1, MSD_MAX_LAG + 1, dtype=float)[None, :] * dt
        x_red = np.clip(s2, 0.0, None) / (np.abs(d_cve) * dt)
        npts = _optimal_msd_points(x_red, n_steps)
        w = ((np.arange(1, MSD_MAX_LAG + 1)[None, :] <= npts[:, None]) & (pair_cnt > 0)).astype(float)
        msd_f = np.where(w > 0, msd, 0.0)
        sw = w.sum(1)
        st = (w * lags).sum(1)
        stt = (w * lags * lags).sum(1)
        sm = (w * msd_f).sum(1)
        stm = (w * lags * msd_f).sum(1)
        den = sw * stt - st * st
        slope = np.where((sw >= 2) & (den > 0), (sw * stm - st * sm) / den, np.nan)
        d_msd = slope / 4.0

    d_use = d_cve if params.estimator == "cve" else d_msd
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(cve_variance(d_use, s2, n_steps, r, dt))
    se = np.where(d_use > 0, se, np.nan)
    diam = diameter_from_diffusion(d_use, acquisition.temperature_c, acquisition.viscosity_mpas)
    diam = np.atleast_1d(np.asarray(diam, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        rel = se / d_use
        lo = diam * np.exp(-_Z95 * rel)
        hi = diam * np.exp(_Z95 * rel)

    # per-track means
    mean_mass = np.add.reduceat(mass, starts) / n_pos
    x_mean = np.add.reduceat(x, starts) / n_pos
    y_mean = np.add.reduceat(y, starts) / n_pos
    valid = (n_pos >= params.min_track_length) & np.isfinite(d_use) & (d_use > 0) & np.isfinite(se)

    out = pd.DataFrame({
        "particle": ids.astype(np.int64),
        "n_positions": n_pos.astype(np.int64),
        "n_steps": n_steps.astype(np.int64),
        "first_frame": f[starts].astype(np.int64),
        "D_um2_s": d_use,
        "D_se_um2_s": se,
        "sigma_loc_um": np.sqrt(np.clip(s2, 0.0, None)),
        "diameter_nm": diam,
        "diameter_ci95_low_nm": lo,
        "diameter_ci95_high_nm": hi,
        "D_msd_um2_s": d_msd,
        "mean_mass": mean_mass,
        "x_mean": x_mean,
        "y_mean": y_mean,
        "valid": valid.astype(bool),
        "D_cve_um2_s": d_cve,
        "sigma2_loc_um2": s2,
        "msd1_um2": msd1,
        "cov1_um2": cov1,
        "n_cov": cov_cnt.astype(np.int64),
    })
    return out


def _empty_table() -> pd.DataFrame:
    ints = {"particle", "n_positions", "n_steps", "first_frame", "n_cov"}
    cols = {}
    for c in PARTICLE_COLUMNS:
        if c in ints:
            cols[c] = np.empty(0, dtype=np.int64)
        elif c == "valid":
            cols[c] = np.empty(0, dtype=bool)
        else:
            cols[c] = np.empty(0, dtype=np.float64)
    return pd.DataFrame(cols)
