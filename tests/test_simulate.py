"""Tests of the physical NTA video simulator (exonta.simulate)."""

from __future__ import annotations

import json
import math
import tomllib

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from exonta._simkernels import _camera, _render_spots
from exonta.errors import ExontaInputError
from exonta.physics import diffusion_from_diameter, relative_scattering, water_viscosity_mpas
from exonta.simulate import (
    TRUTH_COLUMNS,
    Component,
    SimulatedVideo,
    SimulationConfig,
    _CameraTables,
    _frame_seed,
    _sigma_px,
    _Simulator,
    iter_simulated_chunks,
    load_simulation_config,
    preset_config,
    simulate,
    write_simulation,
)
from reference.simulate_ref import (
    adu_pmf_ref,
    brownian_msd_per_axis_ref,
    camera_expected_ref,
    render_spots_ref,
)

SMALL = dict(width_px=64, height_px=48, n_frames=6)


# --------------------------------------------------------------------------- kernels


def test_render_kernel_matches_reference():
    rng = np.random.default_rng(1)
    h, w = 37, 53
    n = 40
    x = rng.uniform(-6, w + 5, n)  # some spots partly or wholly outside
    y = rng.uniform(-6, h + 5, n)
    sigma = rng.uniform(0.3, 6.0, n)
    photons = rng.uniform(10, 5e4, n)
    got = np.zeros((h, w))
    _render_spots(got, x, y, sigma, photons, 40.0, 1e-12)
    ref = render_spots_ref((h, w), x, y, sigma, photons)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_render_kernel_production_window_is_accurate_and_conserves_photons():
    # production settings: 8-sigma / 1e-3-photon window; one bright spot well inside the frame
    h, w = 64, 64
    for sig, ph in ((0.4, 1e5), (1.5, 3e5), (7.0, 500.0)):
        got = np.zeros((h, w))
        _render_spots(got, np.array([31.3]), np.array([30.8]), np.array([sig]), np.array([ph]), 8.0, 1e-3)
        ref = render_spots_ref((h, w), 31.3, 30.8, sig, ph)
        assert np.abs(got - ref).max() < 2e-3
        assert got.sum() == pytest.approx(ph, abs=max(0.5, 1e-5 * ph))
    # centre of a spot: x = column, y = row, pixel centres at integers
    got = np.zeros((20, 30))
    _render_spots(got, np.array([12.0]), np.array([7.0]), np.array([1.0]), np.array([1e4]), 8.0, 1e-6)
    r, c = np.unravel_index(np.argmax(got), got.shape)
    assert (r, c) == (7, 12)
    yy, xx = np.mgrid[:20, :30]
    assert (got * xx).sum() / got.sum() == pytest.approx(12.0, abs=1e-6)
    assert (got * yy).sum() / got.sum() == pytest.approx(7.0, abs=1e-6)


def _camera_samples(signal_value, bg, gain, read, offset, max_adu, dtype, frames=4, gradient_rest=0.0):
    h, w = 128, 256
    tb = _CameraTables(np.full((h, w), bg), gain, read, offset, max_adu, dtype)
    out = np.empty((h, w), dtype=dtype)
    signal = np.full((h, w), float(signal_value))
    bg_rest = np.full((h, w), float(gradient_rest))
    res = []
    for k in range(frames):
        _camera(signal, tb.level, bg_rest, np.exp(-bg_rest), tb.base_cdf, tb.base_guide, tb.adu_ok,
                tb.adu_values, tb.adu_cdf, tb.adu_guide, gain, read, offset, max_adu, _frame_seed(3, k), out)
        res.append(out.copy())
    return np.concatenate([r.ravel() for r in res])


