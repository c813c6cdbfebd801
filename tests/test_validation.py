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


def _artefact_warnings(run):
    return [w for w in run["warnings"] if "wrong links" in w]


def test_linking_artefact_peaks_are_warned_about_and_real_ones_are_not():
    # fast 100 nm beads at 37 °C: tracks with wrong links gather into a small peak at 40–55 nm in some seeds
    # (README "Ghost peaks"); every such peak must be named, and the clean cases must get no such warning
    runs = [run_case("mono100_37c", seed=s) for s in SEEDS]
    ghosts = 0
    for r in runs:
        small = [p for p in r["size"]["peaks"] if p["diameter_nm"] < 70 and p["number_fraction"] >= 0.05]
        found = _artefact_warnings(r)
        assert len(found) == len(small), (r["size"]["peaks"], found)
        for p, msg in zip(small, found):
            assert f"the {p['diameter_nm']:.0f} nm peak" in msg
        ghosts += len(small)
    assert ghosts >= 1  # seeds 1 and 2 had one each (44 and 42 nm, 10-12 %) when this test was written
    for case in ("mono100", "mono60", "bimodal100_200", "bimodal100_150", "ev_lognormal"):
        assert _artefact_warnings(run_case(case, seed=0)) == [], case


def _smallest_tracked_nm(run):
    fit = run["track_truth"][run["track_truth"]["fitted"]]
    return float(np.nanmin(fit["true_diameter_nm"].to_numpy(float)))


def _limit_warnings(run):
    return [w for w in run["warnings"] if "reaches the detection limit" in w]


# the detection limit is the size whose particles reach the threshold only at the sheet's centre, so the smallest
# tracked particle sits a little above it (measured 0.92-1.01 of it on the EV-like and broad PS samples)
LIMIT_BAND = (0.88, 1.03)


def test_detection_limit_of_the_ev_like_sample_and_the_selection_it_explains():
    from exonta.analysis.distribution import weighted_quantiles
    from exonta.analysis.visibility import fit_visibility, inclusion

    r = run_case("ev_lognormal", seed=0)
    lim = r["size"]["detection_limit"]["diameter_nm"]
    assert LIMIT_BAND[0] < lim / _smallest_tracked_nm(r) < LIMIT_BAND[1], (lim, _smallest_tracked_nm(r))
    assert len(_limit_warnings(r)) == 1
    # with the simulator's true diameters of the fitted tracks, weighting each track by 1/inclusion turns the
    # tracks' D50 (selected towards large particles) into the D50 of the particles drawn
    res = r["result"]
    cfg = res.config
    model = fit_visibility(res.features, res.tracks, res.distribution, cfg.acquisition, cfg.detect,
                           cfg.concentration)
    fit = r["track_truth"][r["track_truth"]["fitted"]]
    d = fit["true_diameter_nm"].dropna().to_numpy(float)
    iota = inclusion(d, model, cfg.acquisition, cfg.concentration)
    seen = iota > 0
    drawn = float(np.median(r["sample_diameters_nm"]))
    tracks_d50 = float(weighted_quantiles(d, [0.5])[0])
    weighted_d50 = float(weighted_quantiles(d[seen], [0.5], weights=1.0 / iota[seen])[0])
    assert tracks_d50 > 1.05 * drawn and abs(weighted_d50 / drawn - 1.0) < 0.03, (tracks_d50, weighted_d50, drawn)


@pytest.mark.parametrize("case", ["mono100", "mono60", "mono100_37c"])
def test_monodisperse_beads_sit_far_above_their_detection_limit(case):
    for seed in SEEDS[:2]:
        r = run_case(case, seed=seed)
        lim = r["size"]["detection_limit"]["diameter_nm"]
        assert lim < 0.75 * r["truth"]["d50"] and _limit_warnings(r) == [], (lim, r["warnings"])


def test_detection_limit_of_a_sample_reaching_below_it(monkeypatch):
    from exonta.validation import ValidationCase

    case = ValidationCase("broad_ps", ({"distribution": "lognormal", "median_nm": 70.0, "gsd": 1.5,
                                        "refractive_index": 1.59},), 1.5e9, n_frames=300)
    monkeypatch.setitem(CASES, "broad_ps", case)
    r = _run_case("broad_ps", seed=0)
    lim = r["size"]["detection_limit"]["diameter_nm"]
    assert LIMIT_BAND[0] < lim / _smallest_tracked_nm(r) < LIMIT_BAND[1], (lim, _smallest_tracked_nm(r))
    assert np.mean(r["sample_diameters_nm"] < lim) > 0.2  # a fifth of the sample is below it
    assert len(_limit_warnings(r)) == 1


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


def test_label_tracks_finds_junk_and_majority_particle():
    import pandas as pd

    from exonta.validation import label_tracks

    frames = np.arange(5)
    truth = pd.DataFrame({"frame": np.tile(frames, 2), "particle": np.repeat([7, 9], 5),
                          "x": np.r_[10.0 + frames, 50.0 + 0 * frames], "y": np.r_[20.0 + 0 * frames, 60.0 - frames],
                          "diameter_nm": np.repeat([100.0, 200.0], 5)})
    a = truth[truth.particle == 7][["frame", "x", "y"]].to_numpy(float)
    b = truth[truth.particle == 9][["frame", "x", "y"]].to_numpy(float)
    t1 = a.copy()
    t1[2, 1] += 10.0  # one junk position, 10 px off
    t2 = np.r_[b[:2], a[2:] + 0.5]  # switches from particle 9 to particle 7 (within 3 px)
    t3 = a.copy()
    t3[:, 2] += 30.0  # nowhere near any particle
    tracks = pd.DataFrame(np.r_[t1, t2, t3], columns=["frame", "x", "y"])
    tracks["particle"] = np.repeat([1, 2, 3], 5)
    lab = label_tracks(tracks.sample(frac=1.0, random_state=0), truth).set_index("particle")
    assert lab.loc[1, "junk_fraction"] == pytest.approx(0.2) and lab.loc[1, "true_particle"] == 7
    assert lab.loc[1, "purity"] == pytest.approx(0.8) and lab.loc[1, "true_diameter_nm"] == 100.0
    assert lab.loc[2, "junk_fraction"] == 0.0 and lab.loc[2, "true_particle"] == 7
    assert lab.loc[2, "purity"] == pytest.approx(0.6)
    assert lab.loc[3, "junk_fraction"] == 1.0 and lab.loc[3, "true_particle"] == -1
    assert np.isnan(lab.loc[3, "true_diameter_nm"]) and lab.loc[3, "purity"] == 0.0
    assert list(lab["n_positions"]) == [5, 5, 5]


