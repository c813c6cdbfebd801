"""Tests of exonta.analysis.distribution on synthetic tracks drawn directly (no video)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import gamma as gamma_dist

from exonta.analysis import _distkernels
from exonta.analysis.distribution import (
    _dst1_ortho,
    _run_replicates,
    _sigma2_per_track,
    basin_fractions,
    brightness_warnings,
    linking_artefact_peaks,
    linking_artefact_warnings,
    diameter_grid,
    dst_log_likelihood,
    dst_log_likelihood_sigma_derivatives,
    few_tracks_warning,
    fit_mixture_weights,
    gamma_log_likelihood,
    implausible_peaks,
    load_kernels,
    plot_size_distribution,
    size_distribution,
    track_components,
    track_fraction_warnings,
    weighted_quantiles,
    weighted_stats,
)
from exonta.config import Acquisition, SizingParams
from exonta.errors import ExontaCancelled, ExontaInputError
from reference.distribution_ref import cve_particles, dst1_ortho_ref, simulate_tracks, track_loglik_ref

ACQ = Acquisition(pixel_size_um=0.166, fps=30.0, exposure_s=0.02, temperature_c=22.0)


def _data(diameters, seed, **kw):
    rng = np.random.default_rng(seed)
    tracks = simulate_tracks(diameters, rng, fps=ACQ.fps, exposure_s=ACQ.exposure_s,
                             pixel_size_um=ACQ.pixel_size_um, viscosity_mpas=ACQ.viscosity_mpas, **kw)
    return tracks, cve_particles(tracks, ACQ)


def _mixture_fit(seed, small_nm, large_nm, n, track_seed):
    """1:1 mixture of two sizes (n tracks): (tracks, particles, deconvolved distribution, its peaks)."""
    rng = np.random.default_rng(seed)
    tracks, parts = _data(np.where(rng.random(n) < 0.5, small_nm, large_nm), track_seed)
    dist = size_distribution(parts, ACQ, SizingParams(bootstrap=0), tracks=tracks)
    return tracks, parts, dist, dist.stats["peaks"]


def _integrals(dist):
    t = dist.table
    return ((t["raw_density"] * t["bin_width_nm"]).sum(), (t["deconvolved_density"] * t["bin_width_nm"]).sum(),
            (t["deconvolved_volume_density"] * t["bin_width_nm"]).sum())


def _n_modes_kde(values_nm):
    """Number of modes of a Gaussian KDE of ln(diameter) (Silverman bandwidth)."""
    u = np.log(values_nm)
    bw = 1.06 * u.std() * u.size ** -0.2
    grid = np.linspace(u.min(), u.max(), 400)
    dens = np.exp(-0.5 * ((grid[:, None] - u[None, :]) / bw) ** 2).sum(axis=1)
    inner = (dens[1:-1] > dens[:-2]) & (dens[1:-1] > dens[2:]) & (dens[1:-1] > 0.05 * dens.max())
    return int(inner.sum())


# ----------------------------------------------------------------------------- likelihood vs references


@pytest.mark.parametrize("n", list(range(1, 41)) + [100, 257, 514, 1000, 1499])
def test_dst1_ortho_matches_scipy_and_the_defining_sum(n):
    """Against scipy.fft.dst and the defining sum, short runs and long."""
    from scipy.fft import dst

    rng = np.random.default_rng(n)
    x = rng.normal(0.0, 0.05, (3, n))  # displacements, µm
    got = _dst1_ortho(x)
    assert got.shape == x.shape and got.dtype == np.float64
    scale = np.abs(x).max()
    np.testing.assert_allclose(got, dst(x, type=1, norm="ortho", axis=-1), rtol=1e-12, atol=1e-12 * scale)
    if n <= 514:  # the pure-Python sum is O(N²)
        for row in range(x.shape[0]):
            np.testing.assert_allclose(got[row], dst1_ortho_ref(x[row]), rtol=1e-12, atol=1e-12 * scale)
    # orthonormal and symmetric: its own inverse; a 1-D input gives the row's transform
    np.testing.assert_allclose(_dst1_ortho(got), x, rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(_dst1_ortho(x[1]), got[1], rtol=1e-13, atol=1e-14 * scale)


def test_load_kernels_loads_every_kernel_size_distribution_calls():
    """After load_kernels each kernel holds the specialisation of the real calls, and a real size
    distribution (tracks table, bootstrap) adds none."""
    from numba import types

    i1 = types.Array(types.int64, 1, "C")
    f1 = types.Array(types.float64, 1, "C")
    f2 = types.Array(types.float64, 2, "C")
    expected = {
        "dst_loglik_kernel": (i1, f1, f1, f1, f1, f1, types.float64, f2),
        "dst_loglik_sigma_derivs_kernel": (i1, f1, f1, f1, f1, f1, types.float64, f2, f2),
        "posterior_gram_kernel": (f2, f1, f1, f1, f2, f1),
        "replicate_likelihood_kernel": (f2, f2, f2, i1, f1, f2),
        "cholesky_inverse_kernel": (f2, f2),
    }
    assert load_kernels() is None
    load_kernels()  # idempotent
    for name, sig in expected.items():
        assert sig in getattr(_distkernels, name).signatures, name
    before = {name: list(getattr(_distkernels, name).signatures) for name in expected}
    tracks, parts = _data(np.full(60, 100.0), 5)
    size_distribution(parts, ACQ, SizingParams(bootstrap=3), tracks=tracks)
    assert {name: list(getattr(_distkernels, name).signatures) for name in expected} == before


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dst_likelihood_matches_full_covariance_reference(seed):
    rng = np.random.default_rng(seed)
    dt = 1 / float(rng.uniform(20, 60))
    blur_r = float(rng.uniform(0, 1 / 6))
    n_tr = 4
    diam = rng.uniform(50, 500, n_tr)
    tracks = simulate_tracks(diam, rng, fps=1 / dt, exposure_s=6 * blur_r * dt, min_positions=2,
                             mean_extra_positions=6, gap_prob=0.2)
    ids = np.unique(tracks["particle"])[::-1]  # any order
    td = track_components(tracks, ids, 0.166)
    sigma2 = rng.uniform(0, 0.004, ids.size)
    d_grid = np.array([0.05, 0.7, 3.0, 12.0])
    got = dst_log_likelihood(td.comp_track, td.comp_one_minus_cos, td.comp_power_um2, sigma2, d_grid, dt, blur_r)
    for i, pid in enumerate(ids):
        g = tracks[tracks["particle"] == pid]
        for j, d in enumerate(d_grid):
            ref = track_loglik_ref(g["frame"].to_numpy(), g["x_corrected"].to_numpy() * 0.166,
                                   g["y_corrected"].to_numpy() * 0.166, d, sigma2[i], dt, blur_r)
            np.testing.assert_allclose(got[i, j], ref, rtol=1e-9, atol=1e-9)


def test_track_components_moments_and_gaps():
    tracks = pd.DataFrame({"particle": [7, 7, 7, 7, 7, 3, 3],
                           "frame": [0, 1, 2, 4, 5, 10, 11],
                           "x_corrected": [0.0, 1.0, 3.0, 0.0, 2.0, 5.0, 6.0],
                           "y_corrected": [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 3.0]})
    td = track_components(tracks, [7, 3, 99], 1.0)
    np.testing.assert_array_equal(td.n_steps, [3, 1, 0])  # frame 2 -> 4 is a gap
    np.testing.assert_array_equal(td.n_pairs, [1, 0, 0])
    np.testing.assert_allclose(td.msd1_um2[0], (1 + 4 + 1 + 4) / 6)
    np.testing.assert_allclose(td.cov1_um2[0], (1 * 2 + 0 * 1) / 2)
    assert np.isnan(td.cov1_um2[1]) and np.isnan(td.msd1_um2[2])
    # Parseval: the DST is orthonormal
    np.testing.assert_allclose(td.comp_power_um2[td.comp_track == 0].sum(), 10.0)
    np.testing.assert_allclose(td.comp_power_um2[td.comp_track == 1].sum(), 5.0)
    assert (td.comp_track == 2).sum() == 0


def test_gamma_likelihood_reduces_to_walker():
    rng = np.random.default_rng(3)
    n = rng.integers(5, 60, 20)
    msd1 = rng.uniform(0.01, 1.0, 20)
    d = np.array([0.5, 2.0, 8.0])
    dt = 1 / 30
    got = gamma_log_likelihood(msd1, n, np.zeros(20), d, dt, 0.0)
    t = 2 * n * msd1
    ref = gamma_dist.logpdf(t[:, None], n[:, None], scale=4 * d[None, :] * dt)
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_gamma_likelihood_moments_with_noise_and_blur():
    # the moment-matched Gamma has the exact mean and variance of T = sum(lambda_k chi2_1)
    n, d, s2, dt, r = 17, 3.0, 0.002, 1 / 30, 0.1
    k = np.arange(1, n + 1)
    lam = 2 * d * dt + 2 * (s2 - 2 * r * d * dt) * (1 - np.cos(np.pi * k / (n + 1)))
    mean, var = 2 * lam.sum(), 4 * (lam ** 2).sum()
    t = np.linspace(1e-4, 8 * mean, 20001)
    pdf = np.exp(gamma_log_likelihood(t / (2 * n), np.full(t.size, n), np.full(t.size, s2), [d], dt, r))[:, 0]
    dx = t[1] - t[0]
    m1 = (t * pdf).sum() * dx
    m2 = ((t - m1) ** 2 * pdf).sum() * dx
    np.testing.assert_allclose([pdf.sum() * dx, m1, m2], [1.0, mean, var], rtol=2e-3)


def test_posterior_gram_kernel_matches_numpy():
    rng = np.random.default_rng(4)
    lik = rng.random((50, 12)) * (rng.random((50, 12)) > 0.5)
    lik[:, 0] += 1e-3
    w = rng.random(12)
    w /= w.sum()
    lw = lik @ w
    c = rng.random(50)
    gram, col = np.empty((12, 12)), np.empty(12)
    _distkernels.posterior_gram_kernel(lik, w, lw, c, gram, col)
    q = lik * w[None, :] / lw[:, None]
    np.testing.assert_allclose(gram, q.T @ (q * c[:, None]), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(col, (q * c[:, None]).sum(axis=0), rtol=1e-10)


def test_fit_mixture_weights_recovers_known_mixture():
    # well-separated Gaussian kernels: the penalised NPMLE must find the mixing weights
    rng = np.random.default_rng(5)
    grid = np.linspace(0, 10, 41)
    comp = rng.random(3000) < 0.3
    x = np.where(comp, 2.0, 7.0) + rng.normal(0, 0.6, comp.size)
    lik = np.exp(-0.5 * ((x[:, None] - grid[None, :]) / 0.6) ** 2)
    w, beta, h = fit_mixture_weights(lik, penalty=1e-6)
    np.testing.assert_allclose(w.sum(), 1.0)
    assert abs(w[grid < 4.5].sum() - 0.3) < 0.03
    assert abs((w * grid)[grid < 4.5].sum() / w[grid < 4.5].sum() - 2.0) < 0.1
    assert np.all(np.linalg.eigvalsh(h) > 0)


@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_fixed_hessian_fit_of_a_resample_reaches_the_exact_optimum(scale):
    # bootstrap replicates reuse the full fit's Hessian; with a curvature too low by 1/0.3 (every full
    # step too long) the line search must still reach the optimum of the exact-Hessian fit
    rng = np.random.default_rng(8)
    grid = np.linspace(0, 10, 41)
    x = 5.0 + rng.normal(0, 0.3, 4000)  # one sharp peak: the replicates' curvature differs most
    lik = np.exp(-0.5 * ((x[:, None] - grid[None, :]) / 0.5) ** 2)
    w0, beta0, h0 = fit_mixture_weights(lik, penalty=1e-6)
    counts = np.bincount(rng.integers(0, x.size, x.size), minlength=x.size).astype(float)
    start = beta0 + rng.normal(0, 0.5, beta0.size)  # away from the resample's optimum
    exact_info, fixed_info = {}, {}
    w_exact, _, _ = fit_mixture_weights(lik, counts=counts, penalty=1e-6, beta0=start, info=exact_info)
    w_fixed, _, _ = fit_mixture_weights(lik, counts=counts, penalty=1e-6, beta0=start, hessian=scale * h0,
                                        maxiter=200, info=fixed_info)
    assert fixed_info["objective"] <= exact_info["objective"] + 0.02 / counts.sum()
    mean = lambda w: float((w * grid).sum())  # noqa: E731
    assert abs(mean(w_fixed) - mean(w_exact)) < 2e-3
    if scale < 1.0:  # the step length found once is kept: a full step is not tried and rejected every time
        assert fixed_info["evaluations"] <= fixed_info["nit"] + 3


def test_weighted_stats_uniform_in_log():
    edges, centres, widths = diameter_grid(10, 1000, 100)
    st = weighted_stats(np.full(100, 0.01), edges, centres, widths)
    np.testing.assert_allclose([st["d10"], st["d50"], st["d90"]], [10 * 100 ** 0.1, 100.0, 10 * 100 ** 0.9],
                               rtol=1e-9)


def test_replicate_likelihood_kernel_matches_numpy():
    rng = np.random.default_rng(3)
    n, m = 40, 25
    ll, d1, d2 = rng.normal(0, 5, (n, m)), rng.normal(0, 1, (n, m)), rng.normal(0, 1, (n, m))
    rows = np.sort(rng.choice(n, 17, replace=False)).astype(np.int64)
    delta = rng.normal(0, 0.3, rows.size)
    out = np.empty((rows.size, m))
    _distkernels.replicate_likelihood_kernel(ll, d1, d2, rows, delta, out)
    ref = ll[rows] + delta[:, None] * d1[rows] + 0.5 * delta[:, None] ** 2 * d2[rows]
    ref = np.exp(ref - ref.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-300)


def test_spd_inverse_kernel():
    from exonta.analysis.distribution import _spd_inverse

    a = np.random.default_rng(4).normal(size=(60, 60))
    h = a @ a.T + 0.5 * np.eye(60)
    np.testing.assert_allclose(_spd_inverse(h) @ h, np.eye(60), atol=1e-9)


# ----------------------------------------------------------------------------- sigma


def test_sigma2_pooled_by_brightness():
    n = 450
    tr_b, p_b = _data(np.full(n, 300.0), 6, sigma_nm=20.0)
    tr_d, p_d = _data(np.full(n, 300.0), 7, sigma_nm=70.0)
    p = pd.concat([p_b.assign(mean_mass=1000.0), p_d.assign(mean_mass=100.0)], ignore_index=True)
    n_pairs = np.maximum(p["n_steps"].to_numpy() - 1, 0)
    s2, pool = _sigma2_per_track(p["msd1_um2"], p["cov1_um2"], p["n_steps"], n_pairs, ACQ.blur_coefficient,
                                 "brightness", p["mean_mass"])
    sig_b = math.sqrt(np.median(s2[:n])) * 1000
    sig_d = math.sqrt(np.median(s2[n:])) * 1000
    assert 10 < sig_b < 30 and 60 < sig_d < 80
    assert 30 < math.sqrt(pool) * 1000 < 60
    s2p, _ = _sigma2_per_track(p["msd1_um2"], p["cov1_um2"], p["n_steps"], n_pairs, ACQ.blur_coefficient, "pooled")
    assert np.ptp(s2p) == 0


def test_sigma2_from_spot_width_and_snr_prevents_invented_small_peak():
    """Large slow particles, a quarter of them defocused (wide, dim spots, 6x the localisation error).

    One pooled σ² (dominated by the many sharp tracks) lets the dim tracks' extra jitter pass for fast
    diffusion: a spurious small-size peak. The spot model σ² = a + k·(size·px/snr)² follows each track.
    """
    n_sharp, n_dim = 300, 100
    tr_s, p_s = _data(np.full(n_sharp, 400.0), 21, sigma_nm=15.0)
    tr_d, p_d = _data(np.full(n_dim, 400.0), 22, sigma_nm=250.0)
    tr_d = tr_d.assign(particle=tr_d["particle"] + n_sharp)
    p_d = p_d.assign(particle=p_d["particle"] + n_sharp)
    px = ACQ.pixel_size_um
    # (size_px·px/snr)² equal to σ²: sharp spots 1.5 px at SNR 16.6, defocused 3 px at SNR 2
    tracks = pd.concat([tr_s.assign(size_px=1.5, snr=1.5 * px / 0.015),
                        tr_d.assign(size_px=3.0, snr=3.0 * px / 0.250)], ignore_index=True)
    parts = pd.concat([p_s, p_d], ignore_index=True).drop(columns=["mean_mass"], errors="ignore")
    res = {}
    for mode in ("pooled", "spot"):
        dist = size_distribution(parts, ACQ, SizingParams(bootstrap=0, localization_error=mode), tracks=tracks)
        res[mode] = dist
    small = {m: float(d.weights[d.table["diameter_nm"].to_numpy() < 250].sum()) for m, d in res.items()}
    assert small["pooled"] > 0.1  # the failure this guards against
    st = res["spot"].stats
    assert small["spot"] < 0.03, small
    main = [p for p in st["peaks"] if p["number_fraction"] >= 0.05]
    assert len(main) == 1 and abs(main[0]["diameter_nm"] / 400 - 1) < 0.05, st["peaks"]
    assert abs(st["d50"] / 400 - 1) < 0.05
    s2 = res["spot"].sigma2_um2
    assert 10 < math.sqrt(np.median(s2[:n_sharp])) * 1000 < 25 and 200 < math.sqrt(np.median(s2[n_sharp:])) * 1000 < 300


def test_tracks_faster_than_the_grid_are_counted_not_sized():
    """Chains of noise maxima (uniform jumps within a 3 µm search radius) are not sized as tiny particles."""
    rng = np.random.default_rng(30)
    tracks, parts = _data(np.full(400, 100.0), 31)
    n_noise, n_pos = 40, 15
    px = ACQ.pixel_size_um
    rows = []
    for k in range(n_noise):
        rad = 3.0 / px * np.sqrt(rng.uniform(0, 1, n_pos))
        ang = rng.uniform(0, 2 * np.pi, n_pos)
        xy = np.cumsum(np.column_stack([rad * np.cos(ang), rad * np.sin(ang)]), axis=0)
        rows.append(pd.DataFrame({"frame": np.arange(n_pos), "particle": 10_000 + k, "x": xy[:, 0], "y": xy[:, 1]}))
    noise = pd.concat(rows, ignore_index=True).assign(x_corrected=lambda t: t["x"], y_corrected=lambda t: t["y"])
    all_tracks = pd.concat([tracks, noise], ignore_index=True)
    all_parts = cve_particles(all_tracks, ACQ)
    on = size_distribution(all_parts, ACQ, SizingParams(bootstrap=0), tracks=all_tracks)
    off = size_distribution(all_parts, ACQ, SizingParams(bootstrap=0, exclude_faster_than_grid=False),
                            tracks=all_tracks)
    assert on.stats["n_tracks_faster_than_grid"] >= 0.9 * n_noise
    assert on.stats["n_tracks_used"] + on.stats["n_tracks_faster_than_grid"] == off.stats["n_tracks_used"]
    tiny = (lambda dist: float(dist.weights[dist.table["diameter_nm"].to_numpy() < 30].sum()))
    assert tiny(off) > 0.8 * n_noise / off.stats["n_tracks_used"]  # the noise chains sit at the grid bottom ...
    assert tiny(on) < 0.01  # ... unless excluded
    assert abs(on.stats["d10"] / 100 - 1) < 0.1 and abs(on.stats["d50"] / 100 - 1) < 0.03


# ----------------------------------------------------------------------------- accuracy (synthetic tracks)


def test_mono_100nm_mode_d50_single_peak_and_ci():
    tracks, parts = _data(np.full(1000, 100.0), 10)
    dist = size_distribution(parts, ACQ, SizingParams(bootstrap=60, seed=1), tracks=tracks)
    st = dist.stats
    assert abs(st["mode"] / 100 - 1) < 0.03
    assert abs(st["d50"] / 100 - 1) < 0.03
    assert len(st["peaks"]) == 1 and abs(st["peaks"][0]["number_fraction"] - 1) < 1e-9
    lo, hi = st["ci95"]["d50"]
    assert lo <= 100 <= hi and hi - lo < 10
    lo, hi = st["ci95"]["mean"]
    assert lo <= st["mean"] <= hi
    np.testing.assert_allclose(_integrals(dist), 1.0, rtol=1e-9)
    np.testing.assert_allclose(dist.weights.sum(), 1.0)
    # tracks are selected by length only (a non-positive CVE estimate still has a likelihood)
    assert st["n_tracks_used"] == int((parts["n_positions"] >= SizingParams().min_track_length).sum())
    # the deconvolution narrows the distribution relative to the raw per-track diameters
    assert st["d90"] - st["d10"] < 0.5 * (st["raw"]["d90"] - st["raw"]["d10"])
    assert dist.bootstrap_weights.shape == (60, 120)
    vw = st["volume_weighted"]
    assert vw["d50"] >= st["d50"] - 1e-9


def test_mono_without_tracks_table_gamma_fallback():
    tracks, parts = _data(np.full(800, 100.0), 11)
    dist = size_distribution(parts, ACQ, SizingParams(bootstrap=0))
    assert "Gamma" in dist.method
    assert abs(dist.stats["d50"] / 100 - 1) < 0.03
    assert len(dist.stats["peaks"]) == 1
    np.testing.assert_allclose(_integrals(dist), 1.0, rtol=1e-9)


def test_bimodal_100_200():
    rng = np.random.default_rng(12)
    d = np.where(rng.random(1200) < 0.5, 100.0, 200.0)
    tracks, parts = _data(d, 13, gap_prob=0.03)
    dist = size_distribution(parts, ACQ, SizingParams(bootstrap=20), tracks=tracks)
    peaks = dist.stats["peaks"]
    assert len(peaks) == 2
    for pk, truth, frac in zip(peaks, (100.0, 200.0), (np.mean(d == 100), np.mean(d == 200))):
        assert abs(pk["diameter_nm"] / truth - 1) < 0.05
        assert abs(pk["number_fraction"] - frac) < 0.10
        assert pk["bootstrap_support"] > 0.5
    np.testing.assert_allclose(_integrals(dist), 1.0, rtol=1e-9)


def test_posterior_per_track_classifies_the_components():
    """The per-track posterior (prior = the deconvolved distribution) sums to 1 per track, names the fitted
    tracks, and puts each track of a well-separated 100 + 300 nm mixture on its own component."""
    rng = np.random.default_rng(21)
    d = np.where(rng.random(600) < 0.5, 100.0, 300.0)
    tracks, parts = _data(d, 22)
    dist = size_distribution(parts, ACQ, SizingParams(bootstrap=0), tracks=tracks)
    post, ids = dist.posterior, dist.posterior_particle_ids
    assert post.shape == (dist.stats["n_tracks_used"], len(dist.table)) and ids.size == post.shape[0]
    np.testing.assert_allclose(post.sum(axis=1), 1.0, rtol=1e-5)
    assert set(ids) <= set(parts["particle"])
    truth = pd.Series(d, index=parts["particle"].to_numpy())  # one track per simulated particle, in order
    large = post[:, dist.table["diameter_nm"].to_numpy() > 173.0].sum(axis=1)  # 173 nm: geometric midpoint
    is_large = truth.loc[ids].to_numpy() == 300.0
    assert np.mean((large > 0.5) == is_large) > 0.95



def test_peaks_carry_the_brightness_of_their_tracks_and_implausible_ones_are_flagged():
    """Each peak reports the (posterior-weighted) median ``mean_mass`` of its tracks; a small-size peak that is
    not dimmer than a larger one by at least (d ratio)² / BRIGHTNESS_SLACK gets a warning, a physical one not."""
    rng = np.random.default_rng(31)
    d = np.where(rng.random(600) < 0.5, 100.0, 300.0)
    tracks, parts = _data(d, 32)
    truth = pd.Series(d, index=parts["particle"].to_numpy())
    noise = rng.lognormal(0.0, 0.3, len(parts))
    parts["mean_mass"] = 1000.0 * (truth.loc[parts["particle"]].to_numpy() / 100.0) ** 6 * noise  # Rayleigh d⁶
    dist = size_distribution(parts, ACQ, SizingParams(bootstrap=0), tracks=tracks)
    small, large = dist.stats["peaks"]
    assert small["median_mass"] == pytest.approx(1000.0, rel=0.15)
    assert large["median_mass"] == pytest.approx(729000.0, rel=0.15)
    assert small["n_tracks"] + large["n_tracks"] == pytest.approx(dist.stats["n_tracks_used"], rel=0.03)
    assert small["n_tracks"] == pytest.approx(np.sum(d == 100.0), rel=0.1)
    assert brightness_warnings(dist.stats["peaks"]) == []
    # the same tracks, but the 100 nm ones as bright as the 300 nm ones: not particles of 100 nm
    parts["mean_mass"] = 729000.0 * noise
    flagged = size_distribution(parts, ACQ, SizingParams(bootstrap=0), tracks=tracks)
    msgs = brightness_warnings(flagged.stats["peaks"])
    assert len(msgs) == 1 and msgs[0].startswith(f"the {flagged.stats['peaks'][0]['diameter_nm']:.0f} nm peak")


def test_brightness_warnings_bounds():
    pk = [{"diameter_nm": 36.0, "number_fraction": 0.11, "median_mass": 160.0, "n_tracks": 10.0},
          {"diameter_nm": 1040.0, "number_fraction": 0.84, "median_mass": 3700.0, "n_tracks": 82.0}]
    assert len(brightness_warnings(pk)) == 1  # 29x smaller, only 23x dimmer (d² needs 835 / 4)
    pk[0]["median_mass"] = 3700.0 / 300.0  # 300x dimmer: within the d² / 4 tolerance
    assert brightness_warnings(pk) == []
    pk[0].update(median_mass=160.0, number_fraction=0.01)  # too small a peak to judge
    assert brightness_warnings(pk) == []
    pk[0].update(number_fraction=0.11, n_tracks=3.0)
    assert brightness_warnings(pk) == []
    pk[0].update(n_tracks=10.0, median_mass=float("nan"))  # no brightness column
    assert brightness_warnings(pk) == []
    close = [{"diameter_nm": 98.0, "number_fraction": 0.48, "median_mass": 27000.0, "n_tracks": 320.0},
             {"diameter_nm": 205.0, "number_fraction": 0.52, "median_mass": 600000.0, "n_tracks": 350.0}]
    assert brightness_warnings(close) == []
    close[0]["median_mass"] = 700000.0  # the smaller peak brighter than the larger one
    assert len(brightness_warnings(close)) == 1


def test_a_lone_small_peak_is_judged_against_the_tracks_well_above_it():
    """A single peak of tens of nm (junk links of an H.264 bright-field video) with a quarter of the tracks at
    ≥ 3× its size, too scattered to form a peak: those tracks are its reference. A physical or a thin
    population above is not flagged, and neither is a peak with nothing above it."""
    above = {"diameter_nm": 250.0, "number_fraction": 0.27, "median_mass": 280.0, "n_tracks": 41.0}
    pk = [{"diameter_nm": 31.0, "number_fraction": 1.0, "median_mass": 107.0, "n_tracks": 155.0,
           "population_above": dict(above)}]
    (flag, ref, seen, bound), = implausible_peaks(pk)
    assert flag is pk[0] and ref is pk[0]["population_above"] and seen == pytest.approx(280.0 / 107.0)
    assert bound == pytest.approx((250.0 / 31.0) ** 2)
    pk[0]["population_above"]["median_mass"] = 107.0 * 65.0  # as much brighter as d² allows (÷ slack): physical
    assert implausible_peaks(pk) == []
    pk[0]["population_above"] = dict(above, number_fraction=0.05)  # too thin a population to judge by
    assert implausible_peaks(pk) == []
    pk[0].pop("population_above")
    assert implausible_peaks(pk) == []
    # a larger peak, when there is one, stays the reference
    two = [dict(pk[0], population_above=dict(above)), _pk(1000.0, 0.5, 107.0 * 2000.0)]
    assert implausible_peaks(two) == []


def test_compression_artefact_peaks_need_rayleigh_dimness_against_any_larger_population():
    from exonta.analysis.distribution import compression_artefact_peaks, linking_artefact_peaks

    junk = {"diameter_nm": 26.0, "number_fraction": 0.7, "median_mass": 60.0, "n_tracks": 7000.0}
    beads = {"diameter_nm": 101.0, "number_fraction": 0.3, "median_mass": 1300.0, "n_tracks": 3000.0}
    assert linking_artefact_peaks([junk, beads]) == []  # the warning asks a more populous reference
    (hit, ref, seen, bound), = compression_artefact_peaks([junk, beads])
    assert hit is junk and ref is beads and bound == pytest.approx((101.0 / 26.0) ** 6)
    real = dict(junk, median_mass=1300.0 / 3000.0)  # as much dimmer as Rayleigh says: real small particles
    assert compression_artefact_peaks([real, beads]) == []
    big = dict(beads, diameter_nm=400.0, median_mass=20000.0)  # beyond the Rayleigh regime: the d⁶ test is off
    assert compression_artefact_peaks([dict(junk), big]) == []
    lone = dict(junk, number_fraction=1.0, population_above={"diameter_nm": 105.0, "number_fraction": 0.22,
                                                              "median_mass": 1300.0, "n_tracks": 3800.0})
    assert [p for p, *_ in compression_artefact_peaks([lone])] == [lone]


def test_peaks_carry_the_population_well_above_them():
    rng = np.random.default_rng(32)
    d = np.where(rng.random(500) < 0.7, 60.0, 400.0)
    tracks, parts = _data(d, 32)
    truth = pd.Series(d, index=parts["particle"].to_numpy())
    parts["mean_mass"] = 50.0 * truth.loc[parts["particle"]].to_numpy()
    dist = size_distribution(parts, ACQ, SizingParams(bootstrap=0), tracks=tracks)
    small = min(dist.stats["peaks"], key=lambda q: q["diameter_nm"])
    up = small["population_above"]
    assert up["number_fraction"] == pytest.approx(np.mean(d == 400.0), abs=0.05)
    assert up["diameter_nm"] == pytest.approx(400.0, rel=0.1) and up["median_mass"] == pytest.approx(20000.0, rel=0.1)
    assert up["n_tracks"] == pytest.approx(np.sum(d == 400.0), rel=0.1)


def _pk(d, frac, mass, n=100.0):
    return {"diameter_nm": d, "number_fraction": frac, "median_mass": mass, "n_tracks": n}


def test_linking_artefact_peak_next_to_100nm_beads_is_named():
    # simulated 100 nm beads at 37 °C (seed 1): a 44 nm peak of tracks with wrong links, 2.4x dimmer
    pk = [_pk(44.0, 0.12, 612.0, 97.0), _pk(100.0, 0.88, 1452.0, 716.0)]
    ((small, ref, seen, rayleigh),) = linking_artefact_peaks(pk)
    assert small is pk[0] and ref is pk[1]
    assert seen == pytest.approx(1452.0 / 612.0) and rayleigh == pytest.approx((100.0 / 44.0) ** 6)
    assert brightness_warnings(pk) == []  # the d² bound of implausible_peaks does not catch it
    (msg,) = linking_artefact_warnings(pk)
    assert "44 nm peak (12 % of the sized tracks)" in msg and "wrong links" in msg and "138x less light" in msg


@pytest.mark.parametrize("peaks", [
    [_pk(98.0, 0.49, 1634.0), _pk(150.0, 0.51, 4740.0)],       # 100 + 150 nm PS: 4.4x above d⁶
    [_pk(98.0, 0.48, 27483.0), _pk(205.0, 0.52, 604731.0)],    # 100 + 200 nm PS: 3.8x (205 > 200: not judged)
    [_pk(47.0, 0.29, 2029.0), _pk(101.0, 0.71, 19895.0)],      # 60 + 100 nm PS, the 60 nm barely seen: 10x
    [_pk(66.0, 0.45, 10605.0), _pk(123.0, 0.55, 109132.0)],    # 70 + 120 nm PS: 4x
])
def test_real_small_populations_are_not_called_artefacts(peaks):
    assert linking_artefact_peaks(peaks) == [] and linking_artefact_warnings(peaks) == []


def test_linking_artefact_bounds():
    ghost = [_pk(43.0, 0.08, 495.0), _pk(99.0, 0.92, 1541.0)]  # drift 8 µm/s: 48x above d⁶
    assert len(linking_artefact_peaks(ghost)) == 1
    dim = [dict(ghost[0], median_mass=1541.0 / ((99.0 / 43.0) ** 6 / 15.0)), ghost[1]]  # 15x above d⁶: allowed
    assert linking_artefact_peaks(dim) == []
    assert linking_artefact_peaks([ghost[0], dict(ghost[1], diameter_nm=406.0)]) == []  # Mie regime: not judged
    assert linking_artefact_peaks([dict(ghost[0], number_fraction=0.6), dict(ghost[1], number_fraction=0.4)]) == []
    assert linking_artefact_peaks([dict(ghost[0], n_tracks=3.0), ghost[1]]) == []  # too few tracks to judge
    # a peak the d² bound already names (it drives the automatic threshold) is not warned about twice
    twice = [_pk(40.0, 0.1, 1500.0), _pk(100.0, 0.9, 1541.0)]
    assert len(brightness_warnings(twice)) == 1 and linking_artefact_peaks(twice) == []


def test_basin_fractions_share_valley_bins_and_sum_to_one():
    w = np.array([1.0, 3.0, 2.0, 0.5, 2.0, 4.0, 1.0, 0.5])
    f = basin_fractions(w, [0, 3, 8])  # valley bin 3 shared half and half
    assert f == pytest.approx([(1 + 3 + 2 + 0.25) / 14.0, (0.25 + 2 + 4 + 1 + 0.5) / 14.0])
    assert basin_fractions(w, [0, 8]) == pytest.approx([1.0])
    assert basin_fractions(w, [0, 3, 5, 8]).sum() == pytest.approx(1.0)
    assert np.isnan(basin_fractions(np.zeros(4), [0, 4])).all()


def test_peak_bounds_reproduce_the_peaks_number_fractions():
    _, _, dist, peaks = _mixture_fit(32, 100.0, 300.0, 600, 33)
    assert len(peaks) == 2 and dist.peak_bounds.size == 3
    assert dist.peak_bounds[0] == 0 and dist.peak_bounds[-1] == dist.weights.size
    cut = dist.peak_bounds[1]
    assert dist.table["diameter_nm"][cut] == pytest.approx(np.sqrt(100.0 * 300.0), rel=0.35)  # the valley
    assert basin_fractions(dist.weights, dist.peak_bounds) == pytest.approx([p["number_fraction"] for p in peaks])


def test_track_fraction_warning_when_peaks_differ_in_brightness():
    pk = [{"diameter_nm": 98.0, "number_fraction": 0.17, "median_mass": 955.0, "n_tracks": 11.5},
          {"diameter_nm": 200.0, "number_fraction": 0.83, "median_mass": 35300.0, "n_tracks": 55.5}]
    (msg,) = track_fraction_warnings(pk)
    assert "fractions of tracks" in msg and "200 nm peak is 37x brighter than the 98 nm one" in msg
    pk[0]["median_mass"] = 35300.0 / 3.0  # within a factor 4: the slices hardly differ
    assert track_fraction_warnings(pk) == []
    pk[0].update(median_mass=955.0, n_tracks=3.0)  # too few tracks to judge
    assert track_fraction_warnings(pk) == []
    assert track_fraction_warnings(pk[1:]) == []
    assert track_fraction_warnings([dict(p, median_mass=float("nan")) for p in pk]) == []


def test_bootstrap_replicates_do_not_depend_on_the_number_of_threads(monkeypatch):
    from exonta.analysis import distribution as dmod

    rng = np.random.default_rng(34)
    tracks, parts = _data(np.where(rng.random(300) < 0.5, 100.0, 200.0), 35)
    orig = dmod._run_replicates
    out = {}
    for n in (1, 2):
        monkeypatch.setattr(dmod, "_run_replicates", lambda fn, k, _n=n: orig(fn, k, _n))
        out[n] = size_distribution(parts, ACQ, SizingParams(bootstrap=12), tracks=tracks)
    np.testing.assert_array_equal(out[1].bootstrap_weights, out[2].bootstrap_weights)
    assert out[1].stats["ci95"] == out[2].stats["ci95"]
    assert out[1].bootstrap_weights.shape == (12, out[1].weights.size)
    assert np.all(out[1].bootstrap_weights.sum(axis=1) == pytest.approx(1.0))


def test_run_replicates_yields_in_order_and_raises():
    seen = []
    assert list(_run_replicates(seen.append, 7, 2)) == list(range(7)) and sorted(seen) == list(range(7))

    def boom(b):
        if b == 3:
            raise ValueError("replicate 3")

    with pytest.raises(ValueError, match="replicate 3"):
        list(_run_replicates(boom, 6, 2))


def test_weighted_quantiles_is_the_inverted_cdf():
    rng = np.random.default_rng(4)
    v = rng.lognormal(4.7, 0.4, 301)
    w = rng.integers(1, 4, v.size)
    q = [0.1, 0.5, 0.9]
    np.testing.assert_allclose(weighted_quantiles(v, q), np.quantile(v, q, method="inverted_cdf"))
    np.testing.assert_allclose(weighted_quantiles(v, q, w), np.quantile(np.repeat(v, w), q, method="inverted_cdf"))
    assert np.isnan(weighted_quantiles([np.nan], [0.5])).all()

@pytest.mark.slow
def test_bimodal_100_150_resolved_where_raw_is_not():
    _, parts, dist, peaks = _mixture_fit(14, 100.0, 150.0, 2000, 15)
    assert len(peaks) == 2
    assert abs(peaks[0]["diameter_nm"] / 100 - 1) < 0.07 and abs(peaks[1]["diameter_nm"] / 150 - 1) < 0.07
    raw_values = parts.loc[parts["valid"], "diameter_nm"].to_numpy()
    assert _n_modes_kde(raw_values) == 1
    assert len(dist.stats["raw"]["peaks"]) <= 1 or not all(
        abs(p["diameter_nm"] / t - 1) < 0.07 for p, t in zip(dist.stats["raw"]["peaks"], (100, 150)))


@pytest.mark.slow
def test_lognormal_quantiles():
    rng = np.random.default_rng(16)
    d = 110.0 * np.exp(math.log(1.45) * rng.standard_normal(1500))
    tracks, parts = _data(d, 17)
    dist = size_distribution(parts, ACQ, SizingParams(bootstrap=0), tracks=tracks)
    st = dist.stats
    z = 1.2815515655446004
    assert abs(st["d50"] / 110 - 1) < 0.05
    assert abs(st["d10"] / (110 * 1.45 ** -z) - 1) < 0.10
    assert abs(st["d90"] / (110 * 1.45 ** z) - 1) < 0.10
    assert len(st["peaks"]) == 1


# ----------------------------------------------------------------------------- edge cases and API


def test_empty_and_single_track():
    tracks, parts = _data(np.full(3, 100.0), 20)
    for sub in (parts.iloc[:0], parts.iloc[:1]):
        dist = size_distribution(sub, ACQ, SizingParams(bootstrap=5), tracks=tracks)
        assert np.isnan(dist.stats["d50"]) and np.isnan(dist.stats["ci95"]["d50"][0])
        assert dist.stats["peaks"] == [] and "no size statistics" in dist.stats["note"]
        assert (dist.table["deconvolved_density"] == 0).all() and len(dist.table) == 120
        assert dist.stats["n_tracks_used"] == len(sub)
    # fewer than MIN_TRACKS_FOR_STATISTICS tracks: the raw histogram, no statistics; from that number on, statistics
    from exonta.analysis.distribution import MIN_TRACKS_FOR_STATISTICS

    tracks, parts = _data(np.full(MIN_TRACKS_FOR_STATISTICS, 100.0), 21)
    few = size_distribution(parts.iloc[:-1], ACQ, SizingParams(bootstrap=5), tracks=tracks)
    assert np.isnan(few.stats["d50"]) and "no size statistics" in few.stats["note"] and few.stats["peaks"] == []
    assert (few.table["raw_density"] * few.table["bin_width_nm"]).sum() == pytest.approx(1.0)
    enough = size_distribution(parts, ACQ, SizingParams(bootstrap=5), tracks=tracks)
    assert np.isfinite(enough.stats["d50"]) and enough.stats["n_tracks_used"] == MIN_TRACKS_FOR_STATISTICS
    # ... or a few long tracks: a sparse field filmed for long (MIN_LONG_TRACKS holding MIN_STEPS_FOR_STATISTICS steps)
    from exonta.analysis.distribution import MIN_LONG_TRACKS, MIN_STEPS_FOR_STATISTICS, enough_for_statistics

    n_long = MIN_LONG_TRACKS + 1
    per = MIN_STEPS_FOR_STATISTICS // n_long + 2  # positions per track: just enough steps in all
    tracks, parts = _data(np.full(n_long, 300.0), 22, min_positions=per, mean_extra_positions=0.0,
                          max_positions=per)
    assert enough_for_statistics(parts) and not enough_for_statistics(parts.iloc[:MIN_LONG_TRACKS - 1])
    assert not enough_for_statistics(parts.assign(n_steps=parts["n_steps"] // 2))  # as many tracks, too few steps
    long_ = size_distribution(parts, ACQ, SizingParams(bootstrap=5), tracks=tracks)
    assert long_.stats["n_tracks_used"] == n_long and long_.stats["note"] == ""
    assert long_.stats["d50"] == pytest.approx(300.0, rel=0.08)  # ~1000 steps: D to ~5 %
    assert [w for w in few_tracks_warning(long_.stats) if f"only {n_long} tracks" in w]
    assert few_tracks_warning(enough.stats) == [] and few_tracks_warning(few.stats) == []
    short = size_distribution(parts.iloc[:MIN_LONG_TRACKS - 1], ACQ, SizingParams(bootstrap=5), tracks=tracks)
    assert np.isnan(short.stats["d50"]) and "no size statistics" in short.stats["note"]
    too_short = parts.assign(n_positions=SizingParams().min_track_length - 1)
    dist = size_distribution(too_short, ACQ, SizingParams(), tracks=None)
    assert dist.stats["n_tracks_used"] == 0 and (dist.table["raw_density"] == 0).all()
    empty = size_distribution(pd.DataFrame(), ACQ, SizingParams())
    assert np.isnan(empty.stats["mean"])


def test_bad_input_raises():
    with pytest.raises(ExontaInputError):
        size_distribution(pd.DataFrame({"particle": [1, 2]}), ACQ, SizingParams())
    with pytest.raises(ExontaInputError):
        size_distribution([1, 2], ACQ, SizingParams())
    tracks, parts = _data(np.full(12, 100.0), 21)
    with pytest.raises(ExontaInputError):
        size_distribution(parts, ACQ, SizingParams(), tracks=tracks.drop(columns=["frame"]))


def test_deconvolve_off_uses_raw_histogram():
    tracks, parts = _data(np.full(60, 150.0), 22)
    dist = size_distribution(parts, ACQ, SizingParams(deconvolve=False), tracks=tracks)
    raw = parts.loc[parts["valid"], "diameter_nm"]
    np.testing.assert_allclose(dist.stats["d50"], np.median(raw))
    assert dist.table["deconvolved_density"].isna().all()
    np.testing.assert_allclose(_integrals(dist)[0], 1.0)


def test_progress_and_cancel():
    tracks, parts = _data(np.full(40, 100.0), 23)
    calls = []
    size_distribution(parts, ACQ, SizingParams(bootstrap=3), tracks=tracks,
                      progress=lambda d, t, s: calls.append((d, t, s)))
    assert calls[-1] == (5, 5, "distribution") and calls[0][0] == 0
    with pytest.raises(ExontaCancelled):
        size_distribution(parts, ACQ, SizingParams(bootstrap=3), tracks=tracks, progress=lambda d, t, s: d < 2)


def test_seeded_bootstrap_is_reproducible():
    tracks, parts = _data(np.full(80, 100.0), 24)
    a = size_distribution(parts, ACQ, SizingParams(bootstrap=5, seed=3), tracks=tracks)
    b = size_distribution(parts, ACQ, SizingParams(bootstrap=5, seed=3), tracks=tracks)
    assert a.stats["ci95"] == b.stats["ci95"]


def test_plot_writes_png(tmp_path):
    tracks, parts = _data(np.full(60, 100.0), 25)
    dist = size_distribution(parts, ACQ, SizingParams(bootstrap=0), tracks=tracks)
    out = tmp_path / "size.png"
    plot_size_distribution(dist, out, title="mono")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = size_distribution(parts.iloc[:0], ACQ, SizingParams())
    plot_size_distribution(empty, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 1000


def test_sigma_derivatives_match_finite_differences():
    rng = np.random.default_rng(30)
    tracks = simulate_tracks(rng.uniform(80, 600, 5), rng, gap_prob=0.1)
    ids = np.unique(tracks["particle"])
    td = track_components(tracks, ids, 0.166)
    s2 = rng.uniform(0.0005, 0.003, ids.size)
    d_grid = np.array([0.3, 1.5, 6.0])
    args = (td.comp_track, td.comp_one_minus_cos, td.comp_power_um2)
    d1, d2 = dst_log_likelihood_sigma_derivatives(*args, s2, d_grid, 1 / 30, 0.1)
    h = 1e-6
    lp = dst_log_likelihood(*args, s2 + h, d_grid, 1 / 30, 0.1)
    lm = dst_log_likelihood(*args, s2 - h, d_grid, 1 / 30, 0.1)
    l0 = dst_log_likelihood(*args, s2, d_grid, 1 / 30, 0.1)
    np.testing.assert_allclose(d1, (lp - lm) / (2 * h), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(d2, (lp - 2 * l0 + lm) / h ** 2, rtol=1e-3, atol=1.0)


def test_particles_without_moments_columns():
    tracks, parts = _data(np.full(300, 100.0), 31)
    old = parts.drop(columns=["msd1_um2", "cov1_um2"])
    dist = size_distribution(old, ACQ, SizingParams(bootstrap=0))
    assert abs(dist.stats["d50"] / 100 - 1) < 0.1
    with pytest.raises(ExontaInputError):
        size_distribution(old.drop(columns=["D_um2_s"]), ACQ, SizingParams(bootstrap=0))
