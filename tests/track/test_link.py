"""Tests for exonta.track.link."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from reference.link_ref import link_ref

from exonta.config import Acquisition, LinkParams
from exonta.errors import ExontaCancelled, ExontaInputError
from exonta.physics import diffusion_from_diameter
from exonta.track import link as link_module
from exonta.track import link_features, search_range_px, search_range_um
from exonta.track.link import adaptive_radius2

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


@pytest.mark.parametrize("solver", ["dense", "sparse"])
@pytest.mark.parametrize("seed", range(6))
def test_matches_bruteforce_reference_in_crowded_frames(seed, solver, monkeypatch):
    if solver == "sparse":  # force the sparse LAPJVsp path for every ambiguous subproblem
        monkeypatch.setattr(link_module, "_DENSE_MAX", 0)
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


