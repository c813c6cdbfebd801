"""Physical NTA video simulator with ground truth.

The simulator produces what a scientific camera looking at a laser light sheet
through a microscope objective records, together with the true position, depth,
size and brightness of every particle in every frame. Every accuracy test of
exonta (localisation, tracking, sizing, concentration) rests on it.

Model and assumptions
---------------------
Sample volume
    A box of ``(field + 2·margin)`` in x and y (periodic: a particle leaving on
    one side re-enters on the other as a *new* particle id, i.e. the box is in
    equilibrium with an infinite bath) and ``±z_half_um`` in z (reflecting
    walls). ``N = round(C · V_box)`` particles start uniformly distributed. The
    margin exceeds the widest rendered spot plus several diffusion steps, so
    the wrap is never visible. ``z_half_um`` is chosen (when not given) so that
    the brightest particle at the boundary is far below the noise (its peak
    pixel below 0.2 × background noise), capped at ``12·sheet_sigma_um``.
Motion
    3-D Brownian motion with the Stokes–Einstein coefficient
    ``D = k_B·T/(3π·η·d)`` per particle (:func:`exonta.physics.diffusion_from_diameter`,
    water viscosity from IAPWS 2008 when not given), plus a uniform drift
    ``drift_um_per_s`` (deterministic displacement). Gaussian increments are
    exact for any step length; steps are at most ``Δt/n_substeps`` so that the
    reflection at the z walls is accurate.
Exposure and motion blur
    During the exposure ``[t_k, t_k + exposure_s]`` the particle is sampled
    at the ``n_substeps`` mid-points of equal sub-intervals and a spot with
    ``1/n_substeps`` of the frame's photons is rendered at each (true motion
    blur). The truth ``x, y`` is the mean of those positions (the exposure
    mean, what a localiser recovers); ``x_start, y_start`` are the positions
    at ``t_k``. With ``n`` mid-point samples the blur coefficient of the truth
    positions is ``R·(1 − 1/n²)`` with ``R = exposure_s·fps/6`` (Berglund,
    PRE 82:011917, 2010), i.e. 1.6 % below the continuous value for n = 8.
Illumination
    Gaussian light-sheet profile in z, ``I(z) = exp(−z²/(2·sheet_sigma_um²))``.
Scattering
    Photons per exposure ``photons_ref × relative_scattering(d, n_p, n_m)``:
    Rayleigh scattering ``∝ d⁶ |(m²−1)/(m²+2)|²`` relative to a 100 nm
    polystyrene sphere (Bohren & Huffman, *Absorption and Scattering of Light
    by Small Particles*, Wiley 1983, ch. 5). The d⁶ law overestimates the
    scattering above ~150 nm (Mie regime; the true growth is slower), so large
    particles are brighter here than in a real instrument.
Optics
    Gaussian PSF of in-focus standard deviation ``psf_sigma_um``; defocus
    widens it as ``σ(z) = σ₀·sqrt(1 + (z/depth_of_field_um)²)`` with the photon
    count conserved. Spots are integrated exactly over each pixel
    (erf differences). Pixel ``(row r, col c)`` covers
    ``[c−0.5, c+0.5] × [r−0.5, r+0.5]`` in px, x = column, y = row.
Camera
    Poisson shot noise on signal + background (photons are detected
    photo-electrons, QE folded in), optional smooth uneven background
    (``background_gradient``: a ramp along the laser axis x plus a vertical
    bow, amplitude ±gradient), Gaussian read noise, gain, offset, rounding and
    saturation at ``2**bit_depth − 1``. Sampling is exact: a background pixel
    draws its final ADU value from the precomputed distribution of
    ``Poisson(λ_bg)`` + read noise after gain, offset, rounding and clipping;
    pixels with signal add ``Poisson(signal)`` (a sum of independent Poisson
    variables). Spots are rendered out to where they add < 1e-3 photons per
    pixel (at most 8 σ).

Default numbers follow typical NTA instruments (20× objective, ~0.17 µm/px,
30 fps, a light sheet a few µm thick): Filipe, Hawe & Jiskoot, Pharm. Res.
27:796 (2010); Gardiner et al., J. Extracell. Vesicles 2:19671 (2013).
The default 100 nm bead concentration gives ~50 particles in the simulated
volume of a 640×480 field.

Random streams: the particle population and the Brownian increments come from
``numpy.random.default_rng`` seeded with ``[seed, …]`` and drawn frame by
frame; the camera noise of frame k from a SplitMix64 stream seeded by
``(seed, k)``. The output is therefore identical however the video is chunked.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config import Acquisition, format_validation_error
from .errors import ExontaInputError
from .physics import diffusion_from_diameter, relative_scattering, water_viscosity_mpas

__all__ = [
    "Component",
    "SimulationConfig",
    "SimulatedVideo",
    "SimulatedChunk",
    "PRESETS",
    "preset_config",
    "load_simulation_config",
    "simulate",
    "iter_simulated_chunks",
    "write_simulation",
    "TRUTH_COLUMNS",
]

TRUTH_COLUMNS = ("frame", "particle", "x", "y", "x_start", "y_start", "z_um", "diameter_nm", "refractive_index",
                 "component", "photons", "in_field", "D_um2_s")

_MAX_PARTICLES = 2_000_000
_RENDER_MAX_SIGMAS = 8.0
_RENDER_EPS_PHOTONS = 1e-3


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Component(_Model):
    """One particle population of the simulated sample.

    Attributes
    ----------
    fraction : float
        Number fraction (relative; normalised over all components).
    distribution : {"mono", "lognormal"}
        ``mono``: Gaussian diameters ``diameter_nm ± cv·diameter_nm`` truncated
        at > 0; ``lognormal``: ``median_nm`` and geometric SD ``gsd``.
    diameter_nm : float
        Mean diameter of a ``mono`` component, nm (also the default median).
    cv : float
        Relative standard deviation of a ``mono`` component (0 = identical).
    median_nm, gsd : float or None
        Median diameter (nm) and geometric standard deviation (> 1) of a
        ``lognormal`` component.
    refractive_index : float
        Refractive index of the particles (polystyrene 1.59, EVs ~1.39).
    """

    fraction: float = Field(default=1.0, gt=0, le=1e9, description="number fraction (relative)")
    distribution: Literal["mono", "lognormal"] = "mono"
    diameter_nm: float = Field(default=100.0, gt=0, le=20000, description="mean diameter (mono), nm")
    cv: float = Field(default=0.0, ge=0, lt=1, description="relative SD of a mono component")
    median_nm: float | None = Field(default=None, gt=0, le=20000, description="median diameter (lognormal), nm")
    gsd: float | None = Field(default=None, ge=1, le=10, description="geometric SD (lognormal)")
    refractive_index: float = Field(default=1.59, gt=1.0, lt=4.0)

    @model_validator(mode="after")
    def _check(self):
        if self.distribution == "lognormal" and self.gsd is None:
            raise ValueError("a lognormal component needs gsd (geometric standard deviation, e.g. 1.4)")
        return self

    @property
    def median(self) -> float:
        """Median diameter in nm (``median_nm`` or ``diameter_nm``)."""
        return float(self.median_nm if self.median_nm is not None else self.diameter_nm)

    def diameter_range_nm(self) -> tuple[float, float]:
        """Very low and very high quantiles (~1e-4) of the diameter distribution, nm."""
        if self.distribution == "mono":
            d = self.diameter_nm
            return max(d * (1 - 4 * self.cv), 0.1 * d), d * (1 + 4 * self.cv)
        m, g = self.median, float(self.gsd or 1.0)
        return m / g**3.8, m * g**3.8

    def sample_diameters_nm(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` diameters (nm)."""
        if self.distribution == "lognormal":
            return np.exp(math.log(self.median) + math.log(float(self.gsd)) * rng.standard_normal(n))
        d = np.full(n, self.diameter_nm)
        if self.cv > 0:
            d = self.diameter_nm * (1 + self.cv * rng.standard_normal(n))
            bad = d <= 0
            while bad.any():
                d[bad] = self.diameter_nm * (1 + self.cv * rng.standard_normal(int(bad.sum())))
                bad = d <= 0
        return d


