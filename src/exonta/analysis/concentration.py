"""Particle concentration (particles/mL) from counts in the detection volume.

An NTA video images a slab of the sample: the analysed area ``A`` of the
field of view (the frame minus the detector's edge exclusion) times an
*effective depth* ``h`` set by the light sheet, the optics and the detection
threshold. The concentration is ::

    C = ⟨particles per frame in A⟩ / (A · h) × dilution

with ``1 mL = 10¹² µm³``. This module provides the count, its uncertainty
and three ways to obtain ``h``.

Counting
--------
Detections are counted per frame inside the analysed region
``[e, W−1−e] × [e, H−1−e]`` (pixel of the rounded position), with ``e`` the
detector's edge exclusion (``DetectParams.edge_px``, default
``ceil(2.5·psf_sigma_px)``), so ``A = (W−2e)(H−2e)·pixel_size²``. The mean
over all frames ``N̄`` estimates ``λ = C·A·h``.

Uncertainty of the count
------------------------
The per-frame counts are strongly correlated (a particle stays in the sheet
for many frames), so ``Var(N̄) ≠ N̄/T``. Two estimates are computed and the
larger is used:

* a moving-block bootstrap over frames (Künsch, Ann. Stat. 17:1217, 1989)
  with blocks of ``2·L_w`` frames, ``L_w = ΣL²/ΣL`` the occupancy-weighted
  mean residence (track length, frames) of the particles;
* a compound-Poisson estimate from the distinct particles: visits of the
  detection volume are (nearly) independent Poisson events, each contributing
  its residence ``L_i`` detections, so ``Var(ΣL) = Σ L_i²`` and the relative
  standard error of ``N̄`` is ``sqrt(ΣL_i²)/ΣL_i`` (``1/sqrt(K)`` for ``K``
  visits of equal length).

Both include the physical Poisson fluctuation of the number of particles in
the volume, which is part of the uncertainty of one measurement of the
sample's *true* concentration. The calibration's own relative uncertainty
(from its count and the standard's stated uncertainty) is added in
quadrature; the 95 % interval is ``C·exp(±1.96·s_rel)`` (log-normal). The
interval does not include the error of the depth *model* for particles unlike
the calibrant (see below).

Effective depth
---------------
1. ``nominal``: ``ConcentrationParams.nominal_depth_um`` (instrument default;
   uncalibrated — a warning says so).
2. ``calibrated``: a bead standard of known concentration ``C_cal`` measured
   with the same optics and settings (:func:`calibrate`) gives
   ``h_cal = N̄_cal / (A·C_cal/dilution_cal)``.
3. ``calibrated+size-model``: a physical model of the depth as a function
   of the particle's scattering. A particle at height ``z = u·σ_s`` in a
   Gaussian sheet of standard deviation ``σ_s`` receives
   ``exp(−u²/2)`` of the central intensity and scatters ``∝ s(d, n)`` (Rayleigh,
   ∝ d⁶·|(m²−1)/(m²+2)|², :func:`exonta.physics.relative_scattering`); its
   spot, a Gaussian of variance ``σ₀²(1 + q·u²)`` (defocus, photons conserved,
   ``q = σ_s²/z_dof²``), has the peak

       B(u) = B₀·s(d,n)·p(u),   p(u) = exp(−u²/2)/(1 + q·u²),

   and the detector thresholds that peak (filtered) at ``T``. With
   ``R = B₀·s_cal/T`` and ``k = s(d,n)/s_cal`` the depth is
   ``h(d) = 2·σ_s·u*`` with ``R·k·p(u*) = 1`` — for ``q = 0`` the formula
   ``h = 2σ_s·sqrt(2·ln(R·k))`` (0 if ``R·k ≤ 1``) — or, with noise on the
   peak (soft threshold, default), ``h = σ_s ∫ Φ(T/σ·(R·k·p(u) − 1)) du``.
   Large particles are seen deeper in the sheet, dim ones shallower.

   The parameters come from the calibration video (:func:`sheet_profile_fit`):
   ``m = signal·size_px²`` is proportional to the spot's photons, so
   ``ln m = ln m₀ − u²/2``. Detections are uniform in ``|u| ≤ u_max``, so the
   ``q``-quantile of ``ln m`` is ``ln m₀ − (u_max²/2)·(1−q)²``; a
   least-squares line through the 10–90 % quantiles against ``(1−q)²`` gives
   ``m₀`` and ``u_max`` robustly against the noisy extremes
   (:func:`brightness_fit`). Each detection's ``u² = 2·ln(m₀/m)``, and a line
   through the binned medians of ``size_px²`` against ``u²`` gives
   ``σ₀²`` and ``q``; ``ln R = u_max²/2 + ln(1 + q·u_max²)``. Finally ``σ_s``
   is set so that the model reproduces the standard's known concentration on
   the calibration video itself, with the same size-bin procedure as for
   samples (so the model is exact at the calibrant).

   For a sample, the number of particles per frame is split over the size
   bins of the deconvolved size distribution, weighted by occupancy (number
   fraction per bin × the mean track length at that size, since a particle
   contributes one detection per frame it is seen): ``N̄_b``. Each bin then
   gets ``C_b = N̄_b/(A·h(d_b))`` and the total is ``ΣC_b``. Large particles
   are seen deeper in the sheet and are no longer over-counted; small dim
   ones are no longer under-counted, down to the detection limit: bins with
   ``h(d) < min_depth_fraction·h(d_cal)`` use that floor (a warning says the
   result is a lower bound there). Brightness is measured by default as the
   detection's ``signal`` (spot peak above background, which like the
   detector's filtered peak includes the defocus spreading of far-from-focus
   spots); ``brightness_column = "snr"`` uses the filtered peak over the noise
   with ``T = threshold_snr`` known (only ``B_max`` fitted) — only valid if the
   detector's snr is linear in brightness. A sample analysed with another
   ``threshold_snr`` gets ``R·thr_cal/thr``. The detector's threshold is
   ``threshold_snr`` times the *local* noise, which grows with the light of
   the sample itself (shot noise of bright and out-of-focus particles), so
   the noise at the detection limit is measured in both videos
   (:func:`_noise_level`) and ``R`` is divided by the sample/calibration
   noise ratio (``noise_correction``).

   Near the detection limit a hard threshold is wrong: noise lifts some dim
   particles over it. With an automatic threshold (``threshold_snr`` noise
   sigmas) the soft model of :func:`depth_model_um` is used, detection
   probability ``Φ(μ/σ − threshold_snr)`` for an expected peak ``μ``.

Counting particles, not maxima: a bright particle far from focus makes a wide
spot on which several maxima exceed the threshold; maxima within
``wing_radius_factor`` spot sigmas of a brighter, wider-than-PSF spot of the
same frame are not counted (:func:`wing_duplicates`).

Assumptions of the model: Gaussian sheet profile and Gaussian spots whose
variance grows quadratically with the distance from focus; brightness ∝
Rayleigh scattering (the d⁶ law overestimates Mie scattering above ~150 nm
for real particles: use a calibrant close to the sample's size); a single
refractive index for the sample (``particle_refractive_index``); the same
laser power, camera settings and threshold as for the calibration (a
different ``threshold_snr`` is corrected for, ``R·thr_cal/thr``); no
saturation (saturated spots break the brightness–depth relation).

References
----------
Filipe, Hawe & Jiskoot, Pharm. Res. 27:796 (2010) (NTA concentration and its
limits); Gardiner et al., J. Extracell. Vesicles 2:19671 (2013); van der Pol
et al., J. Thromb. Haemost. 12:1182 (2014) (size-dependent detection volume
of scatter-based counting); Künsch, Ann. Stat. 17:1217 (1989) (block
bootstrap); Bohren & Huffman, Absorption and Scattering of Light by Small
Particles (1983), ch. 5.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from ..config import Acquisition, ConcentrationParams, DetectParams
from ..errors import ExontaInputError
from ..physics import relative_scattering

__all__ = [
    "CALIBRATION_SCHEMA",
    "Calibration",
    "ConcentrationResult",
    "analysed_region",
    "block_bootstrap_rel_se",
    "brightness_fit",
    "calibrate",
    "compound_poisson_rel_se",
    "count_per_frame",
    "depth_model_um",
    "estimate_concentration",
    "load_calibration",
    "occupancy_weights",
    "save_calibration",
]

CALIBRATION_SCHEMA = "exonta.calibration/1"
UM3_PER_ML = 1e12
_Z95 = 1.959963984540054
_QUANTILES = np.linspace(0.1, 0.9, 17)


# --------------------------------------------------------------------------- data types
@dataclass
class ConcentrationResult:
    """Concentration of one video.

    Attributes
    ----------
    value_per_ml, ci95_low_per_ml, ci95_high_per_ml : float or None
        Concentration (stock, dilution applied) and its 95 % interval, particles/mL.
    mean_particles_per_frame : float
        Mean number of detections per frame in the analysed region.
    per_bin_per_ml : ndarray
        Concentration per size bin (rows of ``distribution.table``); sums to ``value_per_ml``.
    warnings : list of str
    details : dict
        Method, depths, area, counts, uncertainties, calibration provenance (JSON-ready).
    """

    value_per_ml: float | None
    ci95_low_per_ml: float | None
    ci95_high_per_ml: float | None
    mean_particles_per_frame: float
    per_bin_per_ml: np.ndarray
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class _CalModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibrationAcquisition(_CalModel):
    """Acquisition settings of the calibration video."""

    pixel_size_um: float = Field(gt=0)
    fps: float = Field(gt=0)
    exposure_s: float = Field(gt=0)
    temperature_c: float
    dilution: float = Field(default=1.0, gt=0)


class Calibration(_CalModel):
    """Detection-volume calibration from a bead standard (schema ``exonta.calibration/1``).

    Depths in µm, areas in µm², concentrations in particles/mL.
    """

    schema_: Literal["exonta.calibration/1"] = Field(default=CALIBRATION_SCHEMA, alias="schema")
    created: str
    exonta_version: str
    standard_concentration_per_ml: float = Field(gt=0, description="stock concentration of the standard")
    standard_concentration_rel_uncertainty: float = Field(default=0.0, ge=0, lt=1)
    standard_diameter_nm: float = Field(gt=0)
    standard_refractive_index: float = Field(gt=1.0)
    medium_refractive_index: float = Field(gt=1.0)
    acquisition: CalibrationAcquisition
    detect_params_hash: str
    detect_threshold_snr: float
    detect_threshold: float | None = None
    psf_sigma_px: float
    edge_px: int = Field(ge=0)
    noise_level: float | None = Field(default=None, description="noise of the filtered image at the detection "
                                                                  "threshold, signal units")
    mean_particles_per_frame: float = Field(gt=0)
    mean_particles_per_frame_rel_se: float = Field(ge=0)
    analysed_area_um2: float = Field(gt=0)
    n_frames: int = Field(gt=0)
    n_distinct_particles: int = Field(ge=0)
    effective_depth_um: float = Field(gt=0)
    effective_depth_rel_se: float = Field(ge=0)
    brightness_column: str
    log_brightness_max: float
    brightness_ratio: float = Field(gt=1.0, description="R = B0·s_cal/T, calibrant at the sheet centre / threshold")
    threshold_model: Literal["hard", "soft"] = "hard"
    defocus_q: float = Field(default=0.0, ge=0, description="(sheet sigma / defocus scale)²; 0 = no defocus")
    sheet_sigma_um: float = Field(gt=0, description="σ_s of the depth model (reproduces the standard)")
    sheet_sigma_simple_um: float = Field(gt=0, description="σ_s if all detections were exactly at d_cal")
    video_sha256: str
    video_path: str | None = None
    warnings: list[str] = Field(default_factory=list)
    _file: str | None = PrivateAttr(default=None)

    @property
    def file(self) -> str | None:
        """Path the calibration was loaded from (None when made in memory)."""
        return self._file

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --------------------------------------------------------------------------- pure pieces
def analysed_region(frame_shape: tuple[int, int], detect_params: DetectParams, pixel_size_um: float):
    """Edge exclusion and analysed area.

    Parameters
    ----------
    frame_shape : (height, width)
    detect_params : DetectParams
    pixel_size_um : float

    Returns
    -------
    edge_px : int
    area_um2 : float
        ``(W − 2e)(H − 2e)·pixel_size²`` (0 when the edges cover the frame).
    """
    h, w = (int(v) for v in frame_shape)
    e = detect_params.edge_px
    if e is None:
        e = int(math.ceil(2.5 * detect_params.psf_sigma_px))
    area_px = max(w - 2 * e, 0) * max(h - 2 * e, 0)
    return int(e), float(area_px) * float(pixel_size_um) ** 2


def _in_region(df: pd.DataFrame, frame_shape: tuple[int, int], edge_px: int) -> np.ndarray:
    h, w = (int(v) for v in frame_shape)
    if len(df) == 0:
        return np.zeros(0, dtype=bool)
    c = np.rint(df["x"].to_numpy(dtype=float))
    r = np.rint(df["y"].to_numpy(dtype=float))
    return (c >= edge_px) & (c <= w - 1 - edge_px) & (r >= edge_px) & (r <= h - 1 - edge_px)


def wing_duplicates(features: pd.DataFrame, psf_sigma_px: float, radius_factor: float = 3.0,
                    wide_factor: float = 1.3, wing_margin: float = 2.0) -> np.ndarray:
    """Detections that are extra maxima on the wings of a bright, defocused or saturated spot.

    A bright particle far from focus (or saturating the camera) makes a wide
    spot on which several maxima exceed the threshold. Spot ``a`` *covers*
    detection ``b`` of the same frame when ``a`` is wider than
    ``wide_factor·psf_sigma_px``, ``b`` lies within ``radius_factor·size_a``
    and ``b`` is no brighter than ``wing_margin`` times the Gaussian wing of
    ``a`` at that distance (``snr_b < wing_margin·snr_a·exp(−r²/2size_a²)``).
    Detections connected by coverage form one particle, represented by its
    brightest detection. In-focus neighbours are left to the detector's
    minimum separation.

    Parameters
    ----------
    features : DataFrame
        ``frame, x, y, size_px`` and ``snr`` (or ``signal``) columns.
    psf_sigma_px : float
    radius_factor, wide_factor, wing_margin : float

    Returns
    -------
    ndarray of bool, shape (len(features),)
        True for the duplicates (all False when ``radius_factor`` ≤ 0 or the
        columns are missing).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(features)
    dup = np.zeros(n, dtype=bool)
    bright_col = "snr" if "snr" in features else ("signal" if "signal" in features else None)
    if n == 0 or radius_factor <= 0 or "size_px" not in features or bright_col is None:
        return dup
    frame = features["frame"].to_numpy()
    x = features["x"].to_numpy(dtype=float)
    y = features["y"].to_numpy(dtype=float)
    size = np.nan_to_num(features["size_px"].to_numpy(dtype=float), nan=0.0)
    bright = np.nan_to_num(features[bright_col].to_numpy(dtype=float), nan=0.0)
    wide = size > wide_factor * psf_sigma_px
    if not wide.any():
        return dup
    order = np.argsort(frame, kind="stable")
    bounds = np.flatnonzero(np.diff(frame[order])) + 1
    for idx in np.split(order, bounds):
        if idx.size < 2 or not wide[idx].any():
            continue
        xi, yi, si, bi = x[idx], y[idx], size[idx], bright[idx]
        d2 = (xi[:, None] - xi[None, :]) ** 2 + (yi[:, None] - yi[None, :]) ** 2
        s2 = np.where(wide[idx], si * si, np.nan)[:, None]  # row a covers column b
        with np.errstate(invalid="ignore"):
            cover = (d2 < radius_factor**2 * s2) & (bi[None, :] < wing_margin * bi[:, None] * np.exp(-d2 / (2 * s2)))
        np.fill_diagonal(cover, False)
        if not cover.any():
            continue
        a, b = np.nonzero(cover)
        m = idx.size
        _, labels = connected_components(coo_matrix((np.ones(a.size), (a, b)), shape=(m, m)), directed=False)
        best = np.full(labels.max() + 1, -1)
        for j in np.argsort(-bi, kind="stable"):
            if best[labels[j]] < 0:
                best[labels[j]] = j
        dup[idx] = best[labels] != np.arange(m)
    return dup