@pytest.mark.parametrize("signal,rest,gain,read,offset,max_adu,dtype", [
    (0.0, 0.0, 0.5, 2.0, 10.0, 255, np.uint8),      # pure background: table path
    (0.3, 0.0, 0.5, 2.0, 10.0, 255, np.uint8),      # faint wing: inversion path
    (4.0, 1.5, 0.5, 2.0, 10.0, 255, np.uint8),      # uneven background + signal
    (60.0, 0.0, 0.5, 2.0, 10.0, 255, np.uint8),     # PTRS path
    (700.0, 0.0, 0.5, 2.0, 10.0, 255, np.uint8),    # saturates at 255
    (35.0, 0.0, 8.0, 2.0, 100.0, 65535, np.uint16),  # 16 bit
    (5.0, 0.0, 1.0, 0.0, 3.0, 255, np.uint8),       # no read noise
])
def test_camera_kernel_distribution_matches_exact_pmf(signal, rest, gain, read, offset, max_adu, dtype):
    bg = 20.0
    got = _camera_samples(signal, bg, gain, read, offset, max_adu, dtype, gradient_rest=rest)
    assert got.dtype == dtype
    vals, pmf = adu_pmf_ref(bg + signal + rest, gain, read, offset, max_adu)
    ecdf = np.searchsorted(np.sort(got), vals, side="right") / got.size
    # Kolmogorov distance; n = 131072 samples → 99.9 % critical value ≈ 1.95/sqrt(n) ≈ 0.0054
    assert np.abs(ecdf - np.cumsum(pmf)).max() < 0.006
    mean_ref = (vals * pmf).sum()
    sd_ref = math.sqrt(((vals - mean_ref) ** 2 * pmf).sum())
    assert got.mean() == pytest.approx(mean_ref, abs=5 * sd_ref / math.sqrt(got.size) + 1e-9)


def test_camera_kernel_without_adu_tables(monkeypatch):
    # very bright backgrounds skip the per-level ADU table: every pixel takes the explicit path
    monkeypatch.setattr(_CameraTables, "max_table_cells", 0)
    got = _camera_samples(3.0, 20.0, 0.5, 2.0, 10.0, 255, np.uint8, gradient_rest=0.05)
    vals, pmf = adu_pmf_ref(23.05, 0.5, 2.0, 10.0, 255)
    ecdf = np.searchsorted(np.sort(got), vals, side="right") / got.size
    assert np.abs(ecdf - np.cumsum(pmf)).max() < 0.006
    sim = simulate(SimulationConfig(width_px=64, height_px=64, n_frames=4, concentration_per_ml=0.0,
                                    background_photons=3000.0, background_gradient=0.2, bit_depth=16))
    v = sim.frames.astype(float)
    bg = 3000.0 * (1 + 0.2 * (0.8 * np.linspace(-1, 1, 64)[None, :]
                              + 0.2 * (1 - 2 * np.linspace(-1, 1, 64)[:, None] ** 2)))
    resid = (v - (8.0 * bg + 100.0)) / np.sqrt(64.0 * (bg + 4.0) + 1 / 12)
    assert abs(resid.mean()) < 5 / math.sqrt(resid.size)
    assert resid.std() == pytest.approx(1.0, abs=0.03)


def test_camera_noise_free_matches_reference():
    cfg = SimulationConfig(**SMALL, noise=False, background_gradient=0.3, photons_ref=2e4)
    sim = _Simulator(cfg)
    ch = sim.chunk(2)
    # rebuild the expected image of frame 0 with the slow reference and the same truth samples
    sim2 = _Simulator(cfg)
    samples, _, _ = sim2._advance(1)
    px = cfg.pixel_size_um
    z = samples[0, :, :, 2]
    photons = np.exp(-z**2 / (2 * cfg.sheet_sigma_um**2)) * sim2.photons0[None, :] / cfg.n_substeps
    expected = render_spots_ref((cfg.height_px, cfg.width_px), samples[0, :, :, 0].ravel() / px,
                                samples[0, :, :, 1].ravel() / px, _sigma_px(cfg, z).ravel(), photons.ravel())
    ref = camera_expected_ref(expected + sim2.bg_map, cfg.gain, cfg.offset, 255)
    # the kernel window drops < 1e-3 photons per pixel: at most one ADU step at a rounding boundary
    assert np.abs(ch.frames[0].astype(int) - ref.astype(int)).max() <= 1
    assert np.mean(ch.frames[0] == ref) > 0.999


