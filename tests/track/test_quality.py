"""Tests for exonta.track.quality (rejection of positions one Brownian particle does not explain)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from reference.quality_ref import prune_track_ref

from exonta.config import Acquisition, LinkParams
from exonta.errors import ExontaInputError
from exonta.track.link import search_range_um
from exonta.track.quality import prune_outlier_positions, robust_track_diffusion, sample_search_range_um


def random_walks(rng, n_tracks, n_pos, step_px, noise_px=0.0, p_gap=0.0):
    """Tracks table of independent 2-D random walks (per-axis step SD ``step_px``), with gaps."""
    rows = []
    for p in range(n_tracks):
        frames = np.arange(int(n_pos * 1.5))
        frames = frames[rng.random(frames.size) >= p_gap][:n_pos]
        t = np.arange(frames[-1] + 1)
        walk = np.cumsum(rng.normal(0.0, step_px, (t.size, 2)), axis=0)[frames] + rng.uniform(0, 500, 2)
        walk += rng.normal(0.0, noise_px, walk.shape)
        rows.append(pd.DataFrame({"particle": p, "frame": frames, "x": walk[:, 0], "y": walk[:, 1],
                                  "junk": False}))
    return pd.concat(rows, ignore_index=True)


def add_junk(rng, tracks, n_junk, radius_px):
    """Replace ``n_junk`` random positions (ends included) by points uniform in a disc of ``radius_px``."""
    out = tracks.copy()
    idx = rng.choice(len(out), n_junk, replace=False)
    r = radius_px * np.sqrt(rng.uniform(0.3, 1.0, n_junk))
    a = rng.uniform(0, 2 * np.pi, n_junk)
    out.loc[idx, "x"] += r * np.cos(a)
    out.loc[idx, "y"] += r * np.sin(a)
    out.loc[idx, "junk"] = True
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_matches_reference(seed):
    rng = np.random.default_rng(seed)
    tr = add_junk(rng, random_walks(rng, 40, int(rng.integers(5, 30)), 1.0, 0.3, p_gap=0.2), 25, 12.0)
    params = LinkParams(outlier_probability=1e-3)
    got = prune_outlier_positions(tr, params)
    expected = []
    for p, g in tr.groupby("particle"):
        kept = prune_track_ref(g.frame.to_numpy(), g.x.to_numpy(), g.y.to_numpy(), 1e-3)
        if len(kept) >= 2:
            expected.append(g.iloc[kept])
    exp = pd.concat(expected).sort_values(["particle", "frame"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, exp, check_dtype=False)
    assert got.attrs["n_outlier_positions"] > 0


def test_junk_positions_are_removed_real_ones_kept():
    rng = np.random.default_rng(3)
    clean = random_walks(rng, 300, 20, 1.0, 0.2, p_gap=0.15)
    tr = add_junk(rng, clean, 150, 15.0)  # junk ~10 step lengths away, as noise maxima inside a search radius
    out = prune_outlier_positions(tr, LinkParams(outlier_probability=1e-7))
    n_junk_left = int(out["junk"].sum())
    n_real_lost = int((~tr["junk"]).sum() - (~out["junk"]).sum())
    assert n_junk_left <= 0.05 * 150, n_junk_left
    assert n_real_lost <= 0.01 * len(clean), n_real_lost
    assert out.attrs["n_outlier_positions"] == len(tr) - len(out)


def test_clean_tracks_keep_their_diffusion():
    """On clean walks almost nothing is removed at p = 1e-7, and the pooled mean squared
    displacement per frame does not move (positions are kept only if they pass the test, which selects
    slow steps when the level is loose: at p = 0.02 it reads 19 % low)."""
    rng = np.random.default_rng(4)
    tr = random_walks(rng, 600, 30, 1.0, 0.0, p_gap=0.1)

    def msd_per_frame(t):
        d = t.groupby("particle")[["frame", "x", "y"]].diff().dropna()
        return float(((d.x ** 2 + d.y ** 2) / d.frame).mean()) / 2.0  # per axis, px² per frame

    assert msd_per_frame(tr) == pytest.approx(1.0, rel=0.02)
    default = prune_outlier_positions(tr, LinkParams(outlier_probability=1e-7))
    assert len(tr) - len(default) <= 2  # 18 000 positions tested at p = 1e-7
    assert msd_per_frame(default) == pytest.approx(msd_per_frame(tr), rel=0.005)
    looser = prune_outlier_positions(tr, LinkParams(outlier_probability=1e-3))
    assert 10 < len(tr) - len(looser) < 100  # the test does fire, at about its nominal rate
    assert msd_per_frame(looser) == pytest.approx(msd_per_frame(tr), rel=0.025)


def test_disabled_and_bad_input():
    rng = np.random.default_rng(5)
    tr = add_junk(rng, random_walks(rng, 20, 15, 1.0), 10, 20.0)
    off = prune_outlier_positions(tr)  # disabled by default
    assert len(off) == len(tr) and off.attrs["n_outlier_positions"] == 0
    with pytest.raises(ExontaInputError, match="particle"):
        prune_outlier_positions(tr.drop(columns=["particle"]))
    # x_corrected / y_corrected are preferred when present
    tr2 = tr.assign(x_corrected=tr.x, y_corrected=tr.y, x=0.0, y=0.0)
    assert len(prune_outlier_positions(tr2, LinkParams(outlier_probability=1e-7))) < len(tr2)


ACQ = Acquisition(pixel_size_um=0.1, fps=25.0, exposure_s=0.005, temperature_c=22.0)


def test_robust_track_diffusion_ignores_a_minority_of_junk_steps():
    rng = np.random.default_rng(6)
    d_true = 0.9  # µm²/s, a 0.5 µm bead at 22 °C
    step_px = np.sqrt(2 * d_true * ACQ.frame_interval_s) / ACQ.pixel_size_um
    clean = random_walks(rng, 200, 40, step_px)
    d_clean = robust_track_diffusion(clean, ACQ.pixel_size_um, ACQ.frame_interval_s)
    assert d_clean.size == 200
    assert np.median(d_clean) == pytest.approx(d_true, rel=0.1)
    junk = add_junk(rng, clean, 400, 30 * step_px)  # 5 % of the positions, far away
    d_junk = robust_track_diffusion(junk, ACQ.pixel_size_um, ACQ.frame_interval_s)
    assert np.median(d_junk) == pytest.approx(d_true, rel=0.25)
    assert np.quantile(d_junk, 0.999) < 4 * d_true  # a mean squared step would read ~40x
    short = random_walks(rng, 5, 8, step_px)
    assert robust_track_diffusion(short, ACQ.pixel_size_um, ACQ.frame_interval_s).size == 0


def test_sample_search_range_follows_the_sample():
    rng = np.random.default_rng(7)
    d_true = 0.9
    step_px = np.sqrt(2 * d_true * ACQ.frame_interval_s) / ACQ.pixel_size_um
    tracks = add_junk(rng, random_walks(rng, 300, 30, step_px, p_gap=0.1), 200, 25 * step_px)
    params = LinkParams()
    rho = sample_search_range_um(tracks, ACQ, params)
    physics = search_range_um(ACQ, params)  # 50 nm: ~3 µm
    # the fastest tracks of a 0.5 µm sample: a radius a few times its one-frame step, far below physics
    one_step_um = np.sqrt(4 * d_true * ACQ.frame_interval_s)
    assert 2.5 * one_step_um < rho < 0.5 * physics
    # a true step of the sample is missed with probability below search_miss_probability
    assert np.exp(-rho ** 2 / (4 * d_true * ACQ.frame_interval_s)) < params.search_miss_probability
    assert sample_search_range_um(tracks[tracks.particle < 10], ACQ, params) is None  # too few tracks
    fast = random_walks(rng, 100, 30, 10 * step_px)  # faster than the smallest particle of interest
    assert sample_search_range_um(fast, ACQ, params) == pytest.approx(physics)
    still = tracks.copy()  # every step zero (each picture written twice: the median step is 0)
    still[["x", "y"]] = still.groupby("particle")[["x", "y"]].transform("first")
    assert sample_search_range_um(still, ACQ, params) is None  # no radius of 0: keep the physics radius


def test_brightness_log_sd_measures_the_frame_to_frame_spread_robustly():
    """Independent log-normal noise of spread 0.3 per frame: the change between frames has spread 0.3·√2.
    Wrong links (5 % of the positions take another particle's brightness, 10 % of the steps) move the robust
    estimate by about 12 %, the standard deviation by 50 %."""
    from exonta.track.quality import brightness_log_sd

    rng = np.random.default_rng(8)
    n_tracks, n_pos = 300, 20
    level = np.repeat(rng.uniform(0.0, 4.0, n_tracks), n_pos)
    lb = level + rng.normal(0.0, 0.3, level.size)
    jump = rng.random(level.size) < 0.05
    lb[jump] = rng.uniform(0.0, 4.0, int(jump.sum()))
    tracks = pd.DataFrame({"particle": np.repeat(np.arange(n_tracks), n_pos),
                           "frame": np.tile(np.arange(n_pos), n_tracks), "signal": np.exp(lb)})
    est = brightness_log_sd(tracks.sample(frac=1.0, random_state=0), min_positions=10)
    assert est == pytest.approx(0.3 * np.sqrt(2.0), rel=0.15)
    # the mean-square spread is pulled far up by the jumps: the median is what keeps the estimate
    d = np.diff(lb.reshape(n_tracks, n_pos), axis=1).ravel()
    assert d.std() > 1.5 * 0.3 * np.sqrt(2.0)
    # short tracks, missing column, too few steps
    assert brightness_log_sd(tracks, min_positions=n_pos + 1) is None
    assert brightness_log_sd(tracks.drop(columns="signal")) is None
    assert brightness_log_sd(tracks[tracks["particle"] < 2], min_steps=50) is None