def count_per_frame(features: pd.DataFrame, n_frames: int, frame_shape: tuple[int, int], edge_px: int,
                    exclude: np.ndarray | None = None) -> np.ndarray:
    """Number of detections per frame inside the analysed region.

    Parameters
    ----------
    features : DataFrame
    n_frames : int
    frame_shape : (height, width)
    edge_px : int
    exclude : bool array, optional
        Detections not to count (e.g. :func:`wing_duplicates`).

    Returns
    -------
    ndarray of int64, shape (n_frames,)
    """
    if n_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    if len(features) == 0:
        return np.zeros(n_frames, dtype=np.int64)
    keep = _in_region(features, frame_shape, edge_px)
    if exclude is not None:
        keep &= ~np.asarray(exclude, dtype=bool)
    frames = features["frame"].to_numpy()[keep].astype(np.int64)
    frames = frames[(frames >= 0) & (frames < n_frames)]
    return np.bincount(frames, minlength=n_frames).astype(np.int64)


def persistent_detections(features: pd.DataFrame, tracks: pd.DataFrame | None, min_linked_frames: int) -> pd.DataFrame:
    """The detections that belong to a track of at least ``min_linked_frames`` positions.

    A particle is a spot that persists from frame to frame; single-frame noise
    maxima are not. At the default 3.5-σ threshold the detector passes a nearly
    constant ~30 noise maxima per 640×480 frame (the expected number of maxima of
    filtered white noise above the threshold), which would otherwise add a
    concentration-independent offset to the count: blanks would report particles
    and counts would not scale with concentration. Calibration and measurement
    apply the same rule. With ``min_linked_frames <= 1``, or without a tracks
    table holding these features, every detection counts.
    """
    if (min_linked_frames <= 1 or tracks is None or "particle" not in tracks or "frame" not in tracks
            or len(tracks) == 0):
        return features
    n = tracks.groupby("particle")["frame"].transform("size").to_numpy()
    return tracks.loc[n >= min_linked_frames, list(features.columns.intersection(tracks.columns))]


