"""The one analysis entry point: video → detections → tracks → sizes → concentration.

Every front-end (CLI, napari plugin, batch, reports) calls :func:`analyze` (and
:func:`prepare` to open a video and resolve its configuration).

Data flow::

    video ──detect──▶ features ──track──▶ tracks (drift removed)
          ──diffusion──▶ particles ──distribution / concentration──▶ Result

Progress is reported through an optional callback ``progress(done, total,
stage)`` with ``total == 1000`` for the whole analysis; when it returns
``False`` the analysis stops with :class:`~exonta.errors.ExontaCancelled`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import platform
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from . import __version__
from .config import EXPOSURE_ASSUMED_WARNING, AnalysisConfig, load_config, resolve_acquisition
from .errors import ExontaCancelled, ExontaInputError
from .io.results import SUMMARY_SCHEMA, config_to_toml, finite_or_none, result_name, write_result_dir

if TYPE_CHECKING:
    from .config import Acquisition
    from .detect.polarity import PolarityEstimate

__all__ = ["Result", "analyze", "prepare", "ProgressCallback", "measure_polarity", "resolve_auto_invert",
           "resolve_auto_psf", "resolve_auto_size_range"]

ProgressCallback = Callable[[int, int, str], "bool | None"]

# share of the overall progress bar per stage (sums to 1000)
_STAGES = {"open": (0, 20), "detect": (20, 780), "link": (800, 80), "diffusion": (880, 30),
           "distribution": (910, 70), "concentration": (980, 20)}


class _StageProgress:
    """Map per-stage (done, total) to one overall 0..1000 scale and honour cancellation."""

    def __init__(self, callback: ProgressCallback | None):
        self.callback = callback

    def __call__(self, done: int, total: int, stage: str) -> bool:
        if self.callback is None:
            return True
        start, width = _STAGES.get(stage, (0, 0))
        frac = 0.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
        ok = self.callback(int(start + frac * width), 1000, stage)
        if ok is False:
            raise ExontaCancelled("analysis cancelled")
        return True

    def stage(self, stage: str) -> "Callable[[int, int, str], bool]":
        return lambda done, total, _s=None: self(done, total, stage)


@dataclass
class Result:
    """Everything one analysis produced (tables, distribution, concentration, provenance)."""

    input: dict[str, Any]
    config: AnalysisConfig
    features: pd.DataFrame
    tracks: pd.DataFrame
    particles: pd.DataFrame
    distribution: Any
    concentration: Any
    drift: Any
    warnings: list[str] = field(default_factory=list)
    acquisition_sources: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    auto_parameters: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    #: The acquisition of the analysed frames: ``config.acquisition`` (the file's), with ``fps`` the rate of the
    #: distinct pictures when repeated frames were left out (``input["repeated_frames"]``; the ``frame`` column of
    #: the tables then numbers the distinct frames, ``video_frame`` the file's).
    analysis_acquisition: Any = None

    def __post_init__(self) -> None:
        if self.analysis_acquisition is None:
            self.analysis_acquisition = self.config.acquisition

    @property
    def name(self) -> str:
        """Default result-folder name: the video's file name without extension."""
        return result_name(self.input.get("path") or "video")

    @property
    def size_table(self) -> pd.DataFrame:
        """The size-distribution table, with ``concentration_per_ml`` per bin when known."""
        table = self.distribution.table.copy()
        per_bin = getattr(self.concentration, "per_bin_per_ml", None)
        table["concentration_per_ml"] = (np.asarray(per_bin, dtype=float) if per_bin is not None
                                         and len(per_bin) == len(table) else np.nan)
        return table

    def summary(self) -> dict[str, Any]:
        """The ``summary.json`` content (schema ``exonta.summary/1``)."""
        acq = self.config.acquisition
        valid = self.particles["valid"] if "valid" in self.particles else pd.Series([], dtype=bool)
        from .detect.repeats import analysed_frame_count

        n_frames = analysed_frame_count({"n_frames": 0, **self.input})
        conc = self.concentration
        stats = dict(getattr(self.distribution, "stats", {}) or {})
        size = {k: stats.get(k) for k in ("mean", "mode", "sd", "d10", "d50", "d90")}
        size.update({k: v for k, v in stats.items() if k not in size})
        drift_v = getattr(self.drift, "velocity_um_per_s", (0.0, 0.0))
        return {
            "schema": SUMMARY_SCHEMA,
            "exonta_version": __version__,
            "created": self.created,
            "input": dict(self.input),
            "acquisition": acq.model_dump(mode="json"),
            "acquisition_sources": dict(self.acquisition_sources),
            "parameters": self.config.parameters_dict(),
            "parameters_hash": self.config._auto.get("requested_parameters_hash") or self.config.parameters_hash(),
            "counts": {
                "n_frames": n_frames,
                "n_detections": int(len(self.features)),
                "n_tracks": int(self.tracks["particle"].nunique()) if len(self.tracks) else 0,
                "n_valid_tracks": int(valid.sum()),
                "mean_particles_per_frame": float(getattr(conc, "mean_particles_per_frame", np.nan)),
            },
            "size_nm": size,
            "concentration_per_ml": {
                "value": getattr(conc, "value_per_ml", None),
                "ci95_low": getattr(conc, "ci95_low_per_ml", None),
                "ci95_high": getattr(conc, "ci95_high_per_ml", None),
                **dict(getattr(conc, "details", {}) or {}),
            },
            "drift_um_per_s": [float(drift_v[0]), float(drift_v[1])],
            "drift_se_um_per_s": [float(v) for v in
                                  getattr(self.drift, "velocity_se_um_per_s", (math.nan, math.nan))],
            "drift_smoothing_frames": int(getattr(self.drift, "smoothing_frames", 1)),
            "auto_parameters": dict(self.auto_parameters),
            "warnings": list(self.warnings),
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
            "platform": {"python": platform.python_version(), "machine": platform.machine()},
        }

    def write(self, out_dir: str | Path, name: str | None = None) -> Path:
        """Write the result folder ``out_dir/<name>`` atomically; return its path."""
        from .analysis.distribution import plot_size_distribution

        acq = self.config.acquisition
        summary = self.summary()
        size_table = self.size_table
        tables = {"acquisition": acq.model_dump(mode="json")}
        for section, values in self.config.parameters_dict().items():
            tables[section] = values
        toml_text = config_to_toml(tables, header=f"exonta {__version__} configuration used for {self.input.get('path')}")
        drift_df = getattr(self.drift, "drift_px", None)
        title = f"{self.name} — mode {_fmt(summary['size_nm'].get('mode'))} nm, D50 {_fmt(summary['size_nm'].get('d50'))} nm"
        writers: dict[str, Any] = {
            "summary.json": summary,
            "features.parquet": self.features,
            "tracks.parquet": self.tracks,
            "particles.csv": self.particles,
            "size_distribution.csv": size_table,
            "size_distribution.png": lambda p: plot_size_distribution(self.distribution, p, title=title),
            "config.toml": toml_text,
        }
        if isinstance(drift_df, pd.DataFrame):
            writers["drift.csv"] = drift_df
        return write_result_dir(out_dir, name or self.name, writers)


def _fmt(v: Any) -> str:
    try:
        return f"{float(v):.0f}"
    except (TypeError, ValueError):
        return "n/a"


class _Checksum:
    """SHA-256 of the input computed in a background (daemon) thread.

    Files are hashed as stored (:meth:`exonta.io.Video.sha256`, equal to
    ``sha256sum``); a path-less video by :func:`_sha256_chunks`. hashlib
    releases the GIL, so the hash runs beside linking and sizing, which use
    one core. :meth:`result` waits and re-raises the thread's error. A
    daemon thread never holds up the exit of a cancelled or failed run.
    """

    def __init__(self, vid: Any, n_frames: int, height: int, width: int):
        self._value: str | None = None
        self._error: BaseException | None = None

        def work() -> None:
            try:
                if getattr(vid, "path", None):
                    self._value = vid.sha256()
                else:  # streamed: an in-memory or generated video is never materialised whole for its hash
                    self._value = _sha256_chunks(vid, n_frames, height, width)
            except BaseException as exc:  # handed to result()
                self._error = exc

        self._thread = threading.Thread(target=work, name="exonta-checksum", daemon=True)
        self._thread.start()

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return str(self._value)


