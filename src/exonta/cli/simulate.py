"""`exonta simulate OUT_DIR --name NAME [...]`: write a simulated NTA video with its ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ._common import handle_errors


def _parse_mixture(text: str, cv: float | None, refractive_index: float | None) -> list[dict[str, Any]]:
    """``"100:0.5,200:0.5"`` → mono components (diameter nm : number fraction)."""
    from ..errors import ExontaInputError

    comps = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            d, _, f = part.partition(":")
            comp: dict[str, Any] = {"diameter_nm": float(d), "fraction": float(f) if f else 1.0}
        except ValueError:
            raise ExontaInputError(
                f"cannot read mixture component {part!r}; write diameter_nm:fraction pairs such as "
                f"--mixture \"100:0.5,200:0.5\"") from None
        if cv is not None:
            comp["cv"] = cv
        if refractive_index is not None:
            comp["refractive_index"] = refractive_index
        comps.append(comp)
    if not comps:
        raise ExontaInputError("--mixture is empty; write diameter_nm:fraction pairs such as \"100:0.5,200:0.5\"")
    return comps


def _config_from_file(path: Path) -> dict[str, Any]:
    from ..simulate import load_simulation_config

    return load_simulation_config(path).model_dump()


@handle_errors
def command(
    out_dir: Path = typer.Argument(..., help="Output folder (created if missing)."),
    name: str = typer.Option("simulated", "--name", "-n", help="File stem of the written files."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with SimulationConfig fields "
                                          "(top level or a [simulation] table); flags override it."),
    preset: Optional[str] = typer.Option(None, "--preset", help="beads100 | beads200 | ev | bimodal."),
    diameter_nm: Optional[float] = typer.Option(None, "--diameter-nm", help="Diameter of a mono population, nm."),
    cv: Optional[float] = typer.Option(None, "--cv", help="Relative SD of the diameter (mono)."),
    mixture: Optional[str] = typer.Option(None, "--mixture", help="Mono components as diameter_nm:fraction, "
                                          "e.g. \"100:0.5,200:0.5\"."),
    lognormal_median_nm: Optional[float] = typer.Option(None, "--lognormal-median-nm",
                                                        help="Median of a lognormal population, nm."),
    lognormal_gsd: Optional[float] = typer.Option(None, "--lognormal-gsd", help="Geometric SD of it (e.g. 1.45)."),
    refractive_index: Optional[float] = typer.Option(None, "--refractive-index",
                                                     help="Particle refractive index (PS 1.59, EV 1.39)."),
    concentration_per_ml: Optional[float] = typer.Option(None, "--concentration-per-ml",
                                                         help="Particles per mL in the simulated sample."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Number of frames."),
    width: Optional[int] = typer.Option(None, "--width", help="Frame width, px."),
    height: Optional[int] = typer.Option(None, "--height", help="Frame height, px."),
    pixel_size_um: Optional[float] = typer.Option(None, "--pixel-size-um", help="Pixel size, µm/px."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frame rate, frames/s."),
    exposure_s: Optional[float] = typer.Option(None, "--exposure-s", help="Exposure per frame, s."),
    temperature_c: Optional[float] = typer.Option(None, "--temperature-c", help="Temperature, °C."),
    photons_ref: Optional[float] = typer.Option(None, "--photons-ref",
                                                help="Photons per exposure of a 100 nm PS bead in focus."),
    drift_um_per_s: Optional[tuple[float, float]] = typer.Option(None, "--drift-um-per-s",
                                                                 help="Uniform flow X Y, µm/s."),
    bit_depth: Optional[int] = typer.Option(None, "--bit-depth", help="8 or 16."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    formats: str = typer.Option("tif,avi", "--format", help="Comma-separated video formats: tif, avi."),
) -> None:
    """Simulate an NTA video with ground truth (video, sidecar, truth table)."""
    from pydantic import ValidationError

    from ..config import format_validation_error
    from ..errors import ExontaInputError
    from ..simulate import PRESETS, SimulationConfig, write_simulation

    data: dict[str, Any] = {}
    if config is not None:
        data.update(_config_from_file(config))
    if preset is not None:
        if preset not in PRESETS:
            raise ExontaInputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        data.update(PRESETS[preset])

    n_pop = sum(x is not None for x in (diameter_nm, mixture, lognormal_median_nm))
    if n_pop > 1:
        raise ExontaInputError("give only one of --diameter-nm, --mixture and --lognormal-median-nm")
    if lognormal_gsd is not None and lognormal_median_nm is None:
        raise ExontaInputError("--lognormal-gsd needs --lognormal-median-nm")
    # a population flag replaces the preset's / config's components but keeps their refractive index
    if refractive_index is None and n_pop:
        prev = data.get("components") or [{}]
        first = prev[0] if isinstance(prev[0], dict) else {}
        refractive_index = first.get("refractive_index")
    if mixture is not None:
        data["components"] = _parse_mixture(mixture, cv, refractive_index)
    elif lognormal_median_nm is not None:
        comp: dict[str, Any] = {"distribution": "lognormal", "median_nm": lognormal_median_nm,
                                "gsd": lognormal_gsd if lognormal_gsd is not None else 1.4}
        if refractive_index is not None:
            comp["refractive_index"] = refractive_index
        data["components"] = [comp]
    elif diameter_nm is not None:
        comp = {"diameter_nm": diameter_nm}
        if cv is not None:
            comp["cv"] = cv
        if refractive_index is not None:
            comp["refractive_index"] = refractive_index
        data["components"] = [comp]
    elif cv is not None or refractive_index is not None:
        comps = [dict(c) for c in data.get("components", [{}])]
        for c in comps:
            if cv is not None:
                c["cv"] = cv
            if refractive_index is not None:
                c["refractive_index"] = refractive_index
        data["components"] = comps

    flags = {"concentration_per_ml": concentration_per_ml, "n_frames": frames, "width_px": width,
             "height_px": height, "pixel_size_um": pixel_size_um, "fps": fps, "exposure_s": exposure_s,
             "temperature_c": temperature_c, "photons_ref": photons_ref, "bit_depth": bit_depth, "seed": seed,
             "drift_um_per_s": drift_um_per_s}
    data.update({k: v for k, v in flags.items() if v is not None})
    try:
        cfg = SimulationConfig(**data)
    except ValidationError as exc:
        raise ExontaInputError(format_validation_error(exc, "simulation settings")) from None

    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    if not fmts:
        raise ExontaInputError("--format is empty; use tif, avi or tif,avi")
    paths = write_simulation(cfg, out_dir, name, formats=fmts)
    for kind, p in paths.items():
        typer.echo(f"{kind}: {p}")
