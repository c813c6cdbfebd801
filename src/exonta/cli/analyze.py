"""`exonta analyze VIDEO... --out DIR`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import typer

from ._common import EXIT_BAD_INPUT, RichProgress, acquisition_flags, handle_errors, one_line, stderr_is_tty

OPT_PIXEL = typer.Option(None, "--pixel-size-um", help="Pixel size in the sample plane, µm/px: the camera's pixel "
                         "over the total magnification (6.5 µm / 40 = 0.1625). Sizes scale with its square.")
OPT_FPS = typer.Option(None, "--fps", help="Frame rate, frames/s.")
OPT_EXPOSURE = typer.Option(None, "--exposure-s", help="Exposure time per frame, s (default: 1/fps).")
OPT_TEMP = typer.Option(None, "--temperature-c", help="Sample temperature, °C (default 22).")
OPT_VISC = typer.Option(None, "--viscosity-mpas", help="Viscosity, mPa·s (default: water at the temperature).")
OPT_DIL = typer.Option(None, "--dilution", help="Dilution factor of the measured sample (1000 for 1:1000; default 1).")
OPT_CONFIG = typer.Option(None, "--config", help="TOML file with [acquisition], [detect], [link], [sizing], "
                          "[concentration] tables.")
OPT_INVERT = typer.Option(None, "--invert/--no-invert", help="Dark particles on a light background (bright-field) "
                          "or bright ones. Default: measured from the video (a warning says when it finds them dark).")
OPT_CAL = typer.Option(None, "--calibration", help="Detection-volume calibration JSON from `exonta calibrate`.")


def parse_region(text: str) -> tuple[int, int, int, int]:
    """``"X0,Y0,X1,Y1"`` (px) as a tuple of four integers; a clear error otherwise (their order is checked
    by :class:`exonta.config.DetectParams`, as for a region given in a configuration file)."""
    from ..errors import ExontaInputError

    parts = [p.strip() for p in str(text).split(",")]
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise ExontaInputError(f"--exclude-region takes four whole numbers X0,Y0,X1,Y1 (px), got {text!r}")
    return vals


def _fmt(v: Any, spec: str = ".1f") -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return format(f, spec) if math.isfinite(f) else "—"


_SOURCE_NAMES = {"cli": "given", "config": "--config", "sidecar": "sidecar", "file": "file", "default": "assumed"}


def acquisition_line(summary: dict[str, Any]) -> str | None:
    """The acquisition the analysis used, each value with where it came from (``summary.json``
    ``acquisition`` and ``acquisition_sources``): values read from the file or assumed are easy to miss."""
    acq = summary.get("acquisition") or {}
    src = summary.get("acquisition_sources") or {}
    shown = (("pixel_size_um", lambda v: f"{v:g} µm/px"), ("fps", lambda v: f"{v:.4g} frames/s"),
             ("exposure_s", lambda v: f"exposure {1000 * v:.3g} ms"), ("temperature_c", lambda v: f"{v:g} °C"))
    parts = []
    for key, text in shown:
        try:
            value = float(acq[key])
        except (KeyError, TypeError, ValueError):
            continue
        where = _SOURCE_NAMES.get(src.get(key), src.get(key))
        parts.append(text(value) + (f" ({where})" if where else ""))
    return "acquisition: " + ", ".join(parts) if parts else None


def print_summary(summary: dict[str, Any], out_dir: Path | None) -> None:
    """Print the size / concentration summary of one result as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    from ..io.results import finite_or_none

    s = summary["size_nm"]
    c = summary["concentration_per_ml"]
    n = summary["counts"]
    ci = s.get("ci95") or {}
    name = Path(summary["input"].get("path") or "video").name
    t = Table(title=f"exonta — {name}", show_header=True, header_style="bold")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_column("95% CI", justify="right")
    for key, label in (("mode", "mode (nm)"), ("mean", "mean (nm)"), ("sd", "SD (nm)"), ("d10", "D10 (nm)"),
                       ("d50", "D50 (nm)"), ("d90", "D90 (nm)")):
        lohi = ci.get(key) or [None, None]
        interval = f"{_fmt(lohi[0])}–{_fmt(lohi[1])}" if finite_or_none(lohi[0]) is not None else ""
        t.add_row(label, _fmt(s.get(key)), interval)
    cs = c.get("size_nm") or {}
    in_sample = cs.get("peaks") or []
    peaks = s.get("peaks") or []
    for i, p in enumerate(peaks):
        share = f"{100 * float(p.get('number_fraction', 0)):.0f}% of tracks"
        if len(in_sample) == len(peaks) and len(peaks) > 1:  # calibrated depth: the share of the particles too
            share += f", {100 * float(in_sample[i].get('number_fraction', 0)):.0f}% in the sample"
        t.add_row("peak (nm)", _fmt(p.get("diameter_nm")), share)
    limit = (s.get("detection_limit") or {}).get("diameter_nm")
    if limit is not None:
        t.add_row("detection limit (nm)", _fmt(limit, ".0f"), "smallest seen, same material")
    t.add_row("concentration (particles/mL)", _fmt(c.get("value"), ".3g"),
              f"{_fmt(c.get('ci95_low'), '.3g')}–{_fmt(c.get('ci95_high'), '.3g')}" if c.get("value") is not None else "")
    if cs:  # calibrated depth per size: sizes of the particles in the sample, not of the tracks
        t.add_row("D10 / D50 / D90 in the sample (nm)",
                  f"{_fmt(cs.get('d10'), '.0f')} / {_fmt(cs.get('d50'), '.0f')} / {_fmt(cs.get('d90'), '.0f')}",
                  "per calibrated depth")
    tracked = finite_or_none(c.get("tracked_spots_per_frame"))
    t.add_row("particles per frame", _fmt(n.get("mean_particles_per_frame")),
              f"counted; {_fmt(tracked)} in sized tracks" if tracked is not None else "")
    t.add_row("valid tracks / tracks", f"{n.get('n_valid_tracks')} / {n.get('n_tracks')}", "")
    dv = summary.get("drift_um_per_s") or [0, 0]
    se = summary.get("drift_se_um_per_s") or [None, None]
    t.add_row("drift (µm/s)", f"{_fmt(dv[0], '.2f')}, {_fmt(dv[1], '.2f')}",
              f"± {_fmt(se[0], '.2g')}, {_fmt(se[1], '.2g')} (SE)" if None not in map(finite_or_none, se) else "")
    console = Console()
    console.print(t)
    line = acquisition_line(summary)
    if line:
        console.print(line, highlight=False)
    for w in summary.get("warnings") or []:
        console.print(f"[yellow]warning:[/yellow] {w}")
    if out_dir is not None:
        console.print(f"results: {out_dir}")


