"""Which particles a video can see: the detection limit in size and the selection of tracks by size.

The deconvolved size distribution (:mod:`exonta.analysis.distribution`) counts *tracks*. A video does
not give every particle of the sample the same number of tracks: a dim particle is seen only in a thin
slice of the light sheet, and particles too dim to reach the detection threshold even at the sheet's
centre give none. This module measures both effects from the video itself — no calibration. The
pipeline reports the size below which particles are invisible (``summary.json`` ``size_nm.detection_limit``).
:func:`visible_distribution` gives the number distribution of the *visible* particles; it is not reported,
because on deconvolved distributions it amplifies their errors near the limit (README, "Known gaps").

Model
-----
The light sheet, spot and threshold model of :mod:`exonta.analysis.concentration` (Gaussian sheet,
Gaussian spots widened by defocus and motion blur), with the detector's own threshold ``T`` instead of
the counting threshold. A particle of diameter ``d`` at height ``z = u·σ_s`` is detected while ::

    R·k(d)·exp(−u²/2) / (1 + c(d) + g·u²) ≥ 1,

``k(d) = s(d)/s(d_ref)`` its Rayleigh scattering relative to a reference diameter ``d_ref`` of the same
material (``∝ d⁶``: the refractive index cancels; Bohren & Huffman 1983, ch. 5), ``R`` the filtered peak
of a ``d_ref`` particle at the sheet centre over ``T``, ``g`` the defocus widening and ``c(d)`` the
motion blur's (Berglund 2010) relative to the sample's median size. It is seen in the slice
``|u| ≤ u*(d)`` (:func:`exonta.analysis.concentration.depth_model_um`), and not at all when
``R·k(d) ≤ 1``: the **detection limit** is the diameter with ``R·k(d) = 1``.

The number of valid tracks a particle gives per unit time — its **inclusion** — is modelled as ::

    ι(d) ∝ u*(d)·√D(d),

the slice's thickness times the rate at which a diffusing particle enters it (Stokes–Einstein ``D``;
a step of a discretely sampled Brownian path is ``∝ √D``). The number distribution of the visible
particles is the deconvolved track distribution divided by ``ι`` (a Horvitz–Thompson weighting;
Horvitz & Thompson, J. Am. Stat. Assoc. 47:663, 1952), over the sizes above the limit.

Fit (:func:`fit_visibility`): ``m = signal·size_px²`` of a detection is proportional to its photons
whatever its defocus and blur, so ``x = ln m − ln k(d) = ln m_ref − u²/2`` for the detections of sized
tracks (``ln k`` the track's posterior mean under the deconvolved distribution). Detections are uniform
in ``u`` over their particle's slice, so the mean of ``u²/2`` is ``⟨u*²⟩/6``: solved for ``ln m_ref``
(the other unknowns, the in-focus spot variance and ``g``, from a line through the binned spot variances
against ``u²``), and ``R = m_ref/(V₀·T)`` with ``V₀`` the filtered spot variance and
``T = threshold_snr × σ_F`` (σ_F the filtered image's noise at the detection limit,
:func:`exonta.analysis.concentration.filtered_noise_level`).

Checked on the simulator (``tests/analysis/test_visibility.py`` on draws from the model;
``tests/test_validation.py`` on simulated videos): EV-like lognormal sample (median 110 nm, GSD 1.45,
n = 1.39, 500 frames, seeds 0–1, both candidate searches): limit 61.5–63.5 nm, the smallest particles
tracked 62.2–64.5 nm; a broad PS sample (median 70 nm, GSD 1.5): 53–55 nm against 56–58 nm. With the
simulator's true diameters of the fitted EV-like tracks, weighting each by ``1/ι`` turns the tracks'
D50 of 116 nm into 105.7–109.0 nm against the 108.3 nm of the particles drawn (seed 0; sensitive to the
fit, since tracks near the limit weigh most).

Limits: one material (a mixture of materials has one limit per material); Rayleigh scattering (above
~200 nm Mie scattering grows more slowly than ``d⁶``, which overstates the inclusion of large particles
relative to small ones); a light sheet (bright-field and wide-field fluorescence have a depth of field
instead: the ratios still hold for a Gaussian axial profile); the visible distribution inherits the
deconvolution's errors (junk links, crowded-field linking; README "Known gaps"). Particles below the
limit are not in any track, so no weighting can restore them: the D10 of a sample with a tail below
the limit is that of its visible part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..config import Acquisition, ConcentrationParams, DetectParams
from ..errors import ExontaInputError
from ..physics import diffusion_from_diameter, relative_scattering

__all__ = ["LIMIT_EDGE_RATIO", "LIMIT_EDGE_SPAN", "MAX_CLIPPED_FRACTION", "REFERENCE_DIAMETER_NM", "VisibilityModel",
           "detection_limit_summary", "detection_limit_warnings", "fit_visibility", "inclusion", "visible_distribution"]

#: Diameter (nm) at which the brightness-to-threshold ratio ``R`` is stated.
REFERENCE_DIAMETER_NM = 100.0
# fewest detections of sized tracks for the brightness fit
_MIN_DETECTIONS = 200
# spot-variance fit: number of u² groups
_N_GROUPS = 10
# ceiling of the defocus coefficient (as in concentration.sheet_profile_fit)
_MAX_G = 20.0
# fit: rounds of (solve ln m_ref, refit V₀ and g), Newton steps per solve
_FIT_ROUNDS = 3
_NEWTON_STEPS = 8
# points of the ln k grid on which u* is evaluated
_LN_K_GRID = 257
#: Largest share of clipped detections (censored brightness) among the sized tracks at or below the median
#: size with which the model is fitted. Simulator: EV-like sample and 100 + 150 nm mixture on an 8-bit camera
#: 1.2–2.1 % (their large particles clip: 23–28 % of all detections; limit within 2 % of the smallest tracked
#: particle), the bundled ``ev`` clip 6.2 % (camera level raised: its 100 nm EVs clip too; limit 85 nm where
#: particles of 62 nm were tracked), the bundled ``bimodal`` clip 62 %.
MAX_CLIPPED_FRACTION = 0.04


@dataclass(frozen=True)
class VisibilityModel:
    """Detection model of one video (see the module docstring).

    Attributes
    ----------
    brightness_ratio : float
        ``R``: filtered peak of a :data:`REFERENCE_DIAMETER_NM` particle at the sheet centre over the
        detection threshold.
    defocus_g : float
        ``g``: growth of the filtered spot variance with ``u²``, relative to its in-focus value.
    filtered_variance_px2 : float
        ``V₀``: in-focus spot variance plus the matched filter's, px².
    blur_reference_nm : float
        Diameter whose motion blur is in ``V₀`` (the deconvolved distribution's median).
    threshold : float
        Detection threshold ``T`` on the filtered peak, raw units.
    log_mass_ref : float
        ``ln m_ref`` (``m = signal·size_px²`` at the sheet centre for the reference diameter).
    detection_limit_nm : float
        Diameter with ``R·k(d) = 1``: smaller particles of the same material are not detected even in
        focus at the sheet centre.
    n_detections : int
        Detections of sized tracks used by the fit.
    """

    brightness_ratio: float
    defocus_g: float
    filtered_variance_px2: float
    blur_reference_nm: float
    threshold: float
    log_mass_ref: float
    detection_limit_nm: float
    n_detections: int


def _relative_scattering(diameter_nm, params: ConcentrationParams) -> np.ndarray:
    n = params.particle_refractive_index
    m = params.medium_refractive_index
    return np.asarray(relative_scattering(np.asarray(diameter_nm, float), n, m), float) / float(
        relative_scattering(REFERENCE_DIAMETER_NM, n, m))


def _bin_weights(distribution: Any) -> tuple[np.ndarray, np.ndarray]:
    """Bin centres (nm) and the deconvolved number fraction per bin (``SizeDistribution.weights``)."""
    return distribution.table["diameter_nm"].to_numpy(float), np.asarray(distribution.weights, float)


def _share_below(w: np.ndarray, seen: np.ndarray) -> float:
    """Share of the weights ``w`` in the bins that are not ``seen`` (NaN without weight)."""
    return float(w[~seen].sum() / w.sum()) if w.sum() > 0 else float("nan")


class _SpotVariance:
    """Binned medians of ``size_px²`` against ``u² = 2(ln m_ref − x)``, for a line ``a + b·u²``.

    ``u²`` falls as ``x`` rises whatever ``ln m_ref``, so the groups (deciles of ``x``) and their medians
    are computed once; each fit only shifts them.
    """

    def __init__(self, x: np.ndarray, size: np.ndarray, psf: float):
        groups = [grp for grp in np.array_split(np.argsort(x), _N_GROUPS) if grp.size]
        self.x_med = np.array([np.median(x[grp]) for grp in groups])
        self.s2_med = np.array([np.median(size[grp] ** 2) for grp in groups])
        self.s2_all = float(np.median(size**2))
        self.psf2 = psf * psf

    def fit(self, log_m_ref: float) -> tuple[float, float]:
        """``V₀`` (in-focus spot variance + the filter's) and ``g``."""
        xs = np.clip(2.0 * (log_m_ref - self.x_med), 0.0, None)
        if xs.size >= 3 and np.ptp(xs) > 0:
            slope, intercept = np.polyfit(xs, self.s2_med, 1)
        else:
            slope, intercept = 0.0, self.s2_all
        v0 = max(float(intercept), 1e-6) + self.psf2
        return float(v0), float(min(max(float(slope), 0.0) / v0, _MAX_G))


def fit_visibility(features: pd.DataFrame, tracks: pd.DataFrame, distribution: Any, acquisition: Acquisition,
                   detect_params: DetectParams, params: ConcentrationParams,
                   saturation_level: float | None = None) -> VisibilityModel:
    """Fit the detection model to the detections of a video's sized tracks.

    Each detection gives ``x = ln m − ln k`` (``m = signal·size_px²``, ``ln k`` its track's posterior
    mean), and ``ln m_ref − x = u²/2``. The detections of a track of scattering ``k`` are uniform in
    ``u`` over its slice ``|u| ≤ u*(k)``, so the mean of ``u²/2`` is ``⟨u*²⟩/6`` over the tracks
    (weighted by their detections). That equation is solved for ``ln m_ref`` by Newton's method (its
    left side grows by 1 per unit of ``ln m_ref``, the right by ≈ ⅓), starting from its closed form
    without defocus; the spot variance against ``u²`` is refitted after each solve. Being linear in
    each track's ``ln k``, the mean is not biased by the size noise of single tracks, and it holds for
    any mixture of sizes (the pooled quantile fit of :func:`exonta.analysis.concentration.brightness_fit`
    assumes one slice: on the simulator it put the limit of the EV-like sample 1–2 nm higher, and
    3–4 nm higher for 100 nm beads).

    Parameters
    ----------
    features : DataFrame
        All detections (``signal``, ``size_px``, ``snr``): the noise of the filtered image.
    tracks : DataFrame
        Linked detections with ``particle``, ``signal``, ``size_px`` (and ``background``).
    distribution : SizeDistribution
        Deconvolved distribution with its per-track posterior (``posterior``, ``posterior_particle_ids``).
    acquisition : Acquisition
        Temperature, viscosity, exposure and pixel size (motion blur).
    detect_params : DetectParams
        Threshold and matched-filter width of the detector.
    params : ConcentrationParams
        Refractive indices (for one material only their ``d``-dependence matters).
    saturation_level : float, optional
        Camera clipping level (:func:`exonta.analysis.concentration.saturation_level_of`): clipped spots
        have a censored brightness, and above :data:`MAX_CLIPPED_FRACTION` of them the fit is refused.

    Returns
    -------
    VisibilityModel

    Raises
    ------
    ExontaInputError
        Too few sized detections, too many clipped ones, no noise estimate, or no sized tracks.
    """
    from .concentration import clipped_spots, depth_model_um, filtered_noise_level

    psf = float(detect_params.psf_sigma_px)
    if detect_params.threshold is not None:
        threshold = float(detect_params.threshold)
    else:
        noise = filtered_noise_level(features, psf, detect_params.threshold_snr)
        if noise is None or not noise > 0:
            raise ExontaInputError("no noise estimate of the filtered image: too few detections near the threshold")
        threshold = float(detect_params.threshold_snr) * noise
    post = np.asarray(getattr(distribution, "posterior", np.zeros((0, 0))), float)
    ids = np.asarray(getattr(distribution, "posterior_particle_ids", np.zeros(0)), np.int64)
    d_bins, w = _bin_weights(distribution)
    if post.ndim != 2 or post.shape != (ids.size, d_bins.size) or ids.size == 0 or w.sum() <= 0:
        raise ExontaInputError("no sized tracks with a posterior: the detection model needs the deconvolution")
    track_of = pd.Index(ids).get_indexer(tracks["particle"].to_numpy())  # row of the posterior, −1: not sized
    sized = track_of >= 0
    used = tracks[sized]
    track_of = track_of[sized]
    ln_k_track = post @ np.log(_relative_scattering(d_bins, params))
    ln_k = ln_k_track[track_of]
    # clipped spots have a censored brightness (their fitted m extrapolates the unclipped wings); the
    # limit is set by the small particles, so their spots must be (nearly) free of clipping
    clipped = clipped_spots(used, saturation_level)
    d_med = float(np.interp(0.5, np.cumsum(w) / w.sum(), d_bins))
    small = ln_k <= float(np.log(_relative_scattering(d_med, params)))
    if small.any() and clipped[small].mean() > MAX_CLIPPED_FRACTION:
        raise ExontaInputError(f"{100 * clipped[small].mean():.0f} % of the detections of the sized tracks below "
                               "the median size are clipped by the camera: their brightness is censored")
    sig = used["signal"].to_numpy(float)
    size = used["size_px"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.log(sig * size * size) - ln_k
    ok = np.isfinite(x) & (sig > 0) & (size > 0)
    if ok.sum() < _MIN_DETECTIONS:
        raise ExontaInputError(f"only {int(ok.sum())} detections of sized tracks: too few for the detection model")
    x, size = x[ok], size[ok]
    n_tr = np.bincount(track_of[ok], minlength=ids.size).astype(float)  # one slice per track, by its detections
    has = n_tr > 0
    n_tr = n_tr[has] / n_tr[has].sum()
    ln_k_tr = ln_k_track[has]
    # u* is smooth in ln k: evaluated on a grid and interpolated (thousands of tracks, ~30 evaluations)
    ln_k_grid = np.linspace(float(ln_k_tr.min()), float(ln_k_tr.max()) + 1e-9, _LN_K_GRID)
    k_grid = np.exp(ln_k_grid)
    x_mean = float(np.mean(x))
    ln_k_mean = float(np.sum(n_tr * ln_k_tr))
    spot = _SpotVariance(x, size, psf)
    v0, g = spot.s2_all + psf * psf, 0.0
    ln_t = math.log(threshold)
    log_m_ref = x_mean
    for _ in range(_FIT_ROUNDS):
        # without defocus ⟨u*²⟩/6 = (ln m_ref − ln(V₀T) + ⟨ln k⟩)/3, so ln m_ref = (3x̄ − ln(V₀T) + ⟨ln k⟩)/2
        log_m_ref = 0.5 * (3.0 * x_mean - math.log(v0) - ln_t + ln_k_mean)
        for _ in range(_NEWTON_STEPS):
            ratio = math.exp(log_m_ref - math.log(v0) - ln_t)
            u_star = np.interp(ln_k_tr, ln_k_grid, np.asarray(depth_model_um(k_grid, 0.5, ratio, g), float))  # σ_s=½: u*
            f = (log_m_ref - x_mean) - float(np.sum(n_tr * u_star**2)) / 6.0
            log_m_ref -= 1.5 * f  # f'(ln m_ref) = 1 − ⅓ without defocus
            if abs(f) < 1e-6:
                break
        v0, g = spot.fit(log_m_ref)
    ratio = math.exp(log_m_ref) / (v0 * threshold)
    # R·k(d) = 1 with k ∝ d⁶ within one material (the contrast factor cancels)
    limit = REFERENCE_DIAMETER_NM * ratio ** (-1.0 / 6.0) if ratio > 0 else float("inf")
    return VisibilityModel(brightness_ratio=float(ratio), defocus_g=g, filtered_variance_px2=float(v0),
                           blur_reference_nm=d_med, threshold=threshold, log_mass_ref=float(log_m_ref),
                           detection_limit_nm=float(limit), n_detections=int(ok.sum()))


def inclusion(diameter_nm, model: VisibilityModel, acquisition: Acquisition,
              params: ConcentrationParams) -> np.ndarray:
    """Relative number of valid tracks per particle, ``ι(d) ∝ u*(d)·√D(d)`` (0 below the detection limit).

    Parameters
    ----------
    diameter_nm : array
    model : VisibilityModel
    acquisition : Acquisition
    params : ConcentrationParams

    Returns
    -------
    ndarray
        Same shape as ``diameter_nm``, arbitrary units (ratios only).
    """
    from .concentration import blur_variance_px2, depth_model_um

    d = np.asarray(diameter_nm, float)
    c = (np.asarray(blur_variance_px2(d, acquisition), float)
         - float(blur_variance_px2(model.blur_reference_nm, acquisition))) / model.filtered_variance_px2
    u_star = np.asarray(depth_model_um(_relative_scattering(d, params), 1.0, model.brightness_ratio,
                                       model.defocus_g, c), float)
    return u_star * np.sqrt(np.asarray(diffusion_from_diameter(d, acquisition.temperature_c,
                                                               acquisition.viscosity_mpas), float))


def visible_distribution(distribution: Any, model: VisibilityModel, acquisition: Acquisition,
                         params: ConcentrationParams) -> dict[str, Any]:
    """Number distribution of the visible particles: deconvolved weights over the inclusion, above the limit.

    Returns
    -------
    dict
        ``weights`` (per bin, sum 1; 0 below the limit), ``stats`` (mean, mode, d10, d50, d90 in nm;
        :func:`exonta.analysis.distribution.weighted_stats`) and ``tracks_below_limit_fraction`` (the
        share of the deconvolved track distribution in bins below the limit: tracks that cannot be
        particles of that size and material — wrong links, or another material).
    """
    from .distribution import weighted_stats

    d, w = _bin_weights(distribution)
    iota = inclusion(d, model, acquisition, params)
    seen = iota > 0
    out_w = np.zeros_like(w)
    out_w[seen] = w[seen] / iota[seen]
    below = _share_below(w, seen)
    if out_w.sum() <= 0:
        nan = float("nan")
        return {"weights": out_w, "stats": {k: nan for k in ("mean", "mode", "d10", "d50", "d90")},
                "tracks_below_limit_fraction": below}
    out_w /= out_w.sum()
    t = distribution.table
    st = weighted_stats(out_w, np.asarray(distribution.edges_nm, float), d, t["bin_width_nm"].to_numpy(float))
    return {"weights": out_w, "stats": {k: float(st[k]) for k in ("mean", "mode", "d10", "d50", "d90")},
            "tracks_below_limit_fraction": below}


#: The distribution is said to reach the detection limit when its number density per log-diameter somewhere
#: in ``[limit, LIMIT_EDGE_SPAN × limit]`` is at least :data:`LIMIT_EDGE_RATIO` of its peak density. On the
#: simulator: EV-like lognormal samples (median 110 nm, GSD 1.45) 0.33–0.51; monodisperse 60–400 nm beads,
#: 100 + 150 and 100 + 200 nm mixtures, 37 °C and drift cases ≤ 0.06.
LIMIT_EDGE_SPAN = 1.25
LIMIT_EDGE_RATIO = 0.2


def _edge_density_ratio(distribution: Any, limit_nm: float) -> float:
    d, w = _bin_weights(distribution)
    dens = w / np.maximum(distribution.table["bin_width_nm"].to_numpy(float), 1e-300) * d  # per log-diameter
    near = (d >= limit_nm) & (d <= LIMIT_EDGE_SPAN * limit_nm)
    if not near.any() or dens.max() <= 0:
        return 0.0
    return float(dens[near].max() / dens.max())


def detection_limit_summary(features: pd.DataFrame, tracks: pd.DataFrame, distribution: Any,
                            acquisition: Acquisition, detect_params: DetectParams, params: ConcentrationParams,
                            saturation_level: float | None = None) -> dict[str, Any] | None:
    """The ``size_nm.detection_limit`` entry of a result's summary, or None when it does not apply.

    None for dark-particle (bright-field) analyses, which have no light sheet, and when the deconvolved
    D50 exceeds :data:`exonta.analysis.distribution.RAYLEIGH_MAX_NM` (beads far above the Rayleigh
    regime, where ``d⁶`` does not hold). When the fit is refused (too few sized detections, more than
    :data:`MAX_CLIPPED_FRACTION` of the small particles' spots clipped, no noise estimate) the entry
    says why, with ``diameter_nm`` None.

    Returns
    -------
    dict or None
        ``diameter_nm`` (the limit, or None with a ``reason``), ``brightness_ratio_100nm`` (``R``), ``defocus_g``,
        ``tracks_below_fraction`` (share of the deconvolved track distribution below the limit: not
        particles of that size and material — wrong links, or another material),
        ``edge_density_ratio`` (density per log-diameter just above the limit over the peak's; see
        :data:`LIMIT_EDGE_RATIO`), ``n_detections`` and ``method``.
    """
    from .distribution import RAYLEIGH_MAX_NM

    stats = getattr(distribution, "stats", None) or {}
    d50 = stats.get("d50")
    if detect_params.invert or d50 is None or not np.isfinite(d50) or d50 > RAYLEIGH_MAX_NM:
        return None
    try:
        model = fit_visibility(features, tracks, distribution, acquisition, detect_params, params, saturation_level)
    except ExontaInputError as err:
        return {"diameter_nm": None, "reason": f"not estimated: {err}"}
    if not np.isfinite(model.detection_limit_nm):
        return {"diameter_nm": None, "reason": "not estimated: no brightness above the threshold"}
    d, w = _bin_weights(distribution)
    below = _share_below(w, inclusion(d, model, acquisition, params) > 0)
    return {"diameter_nm": model.detection_limit_nm, "brightness_ratio_100nm": model.brightness_ratio,
            "defocus_g": model.defocus_g, "tracks_below_fraction": below,
            "edge_density_ratio": _edge_density_ratio(distribution, model.detection_limit_nm),
            "n_detections": model.n_detections,
            "method": "smallest diameter detected at the light sheet's centre, for particles of the sample's "
                      "material: Rayleigh scattering (d^6) scaled to the video's own detections "
                      "(exonta.analysis.visibility)"}


def detection_limit_warnings(size_stats: dict[str, Any]) -> list[str]:
    """A warning when the size distribution reaches the detection limit (:data:`LIMIT_EDGE_RATIO`)."""
    lim = size_stats.get("detection_limit") or {}
    if lim.get("diameter_nm") is None or not lim.get("edge_density_ratio", 0.0) >= LIMIT_EDGE_RATIO:
        return []
    d10 = size_stats.get("d10")
    d10_text = f" (D10 {d10:.0f} nm)" if d10 is not None and np.isfinite(d10) else ""
    return [f"the size distribution reaches the detection limit: particles of the sample's material smaller than "
            f"~{lim['diameter_nm']:.0f} nm are not detected at these camera and laser settings, so the sample "
            f"probably holds smaller particles than it shows; the small-size end{d10_text} and the mean describe "
            "the visible particles only (a higher laser power or camera level lowers the limit)"]
