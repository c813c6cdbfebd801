"""Accuracy of the whole pipeline against the simulator's ground truth (issue 4 targets).

Each test simulates a seeded NTA video (640×480, 400–600 frames) and analyses it
end to end with ``exonta.pipeline.analyze``; tolerances are the issue's.
"""

import functools

import numpy as np
import pytest

from exonta.validation import CASES, truth_stats
from exonta.validation import run_case as _run_case

pytestmark = pytest.mark.slow

# each seeded case is simulated and analysed once per test session
run_case = functools.lru_cache(maxsize=None)(_run_case)


def _rel(value, truth):
    return abs(value / truth - 1.0)


def _main_peaks(size, min_fraction):
    return sorted((p for p in size["peaks"] if p["number_fraction"] >= min_fraction), key=lambda p: p["diameter_nm"])


# The targets are on the bias of the mode and D50, so they are judged on the mean of three seeded videos: one
# video's D50 scatters by ±1–2 % from seed to seed (37 °C, D50: −3.4, −1.8, −1.5 % for seeds 0–2), more than the
# margin a single draw leaves. Every single video must still be within 1.5× the tolerance.
SEEDS = (0, 1, 2)


@pytest.mark.parametrize("case, tol", [("mono100", 0.03), ("mono60", 0.05), ("mono400", 0.05),
                                       ("mono100_37c", 0.03)])
def test_monodisperse_mode_and_d50(case, tol):
    runs = [run_case(case, seed=s) for s in SEEDS]
    truth = runs[0]["truth"]
    for stat in ("mode", "d50"):
        err = np.array([r["size"][stat] / truth[stat] - 1.0 for r in runs])
        assert abs(err.mean()) < tol, (stat, err)
        assert np.all(np.abs(err) < 1.5 * tol), (stat, err)
    assert all(r["counts"]["n_valid_tracks"] >= 100 for r in runs)


# mono400: the spurious ~60 nm component (junk links of slow tracks to noise maxima inside the 50 nm physics
# radius) is removed by the second linking pass with the sample's own radius (exonta.track.quality)
@pytest.mark.parametrize("case", ["mono100", "mono60", "mono400"])
def test_monodisperse_has_no_invented_peaks(case):
    size = run_case(case, seed=0)["size"]
    main = _main_peaks(size, 0.05)
    assert len(main) == 1 and main[0]["number_fraction"] > 0.9, size["peaks"]


def test_drift_is_removed_and_sizes_hold():
    r = run_case("drift8", seed=0)
    vx, vy = r["drift_um_per_s"]
    assert vx == pytest.approx(8.0, rel=0.1) and abs(vy) < 0.5
    assert _rel(r["size"]["mode"], 100.0) < 0.03 and _rel(r["size"]["d50"], 100.0) < 0.03, r["size"]


def test_bimodal_100_200_two_peaks_and_fractions():
    r = run_case("bimodal100_200", seed=0)
    peaks = _main_peaks(r["size"], 0.1)
    assert len(peaks) == 2, r["size"]["peaks"]
    for p, d in zip(peaks, (100.0, 200.0)):
        assert _rel(p["diameter_nm"], d) < 0.05, peaks
        assert abs(p["number_fraction"] - 0.5) < 0.10, peaks


def test_bimodal_100_150_is_resolved():
    r = run_case("bimodal100_150", seed=0)
    peaks = _main_peaks(r["size"], 0.15)
    assert len(peaks) == 2, r["size"]["peaks"]
    assert 90 < peaks[0]["diameter_nm"] < 112 and 135 < peaks[1]["diameter_nm"] < 168, peaks


def test_ev_like_lognormal_quantiles():
    r = run_case("ev_lognormal", seed=0)
    size, truth = r["size"], r["truth"]
    assert _rel(size["d50"], truth["d50"]) < 0.05, size
    assert _rel(size["d10"], truth["d10"]) < 0.10, size
    assert _rel(size["d90"], truth["d90"]) < 0.10, size


def test_truth_of_lognormal_case():
    t = truth_stats(CASES["ev_lognormal"])
    assert t["d50"] == pytest.approx(110.0)
    assert t["d10"] == pytest.approx(68.3, abs=0.1) and t["d90"] == pytest.approx(177.1, abs=0.1)
