"""Tests of exonta.analysis.concentration: pure parts on synthetic tables, then simulator end-to-end (slow)."""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pandas as pd
import pytest

from exonta.analysis.concentration import (
    CALIBRATION_SCHEMA,
    Calibration,
    ConcentrationResult,
    analysed_region,
    block_bootstrap_rel_se,
    brightness_fit,
    calibrate,
    compound_poisson_rel_se,
    count_per_frame,
    depth_model_um,
    estimate_concentration,
    load_calibration,
    occupancy_weights,
    residence_lengths,
    save_calibration,
)
from exonta.config import Acquisition, ConcentrationParams, DetectParams
from exonta.errors import ExontaInputError
from exonta.physics import relative_scattering

ACQ = Acquisition(pixel_size_um=0.2, fps=30.0, exposure_s=0.02, temperature_c=22.0)
DETECT = DetectParams(psf_sigma_px=1.5, edge_px=4, threshold_snr=5.0)
SHAPE = (108, 208)  # analysed 100 × 200 px = 20 × 40 µm = 800 µm²


# --------------------------------------------------------------------------- synthetic data
def _synthetic_video(rng, *, lam_per_frame, mean_residence, n_frames, sheet_sigma_um=3.0, ratio=20.0, diam_nm=100.0, n_bins=40, shape=SHAPE, edge=4):
    """Particles arriving as a Poisson process, each visible for a geometric number of frames.

    Each detection has a random |z| uniform in the detection slab, brightness
    B_max·exp(−z²/2σ²) with B_max = 5·ratio (snr units; threshold_snr = 5), so the model holds exactly.
    """
    h, w = shape
    rate = lam_per_frame / mean_residence  # arrivals per frame (steady state: λ = rate · mean residence)
    warm = int(20 * mean_residence)
    n_arr = rng.poisson(rate * (n_frames + warm))
    start = rng.integers(-warm, n_frames, size=n_arr)
    length = rng.geometric(1.0 / mean_residence, size=n_arr)
    z_max = sheet_sigma_um * math.sqrt(2 * math.log(ratio))
    pid = np.repeat(np.arange(n_arr, dtype=np.int64), length)
    first = np.repeat(np.cumsum(length) - length, length)
    frame = np.repeat(start, length) + (np.arange(pid.size) - first)
    ok = (frame >= 0) & (frame < n_frames)
    x0 = rng.uniform(edge, w - 1 - edge, n_arr)
    y0 = rng.uniform(edge, h - 1 - edge, n_arr)
    pid, frame = pid[ok], frame[ok]
    z = rng.uniform(0, z_max, size=pid.size)
    b = 5.0 * ratio * np.exp(-z**2 / (2 * sheet_sigma_um**2))
    tracks = pd.DataFrame({"frame": frame.astype(np.int64), "x": x0[pid] + rng.normal(0, 0.1, pid.size),
                           "y": y0[pid] + rng.normal(0, 0.1, pid.size), "mass": 10 * b, "signal": b,
                           "size_px": 1.5, "background": 10.0, "snr": b, "particle": pid})
    tracks = tracks.sort_values(["frame", "particle"], ignore_index=True)
    tracks["x_corrected"] = tracks["x"]
    tracks["y_corrected"] = tracks["y"]
    features = tracks.drop(columns=["particle", "x_corrected", "y_corrected"])
    per = tracks.groupby("particle").agg(n_positions=("frame", "size")).reset_index()
    per["diameter_nm"] = diam_nm * np.exp(rng.normal(0, 0.05, len(per)))
    per["valid"] = per["n_positions"] >= 10
    dist = _mono_distribution(diam_nm, n_bins)
    return features, tracks, per, dist


def _mono_distribution(diam_nm, n_bins=40, spread=0.04):
    edges = np.geomspace(20, 2000, n_bins + 1)
    centres = np.sqrt(edges[1:] * edges[:-1])
    widths = np.diff(edges)
    w = np.exp(-0.5 * (np.log(centres / diam_nm) / spread) ** 2)
    w /= w.sum()
    table = pd.DataFrame({"diameter_nm": centres, "bin_width_nm": widths, "raw_density": w / widths,
                          "deconvolved_density": w / widths})
    return types.SimpleNamespace(table=table, stats={})


