"""Render a :class:`~exonta.report.content.ReportContent` as self-contained HTML and as PDF.

The PDF is printed by WeasyPrint from the very HTML string that is written as
the ``.html`` file, so the two always agree. The HTML has no external
resource: CSS inline, figures as ``data:`` URIs, no scripts, system fonts only;
WeasyPrint is given a URL fetcher that refuses anything but ``data:`` URLs.
jinja2 autoescaping is on: sample names and warnings are escaped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import ExontaInputError
from ..io.results import atomic_write_bytes, finite_or_none, safe_name
from .content import ReportContent
from .spec import METRICS, format_value, sci

__all__ = ["render_html", "render_pdf", "write_report", "report_figures"]

_TEMPLATE = "report.html.j2"




def fmt_conc(v: Any) -> Any:
    """Particles/mL as ``1.23 × 10¹⁰`` (unicode superscripts, no markup)."""
    f = finite_or_none(v)
    return "–" if f is None else nb(sci(f))


def fmt_num(v: Any, spec: str = ".1f") -> str:
    f = finite_or_none(v)
    return "–" if f is None else format(f, spec)


def fmt_ci(ci: Any, kind: str = "size") -> Any:
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return "–"
    lo, hi = finite_or_none(ci[0]), finite_or_none(ci[1])
    if lo is None or hi is None:
        return "–"
    if kind == "conc":
        from markupsafe import Markup

        return Markup("{} – {}").format(fmt_conc(lo), fmt_conc(hi))
    return f"{lo:.1f} – {hi:.1f}"


def fmt_metric(v: Any, metric: str) -> Any:
    return nb(format_value(finite_or_none(v), metric))


def css_str(text: Any) -> str:
    """Escape text for a CSS string literal: every character outside [A-Za-z0-9 .,_-] as ``\\HHHHHH``."""
    out = []
    for ch in str(text):
        if ch.isascii() and (ch.isalnum() or ch in " .,_-:"):
            out.append(ch)
        else:
            out.append(f"\\{ord(ch):06x} ")  # the space ends the escape and is consumed by CSS
    return "".join(out)


def nb(text: Any) -> Any:
    """Keep numbers with their units and ``× 10ⁿ`` together in table cells (HTML-escaped Markup)."""
    from markupsafe import Markup, escape

    t = str(text).replace(" × ", "\u00a0×\u00a0")
    t = re.sub(r"(\d|[⁰¹²³⁴⁵⁶⁷⁸⁹]|%) (?!to\b)(?=[^\d\s±≤≥])", "\\1\u00a0", t)
    t = t.replace("≥ ", "≥\u00a0").replace("≤ ", "≤\u00a0")
    return Markup(str(escape(t)).replace("particles/mL", '<span class="nw">particles/mL</span>'))


def fmt_ts(text: Any) -> str:
    """An ISO 8601 timestamp as ``2026-01-05 10:00 UTC`` (other text unchanged)."""
    import datetime as _dt

    try:
        t = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc)
        return t.strftime("%Y-%m-%d %H:%M UTC")
    return t.strftime("%Y-%m-%d %H:%M")


def _env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).with_name("templates"))),
        autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters.update(ts=fmt_ts, nb=nb, css_str=css_str, conc=fmt_conc, num=fmt_num, ci=fmt_ci, metric=fmt_metric)
    env.globals.update(METRICS=METRICS)
    return env


def report_figures(content: ReportContent) -> dict[str, Any]:
    """The report's figures as PNG data URIs: ``{"samples": {name: uri}, "trend": uri}``."""
    from .plots import control_chart, size_distribution_plot

    figs: dict[str, Any] = {"samples": {}, "trend": None}
    for s in content.samples:
        reps = [(v.name, v.size_table) for v in s.data.ok_videos if v.size_table is not None]
        size = s.details["size"]
        marks = {"D10": size["d10"]["value"], "D50": size["d50"]["value"], "D90": size["d90"]["value"]}
        figs["samples"][s.name] = size_distribution_plot(reps, s.data.pooled_table, marks=marks)
    if content.trends:
        figs["trend"] = control_chart(content.trends)
    return figs


def render_html(content: ReportContent, figures: dict[str, Any] | None = None) -> str:
    """The report as one self-contained HTML document (str)."""
    figures = figures if figures is not None else report_figures(content)
    return _env().get_template(_TEMPLATE).render(c=content, figs=figures)


def _fetcher() -> Any:
    """A WeasyPrint URL fetcher that only resolves ``data:`` URLs (no network, no files)."""
    try:
        from weasyprint.urls import URLFetcher
    except ImportError:  # pragma: no cover - WeasyPrint < 66 takes a function
        from weasyprint import default_url_fetcher

        def fetch(url: str, *args: Any, **kwargs: Any) -> Any:
            if not url.startswith("data:"):
                raise ValueError(f"external resource refused in a QC report: {url[:80]}")
            return default_url_fetcher(url, *args, **kwargs)
        return fetch
    return URLFetcher(allowed_protocols=["data"])


def render_pdf(html: str) -> bytes:
    """Print the HTML to PDF/A-3b with WeasyPrint (A4, page numbers from the CSS ``@page`` rules)."""
    import logging

    try:
        import weasyprint
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise ExontaInputError("PDF output needs WeasyPrint: pip install 'exonta[report]'") from exc
    # WeasyPrint logs CSS it ignores (e.g. screen-only rules) at WARNING level; keep them quiet
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    doc = weasyprint.HTML(string=html, base_url=None, url_fetcher=_fetcher())
    import warnings

    with warnings.catch_warnings():
        # WeasyPrint opens its sRGB ICC profile (PDF/A output intent) without closing it
        warnings.simplefilter("ignore", ResourceWarning)
        try:  # archival PDF/A-3b (fonts embedded, XMP metadata, sRGB output intent)
            return doc.write_pdf(pdf_variant="pdf/a-3b")
        except (TypeError, ValueError, KeyError):  # pragma: no cover - a WeasyPrint without PDF/A support
            return doc.write_pdf()


def write_report(content: ReportContent, out_dir: str | Path, stem: str | None = None,
                 pdf: bool = True) -> dict[str, Path]:
    """Write ``<stem>.html`` (and ``<stem>.pdf``) atomically into ``out_dir``.

    Returns
    -------
    dict
        ``{"html": path, "pdf": path}`` (no ``"pdf"`` when ``pdf=False``).
    """
    out = Path(out_dir)
    stem = safe_name(stem or content.lot)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExontaInputError(f"cannot create the report folder {out}: {exc.strerror}") from None
    html = render_html(content)
    paths = {"html": out / f"{stem}.html"}
    pdf_bytes = render_pdf(html) if pdf else None
    atomic_write_bytes(paths["html"], html.encode("utf-8"))
    if pdf_bytes is not None:
        paths["pdf"] = out / f"{stem}.pdf"
        atomic_write_bytes(paths["pdf"], pdf_bytes)
    return paths
