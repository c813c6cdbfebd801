"""Validated configuration: acquisition metadata and analysis parameters.

One model, :class:`AnalysisConfig`, holds everything a result depends on. It is
loaded from TOML files and CLI flags and saved with every result
(``summary.json`` ``parameters``/``acquisition``) for provenance.

Acquisition values are resolved from several sources, highest precedence first
(:func:`resolve_acquisition`):

1. explicit values (CLI flags / API keyword arguments),
2. the ``[acquisition]`` table of a ``--config`` TOML file,
3. a sidecar next to the video: ``<video stem>.exonta.toml``, then a folder-wide
   ``exonta.toml`` in the video's folder,
4. metadata inside the file (OME-TIFF ``PhysicalSizeX`` / ``TimeIncrement``,
   the container's frame rate),
5. defaults for the values that have a safe one (temperature 22 °C with a
   warning, exposure = frame interval with a warning, dilution 1, viscosity of
   water at the temperature).

Pixel size and frame rate have no default: if still missing, a clear
:class:`~exonta.errors.ExontaInputError` is raised.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import ExontaInputError
from .physics import water_viscosity_mpas

__all__ = [
    "Acquisition",
    "DetectParams",
    "LinkParams",
    "SizingParams",
    "ConcentrationParams",
    "AnalysisConfig",
    "ACQUISITION_FIELDS",
    "load_toml",
    "resolve_acquisition",
    "load_config",
    "sidecar_paths",
    "format_validation_error",
]

DEFAULT_TEMPERATURE_C = 22.0
#: Warmest sample temperature taken without a question, °C: NTA instruments regulate their cells up to ~55 °C.
#: Above it a room or body temperature given in Fahrenheit (64–99 °F) is the likelier reading.
MAX_PLAUSIBLE_TEMPERATURE_C = 55.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _finite(v: float | None, name: str) -> float | None:
    if v is not None and not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number")
    return v


class Acquisition(_Model):
    """How the video was recorded.

    Attributes
    ----------
    pixel_size_um : float
        Size of one camera pixel in the sample plane, µm/px.
    fps : float
        Frame rate, frames per second (frame interval ``1/fps`` s).
    exposure_s : float
        Exposure time per frame in s (≤ frame interval). Sets the motion-blur
        coefficient ``R = exposure_s * fps / 6``.
    temperature_c : float
        Sample temperature, °C.
    viscosity_mpas : float
        Medium viscosity in mPa·s; water at ``temperature_c`` (IAPWS 2008) when
        not given.
    dilution : float
        Dilution factor of the measured sample (≥ 1 usually); concentrations are
        multiplied by it to give the stock concentration.
    """

    # lower bounds: below 1 nm/px or one frame per 1000 s the values are typos, and the linking
    # search radius in pixels (µm / pixel size) would overflow to infinity
    pixel_size_um: float = Field(ge=1e-3, le=1000)
    fps: float = Field(ge=1e-3, le=1e6)
    exposure_s: float = Field(gt=0, le=3600)
    temperature_c: float = Field(default=DEFAULT_TEMPERATURE_C, gt=-5, lt=100)
    viscosity_mpas: float = Field(default=None, gt=0, le=1e6, validate_default=False)  # type: ignore[assignment]
    dilution: float = Field(default=1.0, gt=0, le=1e12)

    @field_validator("pixel_size_um", "fps", "exposure_s", "temperature_c", "viscosity_mpas", "dilution", mode="before")
    @classmethod
    def _check_finite(cls, v, info):
        if isinstance(v, bool):
            raise ValueError(f"{info.field_name} must be a number")
        if v is None:
            return v
        try:
            fv = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{info.field_name} must be a number, got {v!r}") from None
        fv = _finite(fv, info.field_name)
        if info.field_name == "temperature_c" and 250.0 <= fv <= 380.0:
            raise ValueError(f"temperature_c={fv:g} looks like kelvin: give degrees Celsius "
                             f"({fv:g} K = {fv - 273.15:.1f} °C)")
        return fv

    @model_validator(mode="after")
    def _fill(self):
        if self.viscosity_mpas is None:
            object.__setattr__(self, "viscosity_mpas", round(float(water_viscosity_mpas(self.temperature_c)), 6))
        if self.exposure_s > 1.0 / self.fps * (1 + 1e-6):
            raise ValueError(
                f"exposure_s={self.exposure_s} is longer than the frame interval 1/fps={1.0 / self.fps:.6g} s")
        return self

    @property
    def frame_interval_s(self) -> float:
        """Time between frames, s."""
        return 1.0 / self.fps

    @property
    def blur_coefficient(self) -> float:
        """Motion-blur coefficient R for a uniform exposure (Berglund 2010): ``t_exp/(6 Δt)``."""
        return self.exposure_s * self.fps / 6.0


#: The warning when no exposure time is known (the pipeline adds what the assumption does to the sizes).
EXPOSURE_ASSUMED_WARNING = "exposure time not given; assumed equal to the frame interval (set --exposure-s)"

ACQUISITION_FIELDS = ("pixel_size_um", "fps", "exposure_s", "temperature_c", "viscosity_mpas", "dilution")


class DetectParams(_Model):
    """Spot detection and localisation parameters (see :mod:`exonta.detect`)."""

    psf_sigma_px: float = Field(default=1.5, gt=0.3, le=20, description="Gaussian sigma of the in-focus spot, px")
    auto_psf: bool = Field(default=True, description="measure the spot width from the video when the analysis "
                           "starts (exonta.detect.psf) unless psf_sigma_px is given; the measured width replaces "
                           "psf_sigma_px when it differs from it by more than a factor 1.7 (large beads), and the "
                           "saved configuration holds the value used")
    threshold_snr: float = Field(default=3.5, gt=0, le=1000,
                                 description="detection threshold in noise sigmas of the filtered image. 3.5 keeps "
                                 "motion-blurred frames of tracked particles (a higher threshold drops the fast "
                                 "steps and biases sizes up, +3 % at 4 and +5 % at 5 on simulated 100 nm beads); noise spots it lets through "
                                 "rarely form tracks of min_track_length")
    threshold: float | None = Field(default=None, ge=0,
                                    description="manual threshold on the filtered image (overrides threshold_snr)")
    noise_floor: float | None = Field(default=None, ge=0, le=1e6,
                                      description="smallest pixel noise sigma (raw units) the threshold assumes. "
                                      "Unset: 1/sqrt(12) (the rounding noise of integer pixel values) for lossily "
                                      "compressed frames, whose codec can flatten a dark background to almost no "
                                      "noise so that faint artefacts pass any threshold in sigmas; 0 otherwise")
    saturation_level: float | None = Field(
        default=None, gt=0, le=2**32,
        description="raw value at which the camera clips (saturated pixels are left out of the fits, a clipped spot "
                    "counts once, its brightness is censored). Unset: the largest value of the video's integer type, "
                    "or 2^bits - 1 when the video's sampled pixels stop at that value below it (12-bit data in "
                    "16-bit words: 4095)")
    auto_threshold: bool = Field(default=True, description="when neither threshold_snr nor threshold is given and "
                                 "the size distribution has a peak too bright for its size (noise maxima or "
                                 "compression artefacts linked into tracks; exonta.analysis.distribution."
                                 "implausible_peaks), analyse again at threshold_snr 5, then 7, and keep the "
                                 "analysis whose implausible peaks hold the smallest number fraction; the threshold "
                                 "used is saved with the result (auto_parameters) and a warning says so")
    min_separation_px: float | None = Field(default=None, gt=0, le=200,
                                            description="minimum distance between two maxima, px (default 2.5×psf)")
    edge_px: int | None = Field(default=None, ge=0, le=500,
                                description="pixels excluded at every edge (default ceil(2.5×psf))")
    background: Literal["static", "rolling", "none"] = Field(
        default="static", description="static = temporal quantile (background_quantile) over a frame subsample")
    background_frames: int = Field(default=64, ge=1, le=10000)
    background_quantile: float = Field(
        default=0.25, gt=0, lt=1,
        description="the static (and rolling) background is this per-pixel temporal quantile of the sampled "
        "frames (1 − it with invert). Below the median, so that a large, slow particle that stays over a pixel "
        "for up to 3/4 of the frames does not become background (with the median its halo did, and the hole it "
        "left gave persistent false spots at its rim); the offset this leaves (−0.67 noise sigmas) is smooth and "
        "the band-pass filter and the per-spot local background remove it")
    localisation: Literal["gaussian", "radial", "centroid"] = "gaussian"
    search_binning: Literal[1, 2] = Field(
        default=1,
        description="2: search the candidates on the frame summed in 2×2 blocks (the fits stay at full resolution): "
                    "about half the detection time, the same positions for isolated spots, but fewer candidates in "
                    "the noise (fewer junk links) and less resolution for touching spots. Monodisperse beads size "
                    "as well or better; a polydisperse sample near the detection limit reads larger (simulated "
                    "EV-like sample: D50 +10 %, against +1 % at full resolution; README, Known gaps). An absolute "
                    "threshold always searches at full resolution. 1 (default): full resolution")
    invert: bool = Field(default=False, description="dark particles on a light background (bright-field). When "
                         "not given, exonta.pipeline measures it from the video (exonta.detect.polarity); the "
                         "saved configuration holds the value used")
    chunk_frames: int = Field(default=64, ge=1, le=100000)
    exclude_regions: list[tuple[int, int, int, int]] = Field(
        default_factory=list,
        description="rectangles (x0, y0, x1, y1) in px, x = column, half-open, whose detections are dropped and whose "
                    "area is left out of the concentration's analysed area (burned-in text, a scale bar, a scratch)")
    exclude_overlays: bool = Field(
        default=True,
        description="find burned-in overlays (time stamps, frame counters, scale bars: pixels at the camera's white "
                    "or black level, or coloured in a colour source, in at least a quarter of a sample of frames; "
                    "exonta.detect.overlay) when the "
                    "analysis starts and add their boxes to exclude_regions; the saved configuration holds the "
                    "regions used")
    drop_repeated_frames: bool = Field(
        default=True,
        description="leave out frames that repeat the frame before (capture software that duplicates pictures to keep "
                    "its frame rate, a slow camera in a faster file, frame-rate conversion; exonta.detect.repeats) "
                    "and analyse the distinct pictures at their own rate, fps x (distinct/all frames); the result "
                    "records how many and the rate used. fps stays the file's frame rate")
    merge_within_sigma: float = Field(
        default=2.0, ge=0, le=10,
        description="fitted spots of one frame closer than this many spot widths (the smaller size_px) are one spot "
                    "found twice (a saturated flat top, a bright halo; two Gaussian spots closer than 2 sigma have a "
                    "single maximum, Sparrow's limit): only the brightest is kept (0: keep all)")

    @field_validator("exclude_regions")
    @classmethod
    def _regions_ordered(cls, v: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
        for x0, y0, x1, y1 in v:
            if not (0 <= x0 < x1 and 0 <= y0 < y1):
                raise ValueError(f"an excluded region must be x0,y0,x1,y1 with 0 <= x0 < x1 and 0 <= y0 < y1 (px), "
                                 f"got {x0},{y0},{x1},{y1}")
        return v


class LinkParams(_Model):
    """Linking parameters (see :mod:`exonta.track`)."""

    search_range_um: float | None = Field(default=None, gt=0, le=1000,
                                          description="max displacement per frame, µm (default from min_diameter_nm)")
    min_diameter_nm: float = Field(default=50.0, gt=0, le=1e5,
                                   description="smallest diameter of interest; sets the default search range "
                                   "(smaller values widen it and cause more wrong links in dense fields)")
    memory_frames: int = Field(default=2, ge=0, le=100, description="gap closing: frames a particle may vanish")
    drift_correction: bool = True
    drift_smoothing_frames: int = Field(default=15, ge=1, le=10000,
                                        description="window of the moving average of the per-frame drift, frames")
    drift_min_steps: int = Field(default=400, ge=0, le=10**7,
                                 description="widen the drift window until it holds this many one-frame steps on "
                                             "average (few particles: their own motion must not be taken for "
                                             "drift); 0: the window as given")
    search_miss_probability: float = Field(
        default=1e-3, gt=0, lt=0.5,
        description="probability that a true one-frame step of the smallest particle exceeds the default search "
                    "range (radius = sqrt(4 D dt ln(1/p)))")
    brightness_log_sd: float | Literal["auto"] = Field(
        default=0.0,
        description="linking: frame-to-frame spread of a particle's log peak brightness; > 0 adds the brightness "
                    "change to the link cost (capped at 3 spreads), so that of close candidates the one of "
                    "similar brightness is preferred (exonta.track.link; uses the features' signal column, "
                    "distance only without it); \"auto\": measured on a first linking "
                    "pass (exonta.track.quality.brightness_log_sd; the pipeline resolves it); 0 (default): distance "
                    "only. Helps crowded fields of small particles (simulated 60 nm beads, binned search: D50 "
                    "+5.0 -> +2.3 %); not the default because a compressed bright-field recording of 0.5 um beads "
                    "read -25 % with it (README, Known gaps)")

    @field_validator("brightness_log_sd")
    @classmethod
    def _brightness_range(cls, v):
        if v != "auto" and not 0.0 <= float(v) <= 10.0:
            raise ValueError("brightness_log_sd must be \"auto\" or a number in [0, 10]")
        return v

    flow_warning_um_per_s: float = Field(default=5.0, gt=0, le=1e4,
                                         description="warn when the mean drift/flow speed exceeds this, µm/s")
    adaptive_search: bool = Field(default=True, description="per-track search radius from the track's own past "
                                  "steps (within the physics radius): fewer links to noise detections")
    track_miss_probability: float = Field(
        default=1e-6, gt=0, lt=0.5,
        description="adaptive search: probability that a track's true next step exceeds its own radius (F(2, 2n) "
                    "predictive bound from its n past steps); a missed step splits the track and biases sizes up. "
                    "1e-6: at 1e-4 the EV-like lognormal sample's D50 read +7 % (simulator, seed 0; +2.9 % at 1e-6) "
                    "while 1e-6 still rejects most links to noise maxima (37 °C 100 nm D50 −4.0 % without the "
                    "adaptive radius, −3.0 % with it)")
    outlier_probability: float = Field(
        default=0.0, ge=0, lt=0.5,
        description="after linking, remove a position from its track when one Brownian particle explains it "
                    "with a probability below this (F(2, 2n) test of its bridge residual, or end step, against the "
                    "rest of the track; exonta.track.quality), e.g. 1e-7. 0 (default) disables: removing junk "
                    "positions is correct but on the simulated EV-like lognormal sample it exposes an upward "
                    "selection bias of valid (>= min_track_length) tracks towards large particles that junk links "
                    "now offset (D50 +4.1 % without, +5.9 % at 1e-7, +16 % with truth-based junk removal)")
    sample_search: bool = Field(
        default=True, description="two-pass linking when search_range_um is not set: link with the physics radius, "
        "estimate the sample's diffusion from the tracks (median squared step per track), and relink with the "
        "radius of its sample_diffusion_quantile (exonta.track.quality.sample_search_range_um), when that is "
        "smaller; the radius used is saved with the result")
    sample_diffusion_quantile: float = Field(default=0.999, gt=0.5, le=1.0,
                                             description="quantile of the per-track diffusion coefficients that "
                                             "sets the second-pass search radius")
    sample_min_tracks: int = Field(default=20, ge=1, le=100000,
                                   description="fewest tracks (of min_track_length positions) for a second pass")
    max_outlier_fraction: float = Field(
        default=0.34, ge=0, le=1,
        description="at most this fraction of a track's positions is removed as outliers")


class SizingParams(_Model):
    """Per-track diffusion and size-distribution parameters."""

    estimator: Literal["cve", "msd"] = "cve"
    min_track_length: int = Field(default=10, ge=3, le=100000, description="minimum number of positions")
    size_min_nm: float = Field(default=20.0, gt=0)
    size_max_nm: float = Field(default=2000.0, gt=0)
    auto_size_range: bool = Field(default=True, description="double size_max_nm (adding bins of the same width "
                                  "in log d) until it is at least 4× the median per-track diameter, when that "
                                  "median exceeds size_max_nm/4 (micron beads); the saved configuration holds the "
                                  "range used")
    n_bins: int = Field(default=120, ge=10, le=2000)
    deconvolve: bool = True
    regularization: float = Field(
        default=1e-5, ge=0,
        description="weight of the roughness penalty ∫(d³ log density / d(ln d)³)² of the deconvolved size "
                    "distribution, against the total log-likelihood of all tracks (0 = unpenalised NPMLE)")
    bootstrap: int = Field(default=100, ge=0, le=100000)
    seed: int = 0
    use_gap_steps: bool = Field(default=True, description="use displacements across detection gaps in the "
                                "likelihood (dropping them biases sizes upwards: missed frames are the fast ones)")
    max_gap_frames: int = Field(default=3, ge=0, le=100, description="longest gap (missing frames) whose "
                                "displacement enters the likelihood")
    localization_error: Literal["spot", "brightness", "pooled", "per_track"] = Field(
        default="spot",
        description="localisation variance used in the likelihood: a line σ² = a + k·mean((size_px·px/snr)²) "
                    "fitted to the CVE estimates across tracks (spot width and SNR; 'brightness' without them), "
                    "CVE estimates pooled within brightness (mean_mass) groups, pooled over all tracks, or each "
                    "track's own (biased) CVE estimate")
    exclude_faster_than_grid: bool = Field(
        default=True, description="tracks whose likelihood is largest at size_min_nm (faster than any particle of "
        "the grid: linked noise maxima, wrong links) are counted in n_tracks_faster_than_grid, not sized")
    peak_prominence: float = Field(default=0.05, gt=0, lt=1,
                                   description="minimum prominence of a reported peak, fraction of the maximum density")

    @model_validator(mode="after")
    def _range(self):
        if self.size_max_nm <= self.size_min_nm:
            raise ValueError("size_max_nm must be larger than size_min_nm")
        return self


# options of the first depth model (exonta 0.1), accepted and ignored when a saved configuration names them
_RETIRED_CONCENTRATION_KEYS = ("brightness_column", "soft_threshold", "defocus_model", "noise_correction")


class ConcentrationParams(_Model):
    """How particles per frame become particles/mL (see :mod:`exonta.analysis.concentration`)."""

    @model_validator(mode="before")
    @classmethod
    def _drop_retired(cls, data: Any) -> Any:
        """A saved config.toml naming options of the earlier depth model (they no longer exist) still loads."""
        if isinstance(data, dict) and any(k in data for k in _RETIRED_CONCENTRATION_KEYS):
            data = {k: v for k, v in data.items() if k not in _RETIRED_CONCENTRATION_KEYS}
        return data

    min_linked_frames: int = Field(default=3, ge=1, le=1000,
                                   description="count only detections that belong to a track of at least this many "
                                   "positions (single-frame noise maxima are not particles)")
    nominal_depth_um: float = Field(default=10.0, gt=0, le=10000,
                                    description="instrument default effective depth of the detection volume, µm")
    calibration: str | None = Field(default=None, description="path of a calibration JSON from `exonta calibrate`")
    size_correction: bool = Field(default=True, description="use the scattering model for size-resolved depth")
    particle_refractive_index: float = Field(default=1.39, gt=1.0, lt=4.0,
                                             description="assumed refractive index of sample particles (EVs ≈ 1.39)")
    medium_refractive_index: float = Field(default=1.333, gt=1.0, lt=2.0)
    count_threshold_sigmas: float = Field(
        default=12.0, gt=0, le=1000,
        description="absolute counting threshold on the filtered peak of a spot, in noise sigmas of the filtered "
                    "image of the calibration video (stored in the calibration, so every sample is counted with the "
                    "same threshold in raw intensity units)")
    count_threshold: float | None = Field(default=None, gt=0,
                                          description="counting threshold in raw intensity units of the filtered "
                                                      "peak (overrides count_threshold_sigmas when calibrating)")
    min_threshold_margin: float = Field(default=1.5, gt=0, le=100,
                                        description="warn when the counting threshold is less than this many times "
                                                    "the detector's threshold in the sample (noise or haze too high)")
    max_brightness_spread: float = Field(
        default=1.2, gt=0, le=100,
        description="a sample whose counted brightness distribution is at most this much wider than one population's "
                    "(see exonta.analysis.concentration) is treated as one population of measured scattering; wider "
                    "ones use the size-resolved depth model")
    wing_radius_factor: float = Field(default=3.0, ge=0, le=20,
                                      description="do not count maxima within this many spot sigmas of a brighter "
                                                  "defocused spot (0: count every detection)")
    min_depth_fraction: float = Field(default=0.2, gt=0, le=1,
                                      description="floor of the modelled depth, as a fraction of the calibrant's")
    block_residence_factor: float = Field(default=2.0, ge=1, le=100,
                                          description="bootstrap block length in mean residence times")
    bootstrap_resamples: int = Field(default=1000, ge=10, le=1_000_000)
    seed: int = Field(default=0, ge=0)
    min_particles_per_frame: float = Field(default=10.0, ge=0, description="warn below this many per frame")
    max_particles_per_frame: float = Field(default=150.0, gt=0, description="warn (dilute) above this many")
    max_overlap_fraction: float = Field(default=0.1, gt=0, le=1,
                                        description="warn when this share of spots has a neighbour closer than "
                                                    "the detector's minimum separation")
    min_valid_tracks: int = Field(default=100, ge=0, description="warn below this many valid tracks")


class AnalysisConfig(_Model):
    """Everything a result depends on."""

    # values measured from the video by exonta.pipeline (spot width, size range): provenance only,
    # not a parameter (the parameters hold the values used)
    _auto: dict = PrivateAttr(default_factory=dict)

    acquisition: Acquisition | None = None
    detect: DetectParams = Field(default_factory=DetectParams)
    link: LinkParams = Field(default_factory=LinkParams)
    sizing: SizingParams = Field(default_factory=SizingParams)
    concentration: ConcentrationParams = Field(default_factory=ConcentrationParams)

    def parameters_dict(self) -> dict[str, Any]:
        """All analysis parameters (everything except the acquisition), JSON-ready."""
        return self.model_dump(mode="json", exclude={"acquisition"})

    def parameters_hash(self) -> str:
        """Stable short hash of the analysis parameters (for caching and provenance)."""
        blob = json.dumps(self.parameters_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def format_validation_error(err: ValidationError, source: str = "") -> str:
    """One readable sentence from a pydantic ValidationError."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()))
        msg = e.get("msg", "invalid value")
        if e.get("type") == "extra_forbidden":
            msg = "unknown key"
        elif e.get("type") == "missing":
            msg = "is required"
        parts.append(f"{loc}: {msg}" if loc else msg)
    where = f" in {source}" if source else ""
    return f"invalid configuration{where}: " + "; ".join(parts)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file into a dict, turning every failure into an ExontaInputError."""
    p = Path(path)
    if not p.is_file():
        raise ExontaInputError(f"config file not found: {p}")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ExontaInputError(f"config file {p} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ExontaInputError(f"cannot read config file {p}: {exc.strerror}") from None


def sidecar_paths(video_path: str | Path) -> list[Path]:
    """Sidecar files that may describe a video, highest precedence first."""
    p = Path(video_path)
    base = p if p.is_dir() else p.with_suffix("")
    name = base.name
    cands = [base.parent / f"{name}.exonta.toml"]
    if p.is_dir():
        cands.append(p / "exonta.toml")
    cands.append(p.parent / "exonta.toml")
    return [c for c in cands if c.is_file()]


def _split_config_dict(data: dict[str, Any], source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a TOML dict into (acquisition values, analysis sections); validate keys."""
    data = dict(data)
    acq = data.pop("acquisition", {}) or {}
    if not isinstance(acq, dict):
        raise ExontaInputError(f"[acquisition] in {source} must be a table")
    acq = dict(acq)
    allowed = {"detect", "link", "sizing", "concentration"}
    unknown = set(data) - allowed
    if unknown:
        raise ExontaInputError(
            f"unknown section or key {sorted(unknown)[0]!r} in {source}; allowed: "
            f"[acquisition], {', '.join('[' + a + ']' for a in sorted(allowed))}")
    bad = set(acq) - set(ACQUISITION_FIELDS)
    if bad:
        raise ExontaInputError(
            f"unknown acquisition key {sorted(bad)[0]!r} in {source}; allowed: {', '.join(ACQUISITION_FIELDS)}")
    return acq, data


