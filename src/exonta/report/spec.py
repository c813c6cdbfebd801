"""QC specifications: the TOML format, its validation and its (pure) evaluation.

A specification file lists acceptance criteria on per-sample metrics, an
optional system-suitability check against a bead standard measured in the same
batch, and the trend (control chart) settings::

    name = "EV drug substance release"      # optional, shown on the report
    version = "2.1"                          # optional

    [[criterion]]
    metric = "mode_nm"                       # one of METRICS (below)
    min = 70                                 # inclusive bounds; give min, max or both
    max = 150

    [[criterion]]
    metric = "d90_nm"
    max = 300

    [[criterion]]
    metric = "concentration_per_ml"          # stock: measured × dilution
    min = 1e10

    [[criterion]]
    metric = "concentration_cv_pct"          # between replicate videos, %
    max = 15

    [[criterion]]
    metric = "valid_tracks"                  # summed over the replicate videos
    min = 1000
    samples = ["EV-A"]                       # optional: only these samples (default: every product sample)
    label = "Tracks used for sizing"         # optional display name

    [system_suitability]                     # optional
    sample = "beads100"                      # sample name of the bead standard (same lot first, else any lot)
    diameter_nm = 100                        # certificate value
    tolerance_pct = 5                        # |measured − certified| ≤ 5 % of certified
    size_metric = "mode_nm"                  # which size statistic is compared (default mode_nm)
    concentration_per_ml = 1e8               # optional certificate concentration (stock)
    concentration_tolerance_pct = 20

    [trend]                                  # optional (defaults shown)
    metrics = ["mode_nm", "d50_nm", "concentration_per_ml"]
    sigma = 3.0                              # control limits: mean ± sigma·SD of the EARLIER lots
    min_lots = 3                             # fewer earlier lots: no limits ("insufficient history")
    fail_on_excursion = false                # true: a lot outside the limits fails overall

Unknown keys are rejected (``extra="forbid"``) with an :class:`~exonta.errors.ExontaInputError`
that names the offending key. A criterion whose metric cannot be computed
(no successful replicate, a CV with fewer than two replicates) **fails**, with
the reason stated: a release decision is never made on a missing number.

Metrics (per sample; "replicates" are the successfully analysed videos of the sample):

* size, nm — ``mode_nm``, ``mean_nm``, ``sd_nm``, ``d10_nm``, ``d50_nm``, ``d90_nm``:
  the pooled distribution of all replicates when the batch pooled them, else
  the mean over replicates; ``span`` = (D90 − D10)/D50 (dimensionless);
* concentration, particles/mL — ``concentration_per_ml`` (stock = measured ×
  dilution, mean over replicates), ``measured_concentration_per_ml`` (in the
  measured, diluted suspension);
* reproducibility, % — ``mode_cv_pct``, ``d50_cv_pct``, ``concentration_cv_pct``
  (SD/mean between replicates × 100, ddof = 1);
* measurement QC — ``valid_tracks`` (sum), ``valid_tracks_min`` (smallest
  replicate), ``particles_per_frame`` (mean), ``particles_per_frame_min``,
  ``drift_um_per_s`` (largest replicate drift speed, µm/s), ``detection_limit_nm``
  (largest replicate's smallest visible diameter, ``size_nm.detection_limit``: a
  rising limit across lots flags a weakening laser or a changed camera setting),
  ``n_replicates``, ``n_failed_videos``, ``n_warnings``.

Trend: each lot's value of a trend metric is the mean over its product samples
(the system-suitability sample excluded); the control limits of a lot are the
mean ± ``sigma`` SD (ddof = 1) of the lots *before* it (Shewhart individuals
chart, Montgomery, *Introduction to Statistical Quality Control*, 7th ed.,
Wiley 2012, ch. 6).
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ExontaInputError
from ..io.results import finite_or_none

__all__ = [
    "METRICS",
    "Criterion",
    "SystemSuitability",
    "TrendSettings",
    "Spec",
    "CheckResult",
    "TrendPoint",
    "TrendResult",
    "load_spec",
    "parse_spec",
    "evaluate_criteria",
    "evaluate_suitability",
    "control_limits",
    "evaluate_trend",
    "overall_verdict",
    "format_value",
    "sci",
]

#: metric name → (display label, unit, format kind); the unit "" means dimensionless.
METRICS: dict[str, tuple[str, str, str]] = {
    "mode_nm": ("Mode diameter", "nm", "size"),
    "mean_nm": ("Mean diameter", "nm", "size"),
    "sd_nm": ("SD of diameter", "nm", "size"),
    "d10_nm": ("D10", "nm", "size"),
    "d50_nm": ("D50 (median)", "nm", "size"),
    "d90_nm": ("D90", "nm", "size"),
    "span": ("Span (D90 − D10)/D50", "", "ratio"),
    "concentration_per_ml": ("Concentration (stock)", "particles/mL", "conc"),
    "measured_concentration_per_ml": ("Concentration (measured, diluted)", "particles/mL", "conc"),
    "mode_cv_pct": ("Replicate CV of mode", "%", "pct"),
    "d50_cv_pct": ("Replicate CV of D50", "%", "pct"),
    "concentration_cv_pct": ("Replicate CV of concentration", "%", "pct"),
    "valid_tracks": ("Valid tracks (all replicates)", "tracks", "int"),
    "valid_tracks_min": ("Valid tracks (smallest replicate)", "tracks", "int"),
    "particles_per_frame": ("Particles per frame (mean)", "particles/frame", "float"),
    "particles_per_frame_min": ("Particles per frame (smallest replicate)", "particles/frame", "float"),
    "drift_um_per_s": ("Drift speed (largest replicate)", "µm/s", "float"),
    "detection_limit_nm": ("Detection limit (largest replicate)", "nm", "size"),
    "n_replicates": ("Successful replicate videos", "videos", "int"),
    "n_failed_videos": ("Failed videos", "videos", "int"),
    "n_warnings": ("Analysis warnings", "warnings", "int"),
}


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def sci(value: float, digits: int = 3) -> str:
    """``1.23 × 10¹⁰`` (unicode superscripts); plain for 0.01 ≤ |value| < 10⁴."""
    v = float(value)
    if v == 0 or 1e-2 <= abs(v) < 1e4:
        return f"{v:.{digits}g}"
    e = int(math.floor(math.log10(abs(v))))
    m = round(v / 10 ** e, digits - 1)
    if abs(m) >= 10:
        m, e = m / 10, e + 1
    return f"{m:.{digits - 1}f} × 10{str(e).translate(_SUPERSCRIPT)}"


def format_value(value: float | None, metric: str) -> str:
    """Human-readable value of a metric with its unit (``"–"`` when missing)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    kind = METRICS.get(metric, ("", "", "float"))[2]
    unit = METRICS.get(metric, ("", "", ""))[1]
    v = float(value)
    if kind == "size":
        s = f"{v:.1f}"
    elif kind == "conc":
        s = sci(v)
    elif kind == "pct":
        s = f"{v:.1f}"
    elif kind == "int":
        s = f"{v:.0f}"
    elif kind == "ratio":
        s = f"{v:.2f}"
    else:
        s = f"{v:.3g}"
    if unit == "%":
        return s + " %"
    return f"{s} {unit}" if unit else s