class SimulationConfig(_Model):
    """Everything a simulated video depends on (units in the names).

    Attributes
    ----------
    width_px, height_px, n_frames : int
        Frame size and length of the video.
    pixel_size_um, fps, exposure_s, temperature_c, viscosity_mpas
        Acquisition (``viscosity_mpas`` None: water at ``temperature_c``, IAPWS 2008).
    concentration_per_ml : float
        Number concentration of the sample (all components).
    components : list of Component
        Particle populations (number fractions).
    medium_refractive_index : float
        1.333 for water.
    sheet_sigma_um : float
        Standard deviation of the Gaussian light-sheet intensity profile in z.
    z_half_um : float or None
        Half depth of the simulated volume (None: automatic, see module notes).
    psf_sigma_um, depth_of_field_um : float
        In-focus Gaussian PSF std and defocus scale ``σ(z) = σ₀·sqrt(1 + (z/z_dof)²)``.
    photons_ref : float
        Photons per exposure of a 100 nm polystyrene sphere at the sheet centre.
    background_photons, background_gradient : float
        Background photons per pixel per frame and the relative amplitude of
        its smooth unevenness (0 = flat).
    read_noise_e, gain_adu_per_e, offset_adu, bit_depth
        Camera: read noise (e⁻ rms), gain (None: 0.5 at 8 bit, 8 at 16 bit),
        offset (None: 10 / 100 ADU), 8 or 16 bit with saturation.
    drift_um_per_s : (float, float)
        Uniform flow (x, y), µm/s.
    n_substeps : int
        Samples per exposure for the motion blur.
    noise : bool
        False renders the expected image (rounded, no shot or read noise).
    seed : int
        Seed of every random stream.
    """

    width_px: int = Field(default=640, ge=4, le=8192)
    height_px: int = Field(default=480, ge=4, le=8192)
    n_frames: int = Field(default=300, ge=1, le=10_000_000)
    pixel_size_um: float = Field(default=0.166, gt=0, le=100)
    fps: float = Field(default=30.0, gt=0, le=1e5)
    exposure_s: float = Field(default=0.02, gt=0, le=100)
    temperature_c: float = Field(default=22.0, gt=-5, lt=100)
    viscosity_mpas: float | None = Field(default=None, gt=0, le=1e6,
                                         description="medium viscosity; water at temperature_c when None")
    concentration_per_ml: float = Field(default=2e8, ge=0, le=1e14)
    components: list[Component] = Field(default_factory=lambda: [Component()], min_length=1, max_length=100)
    medium_refractive_index: float = Field(default=1.333, gt=1.0, lt=3.0)
    sheet_sigma_um: float = Field(default=4.0, gt=0, le=1000, description="Gaussian light-sheet std in z, µm")
    z_half_um: float | None = Field(default=None, gt=0, le=10000,
                                    description="half depth of the simulated volume, µm (auto when None)")
    psf_sigma_um: float = Field(default=0.25, gt=0, le=100, description="in-focus Gaussian PSF std, µm")
    depth_of_field_um: float = Field(default=3.0, gt=0, le=10000, description="defocus scale z_dof, µm")
    photons_ref: float = Field(default=5000.0, ge=0, le=1e12,
                               description="photons per exposure of a 100 nm PS sphere at the sheet centre")
    background_photons: float = Field(default=20.0, ge=0, le=1e5, description="per px per frame")
    background_gradient: float = Field(default=0.0, ge=0, lt=1, description="relative amplitude of uneven background")
    read_noise_e: float = Field(default=2.0, ge=0, le=1e4)
    gain_adu_per_e: float | None = Field(default=None, gt=0, le=1e4,
                                         description="ADU per electron; None: 0.5 at 8 bit, 8 at 16 bit")
    offset_adu: float | None = Field(default=None, ge=0, le=65535, description="None: 10 at 8 bit, 100 at 16 bit")
    bit_depth: Literal[8, 16] = 8
    drift_um_per_s: tuple[float, float] = (0.0, 0.0)
    n_substeps: int = Field(default=8, ge=1, le=1000)
    noise: bool = Field(default=True, description="False: the expected image, rounded (no shot or read noise)")
    seed: int = Field(default=0, ge=0, lt=2**63)

    @field_validator("drift_um_per_s")
    @classmethod
    def _finite_drift(cls, v):
        if not all(math.isfinite(x) and abs(x) < 1e6 for x in v):
            raise ValueError("drift_um_per_s must be two finite numbers (µm/s)")
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.exposure_s > (1.0 / self.fps) * (1 + 1e-9):
            raise ValueError(f"exposure_s={self.exposure_s} is longer than the frame interval "
                             f"1/fps={1.0 / self.fps:.6g} s")
        return self

    # resolved values -------------------------------------------------------
    @property
    def viscosity(self) -> float:
        """Viscosity in mPa·s (given, or water at ``temperature_c``)."""
        if self.viscosity_mpas is not None:
            return float(self.viscosity_mpas)
        return float(water_viscosity_mpas(self.temperature_c))

    @property
    def gain(self) -> float:
        """ADU per photo-electron actually used."""
        if self.gain_adu_per_e is not None:
            return float(self.gain_adu_per_e)
        return 0.5 if self.bit_depth == 8 else 8.0

    @property
    def offset(self) -> float:
        """Camera offset in ADU actually used."""
        if self.offset_adu is not None:
            return float(self.offset_adu)
        return 10.0 if self.bit_depth == 8 else 100.0

    def acquisition(self) -> Acquisition:
        """The acquisition metadata an analysis of this video should use."""
        return Acquisition(pixel_size_um=self.pixel_size_um, fps=self.fps, exposure_s=self.exposure_s,
                           temperature_c=self.temperature_c, viscosity_mpas=round(self.viscosity, 6))


