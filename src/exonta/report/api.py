"""One call for the CLI and scripts: load, evaluate, render and write every requested report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import ExontaInputError
from ..io.results import safe_name
from .content import build_report, load_source
from .spec import Spec, load_spec

__all__ = ["ReportOutcome", "make_reports"]


@dataclass
class ReportOutcome:
    """One written report."""

    lot: str
    sample: str | None          # None for a lot report
    verdict: str                # "PASS" | "FAIL" | "NOT EVALUATED"
    paths: dict[str, Path]
    reasons: list[str]


def make_reports(source: str | Path, out: str | Path, *, lots: Sequence[str] | None = None,
                 samples: Sequence[str] | None = None, spec: str | Path | Spec | None = None,
                 per_sample: bool = False, pdf: bool = True,
                 generated_at: str | None = None) -> list[ReportOutcome]:
    """Write one report per lot (``OUT/<lot>.html|pdf``) and optionally one per sample.

    Parameters
    ----------
    source : path
        A batch output folder (``catalog.sqlite``) or a folder of result folders.
    out : path
        Report folder (created).
    lots : sequence of str, optional
        Only these lots (default: every lot; with ``samples``, the lots holding them).
    samples : sequence of str, optional
        Only these samples.
    spec : path or Spec, optional
        The specification (see :mod:`exonta.report.spec`).
    per_sample : bool
        Also write ``OUT/<lot>/<sample>.html|pdf`` for each reported sample.
    pdf : bool
        Write the PDF next to the HTML.
    generated_at : str, optional
        Report date text (default: now, UTC).

    Returns
    -------
    list of ReportOutcome
        Lot reports first, then per-sample ones, in lot order.
    """
    spec_obj = load_spec(spec) if isinstance(spec, (str, Path)) else spec
    src = load_source(source)
    if not src.lots:
        raise ExontaInputError(f"no analysed lot in {source}")
    all_lots = [l.name for l in src.lots]
    if lots:
        unknown = [l for l in lots if l not in all_lots]
        if unknown:
            raise ExontaInputError(f"lot(s) {', '.join(map(repr, unknown))} not found in {source}; "
                                   f"lots: {', '.join(all_lots)}")
        chosen = [l for l in all_lots if l in lots]
    else:
        chosen = all_lots
    if samples:
        with_samples = [l for l in chosen if any(s.name in samples for s in src.lot(l).samples)]
        found = {s.name for l in chosen for s in src.lot(l).samples}
        missing = [s for s in samples if s not in found]
        if missing:
            raise ExontaInputError(f"sample(s) {', '.join(map(repr, missing))} not found in the selected lot(s)")
        chosen = with_samples

    from .render import write_report

    outcomes: list[ReportOutcome] = []
    per: list[ReportOutcome] = []
    ss_name = spec_obj.system_suitability.sample if spec_obj and spec_obj.system_suitability else None
    for lot in chosen:
        names = [s.name for s in src.lot(lot).samples if not samples or s.name in samples]
        product = [n for n in names if n != ss_name]
        sel = names if samples else None
        content = build_report(src, lot, spec_obj, samples=sel, generated_at=generated_at)
        paths = write_report(content, out, safe_name(lot), pdf=pdf)
        outcomes.append(ReportOutcome(lot, None, content.verdict, paths, content.reasons))
        if per_sample:
            for name in product:
                sc = build_report(src, lot, spec_obj, samples=[name], scope="sample", generated_at=generated_at)
                sp = write_report(sc, Path(out) / safe_name(lot), safe_name(name), pdf=pdf)
                per.append(ReportOutcome(lot, name, sc.verdict, sp, sc.reasons))
    return outcomes + per