# ============================================================================ the models

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Criterion(_Model):
    """One acceptance criterion: ``min ≤ metric ≤ max`` (bounds inclusive)."""

    metric: str = Field(description="A metric name from exonta.report.spec.METRICS.")
    min: float | None = Field(None, description="Lower bound, inclusive, in the metric's unit.")
    max: float | None = Field(None, description="Upper bound, inclusive, in the metric's unit.")
    samples: list[str] | None = Field(None, description="Only these samples (default: all product samples).")
    label: str | None = Field(None, description="Display name (default: the metric's label).")

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; use one of {', '.join(METRICS)}")
        return v

    @model_validator(mode="after")
    def _bounds(self) -> "Criterion":
        if self.min is None and self.max is None:
            raise ValueError(f"criterion on {self.metric!r} needs min, max or both")
        for b in (self.min, self.max):
            if b is not None and not math.isfinite(b):
                raise ValueError(f"criterion on {self.metric!r}: bounds must be finite numbers")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"criterion on {self.metric!r}: min ({self.min:g}) is above max ({self.max:g})")
        return self

    @property
    def display(self) -> str:
        return self.label or METRICS[self.metric][0]

    @property
    def requirement(self) -> str:
        """The acceptance range as text, e.g. ``70.0 nm – 150.0 nm`` or ``≤ 300.0 nm``."""
        lo = format_value(self.min, self.metric) if self.min is not None else None
        hi = format_value(self.max, self.metric) if self.max is not None else None
        if lo and hi:
            return f"{lo} to {hi}"
        return f"≥ {lo}" if lo else f"≤ {hi}"