def _calibration(**kw):
    base = dict(
        created="2026-01-01T00:00:00+00:00", exonta_version="0.1.0", standard_concentration_per_ml=1e8,
        standard_diameter_nm=100.0, standard_refractive_index=1.59, medium_refractive_index=1.333,
        acquisition={"pixel_size_um": 0.2, "fps": 30.0, "exposure_s": 0.02, "temperature_c": 22.0},
        detect_params_hash="abc", detect_threshold_snr=5.0, psf_sigma_px=1.5, edge_px=4, noise_level=None,
        mean_particles_per_frame=20.0, mean_particles_per_frame_rel_se=0.03, analysed_area_um2=800.0, n_frames=500,
        n_distinct_particles=400, effective_depth_um=12.0, effective_depth_rel_se=0.03, brightness_column="signal",
        log_brightness_max=5.0, brightness_ratio=20.0, sheet_sigma_um=2.45, sheet_sigma_simple_um=2.45,
        video_sha256="0" * 64)
    base.update(kw)
    return Calibration(**base)


# --------------------------------------------------------------------------- region and counting
def test_analysed_region_default_edge_is_ceil_2p5_sigma():
    e, area = analysed_region((100, 200), DetectParams(psf_sigma_px=1.5), 0.2)
    assert e == 4  # ceil(3.75)
    assert area == pytest.approx((200 - 8) * (100 - 8) * 0.04)
    e, area = analysed_region((100, 200), DetectParams(psf_sigma_px=1.5, edge_px=0), 0.2)
    assert (e, area) == (0, pytest.approx(200 * 100 * 0.04))
    assert analysed_region((6, 6), DetectParams(edge_px=3), 0.2)[1] == 0.0


def test_count_per_frame_excludes_edges_consistently():
    feats = pd.DataFrame({"frame": [0, 0, 0, 1, 1, 3, 7],
                          "x": [4.0, 3.4, 203.4, 50.0, 203.6, 10.0, 10.0],
                          "y": [50.0, 50.0, 50.0, 103.4, 20.0, 3.6, 10.0]})
    c = count_per_frame(feats, 5, SHAPE, 4)
    # frame 0: x=4 (in), 3.4→3 (out), 203.4→203 (= w-1-e, in); frame 1: y=103.4→103 (in), x=203.6→204 (out)
    # frame 3: y=3.6→4 (in); frame 7 is beyond n_frames
    assert c.tolist() == [2, 1, 0, 1, 0]
    assert count_per_frame(feats.iloc[:0], 3, SHAPE, 4).tolist() == [0, 0, 0]


def test_residence_lengths_counts_detections_per_track():
    tracks = pd.DataFrame({"frame": [0, 1, 2, 0, 1], "x": [10.0] * 4 + [1.0], "y": [10.0] * 5,
                           "particle": [5, 5, 5, 9, 9]})
    assert sorted(residence_lengths(tracks, SHAPE, 4).tolist()) == [1, 3]


# --------------------------------------------------------------------------- uncertainty
def test_compound_poisson_rel_se():
    assert compound_poisson_rel_se(np.full(100, 7)) == pytest.approx(0.1)  # 1/sqrt(K)
    L = np.array([1, 2, 3, 10])
    assert compound_poisson_rel_se(L) == pytest.approx(math.sqrt(1 + 4 + 9 + 100) / 16)
    assert compound_poisson_rel_se(np.zeros(0)) == math.inf


def test_block_bootstrap_iid_matches_poisson():
    rng = np.random.default_rng(1)
    x = rng.poisson(20.0, size=4000)
    rse = block_bootstrap_rel_se(x, 1, n_resamples=2000, seed=2)
    assert rse == pytest.approx(math.sqrt(20.0 / 4000) / 20.0, rel=0.1)
    assert block_bootstrap_rel_se(np.full(50, 3), 5) == 0.0
    assert block_bootstrap_rel_se(np.zeros(50), 5) == math.inf


def test_block_bootstrap_sees_correlation_that_naive_poisson_misses():
    """Counts of particles that stay ~30 frames: the SE is ~sqrt(2·30) × the naive Poisson one."""
    rng = np.random.default_rng(3)
    ests = []
    for rep in range(40):
        f, tr, *_ = _synthetic_video(rng, lam_per_frame=10, mean_residence=30, n_frames=1500)
        ests.append(count_per_frame(f, 1500, SHAPE, 4).mean())
    true_rse = np.std(ests, ddof=1) / np.mean(ests)
    counts = count_per_frame(f, 1500, SHAPE, 4)
    naive = 1 / math.sqrt(counts.sum())
    boot = block_bootstrap_rel_se(counts, 2 * 60, n_resamples=1000, seed=0)
    cp = compound_poisson_rel_se(residence_lengths(tr, SHAPE, 4))
    assert true_rse > 4 * naive
    assert 0.6 * true_rse < cp < 1.6 * true_rse
    assert 0.5 * true_rse < boot < 1.6 * true_rse


