"""Tests for exonta.track.link."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from reference.link_ref import _best_matching, link_lap_ref, link_ref

from exonta.config import Acquisition, LinkParams
from exonta.errors import ExontaCancelled, ExontaInputError
from exonta.physics import diffusion_from_diameter
from exonta.track._linkkernels import assignment_kernel, frame_edges_kernel
from exonta.track import link_features, search_range_px, search_range_um
from exonta.track.link import adaptive_radius2, followed_diameter_nm

ACQ = Acquisition(pixel_size_um=0.2, fps=30.0, exposure_s=0.02, temperature_c=22.0)


def brownian_features(rng, n_particles, n_frames, step_px, box_px=500.0, p_missing=0.0):
    """Features table of independent 2-D random walks plus the true identity of each row."""
    pos = rng.uniform(0, box_px, (n_particles, 2))
    rows = []
    for f in range(n_frames):
        pos = pos + rng.normal(0.0, step_px, pos.shape)
        keep = rng.random(n_particles) >= p_missing
        idx = np.flatnonzero(keep)
        rows.append(pd.DataFrame({"frame": f, "x": pos[idx, 0], "y": pos[idx, 1],
                                  "mass": rng.uniform(100, 200, idx.size), "signal": 1.0, "size_px": 1.5,
                                  "background": 10.0, "snr": 20.0, "truth": idx}))
    return pd.concat(rows, ignore_index=True)


def link_accuracy(tracks):
    """Fraction of consecutive links (within a track) joining the same true particle."""
    t = tracks.sort_values(["particle", "frame"])
    same_track = t["particle"].to_numpy()[1:] == t["particle"].to_numpy()[:-1]
    same_truth = t["truth"].to_numpy()[1:] == t["truth"].to_numpy()[:-1]
    return float(np.mean(same_truth[same_track]))


def test_search_range_from_physics():
    p = LinkParams(min_diameter_nm=50.0, search_miss_probability=1e-3)
    d = diffusion_from_diameter(50.0, ACQ.temperature_c, ACQ.viscosity_mpas)
    expected = math.sqrt(4 * d * ACQ.frame_interval_s * math.log(1e3))
    assert search_range_um(ACQ, p) == pytest.approx(expected, rel=1e-12)
    assert search_range_px(ACQ, p) == pytest.approx(expected / 0.2, rel=1e-12)
    # smaller particles diffuse faster -> larger radius; the user value wins
    assert search_range_um(ACQ, LinkParams(min_diameter_nm=30.0)) > search_range_um(ACQ, p)
    assert search_range_px(ACQ, LinkParams(search_range_um=1.0)) == pytest.approx(5.0)


def test_search_range_miss_probability_is_honest():
    """A 2-D Brownian step of the smallest particle exceeds the radius with probability p."""
    rng = np.random.default_rng(0)
    p = LinkParams(min_diameter_nm=40.0, search_miss_probability=0.01)
    d = diffusion_from_diameter(40.0, ACQ.temperature_c, ACQ.viscosity_mpas)
    steps = rng.normal(0, math.sqrt(2 * d * ACQ.frame_interval_s), (400_000, 2))
    miss = np.mean(np.hypot(steps[:, 0], steps[:, 1]) > search_range_um(ACQ, p))
    assert miss == pytest.approx(0.01, rel=0.1)


def test_links_sparse_brownian_perfectly_and_keeps_columns():
    rng = np.random.default_rng(1)
    feats = brownian_features(rng, 30, 40, step_px=1.0)
    tracks = link_features(feats, ACQ, LinkParams(search_range_um=6 * 0.2, memory_frames=0))
    assert tracks["particle"].dtype == np.int64
    assert tracks["particle"].nunique() == 30
    assert link_accuracy(tracks) == 1.0
    for c in feats.columns:
        assert c in tracks.columns
    np.testing.assert_array_equal(tracks["x_corrected"], tracks["x"])
    np.testing.assert_array_equal(tracks["y_corrected"], tracks["y"])
    # sorted by particle, then frame; ids numbered from 0 in order of first appearance
    assert tracks["particle"].is_monotonic_increasing
    first = tracks.groupby("particle")["frame"].min().to_numpy()
    assert np.all(np.diff(first) >= 0) and tracks["particle"].min() == 0


def test_gap_closing_memory():
    # one particle, seen at frames 0-4 then 7-10 (2 missing frames), steps of 1 px
    f = np.r_[0:5, 7:11]
    feats = pd.DataFrame({"frame": f, "x": 10.0 + f, "y": 10.0 + np.zeros(f.size)})
    params = LinkParams(search_range_um=1.5 * 0.2, memory_frames=2)
    # the 3-frame jump is 3 px > 1.5 px but < 1.5 * sqrt(3) = 2.6 px?  no: 3 > 2.6 -> not linked
    assert link_features(feats, ACQ, params)["particle"].nunique() == 2
    params = LinkParams(search_range_um=1.8 * 0.2, memory_frames=2)  # 1.8 * sqrt(3) = 3.12 > 3
    assert link_features(feats, ACQ, params)["particle"].nunique() == 1
    params = LinkParams(search_range_um=1.8 * 0.2, memory_frames=1)  # gap too long
    assert link_features(feats, ACQ, params)["particle"].nunique() == 2


def test_drops_singletons():
    feats = pd.DataFrame({"frame": [0, 1, 2, 5], "x": [0.0, 0.5, 1.0, 200.0], "y": [0.0, 0.0, 0.0, 0.0]})
    tracks = link_features(feats, ACQ, LinkParams(search_range_um=0.4, memory_frames=0))
    assert len(tracks) == 3 and tracks["particle"].nunique() == 1


@pytest.mark.parametrize("seed", range(12))
def test_matches_bruteforce_reference_in_crowded_frames(seed):
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(12):
        m = int(rng.integers(2, 6))
        rows.append(pd.DataFrame({"frame": f, "x": rng.uniform(0, 6, m), "y": rng.uniform(0, 6, m)}))
    feats = pd.concat(rows, ignore_index=True)
    rho_px, memory = 2.5, 1
    tracks = link_features(feats.assign(row=np.arange(len(feats))), ACQ,
                           LinkParams(search_range_um=rho_px * 0.2, memory_frames=memory, adaptive_search=False))
    ref = np.array(link_ref(feats["frame"].tolist(), feats["x"].tolist(), feats["y"].tolist(), rho_px, memory))
    counts = np.bincount(ref)
    keep = counts[ref] >= 2
    # same partition of the kept rows into tracks
    got = dict(zip(tracks["row"], tracks["particle"]))
    assert set(got) == set(np.flatnonzero(keep))
    pairs_ref = {(a, b) for a in np.flatnonzero(keep) for b in np.flatnonzero(keep) if a < b and ref[a] == ref[b]}
    pairs_got = {(a, b) for a in got for b in got if a < b and got[a] == got[b]}
    assert pairs_got == pairs_ref


def test_crowded_field_never_blows_up():
    """Dense field with a huge search radius: one big assignment problem per frame, no exception."""
    rng = np.random.default_rng(3)
    feats = brownian_features(rng, 400, 15, step_px=1.0, box_px=200.0, p_missing=0.05)
    t0 = time.perf_counter()
    tracks = link_features(feats, ACQ, LinkParams(search_range_um=8.0, memory_frames=2))
    assert time.perf_counter() - t0 < 30.0
    assert len(tracks) > 0.95 * len(feats)
    # no link longer than the (gap-widened) radius
    t = tracks.sort_values(["particle", "frame"])
    same = t["particle"].to_numpy()[1:] == t["particle"].to_numpy()[:-1]
    step = np.hypot(np.diff(t["x"].to_numpy()), np.diff(t["y"].to_numpy()))[same]
    gap = np.diff(t["frame"].to_numpy())[same]
    assert np.all(step < 40.0 * np.sqrt(gap) + 1e-9)


def test_crowded_field_accuracy_with_physical_radius():
    """Mean nearest-neighbour distance ~2.5 steps: the optimal assignment gets almost every link right."""
    rng = np.random.default_rng(3)
    feats = brownian_features(rng, 400, 15, step_px=1.0, box_px=200.0, p_missing=0.0)
    # radius = 3.7 per-axis step sigmas (the default miss probability of 1e-3)
    tracks = link_features(feats, ACQ, LinkParams(search_range_um=3.7 * 0.2, memory_frames=2))
    assert link_accuracy(tracks) > 0.96


def test_accuracy_with_missed_detections():
    rng = np.random.default_rng(4)
    feats = brownian_features(rng, 150, 60, step_px=1.2, box_px=400.0, p_missing=0.05)
    tracks = link_features(feats, ACQ, LinkParams(search_range_um=5 * 1.2 * 0.2, memory_frames=2))
    assert link_accuracy(tracks) > 0.99
    # gap closing keeps most particles in one track
    assert tracks["particle"].nunique() < 1.3 * 150


def test_empty_and_bad_input():
    empty = pd.DataFrame({"frame": np.empty(0, dtype=np.int64), "x": np.empty(0), "y": np.empty(0)})
    out = link_features(empty, ACQ)
    assert len(out) == 0 and {"particle", "x_corrected", "y_corrected"} <= set(out.columns)
    with pytest.raises(ExontaInputError, match="column 'y'"):
        link_features(pd.DataFrame({"frame": [0], "x": [1.0]}), ACQ)
    with pytest.raises(ExontaInputError, match="NaN"):
        link_features(pd.DataFrame({"frame": [0, 1], "x": [1.0, np.nan], "y": [1.0, 1.0]}), ACQ)
    with pytest.raises(ExontaInputError, match="whole frame"):
        link_features(pd.DataFrame({"frame": [0.5, 1.0], "x": [1.0, 1.0], "y": [1.0, 1.0]}), ACQ)
    with pytest.raises(ExontaInputError, match="particle"):
        link_features(pd.DataFrame({"frame": [0], "x": [1.0], "y": [1.0], "particle": [0]}), ACQ)


def test_progress_and_cancel():
    rng = np.random.default_rng(5)
    feats = brownian_features(rng, 5, 20, step_px=1.0)
    seen = []
    link_features(feats, ACQ, progress=lambda frac, msg: seen.append(frac))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and np.all(np.diff(seen) >= 0)
    with pytest.raises(ExontaCancelled):
        link_features(feats, ACQ, progress=lambda frac, msg: False)


@pytest.mark.parametrize("n_past", [1, 3, 10, 50])
def test_adaptive_radius_miss_probability_is_honest(n_past):
    """Next 2-D step of a track vs the radius from its own n past steps: missed with probability p (F(2, 2n))."""
    rng = np.random.default_rng(n_past)
    p, m = 0.01, 200_000
    theta = rng.uniform(0.5, 50.0, m)  # any D: the bound does not depend on it
    past = rng.normal(0, 1, (m, n_past, 2)) * np.sqrt(theta / 2)[:, None, None]
    sum_sq = (past ** 2).sum(axis=(1, 2))
    nxt = rng.normal(0, 1, (m, 2)) * np.sqrt(theta / 2)[:, None]
    r2 = adaptive_radius2(sum_sq, np.full(m, n_past), np.inf, p, floor2_px2=0.0)
    miss = np.mean((nxt ** 2).sum(axis=1) > r2)
    assert miss == pytest.approx(p, rel=0.1)
    # no steps yet: the physics radius; bounded by it and by the floor
    out = adaptive_radius2(np.array([0.0, 1e6, 1e-9]), np.array([0, 5, 5]), 100.0, 1e-4, floor2_px2=1.0)
    np.testing.assert_allclose(out, [100.0, 100.0, 1.0])


def test_adaptive_search_rejects_noise_detections():
    """Slow particles among random noise detections: the per-track radius keeps the noise out of the tracks."""
    rng = np.random.default_rng(7)
    feats = brownian_features(rng, 60, 80, step_px=0.5, box_px=400.0, p_missing=0.05)
    noise = pd.DataFrame({"frame": np.repeat(np.arange(80), 30), "x": rng.uniform(0, 400, 2400),
                          "y": rng.uniform(0, 400, 2400), "truth": -1 - np.arange(2400)})
    feats = pd.concat([feats, noise], ignore_index=True)
    wide = LinkParams(search_range_um=20 * 0.2, memory_frames=2)  # 20 px: 40 per-axis step SDs

    def noise_links(tr):
        t = tr.sort_values(["particle", "frame"])
        same = t["particle"].to_numpy()[1:] == t["particle"].to_numpy()[:-1]
        real = t["truth"].to_numpy() >= 0
        return int(np.sum(same & (real[1:] != real[:-1])))

    fixed = link_features(feats, ACQ, wide.model_copy(update={"adaptive_search": False}))
    adaptive = link_features(feats, ACQ, wide)
    n_fixed, n_adaptive = noise_links(fixed), noise_links(adaptive)
    assert n_fixed > 100  # the fixed wide radius links many noise detections to particles
    assert n_adaptive < 0.3 * n_fixed  # default miss probability 1e-6 (measured 50 vs 237)
    real = adaptive[adaptive["truth"] >= 0]
    assert link_accuracy(real) > 0.999
    # a larger miss probability gives tighter gates: fewer noise links still
    tight = link_features(feats, ACQ, wide.model_copy(update={"track_miss_probability": 1e-4}))
    assert noise_links(tight) < 0.2 * n_fixed




@pytest.mark.parametrize("seed", range(40))
def test_assignment_kernel_matches_exhaustive_search(seed):
    """Sparse shortest-augmenting-path kernel = the best partial matching found by enumeration."""
    rng = np.random.default_rng(seed)
    n_rows, n_cols = int(rng.integers(1, 7)), int(rng.integers(1, 7))
    cands = [[(int(j), float(rng.uniform(0.0, 1.0))) for j in np.flatnonzero(rng.random(n_cols) < 0.5)]
             for _ in range(n_rows)]
    row_ptr = np.cumsum([0] + [len(c) for c in cands]).astype(np.int64)
    cols = np.array([j for c in cands for j, _ in c], dtype=np.int64)
    costs = np.array([w for c in cands for _, w in c], dtype=float)
    got = np.empty(n_rows, dtype=np.int64)
    assignment_kernel(n_rows, n_cols, row_ptr, cols, costs, got)
    ref = dict(_best_matching(cands, n_rows, n_cols, 0.5))
    assert {i: int(j) for i, j in enumerate(got) if j >= 0} == ref
    assert len(set(got[got >= 0])) == int(np.sum(got >= 0))  # a detection is used once


@pytest.mark.parametrize("beta", [0.0, 0.8])
def test_frame_edges_kernel_finds_every_pair_inside_its_gate(beta):
    rng = np.random.default_rng(11)
    src = rng.uniform(0, 100, (60, 2))
    dst = rng.uniform(0, 100, (80, 2))
    gap = rng.integers(0, 3, 60).astype(float)
    gate2 = rng.uniform(1.0, 60.0, 60)
    src_lb, dst_lb = rng.normal(0, 1, 60), rng.normal(0, 1, 80)
    dmax2 = 0.81 if beta else 0.0
    row_ptr, cols, cost = frame_edges_kernel(src[:, 0].copy(), src[:, 1].copy(), gap, gate2, 60, dst[:, 0].copy(),
                                             dst[:, 1].copy(), float(np.sqrt(gate2.max() * 3.0)), 50.0,
                                             src_lb, dst_lb, beta, dmax2)
    r2 = ((src[:, None, :] - dst[None, :, :]) ** 2).sum(axis=2) / (gap[:, None] + 1.0)
    expected = {(i, j) for i, j in zip(*np.nonzero(r2 < gate2[:, None]))}
    got = {(i, int(cols[e])) for i in range(60) for e in range(row_ptr[i], row_ptr[i + 1])}
    assert got == expected and len(expected) > 30
    for i in range(60):
        for e in range(row_ptr[i], row_ptr[i + 1]):
            j = cols[e]
            want = (r2[i, j] / 50.0 + beta * min((dst_lb[j] - src_lb[i]) ** 2, dmax2)) / (1.0 + beta * dmax2)
            assert cost[e] == pytest.approx(want, rel=1e-12)
            if beta == 0.0:
                assert cost[e] == r2[i, j] / 50.0  # distance only: exactly the old cost


@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("dense_max", [160, 0])
def test_matches_scipy_reference_linker_on_crowded_field(adaptive, dense_max):
    """Same track of every detection as the scipy (k-d tree + LAP) linker, hundreds of detections per frame."""
    rng = np.random.default_rng(12)
    feats = brownian_features(rng, 300, 25, step_px=1.5, box_px=150.0, p_missing=0.1)
    noise = pd.DataFrame({"frame": np.repeat(np.arange(25), 40), "x": rng.uniform(0, 150, 1000),
                          "y": rng.uniform(0, 150, 1000)})
    feats = pd.concat([feats, noise], ignore_index=True).sample(frac=1.0, random_state=1).reset_index(drop=True)
    params = LinkParams(search_range_um=6.0 * 0.2, memory_frames=2, adaptive_search=adaptive)
    rho = search_range_px(ACQ, params)
    ref = link_lap_ref(feats["frame"], feats["x"], feats["y"], rho * rho, 2, adaptive=adaptive,
                       miss_probability=params.track_miss_probability, dense_max=dense_max)
    tracks = link_features(feats.assign(row=np.arange(len(feats))), ACQ, params)
    _assert_same_partition(tracks, ref)


def _assert_same_partition(tracks, ref):
    """The kept rows (``tracks["row"]``) and their grouping are those of the reference's track ids ``ref``."""
    counts = np.bincount(ref)
    kept = np.flatnonzero(counts[ref] >= 2)
    assert np.array_equal(np.sort(tracks["row"].to_numpy()), kept)
    # same partition: the reference's id of each kept row maps one-to-one onto the particle numbers
    pairs = set(zip(tracks["particle"].to_numpy(), ref[tracks["row"].to_numpy()]))
    assert len(pairs) == tracks["particle"].nunique() == len(np.unique(ref[kept]))