PRESETS: dict[str, dict[str, Any]] = {
    "beads100": {"components": [{"diameter_nm": 100.0, "cv": 0.03, "refractive_index": 1.59}]},
    "beads200": {"components": [{"diameter_nm": 200.0, "cv": 0.03, "refractive_index": 1.59}],
                 "concentration_per_ml": 1e8},
    "bimodal": {"components": [{"fraction": 0.5, "diameter_nm": 100.0, "cv": 0.03, "refractive_index": 1.59},
                               {"fraction": 0.5, "diameter_nm": 200.0, "cv": 0.03, "refractive_index": 1.59}]},
    # EVs scatter ~20× less than PS of the same size (n = 1.39): an operator raises the camera level.
    "ev": {"components": [{"distribution": "lognormal", "median_nm": 110.0, "gsd": 1.45, "refractive_index": 1.39}],
           "photons_ref": 60000.0, "concentration_per_ml": 5e8},
}


def load_simulation_config(path: str | Path, **overrides: Any) -> SimulationConfig:
    """Read a :class:`SimulationConfig` from TOML (top-level keys or a ``[simulation]`` table).

    ``overrides`` (e.g. from CLI flags) replace the file's values. Every
    problem is raised as :class:`~exonta.errors.ExontaInputError`.
    """
    from .config import load_toml

    data = load_toml(path)
    if "simulation" in data:
        sim = data["simulation"]
        if not isinstance(sim, dict):
            raise ExontaInputError(f"[simulation] in {path} must be a table")
        extra = set(data) - {"simulation"}
        if extra:
            raise ExontaInputError(f"unknown section {sorted(extra)[0]!r} in {path}; put every setting under "
                                   f"[simulation]")
        data = dict(sim)
    data.update(overrides)
    try:
        return SimulationConfig(**data)
    except ValidationError as exc:
        raise ExontaInputError(format_validation_error(exc, str(path))) from None


def preset_config(name: str, **overrides: Any) -> SimulationConfig:
    """A :class:`SimulationConfig` from a named preset (see ``PRESETS``) plus overrides."""
    if name not in PRESETS:
        raise ExontaInputError(f"unknown simulation preset {name!r}; choose one of {', '.join(PRESETS)}")
    data = dict(PRESETS[name])
    data.update(overrides)
    try:
        return SimulationConfig(**data)
    except ValidationError as exc:
        raise ExontaInputError(format_validation_error(exc, f"simulation preset {name!r}")) from None


# ---------------------------------------------------------------------------
# results


@dataclass
class SimulatedChunk:
    """Consecutive frames of a simulated video with their truth rows."""

    start_frame: int
    frames: np.ndarray
    truth: pd.DataFrame


@dataclass
class SimulatedVideo:
    """A simulated video and its ground truth.

    Attributes
    ----------
    frames : ndarray, (n_frames, height, width), uint8 or uint16
    truth : DataFrame
        One row per particle of the simulated box per frame (``TRUTH_COLUMNS``):
        ``x, y`` (px) exposure-mean positions, ``x_start, y_start`` positions at
        the start of the exposure, ``z_um`` mean depth, ``photons`` expected
        photons in that frame, ``in_field`` whether ``x, y`` is inside the image.
    acquisition : exonta.config.Acquisition
    config : SimulationConfig
    true_concentration_per_ml : float
        Particles in the box divided by its volume.
    info : dict
        Derived numbers (box, z extent, particle count, photons, camera ...).
    """

    frames: np.ndarray
    truth: pd.DataFrame
    acquisition: Acquisition
    config: SimulationConfig
    true_concentration_per_ml: float
    info: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# setup