# --------------------------------------------------------------------------- depth model
def test_depth_model_formula_and_threshold():
    assert depth_model_um(1.0, 2.0, math.e) == pytest.approx(2 * 2.0 * math.sqrt(2.0))
    assert depth_model_um(0.5, 2.0, 2.0) == 0.0  # exactly at threshold
    assert depth_model_um(0.1, 2.0, 2.0) == 0.0
    k = relative_scattering(np.array([60.0, 100.0, 200.0, 400.0]), 1.59)
    h = depth_model_um(k, 3.0, 20.0)
    assert np.all(np.diff(h) > 0)  # larger particles are seen deeper in the sheet
    # depth where B0 s exp(-z²/2σ²) = T
    z = h[2] / 2
    assert 20.0 * k[2] * math.exp(-z**2 / (2 * 9.0)) == pytest.approx(1.0)


def test_brightness_fit_recovers_ratio():
    rng = np.random.default_rng(0)
    sigma, ratio, bmax = 3.0, 25.0, 300.0
    z = rng.uniform(0, sigma * math.sqrt(2 * math.log(ratio)), 20000)
    b = bmax * np.exp(-z**2 / (2 * sigma**2)) * np.exp(rng.normal(0, 0.05, z.size))
    log_bmax, log_ratio = brightness_fit(b)
    assert log_ratio == pytest.approx(math.log(ratio), rel=0.05)
    assert log_bmax == pytest.approx(math.log(bmax), abs=0.05)
    with pytest.raises(ExontaInputError):
        brightness_fit(np.ones(5))


# --------------------------------------------------------------------------- per-bin allocation
def test_occupancy_weights_use_track_length_by_size():
    edges = np.array([50.0, 80.0, 125.0, 200.0, 320.0])
    c = np.sqrt(edges[1:] * edges[:-1])
    w = np.array([0.0, 0.5, 0.5, 0.0])
    dist = types.SimpleNamespace(table=pd.DataFrame({"diameter_nm": c, "bin_width_nm": np.diff(edges),
                                                     "deconvolved_density": w / np.diff(edges)}))
    rng = np.random.default_rng(0)
    d = np.r_[np.full(200, c[1]), np.full(200, c[2])] * np.exp(rng.normal(0, 0.02, 400))
    n = np.r_[np.full(200, 10), np.full(200, 30)]
    parts = pd.DataFrame({"diameter_nm": d, "n_positions": n, "valid": True})
    dd, occ = occupancy_weights(dist, parts)
    assert occ.sum() == pytest.approx(1.0)
    assert occ[1] == pytest.approx(0.25, abs=0.03) and occ[2] == pytest.approx(0.75, abs=0.03)
    # few tracks: constant length, the number fractions are kept
    _, occ2 = occupancy_weights(dist, parts.iloc[::10])
    np.testing.assert_allclose(occ2, w, atol=1e-12)


# --------------------------------------------------------------------------- estimate_concentration
# The unit tests below check the counting and depth arithmetic on synthetic tables whose tracks do not hold
# every feature; they count every detection (min_linked_frames=1). The persistence rule that the pipeline
# applies by default is tested in test_only_persistent_detections_are_counted.
COUNT_ALL = {"min_linked_frames": 1}


def _estimate(features, tracks, parts, dist, cal=None, acq=ACQ, **params):
    params = {**COUNT_ALL, **params}
    return estimate_concentration(features=features, tracks=tracks, particles=parts, distribution=dist,
                                  acquisition=acq, params=ConcentrationParams(**params), detect_params=DETECT,
                                  frame_shape=SHAPE, n_frames=int(features["frame"].max()) + 1 if len(features)
                                  else 100, calibration=cal)


def test_nominal_depth_value_dilution_and_per_bin_sum():
    rng = np.random.default_rng(5)
    f, tr, parts, dist = _synthetic_video(rng, lam_per_frame=20, mean_residence=10, n_frames=400)
    n_frames = int(f["frame"].max()) + 1
    r = _estimate(f, tr, parts, dist, nominal_depth_um=10.0)
    area = 200 * 100 * 0.04
    mean_n = count_per_frame(f, n_frames, SHAPE, 4).mean()
    assert isinstance(r, ConcentrationResult)
    assert r.details["method"] == "nominal"
    assert r.value_per_ml == pytest.approx(mean_n / (area * 10.0) * 1e12)
    assert r.per_bin_per_ml.shape == (len(dist.table),)
    assert r.per_bin_per_ml.sum() == pytest.approx(r.value_per_ml, rel=1e-9)
    assert r.ci95_low_per_ml < r.value_per_ml < r.ci95_high_per_ml
    assert any("nominal depth" in w for w in r.warnings)
    r4 = _estimate(f, tr, parts, dist, acq=ACQ.model_copy(update={"dilution": 4.0}))
    assert r4.value_per_ml == pytest.approx(4 * r.value_per_ml)
    assert r4.details["dilution"] == 4.0


