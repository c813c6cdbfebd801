"""QC reports for production lots: specification evaluation, figures, HTML and PDF.

``exonta report BATCH_OUT --spec SPEC.toml --out DIR`` (or :func:`make_reports`)
writes ``DIR/<lot>.html`` and ``DIR/<lot>.pdf`` for each lot of a batch output
folder (or a folder of ``exonta analyze`` results, treated as one lot).

Submodules: :mod:`~exonta.report.spec` (the spec TOML format and its pure
evaluation — the format is documented there), :mod:`~exonta.report.content`
(one content model from the catalog / result folders),
:mod:`~exonta.report.plots` (matplotlib figures as data URIs) and
:mod:`~exonta.report.render` (jinja2 HTML; WeasyPrint prints the same HTML to
PDF). jinja2, WeasyPrint and matplotlib are imported only when rendering.
"""

from __future__ import annotations

from .api import ReportOutcome, make_reports
from .content import ReportContent, build_report, load_source
from .spec import METRICS, Spec, evaluate_criteria, evaluate_suitability, evaluate_trend, load_spec, parse_spec

__all__ = [
    "make_reports",
    "ReportOutcome",
    "load_source",
    "build_report",
    "ReportContent",
    "Spec",
    "METRICS",
    "load_spec",
    "parse_spec",
    "evaluate_criteria",
    "evaluate_suitability",
    "evaluate_trend",
]