def _sha256_chunks(vid: Any, n_frames: int, height: int, width: int) -> str:
    """SHA-256 of a path-less video: its (n, h, w) shape, dtype and frame bytes, streamed chunk by chunk."""
    h = hashlib.sha256()
    h.update(str((n_frames, height, width)).encode())
    h.update(str(np.dtype(vid.dtype)).encode())
    for _, chunk in vid.iter_chunks(64):
        h.update(np.ascontiguousarray(np.asarray(chunk, dtype=vid.dtype)).tobytes())
    return h.hexdigest()


def prepare(
    video: Any,
    config_file: str | Path | None = None,
    acquisition: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    invert: bool | None = None,
) -> tuple[Any, AnalysisConfig, list[str], dict[str, str]]:
    """Open a video and resolve its complete configuration.

    Parameters
    ----------
    video : path or Video
        A video path (TIFF, AVI/MP4/MOV, image folder) or an opened Video.
    config_file : path, optional
        TOML file with ``[acquisition]``, ``[detect]``, ``[link]``, ``[sizing]``,
        ``[concentration]`` tables.
    acquisition : dict, optional
        Explicit acquisition values (highest precedence), e.g. from CLI flags.
    overrides : dict, optional
        Explicit analysis parameters, ``{"detect": {"threshold_snr": 6}}``.
    invert : bool, optional
        Dark particles on a light background (bright-field); overrides the config.

    Returns
    -------
    video, config, warnings, acquisition_sources
    """
    from .io import open_video

    overrides = dict(overrides or {})
    if invert is not None:
        overrides.setdefault("detect", {})
        overrides["detect"] = {**overrides["detect"], "invert": bool(invert)}
    if isinstance(video, (str, Path)):
        path = Path(video)
        if not path.exists():
            raise ExontaInputError(f"video not found: {path}")
        vid = open_video(path)
    else:
        vid = video
        path = Path(getattr(vid, "path", "") or "")
    _load_kernels_in_background(getattr(vid, "dtype", None))
    cfg, warnings, sources = load_config(
        video_path=path if str(path) not in ("", ".") else None,
        config_file=config_file,
        explicit_acquisition=acquisition,
        overrides=overrides,
        file_metadata=dict(getattr(vid, "metadata", {}) or {}),
    )
    sample = _FrameSample(vid)
    cfg, w = resolve_auto_invert(vid, cfg, sample)
    warnings = list(warnings) + w
    cfg = resolve_saturation_level(vid, cfg, sample)
    cfg = resolve_auto_psf(vid, cfg, sample)
    cfg = resolve_noise_floor(vid, cfg)
    cfg, w = resolve_overlays(vid, cfg, sample)
    warnings += w
    return vid, cfg, warnings, sources


def _load_kernels_in_background(dtype: Any) -> None:
    """Load the detection kernels for ``dtype`` (:func:`exonta.detect.locate.load_kernels`), then the
    size-distribution kernels (:func:`exonta.analysis.distribution.load_kernels`, 0.03–0.15 s once
    numba is set up, otherwise paid at the distribution stage), in a daemon thread.

    Numba's compiler lock makes this safe beside other kernel calls; errors are ignored (a real
    detection or sizing call reports them). The module is imported here, in the caller's thread: while the
    caller goes on importing the rest of ``exonta.detect``, a second thread importing the same
    package can deadlock inside the import system, which then hands one of the two a half-initialised
    module (seen once as an "internal error": cannot import name 'COLUMNS' from partially initialized
    module 'exonta.detect.locate').
    """
    if dtype is None:
        return
    from .analysis import _distkernels, distribution  # noqa: F401 - imported here, not in the thread
    from .detect.locate import load_kernels

    def work() -> None:
        try:
            load_kernels(dtype)
            distribution.load_kernels()
        except Exception:  # noqa: BLE001 - the detection or the sizing itself reports any real problem
            pass

    threading.Thread(target=work, name="exonta-load-kernels", daemon=True).start()


# --- automatic acquisition-dependent parameters (spot width, size range) ----------------------
#: Keep the configured spot width when the measured one is within this factor of it: a matched
#: filter of the wrong width by a factor ρ keeps 2ρ/(1 + ρ²) of the SNR (87 % at 1.7), and the
#: configured default is the one validated on NTA videos, whose motion-blurred and defocused spots
#: measure wider than the PSF: 1.7–1.9 px for a 1.5 px PSF, 2.3 px with bright 200 nm beads in the
#: field (at a factor 1.5 that switched the 100 + 200 nm mixture to a 2.3 px filter and moved its
#: number fractions from 48/52 to 38/62 %). Micron beads measure ≥ 1.8× the default.
PSF_KEEP_FACTOR = 1.7
_PSF_SAMPLE_FRAMES = 4
_PSF_BACKGROUND_FRAMES = 16
_PSF_MAX_SIDE_PX = 512
# margin (px) of the overlay boxes blanked in the frame sample of the polarity and spot-width measurements
_OVERLAY_SAMPLE_PAD_PX = 8


def _requested(cfg: AnalysisConfig) -> dict[str, Any]:
    """``cfg._auto`` with the hash of the parameters as requested (before any automatic value).

    ``summary.json`` ``parameters_hash`` is that hash: the automatic values are a deterministic
    function of the input and the requested parameters, so (input SHA-256, requested hash) is a
    valid cache / resume key (``exonta batch`` computes it without opening the video).
    """
    return {"requested_parameters_hash": cfg.parameters_hash(), **cfg._auto}


def _psf_explicit(cfg: AnalysisConfig) -> bool:
    return "psf_sigma_px" in cfg.detect.model_fields_set or not cfg.detect.auto_psf


# Second linking pass only when the sample's own search radius is clearly (here 10 %) below the physics
# one: a smaller change would not remove junk links measurably and costs a second linking pass.
RELINK_FACTOR = 0.9