def test_calibrated_size_model_reproduces_standard_and_corrects_other_sizes():
    """Synthetic videos built exactly on the depth model: calibrate on 100 nm, measure 200 nm."""
    rng = np.random.default_rng(7)
    sigma, ratio, area = 2.5, 20.0, 800.0
    c_true = 2e9
    h100 = depth_model_um(1.0, sigma, ratio)
    lam = c_true * 1e-12 * area * h100
    f, tr, parts, dist = _synthetic_video(rng, lam_per_frame=lam, mean_residence=10, n_frames=3000,
                                          sheet_sigma_um=sigma, ratio=ratio)
    n_frames = int(f["frame"].max()) + 1
    result = types.SimpleNamespace(
        input={"n_frames": n_frames, "height": SHAPE[0], "width": SHAPE[1], "sha256": "a" * 64, "path": "cal.tif"},
        config=types.SimpleNamespace(acquisition=ACQ, concentration=ConcentrationParams(**COUNT_ALL), detect=DETECT),
        features=f, tracks=tr, particles=parts, distribution=dist)
    cal = calibrate(result, c_true)
    assert cal.brightness_ratio == pytest.approx(ratio, rel=0.1)
    assert cal.effective_depth_um == pytest.approx(h100, rel=0.05)
    assert cal.sheet_sigma_um == pytest.approx(sigma, rel=0.08)
    r = _estimate(f, tr, parts, dist, cal=cal, particle_refractive_index=1.59)
    assert r.details["method"] == "calibrated+size-model"
    assert r.value_per_ml == pytest.approx(c_true, rel=1e-6)  # exact on its own standard
    assert r.per_bin_per_ml.sum() == pytest.approx(r.value_per_ml)
    # 200 nm beads: 64× brighter, seen deeper; the model must not over-count them
    k200 = relative_scattering(200.0, 1.59)
    h200 = depth_model_um(k200, sigma, ratio)
    lam2 = c_true * 1e-12 * area * h200
    f2, tr2, parts2, dist2 = _synthetic_video(rng, lam_per_frame=lam2, mean_residence=10, n_frames=1500,
                                              sheet_sigma_um=sigma, ratio=ratio * k200, diam_nm=200.0)
    r2 = _estimate(f2, tr2, parts2, dist2, cal=cal, particle_refractive_index=1.59)
    assert r2.value_per_ml == pytest.approx(c_true, rel=0.1)
    assert r2.details["uncorrected_per_ml"] > 1.3 * c_true  # what a fixed depth would report
    assert r2.ci95_low_per_ml < c_true < r2.ci95_high_per_ml
    off = _estimate(f2, tr2, parts2, dist2, cal=cal, size_correction=False)
    assert off.details["method"] == "calibrated"
    assert off.value_per_ml == pytest.approx(r2.details["uncorrected_per_ml"])


def test_warnings_few_and_crowded():
    rng = np.random.default_rng(2)
    f, tr, parts, dist = _synthetic_video(rng, lam_per_frame=3, mean_residence=10, n_frames=100)
    r = _estimate(f, tr, parts, dist)
    assert any("particles per frame" in w and "< 10" in w for w in r.warnings)
    assert any("valid tracks" in w for w in r.warnings)
    f, tr, parts, dist = _synthetic_video(rng, lam_per_frame=400, mean_residence=5, n_frames=30)
    r = _estimate(f, tr, parts, dist)
    assert any("crowded" in w and "dilute" in w for w in r.warnings)


def test_no_detection_gives_zero_with_upper_bound():
    f = pd.DataFrame({"frame": pd.Series([], dtype=np.int64), "x": [], "y": [], "mass": [], "signal": [],
                      "snr": []})
    tr = f.assign(particle=pd.Series([], dtype=np.int64))
    parts = pd.DataFrame({"particle": [], "n_positions": [], "diameter_nm": [], "valid": pd.Series([], dtype=bool)})
    dist = _mono_distribution(100.0)
    dist.table[["raw_density", "deconvolved_density"]] = 0.0
    r = _estimate(f, tr, parts, dist)
    assert r.value_per_ml == 0.0 and r.ci95_low_per_ml == 0.0 and r.ci95_high_per_ml > 0
    assert np.all(np.isnan(r.per_bin_per_ml))


# --------------------------------------------------------------------------- calibration files
def test_calibration_round_trip(tmp_path):
    cal = _calibration()
    p = save_calibration(cal, tmp_path / "cal.json")
    data = json.loads(p.read_text())
    assert data["schema"] == CALIBRATION_SCHEMA
    back = load_calibration(p)
    assert back.model_dump() == cal.model_dump()
    assert back.file == str(p) and cal.file is None
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("content, match", [
    (None, "not found"),
    ("{not json", "not valid JSON"),
    ('{"schema": "exonta.summary/1"}', "not an exonta calibration"),
    ("[1, 2]", "not an exonta calibration"),
])
def test_bad_calibration_file(tmp_path, content, match):
    p = tmp_path / "cal.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(ExontaInputError, match=match):
        load_calibration(p)