def _bright_features(rng, n_particles, n_frames, step_px, box_px, spread, p_missing=0.0):
    """:func:`brownian_features` with a brightness per particle (log-uniform over e^3) and a frame-to-frame
    log-normal spread ``spread`` of its fitted ``signal``."""
    feats = brownian_features(rng, n_particles, n_frames, step_px, box_px=box_px, p_missing=p_missing)
    level = np.exp(rng.uniform(0.0, 3.0, n_particles))
    feats["signal"] = level[feats["truth"].to_numpy()] * np.exp(rng.normal(0.0, spread, len(feats)))
    return feats


@pytest.mark.parametrize("adaptive", [True, False])
def test_brightness_term_matches_scipy_reference_linker(adaptive):
    """The brightness term (LinkParams.brightness_log_sd) gives the links of the scipy reference with the same cost."""
    rng = np.random.default_rng(21)
    feats = _bright_features(rng, 300, 25, 1.5, 150.0, 0.3, p_missing=0.1)
    noise = pd.DataFrame({"frame": np.repeat(np.arange(25), 40), "x": rng.uniform(0, 150, 1000),
                          "y": rng.uniform(0, 150, 1000), "signal": np.exp(rng.uniform(-1.0, 1.0, 1000))})
    feats = pd.concat([feats, noise], ignore_index=True).sample(frac=1.0, random_state=2).reset_index(drop=True)
    s = 0.35
    params = LinkParams(search_range_um=6.0 * 0.2, memory_frames=2, adaptive_search=adaptive, brightness_log_sd=s)
    rho = search_range_px(ACQ, params)
    beta = 1.0 / (2.0 * s * s * math.log(1.0 / params.search_miss_probability))
    ref = link_lap_ref(feats["frame"], feats["x"], feats["y"], rho * rho, 2, adaptive=adaptive,
                       miss_probability=params.track_miss_probability, dense_max=160,
                       log_brightness=np.log(feats["signal"].to_numpy()), beta=beta, dmax2=9.0 * s * s)
    tracks = link_features(feats.assign(row=np.arange(len(feats))), ACQ, params)
    _assert_same_partition(tracks, ref)
    # and the term changed links: the distance-only partition differs
    plain = link_features(feats.assign(row=np.arange(len(feats))),
                          ACQ, params.model_copy(update={"brightness_log_sd": 0.0}))
    assert set(zip(plain["particle"], plain["row"])) != set(zip(tracks["particle"], tracks["row"]))


