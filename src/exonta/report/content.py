"""The report's content model, built once from a batch output folder or from result folders.

Two kinds of input:

* a **batch output folder** (``exonta batch ROOT --out OUT``): ``OUT/catalog.sqlite``
  (opened read-only) lists lots, samples and the newest result of each video
  (view ``latest_results``); each result folder ``OUT/<lot>/<sample>/<video>/``
  holds ``summary.json`` and ``size_distribution.csv``; each sample folder the
  pooled ``sample_summary.json`` and ``size_distribution.csv``. Lots are in
  catalog order (``lots.created_at``, then ``lot_id``).
* plain **result folders** (``exonta analyze ... -o DIR``): every folder under
  DIR (down to three levels) holding a ``summary.json``. ``DIR/<video>/`` → one
  lot named after DIR, one sample per video; ``DIR/<sample>/<video>/`` → one
  lot, samples by folder; ``DIR/<lot>/<sample>/<video>/`` → lots by folder
  (ordered by their earliest ``created`` time).

Everything the HTML and the PDF show comes from :class:`ReportContent`; the
renderer only formats it. Nothing here draws or writes files.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from ..errors import ExontaInputError
from ..io.results import finite_or_none
from .spec import CheckResult, Spec, TrendResult, evaluate_criteria, evaluate_suitability, evaluate_trend, \
    overall_verdict

__all__ = ["VideoData", "SampleData", "LotData", "Source", "ReportContent", "load_source", "build_report",
           "sample_metrics"]

_SIZE_KEYS = ("mean", "mode", "sd", "d10", "d50", "d90")




def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_table(path: Path) -> pd.DataFrame | None:
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    return df if "diameter_nm" in df.columns else None


# ============================================================================ raw data

@dataclass
class VideoData:
    """One replicate video: its newest result (or failure)."""

    name: str
    status: str                               # "ok" | "failed" | "missing"
    video_path: str | None = None
    error: str | None = None
    result_dir: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    size_table: pd.DataFrame | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.summary)

    # convenient accessors (None when unknown)
    @property
    def size(self) -> dict[str, Any]:
        return self.summary.get("size_nm") or {}

    @property
    def counts(self) -> dict[str, Any]:
        return self.summary.get("counts") or {}

    @property
    def acquisition(self) -> dict[str, Any]:
        return self.summary.get("acquisition") or {}

    @property
    def dilution(self) -> float | None:
        conc = self.summary.get("concentration_per_ml") or {}
        return finite_or_none(self.acquisition.get("dilution")) or finite_or_none(conc.get("dilution"))

    @property
    def concentration(self) -> dict[str, float | None]:
        """Stock (value, CI) and measured (= stock / dilution) concentration, particles/mL."""
        c = self.summary.get("concentration_per_ml") or {}
        d = self.dilution
        stock, lo, hi = finite_or_none(c.get("value")), finite_or_none(c.get("ci95_low")), finite_or_none(c.get("ci95_high"))
        meas = (lambda x: x / d if (x is not None and d) else None)
        return {"stock": stock, "stock_lo": lo, "stock_hi": hi, "measured": meas(stock),
                "measured_lo": meas(lo), "measured_hi": meas(hi), "dilution": d}

    @property
    def drift_speed_um_per_s(self) -> float | None:
        d = self.summary.get("drift_um_per_s")
        try:
            return math.hypot(float(d[0]), float(d[1]))
        except (TypeError, ValueError, IndexError):
            return None

    @property
    def warnings(self) -> list[str]:
        return [str(w) for w in (self.summary.get("warnings") or [])]


@dataclass
class SampleData:
    name: str
    lot: str
    videos: list[VideoData] = field(default_factory=list)
    sample_summary: dict[str, Any] | None = None
    pooled_table: pd.DataFrame | None = None

    @property
    def ok_videos(self) -> list[VideoData]:
        return [v for v in self.videos if v.ok]

    @property
    def pooled(self) -> dict[str, Any] | None:
        p = (self.sample_summary or {}).get("pooled")
        return p if isinstance(p, dict) and p.get("stats") else None

    @property
    def pooled_error(self) -> str | None:
        return (self.sample_summary or {}).get("pooled_error")


@dataclass
class LotData:
    name: str
    created_at: str | None
    samples: list[SampleData] = field(default_factory=list)


@dataclass
class Source:
    """Every lot of the input, in production order."""

    path: Path
    kind: str                                 # "batch" | "results"
    lots: list[LotData]

    def lot(self, name: str) -> LotData:
        for lot in self.lots:
            if lot.name == name:
                return lot
        raise ExontaInputError(f"lot {name!r} is not in {self.path}; lots: {', '.join(l.name for l in self.lots)}")


# ============================================================================ loading

def load_source(path: str | Path) -> Source:
    """Read a batch output folder (with ``catalog.sqlite``) or a folder of result folders."""
    p = Path(path)
    if not p.is_dir():
        raise ExontaInputError(f"{p} is not a folder: give a batch output folder or a folder of exonta results")
    if (p / "catalog.sqlite").is_file():
        return _load_batch(p)
    return _load_results(p)


def _connect_ro(db: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True, timeout=30.0)
        conn.row_factory = sqlite3.Row
        conn.execute("SELECT 1 FROM lots LIMIT 1")
        return conn
    except sqlite3.Error as exc:
        raise ExontaInputError(f"{db} is not a readable exonta catalog ({exc})") from None


def _load_video(out: Path, row: sqlite3.Row) -> VideoData:
    v = VideoData(name=str(row["video"]), status=str(row["status"]), video_path=row["video_path"],
                  error=row["error"])
    if v.status == "ok":
        rd = out / str(row["result_dir"] or "")
        summary = _read_json(rd / "summary.json") if row["result_dir"] else None
        if summary is None:
            v.status, v.error = "missing", f"result folder {row['result_dir']} is missing or unreadable"
        else:
            v.result_dir, v.summary = rd, summary
            v.size_table = _read_table(rd / "size_distribution.csv")
    return v


def _load_batch(out: Path) -> Source:
    conn = _connect_ro(out / "catalog.sqlite")
    try:
        lots = [LotData(r["name"], r["created_at"]) for r in
                conn.execute("SELECT name, created_at FROM lots ORDER BY created_at, lot_id")]
        by_lot = {l.name: l for l in lots}
        samples: dict[tuple[str, str], SampleData] = {}
        for r in conn.execute("SELECT l.name AS lot, s.name AS sample, s.summary_path FROM samples s "
                              "JOIN lots l ON l.lot_id = s.lot_id ORDER BY s.sample_id"):
            sd = SampleData(name=r["sample"], lot=r["lot"])
            if r["summary_path"]:
                sp = out / r["summary_path"]
                sd.sample_summary = _read_json(sp)
                sd.pooled_table = _read_table(sp.parent / "size_distribution.csv") if sd.sample_summary else None
            samples[(r["lot"], r["sample"])] = sd
            by_lot[r["lot"]].samples.append(sd)
        for r in conn.execute("SELECT * FROM latest_results ORDER BY lot, sample, video, video_path"):
            sd = samples.get((r["lot"], r["sample"]))
            if sd is not None:
                sd.videos.append(_load_video(out, r))
    except sqlite3.Error as exc:
        raise ExontaInputError(f"cannot read the catalog in {out} ({exc})") from None
    finally:
        conn.close()
    for lot in lots:
        lot.samples = [s for s in lot.samples if s.videos]
    return Source(out, "batch", [l for l in lots if l.samples])


def _find_summaries(root: Path, depth: int = 3) -> list[Path]:
    found = []
    if (root / "summary.json").is_file():
        return [root]

    def walk(d: Path, level: int) -> None:
        try:
            children = sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
        except OSError:
            return
        for c in children:
            if (c / "summary.json").is_file():
                found.append(c)
            elif level < depth:
                walk(c, level + 1)

    walk(root, 1)
    return found


def _load_results(root: Path) -> Source:
    dirs = _find_summaries(root)
    if not dirs:
        raise ExontaInputError(f"no exonta result (summary.json) or batch catalog found in {root}; "
                               f"run `exonta analyze` or `exonta batch` first")
    lots: dict[str, LotData] = {}
    first_seen: dict[str, str] = {}
    for d in dirs:
        parts = d.relative_to(root).parts
        lot_name = parts[0] if len(parts) >= 3 else root.resolve().name
        sample_name = parts[-2] if len(parts) >= 2 else (parts[0] if parts else root.resolve().name)
        summary = _read_json(d / "summary.json")
        if summary is None or summary.get("schema") != "exonta.summary/1":
            vd = VideoData(name=d.name, status="failed", error="summary.json is unreadable or not an exonta summary")
        else:
            vd = VideoData(name=d.name, status="ok", video_path=(summary.get("input") or {}).get("path"),
                           result_dir=d, summary=summary, size_table=_read_table(d / "size_distribution.csv"))
        lot = lots.setdefault(lot_name, LotData(lot_name, None))
        sample = next((s for s in lot.samples if s.name == sample_name), None)
        if sample is None:
            sample = SampleData(sample_name, lot_name)
            if len(parts) >= 2:
                sdir = d.parent
                sample.sample_summary = _read_json(sdir / "sample_summary.json")
                if sample.sample_summary:
                    sample.pooled_table = _read_table(sdir / "size_distribution.csv")
            lot.samples.append(sample)
        sample.videos.append(vd)
        created = str(summary.get("created") or "") if summary else ""
        if created and (lot_name not in first_seen or created < first_seen[lot_name]):
            first_seen[lot_name] = created
    for name, lot in lots.items():
        lot.created_at = first_seen.get(name)
    ordered = sorted(lots.values(), key=lambda l: (l.created_at or "", l.name))
    return Source(root, "results", ordered)


# ============================================================================ per-sample numbers

_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
         2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
         2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t975(df: int) -> float:
    """97.5 % quantile of Student's t with ``df`` degrees of freedom (table to 30, then Cornish–Fisher)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def _between(values: Iterable[float | None]) -> dict[str, Any]:
    """n, mean, SD (ddof 1), SE, CV % and the Student-t 95 % CI of the mean between replicates.

    The quantities reported here (sizes, concentrations) are non-negative, so a
    lower CI bound below zero (n = 2 gives t = 12.7) is clipped to 0.
    """
    vals = [v for v in (finite_or_none(x) for x in values) if v is not None]
    n = len(vals)
    out: dict[str, Any] = {"n": n, "mean": None, "sd": None, "se": None, "cv_pct": None, "ci95": [None, None]}
    if n == 0:
        return out
    mean = sum(vals) / n
    out["mean"] = mean
    if n >= 2:
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
        se = sd / math.sqrt(n)
        q = t975(n - 1)
        out.update(sd=sd, se=se, cv_pct=100.0 * sd / abs(mean) if mean else None,
                   ci95=[max(mean - q * se, 0.0) if mean >= 0 else mean - q * se, mean + q * se])
    return out