class _FrameSample:
    """The frames that the automatic polarity and spot width are measured on, read once, on first use.

    ``_PSF_BACKGROUND_FRAMES`` frames spread over the video, a central crop of at most
    ``_PSF_MAX_SIDE_PX`` px square; ``background`` = their temporal median (None for fewer than 5
    frames); ``frames`` = ``_PSF_SAMPLE_FRAMES`` of them, evenly spread.
    """

    def __init__(self, video: Any) -> None:
        self.video = video
        self._data: tuple[np.ndarray, np.ndarray | None] | None = None
        self._overlay: Any = None

    def _read(self) -> None:
        from .detect.background import _median_stack, sample_indices
        from .detect.overlay import OverlayCounts, find_overlay_regions

        video = self.video
        n = int(video.n_frames)
        h, w = (int(v) for v in video.frame_shape)
        y0 = max(0, (h - _PSF_MAX_SIDE_PX) // 2)
        x0 = max(0, (w - _PSF_MAX_SIDE_PX) // 2)
        crop = (slice(y0, y0 + _PSF_MAX_SIDE_PX), slice(x0, x0 + _PSF_MAX_SIDE_PX))
        idx = sample_indices(0, n, _PSF_BACKGROUND_FRAMES)
        counts = OverlayCounts.for_shape((h, w), getattr(video, "dtype", np.uint8))
        crops = []
        with_colour = hasattr(video, "read_with_colour")
        for i in idx:
            frame, rgb = video.read_with_colour(int(i)) if with_colour else (video.read(int(i)), None)
            frame = np.asarray(frame)
            counts.add(frame, rgb)  # the whole frame: overlays sit at its edges and corners
            crops.append(frame[crop])
        stack = np.stack(crops)
        bg = _median_stack(stack) if len(idx) >= 5 else None
        if bg is not None:
            # burned-in text or a scale bar would pass for spots of the polarity and spot-width measurements
            # (thin, bright strokes): inside the overlay boxes the sample is set to its median
            for bx0, by0, bx1, by1 in find_overlay_regions(counts, _OVERLAY_SAMPLE_PAD_PX).boxes:
                ya, yb = max(by0 - y0, 0), max(min(by1 - y0, stack.shape[1]), 0)
                xa, xb = max(bx0 - x0, 0), max(min(bx1 - x0, stack.shape[2]), 0)
                if ya < yb and xa < xb:
                    stack[:, ya:yb, xa:xb] = bg[ya:yb, xa:xb].astype(stack.dtype)
        m = min(_PSF_SAMPLE_FRAMES, idx.size)
        pick = idx.size * (np.arange(m) * 2 + 1) // (2 * m)
        self._data = (stack[pick], bg)
        self._overlay = counts

    def get(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self._data is None:
            self._read()
        return self._data

    def overlay_counts(self) -> Any:
        """Per-pixel counts of the camera's extreme levels over the whole sampled frames
        (:class:`exonta.detect.overlay.OverlayCounts`)."""
        if self._overlay is None:
            self._read()
        return self._overlay


def _invert_explicit(cfg: AnalysisConfig) -> bool:
    return "invert" in cfg.detect.model_fields_set


def measure_polarity(video: Any, sample: _FrameSample | None = None) -> PolarityEstimate | None:
    """:func:`exonta.detect.polarity.estimate_polarity` of the video's frame sample (a few frames
    spread over it, central crop; the napari reader uses it to preset "dark particles"); None when
    the frames cannot be measured."""
    from .detect.polarity import estimate_polarity

    frames, bg = (sample or _FrameSample(video)).get()
    try:
        return estimate_polarity(frames, background=bg)
    except ExontaInputError:
        return None


def resolve_auto_invert(video: Any, cfg: AnalysisConfig,
                        sample: _FrameSample | None = None) -> tuple[AnalysisConfig, list[str]]:
    """Decide from the video whether its particles are dark on a light background (bright-field)
    when ``detect.invert`` was not given (:func:`exonta.detect.polarity.estimate_polarity`).

    Returns the configuration with ``detect.invert`` set (explicit from then on: a second call does
    nothing) and the warnings to show: one when the particles were found dark, since the analysis
    then differs from the default. An undecided measurement (no clear particle of either sign)
    keeps the default, bright particles. The measurement is recorded in ``cfg._auto``
    (``summary.json`` ``auto_parameters["invert"]``). A given ``invert`` (``--invert`` /
    ``--no-invert``, ``[detect] invert`` in a configuration file) is used as it is.
    """
    from .detect import polarity as P

    if _invert_explicit(cfg):
        return cfg, []
    est = measure_polarity(video, sample)
    dark = bool(est is not None and est.dark)
    out = cfg.model_copy(update={"detect": cfg.detect.model_copy(update={"invert": dark})})
    record: dict[str, Any] = {"used": dark, "measured": None if est is None or est.dark is None
                              else ("dark" if est.dark else "bright")}
    if est is not None:
        record.update(bright_strength=round(est.bright_strength, 2), dark_strength=round(est.dark_strength, 2))
    record["method"] = (f"{P.RANK}th strongest local extremum of each sign (satellites of the other sign left out) "
                        f"in the smoothed, background-subtracted frames, robust noise sigmas; dark when >= "
                        f"{P.MIN_STRENGTH:g} and >= {P.DARK_RATIO:g}x the bright one (exonta.detect.polarity)")
    out._auto = {**_requested(cfg), "invert": record}
    warns = []
    if dark:
        warns.append(f"the particles are dark on a light background (bright-field): analysed as dark particles "
                     f"(as with --invert; dark spots {est.dark_strength:.0f}, bright {est.bright_strength:.0f} "
                     f"noise sigmas); pass --no-invert to analyse bright particles")
    return out, warns


def _linking_plausibility(features: pd.DataFrame, particles: pd.DataFrame, acq: Acquisition,
                          config: AnalysisConfig, frame_shape: tuple[int, int]) -> list[str]:
    """A warning when the links cannot form because the search radius is shorter than the spots' motion between
    frames: a pixel size too large or a frame rate too high (:mod:`exonta.analysis.plausibility`)."""
    from .analysis.distribution import enough_for_statistics
    from .analysis.plausibility import linking_radius_warnings
    from .track.link import search_range_px

    valid = particles.loc[particles["valid"].to_numpy(bool)] if "valid" in particles else particles.iloc[:0]
    return linking_radius_warnings(features, search_range_px(acq, config.link), acq.pixel_size_um, acq.fps,
                                   len(valid), config.sizing.min_track_length, frame_shape,
                                   enough_tracks=enough_for_statistics(valid))


def _noise_track_plausibility(tracks: pd.DataFrame, particles: pd.DataFrame, config: AnalysisConfig,
                              d50_nm: Any) -> list[str]:
    """A warning when the sized tracks are chains of noise maxima (:func:`exonta.analysis.plausibility.noise_track_warnings`;
    judged at an automatic threshold only)."""
    from .analysis.plausibility import median_track_snr, noise_track_warnings

    n_valid = int(particles["valid"].sum()) if "valid" in particles else 0
    threshold = config.detect.threshold_snr if config.detect.threshold is None else None
    return noise_track_warnings(median_track_snr(tracks, particles), threshold, n_valid,
                                None if d50_nm is None else float(d50_nm))


def _linking_limit_plausibility(acq: Acquisition, config: AnalysisConfig, d50_nm: Any, noise_tracks: bool,
                                detections_per_frame: float, frame_area_px: float) -> list[str]:
    """A warning when the D50 sits at the smallest diameter the linking radius used follows, or when the detections
    are too dense for that radius (:func:`exonta.analysis.plausibility.linking_limit_warnings`)."""
    from .analysis.plausibility import clutter_index, linking_limit_warnings
    from .track.link import followed_diameter_nm, search_range_px, search_range_um

    clutter = clutter_index(detections_per_frame, frame_area_px, search_range_px(acq, config.link))
    return linking_limit_warnings(None if d50_nm is None else float(d50_nm), followed_diameter_nm(acq, config.link),
                                  noise_tracks, clutter, search_range_um(acq, config.link))


def _spot_plausibility(acq: Acquisition, config: AnalysisConfig, d50_nm: Any) -> list[str]:
    """A warning when the spot width contradicts the pixel size: spots narrower than optics allow, or far wider than
    the optics and the particles' sizes explain (:mod:`exonta.analysis.plausibility`). The width is the measured
    one when the video's was measured (none when that failed: the default is no statement about the video), else
    the one given."""
    from .analysis.plausibility import spot_width_warnings

    if "psf_sigma_px" in config._auto:
        sigma_px = config._auto["psf_sigma_px"].get("measured")
    else:
        sigma_px = config.detect.psf_sigma_px
    return spot_width_warnings(None if sigma_px is None else float(sigma_px), acq.pixel_size_um,
                               None if d50_nm is None else float(d50_nm))


def resolve_auto_psf(video: Any, cfg: AnalysisConfig, sample: _FrameSample | None = None) -> AnalysisConfig:
    """Measure the spot width of ``video`` (:func:`exonta.detect.psf.estimate_psf_sigma`) and return
    the configuration with ``detect.psf_sigma_px`` set to it (``auto_psf`` false from then on).

    Does nothing when the width was given (``psf_sigma_px`` set explicitly, or ``auto_psf``
    false). The measured value is recorded in ``cfg._auto`` (``summary.json`` ``auto_parameters``).
    Frames: ``_PSF_SAMPLE_FRAMES`` spread over the video, a central crop of at most 512×512 px,
    background = temporal median of ``_PSF_BACKGROUND_FRAMES`` frames.
    """
    from .detect.psf import estimate_psf_sigma

    if _psf_explicit(cfg):
        return cfg
    frames, bg = (sample or _FrameSample(video)).get()
    try:
        est = estimate_psf_sigma(frames, background=bg, invert=cfg.detect.invert,
                                 saturation_level=cfg.detect.saturation_level)
    except ExontaInputError:
        est = None
    configured = float(cfg.detect.psf_sigma_px)
    measured = None if est is None else est.sigma_px
    use = configured
    if measured is not None and not (configured / PSF_KEEP_FACTOR <= measured <= configured * PSF_KEEP_FACTOR):
        use = float(min(max(round(measured, 2), 0.31), 20.0))
    detect = cfg.detect.model_copy(update={"psf_sigma_px": use, "auto_psf": False})
    out = cfg.model_copy(update={"detect": detect})
    out._auto = {**_requested(cfg), "psf_sigma_px": {
        "measured": None if measured is None else round(float(measured), 3),
        "n_spots": 0 if est is None else int(est.n_spots), "used": use,
        "method": "scale-normalised LoG maximum (Lindeberg 1998), 25th percentile of spots"}}
    return out


#: Pixel noise floor (raw units) of lossily compressed frames: the rounding noise of integer values, 1/sqrt(12).
LOSSY_NOISE_FLOOR = 1.0 / math.sqrt(12.0)


def resolve_saturation_level(video: Any, cfg: AnalysisConfig, sample: _FrameSample | None = None) -> AnalysisConfig:
    """Set ``detect.saturation_level`` when it was not given and the video's integer data stop at ``2^bits − 1``
    below their type's largest value (:func:`exonta.detect.overlay.clipping_level`: a 12-bit camera in 16-bit
    words clips at 4095). Otherwise it stays unset: the type's largest value. Recorded in ``cfg._auto``.

    Without it a 12-bit camera's clipped spots were not known as clipped: their flat tops went into the fits, a
    clipped region could give several candidates, and the concentration's clipped-spot rules did not apply
    (simulated 200 nm beads, 8-bit, rewritten as 12-bit in 16-bit words: concentration +10 %, 70 instead of 82
    valid tracks).
    """
    if cfg.detect.saturation_level is not None or "saturation_level" in cfg.detect.model_fields_set:
        return cfg  # given, or measured already (prepare(); None then marks "the type's largest value")
    level = None
    if np.dtype(getattr(video, "dtype", np.uint8)).kind in "ui":
        from .detect.overlay import clipping_level

        counts = (sample or _FrameSample(video)).overlay_counts()
        level = clipping_level(counts)
    if level is None:
        return cfg.model_copy(update={"detect": cfg.detect.model_copy(update={"saturation_level": None})})
    out = cfg.model_copy(update={"detect": cfg.detect.model_copy(update={"saturation_level": level})})
    out._auto = {**_requested(cfg), "saturation_level": {
        "used": level, "sampled_frames": int(counts.n_frames), "pixels_at_level": int(counts.n_at_max),
        "method": "the sampled frames' brightest value is 2^bits - 1 below the integer type's largest value "
                  "(a camera with fewer bits than its words clips there)"}}
    return out


def resolve_noise_floor(video: Any, cfg: AnalysisConfig) -> AnalysisConfig:
    """Set ``detect.noise_floor`` when it was not given: :data:`LOSSY_NOISE_FLOOR` for a video whose frames
    were stored with lossy compression (``video.lossy``), 0 otherwise.

    A camera's frames have at least the rounding noise of their integer values; a codec can flatten a dark
    background below it (H.264 left 0.06 grey levels at the 10th percentile of a fluorescence movie whose
    Motion JPEG version had 0.33), and faint compression artefacts there then pass any threshold in noise
    sigmas (a flagged 36 nm junk peak at 14 sigma, session 16). The value used is recorded in
    ``cfg._auto``.
    """
    if cfg.detect.noise_floor is not None:
        return cfg
    lossy = getattr(video, "lossy", None)
    floor = round(LOSSY_NOISE_FLOOR, 6) if lossy else 0.0
    out = cfg.model_copy(update={"detect": cfg.detect.model_copy(update={"noise_floor": floor})})
    if lossy:
        out._auto = {**_requested(cfg), "noise_floor": {
            "used": floor, "compression": lossy,
            "method": "rounding noise of integer pixel values (1/sqrt(12)) as the smallest pixel noise of "
                      "lossily compressed frames"}}
    return out


def overlay_counts(video: Any, sample: _FrameSample | None = None) -> Any:
    """Per-pixel counts of the camera's white and black levels over ``_PSF_BACKGROUND_FRAMES`` whole
    frames spread over the video (:class:`exonta.detect.overlay.OverlayCounts`): what
    :func:`overlay_regions` finds burned-in overlays in. Read once per video; the napari preview keeps
    it per layer."""
    return (sample or _FrameSample(video)).overlay_counts()


def overlay_regions(counts: Any, psf_sigma_px: float) -> tuple[Any, int]:
    """The burned-in overlays in ``counts`` (:func:`overlay_counts`) as boxes widened by
    ``pad = ceil(3·psf_sigma_px) + 2`` px (a spot centred further out does not reach them), and that pad:
    ``(exonta.detect.overlay.OverlayRegions, pad)``."""
    from .detect.overlay import find_overlay_regions

    pad = int(math.ceil(3.0 * float(psf_sigma_px))) + 2
    return find_overlay_regions(counts, pad), pad


def with_excluded_regions(detect: Any, boxes: Any) -> Any:
    """``detect`` (:class:`exonta.config.DetectParams`) with ``boxes`` (``(x0, y0, x1, y1)`` px) added to
    its ``exclude_regions`` (those already there are kept, none twice) and ``exclude_overlays`` false (the
    overlays are resolved)."""
    regions = list(detect.exclude_regions)
    regions += [b for b in (tuple(int(v) for v in box) for box in boxes) if b not in regions]
    return detect.model_copy(update={"exclude_regions": regions, "exclude_overlays": False})


def resolve_overlays(video: Any, cfg: AnalysisConfig,
                     sample: _FrameSample | None = None) -> tuple[AnalysisConfig, list[str]]:
    """Find burned-in overlays (time stamps, frame counters, scale bars; :mod:`exonta.detect.overlay`)
    when ``detect.exclude_overlays`` is set, and return the configuration with their boxes added to
    ``detect.exclude_regions`` (``exclude_overlays`` false from then on: a second call does nothing)
    and the warnings to show. The measurement is recorded in ``cfg._auto`` (``summary.json``
    ``auto_parameters["overlays"]``). Frames: ``_PSF_BACKGROUND_FRAMES`` whole frames spread over the
    video.
    """
    from .detect import overlay as O

    if not cfg.detect.exclude_overlays:
        return cfg, []
    counts = overlay_counts(video, sample)
    found, pad = overlay_regions(counts, cfg.detect.psf_sigma_px)
    out = cfg.model_copy(update={"detect": with_excluded_regions(cfg.detect, found.boxes)})
    out._auto = {**_requested(cfg), "overlays": {
        "boxes": [list(b) for b in found.boxes], "area_fraction": round(found.area_fraction, 4),
        "too_large": found.too_large, "n_pixels": found.n_pixels, "n_frames": counts.n_frames,
        "method": (f"pixels at the camera's white or black level (or, in colour sources, in a saturated colour: a "
                   f"channel >= {O.COLOUR_TOP:g} of the white level, channels spread by >= {O.CHROMA_LEVEL:g} "
                   f"of the range) in >= {O.MIN_FRAME_FRACTION:g} of the sampled frames, grouped, boxes widened "
                   f"by {pad} px (exonta.detect.overlay)")}}
    warns = []
    if found.boxes:
        where = "; ".join(f"x {x0}-{x1}, y {y0}-{y1}" for x0, y0, x1, y1 in found.boxes[:4])
        more = f" and {len(found.boxes) - 4} more" if len(found.boxes) > 4 else ""
        warns.append(f"burned-in overlay (text or graphics at the camera's white/black level or in colour, e.g. a "
                     f"time stamp or scale bar) found and excluded from the analysis: {where}{more} px "
                     f"({100 * found.area_fraction:.1f} % of the field, left out of the concentration's area too); "
                     "set [detect] exclude_overlays = false to keep it")
    elif found.too_large:
        warns.append(f"{100 * found.area_fraction:.0f} % of the field is at the camera's white or black level in many "
                     "frames (clipped illumination?): not excluded as an overlay; check the exposure")
    return out, warns


#: Relative agreement of a given frame rate with the distinct pictures' rate in the file for it to be taken as
#: the camera's (:func:`resolve_repeated_frames`).
CAMERA_RATE_MATCH = 0.02


def _given_rate_differs(given_fps: float, source: str | None, container_fps: float | None) -> bool:
    """Whether a frame rate the user gave (``source`` not the file) differs from the one the movie states by
    more than :data:`CAMERA_RATE_MATCH`."""
    return (container_fps is not None and container_fps > 0 and source not in (None, "file", "default")
            and abs(given_fps / container_fps - 1.0) > CAMERA_RATE_MATCH)


def frame_rate_warnings(given_fps: float, source: str | None, container_fps: float | None,
                        repeats_record: dict[str, Any] | None = None) -> list[str]:
    """A warning when a frame rate given by the user differs from the movie's own by more than
    :data:`CAMERA_RATE_MATCH` and is not explained as the camera's rate of a file with repeated frames
    (:func:`resolve_repeated_frames`): sizes scale with the rate, so one of the two is wrong."""
    if not _given_rate_differs(given_fps, source, container_fps) or (repeats_record or {}).get("camera_rate_given"):
        return []
    return [f"the frame rate given ({given_fps:g} frames/s) differs from the one the movie states ({container_fps:g} "
            "frames/s) and is used; diffusion, and so the sizes, scale with it: check which one the camera ran at"]


def _at_rate(acquisition: Any, sources: dict[str, str] | None, fps: float) -> Any:
    """``acquisition`` at ``fps``; an exposure that was assumed equal to the frame interval
    (``sources["exposure_s"] == "default"``) follows the new interval."""
    update: dict[str, Any] = {"fps": fps}
    if (sources or {}).get("exposure_s") == "default":
        update["exposure_s"] = 1.0 / fps
    return acquisition.model_copy(update=update)


def resolve_repeated_frames(features: pd.DataFrame, changes: Any, acquisition: Any,
                            sources: dict[str, str] | None = None,
                            container_fps: float | None = None) -> tuple[pd.DataFrame, Any, dict[str, Any] | None,
                                                                         list[str]]:
    """Leave out the frames that repeat the frame before (:mod:`exonta.detect.repeats`).

    Parameters
    ----------
    features : DataFrame
        Detections of every frame (``frame`` = the file's index).
    changes : FrameChanges or ndarray
        Each frame's change from the one before (``locate_frames(..., frame_changes=)``).
    acquisition : Acquisition
        The file's acquisition.
    sources : dict, optional
        Where each acquisition value came from: an exposure that was assumed equal to the frame interval
        (``"default"``) becomes the distinct pictures' interval.
    container_fps : float, optional
        The frame rate the file itself states. A rate given by the user (``sources["fps"]`` not
        ``"file"``) is the file's, unless it differs from the container's and matches the distinct
        pictures' rate in the container (within :data:`CAMERA_RATE_MATCH`): then the user gave the
        camera's rate (a 30 frames/s camera in a 60 frames/s file), and the distinct pictures are
        analysed at it.

    Returns
    -------
    features : DataFrame
        Without the repeated frames' detections, ``frame`` numbering the distinct frames and ``video_frame``
        the file's; unchanged without repeats.
    acquisition : Acquisition
        With ``fps`` the distinct pictures' rate (unchanged without repeats).
    record : dict or None
        ``input["repeated_frames"]`` of the result (None without repeats).
    warnings : list of str
    """
    from .detect.repeats import confirm_near_repeats, drop_repeated, find_repeated_frames

    values = np.asarray(getattr(changes, "values", changes), float)
    rep = confirm_near_repeats(find_repeated_frames(values), values, features)
    if rep.n_repeated == 0:
        return features, acquisition, None, []
    n_used = rep.n_frames - rep.n_repeated
    given = float(acquisition.fps)
    fps_file, fps = given, given * rep.rate_factor
    camera_rate_given = False
    if (_given_rate_differs(given, (sources or {}).get("fps"), container_fps)
            and abs(given / (container_fps * rep.rate_factor) - 1.0) <= CAMERA_RATE_MATCH):
        fps_file, fps, camera_rate_given = float(container_fps), given, True
    acq = _at_rate(acquisition, sources, fps)
    record = {"n_repeated": rep.n_repeated, "n_frames_analysed": n_used, "fps_file": fps_file,
              "fps_analysed": fps, "regular": rep.regular, "max_offset_frames": round(rep.max_offset_frames, 3),
              "reference_change": round(rep.reference_change, 4), "camera_rate_given": camera_rate_given,
              "method": "a frame that does not change from the frame before (mean absolute difference over every "
                        "4th row), or changes clearly less than the distinct frames (below a gap in the changes "
                        "under 0.45 of their 90th percentile: a lossy codec's version of a repeat, taken when its "
                        "spots did not move), repeats it; the distinct frames are analysed at the rate of a straight "
                        "line through their indices, or at the given frame rate when that is the camera's "
                        "(exonta.detect.repeats)"}
    text = (f"{rep.n_repeated} of {rep.n_frames} frames ({100.0 * rep.n_repeated / rep.n_frames:.0f} %) repeat the "
            f"frame before: the camera delivered fewer pictures than the file's {fps_file:g} frames/s "
            "(pictures written twice, a converted frame rate or dropped frames). They are left out and the "
            f"{n_used} distinct frames analysed at {fps:.4g} frames/s")
    if camera_rate_given:
        text += " (the frame rate given, which is the camera's)"
    if not rep.regular:
        text += (f"; the distinct pictures are not evenly spaced in the file (up to {rep.max_offset_frames:.0f} frames "
                 "off: frames dropped in bursts), so their timing, and the sizes, are less certain")
    return drop_repeated(features, rep), acq, record, [text + " ([detect] drop_repeated_frames = false keeps them)"]


#: Timestamps spanning more than this many times the movie's frames (+ 10 000) are not put on a grid.
_MAX_GRID_FACTOR = 20


def resolve_dropped_frames(features: pd.DataFrame, times_s: np.ndarray | None, acquisition: Any,
                           sources: dict[str, str] | None = None,
                           warn_irregular: bool = True) -> tuple[pd.DataFrame, Any, dict[str, Any] | None,
                                                                 list[str], Any]:
    """Put a movie's frames on the camera's time grid when its timestamps show dropped frames
    (:mod:`exonta.io.timing`).

    Parameters
    ----------
    features : DataFrame
        Detections (``frame`` = the file's index).
    times_s : array or None
        The file's per-frame timestamps (s), e.g. ``OpenCVVideo.frame_times_s()``.
    acquisition : Acquisition
    sources : dict, optional
        Where each acquisition value came from. A frame rate read from the file (``"file"``; for a
        movie with gaps that is the average rate) becomes the timestamps' rate; a rate the user gave is
        kept (a slowed-down export: the camera's rate, the timestamps in the file's time). An exposure
        assumed equal to the frame interval (``"default"``) follows the rate.
    warn_irregular : bool
        Warn when the times sit on no steady grid. False for times that are known to jitter (an OME-TIFF's
        plane times are often the software's arrival times): only a clear grid with gaps is used.

    Returns
    -------
    features : DataFrame
        With ``frame`` the grid index (dropped frames are gaps) and ``video_frame`` the file's index;
        unchanged when no frame is missing.
    acquisition : Acquisition
    record : dict or None
        ``input["dropped_frames"]`` of the result (None when the timing is regular or unknown).
    warnings : list of str
    timing : FrameTiming or None
    """
    from .io.timing import GRID_TOLERANCE, frame_timing

    timing = frame_timing(times_s)
    if timing is None or timing.regular:
        return features, acquisition, None, [], timing
    src = (sources or {}).get("fps")
    if timing.grid is None:
        if not warn_irregular:
            return features, acquisition, None, [], timing
        return features, acquisition, None, [
            f"the movie's timestamps are not evenly spaced (variable frame rate: 5 % of the frames are more than "
            f"{timing.offset_p95:.2f} frame intervals off a steady {timing.fps:.4g} frames/s); its frames are "
            f"analysed as evenly spaced at {float(acquisition.fps):.4g} frames/s, so the sizes are less certain: "
            "record at a constant frame rate for release measurements"], timing
    if timing.n_grid > _MAX_GRID_FACTOR * timing.grid.size + 10_000:
        return features, acquisition, None, [
            f"the movie's timestamps span {timing.n_grid} frames of {timing.fps:.4g} frames/s for its "
            f"{timing.grid.size} frames (a paused recording, or broken timestamps); its frames are analysed as "
            "consecutive: cut the recording at the pause or re-export it at a constant frame rate"], timing
    acq = _at_rate(acquisition, sources, timing.fps) if src in (None, "file", "default") else acquisition
    frame = features["frame"].to_numpy(np.int64)
    out = features.copy()
    out.insert(out.columns.get_loc("frame") + 1, "video_frame", frame)
    out["frame"] = timing.grid[frame]
    n_file = timing.grid.size
    record = {"n_missing": timing.n_missing, "n_frames_file": n_file, "n_frames_grid": timing.n_grid,
              "max_gap": timing.max_gap, "fps_timestamps": round(timing.fps, 6), "fps_analysed": float(acq.fps),
              "offset_p95": round(timing.offset_p95, 4), "missing": timing.missing().tolist(),
              "method": "each frame placed round(dt / interval) grid places after the one before on the "
                        "camera's time grid, the interval the slope of the timestamps against their places; "
                        "dropped frames are gaps "
                        f"that tracking bridges and the diffusion estimators skip (times within {GRID_TOLERANCE} "
                        "of an interval of the grid, 95th percentile; exonta.io.timing)"}
    text = (f"{timing.n_missing} frames are missing from the movie's {timing.n_grid} (gaps in its timestamps, up to "
            f"{timing.max_gap} in a row: the camera or the capture program dropped them). The {n_file} frames are "
            f"analysed at their times on the camera's {timing.fps:.4g} frames/s grid (steps across a gap are not "
            "taken as one frame's); concentration counts the recorded frames")
    if _given_rate_differs(float(acq.fps), src, timing.fps):
        text += (f"; the frame rate given ({float(acq.fps):g} frames/s) is taken as the camera's, the timestamps as "
                 "the file's (a slowed-down or sped-up export)")
    return out, acq, record, [text], timing


#: The short exposure, as a fraction of the frame interval, at which :func:`exposure_sensitivity` sizes again.
SHORT_EXPOSURE_FRACTION = 0.1


def exposure_sensitivity(tracks: pd.DataFrame, acquisition: Any, sizing: Any, distribution: Any,
                         fraction: float = SHORT_EXPOSURE_FRACTION) -> dict[str, Any] | None:
    """What an assumed exposure time does to the sizes: the deconvolved distribution again (no bootstrap) with
    the exposure ``fraction`` × the frame interval instead of ``acquisition.exposure_s``.

    The exposure sets the motion-blur coefficient ``R = t_E/(6Δt)`` (Berglund 2010), which the likelihood needs
    to separate blur from localisation error (displacement covariance ``2RDΔt − σ²``, Vestergaard et al. 2014).
    When the exposure is not known, exonta assumes the whole frame interval (``R = 1/6``, the largest). An
    exposure assumed too short is the worse error: the blur then looks like a negative localisation variance,
    which the fit cannot take (``σ² ≥ 0``), and the particles come out too slow, i.e. too large (simulated
    100 nm beads filmed with 0.6 of the interval: D50 +0.8 % as assumed, +13 % at a tenth). One assumed too long
    makes sizes a few per cent small for bright particles with a much shorter exposure (generated 3 µm
    bright-field beads at 0.05 of the interval: +6.8 % against +2.7 % with the true exposure).

    Returns
    -------
    dict or None
        ``exposure_s`` (assumed), ``short_exposure_s``, ``d50_nm``/``mode_nm`` as reported and
        ``short_d50_nm``/``short_mode_nm``; None without a deconvolved D50.
    """
    from .analysis.diffusion import particle_table
    from .analysis.distribution import size_distribution

    stats = getattr(distribution, "stats", None) or {}
    if finite_or_none(stats.get("d50")) is None or not len(tracks):
        return None
    short = acquisition.model_copy(update={"exposure_s": fraction / float(acquisition.fps)})
    try:
        alt = size_distribution(particle_table(tracks, short, sizing), short,
                                sizing.model_copy(update={"bootstrap": 0}), tracks=tracks)
    except ExontaInputError:  # a diagnostic: the analysis itself stands
        return None
    d50 = alt.stats.get("d50")
    if finite_or_none(d50) is None:
        return None
    return {"exposure_s": float(acquisition.exposure_s), "d50_nm": stats.get("d50"), "mode_nm": stats.get("mode"),
            "short_exposure_s": float(short.exposure_s), "short_d50_nm": d50, "short_mode_nm": alt.stats.get("mode"),
            "method": "deconvolved again (no bootstrap) with the exposure a tenth of the frame interval; the sizes "
                      "depend on the exposure through the motion-blur coefficient R = t_E/(6 dt)"}


def _exposure_warning(s: dict[str, Any]) -> str:
    change = 100.0 * (s["short_d50_nm"] / s["d50_nm"] - 1.0)
    return (f"exposure time not given; assumed equal to the frame interval ({1000 * s['exposure_s']:.3g} ms). "
            f"The sizes depend on it: D50 {s['d50_nm']:.1f} nm as assumed, {s['short_d50_nm']:.1f} nm ({change:+.1f} %) "
            f"with an exposure of a tenth of the interval; give the camera's exposure with --exposure-s")


def resolve_auto_size_range(particles: pd.DataFrame, cfg: AnalysisConfig) -> AnalysisConfig:
    """Extend the size grid upwards for micron-sized particles (``sizing.auto_size_range``).

    When the median ``p50`` of the valid tracks' raw diameters exceeds a quarter of
    ``size_max_nm`` (e.g. 1 µm beads with the default 2 µm maximum), the maximum is doubled ``k``
    times, the smallest ``k`` with ``size_max_nm·2^k ≥ 4·p50``, and bins are added so the bin
    width in log d stays the same (at most 2000 bins). Deciding on the median (not on the noisy
    tail) and doubling (rather than fitting the range to each video) gives replicate videos of
    one sample the same grid, so batch can pool them. The lower end is never changed, and nothing
    changes for NTA videos (median below 500 nm with the default 20–2000 nm grid).
    """
    sz = cfg.sizing
    if not sz.auto_size_range or particles is None or not len(particles) or "diameter_nm" not in particles:
        return cfg
    d = particles["diameter_nm"].to_numpy(float)
    if "valid" in particles:
        d = d[particles["valid"].to_numpy(bool)]
    d = d[np.isfinite(d) & (d > 0)]
    if d.size < 5:
        return cfg
    p50 = float(np.median(d))
    lo, hi = float(sz.size_min_nm), float(sz.size_max_nm)
    if p50 <= hi / 4:
        return cfg
    k = int(min(max(math.ceil(math.log2(4 * p50 / hi)), 1), 10))
    new_hi = hi * 2.0 ** k
    n_bins = int(min(2000, round(sz.n_bins * math.log(new_hi / lo) / math.log(hi / lo))))
    sizing = sz.model_copy(update={"size_max_nm": new_hi, "n_bins": n_bins, "auto_size_range": False})
    out = cfg.model_copy(update={"sizing": sizing})
    out._auto = {**_requested(cfg), "size_range_nm": {"configured": [lo, hi], "used": [lo, new_hi], "n_bins": n_bins,
                                                "track_diameter_median_nm": round(p50, 1)}}
    return out


def _as_video(video: Any):
    from .io import open_video
    from .io.readers import ArrayVideo

    if isinstance(video, (str, Path)):
        return open_video(video)
    if isinstance(video, np.ndarray):
        arr = video if video.ndim == 3 else video[None] if video.ndim == 2 else None
        if arr is None:
            raise ExontaInputError(f"frames must be a (n, height, width) array, got shape {video.shape}")
        return ArrayVideo(arr)
    if hasattr(video, "iter_chunks"):
        return video
    raise ExontaInputError(f"cannot analyse an object of type {type(video).__name__}: give a path or an array")


#: Detection thresholds (noise sigmas) tried in turn by ``DetectParams.auto_threshold``.
AUTO_THRESHOLDS_SNR = (5.0, 7.0)


def _implausible(result: Result) -> list[dict[str, Any]]:
    """The size peaks that make the automatic threshold try a higher one: too bright for their size
    (:func:`~exonta.analysis.distribution.implausible_peaks`, ``d²``) and, in lossily compressed frames
    (``input["lossy_compression"]``: H.264 and other inter-frame codecs, Motion JPEG, JPEG images), also
    for Rayleigh scattering (:func:`~exonta.analysis.distribution.compression_artefact_peaks`, ``d⁶``):
    compression artefacts are a likely source of dim junk there. The 1500-frame 1024² NTA benchmark video
    (101 nm at 5 σ from the TIFF, 98.7 nm at 3.5 σ): as x264 CRF 18 a 27 nm peak of 41 % of the tracks,
    26x dimmer than the 101 nm beads (d² allows it, d⁶ asks 2921x), took the D50 to 66 nm; as Motion JPEG
    a 26 nm junk peak was the only one (D50 26 nm)."""
    from .analysis.distribution import compression_artefact_peaks, implausible_peaks

    peaks = result.distribution.stats.get("peaks") or []
    out = [p for p, *_ in implausible_peaks(peaks)]
    if result.input.get("lossy_compression"):
        out += [p for p, *_ in compression_artefact_peaks(peaks)]
    return out


def _implausible_fraction(result: Result) -> float:
    return float(sum(p["number_fraction"] for p in _implausible(result)))


def _auto_threshold_allowed(config: AnalysisConfig) -> bool:
    d = config.detect
    return bool(d.auto_threshold) and d.threshold is None and "threshold_snr" not in d.model_fields_set


def analyze(
    video: Any,
    config: AnalysisConfig | None = None,
    progress: ProgressCallback | None = None,
    *,
    calibration: Any = None,
    acquisition_sources: dict[str, str] | None = None,
    warnings: list[str] | None = None,
) -> Result:
    """Analyse one NTA video: sizes (Stokes–Einstein from per-track diffusion) and concentration.

    Parameters
    ----------
    video : path, Video or ndarray
        The recording: a path, an opened :class:`exonta.io.Video`, or frames
        as an ``(n_frames, height, width)`` array.
    config : AnalysisConfig, optional
        The complete configuration. When missing and ``video`` is a path, it is
        resolved as :func:`prepare` does (the file's metadata, then the sidecar
        files ``<video>.exonta.toml`` and ``exonta.toml`` beside it), as the CLI,
        napari and batch do. When missing otherwise, or without ``acquisition``,
        the acquisition is taken from the video's own metadata (a clear error
        says what is missing) and the analysis parameters are the defaults.
    progress : callable, optional
        ``progress(done, total, stage) -> bool | None``; return ``False`` to cancel.
    calibration : Calibration or path, optional
        Detection-volume calibration from ``exonta calibrate``; overrides
        ``config.concentration.calibration``.
    acquisition_sources, warnings : optional
        Provenance from :func:`prepare`, carried into the result.

    Returns
    -------
    Result

    Notes
    -----
    Automatic threshold (``DetectParams.auto_threshold``, only when no threshold was given): when
    the size distribution has a peak too bright for its size
    (:func:`exonta.analysis.distribution.implausible_peaks` — on compressed micron-bead videos,
    chains of compression artefacts that size as tens of nm; in lossily compressed frames also
    :func:`~exonta.analysis.distribution.compression_artefact_peaks`, see :func:`_implausible`), the video is
    analysed again at
    :data:`AUTO_THRESHOLDS_SNR` in turn, stopping at the first without such a peak, and the
    analysis whose implausible peaks hold the smallest number fraction is returned (the lower
    threshold on ties). Simulated NTA samples (TIFF) never trigger it.
    """
    if config is None and isinstance(video, (str, Path)):
        # configured as prepare() does (and the CLI, napari and batch): file metadata and sidecar files
        video, config, prepared_warnings, sources = prepare(video)
        warnings = list(warnings or []) + prepared_warnings
        acquisition_sources = acquisition_sources or sources
    config = config if config is not None else AnalysisConfig()
    kw = {"calibration": calibration, "acquisition_sources": acquisition_sources}
    result = _analyze_once(video, config, progress, warnings=warnings, **kw)
    if not _auto_threshold_allowed(config):
        return result
    first = best = result
    best_fraction = _implausible_fraction(result)
    tried = [(float(config.detect.threshold_snr), best_fraction)]
    for snr in AUTO_THRESHOLDS_SNR:
        if tried[-1][1] <= 0.0:
            break
        cfg = config.model_copy(update={"detect": config.detect.model_copy(update={"threshold_snr": snr})})
        cfg._auto = _requested(config)  # the requested hash stays that of the configuration as given
        # the first pass detected at the reference threshold: its detections serve the count of the others
        res = _analyze_once(video, cfg, progress, warnings=warnings, reference=first.features, **kw)
        tried.append((snr, _implausible_fraction(res)))
        if tried[-1][1] < best_fraction:
            best, best_fraction = res, tried[-1][1]
    if len(tried) == 1:
        return result
    used = float(best.config.detect.threshold_snr)
    record = {"requested": tried[0][0], "used": used,
              "tried": [{"threshold_snr": t, "implausible_peak_fraction": round(f, 4)} for t, f in tried],
              "method": "lowest implausible-peak number fraction (peaks too bright for their size, "
                        "exonta.analysis.distribution.implausible_peaks; in lossily compressed frames also too "
                        "bright for Rayleigh scattering, compression_artefact_peaks)"}
    best.config._auto = {**best.config._auto, "threshold_snr": record}
    best.auto_parameters = {k: v for k, v in best.config._auto.items() if k != "requested_parameters_hash"}
    if best is not first:
        peaks = ", ".join(f"{p['diameter_nm']:.0f} nm" for p in _implausible(first))
        best.warnings.insert(0, f"analysed at a detection threshold of {used:g} noise sigmas instead of "
                                f"{tried[0][0]:g}: at {tried[0][0]:g} the size peak(s) at {peaks} were too bright "
                                "for their size (noise or compression artefacts linked into tracks); give "
                                "--threshold-snr to fix the threshold")
    return best


#: Frames (from the first) of the extra detection at the reference threshold that measures the counting noise
#: when the analysis detects at another threshold (:func:`reference_detections`).
REFERENCE_NOISE_FRAMES = 200

def reference_detections(video: Any, detect: Any, background: np.ndarray | None,
                         n_frames: int = REFERENCE_NOISE_FRAMES) -> pd.DataFrame:
    """Detections at the reference threshold
    (:data:`~exonta.analysis.concentration.REFERENCE_THRESHOLD_SNR`) on the first ``n_frames`` frames, with the
    analysis's background, for an analysis detected at another threshold (raised automatically, or given).

    They measure the counting noise σ_F (:func:`~exonta.analysis.concentration.filtered_noise_level`; filter width
    of the calibration when it sets the counting threshold), so that the counting threshold, and the
    concentration, do not depend on the detection threshold
    (:func:`~exonta.analysis.concentration.at_reference_threshold`), and how many of the spots the count needs the
    raised threshold still finds (:func:`~exonta.analysis.concentration.counted_spots_found`).
    """
    from .analysis.concentration import REFERENCE_THRESHOLD_SNR
    from .detect import locate_frames
    from .detect.background import FirstFrames

    ref = detect.model_copy(update={"threshold_snr": REFERENCE_THRESHOLD_SNR, "threshold": None})
    return locate_frames(FirstFrames(video, n_frames), params=ref, background=background)


def _analyze_once(video: Any, config: AnalysisConfig, progress: ProgressCallback | None, *, calibration: Any,
                  acquisition_sources: dict[str, str] | None, warnings: list[str] | None,
                  reference: pd.DataFrame | None = None) -> Result:
    """One analysis at exactly ``config`` (:func:`analyze` adds the automatic threshold). ``reference``: the
    detections of an analysis of the same video at the reference threshold (the automatic threshold's first
    pass), if any (:func:`reference_detections`)."""
    import time

    from .analysis.concentration import (
        COUNT_BELOW_THRESHOLD_WARNING,
        at_reference_threshold,
        estimate_concentration,
        load_calibration,
        saturation_level_of,
    )
    from .analysis.diffusion import particle_table
    from .analysis.distribution import (
        brightness_warnings,
        few_tracks_warning,
        linking_artefact_warnings,
        no_statistics_note,
        size_distribution,
        track_fraction_warnings,
    )
    from .analysis.visibility import detection_limit_summary, detection_limit_warnings
    from .detect import locate_frames
    from .detect.repeats import FrameChanges, analysed_frame_count, frames_on_grid
    from .track import link_features
    from .track.drift import DriftResult, estimate_drift, subtract_drift

    prog = _StageProgress(progress)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    prog(0, 1, "open")
    vid = _as_video(video)
    warnings = list(warnings or []) + list(getattr(vid, "notes", None) or [])
    sources = dict(acquisition_sources or {})
    if config.acquisition is None:
        acq, w, sources = resolve_acquisition(None, None, None, dict(getattr(vid, "metadata", {}) or {}),
                                              getattr(getattr(vid, "path", None), "name", "the video"))
        warnings += w
        config = config.model_copy(update={"acquisition": acq})
    acq = config.acquisition
    sample = _FrameSample(vid)
    config, w_inv = resolve_auto_invert(vid, config, sample)  # no-op when prepare() did it or it was given
    warnings += w_inv
    config = resolve_saturation_level(vid, config, sample)  # no-op when prepare() did it or it was given
    config = resolve_auto_psf(vid, config, sample)  # no-op when prepare() did it or the width was given
    config = resolve_noise_floor(vid, config)  # no-op when prepare() did it or it was given
    config, w_ov = resolve_overlays(vid, config, sample)  # no-op when prepare() did it or it is off
    warnings += w_ov
    n_frames = int(vid.n_frames)
    h, w = (int(s) for s in vid.frame_shape)
    if n_frames < 2:
        raise ExontaInputError(
            f"the video has {n_frames} frame; tracking needs at least 2 frames, and sizing tracks of at least "
            f"{config.sizing.min_track_length}")
    path = getattr(vid, "path", None)
    input_info = {"path": str(path) if path else None, "sha256": None, "n_frames": n_frames, "width": w,
                  "height": h, "dtype": str(np.dtype(vid.dtype)), "format": getattr(vid, "format", "array")}
    if getattr(vid, "codec", ""):
        input_info["codec"] = vid.codec  # a movie's four-character code (provenance: lossy or not)
    if getattr(vid, "lossy", None):
        input_info["lossy_compression"] = vid.lossy
    if n_frames < config.sizing.min_track_length:
        warnings.append(f"the video has only {n_frames} frames, fewer than the minimum track length "
                        f"({config.sizing.min_track_length}); no track can be sized")
    prog(1, 1, "open")
    timings["open"] = time.perf_counter() - t0

    t = time.perf_counter()
    changes = FrameChanges(config.detect.exclude_regions) if config.detect.drop_repeated_frames else None
    detect_info: dict[str, Any] = {}
    features = locate_frames(vid, params=config.detect, progress=prog.stage("detect"), frame_changes=changes,
                             info=detect_info)
    container_fps = (getattr(vid, "metadata", None) or {}).get("fps")
    record = None
    if changes is not None and changes.values.size == n_frames:
        features, acq, record, w_rep = resolve_repeated_frames(features, changes, acq, sources, container_fps)
        if record is not None:
            input_info["repeated_frames"] = record
            warnings += w_rep
    if record is None and hasattr(vid, "frame_times_s"):
        features, acq, dropped, w_drop, timing = resolve_dropped_frames(
            features, vid.frame_times_s(), acq, sources, warn_irregular=getattr(vid, "frame_times_exact", True))
        warnings += w_drop
        if timing is not None and timing.grid is not None:
            container_fps = timing.fps  # the camera's rate, not a file's average over its gaps
        if dropped is not None:
            input_info["dropped_frames"] = dropped
    n_frames, frames_present = frames_on_grid(input_info)  # the same reading as a recomputation from the result
    warnings += frame_rate_warnings(float(config.acquisition.fps), sources.get("fps"), container_fps, record)
    timings["detect"] = time.perf_counter() - t
    # the input checksum (seconds for a long video) runs beside the single-threaded stages that follow
    checksum = _Checksum(vid, int(input_info["n_frames"]), h, w)

    t = time.perf_counter()
    prog(0, 1, "link")
    link_progress = prog.stage("link")
    first_pass = (config.link.model_copy(update={"brightness_log_sd": 0.0})
                  if config.link.brightness_log_sd == "auto" else config.link)
    tracks = link_features(features, acq, first_pass,
                           progress=lambda fraction, _msg: link_progress(int(1000 * fraction), 1000))
    # --- second linking pass: the sample's own search radius (junk links, exonta.track.quality) and, when
    # asked for ("auto"), the brightness term measured on the first pass (crowding, exonta.track.link) ---
    updates: dict[str, Any] = {}
    auto: dict[str, Any] | None = None
    if config.link.sample_search and config.link.search_range_um is None:
        from .track.link import search_range_um
        from .track.quality import sample_search_range_um

        rho_um = sample_search_range_um(tracks, acq, config.link, config.sizing.min_track_length)
        physics_um = search_range_um(acq, config.link)
        relink = rho_um is not None and rho_um < RELINK_FACTOR * physics_um
        used_um = float(round(rho_um, 6)) if relink else round(physics_um, 6)
        record = {"physics": round(physics_um, 6), "sample": None if rho_um is None else round(float(rho_um), 6),
                  "used": used_um,
                  "method": f"quantile {config.link.sample_diffusion_quantile} of the per-track median-step "
                            "diffusion coefficients of a first linking pass; relinked with it when below "
                            f"{RELINK_FACTOR} x the physics radius"}
        auto = {**_requested(config), "search_range_um": record}
        if relink:
            updates["search_range_um"] = used_um
    if config.link.brightness_log_sd == "auto":
        from .track.quality import brightness_log_sd

        measured = brightness_log_sd(tracks, config.sizing.min_track_length)
        updates["brightness_log_sd"] = round(measured, 4) if measured is not None else 0.0
        auto = {**(auto if auto is not None else _requested(config)), "brightness_log_sd": {
            "used": updates["brightness_log_sd"], "measured": None if measured is None else round(measured, 4),
            "method": "robust spread (1.4826 MAD) of the frame-to-frame change of ln(signal) in the tracks of a "
                      "first linking pass; 0 (distance only) without enough steps"}}
    if updates:
        config = config.model_copy(update={"link": config.link.model_copy(update=updates)})
        if "search_range_um" in updates or updates.get("brightness_log_sd", 0.0) > 0:
            tracks = link_features(features, acq, config.link)
    elif auto is not None:
        config = config.model_copy()  # never change the caller's configuration object
    if auto is not None:
        config._auto = auto
    # --- end junk links (second pass) ---
    if config.link.drift_correction and len(tracks):
        drift = estimate_drift(tracks, acq, config.link)
        tracks = subtract_drift(tracks, drift)
    else:  # x_corrected / y_corrected stay equal to x / y
        drift = DriftResult(drift_px=pd.DataFrame({"frame": np.arange(n_frames), "dx_px": 0.0, "dy_px": 0.0}),
                            velocity_um_per_s=(0.0, 0.0))
    # --- junk links (exonta.track.quality): positions one Brownian particle does not explain ---
    from .track.quality import prune_outlier_positions

    tracks = prune_outlier_positions(tracks, config.link)
    # --- end junk links ---
    warnings += list(getattr(drift, "warnings", []) or [])
    prog(1, 1, "link")
    timings["link"] = time.perf_counter() - t

    t = time.perf_counter()
    particles = particle_table(tracks, acq, config.sizing)
    config = resolve_auto_size_range(particles, config)
    linking_warnings = _linking_plausibility(features, particles, acq, config, (h, w))
    warnings += linking_warnings
    prog(1, 1, "diffusion")
    timings["diffusion"] = time.perf_counter() - t

    t = time.perf_counter()
    dist = size_distribution(particles, acq, config.sizing, tracks=tracks, progress=prog.stage("distribution"))
    if sources.get("exposure_s") == "default":
        sensitivity = exposure_sensitivity(tracks, acq, config.sizing, dist)
        if sensitivity is not None:
            dist.stats["exposure_assumed"] = sensitivity
            warnings = [_exposure_warning(sensitivity) if x == EXPOSURE_ASSUMED_WARNING else x for x in warnings]
    if dist.stats.get("method") == "none" and n_frames >= config.sizing.min_track_length:
        note = dist.stats["note"]  # too few valid tracks for size statistics
        if linking_warnings:  # the cause is named there: not "record a longer video"
            note = no_statistics_note(dist.stats["n_tracks_used"], config.sizing.min_track_length,
                                      "the tracks break: see the warning on the linking radius")
        warnings.append(note)
    warnings += few_tracks_warning(dist.stats)
    noise_tracks = _noise_track_plausibility(tracks, particles, config, dist.stats.get("d50"))
    warnings += noise_tracks
    warnings += _linking_limit_plausibility(acq, config, dist.stats.get("d50"), bool(noise_tracks),
                                            len(features) / max(analysed_frame_count(input_info), 1), h * w)
    warnings += _spot_plausibility(acq, config, dist.stats.get("d50"))
    warnings += brightness_warnings(dist.stats.get("peaks") or [])
    warnings += linking_artefact_warnings(dist.stats.get("peaks") or [])
    saturation = saturation_level_of(vid.dtype, config.detect.invert, config.detect.saturation_level)
    limit = detection_limit_summary(features, tracks, dist, acq, config.detect, config.concentration, saturation)
    if limit is not None:
        dist.stats["detection_limit"] = limit
        warnings += detection_limit_warnings(dist.stats)
    prog(1, 1, "distribution")
    timings["distribution"] = time.perf_counter() - t

    t = time.perf_counter()
    cal = calibration if calibration is not None else config.concentration.calibration
    if isinstance(cal, (str, Path)):
        cal = load_calibration(cal)
    if reference is None and not at_reference_threshold(config.detect):
        reference = reference_detections(vid, config.detect, detect_info.get("background"))
    conc = estimate_concentration(
        features=features, tracks=tracks, particles=particles, distribution=dist, acquisition=acq,
        params=config.concentration, detect_params=config.detect, frame_shape=(h, w), n_frames=n_frames,
        calibration=cal, frames_present=frames_present, reference=reference)
    conc_warnings = list(getattr(conc, "warnings", []) or [])
    if noise_tracks:  # the tracked "spots" are noise: not particles fainter than the counting threshold
        conc_warnings = [x for x in conc_warnings if not x.startswith(COUNT_BELOW_THRESHOLD_WARNING)]
    warnings += conc_warnings
    if not ((getattr(conc, "details", None) or {}).get("size_nm") or {}).get("peaks"):
        warnings += track_fraction_warnings(dist.stats.get("peaks") or [])
    prog(1, 1, "concentration")
    timings["concentration"] = time.perf_counter() - t
    t = time.perf_counter()
    input_info["sha256"] = checksum.result()
    timings["checksum_wait"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    # keep order, drop duplicates
    seen: set[str] = set()
    warnings = [x for x in warnings if not (x in seen or seen.add(x))]
    return Result(input=input_info, config=config, features=features, tracks=tracks, particles=particles,
                  distribution=dist, concentration=conc, drift=drift, warnings=warnings,
                  acquisition_sources=sources, timings_s=timings,
                  auto_parameters={k: v for k, v in config._auto.items() if k != "requested_parameters_hash"},
                  analysis_acquisition=acq)