def test_brightness_term_keeps_crossing_particles_apart():
    """Crowded field, radius of 3.7 step sigmas: with the brightness term fewer links join two particles, and
    the linked steps are no longer shorter than the particles' steps (distance alone prefers short ones)."""
    rng = np.random.default_rng(5)
    step = 2.0
    feats = _bright_features(rng, 500, 30, step, 220.0, 0.3)
    params = LinkParams(search_range_um=3.7 * step * 0.2, memory_frames=0, adaptive_search=False)
    plain = link_features(feats, ACQ, params.model_copy(update={"brightness_log_sd": 0.0}))
    bright = link_features(feats, ACQ, params.model_copy(update={"brightness_log_sd": 0.3}))
    assert LinkParams().brightness_log_sd == 0.0  # distance only by default
    with pytest.raises(ExontaInputError, match="auto"):  # measured by the pipeline, not here
        link_features(feats, ACQ, params.model_copy(update={"brightness_log_sd": "auto"}))

    def mean_sq_step(tr):
        t = tr.sort_values(["particle", "frame"])
        same = t["particle"].to_numpy()[1:] == t["particle"].to_numpy()[:-1]
        d2 = np.diff(t["x"].to_numpy()) ** 2 + np.diff(t["y"].to_numpy()) ** 2
        return float(d2[same].mean())

    acc_plain, acc_bright = link_accuracy(plain), link_accuracy(bright)
    assert acc_plain < 0.97 and acc_bright > acc_plain + 0.01, (acc_plain, acc_bright)
    true_msd = 2 * step * step
    assert mean_sq_step(plain) < 0.97 * true_msd  # distance alone: too short
    assert abs(mean_sq_step(bright) / true_msd - 1) < abs(mean_sq_step(plain) / true_msd - 1)