def residence_lengths(tracks: pd.DataFrame, frame_shape: tuple[int, int], edge_px: int) -> np.ndarray:
    """Detections per distinct particle (track) inside the analysed region, ``L_i``."""
    if len(tracks) == 0 or "particle" not in tracks:
        return np.zeros(0, dtype=np.int64)
    keep = _in_region(tracks, frame_shape, edge_px)
    ids = tracks["particle"].to_numpy()[keep]
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, counts = np.unique(ids, return_counts=True)
    return counts.astype(np.int64)


def compound_poisson_rel_se(lengths: np.ndarray) -> float:
    """Relative standard error of the total count from distinct-particle residences.

    Visits of the detection volume are Poisson events; visit ``i`` adds
    ``L_i`` detections, so ``Var(ΣL) = E[K]·E[L²]`` estimated by ``ΣL_i²``.

    Returns
    -------
    float
        ``sqrt(ΣL_i²)/ΣL_i`` (``inf`` when there is no detection).
    """
    L = np.asarray(lengths, dtype=float)
    tot = L.sum()
    if tot <= 0:
        return math.inf
    return float(math.sqrt(np.sum(L * L)) / tot)


def block_bootstrap_rel_se(counts: np.ndarray, block_frames: int, n_resamples: int = 1000,
                           seed: int = 0) -> float:
    """Relative standard error of the mean count by a moving-block bootstrap over frames.

    Parameters
    ----------
    counts : (T,) array
        Detections per frame.
    block_frames : int
        Block length (≥ the correlation time of the counts; capped at ``T``).
    n_resamples : int
    seed : int

    Returns
    -------
    float
        Standard deviation of the resampled means divided by the mean
        (``inf`` when the mean is 0; 0 for a constant series).

    References
    ----------
    Künsch, "The jackknife and the bootstrap for general stationary
    observations", Ann. Stat. 17:1217 (1989).
    """
    x = np.asarray(counts, dtype=float)
    t = x.size
    if t == 0 or x.sum() <= 0:
        return math.inf
    b = int(min(max(int(block_frames), 1), t))
    n_blocks = int(math.ceil(t / b))
    csum = np.concatenate([[0.0], np.cumsum(x)])
    block_sums = csum[b:] - csum[:-b]  # (t - b + 1,) moving blocks
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, block_sums.size, size=(int(n_resamples), n_blocks))
    means = block_sums[starts].sum(axis=1) / (n_blocks * b)
    return float(means.std(ddof=1) / x.mean()) if n_resamples > 1 else 0.0


