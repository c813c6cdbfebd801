"""`exonta calibrate STANDARD_VIDEO --concentration-per-ml X --out CAL.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._common import RichProgress, acquisition_flags, handle_errors, stderr_is_tty
from .analyze import OPT_CONFIG, OPT_DIL, OPT_EXPOSURE, OPT_FPS, OPT_INVERT, OPT_PIXEL, OPT_TEMP, OPT_VISC


@handle_errors
def command(
    video: Path = typer.Argument(..., help="Video of a bead standard of known concentration (same optics and "
                                           "settings as the samples)."),
    concentration_per_ml: float = typer.Option(..., "--concentration-per-ml",
                                               help="Stock concentration of the standard, particles/mL "
                                                    "(--dilution is the dilution before measuring)."),
    out: Path = typer.Option(..., "--out", "-o", help="Calibration JSON to write (use with analyze --calibration)."),
    diameter_nm: float = typer.Option(100.0, "--diameter-nm", help="Diameter of the standard's beads, nm."),
    refractive_index: float = typer.Option(1.59, "--refractive-index",
                                           help="Refractive index of the beads (polystyrene 1.59)."),
    concentration_uncertainty: float = typer.Option(
        0.0, "--concentration-uncertainty", help="Relative standard uncertainty of the stated concentration "
                                                 "(e.g. 0.05 for ±5 %)."),
    pixel_size_um: Optional[float] = OPT_PIXEL,
    fps: Optional[float] = OPT_FPS,
    exposure_s: Optional[float] = OPT_EXPOSURE,
    temperature_c: Optional[float] = OPT_TEMP,
    viscosity_mpas: Optional[float] = OPT_VISC,
    dilution: Optional[float] = OPT_DIL,
    invert: Optional[bool] = OPT_INVERT,
    config: Optional[Path] = OPT_CONFIG,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
) -> None:
    """Calibrate the detection volume with a bead standard of known concentration."""
    from ..analysis.concentration import calibrate, save_calibration
    from ..errors import ExontaInputError
    from ..pipeline import analyze, prepare

    if not (concentration_per_ml > 0):
        raise ExontaInputError("--concentration-per-ml must be a positive number of particles/mL, e.g. 1e8")
    if not (0.0 <= concentration_uncertainty < 1.0):
        raise ExontaInputError("--concentration-uncertainty must be a relative uncertainty in [0, 1), e.g. 0.05")
    if out.parent and not out.parent.exists():
        raise ExontaInputError(f"output folder {out.parent} does not exist; create it first")
    acq = acquisition_flags(pixel_size_um, fps, exposure_s, temperature_c, viscosity_mpas, dilution)
    vid, cfg, warnings, sources = prepare(video, config_file=config, acquisition=acq, invert=invert)
    with RichProgress(f"{Path(video).name}", enabled=not quiet and stderr_is_tty()) as bar:
        result = analyze(vid, cfg, progress=bar, acquisition_sources=sources, warnings=warnings)
    cal = calibrate(result, concentration_per_ml, diameter_nm=diameter_nm, refractive_index=refractive_index,
                    concentration_rel_uncertainty=concentration_uncertainty)
    save_calibration(cal, out)
    if not quiet:
        typer.echo(f"effective depth: {cal.effective_depth_um:.2f} µm "
                   f"(± {100 * cal.effective_depth_rel_se:.1f} %, {cal.mean_particles_per_frame:.1f} particles/frame "
                   f"in {cal.analysed_area_um2:.0f} µm², {cal.n_distinct_particles} distinct particles)")
        typer.echo(f"counting threshold: {cal.count_threshold:.4g} (filtered spot peak, raw intensity units; "
                   f"{cal.count_threshold / cal.noise_level:.1f} × the noise {cal.noise_level:.3g})"
                   if cal.noise_level else f"counting threshold: {cal.count_threshold:.4g}")
        typer.echo(f"depth model: sheet sigma {cal.sheet_sigma_um:.2f} µm, filtered peak/threshold ratio "
                   f"{cal.brightness_ratio:.1f} for {cal.standard_diameter_nm:g} nm, n = "
                   f"{cal.standard_refractive_index:g}")
        for w in cal.warnings:
            typer.echo(f"warning: {w}", err=True)
        typer.echo(f"calibration: {out}")