def test_calibration_file_with_bad_field(tmp_path):
    data = _calibration().model_dump(mode="json", by_alias=True)
    data["effective_depth_um"] = -1
    data["bogus"] = 1
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ExontaInputError, match="effective_depth_um.*|bogus") as err:
        load_calibration(p)
    assert "exonta calibrate" in str(err.value)


def test_calibrate_rejects_bad_standard():
    with pytest.raises(ExontaInputError, match="concentration"):
        calibrate(types.SimpleNamespace(), -1.0)
    with pytest.raises(ExontaInputError, match="refractive index"):
        calibrate(types.SimpleNamespace(), 1e8, refractive_index=0.5)


def test_soft_threshold_depth_tends_to_hard_model():
    k = np.array([0.2, 0.5, 1.0, 10.0, 1000.0])
    hard = depth_model_um(k, 3.0, 1.0)
    soft = depth_model_um(k, 3.0, 1.0, threshold_snr=5.0)
    assert np.all(soft > 0)  # noise lifts some particles below the threshold
    assert soft[0] < 0.01 * soft[-1]
    assert hard[1] == 0.0 and soft[1] < 0.05 * soft[3]
    np.testing.assert_allclose(soft[3:], hard[3:], rtol=0.03)
    # monte-carlo check of the integral: P(detect) = Phi(mu - T) at z uniform
    rng = np.random.default_rng(0)
    z = rng.uniform(-20, 20, 400000)
    mu = 5.0 * 2.0 * np.exp(-z**2 / (2 * 9.0))
    detected = mu + rng.standard_normal(z.size) > 5.0
    assert depth_model_um(2.0, 3.0, 1.0, threshold_snr=5.0) == pytest.approx(40 * detected.mean(), rel=0.02)


def test_wing_duplicates_merge_maxima_on_wide_spots_only():
    from exonta.analysis.concentration import wing_duplicates

    f = pd.DataFrame({
        "frame": [0, 0, 0, 0, 1, 1, 2, 2],
        "x": [50.0, 60.0, 50.0, 90.0, 10.0, 14.0, 30.0, 40.0],
        "y": [50.0, 52.0, 62.0, 50.0, 10.0, 10.0, 30.0, 30.0],
        # frame 0: a wide (6 px) bright spot with two wing maxima and a far particle
        # frame 1: two in-focus neighbours (left to the detector); frame 2: a bright neighbour near a wide dim spot
        "size_px": [6.0, 2.0, 1.6, 6.0, 1.5, 1.5, 5.0, 1.5],
        "snr": [100.0, 20.0, 15.0, 40.0, 30.0, 8.0, 10.0, 60.0],
    })
    dup = wing_duplicates(f, psf_sigma_px=1.5)
    assert dup.tolist() == [False, True, True, False, False, False, False, False]
    assert not wing_duplicates(f, 1.5, radius_factor=0).any()
    assert count_per_frame(f, 3, (200, 200), 4, exclude=dup).tolist() == [2, 2, 2]


def test_sheet_profile_fit_recovers_defocus_and_ratio():
    from exonta.analysis.concentration import sheet_profile_fit

    rng = np.random.default_rng(4)
    sigma_s, q, ratio, s0 = 4.0, 16.0 / 9.0, 30.0, 1.5
    u = np.linspace(0, 10, 100001)
    prof = np.exp(-u**2 / 2) / (1 + q * u**2)
    u_star = u[np.argmax(ratio * prof < 1.0)]
    uu = rng.uniform(0, u_star, 20000)
    signal = 5.0 * ratio * np.exp(-uu**2 / 2) / (1 + q * uu**2) * np.exp(rng.normal(0, 0.03, uu.size))
    size = s0 * np.sqrt(1 + q * uu**2) * np.exp(rng.normal(0, 0.03, uu.size))
    fit = sheet_profile_fit(signal, size)
    assert fit["defocus_q"] == pytest.approx(q, rel=0.1)
    assert fit["brightness_ratio"] == pytest.approx(ratio, rel=0.1)
    assert fit["psf_sigma0_px"] == pytest.approx(s0, rel=0.05)
    # the hard depth with defocus solves R·k·p(u*) = 1
    assert depth_model_um(1.0, sigma_s, ratio, None, q) == pytest.approx(2 * sigma_s * u_star, rel=2e-3)
    # defocus makes bright particles' depth grow faster than the pure Gaussian model fitted at k = 1
    sig_gauss = depth_model_um(1.0, sigma_s, ratio, None, q) / depth_model_um(1.0, 1.0, ratio)
    assert depth_model_um(64.0, sigma_s, ratio, None, q) > 1.1 * depth_model_um(64.0, sig_gauss, ratio)