class SystemSuitability(_Model):
    """A bead standard checked against its certificate."""

    sample: str = Field(description="Sample name of the bead standard in the batch.")
    diameter_nm: float = Field(gt=0, description="Certified diameter, nm.")
    tolerance_pct: float = Field(gt=0, description="Allowed |measured − certified| / certified, %.")
    size_metric: Literal["mode_nm", "mean_nm", "d50_nm"] = Field(
        "mode_nm", description="Size statistic compared with the certificate.")
    concentration_per_ml: float | None = Field(None, gt=0, description="Certified stock concentration, /mL.")
    concentration_tolerance_pct: float | None = Field(None, gt=0, description="Allowed relative deviation, %.")

    @model_validator(mode="after")
    def _pair(self) -> "SystemSuitability":
        if (self.concentration_per_ml is None) != (self.concentration_tolerance_pct is None):
            raise ValueError("system_suitability: give concentration_per_ml and concentration_tolerance_pct together")
        return self


class TrendSettings(_Model):
    """Control-chart settings."""

    metrics: list[str] = Field(default_factory=lambda: ["mode_nm", "d50_nm", "concentration_per_ml"],
                               description="Metrics charted across lots.")
    sigma: float = Field(3.0, gt=0, description="Half-width of the control limits in SDs of earlier lots.")
    min_lots: int = Field(3, ge=2, description="Earlier lots needed before limits are computed.")
    fail_on_excursion: bool = Field(False, description="Whether a lot outside its limits fails overall.")

    @field_validator("metrics")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in METRICS]
        if bad:
            raise ValueError(f"unknown trend metric(s) {bad}; use names from METRICS")
        return v


class Spec(_Model):
    """A complete QC specification (see the module docstring for the TOML format)."""

    name: str | None = None
    version: str | None = None
    criterion: list[Criterion] = Field(default_factory=list)
    system_suitability: SystemSuitability | None = None
    trend: TrendSettings = Field(default_factory=TrendSettings)
    source: str | None = Field(None, description="Path of the spec file (set by load_spec).")
    sha256: str | None = Field(None, description="SHA-256 of the spec file (set by load_spec).")


def _error_sentence(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()))
        msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            msg = "unknown key (see exonta.report.spec for the format)"
        elif e.get("type") == "missing":
            msg = "is required"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"invalid specification {source}: " + "; ".join(parts)


def parse_spec(data: Mapping[str, Any], source: str = "") -> Spec:
    """Validate a spec dict (parsed TOML); raise ExontaInputError with a readable message."""
    data = dict(data)
    for k in ("source", "sha256"):
        if k in data:
            raise ExontaInputError(f"invalid specification {source}: {k}: unknown key")
    try:
        return Spec(**data)
    except ValidationError as exc:
        raise ExontaInputError(_error_sentence(exc, source)) from None
    except TypeError as exc:
        raise ExontaInputError(f"invalid specification {source}: {exc}") from None


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec TOML file (its path and SHA-256 are kept for the report)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ExontaInputError(f"specification file not found: {p}") from None
    except OSError as exc:
        raise ExontaInputError(f"cannot read specification file {p}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ExontaInputError(f"specification file {p} is not valid TOML: {exc}") from None
    spec = parse_spec(data, str(p))
    return spec.model_copy(update={"source": str(p), "sha256": hashlib.sha256(raw).hexdigest()})


# ============================================================================ evaluation

@dataclass
class CheckResult:
    """The outcome of one check: criterion, system suitability item or trend point.

    ``passed`` is None when the check could not be made and does not count
    (e.g. "insufficient history" for a trend), False for FAIL, True for PASS.
    """

    scope: str                     # sample name, "system suitability" or "trend"
    metric: str
    label: str
    requirement: str
    value: float | None
    passed: bool | None
    reason: str
    value_text: str = ""

    def __post_init__(self) -> None:
        if not self.value_text:
            self.value_text = format_value(self.value, self.metric)

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "N/A"}[self.passed]




