"""Pure specification evaluation: parsing, criteria, system suitability, control limits, trend."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from exonta.errors import ExontaInputError
from exonta.report.content import t975
from exonta.report.spec import (
    METRICS, Criterion, SystemSuitability, TrendSettings, control_limits, evaluate_criteria, evaluate_suitability,
    evaluate_trend, format_value, load_spec, overall_verdict, parse_spec, sci,
)


def _spec(**kw):
    base = {"criterion": [{"metric": "mode_nm", "min": 70, "max": 150}, {"metric": "d90_nm", "max": 300},
                          {"metric": "concentration_per_ml", "min": 1e10}]}
    base.update(kw)
    return parse_spec(base, "test")


def test_parse_valid_spec_and_defaults(spec_file: Path) -> None:
    spec = load_spec(spec_file)
    assert spec.name == "EV release spec" and spec.version == "1.2"
    assert [c.metric for c in spec.criterion] == ["mode_nm", "d90_nm", "concentration_per_ml",
                                                   "concentration_cv_pct", "valid_tracks"]
    assert spec.system_suitability.diameter_nm == 100 and spec.system_suitability.size_metric == "mode_nm"
    assert spec.trend.sigma == 3.0 and spec.trend.min_lots == 3 and not spec.trend.fail_on_excursion
    assert spec.sha256 is not None and len(spec.sha256) == 64 and spec.source == str(spec_file)
    assert spec.criterion[0].requirement == "70.0 nm to 150.0 nm"
    assert spec.criterion[1].requirement == "≤ 300.0 nm"
    assert spec.criterion[2].requirement == "≥ 1.00 × 10¹⁰ particles/mL"


@pytest.mark.parametrize("data, needle", [
    ({"criterion": [{"metric": "mode_nm", "min": 1, "colour": "red"}]}, "criterion.0.colour: unknown key"),
    ({"criterion": [{"metric": "modal_nm", "min": 1}]}, "unknown metric 'modal_nm'"),
    ({"criterion": [{"metric": "mode_nm"}]}, "needs min, max or both"),
    ({"criterion": [{"metric": "mode_nm", "min": 200, "max": 100}]}, "min (200) is above max (100)"),
    ({"criterion": [{"metric": "mode_nm", "min": "seventy"}]}, "criterion.0.min"),
    ({"system_suitability": {"sample": "b", "diameter_nm": 100}}, "system_suitability.tolerance_pct: is required"),
    ({"system_suitability": {"sample": "b", "diameter_nm": 100, "tolerance_pct": 5, "concentration_per_ml": 1e8}},
     "together"),
    ({"trend": {"metrics": ["nope"]}}, "unknown trend metric"),
    ({"trend": {"sigma": -1}}, "trend.sigma"),
    ({"criteria": []}, "criteria: unknown key"),
    ({"sha256": "x"}, "sha256: unknown key"),
])
def test_bad_spec_messages(data, needle) -> None:
    with pytest.raises(ExontaInputError) as ei:
        parse_spec(data, "spec.toml")
    msg = str(ei.value)
    assert needle in msg and msg.startswith("invalid specification spec.toml")
    assert "\n" not in msg


def test_load_spec_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ExontaInputError, match="not found"):
        load_spec(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[criterion]\nmetric = ")
    with pytest.raises(ExontaInputError, match="not valid TOML"):
        load_spec(bad)


def test_criteria_pass_fail_and_boundaries() -> None:
    spec = _spec()
    metrics = {"ok": {"mode_nm": 70.0, "d90_nm": 300.0, "concentration_per_ml": 1e10},     # bounds inclusive
               "big": {"mode_nm": 150.0001, "d90_nm": 250.0, "concentration_per_ml": 5e9},
               "none": {"mode_nm": None, "d90_nm": float("nan"), "concentration_per_ml": 2e10}}
    res = evaluate_criteria(spec, metrics, {"none": {"mode_nm": "no successfully analysed replicate video"}})
    by = {(r.scope, r.metric): r for r in res}
    assert len(res) == 9
    assert all(by[("ok", m)].passed for m in ("mode_nm", "d90_nm", "concentration_per_ml"))
    assert by[("big", "mode_nm")].passed is False and "above the maximum 150.0 nm" in by[("big", "mode_nm")].reason
    assert by[("big", "concentration_per_ml")].passed is False
    assert "below the minimum" in by[("big", "concentration_per_ml")].reason
    assert by[("big", "d90_nm")].passed is True
    # a missing value fails, with the reason given
    assert by[("none", "mode_nm")].passed is False and by[("none", "mode_nm")].verdict == "FAIL"
    assert by[("none", "mode_nm")].reason == "no successfully analysed replicate video"
    assert by[("none", "d90_nm")].passed is False and "not measured" in by[("none", "d90_nm")].reason
    assert by[("none", "mode_nm")].value_text == "–"
    assert by[("ok", "concentration_per_ml")].value_text == "1.00 × 10¹⁰ particles/mL"
    assert overall_verdict(res) == "FAIL"
    assert overall_verdict([r for r in res if r.scope == "ok"]) == "PASS"
    assert overall_verdict([]) == "NOT EVALUATED"


def test_criterion_restricted_to_samples() -> None:
    spec = parse_spec({"criterion": [{"metric": "valid_tracks", "min": 1000, "samples": ["A", "Z"]}]})
    res = evaluate_criteria(spec, {"A": {"valid_tracks": 1500}, "B": {"valid_tracks": 10}})
    assert [(r.scope, r.passed) for r in res] == [("A", True), ("Z", False)]
    assert res[1].reason == "sample not found in this lot"


def test_system_suitability() -> None:
    ss = SystemSuitability(sample="beads100", diameter_nm=100, tolerance_pct=5, concentration_per_ml=1e8,
                           concentration_tolerance_pct=20)
    ok = evaluate_suitability(ss, {"mode_nm": 104.9, "concentration_per_ml": 0.81e8})
    assert [c.passed for c in ok] == [True, True]
    assert "+4.9 %" in ok[0].reason and "-19.0 %" in ok[1].reason
    assert ok[0].requirement == "100 nm ± 5 %"
    bad = evaluate_suitability(ss, {"mode_nm": 94.0, "concentration_per_ml": 1.3e8}, "lot L0")
    assert [c.passed for c in bad] == [False, False]
    assert "-6.0 %" in bad[0].reason and "outside ± 5 %" in bad[0].reason and "(lot L0)" in bad[0].reason
    missing = evaluate_suitability(ss, None)
    assert [c.passed for c in missing] == [False, False]
    assert "was not measured in this batch" in missing[0].reason
    empty = evaluate_suitability(ss, {"mode_nm": None, "concentration_per_ml": None})
    assert all(c.passed is False and "no successful measurement" in c.reason for c in empty)
    # size only, other size statistic
    d50 = evaluate_suitability(SystemSuitability(sample="b", diameter_nm=200, tolerance_pct=10, size_metric="d50_nm"),
                               {"d50_nm": 215.0, "mode_nm": 50.0})
    assert len(d50) == 1 and d50[0].passed and d50[0].metric == "d50_nm"


def test_control_limits_match_numpy() -> None:
    rng = np.random.default_rng(7)
    vals = rng.normal(110.0, 4.0, 12)
    centre, lo, hi = control_limits(list(vals) + [None, float("nan")], sigma=3.0, min_points=3)
    assert centre == pytest.approx(vals.mean(), rel=1e-12)
    assert hi - centre == pytest.approx(3.0 * vals.std(ddof=1), rel=1e-12)
    assert centre - lo == pytest.approx(3.0 * vals.std(ddof=1), rel=1e-12)
    assert control_limits([1.0, 2.0], min_points=3) is None
    assert control_limits([1.0, None, 2.0, float("inf")], min_points=3) is None


def test_trend_uses_only_earlier_lots() -> None:
    series = [("L1", 100.0), ("L2", 102.0), ("L3", 98.0), ("L4", 101.0), ("L5", 130.0), ("L6", 0.0)]
    tr = evaluate_trend(series, "L5", "mode_nm", TrendSettings(min_lots=3))
    assert [p.lot for p in tr.points] == ["L1", "L2", "L3", "L4", "L5"]     # later lots are not shown
    cur = tr.current
    assert cur.current and cur.value == 130.0
    earlier = np.array([100.0, 102.0, 98.0, 101.0])
    assert cur.centre == pytest.approx(earlier.mean(), rel=1e-12)
    assert cur.upper == pytest.approx(earlier.mean() + 3 * earlier.std(ddof=1), rel=1e-12)
    assert cur.out_of_limits is True
    assert tr.points[2].centre is None and tr.points[3].centre is not None   # L4 has 3 earlier lots
    chk = tr.check(fail_on_excursion=False)
    assert chk.passed is None and chk.reason.startswith("OUT OF TREND: above the upper")
    assert tr.check(fail_on_excursion=True).passed is False
    inside = evaluate_trend(series, "L4", "mode_nm", TrendSettings(min_lots=3))
    assert inside.current.out_of_limits is False and inside.check(False).passed is True
    young = evaluate_trend(series, "L2", "mode_nm")
    c = young.check(False)
    assert c.passed is None and "insufficient history" in c.reason


def test_formatting_helpers() -> None:
    assert sci(2.0e10) == "2.00 × 10¹⁰" and sci(9.996e9) == "1.00 × 10¹⁰" and sci(1.5e-3) == "1.50 × 10⁻³"
    assert sci(123.0) == "123"
    assert format_value(12.345, "concentration_cv_pct") == "12.3 %"
    assert format_value(None, "mode_nm") == "–" and format_value(float("nan"), "mode_nm") == "–"
    assert format_value(1234, "valid_tracks") == "1234 tracks"
    assert all(len(v) == 3 for v in METRICS.values())
    # t quantiles (scipy.stats.t.ppf(0.975, df))
    assert t975(1) == pytest.approx(12.7062, abs=1e-4) and t975(2) == pytest.approx(4.3027, abs=1e-4)
    assert t975(60) == pytest.approx(2.0003, abs=2e-4) and t975(1000) == pytest.approx(1.9623, abs=2e-4)
    with pytest.raises(ValueError):
        t975(0)
    assert math.isfinite(Criterion(metric="span", max=2.0).max)