def _sigma_px(config: SimulationConfig, z_um):
    return config.psf_sigma_um * np.sqrt(1.0 + (np.asarray(z_um) / config.depth_of_field_um) ** 2) \
        / config.pixel_size_um


def _auto_z_half_um(config: SimulationConfig) -> float:
    """Half depth beyond which even the brightest particle is lost in the noise."""
    bright = 0.0
    for comp in config.components:
        d_hi = comp.diameter_range_nm()[1]
        bright = max(bright, config.photons_ref * relative_scattering(d_hi, comp.refractive_index,
                                                                      config.medium_refractive_index))
    noise = math.sqrt(config.background_photons * (1 - config.background_gradient) + config.read_noise_e ** 2)
    noise = max(noise, 1.0)
    s = config.sheet_sigma_um
    z = np.linspace(0.0, 12.0 * s, 4801)
    sig = _sigma_px(config, z)
    centre = np.vectorize(math.erf)(0.5 / (math.sqrt(2.0) * sig)) ** 2
    peak = bright * np.exp(-z**2 / (2 * s * s)) * centre
    above = np.nonzero(peak >= 0.2 * noise)[0]
    z_need = float(z[above[-1] + 1]) if above.size and above[-1] + 1 < z.size else (
        float(z[-1]) if above.size else 0.0)
    return float(min(max(z_need, 2.0 * s), 12.0 * s))


def _background_map(config: SimulationConfig) -> np.ndarray:
    h, w = config.height_px, config.width_px
    bg = np.full((h, w), float(config.background_photons))
    g = config.background_gradient
    if g > 0:
        xr = np.linspace(-1.0, 1.0, w)[None, :]
        yr = np.linspace(-1.0, 1.0, h)[:, None]
        bg = bg * (1.0 + g * (0.8 * xr + 0.2 * (1.0 - 2.0 * yr**2)))
    return bg


def _poisson_table(lam: float) -> tuple[np.ndarray, np.ndarray]:
    """CDF of Poisson(lam) over k = 0..kmax and its guide table."""
    if lam <= 0:
        cdf = np.array([1.0])
    else:
        kmax = int(lam + 14.0 * math.sqrt(lam) + 30)
        from scipy.special import gammaln

        k = np.arange(kmax + 1, dtype=float)
        cdf = np.cumsum(np.exp(-lam + k * math.log(lam) - gammaln(k + 1.0)))
        cdf /= cdf[-1]
    return cdf, _guide(cdf)


def _guide(cdf: np.ndarray) -> np.ndarray:
    n = 4 * cdf.size
    guide = np.searchsorted(cdf, np.arange(n) / n, side="left").astype(np.int64)
    return np.minimum(guide, cdf.size - 1)


def _adu_table(lam: float, gain: float, read: float, offset: float, max_adu: float):
    """Exact distribution of the ADU value of a pixel with Poisson(lam) electrons only."""
    from scipy.special import ndtr

    cdf_k, _ = _poisson_table(lam)
    pmf = np.diff(np.concatenate([[0.0], cdf_k]))
    k = np.arange(pmf.size, dtype=float)
    keep = pmf > 1e-18
    pmf, k = pmf[keep], k[keep]
    lo = max(0, int(math.floor(gain * (k[0] - 10.0 * read) + offset - 1)))
    hi = min(int(max_adu), int(math.ceil(gain * (k[-1] + 10.0 * read) + offset + 1)))
    lo = min(lo, hi)
    a = np.arange(lo, hi + 1, dtype=float)
    upper = (a + 0.5 - offset) / gain
    lower = (a - 0.5 - offset) / gain
    if hi == int(max_adu):
        upper[-1] = np.inf
    if lo == 0:
        lower[0] = -np.inf
    if read > 0:
        prob = ndtr((upper[:, None] - k[None, :]) / read) - ndtr((lower[:, None] - k[None, :]) / read)
    else:
        prob = ((k[None, :] >= lower[:, None]) & (k[None, :] < upper[:, None])).astype(float)
    p = prob @ pmf
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return a, cdf, _guide(cdf)


def _pad_rows(rows: list[np.ndarray], fill_last: bool, dtype) -> np.ndarray:
    width = max(r.size for r in rows)
    out = np.empty((len(rows), width), dtype=dtype)
    for i, r in enumerate(rows):
        out[i, :r.size] = r
        out[i, r.size:] = r[-1] if fill_last else 1.0
    return out


class _CameraTables:
    """Sampling tables of the camera kernel for a (possibly uneven) background.

    The background map is split into at most 64 levels ``λ_q = λ_min + q·step``
    (step ≥ 0.1 photons) plus a remainder ``bg_rest ∈ [0, step)`` per pixel;
    each level has the exact CDF of ``Poisson(λ_q)`` and, when affordable, of
    the final ADU value of a pure-background pixel (shot + read noise, gain,
    offset, rounding, clipping) so that most pixels cost one table look-up.
    """

    min_step = 0.1
    max_levels = 64
    max_table_cells = 20_000_000

    def __init__(self, bg_map: np.ndarray, gain: float, read: float, offset: float, max_adu: float, dtype):
        lo = float(bg_map.min())
        span = float(bg_map.max()) - lo
        self.step = max(self.min_step, span / (self.max_levels - 1))
        n_levels = int(math.floor(span / self.step)) + 1 if span > 0 else 1
        levels = lo + self.step * np.arange(n_levels)
        if n_levels == 1:
            self.level = np.zeros(bg_map.shape, dtype=np.int64)
        else:
            self.level = np.clip(np.floor((bg_map - lo) / self.step), 0, n_levels - 1).astype(np.int64)
        self.bg_rest = np.maximum(bg_map - levels[self.level], 0.0)
        self.bg_p0 = np.exp(-self.bg_rest)
        base = [_poisson_table(lam)[0] for lam in levels]
        self.base_cdf = _pad_rows(base, False, np.float64)
        self.base_guide = np.stack([_guide(r) for r in self.base_cdf])
        # exact ADU tables where they are affordable (always for ordinary backgrounds)
        spread_adu = gain * (2 * 9 * math.sqrt(levels[-1] + 1) + 20 * read) + 3
        spread_k = 2 * 9 * math.sqrt(levels[-1] + 1) + 1
        ok = spread_adu * spread_k * n_levels <= self.max_table_cells
        self.adu_ok = np.full(n_levels, ok, dtype=np.bool_)
        if ok:
            adu = [_adu_table(lam, gain, read, offset, max_adu) for lam in levels]
        else:
            adu = [(np.array([0.0]), np.array([1.0]), None)] * n_levels
        self.adu_cdf = _pad_rows([a[1] for a in adu], False, np.float64)
        self.adu_values = _pad_rows([a[0] for a in adu], True, np.float64).astype(dtype)
        self.adu_guide = np.stack([_guide(r) for r in self.adu_cdf])
        self.levels = levels