def _ci(stats: dict[str, Any], key: str) -> list[float | None]:
    ci = (stats.get("ci95") or {}).get(key) if isinstance(stats.get("ci95"), dict) else None
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return [finite_or_none(ci[0]), finite_or_none(ci[1])]
    return [None, None]


def sample_metrics(sample: SampleData) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """The spec metrics of a sample, reasons for missing ones, and the details shown on the report.

    Returns
    -------
    metrics : dict
        ``{metric: value or None}`` for every name in :data:`exonta.report.spec.METRICS`.
    missing : dict
        ``{metric: reason}`` for the metrics that are None.
    details : dict
        ``size`` (``{stat: {"value", "ci95"}}``), ``size_source``, ``between``
        (``{"mode_nm"|"d50_nm"|"concentration_per_ml"|"measured_concentration_per_ml": stats}``),
        ``concentration_ci95`` (stock, CI of the mean between replicates, or the
        single replicate's CI).
    """
    ok = sample.ok_videos
    n_ok = len(ok)
    missing: dict[str, str] = {}
    no_rep = "no successfully analysed replicate video"
    pooled = sample.pooled
    size: dict[str, dict[str, Any]] = {}
    if pooled:
        st = pooled["stats"]
        for k in _SIZE_KEYS:
            size[k] = {"value": finite_or_none(st.get(k)), "ci95": _ci(st, k)}
        size_source = f"pooled distribution of {pooled.get('n_videos', n_ok)} replicate video(s)"
    else:
        for k in _SIZE_KEYS:
            b = _between(v.size.get(k) for v in ok)
            if n_ok == 1:
                size[k] = {"value": b["mean"], "ci95": _ci(ok[0].size, k)}
            else:
                size[k] = {"value": b["mean"], "ci95": b["ci95"]}
        size_source = (f"mean of {n_ok} replicate video(s)" + (" (CI: t-interval between replicates)"
                                                                if n_ok > 1 else ""))
    between = {
        "mode_nm": _between(v.size.get("mode") for v in ok),
        "d50_nm": _between(v.size.get("d50") for v in ok),
        "concentration_per_ml": _between(v.concentration["stock"] for v in ok),
        "measured_concentration_per_ml": _between(v.concentration["measured"] for v in ok),
    }
    conc = between["concentration_per_ml"]
    if n_ok == 1:
        c1 = ok[0].concentration
        conc_ci = [c1["stock_lo"], c1["stock_hi"]]
    else:
        conc_ci = conc["ci95"]
    m: dict[str, Any] = {f"{k}_nm": size[k]["value"] for k in _SIZE_KEYS}
    d10, d50, d90 = m["d10_nm"], m["d50_nm"], m["d90_nm"]
    m["span"] = (d90 - d10) / d50 if None not in (d10, d50, d90) and d50 else None
    m["concentration_per_ml"] = conc["mean"]
    m["measured_concentration_per_ml"] = between["measured_concentration_per_ml"]["mean"]
    for key, b in (("mode_cv_pct", between["mode_nm"]), ("d50_cv_pct", between["d50_nm"]),
                   ("concentration_cv_pct", conc)):
        m[key] = b["cv_pct"]
        if b["cv_pct"] is None:
            missing[key] = ("undefined: fewer than 2 successful replicate videos" if b["n"] < 2
                            else "undefined: mean is zero")
    tracks = [finite_or_none(v.counts.get("n_valid_tracks")) for v in ok]
    tracks = [t for t in tracks if t is not None]
    m["valid_tracks"] = sum(tracks) if tracks else None
    m["valid_tracks_min"] = min(tracks) if tracks else None
    ppf = [finite_or_none(v.counts.get("mean_particles_per_frame")) for v in ok]
    ppf = [p for p in ppf if p is not None]
    m["particles_per_frame"] = sum(ppf) / len(ppf) if ppf else None
    m["particles_per_frame_min"] = min(ppf) if ppf else None
    drifts = [d for d in (v.drift_speed_um_per_s for v in ok) if d is not None]
    m["drift_um_per_s"] = max(drifts) if drifts else None
    limits = [(v.size.get("detection_limit") or {}) for v in ok]
    known = [x for x in (finite_or_none(lim.get("diameter_nm")) for lim in limits) if x is not None]
    m["detection_limit_nm"] = max(known) if len(known) == n_ok and known else None
    if n_ok and m["detection_limit_nm"] is None:
        reasons = sorted({str(lim.get("reason")) for lim in limits if lim.get("reason")})
        missing["detection_limit_nm"] = ("; ".join(reasons) if reasons
                                         else "not estimated for every replicate (bright-field, beads > 200 nm, "
                                              "or an analysis by an older exonta)")
    m["n_replicates"] = n_ok
    m["n_failed_videos"] = len(sample.videos) - n_ok
    m["n_warnings"] = sum(len(v.warnings) for v in ok)
    for k, v in m.items():
        if v is None and k not in missing:
            missing[k] = no_rep if n_ok == 0 else "not reported by the analysis"
    details = {"size": size, "size_source": size_source, "between": between, "concentration_ci95": conc_ci,
               "n_ok": n_ok, "n_videos": len(sample.videos)}
    return m, missing, details


