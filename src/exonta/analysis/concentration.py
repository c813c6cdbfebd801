"""Particle concentration (particles/mL) from counts in the detection volume.

An NTA video images a slab of the sample: the analysed area ``A`` of the
field of view (the frame minus the detector's edge exclusion) times an
*effective depth* ``h`` set by the light sheet, the optics and the counting
threshold. The concentration is ::

    C = ⟨counted particles per frame in A⟩ / (A · h) × dilution

with ``1 mL = 10¹² µm³``. This module provides the count, its uncertainty
and three ways to obtain ``h``.

Counting: an absolute threshold, not the detection threshold
-------------------------------------------------------------
The detector finds spots at ``threshold_snr`` (3.5) times a *local* noise
estimate. That threshold is low on purpose (sizing needs the dim,
motion-blurred frames of every track) and it moves with the sample: the
local noise includes the shot noise and haze of out-of-focus particles, so
the detection volume of a dense or bright sample differs from the
calibrant's; and at 3.5 σ a 640×480 frame holds ~25 noise maxima that link
into short tracks at a rate that does not scale with the concentration.

Concentration therefore counts a subset of the detections with a criterion
of its own, fixed in *absolute* intensity units by the calibration (like the
"detection threshold" of commercial NTA software, which is a camera-level
setting kept identical for calibrant and samples). A detection is counted
when

1. it belongs to a track of at least ``min_linked_frames`` positions
   (:func:`persistent_detections`; noise maxima do not persist),
2. it lies in the analysed region ``[e, W−1−e] × [e, H−1−e]`` (pixel of the
   rounded position; ``e`` the detector's edge exclusion, default
   ``ceil(2.5·psf_sigma_px)``, so ``A = (W−2e)(H−2e)·pixel_size²``),
3. it is not an extra maximum on the wing of a brighter defocused spot
   (:func:`wing_duplicates`), and
4. its *filtered peak* ``F = signal·s²/(s² + σ_f²)`` reaches the counting
   threshold ``T`` (:func:`filtered_peak`). ``signal`` and ``s = size_px``
   are the fitted Gaussian's peak (raw intensity units, above the local
   background) and width, ``σ_f = psf_sigma_px`` the detector's matched
   filter *of the calibration* (a sample analysed with another width, e.g.
   measured by ``DetectParams.auto_psf``, is still filtered at the
   calibration's, so both are on one scale): ``F`` is the response of that
   filter to the fitted spot, i.e. the spot's photons over
   ``2π(s² + σ_f²)``. Unlike the fitted peak alone it is not inflated by fits
   of single noisy pixels (tiny ``s``).

``T = count_threshold_sigmas × σ_F`` (default 12) with ``σ_F`` the noise of
the filtered image of the *calibration* video, measured as the median of
``F/snr`` over the detections at the detection limit (mostly background noise
maxima; :func:`filtered_noise_level`), or ``ConcentrationParams.count_threshold``
(raw units) when given. That median depends on the detection threshold (``F/snr``
grows with the spots' brightness), so it is always measured at
:data:`REFERENCE_THRESHOLD_SNR` (3.5 σ): an analysis detected at another threshold
takes it from the automatic threshold's first pass, or from an extra detection at
3.5 σ on its first 200 frames (:func:`exonta.pipeline.reference_detections`; how many of the spots above ``T``
:func:`counted_spots_found` still finds at the raised threshold is recorded, and a share
below 0.95 warns). The calibration stores ``T`` and every sample is
counted with the same ``T``, so the counted volume is set by the optics and
the particles, not by the sample's haze. At 12 σ single noise maxima (whose
``F`` rarely exceeds ~8 σ) essentially never count, and the detector, whose
threshold is 3.5 σ, finds every spot at the counting threshold unless the
sample's noise is more than ~2.3× the calibration's (``T`` below
``min_threshold_margin × threshold_snr`` sample sigmas: a warning says so). On the
simulator (640×480, 100 nm polystyrene) persistent noise adds < 0.01 counted
detections per frame against ~10 real ones at 1e8/mL.

Without a calibration ``T`` is set the same way from the video itself and
the nominal depth is used.

Who decides what is counted: threshold, detector, camera
--------------------------------------------------------
The depth model below describes a volume set by ``T`` alone. Two things can
take that role away from ``T``, and both are measured on every video
(``details["near_detection_limit_fraction"]``, ``details["clipped_fraction"]``):

* **The detector.** Its threshold is relative to a *local* noise estimate
  (tiles of the filtered image), which bright, clipped or wide spots could
  raise themselves (a tile filled by a 200 nm bead on the simulator's 8-bit
  camera had 200–360× the background's noise, and the bead fell below its own
  threshold). The detector now caps each tile's noise at 8× the median of
  its neighbourhood, more where the tile is brighter (shot noise;
  :func:`exonta.detect._kernels._cap_noise`; an in-focus 100 nm bead raises
  its tile ~7× and is left alone), so such a bead is found (simulator, 60
  frames: 98.5 % of the 200 nm beads within 10 µm of focus, 99.6 % of the
  400 nm beads within 12 µm, no more unmatched detections per frame than in
  a blank video); a spot near the limit of a noisy region can still be missed.
  A counted spot with ``snr`` below
  ``min_threshold_margin × threshold_snr`` (:func:`near_detection_limit`)
  could as well have been missed. The calibrant has such spots too (~8 % on
  the simulator; their loss is part of its calibrated depth), so a warning
  says the count is detector-limited — too low — when the sample's share
  exceeds the calibration's (stored in it) by more than 0.25.
* **The camera.** A spot whose fitted peak plus background reaches the clipping
  level of the video's integer type (:func:`clipped_spots`; the level is
  stored in the calibration, :func:`saturation_level_of`) has a censored
  brightness: the detector fits its unclipped wings, and ``signal·size_px²``
  is an extrapolation (too low by ~6× for 200 nm beads on the simulator's
  8-bit camera). See "Which ``k``" for its consequence.

Uncertainty of the count
------------------------
The per-frame counts are strongly correlated (a particle stays in the sheet
for many frames), so ``Var(N̄) ≠ N̄/T``. Three estimates are computed and the
largest is used:

* a moving-block bootstrap over frames (Künsch, Ann. Stat. 17:1217, 1989)
  with blocks of ``2·L_w`` frames, ``L_w = ΣL²/ΣL`` the occupancy-weighted
  mean residence (counted detections per track) of the particles;
* a compound-Poisson estimate from the distinct particles: visits of the
  detection volume are (nearly) independent Poisson events, each contributing
  its residence ``L_i`` counted detections, so ``Var(ΣL) = Σ L_i²`` and the
  relative standard error of ``N̄`` is ``sqrt(ΣL_i²)/ΣL_i``;
* the ideal-gas bound of :func:`diffusion_rel_se`: particles diffusing in
  and out of the slab (depth ``h``, Stokes–Einstein ``D`` of the typical
  size) return to it after leaving (1-D Brownian motion is recurrent), so
  visits of the same particle are correlated; the count's covariance
  ``N̄·φ(τ)`` follows from the diffusion kernel and gives ``Var(N̄)``
  exactly for an open (Poisson) sample (checked against a Monte-Carlo ideal
  gas). It is usually the largest of the three: with 100 nm beads, ~10 per
  frame and 400 frames it gives ~25 % where the other two give ~12–15 %; on
  the simulator with a deep (open-like) box the reported CI then matches the
  observed scatter (benchmarks/bench_concentration.py). In the simulator's
  default box (closed, ``z_half`` ≈ 10 µm for 100 nm, so the counted slab is
  ~60 % of it) the slab count fluctuates less than in a real sample and the
  CI over-covers.

All include the physical Poisson fluctuation of the number of particles in
the volume, which is part of the uncertainty of one measurement of the
sample's *true* concentration. The calibration's own relative uncertainty
(its count's, and the standard's stated uncertainty) is added in quadrature;
the 95 % interval is ``C·exp(±1.96·s_rel)`` (log-normal). The interval does
not include the error of the depth *model* for particles unlike the
calibrant (see below).

Effective depth
---------------
1. ``nominal``: ``ConcentrationParams.nominal_depth_um`` (instrument default;
   uncalibrated — a warning says so).
2. ``calibrated``: a bead standard of known concentration ``C_cal`` measured
   with the same optics and settings (:func:`calibrate`) gives
   ``h_cal = N̄_cal / (A·C_cal/dilution_cal)``.
3. ``calibrated+size-model``: a physical model of the counted depth as a
   function of the particle's size and refractive index, built on the same
   threshold ``T``. A particle of diameter ``d`` at height ``z = u·σ_s`` in a
   Gaussian light sheet of standard deviation ``σ_s`` sends
   ``M(u) = M₀·k·exp(−u²/2)`` photons per exposure, ``k = s(d,n)/s(d_cal,n_cal)``
   its Rayleigh scattering relative to the calibrant
   (∝ d⁶·|(m²−1)/(m²+2)|², :func:`exonta.physics.relative_scattering`). Its
   spot is a Gaussian of variance

       s²(u, d) = σ₀²(1 + q·u²) + β(d),   β(d) = D(d)·t_exp/(3·pixel²),

   widened out of focus (``q = σ_s²/z_dof²``) and by the motion blur of the
   exposure (a Brownian path of duration ``t_exp`` has a mean squared
   deviation ``D·t_exp/3`` per axis around its mean; ``D`` from
   Stokes–Einstein, :func:`exonta.physics.diffusion_from_diameter`). Its
   filtered peak is ``F = M/(2π(s² + σ_f²))``, so it is counted while

       R·k·exp(−u²/2) / (1 + c_d + g·u²) ≥ 1,
       R = F_cal(0)/T,  g = σ₀²q/V₀,  c_d = (β(d) − β_cal)/V₀,  V₀ = σ₀² + β_cal + σ_f²,

   and ``h(d) = 2·σ_s·u*(d)`` with ``u*`` the root (:func:`depth_model_um`;
   ``h = 2σ_s·sqrt(2·ln(R·k))`` without defocus and blur). Bright particles
   are seen deeper in the sheet, dim ones shallower; fast (small) particles
   blur more and are seen slightly less deep.

   The parameters come from the counted detections of the calibration video
   (:func:`sheet_profile_fit`): ``m = signal·s²`` is proportional to the
   photons whatever the defocus and blur, so ``ln m = ln m₀ − u²/2``; counted
   detections are uniform in ``|u| ≤ u_max``, so the ``p``-quantile of ``ln m``
   is ``ln m₀ − (u_max²/2)·(1−p)²``, and a least-squares line through the
   10–90 % quantiles against ``(1−p)²`` gives ``m₀`` robustly against the
   noisy extremes (:func:`brightness_fit`). Each detection's
   ``u² = 2·ln(m₀/m)``, and a line through the binned medians of ``s²``
   against ``u²`` gives ``σ₀² + β_cal`` and ``σ₀²q``; then
   ``R = m₀/(T·V₀)``. Finally ``σ_s = h_cal/(2·u*(1))`` so that the model
   reproduces the standard's known concentration at ``k = 1`` exactly (the
   standard is monodisperse; the spread of its measured sizes is sizing
   noise and does not enter). The self-consistency of the fit is reported
   as ``u_max`` from the quantiles against ``u*`` from the model.

   Which ``k`` — two ways, chosen per sample:

   a. ``calibrated+brightness-model`` (one population): the counted
      detections of the sample give their own ``m₀`` by the same quantile fit,
      so ``k̂ = m₀,sample/m₀,cal`` is *measured* — no size estimate and no
      refractive index needed — and ``h = 2·σ_s·u*(k̂)`` with the
      blur of the sample's median size. Used when the sample's counted
      brightness distribution is as narrow as one population's: its quantile
      fit's counting limit ``u_max`` over the model's ``u*(k̂)``, relative to
      the same ratio for the calibrant, is at most ``max_brightness_spread``
      (1.2; 0.86–1.18 measured for monodisperse 60–200 nm beads on the
      simulator, 1.23–1.44 for an EV-like lognormal of geometric SD 1.45: the
      margin is thin, a sample misclassified either way gets the other
      model's value, see ``details["method"]`` and ``brightness_spread``). This is the robust path: the
      d⁶-steep depth makes the size route very sensitive to sizing noise
      (a 10 % size error is a ~25 % depth error near 100 nm).
   b. ``calibrated+size-model`` (polydisperse): the counted particles per
      frame are split over the size bins by their share of the counted
      detections: each sized track spreads its own counted detections over
      the bins by its posterior size probabilities, with the deconvolved
      distribution as the prior (:func:`occupancy_weights`). Tracks with no
      counted detection — noise maxima linked into short tracks, which the
      deconvolution may gather into a small-size component — weigh nothing;
      before, the split used number fraction × counted detections per track
      as a smooth function of size, and such a ghost component at 40–80 nm,
      with its tiny modelled depth, added 0.3–0.4× of the truth to simulated
      200 nm beads. ``k_b`` from the diameter and
      ``particle_refractive_index``. Each bin gets ``C_b = N̄·w_b/(A·h(d_b))``
      and the total is ``ΣC_b``. Bins with
      ``h(d) < min_depth_fraction·h(d_cal)`` (near the counting limit) use
      that floor and a warning says the result is a lower bound there.

   Clipped spots (see above) are the brightest of a population (the peak
   falls monotonically away from the focus), so the quantile fit, which uses
   the 10–90 % quantiles, is blind to them up to a clipped share of 10 %.
   Above that share ``k̂`` would be too low (the depth too shallow) and the
   size model (b) is used whatever the spread, with a warning. This is also
   where the size model is at its best: for ``R·k ≫ 1`` the depth grows only
   like ``sqrt(ln(R·k))``, so a 10 % size error (77 % in ``k``) is a 3–5 %
   depth error at 200–400 nm polystyrene, against 12–13 % at the calibrant's
   brightness (simulator calibration, ``R`` = 11.6, ``g`` = 0.18).

   In both cases ``size_distribution.csv`` gets ``C_b`` per size bin
   (``ΣC_b`` = the total).

Counting particles, not maxima: a bright particle far from focus makes a wide
spot on which several maxima exceed the threshold; maxima within
``wing_radius_factor`` spot sigmas of a brighter, wider-than-PSF spot of the
same frame are not counted (:func:`wing_duplicates`).

Assumptions of the model: Gaussian sheet profile; Gaussian spots whose
variance grows quadratically with the distance from focus; brightness ∝
Rayleigh scattering (the d⁶ law overestimates Mie scattering above ~150 nm
for real particles: use a calibrant close to the sample's size); one
refractive index for the sample (``particle_refractive_index``); the same
laser power, camera settings (gain, exposure) and detector filter as the
calibration; every spot at the counting threshold is found by the detector
(its threshold is meant to be far lower). The last assumption used to fail
for particles much brighter than the calibrant on a camera set for it
(≥ 200 nm polystyrene with a 100 nm calibrant on the simulator's 8-bit
camera: their spots raised their own noise estimate); the detector now caps
that estimate (see "Who decides what is counted") and finds them, and their
clipped brightness sends them to the size model. A warning still says so
when many counted spots sit near the detector's own threshold. A calibrant of
similar size, or a lower gain or laser power for large particles, remains
the better acquisition.

References
----------
Filipe, Hawe & Jiskoot, Pharm. Res. 27:796 (2010) (NTA concentration and its
limits); Gardiner et al., J. Extracell. Vesicles 2:19671 (2013); van der Pol
et al., J. Thromb. Haemost. 12:1182 (2014) (size-dependent detection volume
of scatter-based counting); Künsch, Ann. Stat. 17:1217 (1989) (block
bootstrap); Berglund, Phys. Rev. E 82:011917 (2010) (motion blur of a
Brownian spot); Bohren & Huffman, Absorption and Scattering of Light by Small
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
from numba import njit
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from ..config import Acquisition, ConcentrationParams, DetectParams
from ..errors import ExontaInputError
from ..io.results import finite_or_none
from ..physics import diffusion_from_diameter, relative_scattering

__all__ = [
    "CALIBRATION_SCHEMA",
    "Calibration",
    "ConcentrationResult",
    "analysed_region",
    "blur_variance_px2",
    "block_bootstrap_rel_se",
    "brightness_fit",
    "calibrate",
    "clipped_spots",
    "compound_poisson_rel_se",
    "count_per_frame",
    "depth_model_um",
    "diffusion_rel_se",
    "estimate_concentration",
    "filtered_noise_level",
    "filtered_peak",
    "load_calibration",
    "near_detection_limit",
    "occupancy_weights",
    "persistent_detections",
    "residence_lengths",
    "saturation_level_of",
    "save_calibration",
    "sheet_profile_fit",
    "wing_duplicates",
]

CALIBRATION_SCHEMA = "exonta.calibration/1"
UM3_PER_ML = 1e12
_Z95 = 1.959963984540054
_QUANTILES = np.linspace(0.1, 0.9, 17)
# the brightness fit uses the quantiles up to _QUANTILES[-1]: it ignores the brightest 10 % of the counted detections,
# so it tolerates at most that share of clipped (censored) spots (their wrong values then shift no used quantile by
# more than that share of ranks)
_MAX_CLIPPED_FRACTION = float(1.0 - _QUANTILES[-1])
# the sample's share of counted spots near the detector's threshold may exceed the calibrant's by this much before
# the count is declared limited by the detector (see "Who decides what is counted" in the module docstring)
_MAX_EXTRA_NEAR_LIMIT = 0.25
# brightness column of calibrations that count with the absolute filtered-peak threshold
_FILTERED = "filtered_peak"


# --------------------------------------------------------------------------- data types
@dataclass
class ConcentrationResult:
    """Concentration of one video.

    Attributes
    ----------
    value_per_ml, ci95_low_per_ml, ci95_high_per_ml : float or None
        Concentration (stock, dilution applied) and its 95 % interval, particles/mL.
    mean_particles_per_frame : float
        Mean number of counted particles per frame in the analysed region.
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

    Depths in µm, areas in µm², concentrations in particles/mL, intensities in
    the raw units of the video, spot variances in px². Calibrations written
    before the absolute counting threshold (no ``count_threshold``) still load;
    they are applied with their measured depth only, with a warning.
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
    search_binning: Literal[1, 2] = Field(default=1, description="candidate search of the calibration analysis "
                                                                "(DetectParams.search_binning; 1 in older files)")
    edge_px: int = Field(ge=0)
    noise_level: float | None = Field(default=None, description="noise σ_F of the filtered image of the "
                                                                  "calibration video, raw units")
    count_threshold: float | None = Field(default=None, gt=0, description="absolute counting threshold T on the "
                                                                          "filtered peak, raw units")
    mean_particles_per_frame: float = Field(gt=0)
    mean_particles_per_frame_rel_se: float = Field(ge=0)
    analysed_area_um2: float = Field(gt=0)
    n_frames: int = Field(gt=0)
    n_distinct_particles: int = Field(ge=0)
    effective_depth_um: float = Field(gt=0)
    effective_depth_rel_se: float = Field(ge=0)
    brightness_column: str
    log_brightness_max: float = Field(description="ln m₀, m = signal·size_px² of the calibrant at the sheet centre")
    brightness_ratio: float = Field(gt=1.0, description="R = F_cal(0)/T, calibrant's filtered peak at the sheet "
                                                        "centre over the counting threshold")
    threshold_model: Literal["hard", "soft"] = "hard"
    defocus_q: float = Field(default=0.0, ge=0, description="g = σ₀²q/V₀, defocus widening of the filtered spot "
                                                            "per u² (0 = none)")
    spot_variance_px2: float | None = Field(default=None, gt=0, description="V₀ = σ₀² + β_cal + σ_f², filtered "
                                                                            "calibrant spot variance in focus")
    blur_variance_px2: float | None = Field(default=None, ge=0, description="β_cal, motion-blur variance of the "
                                                                            "calibrant's spots per axis")
    u_max_quantile_fit: float | None = Field(default=None, description="counting limit u_max of the quantile fit "
                                                                       "(self-consistency check of the model)")
    sheet_sigma_um: float = Field(gt=0, description="σ_s of the depth model (reproduces the standard)")
    sheet_sigma_simple_um: float = Field(gt=0, description="σ_s if all detections were exactly at d_cal")
    saturation_level: float | None = Field(default=None, gt=0, description="raw value at which the camera clips "
                                                                           "(maximum of the video's integer type); "
                                                                           "None: unknown or float video")
    near_detection_limit_fraction: float | None = Field(
        default=None, ge=0, le=1, description="share of the standard's counted detections whose snr is below "
                                              "min_threshold_margin × the detector's threshold_snr")
    video_sha256: str
    video_path: str | None = None
    warnings: list[str] = Field(default_factory=list)
    _file: str | None = PrivateAttr(default=None)

    @property
    def file(self) -> str | None:
        """Path the calibration was loaded from (None when made in memory)."""
        return self._file

    @property
    def absolute_threshold(self) -> bool:
        """Whether this calibration counts with an absolute filtered-peak threshold (current model)."""
        return self.count_threshold is not None and self.brightness_column == _FILTERED

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
        ``(W − 2e)(H − 2e)·pixel_size²`` less the pixels of the interior that
        ``detect_params.exclude_regions`` cover (burned-in overlays: no spot is
        kept there); 0 when nothing is left.
    """
    from ..detect.overlay import excluded_pixels

    h, w = (int(v) for v in frame_shape)
    e = detect_params.edge_px
    if e is None:
        e = int(math.ceil(2.5 * detect_params.psf_sigma_px))
    area_px = max(w - 2 * e, 0) * max(h - 2 * e, 0)
    area_px -= excluded_pixels((h, w), detect_params.exclude_regions, int(e))
    return int(e), float(max(area_px, 0)) * float(pixel_size_um) ** 2


def _in_region(df: pd.DataFrame, frame_shape: tuple[int, int], edge_px: int) -> np.ndarray:
    h, w = (int(v) for v in frame_shape)
    if len(df) == 0:
        return np.zeros(0, dtype=bool)
    c = np.rint(df["x"].to_numpy(dtype=float))
    r = np.rint(df["y"].to_numpy(dtype=float))
    return (c >= edge_px) & (c <= w - 1 - edge_px) & (r >= edge_px) & (r <= h - 1 - edge_px)


def filtered_peak(features: pd.DataFrame, psf_sigma_px: float) -> np.ndarray:
    """Peak of the detector's Gaussian matched filter applied to each fitted spot, raw units.

    A Gaussian spot of peak ``signal`` and width ``s = size_px`` filtered by a
    normalised Gaussian of width ``σ_f = psf_sigma_px`` peaks at
    ``F = signal·s²/(s² + σ_f²)`` (its photons over ``2π(s² + σ_f²)``).

    Parameters
    ----------
    features : DataFrame
        ``signal`` and ``size_px`` columns (without ``size_px`` the spot is
        taken at ``σ_f``).
    psf_sigma_px : float

    Returns
    -------
    ndarray of float
        ``F`` (NaN where the fit gave no finite positive values).
    """
    if len(features) == 0 or "signal" not in features:
        return np.full(len(features), np.nan)
    sig = features["signal"].to_numpy(dtype=float)
    if "size_px" in features:
        s2 = features["size_px"].to_numpy(dtype=float) ** 2
    else:
        s2 = np.full(sig.shape, float(psf_sigma_px) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = sig * s2 / (s2 + float(psf_sigma_px) ** 2)
    return np.where(np.isfinite(f) & (sig > 0) & (s2 > 0), f, np.nan)


def filtered_noise_level(features: pd.DataFrame, psf_sigma_px: float, threshold_snr: float) -> float | None:
    """Noise σ_F of the detector's filtered image, raw units, from the detections at the detection limit.

    ``snr`` is the filtered peak over the local noise, so ``F/snr`` estimates
    that noise at each detection; the median over the detections with
    ``snr < threshold_snr + 1`` (mostly background noise maxima, spread over
    the whole frame) measures the noise of the frame background.

    Returns
    -------
    float or None
        None without ``snr`` or with fewer than 10 such detections.
    """
    if len(features) == 0 or "snr" not in features:
        return None
    f = filtered_peak(features, psf_sigma_px)
    snr = features["snr"].to_numpy(dtype=float)
    ok = np.isfinite(f) & np.isfinite(snr) & (snr > 0)
    near = ok & (snr < float(threshold_snr) + 1.0)
    use = near if near.sum() >= 10 else ok
    if use.sum() < 10:
        return None
    return float(np.median(f[use] / snr[use]))


def saturation_level_of(dtype: Any, invert: bool = False, level: float | None = None) -> float | None:
    """Raw value at which a camera of this video type clips, or None.

    Integer videos clip at ``level`` (``DetectParams.saturation_level``: a 12-bit camera in 16-bit words clips
    at 4095) or else at the largest value of their type (the detector then leaves those pixels out of its
    fits); float videos and inverted (dark-spot) analyses have no known clipping level for bright spots.
    """
    from ..detect.overlay import bright_clip_level

    try:
        dt = np.dtype(dtype)
    except TypeError:
        return None
    return None if invert else bright_clip_level(dt, level)


def clipped_spots(features: pd.DataFrame, saturation_level: float | None) -> np.ndarray:
    """Detections whose spot reaches the camera's clipping level.

    The detector fits a Gaussian to the unclipped pixels of a spot (clipped
    ones are censored), so a clipped spot has a fitted peak at or above the
    clipping level: ``signal + background ≥ saturation_level`` (``background``
    0 when the column is missing). Its true brightness is only known to be
    at least that; its fitted ``signal·size_px²`` is an extrapolation.

    Parameters
    ----------
    features : DataFrame
        ``signal`` (and ``background``) in raw units.
    saturation_level : float or None
        From :func:`saturation_level_of`; None gives all False.

    Returns
    -------
    ndarray of bool, shape (len(features),)
    """
    n = len(features)
    if saturation_level is None or n == 0 or "signal" not in features:
        return np.zeros(n, dtype=bool)
    peak = features["signal"].to_numpy(dtype=float)
    if "background" in features:
        peak = peak + np.nan_to_num(features["background"].to_numpy(dtype=float), nan=0.0)
    with np.errstate(invalid="ignore"):
        return peak >= float(saturation_level)


def near_detection_limit(features: pd.DataFrame, threshold_snr: float, margin: float) -> np.ndarray:
    """Detections whose ``snr`` is below ``margin × threshold_snr`` (the detector could as well have missed them).

    ``snr`` is the detector's own criterion (its filtered peak over its local
    noise estimate). A counted spot far above the counting threshold can still
    be close to the detector's threshold when that local noise is raised — by
    haze, or by the spot itself when it is bright, clipped or wide (the noise
    is estimated on tiles the spot covers): then the detector, not the counting
    threshold, decides whether the particle is counted.

    Returns
    -------
    ndarray of bool, shape (len(features),) (all False without an ``snr`` column)
    """
    n = len(features)
    if n == 0 or "snr" not in features:
        return np.zeros(n, dtype=bool)
    with np.errstate(invalid="ignore"):
        return features["snr"].to_numpy(dtype=float) < float(margin) * float(threshold_snr)


def blur_variance_px2(diameter_nm, acquisition: Acquisition) -> np.ndarray | float:
    """Motion-blur variance of a spot per axis, px²: ``D·t_exp/3`` (Brownian path around its exposure mean)."""
    d = diffusion_from_diameter(np.asarray(diameter_nm, dtype=float), acquisition.temperature_c,
                                acquisition.viscosity_mpas)
    out = np.asarray(d, dtype=float) * float(acquisition.exposure_s) / 3.0 / float(acquisition.pixel_size_um) ** 2
    return float(out) if out.ndim == 0 else out


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
    n = len(features)
    bright_col = "snr" if "snr" in features else ("signal" if "signal" in features else None)
    if n == 0 or radius_factor <= 0 or "size_px" not in features or bright_col is None:
        return np.zeros(n, dtype=bool)
    frame = features["frame"].to_numpy().astype(np.int64)
    order = np.argsort(frame, kind="stable").astype(np.int64)
    starts = np.flatnonzero(np.r_[True, np.diff(frame[order]) != 0]).astype(np.int64)
    dup = np.zeros(n, dtype=np.bool_)
    _wing_kernel(order, np.r_[starts, n].astype(np.int64),
                 np.ascontiguousarray(features["x"].to_numpy(dtype=np.float64)),
                 np.ascontiguousarray(features["y"].to_numpy(dtype=np.float64)),
                 np.nan_to_num(features["size_px"].to_numpy(dtype=np.float64), nan=0.0),
                 np.nan_to_num(features[bright_col].to_numpy(dtype=np.float64), nan=0.0),
                 float(wide_factor * psf_sigma_px), float(radius_factor), float(wing_margin), dup)
    return dup


@njit(cache=True)
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True)
def _wing_kernel(order, bounds, x, y, size, bright, wide_px, radius_factor, wing_margin, dup):
    """Union the detections covered by a wide spot of the same frame; mark all but the brightest of each group.

    ``order`` sorts the detections by frame, ``bounds`` are the group starts
    (plus the end); ``dup`` (n,) bool is filled.
    """
    n = x.size
    parent = np.arange(n)
    for gi in range(bounds.size - 1):
        lo, hi = bounds[gi], bounds[gi + 1]
        for ia in range(lo, hi):
            a = order[ia]
            sa = size[a]
            if not (sa > wide_px) or not (np.isfinite(x[a]) and np.isfinite(y[a])):
                continue
            r2max = radius_factor * radius_factor * sa * sa
            for ib in range(lo, hi):
                b = order[ib]
                if b == a:
                    continue
                d2 = (x[a] - x[b]) ** 2 + (y[a] - y[b]) ** 2
                if d2 < r2max and bright[b] < wing_margin * bright[a] * np.exp(-d2 / (2.0 * sa * sa)):
                    ra = _find(parent, a)
                    rb = _find(parent, b)
                    if ra != rb:
                        parent[rb] = ra
    best = np.full(n, -1)
    for i in range(n):
        r = _find(parent, i)
        j = best[r]
        if j < 0 or bright[i] > bright[j]:  # ties: the first in table order
            best[r] = i
    for i in range(n):
        dup[i] = best[_find(parent, i)] != i


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


def persistent_detections(features: pd.DataFrame, tracks: pd.DataFrame | None, min_linked_frames: int,
                          keep_particle: bool = False) -> pd.DataFrame:
    """The detections that belong to a track of at least ``min_linked_frames`` positions.

    A particle is a spot that persists from frame to frame; single-frame noise
    maxima are not. At the default 3.5-σ threshold the detector passes a nearly
    constant ~25 noise maxima per 640×480 frame, some of which link into short
    tracks. Calibration and measurement apply the same rule. With
    ``min_linked_frames <= 1``, or without a tracks table holding these
    features, every detection counts.

    Parameters
    ----------
    features, tracks : DataFrame
    min_linked_frames : int
    keep_particle : bool
        Keep the tracks' ``particle`` column in the result.
    """
    if tracks is None or "particle" not in tracks or "frame" not in tracks or len(tracks) == 0:
        return features
    cols = list(features.columns.intersection(tracks.columns))
    if keep_particle and "particle" not in cols:
        cols.append("particle")
    if min_linked_frames <= 1:
        return tracks[cols] if keep_particle and len(tracks) == len(features) else features
    n = tracks.groupby("particle")["frame"].transform("size").to_numpy()
    return tracks.loc[n >= min_linked_frames, cols]


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


def diffusion_rel_se(mean_particles: float, depth_um: float, diffusion_um2_s: float, n_frames: int,
                     fps: float) -> float:
    """Relative standard error of the mean count of an ideal gas of diffusing particles in a slab.

    Particles of an open sample (a Poisson bath) diffuse in and out of the
    counted slab of depth ``h``; the count ``N(t)`` has covariance
    ``N̄·φ(τ)`` with ``φ(τ) = (1/h)∫∫_slab K_τ(z − z') dz dz'`` (``K_τ`` the
    Gaussian of variance ``s² = 2Dτ``)::

        φ(τ) = 2(Φ(h/s) − ½) − (2s/(h√(2π)))·(1 − exp(−h²/2s²)),

    so ``Var(N̄) = (N̄/T²)·Σ_{i,j} φ(|i − j|/fps)``. Unlike the visits of
    :func:`compound_poisson_rel_se`, this includes the return of a particle
    that has left the slab (1-D Brownian motion is recurrent), which makes the
    visits of the same particle correlated and the count converge slowly
    (exits in x, y are neglected: slightly conservative).

    Parameters
    ----------
    mean_particles : float
        ``N̄`` counted per frame.
    depth_um, diffusion_um2_s : float
        Effective depth and the particles' diffusion coefficient.
    n_frames : int
    fps : float

    Returns
    -------
    float
        ``sqrt(Var(N̄))/N̄`` (``inf`` when ``N̄ = 0``).
    """
    if not mean_particles > 0 or n_frames <= 0:
        return math.inf
    if not (depth_um > 0 and diffusion_um2_s > 0 and fps > 0):
        return 0.0
    lag = np.arange(n_frames, dtype=float)
    s = np.sqrt(2.0 * diffusion_um2_s * lag / fps)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(s > 0, depth_um / s, np.inf)
        tail = 2.0 / (r * math.sqrt(2.0 * math.pi)) * (1.0 - np.exp(-0.5 * r * r))
        # 2(Φ(r) − ½) = erf(r/√2); math.erf per lag (one value per frame) instead of importing
        # scipy.special (0.04–0.17 s in a fresh process), and without the cancellation of Φ(r) − ½ at
        # small r
        erf_r = np.fromiter(map(math.erf, (r * math.sqrt(0.5)).tolist()), dtype=float, count=r.size)
        phi = np.where(s > 0, erf_r - tail, 1.0)
    weight = np.where(lag == 0, 1.0, 2.0) * (n_frames - lag)
    var_rel = float(np.sum(weight * phi)) / (n_frames**2 * mean_particles)
    return math.sqrt(max(var_rel, 0.0))


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


def depth_model_um(relative_brightness, sheet_sigma_um: float, brightness_ratio: float, defocus_g: float = 0.0,
                   blur_offset=0.0):
    """Counted depth of particles of a given scattering: ``h = 2·σ_s·u*``.

    A particle at ``z = u·σ_s`` is counted while its filtered peak reaches the
    threshold::

        R·k·exp(−u²/2) / (1 + c + g·u²) ≥ 1

    (Gaussian sheet; filtered spot variance ``V₀(1 + c + g·u²)`` widened by
    defocus, ``g``, and by a blur that differs from the calibrant's, ``c``).
    The left side decreases with ``|u|``, so the counted slab is ``|u| ≤ u*``;
    without defocus and blur ``h = 2σ_s·sqrt(2·ln(R·k))`` (0 when ``R·k ≤ 1``).

    Parameters
    ----------
    relative_brightness : float or array
        ``k = s(d, n)/s_cal`` (photons relative to the calibrant).
    sheet_sigma_um : float
        Gaussian light-sheet standard deviation σ_s, µm.
    brightness_ratio : float
        ``R``: filtered peak of the calibrant at the sheet centre over the threshold.
    defocus_g : float
        ``g ≥ 0`` (0: no defocus).
    blur_offset : float or array
        ``c > −1``, broadcast against ``relative_brightness``.

    Returns
    -------
    float or ndarray
        Depth in µm.
    """
    k = np.asarray(relative_brightness, dtype=float)
    c = np.asarray(blur_offset, dtype=float)
    k, c = np.broadcast_arrays(k, c)
    g = max(float(defocus_g), 0.0)
    one_c = np.maximum(1.0 + c, 1e-9)
    a = np.maximum(k * float(brightness_ratio), 1e-300) / one_c  # peak over threshold at u = 0
    if g == 0.0:
        out = 2.0 * float(sheet_sigma_um) * np.sqrt(2.0 * np.clip(np.log(a), 0.0, None))
        return float(out) if out.ndim == 0 else out
    # bisection on u ∈ [0, u_hi]: f(u) = ln a − u²/2 − ln(1 + g'u²) decreasing, f(u_hi) ≤ 0
    gp = g / one_c
    lo = np.zeros(a.shape)
    hi = np.sqrt(2.0 * np.clip(np.log(a), 0.0, None))
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        above = np.log(a) - 0.5 * mid * mid - np.log1p(gp * mid * mid) >= 0.0
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    out = 2.0 * float(sheet_sigma_um) * 0.5 * (lo + hi)
    return float(out) if out.ndim == 0 else out


def sheet_profile_fit(signal: np.ndarray, size_px: np.ndarray, count_threshold: float,
                      psf_sigma_px: float) -> dict[str, float]:
    """Sheet, defocus and brightness-to-threshold ratio from the counted detections of a monodisperse standard.

    ``m = signal·size_px²`` is proportional to the photons of the spot (a
    Gaussian's amplitude times its variance) whatever its defocus and blur,
    so ``ln m = ln m₀ − u²/2`` follows the sheet alone and
    :func:`brightness_fit` gives ``m₀`` and ``u_max``; each detection's
    ``u² = 2·ln(m₀/m)``. The spot variance ``size_px² = a + b·u²`` is fitted
    by least squares on the medians of ten ``u²`` bins (robust to bad fits).
    With ``V₀ = a + psf_sigma_px²`` the filtered peak of the calibrant at the
    sheet centre is ``m₀/V₀``, so ``R = m₀/(V₀·T)`` and ``g = b/V₀``.

    Parameters
    ----------
    signal, size_px : array
        Fitted peak (raw units) and width (px) of the counted detections.
    count_threshold : float
        ``T``, raw units of the filtered peak.
    psf_sigma_px : float
        Width of the detector's matched filter.

    Returns
    -------
    dict
        ``log_brightness_max`` (ln m₀), ``u_max`` (quantile fit),
        ``spot_variance_px2`` (a, the fitted spot variance in focus),
        ``filtered_variance_px2`` (V₀), ``defocus_g``, ``brightness_ratio`` (R),
        ``u_star`` (the model's counting limit, ≈ ``u_max`` when consistent).
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
    groups = [grp for grp in np.array_split(order, 10) if grp.size]
    xs = np.array([np.median(u2[grp]) for grp in groups])
    ys = np.array([np.median(size[grp] ** 2) for grp in groups])
    if xs.size >= 3 and np.ptp(xs) > 0:
        b, a = np.polyfit(xs, ys, 1)
    else:
        a, b = float(np.median(size**2)), 0.0
    a = max(float(a), 1e-6)
    b = max(float(b), 0.0)
    v0 = a + float(psf_sigma_px) ** 2
    g = float(min(b / v0, 20.0))
    ratio = float(math.exp(log_m0) / (v0 * float(count_threshold)))
    u_star = depth_model_um(1.0, 0.5, max(ratio, 1.0), g)
    return {"log_brightness_max": float(log_m0), "u_max": float(math.sqrt(u_max2)), "spot_variance_px2": a,
            "filtered_variance_px2": float(v0), "defocus_g": g, "brightness_ratio": ratio, "u_star": float(u_star)}


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


def _track_length_at(particles: pd.DataFrame, diam_nm: np.ndarray, column: str = "n_positions") -> np.ndarray:
    """Mean ``column`` per valid track as a smooth function of diameter (constant if few tracks)."""
    if len(particles) == 0 or column not in particles or "diameter_nm" not in particles:
        return np.ones_like(diam_nm)
    p = particles
    if "valid" in p:
        p = p[p["valid"].astype(bool)]
    d = p["diameter_nm"].to_numpy(dtype=float)
    n = p[column].to_numpy(dtype=float)
    ok = np.isfinite(d) & (d > 0) & np.isfinite(n) & (n >= 0)
    d, n = d[ok], n[ok]
    if d.size == 0 or n.sum() <= 0:
        return np.ones_like(diam_nm)
    n_groups = int(min(8, d.size // 40))
    if n_groups < 2:
        return np.full_like(diam_nm, float(n.mean()))
    order = np.argsort(d)
    groups = np.array_split(order, n_groups)
    xs = np.array([np.median(np.log(d[g])) for g in groups])
    ys = np.array([n[g].mean() for g in groups])
    return np.interp(np.log(np.maximum(diam_nm, 1e-9)), xs, ys)


def occupancy_weights(distribution: Any, particles: pd.DataFrame,
                      counted_per_particle: pd.Series | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Share of the counted detections per size bin.

    With ``counted_per_particle`` (counted detections per ``particle`` id) and
    a deconvolved distribution that carries its per-track posterior
    (``distribution.posterior``), each sized track spreads its own counted
    detections over the size bins by its posterior probabilities:
    ``w_b ∝ Σ_i n_i·P(b | track i)``. Tracks with no counted detection (noise
    tracks, particles too dim to count) weigh nothing, whatever size the
    deconvolution gave them, and the deconvolved distribution enters only as
    the prior that sharpens each short track's size.

    Otherwise: the number fraction of tracks per bin (deconvolved when
    available) times the mean number of detections per track at that size (a
    smooth function of the tracks' raw diameters), normalised: a particle
    contributes one detection per frame it is seen; counted detections when
    ``counted_per_particle`` is given, else ``n_positions``.

    Returns
    -------
    diameter_nm, weights : ndarray
        ``weights`` sums to 1 (all zeros when there is no distribution).
    """
    d, w = _bin_weights(distribution)
    if d.size == 0 or w.sum() <= 0:
        return d, w
    post = getattr(distribution, "posterior", None)
    post_ids = getattr(distribution, "posterior_particle_ids", None)
    if (counted_per_particle is not None and post is not None and post_ids is not None
            and post.ndim == 2 and post.shape == (len(post_ids), d.size) and len(post_ids)):
        n_counted = pd.Series(post_ids).map(counted_per_particle).fillna(0.0).to_numpy(dtype=float)
        if n_counted.sum() > 0:
            occ = n_counted @ post.astype(float)
            return d, occ / occ.sum()
    column = "n_positions"
    if counted_per_particle is not None and "particle" in particles and len(particles):
        particles = particles.assign(n_counted=particles["particle"].map(counted_per_particle).fillna(0.0)
                                     .to_numpy(dtype=float))
        column = "n_counted"
    occ = w * _track_length_at(particles, d, column)
    s = occ.sum()
    return d, (occ / s if s > 0 else w)


#: The detection threshold (noise sigmas) at which the noise σ_F of the counting threshold is measured: the
#: default of :class:`~exonta.config.DetectParams`.
REFERENCE_THRESHOLD_SNR = float(DetectParams.model_fields["threshold_snr"].default)

#: Below this share of the reference detections' spots above the counting threshold, an analysis at a raised
#: detection threshold warns that its concentration is low (:func:`counted_spots_found`).
MIN_COUNTED_SPOTS_FOUND = 0.95


def at_reference_threshold(detect_params: DetectParams) -> bool:
    """Whether detections made with ``detect_params`` measure the counting noise themselves (threshold in noise
    sigmas at :data:`REFERENCE_THRESHOLD_SNR`).

    :func:`filtered_noise_level` takes the median of ``F/snr`` over the detections near the threshold, and that
    ratio grows with the spots' brightness (a fitted Gaussian over a noise maximum gives ``F`` ≈ 3× the filter's
    value there; bright spots raise their own tile's noise), so it depends on the threshold: the bundled 100 nm
    sample gives σ_F 0.98, 2.17 and 2.74 at 3.5, 5 and 7 σ, and the concentration without calibration read
    1.98e9, 1.44e9 and 1.22e9 /mL. The counting noise is therefore always measured at one threshold.
    """
    return detect_params.threshold is None and float(detect_params.threshold_snr) == REFERENCE_THRESHOLD_SNR


def counted_spots_found(features: pd.DataFrame, reference: pd.DataFrame, threshold: float,
                        psf_sigma_px: float, min_spots: int = 20) -> float | None:
    """Share of the spots above the counting threshold found by an analysis at a raised detection threshold.

    ``reference`` holds the same detector's detections at :data:`REFERENCE_THRESHOLD_SNR` over the first frames
    of the video (the analysis's first frames: ``video_frame`` when the frames were put on a time grid, else
    ``frame``). The share is the number of ``features`` with a filtered peak ``F ≥ threshold`` in those frames
    over that of ``reference``: at 3.5 σ the detector finds every spot the count needs, at 5 or 7 σ not all
    (the bundled 100 nm sample: concentration −7 % / −16 %). None with fewer than ``min_spots`` reference spots.
    """
    def frames_of(df):
        return (df["video_frame"] if "video_frame" in df else df["frame"]).to_numpy(np.int64)

    if reference is None or not len(reference) or features is None:
        return None
    last = int(frames_of(reference).max())
    with np.errstate(invalid="ignore"):
        n_ref = int((filtered_peak(reference, psf_sigma_px) >= threshold).sum())
        mine = features[frames_of(features) <= last] if len(features) else features
        n_found = int((filtered_peak(mine, psf_sigma_px) >= threshold).sum()) if len(mine) else 0
    if n_ref < min_spots:
        return None
    return float(n_found / n_ref)


def _brightness_noise(features: pd.DataFrame, detect_params: DetectParams, psf_ref: float) -> float | None:
    return filtered_noise_level(features, psf_ref, detect_params.threshold_snr)


def _counting_threshold(params: ConcentrationParams, noise: float | None) -> float | None:
    """``T`` in raw units: the configured one, else ``count_threshold_sigmas × σ_F``."""
    if params.count_threshold is not None:
        return float(params.count_threshold)
    if noise is None or not noise > 0:
        return None
    return float(params.count_threshold_sigmas * noise)


@dataclass
class _Counted:
    table: pd.DataFrame          # persistent detections (with ``particle`` when the tracks give it)
    keep: np.ndarray             # counted rows of ``table``
    counts: np.ndarray           # counted per frame
    lengths: np.ndarray          # counted detections per distinct particle
    per_particle: pd.Series | None  # counted detections per particle id
    n_duplicates: int


def _count(features, tracks, params: ConcentrationParams, detect_params: DetectParams, frame_shape, n_frames,
           edge, threshold: float | None, psf_ref: float, frames_present: np.ndarray | None = None) -> _Counted:
    """Apply the counting rules (persistence, region, wing duplicates, absolute threshold).

    ``frames_present`` (frame indices) limits the per-frame counts to the frames the movie holds when
    its frames sit on the camera's time grid with gaps (dropped frames, ``input["dropped_frames"]``).

    ``psf_ref`` is the reference filter width of the filtered peak (the
    calibration's, so that a sample analysed with another detector width —
    ``DetectParams.auto_psf`` — is counted on the same scale).
    """
    table = persistent_detections(features, tracks, params.min_linked_frames, keep_particle=True)
    dup = wing_duplicates(table, psf_ref, params.wing_radius_factor)
    keep = _in_region(table, frame_shape, edge) & ~dup
    if threshold is not None:
        with np.errstate(invalid="ignore"):
            keep &= filtered_peak(table, psf_ref) >= threshold
    counts = count_per_frame(table[keep], n_frames, frame_shape, edge)
    if frames_present is not None:
        counts = counts[np.asarray(frames_present, np.int64)]
    per = None
    if "particle" in table and len(table):
        per = table.loc[keep, "particle"].value_counts()
        lengths = per.to_numpy(dtype=np.int64)
    elif tracks is not None and threshold is None:
        lengths = residence_lengths(tracks, frame_shape, edge)
    else:
        lengths = np.zeros(0, dtype=np.int64)
    return _Counted(table, keep, counts, lengths, per, int(dup.sum()))


def _size_model_depth_factors(rel_scatter, blur_offset, brightness_ratio, defocus_g, min_depth_fraction):
    """Depth per unit σ_s per bin, floored at a fraction of the calibrant's.

    Returns
    -------
    g_used : ndarray
        Floored depth factors (multiply by σ_s for µm).
    below : ndarray of bool
        Bins whose modelled depth is below the floor (near the counting limit).
    """
    g = np.asarray(depth_model_um(rel_scatter, 1.0, brightness_ratio, defocus_g, blur_offset), dtype=float)
    floor = min_depth_fraction * depth_model_um(1.0, 1.0, brightness_ratio, defocus_g)
    return np.maximum(g, floor), g < floor


def _blur_offsets(cal: Calibration, d_bins: np.ndarray, acquisition: Acquisition) -> np.ndarray:
    """``c_b = (β(d_b) − β_cal)/V₀`` (0 without the blur terms in the calibration)."""
    if cal.spot_variance_px2 is None or cal.blur_variance_px2 is None:
        return np.zeros_like(d_bins)
    return (np.asarray(blur_variance_px2(d_bins, acquisition)) - cal.blur_variance_px2) / cal.spot_variance_px2


def _single_population(cnt: _Counted, cal: Calibration, params: ConcentrationParams) -> dict[str, float] | None:
    """Scattering of the counted particles relative to the calibrant, if they look like one population.

    :func:`brightness_fit` of ``m = signal·size_px²`` of the counted
    detections gives the sample's photons at the sheet centre, ``m₀_s``, so
    ``k̂ = m₀_s/m₀_cal``, and its counting limit ``u_max``. A single population
    of scattering ``k̂`` is counted out to ``u*(k̂)`` (:func:`depth_model_um`),
    so ``spread = (u_max/u*(k̂)) / (u_max,cal/u*(1))`` is ≈ 1 for one
    population and larger for a polydisperse sample (its brightest particles
    are counted deeper than its typical ones).
    """
    if cal.u_max_quantile_fit is None or not cal.u_max_quantile_fit > 0:
        return None
    used = cnt.table[cnt.keep]
    if len(used) < 50 or "size_px" not in used or "signal" not in used:
        return None
    m = used["signal"].to_numpy(dtype=float) * used["size_px"].to_numpy(dtype=float) ** 2
    try:
        log_m0, half_u2 = brightness_fit(m)
    except ExontaInputError:
        return None
    k = math.exp(log_m0 - cal.log_brightness_max)
    u_star = float(depth_model_um(k, 0.5, cal.brightness_ratio, cal.defocus_q))
    u_star_cal = float(depth_model_um(1.0, 0.5, cal.brightness_ratio, cal.defocus_q))
    if not (u_star > 0 and u_star_cal > 0):
        return None
    spread = (math.sqrt(2.0 * half_u2) / u_star) / (cal.u_max_quantile_fit / u_star_cal)
    return {"relative_brightness": k, "brightness_spread": float(spread)}


# --------------------------------------------------------------------------- main entry
def _count_uncertainty(counts, lengths, params: ConcentrationParams, depth_um: float | None = None,
                       diffusion_um2_s: float | None = None, fps: float | None = None) -> dict[str, float]:
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
    rse_diff = 0.0
    if depth_um and diffusion_um2_s and fps and t:
        rse_diff = diffusion_rel_se(float(counts.mean()), depth_um, diffusion_um2_s, t, fps)
    return {"rel_se": max(rse_boot, rse_cp, rse_diff), "rel_se_block_bootstrap": rse_boot,
            "rel_se_distinct_particles": rse_cp, "rel_se_diffusion": rse_diff,
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
    frames_present: np.ndarray | None = None,
    reference: pd.DataFrame | None = None,
) -> ConcentrationResult:
    """Concentration of a video in particles/mL with a 95 % interval.

    Parameters
    ----------
    features, tracks, particles : DataFrame
        Detections, linked detections and the per-track table of the video.
    distribution : SizeDistribution
        Its ``table`` rows define the size bins of ``per_bin_per_ml``.
    acquisition : Acquisition
        ``pixel_size_um`` sets the area, ``dilution`` multiplies the result;
        ``exposure_s``, temperature and viscosity set the motion blur of the
        depth model.
    params : ConcentrationParams
    detect_params : DetectParams
        Edge exclusion (the analysed region) and matched-filter width of the detector.
    frame_shape : (height, width)
    n_frames : int
        Frames analysed (on the camera's time grid when frames were dropped).
    calibration : Calibration or None
        Without one the nominal depth is used (with a warning).
    frames_present : array of int, optional
        The frames of the grid the movie holds (``frame`` values), when ``n_frames`` counts dropped
        frames too; the per-frame counts are those of these frames only.
    reference : DataFrame, optional
        The same detector's detections at :data:`REFERENCE_THRESHOLD_SNR` over the first frames of the video,
        for ``features`` detected at another threshold (:func:`at_reference_threshold`; made by
        :func:`exonta.pipeline.reference_detections`). They measure the noise σ_F of the counting threshold
        (:func:`filtered_noise_level`), which ``features`` measure themselves otherwise, and the share of the
        spots above ``T`` that ``features`` still hold (:func:`counted_spots_found`:
        ``details["counted_spots_found_fraction"]``; below :data:`MIN_COUNTED_SPOTS_FOUND` a warning).

    Returns
    -------
    ConcentrationResult
    """
    warnings: list[str] = []
    edge, area_um2 = analysed_region(frame_shape, detect_params, acquisition.pixel_size_um)
    n_bins = len(getattr(distribution, "table", [])) if distribution is not None else 0
    dilution = float(acquisition.dilution)
    details: dict[str, Any] = {"analysed_area_um2": area_um2, "edge_px": edge, "dilution": dilution,
                               "n_frames": int(n_frames if frames_present is None else len(frames_present))}
    if area_um2 <= 0 or n_frames <= 0:
        warnings.append("the detector's edge exclusion and the excluded regions leave no analysed area: no concentration")
        details["method"] = "none"
        return ConcentrationResult(None, None, None, 0.0, np.full(n_bins, np.nan), warnings, details)

    cal = calibration
    psf_ref = float(cal.psf_sigma_px if cal is not None and cal.absolute_threshold else detect_params.psf_sigma_px)
    noise = filtered_noise_level(reference, psf_ref, REFERENCE_THRESHOLD_SNR) if reference is not None else None
    if noise is None:
        noise = _brightness_noise(features, detect_params, psf_ref)
    if cal is not None and cal.absolute_threshold:
        threshold = float(cal.count_threshold)
    elif cal is not None:
        threshold = None
        warnings.append("the calibration was made by an older exonta without an absolute counting threshold: its "
                        "depth is applied as is, without the size model; re-create it with `exonta calibrate`")
    else:
        threshold = _counting_threshold(params, noise)
    cnt = _count(features, tracks, params, detect_params, frame_shape, n_frames, edge, threshold, psf_ref,
                 frames_present)
    counts, lengths = cnt.counts, cnt.lengths
    d_bins, w_occ = occupancy_weights(distribution, particles, cnt.per_particle)
    if d_bins.size != n_bins:
        d_bins, w_occ = np.zeros(n_bins), np.zeros(n_bins)
    mean_n = float(counts.mean())
    unc = _count_uncertainty(counts, lengths, params)
    n_valid = int(particles["valid"].astype(bool).sum()) if "valid" in particles else int(len(particles))
    details.update({"mean_particles_per_frame": mean_n, "n_detections": int(counts.sum()),
                    "count_threshold": threshold, "noise_level": noise,
                    "n_wing_duplicates_excluded": cnt.n_duplicates,
                    "n_distinct_particles": int(lengths.size), "n_valid_tracks": n_valid,
                    "count_rel_se": unc["rel_se"],
                    "count_rel_se_block_bootstrap": unc["rel_se_block_bootstrap"],
                    "count_rel_se_distinct_particles": unc["rel_se_distinct_particles"],
                    "bootstrap_block_frames": unc["block_frames"],
                    "mean_residence_frames": unc["mean_residence_frames"]})

    # ----- most sized particles dimmer than the counting threshold (micron beads: wide, defocused spots)
    tracked = _tracked_spots_per_frame(tracks, particles, details["n_frames"])
    details["tracked_spots_per_frame"] = tracked
    if threshold is not None and tracked > 0 and mean_n < MIN_COUNTED_TO_TRACKED * tracked:
        warnings.append(
            f"{COUNT_BELOW_THRESHOLD_WARNING}: {mean_n:.2g} spots per frame reach it"
            f"{f' ({threshold / noise:.0f}× the noise)' if noise else ''} against {tracked:.1f} per frame in the "
            f"sized tracks (wide or defocused spots, dim fluorescence). The threshold defines the detection "
            f"volume, so the concentration counts only the brightest particles and is far too low; the sizes are "
            f"not affected")

    # ----- who decides what is counted: clipping and the detector's own threshold
    used = cnt.table[cnt.keep]
    saturation = cal.saturation_level if cal is not None else None
    clipped_frac = float(clipped_spots(used, saturation).mean()) if len(used) else 0.0
    near_frac = float(near_detection_limit(used, detect_params.threshold_snr, params.min_threshold_margin).mean()) \
        if len(used) else 0.0
    near_cal = float(cal.near_detection_limit_fraction or 0.0) if cal is not None else 0.0
    details.update({"clipped_fraction": clipped_frac, "near_detection_limit_fraction": near_frac})
    if near_frac - near_cal > _MAX_EXTRA_NEAR_LIMIT:
        warnings.append(
            f"{100 * near_frac:.0f}% of the counted spots are within {params.min_threshold_margin:g}× of the "
            f"detector's threshold ({100 * near_cal:.0f}% in the calibration): the detector's local noise is raised "
            f"(bright, saturated or wide defocused spots, or haze), so it misses particles that the counting "
            f"threshold would count and the concentration is too low; lower the camera gain or laser power (for "
            f"large or bright particles), or dilute the sample")

    # ----- depth
    cal_rel_se = 0.0
    if cal is None:
        method = "nominal"
        depth_um = float(params.nominal_depth_um)
        inv_depth_per_bin = np.full(n_bins, 1.0 / depth_um)
        warnings.append(
            f"no detection-volume calibration: the concentration uses the nominal depth {depth_um:g} µm and may be "
            f"off by a large factor; calibrate with a bead standard (exonta calibrate) and pass --calibration")
    else:
        cal_rel_se = float(math.hypot(cal.effective_depth_rel_se, cal.standard_concentration_rel_uncertainty))
        details.update({"calibration_file": cal.file, "calibration_created": cal.created,
                        "calibration_video_sha256": cal.video_sha256,
                        "calibration_video": cal.video_path, "calibration_depth_um": cal.effective_depth_um,
                        "calibration_rel_se": cal_rel_se})
        warnings += _compare_settings(cal, acquisition, detect_params)
        if cal.noise_level and noise:
            noise_ratio = noise / cal.noise_level
            details["noise_ratio_to_calibration"] = noise_ratio
            # the detector's threshold in the units of T: F/snr of the detections at that threshold
            noise_at_threshold = noise if reference is None else _brightness_noise(features, detect_params, psf_ref)
            if (threshold is not None and noise_at_threshold
                    and threshold < params.min_threshold_margin * detect_params.threshold_snr * noise_at_threshold):
                warnings.append(
                    f"the image noise is {noise_ratio:.2f}× that of the calibration video (haze of out-of-focus "
                    f"particles, background or camera level): spots at the counting threshold are only "
                    f"{threshold / noise_at_threshold:.1f} noise sigmas high and some are missed by the detector; the "
                    f"concentration may be too low — dilute the sample")
        use_model = cal.absolute_threshold and params.size_correction and n_bins > 0 and w_occ.sum() > 0
        details.update({"brightness_ratio": cal.brightness_ratio, "sheet_sigma_um": cal.sheet_sigma_um})
        # clipped spots have a censored brightness: beyond the share the quantile fit ignores, the measured
        # scattering k̂ would be too low, so the size model (k from the sizes) is used instead
        censored = clipped_frac > _MAX_CLIPPED_FRACTION
        single = _single_population(cnt, cal, params) if use_model and not censored else None
        if single is not None:
            details.update(single)
        if use_model and censored:
            warnings.append(
                f"{100 * clipped_frac:.0f}% of the counted spots are clipped by the camera (saturated): their "
                f"brightness is censored, so the detection depth comes from the measured sizes and the scattering "
                f"model (refractive index {params.particle_refractive_index:g}); lower the camera gain or laser "
                f"power, or calibrate with a standard of similar size")
        if use_model and single is not None and single["brightness_spread"] <= params.max_brightness_spread:
            # one population: its scattering relative to the calibrant is measured directly from the photons
            method = "calibrated+brightness-model"
            d_med = float(np.interp(0.5, np.cumsum(w_occ), d_bins))
            c_s = float(_blur_offsets(cal, np.array([d_med]), acquisition)[0])
            g_s, below_s = _size_model_depth_factors(np.array([single["relative_brightness"]]), np.array([c_s]),
                                                     cal.brightness_ratio, cal.defocus_q, params.min_depth_fraction)
            depth_um = float(cal.sheet_sigma_simple_um * g_s[0])
            inv_depth_per_bin = np.full(n_bins, 1.0 / depth_um)
            details["depth_at_calibrant_um"] = float(cal.effective_depth_um)
            if below_s[0]:
                warnings.append("the sample's particles are near the counting limit (much dimmer than the "
                                "calibrant): the concentration is a lower bound")
        elif use_model:
            method = "calibrated+size-model"
            k = relative_scattering(d_bins, params.particle_refractive_index, params.medium_refractive_index) / \
                relative_scattering(cal.standard_diameter_nm, cal.standard_refractive_index,
                                    params.medium_refractive_index)
            c_b = _blur_offsets(cal, d_bins, acquisition)
            g_used, below = _size_model_depth_factors(k, c_b, cal.brightness_ratio, cal.defocus_q,
                                                      params.min_depth_fraction)
            inv_depth_per_bin = 1.0 / (cal.sheet_sigma_um * g_used)
            depth_um = float(1.0 / np.sum(w_occ * inv_depth_per_bin))
            details["depth_at_calibrant_um"] = float(cal.sheet_sigma_um * depth_model_um(
                1.0, 1.0, cal.brightness_ratio, cal.defocus_q))
            details["defocus_g"] = cal.defocus_q
            floored = float(np.sum(w_occ[below]))
            details["detections_near_detection_limit_fraction"] = floored
            if floored > 0.05:
                above = d_bins[~below]
                d_lim = f"≈{float(above.min()):.0f} nm" if above.size else "every size bin"
                warnings.append(
                    f"{100 * floored:.0f}% of the counted particles are near the counting limit "
                    f"(below {d_lim} for refractive index {params.particle_refractive_index:g}); "
                    f"their concentration is a lower bound")
        else:
            method = "calibrated"
            depth_um = float(cal.effective_depth_um)
            inv_depth_per_bin = np.full(n_bins, 1.0 / depth_um)
            if params.size_correction and cal.absolute_threshold:
                warnings.append("no size distribution: the size correction of the detection depth was not applied")

    # ----- concentration
    per_um3 = mean_n / (area_um2 * depth_um)
    value = per_um3 * UM3_PER_ML * dilution
    if n_bins and w_occ.sum() > 0:
        per_bin = mean_n * w_occ * inv_depth_per_bin / area_um2 * UM3_PER_ML * dilution
    else:
        per_bin = np.full(n_bins, np.nan)
    uncorrected = (mean_n / (area_um2 * (cal.effective_depth_um if cal is not None else depth_um))
                   * UM3_PER_ML * dilution)
    # slow exchange of diffusing particles with the slab (returns of the same particle): the ideal-gas bound
    d_typ = float(np.interp(0.5, np.cumsum(w_occ), d_bins)) if n_bins and w_occ.sum() > 0 else 0.0
    if d_typ > 0 and mean_n > 0:
        d_coef = float(diffusion_from_diameter(d_typ, acquisition.temperature_c, acquisition.viscosity_mpas))
        rse_diff = diffusion_rel_se(mean_n, depth_um, d_coef, n_frames, acquisition.fps)
        unc["rel_se"] = max(unc["rel_se"], rse_diff)
        details.update({"count_rel_se_diffusion": rse_diff, "count_rel_se": unc["rel_se"]})
    rel_se = float(math.hypot(unc["rel_se"], cal_rel_se))
    lo, hi = _ci(value, rel_se)
    if mean_n == 0:
        # no detection: the 95 % upper bound of a Poisson count of 0 is 3.69 visits of ≥ 1 frame
        lo, hi = 0.0, 3.689 / max(counts.size, 1) / (area_um2 * depth_um) * UM3_PER_ML * dilution
    details.update({"method": method, "effective_depth_um": depth_um, "detection_volume_um3": area_um2 * depth_um,
                    "uncorrected_per_ml": uncorrected, "rel_se": rel_se})
    if method in ("calibrated+size-model", "calibrated+brightness-model") and np.all(np.isfinite(per_bin)) \
            and per_bin.sum() > 0 and getattr(distribution, "edges_nm", None) is not None:
        details["size_nm"] = _particle_size_stats(per_bin, distribution)

    warnings += _count_warnings(mean_n, area_um2, acquisition.pixel_size_um, detect_params, n_valid, params)
    share = counted_spots_found(features, reference, threshold, psf_ref) if threshold is not None else None
    if share is not None:
        details["counted_spots_found_fraction"] = share
        if share < MIN_COUNTED_SPOTS_FOUND:
            used = (f"{detect_params.threshold_snr:g} noise sigmas" if detect_params.threshold is None
                    else f"{detect_params.threshold:g} (filtered intensity)")
            warnings.append(
                f"at the detection threshold of {used} the detector finds {100 * share:.0f} % of the spots above "
                f"the counting threshold that it finds at {REFERENCE_THRESHOLD_SNR:g}: the concentration may be up "
                f"to {100 * (1 - share):.0f} % low")
    return ConcentrationResult(value_per_ml=float(value), ci95_low_per_ml=lo, ci95_high_per_ml=hi,
                               mean_particles_per_frame=mean_n, per_bin_per_ml=np.asarray(per_bin, dtype=float),
                               warnings=warnings, details=details)


def _particle_size_stats(per_bin: np.ndarray, distribution: Any) -> dict[str, Any]:
    """Mean, mode, D10/D50/D90 (nm) of the concentration per size bin: the number distribution of the
    particles *in the sample*.

    The deconvolved distribution counts tracks, and small, dim particles are seen in a thinner slab,
    so they give fewer tracks than their share of the sample (simulated EV-like sample: the fitted
    tracks' true D10 is 19 % above the sample's, see benchmarks/bench_selection.py). Each bin's
    concentration divides its counted detections by its own modelled depth, which undoes that
    selection; it is reported only when the depth is calibrated (one depth for a single population,
    the size model otherwise). On the simulator (calibrated on 100 nm PS, seed 2002): EV-like
    D10/D50/D90 68.0 / 109.5 / 173.3 nm against the sample's 68.3 / 110 / 177 (the deconvolved
    64.1 / 107.7 / 180.5).
    """
    from .distribution import basin_fractions, weighted_stats

    t = distribution.table
    st = weighted_stats(np.asarray(per_bin, float), np.asarray(distribution.edges_nm, float),
                        t["diameter_nm"].to_numpy(float), t["bin_width_nm"].to_numpy(float))
    out: dict[str, Any] = {k: float(st[k]) for k in ("mean", "mode", "d10", "d50", "d90")}
    peaks = (getattr(distribution, "stats", None) or {}).get("peaks") or []
    bounds = np.asarray(getattr(distribution, "peak_bounds", np.zeros(0)), np.int64)
    if peaks and bounds.size == len(peaks) + 1:
        # the deconvolved peaks (of the tracks), each with its share of the particles in the sample
        frac = basin_fractions(per_bin, bounds)
        out["peaks"] = [{"diameter_nm": float(p["diameter_nm"]), "number_fraction": float(f)}
                        for p, f in zip(peaks, frac)]
    return out


#: Warn when the counted spots per frame are fewer than this share of the spots of valid tracks (bundled NTA
#: samples 0.68–0.86; generated 1 µm fluorescent and 3 µm bright-field beads 0.01).
MIN_COUNTED_TO_TRACKED = 0.25
#: Start of that warning (the pipeline drops it when the tracked spots are noise maxima).
COUNT_BELOW_THRESHOLD_WARNING = "most spots of the sized tracks are fainter than the counting threshold"


def _tracked_spots_per_frame(tracks: pd.DataFrame, particles: pd.DataFrame, n_frames: int) -> float:
    """Mean number of positions of valid tracks per analysed frame."""
    from .diffusion import valid_track_rows

    return float(valid_track_rows(tracks, particles).sum()) / n_frames if n_frames > 0 else 0.0


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


def _search_binning(detect_params: DetectParams) -> int:
    from ..detect.locate import search_binning

    return search_binning(detect_params)


def _compare_settings(cal: Calibration, acq: Acquisition, detect_params: DetectParams) -> list[str]:
    out = []
    used = _search_binning(detect_params)
    if cal.search_binning != used:
        names = {1: "the full-resolution candidate search", 2: "the binned candidate search (--fast-search)"}
        out.append(f"the calibration was made with {names[cal.search_binning]} and this analysis uses "
                   f"{names[used]}: they find different numbers of dim particles, so the calibrated depth does not "
                   "apply; calibrate with the same setting")
    ca = cal.acquisition
    for name, a, b in (("exposure_s", ca.exposure_s, acq.exposure_s), ("fps", ca.fps, acq.fps),
                       ("pixel_size_um", ca.pixel_size_um, acq.pixel_size_um)):
        if not math.isclose(a, b, rel_tol=0.02):
            out.append(f"the calibration was recorded with {name}={a:g}, this video with {b:g}: the effective "
                       f"depth may not apply; calibrate with the same settings")
    if not math.isclose(cal.psf_sigma_px, detect_params.psf_sigma_px, rel_tol=0.02):
        out.append(f"the detector's spot width differs from the calibration's (psf_sigma_px "
                   f"{detect_params.psf_sigma_px:.2f} vs {cal.psf_sigma_px:.2f} px, e.g. measured by auto_psf): particles are counted on the "
                   f"calibration's scale, but the detection of dim spots may differ")
    return out


# --------------------------------------------------------------------------- calibration
def _detect_hash(detect_params: DetectParams) -> str:
    blob = json.dumps(detect_params.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def calibrate(result: Any, concentration_per_ml: float, diameter_nm: float = 100.0, refractive_index: float = 1.59,
              concentration_rel_uncertainty: float = 0.0) -> Calibration:
    """Calibrate the counting threshold and the detection volume from the analysis of a bead standard.

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
    from ..detect.repeats import frames_on_grid

    if not (concentration_per_ml > 0 and math.isfinite(concentration_per_ml)):
        raise ExontaInputError("the standard's concentration must be a positive number of particles/mL")
    if not (diameter_nm > 0 and math.isfinite(diameter_nm)):
        raise ExontaInputError("the standard's diameter must be a positive number of nm")
    if not 1.0 < refractive_index < 4.0:
        raise ExontaInputError("the standard's refractive index must be between 1 and 4 (polystyrene: 1.59)")
    cfg = result.config
    acq = getattr(result, "analysis_acquisition", None) or cfg.acquisition  # the analysed frames' rate
    params = cfg.concentration
    detect = cfg.detect
    n_frames, present = frames_on_grid(result.input)
    frame_shape = (int(result.input["height"]), int(result.input["width"]))
    edge, area_um2 = analysed_region(frame_shape, detect, acq.pixel_size_um)
    if area_um2 <= 0:
        raise ExontaInputError("the detector's edge exclusion and the excluded regions leave no analysed area in the calibration video")
    # the noise the analysis measured at the reference threshold (its own detections may be at another one)
    # (at the detector's own filter width: not when that analysis was counted with a calibration's)
    measured = getattr(getattr(result, "concentration", None), "details", None) or {}
    noise = None if "calibration_file" in measured else finite_or_none(measured.get("noise_level"))
    if noise is None or not noise > 0:
        noise = _brightness_noise(result.features, detect, detect.psf_sigma_px)
    threshold = _counting_threshold(params, noise)
    if threshold is None:
        raise ExontaInputError("the noise of the calibration video could not be measured (too few detections with "
                               "an snr): set concentration.count_threshold (raw intensity units) in the config")
    cnt = _count(result.features, result.tracks, params, detect, frame_shape, n_frames, edge, threshold,
                 detect.psf_sigma_px, present)
    counts = cnt.counts
    mean_n = float(counts.mean()) if counts.size else 0.0
    if mean_n <= 0:
        raise ExontaInputError("no particle was counted in the calibration video: check the video, the "
                               "acquisition settings and the counting threshold")
    c_meas_um3 = concentration_per_ml / float(acq.dilution) / UM3_PER_ML
    depth = mean_n / (area_um2 * c_meas_um3)
    unc = _count_uncertainty(counts, cnt.lengths, params, depth, float(diffusion_from_diameter(
        diameter_nm, acq.temperature_c, acq.viscosity_mpas)), acq.fps)

    used = cnt.table[cnt.keep]
    if "size_px" not in used or "signal" not in used:
        raise ExontaInputError("the detections have no signal/size_px columns needed for the depth model")
    saturation = saturation_level_of(result.input.get("dtype"), detect.invert, detect.saturation_level)
    clipped_frac = float(clipped_spots(used, saturation).mean()) if len(used) else 0.0
    near_frac = float(near_detection_limit(used, detect.threshold_snr, params.min_threshold_margin).mean()) \
        if len(used) else 0.0
    prof = sheet_profile_fit(used["signal"].to_numpy(dtype=float), used["size_px"].to_numpy(dtype=float),
                             threshold, detect.psf_sigma_px)
    ratio, g = prof["brightness_ratio"], prof["defocus_g"]
    if not ratio > 1.05:
        raise ExontaInputError("the brightness of the standard's counted particles does not vary with depth as "
                               "expected; check that the video shows a monodisperse bead standard in a light sheet")
    beta_cal = float(blur_variance_px2(diameter_nm, acq))
    v0 = prof["filtered_variance_px2"]
    # the standard is monodisperse: σ_s makes the model reproduce its depth at k = 1 exactly (its measured size
    # distribution is broadened by sizing noise only, which must not enter the sheet width)
    simple_sigma = depth / float(depth_model_um(1.0, 1.0, ratio, g))
    sheet_sigma = simple_sigma
    n_valid = int(result.particles["valid"].astype(bool).sum()) if "valid" in result.particles else 0
    cal_warnings = _count_warnings(mean_n, area_um2, acq.pixel_size_um, detect, n_valid, params)
    if unc["rel_se"] > 0.05:
        cal_warnings.append(f"the calibration count has a relative standard error of {unc['rel_se']:.1%}: record a "
                            f"longer calibration video (or several) for a more precise detection volume")
    if clipped_frac > _MAX_CLIPPED_FRACTION:
        cal_warnings.append(f"{100 * clipped_frac:.0f}% of the standard's counted spots are clipped by the camera "
                            f"(saturated): their brightness is censored and the depth model is unreliable; lower "
                            f"the camera gain or the laser power for the calibration")
    if near_frac > _MAX_EXTRA_NEAR_LIMIT:
        cal_warnings.append(f"{100 * near_frac:.0f}% of the standard's counted spots are within "
                            f"{params.min_threshold_margin:g}× of the detector's threshold: the detector, not the "
                            f"counting threshold, limits the calibrated volume, and samples as bright as the "
                            f"standard or brighter may be under-counted")
    if abs(prof["u_star"] / prof["u_max"] - 1) > 0.15:
        cal_warnings.append(f"the depth model fits the standard poorly (counting limit {prof['u_star']:.2f} sheet "
                            f"sigmas from the model, {prof['u_max']:.2f} from the brightness distribution): the "
                            f"size correction may be inaccurate")
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
        search_binning=_search_binning(detect),
        edge_px=edge,
        noise_level=noise,
        count_threshold=float(threshold),
        mean_particles_per_frame=mean_n,
        mean_particles_per_frame_rel_se=unc["rel_se"],
        analysed_area_um2=area_um2,
        n_frames=n_frames,
        n_distinct_particles=int(cnt.lengths.size),
        effective_depth_um=float(depth),
        effective_depth_rel_se=float(unc["rel_se"]),
        brightness_column=_FILTERED,
        log_brightness_max=prof["log_brightness_max"],
        brightness_ratio=ratio,
        defocus_q=g,
        spot_variance_px2=v0,
        blur_variance_px2=beta_cal,
        u_max_quantile_fit=prof["u_max"],
        threshold_model="hard",
        sheet_sigma_um=float(sheet_sigma),
        sheet_sigma_simple_um=float(simple_sigma),
        saturation_level=saturation,
        near_detection_limit_fraction=near_frac,
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