def _check_range(scope: str, crit: Criterion, value: Any, why_missing: str | None = None) -> CheckResult:
    v = finite_or_none(value)
    if v is None:
        reason = why_missing or "not measured (no value available)"
        return CheckResult(scope, crit.metric, crit.display, crit.requirement, None, False, reason)
    if crit.min is not None and v < crit.min:
        return CheckResult(scope, crit.metric, crit.display, crit.requirement, v, False,
                           f"below the minimum {format_value(crit.min, crit.metric)}")
    if crit.max is not None and v > crit.max:
        return CheckResult(scope, crit.metric, crit.display, crit.requirement, v, False,
                           f"above the maximum {format_value(crit.max, crit.metric)}")
    return CheckResult(scope, crit.metric, crit.display, crit.requirement, v, True, "within the specification")


def evaluate_criteria(spec: Spec, metrics_by_sample: Mapping[str, Mapping[str, Any]],
                      missing_reasons: Mapping[str, Mapping[str, str]] | None = None) -> list[CheckResult]:
    """Evaluate every criterion on every product sample it applies to.

    Parameters
    ----------
    spec : Spec
    metrics_by_sample : mapping
        ``{sample: {metric: value}}`` for the product samples (system
        suitability sample excluded); a missing or non-finite value fails.
    missing_reasons : mapping, optional
        ``{sample: {metric: reason}}`` explaining why a value is missing.

    Returns
    -------
    list of CheckResult
        In the order of the criteria, then of the samples. A criterion naming a
        sample that is not present fails ("sample not found").
    """
    out: list[CheckResult] = []
    missing_reasons = missing_reasons or {}
    for crit in spec.criterion:
        targets = list(crit.samples) if crit.samples is not None else list(metrics_by_sample)
        for s in targets:
            if s not in metrics_by_sample:
                out.append(CheckResult(s, crit.metric, crit.display, crit.requirement, None, False,
                                       "sample not found in this lot"))
                continue
            out.append(_check_range(s, crit, metrics_by_sample[s].get(crit.metric),
                                    (missing_reasons.get(s) or {}).get(crit.metric)))
    return out


def evaluate_suitability(ss: SystemSuitability, metrics: Mapping[str, Any] | None,
                         where: str = "") -> list[CheckResult]:
    """Check the bead standard's size (and concentration) against its certificate.

    Parameters
    ----------
    ss : SystemSuitability
    metrics : mapping or None
        The bead sample's metrics; None when the sample was not measured
        (every check then fails).
    where : str
        Where the sample was found (e.g. its lot), appended to the reasons.

    Returns
    -------
    list of CheckResult
        Scope ``"system suitability"``; the size check first.
    """
    scope = "system suitability"
    size_label = f"{ss.sample}: {METRICS[ss.size_metric][0]} vs certificate"
    req = f"{ss.diameter_nm:g} nm ± {ss.tolerance_pct:g} %"
    checks: list[tuple[str, str, float, float]] = [(ss.size_metric, size_label, ss.diameter_nm, ss.tolerance_pct)]
    if ss.concentration_per_ml is not None and ss.concentration_tolerance_pct is not None:
        checks.append(("concentration_per_ml", f"{ss.sample}: concentration vs certificate",
                       ss.concentration_per_ml, ss.concentration_tolerance_pct))
    out = []
    suffix = f" ({where})" if where else ""
    for metric, label, certified, tol in checks:
        requirement = req if metric == ss.size_metric else \
            f"{format_value(certified, metric)} ± {tol:g} %"
        if metrics is None:
            out.append(CheckResult(scope, metric, label, requirement, None, False,
                                   f"bead standard {ss.sample!r} was not measured in this batch"))
            continue
        v = finite_or_none(metrics.get(metric))
        if v is None:
            out.append(CheckResult(scope, metric, label, requirement, None, False,
                                   f"no successful measurement of {ss.sample!r}{suffix}"))
            continue
        dev_pct = 100.0 * (v - certified) / certified
        ok = abs(dev_pct) <= tol + 1e-12
        reason = (f"deviation {dev_pct:+.1f} % from the certified value"
                  + ("" if ok else f", outside ± {tol:g} %") + suffix)
        out.append(CheckResult(scope, metric, label, requirement, v, ok, reason))
    return out