def _optics_frames(rng, conc_per_ml, diam_nm, n_index=1.59, n_frames=400, sheet_sigma_um=4.0, dof_um=3.0,
                   psf_px=1.5, peak_snr_100=200.0, thr=5.0, box_half_um=30.0):
    """Independent frames of particles uniform in a deep box, seen through a Gaussian sheet with defocus.

    Expected peak (in noise sigmas) ``peak_snr_100·s(d,n)·exp(−z²/2σ_s²)/(1+z²/dof²)``; detected when the
    peak plus unit Gaussian noise exceeds ``thr`` (the soft threshold). Each detection is its own track.
    """
    area = 800.0
    n_mean = conc_per_ml * 1e-12 * area * 2 * box_half_um
    n = rng.poisson(n_mean, n_frames)
    frame = np.repeat(np.arange(n_frames), n)
    z = rng.uniform(-box_half_um, box_half_um, frame.size)
    s = relative_scattering(diam_nm, n_index)
    defoc = 1 + (z / dof_um) ** 2
    peak = peak_snr_100 * s * np.exp(-z**2 / (2 * sheet_sigma_um**2)) / defoc
    det = peak + rng.standard_normal(z.size) > thr
    m = int(det.sum())
    size = psf_px * np.sqrt(defoc[det]) * np.exp(rng.normal(0, 0.03, m))
    signal = peak[det] * np.exp(rng.normal(0, 0.05, m))
    feats = pd.DataFrame({"frame": frame[det].astype(np.int64), "x": rng.uniform(4, 203, m),
                          "y": rng.uniform(4, 103, m), "signal": signal, "size_px": size,
                          # filtered peak of a Gaussian spot over unit noise (matched filter at psf_px)
                          "snr": signal * size**2 / (size**2 + psf_px**2)})
    feats["mass"] = feats["signal"] * feats["size_px"] ** 2
    tracks = feats.assign(particle=np.arange(m, dtype=np.int64))
    parts = pd.DataFrame({"particle": np.arange(m), "n_positions": 1, "diameter_nm": diam_nm, "valid": True})
    return feats, tracks, parts, _mono_distribution(diam_nm)


@pytest.mark.parametrize("diam, tol", [(60.0, 0.12), (200.0, 0.1), (400.0, 0.1)])
def test_defocus_and_soft_threshold_model_on_synthetic_optics(diam, tol):
    """Calibrate on 100 nm, measure other sizes, detection physics with defocus and noise on the peak."""
    rng = np.random.default_rng(int(diam))
    f, tr, parts, dist = _optics_frames(rng, 1e9, 100.0, n_frames=600)
    result = types.SimpleNamespace(
        input={"n_frames": 600, "height": SHAPE[0], "width": SHAPE[1], "sha256": "a" * 64, "path": None},
        config=types.SimpleNamespace(acquisition=ACQ, concentration=ConcentrationParams(**COUNT_ALL), detect=DETECT),
        features=f, tracks=tr, particles=parts, distribution=dist)
    cal = calibrate(result, 1e9)
    assert cal.defocus_q == pytest.approx(16 / 9, rel=0.25)
    conc = 1e9 if diam < 100 else 1e8
    f2, tr2, parts2, dist2 = _optics_frames(rng, conc, diam, n_frames=600)
    r = estimate_concentration(features=f2, tracks=tr2, particles=parts2, distribution=dist2, acquisition=ACQ,
                               params=ConcentrationParams(particle_refractive_index=1.59, **COUNT_ALL), detect_params=DETECT,
                               frame_shape=SHAPE, n_frames=600, calibration=cal)
    assert r.value_per_ml == pytest.approx(conc, rel=tol)
    assert abs(r.details["uncorrected_per_ml"] / conc - 1) > abs(r.value_per_ml / conc - 1)
    assert r.details["noise_ratio_to_calibration"] == pytest.approx(1.0, abs=0.1)


