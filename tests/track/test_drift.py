"""Tests for exonta.track.drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from exonta.analysis.diffusion import particle_table
from exonta.config import Acquisition, LinkParams, SizingParams
from exonta.errors import ExontaInputError
from exonta.track import estimate_drift, subtract_drift

PX = 0.2  # µm/px
ACQ = Acquisition(pixel_size_um=PX, fps=30.0, exposure_s=0.01, temperature_c=22.0)
D_TRUE = 2.0  # µm²/s


def brownian_tracks(rng, n_particles=120, n_frames=200, d=D_TRUE, velocity=None, box_um=100.0, life=40):
    """Tracks table (px) of Brownian particles living ``life`` frames each, moved by a flow field.

    ``velocity(x_um, y_um, t_s) -> (vx, vy)`` in µm/s, evaluated per particle and frame.
    """
    dt = ACQ.frame_interval_s
    rows = []
    pid = 0
    for _ in range(n_particles):
        start = int(rng.integers(0, n_frames - life))
        pos = rng.uniform(0, box_um, 2)
        xs = np.empty((life, 2))
        for k in range(life):
            if k:
                step = rng.normal(0, np.sqrt(2 * d * dt), 2)
                if velocity is not None:
                    step = step + np.asarray(velocity(pos[0], pos[1], (start + k) * dt)) * dt
                pos = pos + step
            xs[k] = pos
        rows.append(pd.DataFrame({"particle": pid, "frame": np.arange(start, start + life),
                                  "x": xs[:, 0] / PX, "y": xs[:, 1] / PX, "mass": 1.0}))
        pid += 1
    return pd.concat(rows, ignore_index=True)


def test_no_drift_gives_zero_and_no_warning():
    rng = np.random.default_rng(0)
    tracks = brownian_tracks(rng)
    res = estimate_drift(tracks, ACQ, LinkParams())
    assert res.warnings == []
    # SE of a median-based mean velocity: 1.25 * sqrt(2 D dt) / sqrt(n_steps) / dt ≈ 0.2 µm/s here
    se = 1.25 * np.sqrt(2 * D_TRUE * ACQ.frame_interval_s / res.n_steps) * ACQ.fps
    assert abs(res.velocity_um_per_s[0]) < 3.5 * se and abs(res.velocity_um_per_s[1]) < 3.5 * se
    # the estimate is a random walk of the ensemble mean (~24 particles per frame): small steps ...
    step_um = np.diff(res.drift_px[["dx_px", "dy_px"]].to_numpy(), axis=0) * PX
    assert np.sqrt(np.mean(step_um**2)) < 0.1 * np.sqrt(2 * D_TRUE * ACQ.frame_interval_s)
    # ... so removing it does not change the diffusion coefficients
    sp = SizingParams(min_track_length=10)
    d_raw = particle_table(tracks, ACQ, sp)["D_um2_s"].to_numpy()
    d_cor = particle_table(subtract_drift(tracks, res), ACQ, sp)["D_um2_s"].to_numpy()
    assert np.mean(d_cor) == pytest.approx(np.mean(d_raw), rel=0.02)
    assert res.drift_px["frame"].tolist() == list(range(tracks.frame.min(), tracks.frame.max() + 1))
    assert res.drift_px["dx_px"].iloc[0] == 0.0


def test_uniform_drift_is_recovered_and_removal_restores_d():
    rng = np.random.default_rng(1)
    v = (8.0, -3.0)  # |v| = 8.5 µm/s
    tracks = brownian_tracks(rng, n_particles=200, velocity=lambda x, y, t: v)
    res = estimate_drift(tracks, ACQ, LinkParams())
    # statistical SE of each component ≈ 0.15 µm/s (< 2 % of |v|)
    err = np.hypot(res.velocity_um_per_s[0] - v[0], res.velocity_um_per_s[1] - v[1])
    assert err < 0.04 * np.hypot(*v)
    # strong but uniform: "strong" warning only
    assert len(res.warnings) == 1 and "strong drift/flow" in res.warnings[0]
    corr = subtract_drift(tracks, res)
    sp = SizingParams(min_track_length=10)
    d_raw = particle_table(tracks, ACQ, sp)["D_um2_s"].mean()
    d_cor = particle_table(corr, ACQ, sp)["D_um2_s"].mean()
    # 200 tracks x 39 steps: SE of the mean D ~ 1.5 %; a drift u adds 0.75 |u|² dt ≈ 1.8 µm²/s to the 2-D CVE
    assert d_raw == pytest.approx(D_TRUE + 0.75 * (v[0] ** 2 + v[1] ** 2) * ACQ.frame_interval_s, rel=0.08)
    assert d_cor == pytest.approx(D_TRUE, rel=0.08)


def test_flow_warnings_need_a_significant_drift():
    """A few fast-diffusing tracks (a buffer blank's noise links, a very dilute sample) give a mean step that is
    their own diffusion: no "strong drift" warning unless the drift is ≥ 3 standard errors from zero, and the
    reported SE is the spread of the steps over √n (robust: 1.2533·σ/√n)."""
    d_fast = 60.0  # µm²/s: step SD 2 µm per frame, a mean over ~60 steps wanders by ~8 µm/s
    found = []
    for seed in range(20):
        tracks = brownian_tracks(np.random.default_rng(100 + seed), n_particles=3, life=20, d=d_fast)
        res = estimate_drift(tracks, ACQ, LinkParams())
        se_expected = 1.2533 * np.sqrt(2 * d_fast * ACQ.frame_interval_s / res.n_steps) * ACQ.fps
        assert res.velocity_se_um_per_s[0] == pytest.approx(se_expected, rel=0.5)
        found.append((np.hypot(*res.velocity_um_per_s), res.warnings))
    speeds = np.array([f[0] for f in found])
    assert (speeds > LinkParams().flow_warning_um_per_s).sum() >= 10  # the estimate itself is large ...
    assert sum(bool(f[1]) for f in found) <= 1  # ... but not significant: at most a 1 % false alarm
    # a real drift of the same size on as few tracks but slow particles is significant and warned about
    tracks = brownian_tracks(np.random.default_rng(7), n_particles=3, life=20, velocity=lambda x, y, t: (12.0, 0.0))
    res = estimate_drift(tracks, ACQ, LinkParams())
    assert any("strong drift/flow" in w for w in res.warnings)


def test_time_varying_drift_is_followed():
    rng = np.random.default_rng(2)
    tracks = brownian_tracks(rng, n_particles=200, velocity=lambda x, y, t: (6.0 * np.sin(2 * np.pi * t / 4.0), 0.0))
    res = estimate_drift(tracks, ACQ, LinkParams(drift_smoothing_frames=9))
    frames = res.drift_px["frame"].to_numpy()
    est_step_um = np.diff(res.drift_px["dx_px"].to_numpy()) * PX
    true_step_um = 6.0 * np.sin(2 * np.pi * frames[1:] * ACQ.frame_interval_s / 4.0) * ACQ.frame_interval_s
    # per-frame noise of a median over ~40 particles, smoothed over 9 frames: ≈ 0.03 µm vs a 0.2 µm amplitude
    assert np.sqrt(np.mean((est_step_um - true_step_um) ** 2)) < 0.25 * np.abs(true_step_um).max()
    assert np.corrcoef(est_step_um, true_step_um)[0, 1] > 0.95
    assert np.sqrt(np.mean((np.diff(res.drift_px["dy_px"].to_numpy()) * PX) ** 2)) < 0.05
    assert not any("not uniform" in w for w in res.warnings)  # varies in time, not in space


def test_shear_flow_is_flagged_as_not_uniform():
    rng = np.random.default_rng(3)
    tracks = brownian_tracks(rng, velocity=lambda x, y, t: (0.1 * y, 0.0))  # 0 .. 10 µm/s across the field
    res = estimate_drift(tracks, ACQ, LinkParams())
    assert any("not uniform" in w for w in res.warnings)
    assert res.region_velocity_um_per_s["bottom"][0] > res.region_velocity_um_per_s["top"][0] + 3.0


def test_fast_flow_relative_to_search_range_warns():
    rng = np.random.default_rng(4)
    tracks = brownian_tracks(rng, n_particles=40, velocity=lambda x, y, t: (3.0, 0.0))
    res = estimate_drift(tracks, ACQ, LinkParams(search_range_um=0.2, flow_warning_um_per_s=50.0))
    assert len(res.warnings) == 1 and "search range" in res.warnings[0]


def test_subtract_drift_columns_and_extrapolation():
    tracks = pd.DataFrame({"particle": [0, 0, 0, 1], "frame": [0, 1, 2, 7], "x": [1.0, 2.0, 3.0, 5.0],
                           "y": [0.0, 0.0, 0.0, 1.0]})
    res = estimate_drift(tracks, ACQ, LinkParams(drift_smoothing_frames=1, drift_min_steps=0))
    np.testing.assert_allclose(res.drift_px["dx_px"].to_numpy()[:3], [0.0, 1.0, 2.0])
    out = subtract_drift(tracks, res)
    np.testing.assert_allclose(out["x_corrected"].to_numpy()[:3], [1.0, 1.0, 1.0])
    assert "x_corrected" not in tracks.columns  # input untouched
    with pytest.raises(ExontaInputError):
        estimate_drift(tracks.drop(columns="particle"), ACQ)


def test_no_links_gives_warning_and_zero():
    tracks = pd.DataFrame({"particle": [0, 0], "frame": [0, 3], "x": [1.0, 2.0], "y": [0.0, 0.0]})
    res = estimate_drift(tracks, ACQ)
    assert res.velocity_um_per_s == (0.0, 0.0) and res.n_steps == 0 and res.warnings
    assert len(res.drift_px) == 4


def test_a_sparse_field_widens_the_window_so_its_own_motion_is_not_removed():
    """Three particles in view: a 15-frame window holds ~45 steps and the drift estimate takes ~1/45 of each
    particle's own motion with it (D −4 %, sizes +4 %); widened to hold drift_min_steps steps, D is kept
    (measured, 12 seeds: 0.961 ± 0.009 → 1.004 ± 0.008 of the truth)."""
    sp = SizingParams(min_track_length=10)
    ratios = {0: [], 400: []}
    for seed in range(6):
        tracks = brownian_tracks(np.random.default_rng(seed), n_particles=3, n_frames=601, life=600)
        d_raw = particle_table(tracks, ACQ, sp)["D_um2_s"].mean()
        for min_steps in ratios:
            res = estimate_drift(tracks, ACQ, LinkParams(drift_min_steps=min_steps))
            ratios[min_steps].append(particle_table(subtract_drift(tracks, res), ACQ, sp)["D_um2_s"].mean() / d_raw)
            if min_steps:
                assert res.smoothing_frames == 134  # ceil(400 / (3 · 599 / 600))
            else:
                assert res.smoothing_frames == LinkParams().drift_smoothing_frames
    assert np.mean(ratios[0]) < 0.97  # the narrow window removes the particles' own motion
    assert np.mean(ratios[400]) == pytest.approx(1.0, abs=0.012)
    # many particles per frame: the window stays as given
    tracks = brownian_tracks(np.random.default_rng(9), n_particles=400, n_frames=200, life=40)
    assert estimate_drift(tracks, ACQ, LinkParams()).smoothing_frames == 15