def control_limits(history: Sequence[float | None], sigma: float = 3.0,
                   min_points: int = 3) -> tuple[float, float, float] | None:
    """Centre line and control limits from earlier values: mean, mean − σ·SD, mean + σ·SD.

    Parameters
    ----------
    history : sequence of float or None
        Values of the earlier lots (missing ones ignored).
    sigma : float
        Half-width in standard deviations (3 for Shewhart limits).
    min_points : int
        Fewer finite values than this → None (insufficient history).

    Returns
    -------
    (centre, lower, upper) or None
        SD with ddof = 1.
    """
    vals = [f for f in (finite_or_none(v) for v in history) if f is not None]
    if len(vals) < max(min_points, 2):
        return None
    n = len(vals)
    mean = sum(vals) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return mean, mean - sigma * sd, mean + sigma * sd


@dataclass
class TrendPoint:
    lot: str
    value: float | None
    centre: float | None = None
    lower: float | None = None
    upper: float | None = None
    out_of_limits: bool | None = None   # None: no limits (insufficient history) or no value
    current: bool = False


@dataclass
class TrendResult:
    """One control chart: the lots in order, each with the limits from the lots before it."""

    metric: str
    points: list[TrendPoint] = field(default_factory=list)
    sigma: float = 3.0

    @property
    def current(self) -> TrendPoint | None:
        return next((p for p in self.points if p.current), None)

    def check(self, fail_on_excursion: bool) -> CheckResult:
        """The current lot's verdict as a CheckResult (passed None unless excursions fail)."""
        p = self.current
        label = f"Trend of {METRICS[self.metric][0].lower()}"
        if p is None or p.centre is None:
            return CheckResult("trend", self.metric, label, f"within mean ± {self.sigma:g} SD of earlier lots",
                               p.value if p else None, None, "insufficient history: no control limits yet")
        req = f"{format_value(p.lower, self.metric)} to {format_value(p.upper, self.metric)}"
        if p.value is None:
            return CheckResult("trend", self.metric, label, req, None, False if fail_on_excursion else None,
                               "no value for this lot")
        if p.out_of_limits:
            side = "above the upper" if p.value > (p.upper or 0) else "below the lower"
            return CheckResult("trend", self.metric, label, req, p.value, False if fail_on_excursion else None,
                               f"OUT OF TREND: {side} control limit" +
                               ("" if fail_on_excursion else "; investigate (not a release criterion)"))
        return CheckResult("trend", self.metric, label, req, p.value, True, "within the control limits")


def evaluate_trend(lot_values: Sequence[tuple[str, float | None]], current_lot: str, metric: str,
                   settings: TrendSettings | None = None) -> TrendResult:
    """Control chart of one metric over lots in production order, up to the current lot.

    Parameters
    ----------
    lot_values : sequence of (lot, value)
        Every lot in order (oldest first); lots after ``current_lot`` are ignored.
    current_lot : str
    metric : str
    settings : TrendSettings, optional

    Returns
    -------
    TrendResult
        Each point carries the limits computed from the points before it.
    """
    settings = settings or TrendSettings()
    res = TrendResult(metric=metric, sigma=settings.sigma)
    earlier: list[float | None] = []
    for lot, value in lot_values:
        v = finite_or_none(value)
        lim = control_limits(earlier, settings.sigma, settings.min_lots)
        pt = TrendPoint(lot=lot, value=v, current=(lot == current_lot))
        if lim is not None:
            pt.centre, pt.lower, pt.upper = lim
            if v is not None:
                pt.out_of_limits = not (pt.lower <= v <= pt.upper)
        res.points.append(pt)
        if lot == current_lot:
            break
        earlier.append(v)
    return res


def overall_verdict(checks: Sequence[CheckResult]) -> str:
    """"PASS" when no check failed and at least one passed, "FAIL" if any failed, else "NOT EVALUATED"."""
    if any(c.passed is False for c in checks):
        return "FAIL"
    if any(c.passed is True for c in checks):
        return "PASS"
    return "NOT EVALUATED"