def _frame_seed(seed: int, frame: int) -> np.uint64:
    """SplitMix64 finaliser of (seed, frame): an independent camera stream per frame."""
    mask = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + (frame + 1) * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return np.uint64(z ^ (z >> 31))


class _Simulator:
    """Holds the derived setup and the particle state; yields chunks in order."""

    def __init__(self, config: SimulationConfig):
        c = self.config = config
        px = c.pixel_size_um
        self.dt = 1.0 / c.fps
        self.eta = c.viscosity
        comps = c.components
        d_lo = min(comp.diameter_range_nm()[0] for comp in comps)
        d_max = diffusion_from_diameter(max(d_lo, 1.0), c.temperature_c, self.eta)
        self.z_half = float(c.z_half_um) if c.z_half_um is not None else _auto_z_half_um(c)
        vmax = math.hypot(*c.drift_um_per_s)
        self.margin_um = (6.0 * float(_sigma_px(c, self.z_half)) * px + 6.0 * math.sqrt(2 * d_max * self.dt)
                          + vmax * self.dt + 1.0)
        self.box_x = (-0.5 * px - self.margin_um, (c.width_px - 0.5) * px + self.margin_um)
        self.box_y = (-0.5 * px - self.margin_um, (c.height_px - 0.5) * px + self.margin_um)
        self.lx = self.box_x[1] - self.box_x[0]
        self.ly = self.box_y[1] - self.box_y[0]
        vol_um3 = self.lx * self.ly * 2 * self.z_half
        n_exp = c.concentration_per_ml * vol_um3 * 1e-12
        if n_exp > _MAX_PARTICLES:
            raise ExontaInputError(
                f"the simulated volume would hold {n_exp:.3g} particles (more than {_MAX_PARTICLES}); "
                f"lower concentration_per_ml or the frame size")
        self.n = int(round(n_exp))
        self.volume_ml = vol_um3 * 1e-12
        self.true_concentration = self.n / self.volume_ml

        rng0 = np.random.default_rng([c.seed, 0])
        frac = np.array([comp.fraction for comp in comps], dtype=float)
        self.component = rng0.choice(len(comps), size=self.n, p=frac / frac.sum()).astype(np.int64) \
            if len(comps) > 1 else np.zeros(self.n, dtype=np.int64)
        self.diameter = np.empty(self.n)
        self.ri = np.empty(self.n)
        for i, comp in enumerate(comps):
            sel = self.component == i
            self.diameter[sel] = comp.sample_diameters_nm(rng0, int(sel.sum()))
            self.ri[sel] = comp.refractive_index
        self.D = np.asarray(diffusion_from_diameter(self.diameter, c.temperature_c, self.eta), dtype=float)
        self.photons0 = c.photons_ref * np.asarray(
            relative_scattering(self.diameter, self.ri, c.medium_refractive_index), dtype=float)
        self.pos = np.column_stack([
            rng0.uniform(*self.box_x, self.n), rng0.uniform(*self.box_y, self.n),
            rng0.uniform(-self.z_half, self.z_half, self.n)]) if self.n else np.zeros((0, 3))
        self.ids = np.arange(self.n, dtype=np.int64)
        self.next_id = self.n
        self.rng_motion = np.random.default_rng([c.seed, 1])
        self.frame = 0

        # time grid of one frame: half sub-interval, n-1 sub-intervals (samples after each), then the rest
        ns = c.n_substeps
        tau = c.exposure_s / ns
        rest = self.dt - c.exposure_s + 0.5 * tau
        m = max(1, int(math.ceil(rest / (self.dt / ns) - 1e-9)))
        self.steps = np.array([0.5 * tau] + [tau] * (ns - 1) + [rest / m] * m)
        self.n_samples = ns

        # camera
        self.bg_map = _background_map(c)
        self.max_adu = float(2 ** c.bit_depth - 1)
        self.dtype = np.uint8 if c.bit_depth == 8 else np.uint16
        self.tables = _CameraTables(self.bg_map, c.gain, c.read_noise_e, c.offset, self.max_adu, self.dtype)

    # ------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        c = self.config
        field_area_um2 = c.width_px * c.height_px * c.pixel_size_um ** 2
        comp_stats = []
        for i, comp in enumerate(c.components):
            sel = self.component == i
            d = self.diameter[sel]
            comp_stats.append({
                "component": i, "n_particles": int(sel.sum()),
                "distribution": comp.distribution, "refractive_index": comp.refractive_index,
                "diameter_mean_nm": float(d.mean()) if d.size else None,
                "diameter_median_nm": float(np.median(d)) if d.size else None,
                "diameter_sd_nm": float(d.std(ddof=1)) if d.size > 1 else None,
                "photons_at_median": float(c.photons_ref * relative_scattering(
                    comp.median if comp.distribution == "lognormal" else comp.diameter_nm,
                    comp.refractive_index, c.medium_refractive_index)),
            })
        return {
            "n_particles": self.n,
            "box_um": [self.lx, self.ly, 2 * self.z_half],
            "box_origin_um": [self.box_x[0], self.box_y[0], -self.z_half],
            "margin_um": self.margin_um,
            "z_half_um": self.z_half,
            "volume_ml": self.volume_ml,
            "field_area_um2": field_area_um2,
            "expected_in_field_per_frame": self.true_concentration * field_area_um2 * 2 * self.z_half * 1e-12,
            "expected_within_sheet_sigma_per_frame":
                self.true_concentration * field_area_um2 * 2 * min(c.sheet_sigma_um, self.z_half) * 1e-12,
            "viscosity_mpas": self.eta,
            "gain_adu_per_e": c.gain,
            "offset_adu": c.offset,
            "blur_coefficient": c.exposure_s * c.fps / 6.0,
            "blur_coefficient_truth": c.exposure_s * c.fps / 6.0 * (1.0 - 1.0 / c.n_substeps ** 2),
            "components": comp_stats,
        }

    # ------------------------------------------------------------------
    def _advance(self, n_frames: int):
        """Move the particles through ``n_frames`` frames; returns samples and bookkeeping."""
        c = self.config
        n = self.n
        ns = self.n_samples
        samples = np.empty((n_frames, ns, n, 3))
        start = np.empty((n_frames, n, 2))
        ids = np.empty((n_frames, n), dtype=np.int64)
        vx, vy = c.drift_um_per_s
        sq = np.sqrt(2.0 * self.D)
        zh = self.z_half
        pos = self.pos
        for f in range(n_frames):
            # periodic wrap at the frame start; a wrapped particle is a new one
            wx = (pos[:, 0] < self.box_x[0]) | (pos[:, 0] >= self.box_x[1])
            wy = (pos[:, 1] < self.box_y[0]) | (pos[:, 1] >= self.box_y[1])
            wrapped = wx | wy
            if wrapped.any():
                pos[:, 0] = self.box_x[0] + np.mod(pos[:, 0] - self.box_x[0], self.lx)
                pos[:, 1] = self.box_y[0] + np.mod(pos[:, 1] - self.box_y[0], self.ly)
                k = int(wrapped.sum())
                self.ids[wrapped] = self.next_id + np.arange(k)
                self.next_id += k
            ids[f] = self.ids
            start[f] = pos[:, :2]
            noise = self.rng_motion.standard_normal((self.steps.size, n, 3))
            for i, h in enumerate(self.steps):
                pos += (sq * math.sqrt(h))[:, None] * noise[i]
                pos[:, 0] += vx * h
                pos[:, 1] += vy * h
                z = pos[:, 2]
                if zh > 0:
                    zz = np.mod(z + zh, 4 * zh)
                    pos[:, 2] = np.where(zz > 2 * zh, 4 * zh - zz, zz) - zh
                if i < ns:
                    samples[f, i] = pos
        self.frame += n_frames
        return samples, start, ids

    def chunk(self, n_frames: int) -> SimulatedChunk:
        from ._simkernels import _camera, _render_spots

        c = self.config
        px = c.pixel_size_um
        f0 = self.frame
        samples, start, ids = self._advance(n_frames)
        ns = self.n_samples
        h, w = c.height_px, c.width_px
        frames = np.empty((n_frames, h, w), dtype=self.dtype)
        sheet = np.exp(-samples[..., 2] ** 2 / (2.0 * c.sheet_sigma_um ** 2))  # (f, ns, n)
        ph_sub = sheet * (self.photons0 / ns)[None, None, :]
        sig_sub = _sigma_px(c, samples[..., 2])
        signal = np.zeros((h, w))
        for f in range(n_frames):
            signal[:] = 0.0
            if self.n:
                _render_spots(signal, np.ascontiguousarray(samples[f, :, :, 0].ravel() / px),
                              np.ascontiguousarray(samples[f, :, :, 1].ravel() / px),
                              np.ascontiguousarray(sig_sub[f].ravel()), np.ascontiguousarray(ph_sub[f].ravel()),
                              _RENDER_MAX_SIGMAS, _RENDER_EPS_PHOTONS)
            if c.noise:
                tb = self.tables
                _camera(signal, tb.level, tb.bg_rest, tb.bg_p0, tb.base_cdf, tb.base_guide, tb.adu_ok,
                        tb.adu_values, tb.adu_cdf, tb.adu_guide, c.gain, c.read_noise_e, c.offset, self.max_adu,
                        _frame_seed(c.seed, f0 + f), frames[f])
            else:
                frames[f] = np.clip(np.floor(c.gain * (signal + self.bg_map) + c.offset + 0.5), 0, self.max_adu)

        nrow = n_frames * self.n
        mean = samples.mean(axis=1)  # (f, n, 3)
        x = mean[..., 0].ravel() / px
        y = mean[..., 1].ravel() / px
        truth = pd.DataFrame({
            "frame": np.repeat(np.arange(f0, f0 + n_frames, dtype=np.int64), self.n),
            "particle": ids.ravel(),
            "x": x,
            "y": y,
            "x_start": start[..., 0].ravel() / px,
            "y_start": start[..., 1].ravel() / px,
            "z_um": mean[..., 2].ravel(),
            "diameter_nm": np.tile(self.diameter, n_frames),
            "refractive_index": np.tile(self.ri, n_frames),
            "component": np.tile(self.component, n_frames),
            "photons": ph_sub.sum(axis=1).ravel(),
            "in_field": (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5),
            "D_um2_s": np.tile(self.D, n_frames),
        }, index=pd.RangeIndex(nrow))
        return SimulatedChunk(start_frame=f0, frames=frames, truth=truth)