def brightness_fit(brightness: np.ndarray) -> tuple[float, float]:
    """Fit the Gaussian-sheet model to the detected brightness of a monodisperse sample.

    With detections uniform in ``|z| ≤ z_max`` the ``q``-quantile of ``ln B``
    is ``ln B_max − u_max·(1−q)²`` with ``u_max = ln(B_max/T)``.

    Parameters
    ----------
    brightness : array
        Positive brightness of the detections (``signal`` or ``mass``).

    Returns
    -------
    log_brightness_max : float
        ``ln B_max`` (brightness at the sheet centre).
    log_ratio : float
        ``u_max = ln(B_max/T)``, ≥ 0.
    """
    b = np.asarray(brightness, dtype=float)
    b = b[np.isfinite(b) & (b > 0)]
    if b.size < 20:
        raise ExontaInputError(
            f"only {b.size} detections with a positive brightness: the calibration video needs more particles")
    lq = np.quantile(np.log(b), _QUANTILES)
    xq = (1.0 - _QUANTILES) ** 2
    slope, intercept = np.polyfit(xq, lq, 1)
    return float(intercept), float(max(-slope, 0.0))


def depth_model_um(relative_brightness, sheet_sigma_um: float, brightness_ratio: float,
                   threshold_snr: float | None = None, defocus_q: float = 0.0):
    """Effective depth of the detection volume for particles of a given scattering.

    The peak brightness of a particle at height ``z = u·σ_s`` is
    ``B(u) = B₀·k·p(u)`` with the sheet-and-defocus profile
    ``p(u) = exp(−u²/2)/(1 + q·u²)``: the Gaussian sheet, and a Gaussian spot
    whose variance grows as ``σ₀²(1 + q·u²)`` out of focus (photons
    conserved, so the peak drops by that factor; ``q = σ_s²/z_dof²``).

    Hard threshold: detected where ``R·k·p(u) ≥ 1`` (``R = B₀·s_cal/T``), so
    ``h = 2·σ_s·u*`` with ``p(u*) = 1/(R·k)``; for ``q = 0``
    ``h = 2·σ_s·sqrt(2·ln(R·k))`` (0 when ``R·k ≤ 1``).

    Soft threshold (``threshold_snr = T/σ`` given, σ the noise of the peak):
    detection probability ``Φ(T/σ·(R·k·p(u) − 1))``, so
    ``h = σ_s ∫ Φ(...) du``. It tends to the hard model for bright particles
    and stays > 0 near the detection limit, where noise lifts some dim
    particles above the threshold.

    Parameters
    ----------
    relative_brightness : float or array
        ``k = s(d, n)/s_cal``.
    sheet_sigma_um : float
        Gaussian light-sheet standard deviation σ_s, µm.
    brightness_ratio : float
        ``R``: peak of the calibrant at the sheet centre over the threshold.
    threshold_snr : float, optional
        ``T/σ`` for the soft model.
    defocus_q : float
        ``q ≥ 0`` (0: no defocus).

    Returns
    -------
    float or ndarray
        Depth in µm.
    """
    k = np.asarray(relative_brightness, dtype=float)
    rk = np.maximum(k * float(brightness_ratio), 1e-300)
    q = max(float(defocus_q), 0.0)
    if threshold_snr is None and q == 0.0:
        arg = np.log(rk)
        out = 2.0 * float(sheet_sigma_um) * np.sqrt(2.0 * np.clip(arg, 0.0, None))
        return float(out) if out.ndim == 0 else out
    flat = rk.reshape(-1)
    # u where even the hard model (with margin for noise) sees nothing: p(u) < (1 - 8σ/T)/(R k)
    t = float(threshold_snr) if threshold_snr is not None else math.inf
    lift = max(1.0 - 8.0 / t, 1e-3) if threshold_snr is not None else 1.0
    u_hi = np.sqrt(2.0 * np.log(np.maximum(flat / lift, 1.0 + 1e-12))) + 1.0
    frac = np.linspace(0.0, 1.0, 1201)
    u = u_hi[:, None] * frac[None, :]
    prof = np.exp(-0.5 * u * u) / (1.0 + q * u * u)
    if threshold_snr is None:
        p = (flat[:, None] * prof >= 1.0).astype(float)
    else:
        from scipy.special import ndtr

        p = ndtr(t * (flat[:, None] * prof - 1.0))
    out = (2.0 * float(sheet_sigma_um) * np.trapezoid(p, u, axis=1)).reshape(rk.shape)
    return float(out) if out.ndim == 0 else out


def sheet_profile_fit(signal: np.ndarray, size_px: np.ndarray) -> dict[str, float]:
    """Brightness-to-threshold ratio and defocus of a monodisperse standard from its detections.

    ``m = signal·size_px²`` is proportional to the photons of the spot (a
    Gaussian's amplitude times its variance), so ``ln m = ln m₀ − u²/2``
    follows the sheet alone and :func:`brightness_fit` gives ``m₀`` and
    ``u_max``; each detection's ``u² = 2·ln(m₀/m)``. The spot variance
    ``size_px² = σ₀²(1 + q·u²)`` is fitted by least squares on the medians of
    ten ``u²`` bins (robust to bad fits), giving ``q``. The peak ratio at the
    threshold then is ``ln R = u_max²/2 + ln(1 + q·u_max²)``.

    Returns
    -------
    dict
        ``log_brightness_max`` (ln m₀), ``u_max``, ``defocus_q``,
        ``psf_sigma0_px``, ``brightness_ratio`` (R).
    """
    sig = np.asarray(signal, dtype=float)
    size = np.asarray(size_px, dtype=float)
    ok = np.isfinite(sig) & np.isfinite(size) & (sig > 0) & (size > 0)
    sig, size = sig[ok], size[ok]
    m = sig * size * size
    log_m0, half_u2 = brightness_fit(m)
    u_max2 = 2.0 * half_u2
    u2 = np.clip(2.0 * (log_m0 - np.log(m)), 0.0, None)
    order = np.argsort(u2)
    groups = [g for g in np.array_split(order, 10) if g.size]
    xs = np.array([np.median(u2[g]) for g in groups])
    ys = np.array([np.median(size[g] ** 2) for g in groups])
    if xs.size >= 3 and np.ptp(xs) > 0:
        b, a = np.polyfit(xs, ys, 1)
    else:
        a, b = float(np.median(size**2)), 0.0
    a = max(float(a), 1e-6)
    q = float(np.clip(b / a, 0.0, 20.0))
    log_r = u_max2 / 2.0 + math.log1p(q * u_max2)
    return {"log_brightness_max": float(log_m0), "u_max": float(math.sqrt(u_max2)), "defocus_q": q,
            "psf_sigma0_px": float(math.sqrt(a)), "brightness_ratio": float(math.exp(log_r))}