def _check_output_folder(out: Path) -> None:
    """Fail before a long analysis when ``out`` can never hold the results (nothing is created here)."""
    import os

    from ..errors import ExontaInputError

    p = Path(out).absolute()
    while not p.exists() and p != p.parent:  # the nearest existing ancestor decides
        p = p.parent
    if not p.is_dir():
        raise ExontaInputError(f"cannot create output folder {out}: {p} is a file, not a folder; "
                               f"choose another --out")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ExontaInputError(f"output folder {p} is not writable; choose another --out")


#: Imported in a background thread while the spots are detected: the result writer's plotting and
#: Parquet stacks (about 1 s of imports on a cold start) are then ready when needed. It starts at the
#: first progress report of the detection, when the main thread has done its own imports: two threads
#: importing modules that import each other (pandas and pyarrow) can deadlock inside the import
#: system, which then hands one of them a half-initialised module.
PREFETCH_MODULES = ("matplotlib.figure", "matplotlib.backends.backend_agg", "pyarrow.parquet")


def _prefetch_on_detect(progress: Any) -> Any:
    """``progress`` that also starts :func:`_prefetch_imports` once, at the first detection report."""
    started = False

    def report(done: int, total: int, stage: str) -> Any:
        nonlocal started
        if not started and stage == "detect":
            started = True
            _prefetch_imports()
        return progress(done, total, stage)

    return report


