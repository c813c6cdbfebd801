"""`exonta batch ROOT --out OUT`: analyse every video of an acquisition folder on Dask."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ._common import EXIT_FAILED, RichProgress, handle_errors, stderr_is_tty


def _fmt(v: Any, spec: str = ".1f") -> str:
    try:
        return format(float(v), spec)
    except (TypeError, ValueError):
        return "–"


def _pm(mean: Any, se: Any, spec: str = ".1f") -> str:
    if mean is None:
        return "–"
    return _fmt(mean, spec) + (f"±{_fmt(se, spec)}" if se is not None else "")


def print_report(report: Any) -> None:
    """End-of-run summary: counts, per-sample table, failures (rich tables on stdout)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    n_ok, n_ad, n_sk, n_f = (report.count("ok"), report.count("adopted"), report.count("skipped"),
                             len(report.failures))
    console.print(f"exonta batch: {len(report.outcomes)} video(s) — {n_ok} analysed, {n_sk} up to date, "
                  f"{n_ad} recovered, {n_f} failed")
    if report.samples:
        t = Table(title="samples (mean ± SE between replicate videos)", header_style="bold")
        for col in ("lot", "sample", "ok", "mode nm", "D50 nm", "per mL", "CV", "pooled mode"):
            t.add_column(col, justify="left" if col in ("lot", "sample") else "right",
                         no_wrap=col not in ("lot", "sample"))
        for s in sorted(report.samples, key=lambda s: (s["lot"], s["sample"])):
            t.add_row(s["lot"], s["sample"], f"{s.get('n_ok')}/{s.get('n_videos')}",
                      _pm(s.get("mode_mean_nm"), s.get("mode_se_nm")),
                      _pm(s.get("d50_mean_nm"), s.get("d50_se_nm")),
                      _pm(s.get("concentration_mean_per_ml"), s.get("concentration_se_per_ml"), ".2g"),
                      _fmt(s.get("concentration_cv"), ".1%"), _fmt(s.get("pooled_mode_nm")))
        console.print(t)
    if report.failures:
        t = Table(title="failed videos", header_style="bold red")
        t.add_column("video")
        t.add_column("lot / sample")
        t.add_column("error", overflow="fold")
        for o in report.failures:
            t.add_row(o.rel, f"{o.lot} / {o.sample}", o.error or "")
        console.print(t)
    for n in report.notes:
        console.print(f"[yellow]note:[/yellow] {n}")
    console.print(f"catalog: {report.catalog_path}")


@handle_errors
def command(
    root: Path = typer.Argument(..., help="Acquisition folder: videos in lot/sample folders, or a samples.csv "
                                          "manifest (columns video, sample, lot, dilution, acquisition fields)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (results, catalog.sqlite, results.csv)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML configuration for every video "
                                          "(per-folder exonta.toml and <video>.exonta.toml sidecars still apply)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration",
                                               help="Detection-volume calibration JSON from `exonta calibrate`."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Address of a running Dask scheduler "
                                            "(tcp://HOST:PORT); default: a local cluster on this machine."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1,
                                          help="Worker processes of the local cluster (default: CPU cores)."),
    force: bool = typer.Option(False, "--force", help="Re-analyse every video even when its result is up to date."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary tables."),
) -> None:
    """Analyse every video under ROOT (one Dask task per video); resume skips what is up to date.

    Exit code 0 when every video succeeded, 1 when some failed, 2 on bad input.
    """
    from ..batch.run import run_batch

    with RichProgress("batch", total=1, enabled=not quiet and stderr_is_tty()) as bar:
        report = run_batch(root, out, config_file=config, calibration=calibration, scheduler=scheduler,
                           workers=workers, force=force, progress=bar)
    if not quiet:
        print_report(report)
    if report.failures:
        raise typer.Exit(EXIT_FAILED)