def _bin_weights(distribution: Any) -> tuple[np.ndarray, np.ndarray]:
    """Diameter (nm) and number fraction per bin of a size distribution."""
    table = getattr(distribution, "table", None)
    if table is None or len(table) == 0:
        return np.zeros(0), np.zeros(0)
    d = table["diameter_nm"].to_numpy(dtype=float)
    w = None
    for col in ("deconvolved_density", "raw_density"):
        if col in table:
            dens = np.nan_to_num(table[col].to_numpy(dtype=float), nan=0.0)
            width = table["bin_width_nm"].to_numpy(dtype=float) if "bin_width_nm" in table else np.ones_like(d)
            cand = np.clip(dens * width, 0.0, None)
            if cand.sum() > 0:
                w = cand / cand.sum()
                break
    if w is None:
        w = np.zeros_like(d)
    return d, w


def _track_length_at(particles: pd.DataFrame, diam_nm: np.ndarray) -> np.ndarray:
    """Mean positions per valid track as a smooth function of diameter (constant if few tracks)."""
    if len(particles) == 0 or "n_positions" not in particles or "diameter_nm" not in particles:
        return np.ones_like(diam_nm)
    p = particles
    if "valid" in p:
        p = p[p["valid"].astype(bool)]
    d = p["diameter_nm"].to_numpy(dtype=float)
    n = p["n_positions"].to_numpy(dtype=float)
    ok = np.isfinite(d) & (d > 0) & np.isfinite(n) & (n > 0)
    d, n = d[ok], n[ok]
    if d.size == 0:
        return np.ones_like(diam_nm)
    n_groups = int(min(8, d.size // 40))
    if n_groups < 2:
        return np.full_like(diam_nm, float(n.mean()))
    order = np.argsort(d)
    groups = np.array_split(order, n_groups)
    xs = np.array([np.median(np.log(d[g])) for g in groups])
    ys = np.array([n[g].mean() for g in groups])
    return np.interp(np.log(np.maximum(diam_nm, 1e-9)), xs, ys)


def occupancy_weights(distribution: Any, particles: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Share of the detections per size bin.

    The number fraction of tracks per bin (deconvolved when available) times
    the mean track length at that size, normalised: a particle contributes
    one detection per frame it is seen.

    Returns
    -------
    diameter_nm, weights : ndarray
        ``weights`` sums to 1 (all zeros when there is no distribution).
    """
    d, w = _bin_weights(distribution)
    if d.size == 0 or w.sum() <= 0:
        return d, w
    occ = w * _track_length_at(particles, d)
    s = occ.sum()
    return d, (occ / s if s > 0 else w)


def _noise_level(features: pd.DataFrame, psf_sigma_px: float, threshold_snr: float) -> float | None:
    """Noise of the thresholded (filtered) image at the detections, in ``signal`` units.

    ``snr`` is the filtered peak over the local noise σ_F; for a Gaussian spot
    of σ = ``size_px`` the filtered peak is ``signal·σ²/(σ² + σ_psf²)``, so
    ``σ_F = signal·σ²/(snr·(σ² + σ_psf²))``. The median over the detections
    near the threshold (``snr < 2·threshold_snr``) measures the noise where
    the detection limit is decided (the detector's local noise grows near
    bright spots and in the haze of out-of-focus particles).
    """
    if len(features) == 0 or not {"signal", "snr", "size_px"} <= set(features.columns):
        return None
    sig = features["signal"].to_numpy(dtype=float)
    snr = features["snr"].to_numpy(dtype=float)
    sz = features["size_px"].to_numpy(dtype=float)
    ok = np.isfinite(sig) & np.isfinite(snr) & np.isfinite(sz) & (snr > 0) & (sig > 0) & (sz > 0)
    near = ok & (snr < 2.0 * threshold_snr)
    use = near if near.sum() >= 10 else ok
    if use.sum() < 10:
        return None
    s2 = sz[use] ** 2
    return float(np.median(sig[use] * s2 / (snr[use] * (s2 + psf_sigma_px**2))))


def _brightness(features: pd.DataFrame, column: str) -> np.ndarray:
    if column not in features:
        raise ExontaInputError(f"the detections have no {column!r} column needed for the brightness model")
    return features[column].to_numpy(dtype=float)


def _size_model_depth_factors(rel_scatter, brightness_ratio, min_depth_fraction, threshold_snr=None, defocus_q=0.0):
    """Depth per unit σ_s per bin, ``g_b = 2·sqrt(2·ln(R·k_b))``, floored at a fraction of the calibrant's.

    Returns
    -------
    g_used : ndarray
        Floored depth factors (multiply by σ_s for µm).
    below : ndarray of bool
        Bins whose modelled depth is below the floor (near the detection limit).
    """
    g = np.asarray(depth_model_um(rel_scatter, 1.0, brightness_ratio, threshold_snr, defocus_q), dtype=float)
    floor = min_depth_fraction * depth_model_um(1.0, 1.0, brightness_ratio, threshold_snr, defocus_q)
    return np.maximum(g, floor), g < floor


# --------------------------------------------------------------------------- main entry
def _count_uncertainty(counts, lengths, params: ConcentrationParams) -> dict[str, float]:
    tot = float(counts.sum())
    if lengths.size and lengths.sum() > 0:
        lw = float(np.sum(lengths.astype(float) ** 2) / lengths.sum())
        mean_res = float(lengths.mean())
    else:
        lw, mean_res = 1.0, 1.0
    block = int(max(1, math.ceil(params.block_residence_factor * lw)))
    t = counts.size
    block_capped = min(block, max(1, t // 5))
    rse_boot = block_bootstrap_rel_se(counts, block_capped, params.bootstrap_resamples, params.seed)
    rse_cp = compound_poisson_rel_se(lengths) if lengths.size else (1.0 / math.sqrt(tot) if tot > 0 else math.inf)
    return {"rel_se": max(rse_boot, rse_cp), "rel_se_block_bootstrap": rse_boot, "rel_se_distinct_particles": rse_cp,
            "block_frames": block_capped, "mean_residence_frames": mean_res,
            "occupancy_weighted_residence_frames": lw}


def _ci(value: float, rel_se: float) -> tuple[float | None, float | None]:
    if not math.isfinite(rel_se) or value <= 0:
        return None, None
    return value * math.exp(-_Z95 * rel_se), value * math.exp(_Z95 * rel_se)


def estimate_concentration(
    *,
    features: pd.DataFrame,
    tracks: pd.DataFrame,
    particles: pd.DataFrame,
    distribution: Any,
    acquisition: Acquisition,
    params: ConcentrationParams,
    detect_params: DetectParams,
    frame_shape: tuple[int, int],
    n_frames: int,
    calibration: Calibration | None,
) -> ConcentrationResult:
    """Concentration of a video in particles/mL with a 95 % interval.

    Parameters
    ----------
    features, tracks, particles : DataFrame
        Detections, linked detections and the per-track table of the video.
    distribution : SizeDistribution
        Its ``table`` rows define the size bins of ``per_bin_per_ml``.
    acquisition : Acquisition
        ``pixel_size_um`` sets the area, ``dilution`` multiplies the result.
    params : ConcentrationParams
    detect_params : DetectParams
        Edge exclusion of the detector (the analysed region).
    frame_shape : (height, width)
    n_frames : int
    calibration : Calibration or None
        Without one the nominal depth is used (with a warning).

    Returns
    -------
    ConcentrationResult
    """
    warnings: list[str] = []
    features = persistent_detections(features, tracks, params.min_linked_frames)
    edge, area_um2 = analysed_region(frame_shape, detect_params, acquisition.pixel_size_um)
    d_bins, w_occ = occupancy_weights(distribution, particles)
    n_bins = len(getattr(distribution, "table", [])) if distribution is not None else 0
    if d_bins.size != n_bins:
        d_bins, w_occ = np.zeros(n_bins), np.zeros(n_bins)
    dilution = float(acquisition.dilution)
    details: dict[str, Any] = {"analysed_area_um2": area_um2, "edge_px": edge, "dilution": dilution,
                               "n_frames": int(n_frames)}
    if area_um2 <= 0 or n_frames <= 0:
        warnings.append("the detector's edge exclusion leaves no analysed area: no concentration")
        details["method"] = "none"
        return ConcentrationResult(None, None, None, 0.0, np.full(n_bins, np.nan), warnings, details)

    dup = wing_duplicates(features, detect_params.psf_sigma_px, params.wing_radius_factor)
    counts = count_per_frame(features, n_frames, frame_shape, edge, exclude=dup)
    lengths = residence_lengths(tracks, frame_shape, edge)
    mean_n = float(counts.mean())
    unc = _count_uncertainty(counts, lengths, params)
    n_valid = int(particles["valid"].astype(bool).sum()) if "valid" in particles else int(len(particles))
    details.update({"mean_particles_per_frame": mean_n, "n_detections": int(counts.sum()),
                    "n_wing_duplicates_excluded": int(dup.sum()),
                    "n_distinct_particles": int(lengths.size), "n_valid_tracks": n_valid,
                    "count_rel_se": unc["rel_se"],
                    "count_rel_se_block_bootstrap": unc["rel_se_block_bootstrap"],
                    "count_rel_se_distinct_particles": unc["rel_se_distinct_particles"],
                    "bootstrap_block_frames": unc["block_frames"],
                    "mean_residence_frames": unc["mean_residence_frames"]})

    # ----- depth
    cal_rel_se = 0.0
    if calibration is None:
        method = "nominal"
        depth_um = float(params.nominal_depth_um)
        inv_depth_per_bin = np.full(n_bins, 1.0 / depth_um)
        warnings.append(
            f"no detection-volume calibration: the concentration uses the nominal depth {depth_um:g} µm and may be "
            f"off by a large factor; calibrate with a bead standard (exonta calibrate) and pass --calibration")
    else:
        cal = calibration
        cal_rel_se = float(math.hypot(cal.effective_depth_rel_se, cal.standard_concentration_rel_uncertainty))
        details.update({"calibration_file": cal.file, "calibration_created": cal.created,
                        "calibration_video_sha256": cal.video_sha256,
                        "calibration_video": cal.video_path, "calibration_depth_um": cal.effective_depth_um,
                        "calibration_rel_se": cal_rel_se})
        warnings += _compare_settings(cal, acquisition, detect_params)
        thr_ratio = _threshold_ratio(cal, detect_params)
        noise = _noise_level(features, detect_params.psf_sigma_px, detect_params.threshold_snr)
        if cal.noise_level and noise:
            noise_ratio = noise / cal.noise_level
            details["noise_ratio_to_calibration"] = noise_ratio
            if params.noise_correction and detect_params.threshold is None and cal.brightness_column != "snr":
                # the detector's threshold is threshold_snr × the local noise: it moves with the noise
                thr_ratio *= noise_ratio
            if not 0.8 <= noise_ratio <= 1.25:
                warnings.append(
                    f"the image noise at the detection threshold is {noise_ratio:.2f}× that of the calibration "
                    f"video (background, haze of out-of-focus particles, camera level or laser power); the depth "
                    f"model corrects for it, but the concentration is less certain")
        ratio = max(cal.brightness_ratio / thr_ratio, 1.0 + 1e-9)
        details.update({"threshold_ratio_to_calibration": thr_ratio, "brightness_ratio": ratio,
                        "sheet_sigma_um": cal.sheet_sigma_um})
        use_model = params.size_correction and n_bins > 0 and w_occ.sum() > 0
        if use_model:
            method = "calibrated+size-model"
            k = relative_scattering(d_bins, params.particle_refractive_index, params.medium_refractive_index) / \
                relative_scattering(cal.standard_diameter_nm, cal.standard_refractive_index,
                                    params.medium_refractive_index)
            t_soft = (float(detect_params.threshold_snr) if cal.threshold_model == "soft"
                      and detect_params.threshold is None else None)
            g_used, below = _size_model_depth_factors(k, ratio, params.min_depth_fraction, t_soft, cal.defocus_q)
            inv_depth_per_bin = 1.0 / (cal.sheet_sigma_um * g_used)
            depth_um = float(1.0 / np.sum(w_occ * inv_depth_per_bin))
            details["depth_at_calibrant_um"] = float(depth_model_um(1.0, cal.sheet_sigma_um, ratio, t_soft,
                                                                    cal.defocus_q))
            details["defocus_q"] = cal.defocus_q
            details["threshold_model"] = "soft" if t_soft is not None else "hard"
            floored = float(np.sum(w_occ[below]))
            details["detections_near_detection_limit_fraction"] = floored
            if floored > 0.05:
                d_lim = float(np.min(d_bins[~below], initial=np.nan))
                warnings.append(
                    f"{100 * floored:.0f}% of the detections are of particles near the detection limit "
                    f"(below ≈{d_lim:.0f} nm for refractive index {params.particle_refractive_index:g}); "
                    f"their concentration is a lower bound")
        else:
            method = "calibrated"
            # a different threshold changes the depth even for the calibrant itself
            t_soft = (float(detect_params.threshold_snr) if cal.threshold_model == "soft"
                      and detect_params.threshold is None else None)
            t_cal = cal.detect_threshold_snr if t_soft is not None else None
            depth_um = float(cal.effective_depth_um * depth_model_um(1.0, 1.0, ratio, t_soft, cal.defocus_q)
                             / depth_model_um(1.0, 1.0, cal.brightness_ratio, t_cal, cal.defocus_q))
            inv_depth_per_bin = np.full(n_bins, 1.0 / depth_um)
            if params.size_correction:
                warnings.append("no size distribution: the size correction of the detection depth was not applied")

    # ----- concentration
    per_um3 = mean_n / (area_um2 * depth_um)
    value = per_um3 * UM3_PER_ML * dilution
    if n_bins and w_occ.sum() > 0:
        per_bin = mean_n * w_occ * inv_depth_per_bin / area_um2 * UM3_PER_ML * dilution
    else:
        per_bin = np.full(n_bins, np.nan)
    uncorrected = (mean_n / (area_um2 * (calibration.effective_depth_um if calibration else depth_um))
                   * UM3_PER_ML * dilution)
    rel_se = float(math.hypot(unc["rel_se"], cal_rel_se))
    lo, hi = _ci(value, rel_se)
    if mean_n == 0:
        # no detection: the 95 % upper bound of a Poisson count of 0 is 3.69 visits of ≥ 1 frame
        lo, hi = 0.0, 3.689 / max(n_frames, 1) / (area_um2 * depth_um) * UM3_PER_ML * dilution
    details.update({"method": method, "effective_depth_um": depth_um, "detection_volume_um3": area_um2 * depth_um,
                    "uncorrected_per_ml": uncorrected, "rel_se": rel_se})

    warnings += _count_warnings(mean_n, area_um2, acquisition.pixel_size_um, detect_params, n_valid, params)
    return ConcentrationResult(value_per_ml=float(value), ci95_low_per_ml=lo, ci95_high_per_ml=hi,
                               mean_particles_per_frame=mean_n, per_bin_per_ml=np.asarray(per_bin, dtype=float),
                               warnings=warnings, details=details)


def _count_warnings(mean_n, area_um2, pixel_size_um, detect_params: DetectParams, n_valid, params):
    out = []
    sep_px = detect_params.min_separation_px or 2.5 * detect_params.psf_sigma_px
    area_px = area_um2 / pixel_size_um**2
    # expected share of particles with a neighbour closer than the separation (Poisson points)
    overlap = 1.0 - math.exp(-mean_n * math.pi * sep_px**2 / area_px) if area_px > 0 else 0.0
    if mean_n < params.min_particles_per_frame:
        out.append(f"only {mean_n:.1f} particles per frame (< {params.min_particles_per_frame:g}): the concentration "
                   f"is uncertain; use a more concentrated sample or a longer video")
    if mean_n > params.max_particles_per_frame or overlap > params.max_overlap_fraction:
        target = 0.5 * (params.min_particles_per_frame + params.max_particles_per_frame)
        out.append(f"crowded field: {mean_n:.0f} particles per frame ({100 * overlap:.0f}% have a neighbour within "
                   f"{sep_px:.1f} px), spots overlap and are under-counted; dilute the sample about "
                   f"{max(mean_n / target, 2):.0f}-fold")
    if n_valid < params.min_valid_tracks:
        out.append(f"only {n_valid} valid tracks (< {params.min_valid_tracks}): the size distribution and the "
                   f"size-corrected concentration are uncertain; record a longer video")
    return out


def _compare_settings(cal: Calibration, acq: Acquisition, detect_params: DetectParams) -> list[str]:
    out = []
    ca = cal.acquisition
    for name, a, b in (("exposure_s", ca.exposure_s, acq.exposure_s), ("fps", ca.fps, acq.fps),
                       ("pixel_size_um", ca.pixel_size_um, acq.pixel_size_um)):
        if not math.isclose(a, b, rel_tol=0.02):
            out.append(f"the calibration was recorded with {name}={a:g}, this video with {b:g}: the effective "
                       f"depth may not apply; calibrate with the same settings")
    if not math.isclose(cal.psf_sigma_px, detect_params.psf_sigma_px, rel_tol=0.02):
        out.append("the detection parameters differ from the calibration's (psf_sigma_px); "
                   "calibrate with the same detection settings")
    if _threshold_ratio(cal, detect_params) != 1.0:
        out.append("the detection threshold differs from the calibration's; the depth model corrects for it, "
                   "but calibrating with the same threshold is more accurate")
    return out


def _soft_threshold(cal: None, detect_params: DetectParams, params: ConcentrationParams) -> float | None:
    """Threshold in noise sigmas for the soft-threshold depth model of a calibration (None: hard model)."""
    if detect_params.threshold is None and params.soft_threshold:
        return float(detect_params.threshold_snr)
    return None


def _threshold_ratio(cal: Calibration, detect_params: DetectParams) -> float:
    """Sample threshold over the calibration's, in the units of the brightness column."""
    if detect_params.threshold is None and cal.detect_threshold is None:
        return float(detect_params.threshold_snr / cal.detect_threshold_snr)
    if detect_params.threshold is not None and cal.detect_threshold and cal.brightness_column != "snr":
        return float(detect_params.threshold / cal.detect_threshold)
    return 1.0


# --------------------------------------------------------------------------- calibration
def _detect_hash(detect_params: DetectParams) -> str:
    blob = json.dumps(detect_params.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def calibrate(result: Any, concentration_per_ml: float, diameter_nm: float = 100.0, refractive_index: float = 1.59,
              concentration_rel_uncertainty: float = 0.0) -> Calibration:
    """Calibrate the detection volume from the analysis of a bead standard.

    Parameters
    ----------
    result : exonta.pipeline.Result
        Analysis of a video of a monodisperse standard recorded with the same
        optics, camera settings and detection parameters as the samples.
    concentration_per_ml : float
        Stock concentration of the standard, particles/mL; the video's
        ``acquisition.dilution`` is the dilution applied before measuring.
    diameter_nm : float
        Diameter of the standard's particles.
    refractive_index : float
        Refractive index of the standard's particles (polystyrene 1.59).
    concentration_rel_uncertainty : float
        Stated relative standard uncertainty of the standard's concentration.

    Returns
    -------
    Calibration
    """
    from .. import __version__

    if not (concentration_per_ml > 0 and math.isfinite(concentration_per_ml)):
        raise ExontaInputError("the standard's concentration must be a positive number of particles/mL")
    if not (diameter_nm > 0 and math.isfinite(diameter_nm)):
        raise ExontaInputError("the standard's diameter must be a positive number of nm")
    if not 1.0 < refractive_index < 4.0:
        raise ExontaInputError("the standard's refractive index must be between 1 and 4 (polystyrene: 1.59)")
    cfg = result.config
    acq = cfg.acquisition
    params = cfg.concentration
    detect = cfg.detect
    n_frames = int(result.input["n_frames"])
    frame_shape = (int(result.input["height"]), int(result.input["width"]))
    edge, area_um2 = analysed_region(frame_shape, detect, acq.pixel_size_um)
    if area_um2 <= 0:
        raise ExontaInputError("the detector's edge exclusion leaves no analysed area in the calibration video")
    feats = persistent_detections(result.features, result.tracks, params.min_linked_frames)
    dup = wing_duplicates(feats, detect.psf_sigma_px, params.wing_radius_factor)
    counts = count_per_frame(feats, n_frames, frame_shape, edge, exclude=dup)
    mean_n = float(counts.mean()) if counts.size else 0.0
    if mean_n <= 0:
        raise ExontaInputError("no particle was detected in the calibration video: check the video, the "
                               "acquisition settings and the detection threshold")
    lengths = residence_lengths(result.tracks, frame_shape, edge)
    unc = _count_uncertainty(counts, lengths, params)
    c_meas_um3 = concentration_per_ml / float(acq.dilution) / UM3_PER_ML
    depth = mean_n / (area_um2 * c_meas_um3)

    keep = _in_region(feats, frame_shape, edge)
    col = params.brightness_column
    use = keep & ~dup
    q = 0.0
    if params.defocus_model and col == "signal" and "size_px" in feats:
        prof = sheet_profile_fit(feats["signal"].to_numpy(dtype=float)[use], feats["size_px"].to_numpy(dtype=float)[use])
        log_bmax, log_ratio, q = prof["log_brightness_max"], math.log(prof["brightness_ratio"]), prof["defocus_q"]
    else:
        log_bmax, log_ratio = brightness_fit(_brightness(feats, col)[use])
    if col == "snr" and detect.threshold is None:
        # the threshold is known exactly in snr units: only the upper edge is fitted
        log_ratio = log_bmax - math.log(detect.threshold_snr)
    if log_ratio < 0.05:
        raise ExontaInputError("the brightness of the standard's detections does not vary with depth as expected; "
                               "check that the video shows a monodisperse bead standard in a light sheet")
    ratio = math.exp(log_ratio)
    t_soft = _soft_threshold(None, detect, params)
    # all particles exactly at the standard's size
    simple_sigma = depth / float(depth_model_um(1.0, 1.0, ratio, t_soft, q))
    d_bins, w_occ = occupancy_weights(result.distribution, result.particles)
    if d_bins.size and w_occ.sum() > 0:
        k = relative_scattering(d_bins, refractive_index, params.medium_refractive_index) / \
            relative_scattering(diameter_nm, refractive_index, params.medium_refractive_index)
        g_used, _ = _size_model_depth_factors(k, ratio, params.min_depth_fraction, t_soft, q)
        # C = N̄ Σ_b w_b/(A σ_s g_b)  ⇒  σ_s = N̄ Σ_b (w_b/g_b) / (A C)
        sheet_sigma = mean_n * float(np.sum(w_occ / g_used)) / (area_um2 * c_meas_um3)
    else:
        sheet_sigma = simple_sigma
    n_valid = int(result.particles["valid"].astype(bool).sum()) if "valid" in result.particles else 0
    cal_warnings = _count_warnings(mean_n, area_um2, acq.pixel_size_um, detect, n_valid, params)
    if unc["rel_se"] > 0.05:
        cal_warnings.append(f"the calibration count has a relative standard error of {unc['rel_se']:.1%}: record a "
                            f"longer calibration video (or several) for a more precise detection volume")
    return Calibration(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        exonta_version=__version__,
        standard_concentration_per_ml=float(concentration_per_ml),
        standard_concentration_rel_uncertainty=float(concentration_rel_uncertainty),
        standard_diameter_nm=float(diameter_nm),
        standard_refractive_index=float(refractive_index),
        medium_refractive_index=float(params.medium_refractive_index),
        acquisition=CalibrationAcquisition(pixel_size_um=acq.pixel_size_um, fps=acq.fps, exposure_s=acq.exposure_s,
                                           temperature_c=acq.temperature_c, dilution=acq.dilution),
        detect_params_hash=_detect_hash(detect),
        detect_threshold_snr=float(detect.threshold_snr),
        detect_threshold=None if detect.threshold is None else float(detect.threshold),
        psf_sigma_px=float(detect.psf_sigma_px),
        edge_px=edge,
        noise_level=_noise_level(feats[use], detect.psf_sigma_px, detect.threshold_snr) if len(feats) else None,
        mean_particles_per_frame=mean_n,
        mean_particles_per_frame_rel_se=unc["rel_se"],
        analysed_area_um2=area_um2,
        n_frames=n_frames,
        n_distinct_particles=int(lengths.size),
        effective_depth_um=float(depth),
        effective_depth_rel_se=float(unc["rel_se"]),
        brightness_column=col,
        log_brightness_max=log_bmax,
        brightness_ratio=ratio,
        defocus_q=q,
        threshold_model="soft" if t_soft is not None else "hard",
        sheet_sigma_um=float(sheet_sigma),
        sheet_sigma_simple_um=float(simple_sigma),
        video_sha256=str(result.input.get("sha256") or ""),
        video_path=result.input.get("path"),
        warnings=cal_warnings,
    )


def save_calibration(cal: Calibration, path: str | Path) -> Path:
    """Write a calibration as JSON, atomically."""
    from ..io.results import atomic_write_text

    p = Path(path)
    if p.parent and not p.parent.exists():
        raise ExontaInputError(f"cannot write the calibration: folder {p.parent} does not exist")
    atomic_write_text(p, json.dumps(cal.model_dump(mode="json", by_alias=True), indent=2) + "\n")
    return p


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration JSON written by :func:`save_calibration` (``exonta calibrate``).

    Raises
    ------
    ExontaInputError
        Missing, unreadable or invalid file, with what to do about it.
    """
    p = Path(path)
    if not p.is_file():
        raise ExontaInputError(f"calibration file not found: {p}; create one with `exonta calibrate`")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExontaInputError(f"calibration file {p} is not valid JSON ({exc}); re-create it with "
                               f"`exonta calibrate`") from None
    if not isinstance(data, dict) or data.get("schema") != CALIBRATION_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ExontaInputError(f"{p} is not an exonta calibration (schema {got!r}, expected "
                               f"{CALIBRATION_SCHEMA!r}); re-create it with `exonta calibrate`")
    try:
        cal = Calibration.model_validate(data)
    except ValidationError as exc:
        parts = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e.get("loc", ()))
            parts.append(f"{loc}: {'unknown key' if e.get('type') == 'extra_forbidden' else e.get('msg')}")
        raise ExontaInputError(f"invalid calibration file {p}: {'; '.join(parts)}; re-create it with "
                               f"`exonta calibrate`") from None
    cal._file = str(p)
    return cal