def _prefetch_imports(modules: tuple[str, ...] = PREFETCH_MODULES) -> None:
    """Import ``modules`` in a daemon thread (errors are ignored: the real import reports them)."""
    import importlib
    import threading

    def work() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the import where the module is used raises it properly
                pass

    threading.Thread(target=work, name="exonta-prefetch", daemon=True).start()


@handle_errors
def command(
    videos: list[Path] = typer.Argument(..., help="Video files (TIFF/OME-TIFF, AVI/MP4/MOV) or folders of images."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; one sub-folder per video."),
    pixel_size_um: Optional[float] = OPT_PIXEL,
    fps: Optional[float] = OPT_FPS,
    exposure_s: Optional[float] = OPT_EXPOSURE,
    temperature_c: Optional[float] = OPT_TEMP,
    viscosity_mpas: Optional[float] = OPT_VISC,
    dilution: Optional[float] = OPT_DIL,
    invert: Optional[bool] = OPT_INVERT,
    config: Optional[Path] = OPT_CONFIG,
    calibration: Optional[Path] = OPT_CAL,
    threshold_snr: Optional[float] = typer.Option(None, "--threshold-snr", help="Detection threshold in noise sigmas."),
    psf_sigma_px: Optional[float] = typer.Option(None, "--psf-sigma-px", help="Spot width (Gaussian sigma), px; default: measured from the video, kept at 1.5 unless the measurement differs by more than 1.7x."),
    min_track_length: Optional[int] = typer.Option(None, "--min-track-length", help="Minimum positions per track."),
    fast_search: bool = typer.Option(False, "--fast-search", help="Search the spots on the frame summed in 2x2 blocks "
                                     "(fits stay at full resolution): about half the detection time; fewer noise "
                                     "candidates and less resolution for touching spots ([detect] search_binning = 2)."),
    exclude_region: Optional[list[str]] = typer.Option(
        None, "--exclude-region", metavar="X0,Y0,X1,Y1",
        help="Leave out a rectangle (px, x = column, x1/y1 exclusive): burned-in text, a scale bar, a scratch. "
             "Repeatable. Overlays at the camera's white/black level or in colour are found without it ([detect] "
             "exclude_overlays)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary table."),
) -> None:
    """Analyse NTA videos: size distribution and concentration, written to OUT/<video-name>/."""
    from ..analysis.concentration import load_calibration
    from ..errors import ExontaInputError
    from ..io.results import result_name
    from ..pipeline import analyze, prepare

    acq = acquisition_flags(pixel_size_um, fps, exposure_s, temperature_c, viscosity_mpas, dilution)
    overrides: dict[str, dict[str, Any]] = {}
    if threshold_snr is not None:
        overrides.setdefault("detect", {})["threshold_snr"] = threshold_snr
    if psf_sigma_px is not None:
        overrides.setdefault("detect", {})["psf_sigma_px"] = psf_sigma_px
    if fast_search:
        overrides.setdefault("detect", {})["search_binning"] = 2
    if min_track_length is not None:
        overrides.setdefault("sizing", {})["min_track_length"] = min_track_length
    if exclude_region:
        overrides.setdefault("detect", {})["exclude_regions"] = [parse_region(r) for r in exclude_region]
    _check_output_folder(out)
    cal = load_calibration(calibration) if calibration is not None else None
    names = [result_name(v) for v in videos]
    if len(set(names)) != len(names):
        raise ExontaInputError("two input videos have the same name; their result folders would collide — "
                               "analyse them into different --out folders")
    failures: list[str] = []
    for video in videos:
        try:
            vid, cfg, warnings, sources = prepare(video, config_file=config, acquisition=acq, overrides=overrides,
                                                  invert=invert)
            with RichProgress(f"{Path(video).name}", enabled=not quiet and stderr_is_tty()) as bar:
                result = analyze(vid, cfg, progress=_prefetch_on_detect(bar), calibration=cal,
                                 acquisition_sources=sources, warnings=warnings)
            folder = result.write(out)
        except ExontaInputError as exc:
            if len(videos) == 1:
                raise
            typer.echo(f"exonta: error: {one_line(exc)}", err=True)
            failures.append(str(video))
            continue
        if not quiet:
            print_summary(result.summary(), folder)
    if failures:
        raise typer.Exit(EXIT_BAD_INPUT)