# ============================================================================ the report content

@dataclass
class SampleReport:
    data: SampleData
    role: str                                 # "product" | "system suitability"
    metrics: dict[str, Any]
    missing: dict[str, str]
    details: dict[str, Any]
    checks: list[CheckResult] = field(default_factory=list)
    lot: str = ""

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def verdict(self) -> str:
        return overall_verdict(self.checks) if self.checks else "NOT EVALUATED"


@dataclass
class ReportContent:
    """Everything a QC report shows (one lot, or one sample of it)."""

    title: str
    scope: str                                # "lot" | "sample"
    lot: str
    lot_created_at: str | None
    source: Path
    source_kind: str
    generated_at: str
    exonta_version: str
    spec: Spec | None
    samples: list[SampleReport]               # product samples, then the system-suitability sample
    criteria: list[CheckResult]
    suitability: list[CheckResult]
    suitability_where: str | None
    trends: list[TrendResult]
    trend_checks: list[CheckResult]
    verdict: str                              # "PASS" | "FAIL" | "NOT EVALUATED"
    reasons: list[str]                        # why FAIL (one line per failed check)

    @property
    def running_title(self) -> str:
        """Page-header text of the PDF."""
        if self.scope == "sample" and self.product_samples:
            return f"Lot {self.lot} · sample {self.product_samples[0].name}"
        return f"Lot {self.lot}"

    @property
    def trend_flags(self) -> list[CheckResult]:
        """Trend checks of this lot that fall outside the control limits."""
        return [t for t in self.trend_checks if t.reason.startswith("OUT OF TREND")]

    @property
    def product_samples(self) -> list[SampleReport]:
        return [s for s in self.samples if s.role == "product"]

    @property
    def all_videos(self) -> list[tuple[SampleReport, VideoData]]:
        return [(s, v) for s in self.samples for v in s.data.videos]

    @property
    def parameter_sets(self) -> list[tuple[str, dict[str, Any], list[str]]]:
        """Distinct (parameters_hash, parameters, videos using them)."""
        sets: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for s, v in self.all_videos:
            if not v.ok:
                continue
            h = str(v.summary.get("parameters_hash") or "unknown")
            sets.setdefault(h, (v.summary.get("parameters") or {}, []))[1].append(f"{s.name} / {v.name}")
        return [(h, p, names) for h, (p, names) in sets.items()]

    @property
    def versions(self) -> list[str]:
        return sorted({str(v.summary.get("exonta_version")) for _, v in self.all_videos
                       if v.ok and v.summary.get("exonta_version")})


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _lot_trend_value(lot: LotData, metric: str, exclude: str | None) -> float | None:
    vals = []
    for s in lot.samples:
        if exclude is not None and s.name == exclude:
            continue
        v = finite_or_none(sample_metrics(s)[0].get(metric))
        if v is not None:
            vals.append(v)
    return sum(vals) / len(vals) if vals else None