def test_noise_at_threshold_rescales_the_depth():
    """A sample whose detection-limit noise is 2× the calibration's is seen less deep (higher threshold)."""
    rng = np.random.default_rng(11)
    f, tr, parts, dist = _optics_frames(rng, 1e9, 100.0, n_frames=300)
    result = types.SimpleNamespace(
        input={"n_frames": 300, "height": SHAPE[0], "width": SHAPE[1], "sha256": "a" * 64, "path": None},
        config=types.SimpleNamespace(acquisition=ACQ, concentration=ConcentrationParams(**COUNT_ALL), detect=DETECT),
        features=f, tracks=tr, particles=parts, distribution=dist)
    cal = calibrate(result, 1e9)
    noisy = f.assign(snr=f["snr"] / 2.0)
    kw = dict(tracks=tr, particles=parts, distribution=dist, acquisition=ACQ, detect_params=DETECT,
              frame_shape=SHAPE, n_frames=300, calibration=cal)
    base = estimate_concentration(features=f, params=ConcentrationParams(particle_refractive_index=1.59,
                                                                          **COUNT_ALL), **kw)
    r = estimate_concentration(features=noisy, params=ConcentrationParams(particle_refractive_index=1.59,
                                                                          **COUNT_ALL), **kw)
    off = estimate_concentration(features=noisy, params=ConcentrationParams(particle_refractive_index=1.59,
                                                                            **COUNT_ALL,
                                                                           noise_correction=False), **kw)
    assert r.details["noise_ratio_to_calibration"] == pytest.approx(2.0, rel=0.05)
    assert r.details["effective_depth_um"] < 0.95 * base.details["effective_depth_um"]
    assert off.details["effective_depth_um"] == pytest.approx(base.details["effective_depth_um"])
    assert any("noise at the detection threshold" in w for w in r.warnings)


def test_threshold_change_changes_depth_without_size_model():
    rng = np.random.default_rng(8)
    f, tr, parts, dist = _synthetic_video(rng, lam_per_frame=20, mean_residence=10, n_frames=300)
    cal = _calibration(threshold_model="soft")
    same = _estimate(f, tr, parts, dist, cal=cal, size_correction=False)
    assert same.details["effective_depth_um"] == pytest.approx(cal.effective_depth_um)
    r = estimate_concentration(features=f, tracks=tr, particles=parts, distribution=dist, acquisition=ACQ,
                               params=ConcentrationParams(size_correction=False, **COUNT_ALL),
                               detect_params=DETECT.model_copy(update={"threshold_snr": 10.0}), frame_shape=SHAPE,
                               n_frames=300, calibration=cal)
    assert r.details["effective_depth_um"] < 0.95 * cal.effective_depth_um  # a higher threshold sees less deep
    assert any("threshold differs" in w for w in r.warnings)


# --------------------------------------------------------------------------- simulator end-to-end (slow)
# Calibrate on 100 nm polystyrene at 1e8/mL, then measure other samples with the same optics. With the d⁶ law
# no single camera setting covers 60–400 nm PS (60 nm is at the noise floor when 400 nm saturates), so there are
# two optics, each with its own calibration, as an operator would do: the simulator default (8 bit, 5000
# photons for 100 nm PS) for 100–400 nm, and the "EV" setting of exonta.simulate's ev preset (60000 photons,
# 16 bit) for 60 nm PS and EVs (n = 1.39 scatters ~20× less than PS). Precision is limited by how many
# *independent* particles a video sees (a particle stays in the sheet for seconds), hence the long videos.
OPTICS = {
    "standard": dict(width_px=640, height_px=480),
    "bright": dict(width_px=640, height_px=480, photons_ref=60000.0, bit_depth=16),
}
PS100 = {"diameter_nm": 100.0, "refractive_index": 1.59}


def _e2e_analyse(sim, refractive_index, calibration=None):
    from exonta.config import AnalysisConfig
    from exonta.pipeline import analyze

    cfg = AnalysisConfig(acquisition=sim.acquisition, sizing={"bootstrap": 0},
                         concentration={"particle_refractive_index": refractive_index})
    return analyze(sim.frames, cfg, calibration=calibration)


_CALIBRATIONS: dict[str, Calibration] = {}


def _calibration_ps100(optics: str) -> Calibration:
    from exonta.simulate import SimulationConfig, simulate

    if optics not in _CALIBRATIONS:
        sim = simulate(SimulationConfig(concentration_per_ml=1e8, n_frames=1200, components=[PS100], seed=1001,
                                        **OPTICS[optics]))
        _CALIBRATIONS[optics] = calibrate(_e2e_analyse(sim, 1.59), sim.true_concentration_per_ml)
    return _CALIBRATIONS[optics]