# --------------------------------------------------------------------------- models


def test_config_validation():
    with pytest.raises(ValidationError):
        SimulationConfig(exposure_s=0.05, fps=30)
    with pytest.raises(ValidationError):
        SimulationConfig(unknown_field=1)
    with pytest.raises(ValidationError):
        Component(distribution="lognormal", median_nm=100)  # gsd missing
    with pytest.raises(ValidationError):
        SimulationConfig(components=[])
    with pytest.raises(ExontaInputError):
        preset_config("nope")
    with pytest.raises(ExontaInputError):
        simulate(SimulationConfig(**SMALL), n_frames=0)
    assert SimulationConfig().viscosity == pytest.approx(water_viscosity_mpas(22.0))


def test_load_simulation_config(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("n_frames = 7\nfps = 25.0\n[[components]]\ndiameter_nm = 150.0\n")
    cfg = load_simulation_config(f, seed=4)
    assert (cfg.n_frames, cfg.fps, cfg.seed, cfg.components[0].diameter_nm) == (7, 25.0, 4, 150.0)
    f.write_text("n_frame = 7\n")
    with pytest.raises(ExontaInputError, match="n_frame"):
        load_simulation_config(f)
    f.write_text("[simulation]\nn_frames = 7\n[other]\nx = 1\n")
    with pytest.raises(ExontaInputError, match="other"):
        load_simulation_config(f)
    assert SimulationConfig(bit_depth=16).gain == 8.0
    assert SimulationConfig().gain == 0.5


def test_component_sampling():
    rng = np.random.default_rng(0)
    d = Component(diameter_nm=100, cv=0.5).sample_diameters_nm(rng, 20000)
    assert (d > 0).all()
    d = Component(diameter_nm=100, cv=0.05).sample_diameters_nm(rng, 20000)
    assert d.mean() == pytest.approx(100, abs=0.2)
    assert d.std() == pytest.approx(5, rel=0.03)
    d = Component(distribution="lognormal", median_nm=110, gsd=1.45).sample_diameters_nm(rng, 20000)
    assert np.median(d) == pytest.approx(110, rel=0.02)
    assert np.exp(np.log(d).std()) == pytest.approx(1.45, rel=0.02)


# --------------------------------------------------------------------------- simulate


def test_simulate_output_structure_and_physics_columns():
    cfg = SimulationConfig(**SMALL, components=[Component(fraction=1, diameter_nm=100),
                                                Component(fraction=1, diameter_nm=200, refractive_index=1.45)],
                           concentration_per_ml=2e9)
    sim = simulate(cfg)
    assert isinstance(sim, SimulatedVideo)
    assert sim.frames.shape == (6, 48, 64) and sim.frames.dtype == np.uint8
    assert tuple(sim.truth.columns) == TRUTH_COLUMNS
    t = sim.truth
    n = sim.info["n_particles"]
    assert n > 10 and len(t) == 6 * n
    assert t["frame"].dtype == np.int64 and t["particle"].dtype == np.int64 and t["in_field"].dtype == bool
    assert set(t["component"].unique()) == {0, 1}
    eta = water_viscosity_mpas(22.0)
    np.testing.assert_allclose(t["D_um2_s"], diffusion_from_diameter(t["diameter_nm"], 22.0, eta))
    # photons: sheet profile × Rayleigh scattering, averaged over the exposure samples
    big = t["refractive_index"] == 1.45
    scat = relative_scattering(t["diameter_nm"], t["refractive_index"], 1.333)
    ratio = t["photons"] / (cfg.photons_ref * scat * np.exp(-t["z_um"] ** 2 / (2 * cfg.sheet_sigma_um ** 2)))
    np.testing.assert_allclose(ratio, 1.0, rtol=0.05)  # exact up to z jitter within the exposure
    assert big.any()
    assert sim.acquisition.pixel_size_um == cfg.pixel_size_um and sim.acquisition.fps == cfg.fps
    assert sim.true_concentration_per_ml == pytest.approx(cfg.concentration_per_ml, rel=0.05)


def test_auto_z_half_buries_the_brightest_particle_in_noise():
    for d in (100.0, 200.0):
        cfg = SimulationConfig(components=[Component(diameter_nm=d)])
        zh = _Simulator(cfg).z_half
        bright = cfg.photons_ref * relative_scattering(d, 1.59)
        sig = float(_sigma_px(cfg, zh))
        peak = bright * math.exp(-zh**2 / (2 * cfg.sheet_sigma_um**2)) * math.erf(0.5 / (math.sqrt(2) * sig)) ** 2
        assert peak < 0.2 * math.sqrt(cfg.background_photons + cfg.read_noise_e**2)
        assert 2 * cfg.sheet_sigma_um <= zh <= 12 * cfg.sheet_sigma_um
    assert _Simulator(SimulationConfig(components=[Component(diameter_nm=200)])).z_half > \
        _Simulator(SimulationConfig()).z_half
    assert _Simulator(SimulationConfig(z_half_um=7.5)).z_half == 7.5


def _lag1(truth, col):
    """Frame-to-frame steps of ``col`` of the particles that start in the field.

    Selecting on the start position keeps the steps unbiased (a particle wrapped
    at the box edge becomes a new id, so steps near the edge would be biased).
    """
    t = truth.sort_values(["particle", "frame"])
    same = (np.diff(t["particle"].to_numpy()) == 0) & (np.diff(t["frame"].to_numpy()) == 1)
    same &= t["in_field"].to_numpy()[:-1]
    return np.diff(t[col].to_numpy())[same]


def test_msd_of_true_tracks_gives_input_diffusion_and_blur():
    # exposure = frame interval so the blur is large and visible
    cfg = SimulationConfig(width_px=160, height_px=160, n_frames=120, concentration_per_ml=3e10,
                           exposure_s=1 / 30, noise=False, components=[Component(diameter_nm=60)], seed=5)
    sim = simulate(cfg)
    px = cfg.pixel_size_um
    d = float(sim.truth["D_um2_s"].iloc[0])
    dt = 1 / cfg.fps
    for axis in ("x", "y"):
        # positions at the start of each exposure: pure Brownian, var = 2DΔt, SE = 2DΔt sqrt(2/M)
        steps = _lag1(sim.truth, axis + "_start") * px
        m = steps.size
        assert m > 10000
        var = 2 * d * dt
        assert np.mean(steps**2) == pytest.approx(var, abs=4 * var * math.sqrt(2 / m))
        # exposure means: blurred, var = 2D(Δt − 2R'Δt), lag-1 covariance c; SE from the MA(1) structure
        steps = _lag1(sim.truth, axis) * px
        v, c = brownian_msd_per_axis_ref(d, dt, cfg.exposure_s, cfg.n_substeps)
        r_eff = sim.info["blur_coefficient_truth"]
        assert v == pytest.approx(2 * d * dt * (1 - 2 * r_eff), rel=1e-9)
        se = math.sqrt((2 * v**2 + 4 * c**2) / steps.size)
        assert np.mean(steps**2) == pytest.approx(v, abs=4 * se)
        assert abs(np.mean(steps**2) - var) > 10 * se  # clearly blurred
        # the exposure-mean steps have the predicted lag-1 covariance (negative: blur)
        t = sim.truth.sort_values(["particle", "frame"])
        g = t.groupby("particle")[axis]
        dx = (g.diff() * px).to_numpy()
        pid = t["particle"].to_numpy()
        inf = t["in_field"].to_numpy()
        ok = ~np.isnan(dx[1:]) & ~np.isnan(dx[:-1]) & (pid[1:] == pid[:-1]) & np.concatenate([[False], inf[:-2]])
        prod = (dx[1:] * dx[:-1])[ok]
        assert np.mean(prod) == pytest.approx(c, abs=5 * v / math.sqrt(prod.size))


def test_truth_position_is_exposure_mean_of_the_blurred_spot():
    # one fast-drifting particle, noise-free, uniform sheet: the image centroid is the exposure mean
    base = dict(width_px=96, height_px=64, n_frames=4, noise=False, bit_depth=16, gain_adu_per_e=1.0,
                offset_adu=0.0, background_photons=0.0, read_noise_e=0.0, photons_ref=0.2, sheet_sigma_um=1e3,
                depth_of_field_um=1e3, z_half_um=1.0, drift_um_per_s=(60.0, -20.0), exposure_s=0.03,
                components=[Component(diameter_nm=1000.0)])  # slow diffusion: the drift dominates
    vol = _Simulator(SimulationConfig(**base, concentration_per_ml=1e9)).volume_ml
    yy, xx = np.mgrid[:base["height_px"], :base["width_px"]]
    checked = 0
    for seed in range(40):  # the particle is placed uniformly in the box: use the seeds that put it in view
        cfg = SimulationConfig(**base, concentration_per_ml=1.0 / vol, seed=seed)
        sim = simulate(cfg)
        assert sim.info["n_particles"] == 1
        for f in range(cfg.n_frames):
            row = sim.truth[sim.truth["frame"] == f].iloc[0]
            if not (10 < row["x"] < cfg.width_px - 11 and 10 < row["y"] < cfg.height_px - 11):
                continue
            img = sim.frames[f].astype(float)
            cx, cy = (img * xx).sum() / img.sum(), (img * yy).sum() / img.sum()
            assert cx == pytest.approx(row["x"], abs=0.02)
            assert cy == pytest.approx(row["y"], abs=0.02)
            # the drift during the exposure moved the spot well away from the start position
            assert row["x"] - row["x_start"] == pytest.approx(60.0 * 0.015 / 0.166, abs=2.0)
            checked += 1
        if checked >= 4:
            break
    assert checked >= 4


def test_particle_counts_match_concentration():
    cfg = SimulationConfig(width_px=128, height_px=128, n_frames=4, concentration_per_ml=5e11, noise=False,
                           seed=2)
    sim = simulate(cfg)
    info = sim.info
    area_um2 = (128 * cfg.pixel_size_um) ** 2
    n = info["n_particles"]
    frac = area_um2 * 2 * info["z_half_um"] / (info["volume_ml"] * 1e12)
    expected = cfg.concentration_per_ml * area_um2 * 2 * info["z_half_um"] * 1e-12
    assert info["expected_in_field_per_frame"] == pytest.approx(expected, rel=1e-3)
    mean_in = sim.truth["in_field"].sum() / cfg.n_frames
    assert mean_in == pytest.approx(expected, abs=4 * math.sqrt(n * frac * (1 - frac)) + 1)
    t = sim.truth
    within = (t["in_field"] & (t["z_um"].abs() <= cfg.sheet_sigma_um)).sum() / cfg.n_frames
    exp_within = cfg.concentration_per_ml * area_um2 * 2 * cfg.sheet_sigma_um * 1e-12
    assert within == pytest.approx(exp_within, abs=4 * math.sqrt(exp_within))
    # z uniform within ±z_half (reflecting walls keep it there)
    assert t["z_um"].abs().max() <= info["z_half_um"]


def test_quantisation_saturation_and_dtype():
    s8 = simulate(SimulationConfig(**SMALL, photons_ref=5e6, concentration_per_ml=2e9, seed=1))
    assert s8.frames.dtype == np.uint8 and s8.frames.max() == 255
    s16 = simulate(SimulationConfig(**SMALL, bit_depth=16, concentration_per_ml=2e9, seed=1))
    assert s16.frames.dtype == np.uint16
    # in-focus 100 nm beads reach the thousands of ADU at 16 bit, background ~ offset + gain·bg
    t = s16.truth
    focus = t[t["in_field"] & (t["z_um"].abs() < 1.0)]
    if len(focus):
        f, x, y = int(focus.iloc[0]["frame"]), focus.iloc[0]["x"], focus.iloc[0]["y"]
        r, c = int(round(y)), int(round(x))
        assert s16.frames[f, max(r - 2, 0):r + 3, max(c - 2, 0):c + 3].max() > 1000
    assert np.median(s16.frames) == pytest.approx(100 + 8 * 20, abs=10)
    # noise-free background is exactly floor(gain·bg + offset + 0.5)
    nf = simulate(SimulationConfig(**SMALL, noise=False, concentration_per_ml=0.0))
    assert nf.info["n_particles"] == 0 and len(nf.truth) == 0
    assert (nf.frames == math.floor(0.5 * 20 + 10 + 0.5)).all()
    # noisy background: mean gain·λ + offset, variance gain²(λ + read²) + 1/12
    bgv = simulate(SimulationConfig(width_px=128, height_px=128, n_frames=8, concentration_per_ml=0.0,
                                    bit_depth=16, gain_adu_per_e=4.0))
    v = bgv.frames.astype(float)
    assert v.mean() == pytest.approx(4 * 20 + 100, abs=0.1)
    assert v.var() == pytest.approx(16 * (20 + 4) + 1 / 12, rel=0.03)


def test_camera_tables_for_uneven_background_are_exact():
    # a smooth map split into levels + remainders: every pixel still gets Poisson(its own λ)
    bg_map = np.tile(np.linspace(10.0, 16.0, 256), (128, 1))
    tb = _CameraTables(bg_map, 0.5, 2.0, 10.0, 255, np.uint8)
    assert tb.levels.size == 61
    np.testing.assert_allclose(tb.levels[tb.level] + tb.bg_rest, bg_map, atol=1e-12)
    assert (tb.bg_rest >= 0).all() and (tb.bg_rest < tb.step + 1e-12).all()
    out = np.empty((128, 256), np.uint8)
    cols = []
    for k in range(12):
        _camera(np.zeros((128, 256)), tb.level, tb.bg_rest, tb.bg_p0, tb.base_cdf, tb.base_guide,
                tb.adu_ok, tb.adu_values, tb.adu_cdf, tb.adu_guide, 0.5, 2.0, 10.0, 255.0, _frame_seed(1, k), out)
        cols.append(out.astype(float))
    v = np.array(cols)
    for c in (0, 100, 255):
        vals, pmf = adu_pmf_ref(bg_map[0, c], 0.5, 2.0, 10.0, 255)
        mean_ref = (vals * pmf).sum()
        sd_ref = math.sqrt(((vals - mean_ref) ** 2 * pmf).sum())
        got = v[:, :, c].ravel()
        assert got.mean() == pytest.approx(mean_ref, abs=5 * sd_ref / math.sqrt(got.size))
    # whole-image mean over columns follows 0.5·λ + 10
    prof = v.mean(axis=(0, 1))
    np.testing.assert_allclose(prof, 0.5 * bg_map[0] + 10.0, atol=5 * 1.6 / math.sqrt(12 * 128))


def test_background_gradient():
    sim = simulate(SimulationConfig(width_px=128, height_px=64, n_frames=8, concentration_per_ml=0.0,
                                    background_gradient=0.5, bit_depth=16))
    m = sim.frames.astype(float).mean(axis=(0, 1))
    assert m[-10:].mean() > m[:10].mean() + 0.5 * 8 * 20 * 0.5


def test_drift_shows_as_mean_displacement():
    cfg = SimulationConfig(width_px=96, height_px=96, n_frames=40, concentration_per_ml=2e10,
                           drift_um_per_s=(3.0, -1.5), noise=False, seed=4)
    sim = simulate(cfg)
    px, dt = cfg.pixel_size_um, 1 / cfg.fps
    d = float(sim.truth["D_um2_s"].iloc[0])
    for axis, v in (("x", 3.0), ("y", -1.5)):
        steps = _lag1(sim.truth, axis + "_start") * px
        se = math.sqrt(2 * d * dt / steps.size)
        assert steps.mean() == pytest.approx(v * dt, abs=4 * se)


def test_reproducible_and_chunk_invariant():
    cfg = SimulationConfig(**{**SMALL, "n_frames": 11}, concentration_per_ml=3e9, seed=7)
    a = simulate(cfg)
    b = simulate(cfg)
    np.testing.assert_array_equal(a.frames, b.frames)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    chunks = list(iter_simulated_chunks(cfg, chunk_frames=4))
    assert [c.start_frame for c in chunks] == [0, 4, 8]
    np.testing.assert_array_equal(np.concatenate([c.frames for c in chunks]), a.frames)
    pd.testing.assert_frame_equal(pd.concat([c.truth for c in chunks], ignore_index=True), a.truth)
    c = simulate(cfg, seed=8)
    assert not np.array_equal(c.frames, a.frames)


def test_presets():
    ev = preset_config("ev", **SMALL)
    assert ev.components[0].distribution == "lognormal" and ev.components[0].refractive_index == 1.39
    # the raised camera level makes a ~100 nm EV as bright as a ~70 nm PS bead or more
    assert ev.photons_ref * relative_scattering(100, 1.39) > 1000
    bi = preset_config("bimodal", **SMALL)
    assert [c.diameter_nm for c in bi.components] == [100, 200]
    sim = simulate(preset_config("beads100", **SMALL, concentration_per_ml=5e9))
    assert sim.truth["diameter_nm"].std() == pytest.approx(3.0, rel=0.5)


# --------------------------------------------------------------------------- writing and CLI


def test_write_simulation_round_trip(tmp_path):
    import tifffile

    cfg = SimulationConfig(**SMALL, concentration_per_ml=3e9, seed=3)
    sim = simulate(cfg)
    paths = write_simulation(sim, tmp_path / "out", "beads")
    for kind in ("tif", "avi", "sidecar", "truth_parquet", "truth_json"):
        assert paths[kind].is_file(), kind
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["beads.tif", "beads.avi", "beads.exonta.toml", "beads.truth.parquet", "beads.truth.json"])
    np.testing.assert_array_equal(tifffile.imread(paths["tif"]), sim.frames)
    with tifffile.TiffFile(paths["tif"]) as tf:
        assert tf.is_ome
        ome = tf.ome_metadata
    assert 'PhysicalSizeX="0.166"' in ome and "TimeIncrement=" in ome
    with open(paths["sidecar"], "rb") as fh:
        side = tomllib.load(fh)
    assert side["acquisition"] == {"pixel_size_um": 0.166, "fps": 30.0, "exposure_s": 0.02, "temperature_c": 22.0}
    pd.testing.assert_frame_equal(pd.read_parquet(paths["truth_parquet"]), sim.truth)
    summary = json.loads(paths["truth_json"].read_text())
    assert summary["true_concentration_per_ml"] == pytest.approx(sim.true_concentration_per_ml)
    assert summary["mean_in_field_per_frame"] == pytest.approx(sim.truth["in_field"].sum() / 6)
    assert summary["config"]["seed"] == 3
    import cv2

    cap = cv2.VideoCapture(str(paths["avi"]))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0)
    ok, fr = cap.read()
    cap.release()
    assert ok
    np.testing.assert_array_equal(fr[..., 0] if fr.ndim == 3 else fr, sim.frames[0])
    # the config loader of the analysis reads the sidecar
    from exonta.config import load_config

    acfg, _, sources = load_config(paths["tif"])
    assert acfg.acquisition.pixel_size_um == 0.166 and sources["fps"] == "sidecar"