def build_report(source: Source, lot: str, spec: Spec | None = None, samples: Sequence[str] | None = None,
                 scope: str = "lot", generated_at: str | None = None) -> ReportContent:
    """Evaluate the specification on one lot and assemble the report content.

    Parameters
    ----------
    source : Source
        From :func:`load_source`.
    lot : str
        The lot to report.
    spec : Spec, optional
        Without one the report shows the results only (verdict "NOT EVALUATED").
    samples : sequence of str, optional
        Only these samples of the lot (the system-suitability sample is always
        included when the spec names one). Unknown names raise ExontaInputError.
    scope : {"lot", "sample"}
        Titles the report as a lot or a single-sample report.
    generated_at : str, optional
        Report date (default: now, UTC).
    """
    from .. import __version__

    lot_data = source.lot(lot)
    ss = spec.system_suitability if spec else None
    ss_name = ss.sample if ss else None
    names = [s.name for s in lot_data.samples]
    if samples:
        unknown = [s for s in samples if s not in names]
        if unknown:
            raise ExontaInputError(f"sample(s) {', '.join(map(repr, unknown))} not in lot {lot!r}; "
                                   f"samples: {', '.join(names)}")
    chosen = [s for s in lot_data.samples if (not samples or s.name in samples) and s.name != ss_name]

    reports: list[SampleReport] = []
    for s in chosen:
        m, miss, det = sample_metrics(s)
        reports.append(SampleReport(s, "product", m, miss, det, lot=lot))

    criteria: list[CheckResult] = []
    if spec:
        criteria = evaluate_criteria(spec, {r.name: r.metrics for r in reports},
                                     {r.name: r.missing for r in reports})
        if samples is not None and len(samples) > 0:  # a criterion's named sample outside the selection
            criteria = [c for c in criteria if c.scope in {r.name for r in reports}]
        order = {r.name: i for i, r in enumerate(reports)}
        criteria.sort(key=lambda c: order.get(c.scope, len(order)))  # stable: grouped by sample
        for r in reports:
            r.checks = [c for c in criteria if c.scope == r.name]

    suitability: list[CheckResult] = []
    where = None
    if ss:
        bead: SampleData | None = next((s for s in lot_data.samples if s.name == ss.sample), None)
        bead_lot = lot
        if bead is None:  # measured in the same batch but filed under another lot: newest such lot
            for other in reversed(source.lots):
                bead = next((s for s in other.samples if s.name == ss.sample), None)
                if bead is not None:
                    bead_lot = other.name
                    break
        bm = None
        if bead is not None:
            bm, bmiss, bdet = sample_metrics(bead)
            reports.append(SampleReport(bead, "system suitability", bm, bmiss, bdet, lot=bead_lot))
            where = f"lot {bead_lot}" if bead_lot != lot else None
        suitability = evaluate_suitability(ss, bm, where or "")
        if bead is not None:
            reports[-1].checks = list(suitability)

    trends: list[TrendResult] = []
    trend_checks: list[CheckResult] = []
    settings = spec.trend if spec else None
    trend_metrics = settings.metrics if settings else ["mode_nm", "d50_nm", "concentration_per_ml"]
    if len(source.lots) > 1:
        for metric in trend_metrics:
            series = [(l.name, _lot_trend_value(l, metric, ss_name)) for l in source.lots]
            tr = evaluate_trend(series, lot, metric, settings)
            trends.append(tr)
            trend_checks.append(tr.check(settings.fail_on_excursion if settings else False))

    checks = criteria + suitability + (trend_checks if spec else [])
    verdict = overall_verdict(checks) if spec else "NOT EVALUATED"
    reasons = [f"{c.scope}: {c.label} = {c.value_text} ({c.reason})" for c in checks if c.passed is False]
    if scope == "sample" and len(chosen) == 1:
        title = f"QC report — sample {chosen[0].name}, lot {lot}"
    else:
        title = f"QC report — lot {lot}"
    return ReportContent(
        title=title, scope=scope, lot=lot, lot_created_at=lot_data.created_at, source=source.path,
        source_kind=source.kind, generated_at=generated_at or _utc_now(), exonta_version=__version__,
        spec=spec, samples=reports, criteria=criteria, suitability=suitability, suitability_where=where,
        trends=trends, trend_checks=trend_checks, verdict=verdict, reasons=reasons)