E2E_CASES = {
    # name: (optics, components, concentration/mL, frames, sample refractive index, tolerance)
    "ps100-1e7": ("standard", [PS100], 1e7, 2000, 1.59, 0.10),
    "ps100-1e8": ("standard", [PS100], 1e8, 800, 1.59, 0.10),
    "ps100-1e9": ("standard", [PS100], 1e9, 300, 1.59, 0.10),
    "ps200": ("standard", [{"diameter_nm": 200.0, "refractive_index": 1.59}], 1e8, 600, 1.59, 0.15),
    "ps400": ("standard", [{"diameter_nm": 400.0, "refractive_index": 1.59}], 3e7, 1000, 1.59, 0.15),
    "ps60": ("bright", [{"diameter_nm": 60.0, "refractive_index": 1.59}], 3e8, 800, 1.59, 0.15),
    "ev": ("bright", [{"distribution": "lognormal", "median_nm": 110.0, "gsd": 1.45, "refractive_index": 1.39}],
           1e9, 600, 1.39, 0.15),
}


# Open gap (issue 5): the detector's threshold follows a local noise estimate that includes the haze of out-of-focus
# particles, so its sensitivity (and the effective depth) changes between the calibrant and the sample.
E2E_GAP = pytest.mark.xfail(strict=True, reason="open gap (issue 5): sample-dependent detection threshold; "
                            "calibrated concentration off by more than the target")


E2E_MET = {"ps100-1e8", "ps200"}  # cases that meet their target today


@pytest.mark.slow
@pytest.mark.parametrize("case", [c if c in E2E_MET else pytest.param(c, marks=E2E_GAP) for c in E2E_CASES])
def test_concentration_on_simulated_samples(case):
    from exonta.simulate import SimulationConfig, simulate

    optics, comps, conc, frames, n_sample, tol = E2E_CASES[case]
    cal = _calibration_ps100(optics)
    sim = simulate(SimulationConfig(concentration_per_ml=conc, n_frames=frames, components=comps, seed=2002,
                                    **OPTICS[optics]))
    res = _e2e_analyse(sim, n_sample, calibration=cal)
    c = res.concentration
    truth = sim.true_concentration_per_ml
    msg = (f"value/truth {c.value_per_ml / truth:.3f} (uncorrected {c.details['uncorrected_per_ml'] / truth:.3f}), "
           f"CI {c.ci95_low_per_ml / truth:.3f}–{c.ci95_high_per_ml / truth:.3f}, {c.mean_particles_per_frame:.1f}/frame, "
           f"depth {c.details['effective_depth_um']:.2f} µm, calibration depth {cal.effective_depth_um:.2f} µm "
           f"± {100 * cal.effective_depth_rel_se:.0f}%, method {c.details['method']}")
    assert c.details["method"] == "calibrated+size-model", msg
    assert c.per_bin_per_ml.sum() == pytest.approx(c.value_per_ml, rel=1e-6)
    assert c.value_per_ml == pytest.approx(truth, rel=tol), msg


@pytest.mark.slow
def test_crowded_field_is_accurate_or_warns():
    from exonta.simulate import SimulationConfig, simulate

    cal = _calibration_ps100("standard")
    sim = simulate(SimulationConfig(concentration_per_ml=2.5e9, n_frames=150, components=[PS100], seed=3003,
                                    **OPTICS["standard"]))
    res = _e2e_analyse(sim, 1.59, calibration=cal)
    c = res.concentration
    assert c.mean_particles_per_frame >= 150
    accurate = abs(c.value_per_ml / sim.true_concentration_per_ml - 1) <= 0.15
    assert accurate or any("dilute" in w for w in c.warnings)


def test_only_persistent_detections_are_counted():
    """Single-frame noise maxima are not particles: only detections in tracks of ≥ min_linked_frames count."""
    from exonta.analysis.concentration import persistent_detections

    rng = np.random.default_rng(42)
    n_frames = 50
    # 4 particles present in every frame, plus 10 single-frame noise spots per frame
    real = pd.DataFrame({"frame": np.repeat(np.arange(n_frames), 4), "x": rng.uniform(40, 200, 4 * n_frames),
                         "y": rng.uniform(40, 150, 4 * n_frames), "mass": 1000.0, "signal": 50.0, "size_px": 1.5})
    real["particle"] = np.tile(np.arange(4), n_frames)
    noise = pd.DataFrame({"frame": np.repeat(np.arange(n_frames), 10), "x": rng.uniform(40, 200, 10 * n_frames),
                          "y": rng.uniform(40, 150, 10 * n_frames), "mass": 30.0, "signal": 3.0, "size_px": 1.5})
    noise["particle"] = 100 + np.arange(len(noise)) // 2  # linked at most in pairs
    features = pd.concat([real, noise], ignore_index=True).drop(columns="particle")
    tracks = pd.concat([real, noise], ignore_index=True)
    kept = persistent_detections(features, tracks, 3)
    assert len(kept) == len(real) and set(kept.columns) == set(features.columns)
    assert len(persistent_detections(features, tracks, 1)) == len(features)
    assert len(persistent_detections(features, None, 3)) == len(features)