def test_deconvolution_recovers_the_true_sizes_of_its_tracks():
    """The estimator alone, without track selection and junk links: deconvolve only the fitted tracks that
    have no junk position and compare with the *true* diameters of those same tracks (one count per track).

    The population truth that test_ev_like_lognormal_quantiles judges differs from this by the selection of
    tracks (small EVs are visible in a thinner slab: their D10 is ~19 % above the sample's) and the reported
    statistics differ from the clean-track fit by the junk links (−17 % at D10); see benchmarks/bench_selection.py.
    """
    from exonta.analysis.distribution import weighted_quantiles
    from exonta.validation import refit_tracks

    r = run_case("ev_lognormal", seed=0)
    lab = r["track_truth"]
    fit = lab[lab["fitted"]]
    clean = fit[fit["junk_fraction"] == 0]
    assert len(clean) > 0.7 * len(fit) > 500
    stats = refit_tracks(r, clean["particle"].to_numpy())
    true_q = dict(zip(("d10", "d50", "d90"), weighted_quantiles(clean["true_diameter_nm"], [0.1, 0.5, 0.9])))
    assert _rel(stats["d50"], true_q["d50"]) < 0.03, (stats, true_q)
    assert _rel(stats["d10"], true_q["d10"]) < 0.05, (stats, true_q)
    assert _rel(stats["d90"], true_q["d90"]) < 0.05, (stats, true_q)


def test_deconvolution_recovers_the_median_of_its_tracks_at_37c():
    """As above for the fast 37 °C beads, whose reported D50 (−3.4 % at seed 0) is low because of junk links
    (~43 % of the fitted tracks hold at least one junk position): without them the estimator is on target."""
    from exonta.analysis.distribution import weighted_quantiles
    from exonta.validation import refit_tracks

    r = run_case("mono100_37c", seed=0)
    lab = r["track_truth"]
    clean = lab[lab["fitted"] & (lab["junk_fraction"] == 0)]
    assert len(clean) > 400
    stats = refit_tracks(r, clean["particle"].to_numpy())
    true_d50 = weighted_quantiles(clean["true_diameter_nm"], [0.5])[0]
    assert _rel(stats["d50"], true_d50) < 0.03, (stats, true_d50)


# The binned candidate search (DetectParams.search_binning = 2, `--fast-search`): fewer noise candidates, so fewer
# junk links. Monodisperse beads stay within their tolerances (seed 0: 100 nm +2.3/+1.9 %, 37 °C +1.1/+0.4 %,
# 400 nm +1.5/+1.0 %, mode/D50), but the EV-like sample then shows the selection bias that the junk links offset at
# full resolution (README, "right partly for offsetting reasons"): D10/D50 +14/+10 %. Pinned here so that a change
# of either is seen; the option's description says so.
@pytest.mark.parametrize("case, tol", [("mono100", 0.03), ("mono100_37c", 0.03), ("mono400", 0.05)])
def test_binned_search_sizes_monodisperse_beads(case, tol):
    r = _run_case(case, seed=0, detect={"search_binning": 2})  # (a dict argument: not cached)
    assert r["config"].detect.search_binning == 2
    for stat in ("mode", "d50"):
        assert _rel(r["size"][stat], 100.0 if case != "mono400" else 400.0) < tol, (stat, r["size"])
    main = _main_peaks(r["size"], 0.05)
    assert len(main) == 1 and main[0]["number_fraction"] > 0.9, r["size"]["peaks"]


def test_brightness_links_size_crowded_60nm_beads_with_the_binned_search():
    """60 nm beads at 1.5e9/mL (0.3 other detections inside the search radius of each spot): linking by distance
    alone gives a fast particle's long steps to its neighbours (README, Known gaps: crowded fields), D50 +5.0 %
    with the binned search; with the brightness term ("auto": its spread measured on a first pass) +2.3 %."""
    plain = _run_case("mono60", seed=0, detect={"search_binning": 2})
    bright = _run_case("mono60", seed=0, detect={"search_binning": 2}, link={"brightness_log_sd": "auto"})
    assert 0.1 < bright["config"].link.brightness_log_sd < 1.0
    for stat in ("mode", "d50"):
        assert _rel(bright["size"][stat], 60.0) < 0.04, (stat, bright["size"])
    assert bright["size"]["d50"] < plain["size"]["d50"] - 1.0, (plain["size"]["d50"], bright["size"]["d50"])


def test_binned_search_shows_the_ev_selection_bias():
    r = _run_case("ev_lognormal", seed=0, detect={"search_binning": 2})
    t = r["truth"]
    assert 0.05 < r["size"]["d50"] / t["d50"] - 1.0 < 0.15, r["size"]
    assert abs(r["size"]["d90"] / t["d90"] - 1.0) < 0.10, r["size"]