@pytest.mark.parametrize("temperature_c, viscosity_mpas, fps", [(22.0, None, 30.0), (37.0, None, 25.0),
                                                                (25.0, 1.5, 100.0)])
def test_followed_diameter_is_the_diameter_the_search_radius_was_made_for(temperature_c, viscosity_mpas, fps):
    """followed_diameter_nm inverts search_range_um (the linking-limit warning of exonta.analysis.plausibility)."""
    extra = {} if viscosity_mpas is None else {"viscosity_mpas": viscosity_mpas}
    acq = Acquisition(pixel_size_um=0.1, fps=fps, exposure_s=0.5 / fps, temperature_c=temperature_c, **extra)
    for d_nm in (50.0, 150.0):
        link = LinkParams(min_diameter_nm=d_nm)
        rho = search_range_um(acq, link)
        got = followed_diameter_nm(acq, link)
        assert got == pytest.approx(d_nm, rel=1e-9)
        # independently: the step of that diameter exceeds the radius with the miss probability
        d_um2_s = diffusion_from_diameter(got, temperature_c, acq.viscosity_mpas)
        assert np.exp(-rho ** 2 / (4 * d_um2_s * acq.frame_interval_s)) == pytest.approx(
            link.search_miss_probability, rel=1e-9)
    # a radius narrowed to the sample's own or given (half of it) follows only particles 4x as large
    rho = search_range_um(acq, LinkParams())
    assert followed_diameter_nm(acq, LinkParams(search_range_um=0.5 * rho)) == pytest.approx(200.0, rel=1e-9)