def test_write_simulation_streaming_matches_in_memory_and_skips_avi_at_16_bit(tmp_path):
    import tifffile

    cfg = SimulationConfig(**{**SMALL, "n_frames": 9}, bit_depth=16, concentration_per_ml=3e9, seed=9)
    paths = write_simulation(cfg, tmp_path, "s16", formats=("tif", "avi"), chunk_frames=4)
    assert "avi" not in paths and not (tmp_path / "s16.avi").exists()
    sim = simulate(cfg)
    np.testing.assert_array_equal(tifffile.imread(paths["tif"]), sim.frames)
    pd.testing.assert_frame_equal(pd.read_parquet(paths["truth_parquet"]), sim.truth)
    assert "AVI skipped" in json.loads(paths["truth_json"].read_text())["notes"][0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    with pytest.raises(ExontaInputError):
        write_simulation(cfg, tmp_path, "x", formats=("mp4",))


def test_cli_simulate(tmp_path):
    import tifffile
    import typer
    from typer.testing import CliRunner

    from exonta.cli.simulate import command

    app = typer.Typer()
    app.command("simulate")(command)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer in sub-command mode
        pass

    runner = CliRunner()
    res = runner.invoke(app, ["simulate", str(tmp_path / "o"), "--name", "tiny", "--preset", "bimodal",
                              "--frames", "5", "--width", "40", "--height", "32", "--seed", "2",
                              "--concentration-per-ml", "5e9", "--drift-um-per-s", "1.0", "0.5",
                              "--format", "tif"])
    assert res.exit_code == 0, res.output
    frames = tifffile.imread(tmp_path / "o" / "tiny.tif")
    assert frames.shape == (5, 32, 40)
    summary = json.loads((tmp_path / "o" / "tiny.truth.json").read_text())
    assert summary["config"]["drift_um_per_s"] == [1.0, 0.5]
    assert [c["diameter_nm"] for c in summary["config"]["components"]] == [100.0, 200.0]

    res = runner.invoke(app, ["simulate", str(tmp_path / "m"), "--mixture", "80:0.3,150:0.7", "--frames", "3",
                              "--width", "32", "--height", "32", "--format", "tif", "--bit-depth", "16"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "m" / "simulated.truth.json").read_text())
    assert [c["fraction"] for c in summary["config"]["components"]] == [0.3, 0.7]

    cfg_file = tmp_path / "sim.toml"
    cfg_file.write_text('[simulation]\nn_frames = 3\nwidth_px = 32\nheight_px = 24\nfps = 25.0\n'
                        '[[simulation.components]]\ndistribution = "lognormal"\nmedian_nm = 90.0\ngsd = 1.3\n')
    res = runner.invoke(app, ["simulate", str(tmp_path / "c"), "--config", str(cfg_file), "--name", "c",
                              "--format", "tif,avi"])
    assert res.exit_code == 0, res.output
    side = tomllib.loads((tmp_path / "c" / "c.exonta.toml").read_text())
    assert side["acquisition"]["fps"] == 25.0
    assert (tmp_path / "c" / "c.avi").is_file()

    # a population flag keeps the preset's refractive index
    res = runner.invoke(app, ["simulate", str(tmp_path / "e"), "--preset", "ev", "--diameter-nm", "80",
                              "--frames", "2", "--width", "32", "--height", "32", "--format", "tif"])
    assert res.exit_code == 0, res.output
    comp = json.loads((tmp_path / "e" / "simulated.truth.json").read_text())["config"]["components"][0]
    assert comp["diameter_nm"] == 80.0 and comp["refractive_index"] == 1.39 and comp["distribution"] == "mono"

    # bad input: exit code 2 and one readable line
    res = runner.invoke(app, ["simulate", str(tmp_path / "bad"), "--exposure-s", "0.5", "--frames", "2"])
    assert res.exit_code == 2
    assert "exposure_s" in res.output
    res = runner.invoke(app, ["simulate", str(tmp_path / "bad"), "--preset", "nope"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["simulate", str(tmp_path / "bad"), "--mixture", "100;0.5"])
    assert res.exit_code == 2