def iter_simulated_chunks(config: SimulationConfig, chunk_frames: int = 64) -> Iterator[SimulatedChunk]:
    """Generate a simulated video lazily, ``chunk_frames`` frames at a time.

    The concatenated output is identical to :func:`simulate` with the same
    config, whatever ``chunk_frames`` is, so arbitrarily long videos can be
    made in bounded memory.

    Parameters
    ----------
    config : SimulationConfig
    chunk_frames : int
        Frames per chunk (≥ 1).

    Yields
    ------
    SimulatedChunk
        ``start_frame``, ``frames`` (k, h, w) and the ``truth`` rows of those frames.
    """
    if not isinstance(config, SimulationConfig):
        raise ExontaInputError("iter_simulated_chunks needs a SimulationConfig")
    if int(chunk_frames) < 1:
        raise ExontaInputError(f"chunk_frames must be at least 1, got {chunk_frames}")
    sim = _Simulator(config)
    done = 0
    while done < config.n_frames:
        k = min(int(chunk_frames), config.n_frames - done)
        yield sim.chunk(k)
        done += k


def simulate(config: SimulationConfig | None = None, **overrides: Any) -> SimulatedVideo:
    """Simulate an NTA video with ground truth.

    Parameters
    ----------
    config : SimulationConfig, optional
        Defaults to ``SimulationConfig()``.
    **overrides
        Field values replacing those of ``config`` (validated).

    Returns
    -------
    SimulatedVideo

    Examples
    --------
    >>> sim = simulate(SimulationConfig(n_frames=10, width_px=64, height_px=64))  # doctest: +SKIP
    >>> sim.frames.shape, sim.truth.columns[:4].tolist()  # doctest: +SKIP
    ((10, 64, 64), ['frame', 'particle', 'x', 'y'])
    """
    config = _with_overrides(config, overrides)
    sim = _Simulator(config)
    frames = np.empty((config.n_frames, config.height_px, config.width_px), dtype=sim.dtype)
    truths = []
    done = 0
    chunk = max(1, min(config.n_frames, 64))
    while done < config.n_frames:
        k = min(chunk, config.n_frames - done)
        ch = sim.chunk(k)
        frames[done:done + k] = ch.frames
        truths.append(ch.truth)
        done += k
    truth = pd.concat(truths, ignore_index=True) if len(truths) > 1 else truths[0]
    info = sim.info()
    info["mean_in_field_per_frame"] = float(truth["in_field"].sum()) / config.n_frames
    return SimulatedVideo(frames=frames, truth=truth, acquisition=config.acquisition(), config=config,
                          true_concentration_per_ml=sim.true_concentration, info=info)


