"""`exonta report BATCH_OUT --out DIR`: QC reports (HTML + PDF) per lot, checked against a specification."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import EXIT_FAILED, EXIT_OK, handle_errors


@handle_errors
def command(
    source: Path = typer.Argument(..., help="Batch output folder (with catalog.sqlite) or a folder of "
                                            "`exonta analyze` results (treated as one lot)."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder: <lot>.html and <lot>.pdf are written there."),
    lot: Optional[List[str]] = typer.Option(None, "--lot", help="Report only this lot (repeatable)."),
    sample: Optional[List[str]] = typer.Option(None, "--sample", help="Report only this sample (repeatable)."),
    spec: Optional[Path] = typer.Option(None, "--spec", help="Specification TOML (criteria, system suitability, "
                                                             "trend); see `exonta.report.spec`."),
    per_sample: bool = typer.Option(False, "--per-sample", help="Also write <lot>/<sample>.html|pdf per sample."),
    pdf: bool = typer.Option(True, "--pdf/--no-pdf", help="Write the PDF next to the HTML."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Write QC reports for production lots; exit 0 when every lot passes, 1 when any fails, 2 on bad input."""
    from ..report import make_reports

    outcomes = make_reports(source, out, lots=lot or None, samples=sample or None, spec=spec,
                            per_sample=per_sample, pdf=pdf)
    if not quiet:
        for o in outcomes:
            what = f"lot {o.lot}" + (f" / sample {o.sample}" if o.sample else "")
            files = ", ".join(str(p) for p in o.paths.values())
            typer.echo(f"{o.verdict:<13} {what} → {files}")
            if o.sample is None:
                for r in o.reasons:
                    typer.echo(f"    FAIL {r}")
    failed = any(o.verdict == "FAIL" for o in outcomes if o.sample is None)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)