def _deep_update(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_update(out[k], v)
        else:
            out[k] = v
    return out


def resolve_acquisition(
    explicit: dict[str, Any] | None = None,
    config_acquisition: dict[str, Any] | None = None,
    sidecar_acquisition: dict[str, Any] | None = None,
    file_metadata: dict[str, Any] | None = None,
    source_name: str = "the video",
) -> tuple[Acquisition, list[str], dict[str, str]]:
    """Merge acquisition values by precedence and validate them.

    Parameters
    ----------
    explicit, config_acquisition, sidecar_acquisition, file_metadata : dict or None
        Values from CLI/API, ``--config`` file, sidecar file and the video's own
        metadata, in decreasing precedence. ``None`` values are ignored.
    source_name : str
        Used in error messages.

    Returns
    -------
    acquisition : Acquisition
    warnings : list of str
        Defaults that were applied (temperature, exposure), and values to check: a dilution below 1 (a fraction
        where the factor is meant), a temperature above :data:`MAX_PLAUSIBLE_TEMPERATURE_C` (Fahrenheit?).
    sources : dict
        Which source each field came from (``"cli"``, ``"config"``,
        ``"sidecar"``, ``"file"``, ``"default"``).
    """
    layers = [("file", file_metadata), ("sidecar", sidecar_acquisition), ("config", config_acquisition),
              ("cli", explicit)]
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, layer in layers:
        for k, v in (layer or {}).items():
            if v is None:
                continue
            if k not in ACQUISITION_FIELDS:
                raise ExontaInputError(f"unknown acquisition key {k!r}; allowed: {', '.join(ACQUISITION_FIELDS)}")
            merged[k] = v
            sources[k] = name
    warnings: list[str] = []
    for req, flag in (("pixel_size_um", "--pixel-size-um"), ("fps", "--fps")):
        if req not in merged:
            raise ExontaInputError(
                f"{req} is not known for {source_name}: give {flag}, put it in the [acquisition] table of a "
                f"--config file or a sidecar file, or record it in the file's metadata")
    if "temperature_c" not in merged:
        merged["temperature_c"] = DEFAULT_TEMPERATURE_C
        sources["temperature_c"] = "default"
        warnings.append(f"temperature not given; assumed {DEFAULT_TEMPERATURE_C:g} °C (set --temperature-c)")
    if "exposure_s" not in merged:
        try:
            merged["exposure_s"] = 1.0 / float(merged["fps"])
        except (TypeError, ValueError, ZeroDivisionError):
            merged["exposure_s"] = None
        sources["exposure_s"] = "default"
        warnings.append(EXPOSURE_ASSUMED_WARNING)
    if "viscosity_mpas" not in merged:
        sources["viscosity_mpas"] = "default"
    if "dilution" not in merged:
        sources["dilution"] = "default"
    try:
        acq = Acquisition(**merged)
    except ValidationError as exc:
        raise ExontaInputError(format_validation_error(exc, f"acquisition settings for {source_name}")) from None
    if acq.dilution < 1.0:
        factor = f"{1.0 / acq.dilution:.4g}"
        warnings.append(f"dilution {acq.dilution:g} is below 1: the sample would have been concentrated {factor}x "
                        f"before measuring, and the concentration is multiplied by {acq.dilution:g}. For a sample "
                        f"diluted 1:{factor}, give --dilution {factor} (the factor, not the fraction)")
    if acq.temperature_c > MAX_PLAUSIBLE_TEMPERATURE_C:
        effect = (f"the water viscosity used is {acq.viscosity_mpas:.3g} mPa·s, and the sizes scale with it"
                  if sources["viscosity_mpas"] == "default" else "the sizes scale with the absolute temperature")
        warnings.append(f"temperature {acq.temperature_c:g} °C is warmer than NTA instruments measure at (up to "
                        f"~{MAX_PLAUSIBLE_TEMPERATURE_C:g} °C); {effect}. If the value is in Fahrenheit "
                        f"({acq.temperature_c:g} °F = {(acq.temperature_c - 32.0) / 1.8:.1f} °C), give degrees "
                        "Celsius (--temperature-c)")
    return acq, warnings, sources


def load_config(
    video_path: str | Path | None = None,
    config_file: str | Path | None = None,
    explicit_acquisition: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    file_metadata: dict[str, Any] | None = None,
) -> tuple[AnalysisConfig, list[str], dict[str, str]]:
    """Build the validated :class:`AnalysisConfig` for one video.

    Analysis sections merge in the same precedence as acquisition values:
    ``overrides`` > ``config_file`` > sidecar files > defaults.

    Returns
    -------
    config : AnalysisConfig
    warnings : list of str
    sources : dict
        Source of each acquisition field.
    """
    cfg_acq: dict[str, Any] = {}
    cfg_rest: dict[str, Any] = {}
    if config_file is not None:
        cfg_acq, cfg_rest = _split_config_dict(load_toml(config_file), str(config_file))
    side_acq: dict[str, Any] = {}
    side_rest: dict[str, Any] = {}
    if video_path is not None:
        for sc in reversed(sidecar_paths(video_path)):  # lowest precedence first
            a, r = _split_config_dict(load_toml(sc), str(sc))
            side_acq.update(a)
            side_rest = _deep_update(side_rest, r)
    rest = _deep_update(_deep_update(side_rest, cfg_rest), overrides or {})
    name = Path(video_path).name if video_path is not None else "the video"
    acq, warnings, sources = resolve_acquisition(explicit_acquisition, cfg_acq, side_acq, file_metadata, name)
    try:
        cfg = AnalysisConfig(acquisition=acq, **rest)
    except ValidationError as exc:
        raise ExontaInputError(format_validation_error(exc, "analysis parameters")) from None
    except TypeError as exc:
        raise ExontaInputError(f"invalid analysis parameters: {exc}") from None
    return cfg, warnings, sources