def _with_overrides(config: SimulationConfig | None, overrides: dict[str, Any]) -> SimulationConfig:
    if config is None:
        config = SimulationConfig()
    elif not isinstance(config, SimulationConfig):
        raise ExontaInputError("simulate needs a SimulationConfig (see exonta.simulate.SimulationConfig)")
    if overrides:
        try:
            config = SimulationConfig(**{**config.model_dump(), **overrides})
        except ValidationError as exc:
            raise ExontaInputError(format_validation_error(exc, "simulation settings")) from None
    return config


# ---------------------------------------------------------------------------
# writing


def _tmp_path(final: Path) -> Path:
    """A unique temporary name next to ``final`` keeping its suffix (writers pick the format from it)."""
    return final.with_name(f".{final.stem}.{uuid.uuid4().hex[:12]}.tmp{final.suffix}")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = _tmp_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))


def _sidecar_text(config: SimulationConfig, name: str) -> str:
    acq = config.acquisition()
    lines = [f"# acquisition metadata of the simulated video {name} (written by exonta simulate)",
             "[acquisition]"]
    for key in ("pixel_size_um", "fps", "exposure_s", "temperature_c"):
        lines.append(f"{key} = {_toml_value(float(getattr(acq, key)))}")
    if config.viscosity_mpas is not None:
        lines.append(f"viscosity_mpas = {_toml_value(float(config.viscosity_mpas))}")
    return "\n".join(lines) + "\n"


def _truth_summary(config: SimulationConfig, truth: pd.DataFrame, info: dict[str, Any],
                   true_conc: float, formats: Sequence[str]) -> dict[str, Any]:
    n_frames = config.n_frames
    in_field = truth["in_field"].to_numpy()
    within = in_field & (np.abs(truth["z_um"].to_numpy()) <= config.sheet_sigma_um)
    return {
        "true_concentration_per_ml": true_conc,
        "nominal_concentration_per_ml": config.concentration_per_ml,
        "n_particles_in_box": int(info["n_particles"]),
        "n_particle_ids": int(truth["particle"].nunique()),
        "n_frames": n_frames,
        "mean_in_field_per_frame": float(in_field.sum()) / n_frames,
        "mean_in_field_within_sheet_sigma_per_frame": float(within.sum()) / n_frames,
        "expected_in_field_per_frame": info["expected_in_field_per_frame"],
        "expected_within_sheet_sigma_per_frame": info["expected_within_sheet_sigma_per_frame"],
        "components": info["components"],
        "info": {k: v for k, v in info.items() if k != "components"},
        "acquisition": config.acquisition().model_dump(mode="json"),
        "config": config.model_dump(mode="json"),
        "formats": list(formats),
        "truth_columns": list(TRUTH_COLUMNS),
        "coordinates": "px; x = column, y = row, origin at the centre of the top-left pixel",
    }


