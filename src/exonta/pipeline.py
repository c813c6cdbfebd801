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
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from . import __version__
from .config import AnalysisConfig, load_config, resolve_acquisition
from .errors import ExontaCancelled, ExontaInputError
from .io.results import SUMMARY_SCHEMA, config_to_toml, result_name, write_result_dir

__all__ = ["Result", "analyze", "prepare", "ProgressCallback"]

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
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

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
        n_frames = int(self.input.get("n_frames", 0))
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
            "parameters_hash": self.config.parameters_hash(),
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
    cfg, warnings, sources = load_config(
        video_path=path if str(path) not in ("", ".") else None,
        config_file=config_file,
        explicit_acquisition=acquisition,
        overrides=overrides,
        file_metadata=dict(getattr(vid, "metadata", {}) or {}),
    )
    return vid, cfg, warnings, sources


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
        The complete configuration. When missing or without ``acquisition``,
        the acquisition is taken from the file's own metadata (a clear error
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
    """
    import time

    from .analysis.concentration import estimate_concentration, load_calibration
    from .analysis.diffusion import particle_table
    from .analysis.distribution import size_distribution
    from .detect import locate_frames
    from .track import link_features
    from .track.drift import DriftResult, estimate_drift, subtract_drift

    prog = _StageProgress(progress)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    prog(0, 1, "open")
    vid = _as_video(video)
    warnings = list(warnings or [])
    sources = dict(acquisition_sources or {})
    if config is None:
        config = AnalysisConfig()
    if config.acquisition is None:
        acq, w, sources = resolve_acquisition(None, None, None, dict(getattr(vid, "metadata", {}) or {}),
                                              getattr(getattr(vid, "path", None), "name", "the video"))
        warnings += w
        config = config.model_copy(update={"acquisition": acq})
    acq = config.acquisition
    n_frames = int(vid.n_frames)
    h, w = (int(s) for s in vid.frame_shape)
    if n_frames < 2:
        raise ExontaInputError(
            f"the video has {n_frames} frame(s); tracking needs at least {config.sizing.min_track_length} frames")
    path = getattr(vid, "path", None)
    if path:
        sha = vid.sha256()
    else:  # streamed: an in-memory or generated video is never materialised whole for its hash
        sha = _sha256_chunks(vid, n_frames, h, w)
    input_info = {"path": str(path) if path else None, "sha256": sha, "n_frames": n_frames, "width": w,
                  "height": h, "dtype": str(np.dtype(vid.dtype)), "format": getattr(vid, "format", "array")}
    if n_frames < config.sizing.min_track_length:
        warnings.append(f"the video has only {n_frames} frames, fewer than the minimum track length "
                        f"({config.sizing.min_track_length}); no track can be sized")
    prog(1, 1, "open")
    timings["open"] = time.perf_counter() - t0

    t = time.perf_counter()
    features = locate_frames(vid, params=config.detect, progress=prog.stage("detect"))
    timings["detect"] = time.perf_counter() - t

    t = time.perf_counter()
    prog(0, 1, "link")
    link_progress = prog.stage("link")
    tracks = link_features(features, acq, config.link,
                           progress=lambda fraction, _msg: link_progress(int(1000 * fraction), 1000))
    if config.link.drift_correction and len(tracks):
        drift = estimate_drift(tracks, acq, config.link)
        tracks = subtract_drift(tracks, drift)
    else:  # x_corrected / y_corrected stay equal to x / y
        drift = DriftResult(drift_px=pd.DataFrame({"frame": np.arange(n_frames), "dx_px": 0.0, "dy_px": 0.0}),
                            velocity_um_per_s=(0.0, 0.0))
    warnings += list(getattr(drift, "warnings", []) or [])
    prog(1, 1, "link")
    timings["link"] = time.perf_counter() - t

    t = time.perf_counter()
    particles = particle_table(tracks, acq, config.sizing)
    prog(1, 1, "diffusion")
    timings["diffusion"] = time.perf_counter() - t

    t = time.perf_counter()
    dist = size_distribution(particles, acq, config.sizing, tracks=tracks, progress=prog.stage("distribution"))
    prog(1, 1, "distribution")
    timings["distribution"] = time.perf_counter() - t

    t = time.perf_counter()
    cal = calibration if calibration is not None else config.concentration.calibration
    if isinstance(cal, (str, Path)):
        cal = load_calibration(cal)
    conc = estimate_concentration(
        features=features, tracks=tracks, particles=particles, distribution=dist, acquisition=acq,
        params=config.concentration, detect_params=config.detect, frame_shape=(h, w), n_frames=n_frames,
        calibration=cal)
    warnings += list(getattr(conc, "warnings", []) or [])
    prog(1, 1, "concentration")
    timings["concentration"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    # keep order, drop duplicates
    seen: set[str] = set()
    warnings = [x for x in warnings if not (x in seen or seen.add(x))]
    return Result(input=input_info, config=config, features=features, tracks=tracks, particles=particles,
                  distribution=dist, concentration=conc, drift=drift, warnings=warnings,
                  acquisition_sources=sources, timings_s=timings)
