"""Tests for exonta.analysis.diffusion (CVE, MSD fit, uncertainty, Cramér–Rao bound)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from reference.diffusion_ref import cramer_rao_ref, cve_ref, msd_fit_ref, track_moments_ref

from exonta.analysis import _diffusion_kernels as kern
from exonta.analysis.diffusion import (MSD_MAX_LAG, PARTICLE_COLUMNS, cramer_rao_D_rel_se, cve_variance,
                                       particle_table)
from exonta.config import Acquisition, SizingParams
from exonta.errors import ExontaInputError
from exonta.physics import diameter_from_diffusion, diffusion_from_diameter

DT = 1.0 / 30.0
T_EXP = DT / 2.0
ACQ = Acquisition(pixel_size_um=1.0, fps=30.0, exposure_s=T_EXP, temperature_c=22.0)
R = ACQ.blur_coefficient  # 1/12


def simulate(rng, n_tracks, n_pos, d, sigma, dt=DT, t_exp=T_EXP, substeps=24):
    """Blurred, noisy 2-D Brownian positions (µm), shape (n_tracks, n_pos, 2).

    Each frame integrates the position over the exposure ``[0, t_exp)`` of its interval by the
    midpoint rule on a fine Brownian path (``2 * substeps`` points per frame interval), then adds
    Gaussian localisation noise ``sigma``.
    """
    fine = 2 * substeps
    h = dt / fine
    e = max(1, int(round(t_exp / h)))
    steps = rng.normal(0.0, np.sqrt(2 * d * h), (n_tracks, n_pos * fine, 2))
    path = np.cumsum(steps, axis=1).reshape(n_tracks, n_pos, fine, 2)
    # points at (2j + 1) h, j = 0.. : midpoints of sub-intervals of length 2h inside the exposure
    return path[:, :, 0:e:2, :].mean(axis=2) + rng.normal(0.0, sigma, (n_tracks, n_pos, 2))


def to_tracks(meas, px=1.0):
    n_tracks, n_pos, _ = meas.shape
    return pd.DataFrame({"particle": np.repeat(np.arange(n_tracks), n_pos),
                         "frame": np.tile(np.arange(n_pos), n_tracks),
                         "x": meas[:, :, 0].ravel() / px, "y": meas[:, :, 1].ravel() / px,
                         "mass": np.ones(meas[:, :, 0].size)})


def random_gappy_tracks(rng, n_tracks=15):
    rows = []
    for p in range(n_tracks):
        n = int(rng.integers(1, 30))
        frames = np.sort(rng.choice(60, size=n, replace=False)) + int(rng.integers(0, 5))
        rows.append(pd.DataFrame({"particle": p * 3 + 7, "frame": frames,
                                  "x": rng.normal(0, 3, n).cumsum(), "y": rng.normal(0, 3, n).cumsum(),
                                  "mass": rng.uniform(1, 2, n)}))
    return pd.concat(rows, ignore_index=True).sample(frac=1.0, random_state=1)  # shuffled rows


# --------------------------------------------------------------------------- kernels vs references

def test_kernel_matches_reference_with_gaps():
    rng = np.random.default_rng(0)
    t = random_gappy_tracks(rng).sort_values(["particle", "frame"])
    p, f = t["particle"].to_numpy(), t["frame"].to_numpy().astype(np.int64)
    x, y = t["x"].to_numpy(), t["y"].to_numpy()
    ids, starts = np.unique(p, return_index=True)
    out = kern.allocate(ids.size, 6)
    kern.track_moments(np.append(starts, p.size).astype(np.int64), f, x, y, 6, *out)
    ref = track_moments_ref(p, f, x, y, 6)
    for k, pid in enumerate(ids):
        sq, cnt, cs, cc = ref[int(pid)]
        np.testing.assert_allclose(out[0][k], sq, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(out[1][k], cnt)
        assert out[2][k] == pytest.approx(cs, rel=1e-12, abs=1e-12)
        assert out[3][k] == cc


def test_particle_table_matches_reference_estimators():
    rng = np.random.default_rng(1)
    meas = simulate(rng, 6, 40, d=3.0, sigma=0.05)
    px = 0.25
    tab = particle_table(to_tracks(meas, px=px), ACQ.model_copy(update={"pixel_size_um": px}),
                         SizingParams(min_track_length=5))
    for k in range(6):
        xy = [tuple(v) for v in meas[k]]
        d, s2 = cve_ref(xy, DT, R)
        row = tab.iloc[k]
        assert row["D_cve_um2_s"] == pytest.approx(d, rel=1e-9)
        assert row["D_um2_s"] == pytest.approx(d, rel=1e-9)
        assert row["sigma2_loc_um2"] == pytest.approx(s2, rel=1e-6, abs=1e-12)
        assert row["n_steps"] == 39 and row["n_positions"] == 40 and row["n_cov"] == 38
        # the MSD fit uses the number of points chosen from the reduced localisation error
        x_red = max(s2, 0.0) / (d * DT)
        n_pts = int(np.clip(np.rint(2 + 2.7 * np.sqrt(x_red)), 2, min(39 // 2, MSD_MAX_LAG)))
        assert row["D_msd_um2_s"] == pytest.approx(msd_fit_ref(xy, DT, n_pts), rel=1e-9)


def test_particle_table_with_gaps_uses_contiguous_steps_only():
    rng = np.random.default_rng(2)
    t = random_gappy_tracks(rng)
    tab = particle_table(t, ACQ, SizingParams(min_track_length=3)).set_index("particle")
    ref = track_moments_ref(t["particle"].to_numpy(), t["frame"].to_numpy(), t["x"].to_numpy(),
                            t["y"].to_numpy(), 1)
    for pid, (sq, cnt, cs, cc) in ref.items():
        row = tab.loc[pid]
        assert row["n_steps"] == cnt[0] and row["n_cov"] == cc
        if cnt[0] and cc:
            assert row["msd1_um2"] == pytest.approx(sq[0] / (2 * cnt[0]), rel=1e-12)
            assert row["cov1_um2"] == pytest.approx(cs / (2 * cc), rel=1e-12, abs=1e-12)
            assert row["D_cve_um2_s"] == pytest.approx(sq[0] / (2 * cnt[0]) / (2 * DT) + cs / (2 * cc) / DT,
                                                       rel=1e-12)
        else:
            assert not row["valid"]
        g = t[t.particle == pid]
        assert row["mean_mass"] == pytest.approx(g["mass"].mean())
        assert row["x_mean"] == pytest.approx(g["x"].mean())
        assert row["first_frame"] == g["frame"].min()
        assert row["n_positions"] == len(g)


# --------------------------------------------------------------------------- statistics on simulated tracks

@pytest.mark.parametrize("sigma", [0.03, 0.2])
def test_cve_unbiased_and_naive_msd_biased(sigma):
    rng = np.random.default_rng(3)
    d = 4.0
    tab = particle_table(to_tracks(simulate(rng, 2000, 51, d, sigma)), ACQ, SizingParams(min_track_length=3))
    est = tab["D_um2_s"].to_numpy()
    se_mean = est.std() / np.sqrt(est.size)
    assert abs(est.mean() - d) < 3.5 * se_mean  # SE ≈ 0.5 %
    # naive one-step MSD: D(1 − 2R) + σ²/Δt per axis; below D for blur-dominated, above for noise-dominated
    naive = (tab["msd1_um2"] / (2 * DT)).to_numpy()
    expected = d * (1 - 2 * R) + sigma**2 / DT
    assert naive.mean() == pytest.approx(expected, rel=0.02)
    if sigma < 0.1:
        assert naive.mean() < d - 10 * se_mean
    else:
        assert naive.mean() > d + 10 * se_mean
    # the MSD fit with intercept is unbiased too (noisier)
    msd = tab["D_msd_um2_s"].to_numpy()
    assert abs(msd.mean() - d) < 4 * msd.std() / np.sqrt(msd.size)
    # sigma recovered
    s2 = tab["sigma2_loc_um2"].to_numpy()
    assert abs(s2.mean() - sigma**2) < 4 * s2.std() / np.sqrt(s2.size)
    assert np.sqrt(s2.mean()) == pytest.approx(sigma, rel=0.1 if sigma < 0.1 else 0.03)


@pytest.mark.parametrize("n_steps", [20, 50, 200])
def test_se_matches_scatter_and_cramer_rao(n_steps):
    rng = np.random.default_rng(4 + n_steps)
    d, sigma = 4.0, 0.1  # reduced localisation error σ²/(DΔt) = 0.075, blur R = 1/12
    n_tracks = 3000 if n_steps < 200 else 1200
    tab = particle_table(to_tracks(simulate(rng, n_tracks, n_steps + 1, d, sigma)), ACQ,
                         SizingParams(min_track_length=3))
    est = tab["D_um2_s"].to_numpy()
    emp_rel = est.std() / d
    # per-track SE (from each track's own D̂, σ̂) agrees with the empirical scatter
    assert np.nanmedian(tab["D_se_um2_s"]) / d == pytest.approx(emp_rel, rel=0.15)  # NaN where D̂ ≤ 0
    assert np.sqrt(cve_variance(d, sigma**2, n_steps, R, DT)) / d == pytest.approx(emp_rel, rel=0.1)
    # and the CVE is close to optimal: within 1.3 × the Cramér–Rao bound (σ estimated jointly)
    crb = cramer_rao_D_rel_se(n_steps, d, sigma, R, DT)
    assert emp_rel < 1.3 * crb
    assert emp_rel > 0.85 * crb  # nothing beats the bound (up to sampling noise of the std)


def test_cramer_rao_matches_dense_reference():
    for n, d, s, r in [(2, 1.0, 0.05, 0.0), (7, 4.0, 0.1, 1 / 12), (30, 0.5, 0.3, 1 / 6), (64, 10.0, 0.02, 0.05)]:
        for known in (False, True):
            assert cramer_rao_D_rel_se(n, d, s, r, DT, sigma_known=known) == pytest.approx(
                cramer_rao_ref(n, d, s, r, DT, sigma_known=known), rel=1e-8)
    # vectorised over n; knowing σ can only help; no noise and no blur: sqrt(1/N) for 2 axes
    ns = np.array([10, 40, 160])
    joint = cramer_rao_D_rel_se(ns, 4.0, 0.1, R, DT)
    known = cramer_rao_D_rel_se(ns, 4.0, 0.1, R, DT, sigma_known=True)
    assert joint.shape == (3,) and np.all(known <= joint) and np.all(np.diff(joint) < 0)
    np.testing.assert_allclose(cramer_rao_D_rel_se(ns, 4.0, 0.0, 0.0, DT, sigma_known=True), np.sqrt(1 / ns),
                               rtol=1e-12)
    assert np.isnan(cramer_rao_D_rel_se(1, 4.0, 0.1, R, DT))


# --------------------------------------------------------------------------- table semantics

def test_sizes_ci_validity_and_estimator_choice():
    rng = np.random.default_rng(5)
    d_true = diffusion_from_diameter(100.0, 22.0, ACQ.viscosity_mpas)
    meas = simulate(rng, 300, 60, d_true, 0.05)
    t = to_tracks(meas)
    t = t[~((t.particle == 0) & (t.frame >= 5))]  # one short track
    tab = particle_table(t, ACQ, SizingParams(min_track_length=10))
    assert list(tab.columns) == list(PARTICLE_COLUMNS)
    assert tab["particle"].dtype == np.int64 and tab["valid"].dtype == bool
    assert not tab.loc[tab.particle == 0, "valid"].item()
    v = tab[tab.valid]
    assert len(v) >= 295
    np.testing.assert_allclose(v["diameter_nm"], diameter_from_diffusion(v["D_um2_s"], 22.0, ACQ.viscosity_mpas))
    assert np.all(v["diameter_ci95_low_nm"] < v["diameter_nm"])
    assert np.all(v["diameter_nm"] < v["diameter_ci95_high_nm"])
    # the 95 % intervals cover the true diameter ~95 % of the time
    cover = np.mean((v["diameter_ci95_low_nm"] < 100.0) & (100.0 < v["diameter_ci95_high_nm"]))
    assert 0.9 < cover < 0.99
    assert np.median(v["diameter_nm"]) == pytest.approx(100.0, rel=0.05)
    # estimator choice
    tab_msd = particle_table(t, ACQ, SizingParams(min_track_length=10, estimator="msd"))
    np.testing.assert_allclose(tab_msd["D_um2_s"], tab["D_msd_um2_s"])
    np.testing.assert_allclose(tab_msd["D_cve_um2_s"], tab["D_um2_s"])


def test_uses_corrected_positions_and_negative_d_is_invalid():
    rng = np.random.default_rng(6)
    t = to_tracks(simulate(rng, 3, 30, 2.0, 0.05))
    moved = t.assign(x_corrected=t["x"] * 2.0, y_corrected=t["y"] * 2.0)
    a = particle_table(t, ACQ)
    b = particle_table(moved, ACQ)
    np.testing.assert_allclose(b["D_cve_um2_s"], 4.0 * a["D_cve_um2_s"], rtol=1e-10)
    # a zig-zag track (anticorrelated steps) gives D̂ < 0: invalid, NaN diameter
    zz = pd.DataFrame({"particle": 0, "frame": np.arange(20), "x": 0.1 * (np.arange(20) % 2), "y": 0.0})
    row = particle_table(zz, ACQ).iloc[0]
    assert row["D_um2_s"] < 0 and not row["valid"] and np.isnan(row["diameter_nm"])


def test_bad_input_and_empty():
    with pytest.raises(ExontaInputError, match="particle"):
        particle_table(pd.DataFrame({"frame": [0], "x": [0.0], "y": [0.0]}), ACQ)
    dup = pd.DataFrame({"particle": [0, 0], "frame": [1, 1], "x": [0.0, 1.0], "y": [0.0, 0.0]})
    with pytest.raises(ExontaInputError, match="twice"):
        particle_table(dup, ACQ)
    with pytest.raises(ExontaInputError, match="NaN"):
        particle_table(pd.DataFrame({"particle": [0, 0], "frame": [0, 1], "x": [0.0, np.nan], "y": [0.0, 0.0]}), ACQ)
    empty = particle_table(pd.DataFrame({"particle": np.empty(0, dtype=np.int64), "frame": np.empty(0, dtype=np.int64),
                                         "x": np.empty(0), "y": np.empty(0)}), ACQ)
    assert len(empty) == 0 and list(empty.columns) == list(PARTICLE_COLUMNS)


def test_speed_200k_positions():
    rng = np.random.default_rng(7)
    n_tracks, n_pos = 4000, 50
    t = pd.DataFrame({"particle": np.repeat(np.arange(n_tracks), n_pos), "frame": np.tile(np.arange(n_pos), n_tracks),
                      "x": rng.normal(0, 1, (n_tracks, n_pos)).cumsum(1).ravel(),
                      "y": rng.normal(0, 1, (n_tracks, n_pos)).cumsum(1).ravel(), "mass": 1.0})
    particle_table(t.iloc[:500], ACQ)  # compile / load the kernel
    t0 = time.perf_counter()
    tab = particle_table(t, ACQ)
    elapsed = time.perf_counter() - t0
    assert len(tab) == n_tracks
    assert elapsed < 1.0, f"{elapsed:.2f} s for 200k positions"