def write_simulation(sim: SimulatedVideo | SimulationConfig, out_dir: str | Path, name: str,
                     formats: Sequence[str] = ("tif", "avi"), chunk_frames: int = 256,
                     compression: str | None = None) -> dict[str, Path]:
    """Write a simulated video, its acquisition sidecar and its ground truth.

    Parameters
    ----------
    sim : SimulatedVideo or SimulationConfig
        A video in memory, or a config: then the video is generated chunk by
        chunk while it is written (bounded memory for long videos).
    out_dir : path
        Created if missing.
    name : str
        File stem: ``<name>.tif`` (OME-TIFF, PhysicalSizeX/Y in µm and
        TimeIncrement in s), ``<name>.avi`` (uncompressed 8-bit grayscale at
        ``fps``; skipped for 16-bit videos), ``<name>.exonta.toml`` (sidecar with
        the ``[acquisition]`` table), ``<name>.truth.parquet`` and
        ``<name>.truth.json``.
    formats : sequence of {"tif", "avi"}
    chunk_frames : int
        Frames generated at a time when ``sim`` is a config.
    compression : str, optional
        TIFF compression (e.g. ``"zlib"``) for small files; uncompressed by
        default so readers can memory-map the file.

    Returns
    -------
    dict
        Kind (``"tif"``, ``"avi"``, ``"sidecar"``, ``"truth_parquet"``,
        ``"truth_json"``) → path. The truth JSON lists a note under ``notes`` when
        the AVI was skipped.

    Notes
    -----
    Every file is written under a temporary name in ``out_dir`` and moved into
    place with :func:`os.replace`.
    """
    import tifffile

    from .io.results import write_parquet

    fmts = [f.strip().lower().lstrip(".") for f in formats if f.strip()]
    fmts = ["tif" if f == "tiff" else f for f in fmts]
    bad = [f for f in fmts if f not in ("tif", "avi")]
    if bad:
        raise ExontaInputError(f"unknown video format {bad[0]!r}; use tif and/or avi")
    if not name or any(ch in name for ch in "/\\") or name in (".", ".."):
        raise ExontaInputError(f"invalid simulation name {name!r}: give a plain file stem such as 'beads100'")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExontaInputError(f"cannot create output folder {out}: {exc.strerror}") from None

    if isinstance(sim, SimulatedVideo):
        config = sim.config
        simulator = None
        info = dict(sim.info)
        true_conc = sim.true_concentration_per_ml
    elif isinstance(sim, SimulationConfig):
        config = sim
        simulator = _Simulator(config)
        info = simulator.info()
        true_conc = simulator.true_concentration
    else:
        raise ExontaInputError("write_simulation needs a SimulatedVideo or a SimulationConfig")

    notes: list[str] = []
    if "avi" in fmts and config.bit_depth != 8:
        notes.append("AVI skipped: 8-bit AVI cannot hold a 16-bit video; use the TIFF")
        fmts = [f for f in fmts if f != "avi"]

    paths: dict[str, Path] = {}
    tmps: dict[str, Path] = {}
    truths: list[pd.DataFrame] = []
    writer = None
    try:
        if "avi" in fmts:
            import cv2

            tmps["avi"] = _tmp_path(out / f"{name}.avi")
            writer = cv2.VideoWriter(str(tmps["avi"]), 0, float(config.fps), (config.width_px, config.height_px),
                                     isColor=False)
            if not writer.isOpened():
                raise ExontaInputError(f"OpenCV cannot write an AVI file in {out}; use --format tif")

        def frames_iter():
            if simulator is None:
                for fr in sim.frames:
                    if writer is not None:
                        writer.write(np.ascontiguousarray(fr))
                    yield fr
                return
            done = 0
            while done < config.n_frames:
                k = min(int(chunk_frames), config.n_frames - done)
                ch = simulator.chunk(k)
                truths.append(ch.truth)
                for fr in ch.frames:
                    if writer is not None:
                        writer.write(np.ascontiguousarray(fr))
                    yield fr
                done += k

        shape = (config.n_frames, config.height_px, config.width_px)
        dtype = np.uint8 if config.bit_depth == 8 else np.uint16
        if "tif" in fmts:
            tmps["tif"] = _tmp_path(out / f"{name}.tif")
            tifffile.imwrite(tmps["tif"], data=frames_iter(), shape=shape, dtype=dtype, ome=True,
                             photometric="minisblack", compression=compression,
                             metadata={"axes": "TYX", "PhysicalSizeX": config.pixel_size_um,
                                       "PhysicalSizeXUnit": "µm", "PhysicalSizeY": config.pixel_size_um,
                                       "PhysicalSizeYUnit": "µm", "TimeIncrement": 1.0 / config.fps,
                                       "TimeIncrementUnit": "s"})
        else:
            for _ in frames_iter():
                pass
        if writer is not None:
            writer.release()
            writer = None

        if simulator is None:
            truth = sim.truth
        else:
            truth = pd.concat(truths, ignore_index=True) if truths else pd.DataFrame(columns=list(TRUTH_COLUMNS))
            info["mean_in_field_per_frame"] = float(truth["in_field"].sum()) / config.n_frames
        tmps["truth_parquet"] = _tmp_path(out / f"{name}.truth.parquet")
        write_parquet(truth, tmps["truth_parquet"])

        for kind, final in (("tif", out / f"{name}.tif"), ("avi", out / f"{name}.avi"),
                            ("truth_parquet", out / f"{name}.truth.parquet")):
            if kind in tmps:
                os.replace(tmps.pop(kind), final)
                paths[kind] = final

        summary = _truth_summary(config, truth, info, true_conc, fmts)
        summary["notes"] = notes
        summary["files"] = {k: p.name for k, p in paths.items()}
        paths["sidecar"] = out / f"{name}.exonta.toml"
        _atomic_write_text(paths["sidecar"], _sidecar_text(config, name))
        paths["truth_json"] = out / f"{name}.truth.json"
        _atomic_write_text(paths["truth_json"], json.dumps(summary, indent=2, default=_json_default) + "\n")
    finally:
        if writer is not None:
            writer.release()
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
    return paths


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
