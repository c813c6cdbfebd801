"""Every kernel of exonta.detect._kernels against its slow twin in tests/reference/detect_ref.py."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference import detect_ref as ref  # noqa: E402

from exonta.config import DetectParams  # noqa: E402
from exonta.detect import _kernels as K  # noqa: E402

L = importlib.import_module("exonta.detect.locate")
NO_BG = np.zeros((0, 0), np.float32)
FULL = np.ones((11, 11), np.uint8)  # fit mask: every ROI pixel


def _spot_image(rng, shape, xs, ys, photons=800.0, sigma=1.5, bg=10.0):
    return ref.render_spots(shape, xs, ys, photons, sigma, bg, rng).astype(np.float32)


# ----------------------------------------------------------------- prepare + band-pass
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_filter_frame_working_frame_matches_reference(dtype, sign):
    rng = np.random.default_rng(1)
    hi = 255 if dtype == np.uint8 else 4000
    raw = rng.integers(0, hi, (13, 17)).astype(dtype)
    bg = rng.uniform(0, hi / 2, (13, 17)).astype(np.float32)
    work, filt = (np.empty((13, 17), np.float32) for _ in range(2))
    K._filter_frame(raw, bg, sign, L.gaussian_kernel(1.5), 6, work, filt)
    expect = ref.prepare_ref(raw, bg, sign)
    np.testing.assert_allclose(work, expect, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(filt, ref.bandpass_ref(expect, 1.5, 6), rtol=0, atol=1e-4 * np.abs(expect).max())
    K._filter_frame(raw, NO_BG, sign, L.gaussian_kernel(1.5), 6, work, filt)
    np.testing.assert_allclose(work, ref.prepare_ref(raw, None, sign), rtol=1e-6)


@pytest.mark.parametrize("shape", [(40, 57), (7, 5), (1, 30), (64, 3), (300, 211)])
@pytest.mark.parametrize("sigma", [0.8, 1.5, 2.6])
def test_bandpass_matches_scipy(shape, sigma):
    """The streamed (ring-buffer) filter equals the whole-image scipy filter, edges included."""
    rng = np.random.default_rng(2)
    img = rng.normal(100, 20, shape).astype(np.float32)
    img[shape[0] // 2, shape[1] // 2] += 3000  # a spot
    g = L.gaussian_kernel(sigma)
    box_half = max(int(math.ceil(4 * sigma)), 2)
    work, out = (np.empty(shape, np.float32) for _ in range(2))
    K._filter_frame(img, NO_BG, 1.0, g, box_half, work, out)
    expect = ref.bandpass_ref(img, sigma, box_half)
    np.testing.assert_allclose(out, expect, rtol=0, atol=2e-3 * 100 + 1e-4 * np.abs(expect).max())


def test_bandpass_flat_and_linear_gradient_give_zero():
    """The filter has zero DC gain and, away from the edges, zero response to a linear ramp."""
    h, w = 60, 80
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for img in (np.full((h, w), 1234.0, np.float32), 5.0 * xx + 3.0 * yy + 200.0):
        img = img.astype(np.float32)
        work, out = (np.empty((h, w), np.float32) for _ in range(2))
        K._filter_frame(img, NO_BG, 1.0, L.gaussian_kernel(1.5), 6, work, out)
        np.testing.assert_allclose(out[8:-8, 8:-8], 0.0, atol=2e-3)


# ----------------------------------------------------------------- noise
def test_clipped_sigma_matches_reference_and_truth():
    rng = np.random.default_rng(3)
    f = rng.normal(0, 2.5, (300, 400)).astype(np.float32)
    f[::37, ::41] += 500  # sparse outliers (spots) are clipped
    got = K._clipped_sigma(f, 4, 296, 4, 396, 1, 8)
    assert got == pytest.approx(ref.clipped_sigma_ref(f, 4, 296, 4, 396, 1, 8), rel=1e-6)
    assert got == pytest.approx(2.5, rel=0.02)
    for _ in range(5):  # small tiles with a spot: still unbiased-ish
        t = rng.normal(0, 1.0, (16, 16)).astype(np.float32)
        t[6:9, 6:9] += 30
        assert K._clipped_sigma(t, 0, 16, 0, 16, 2, 8) == pytest.approx(
            ref.clipped_sigma_ref(t, 0, 16, 0, 16, 2, 8), rel=1e-6)
        assert 0.7 < K._clipped_sigma(t, 0, 16, 0, 16, 2, 8) < 1.3
    assert K._clipped_sigma(f, 5, 5, 0, 10, 1, 8) == 0.0  # empty region
    assert K._clipped_sigma(np.zeros((50, 50), np.float32), 3, 47, 3, 47, 1, 8) == 0.0


@pytest.mark.parametrize("shape", [(300, 400), (50, 37), (9, 9)])
def test_noise_map_matches_reference_and_follows_shot_noise(shape):
    rng = np.random.default_rng(31)
    h, w = shape
    sd = 1.0 + 4.0 * (np.arange(w) / w)[None, :] * np.ones((h, 1))  # noise grows to the right
    f = (rng.normal(0, 1, shape) * sd).astype(np.float32)
    edge, tile = 4, 16
    grid = np.empty((K._n_tiles(h, edge, tile), K._n_tiles(w, edge, tile)))
    K._noise_map(f, edge, grid, 6)
    expect = ref.noise_map_ref(f, edge, tile, 6)
    np.testing.assert_allclose(grid, expect, rtol=1e-6)
    for y, x in [(edge, edge), (h // 2, w // 3), (h - 1, w - 1), (0, w // 2)]:
        assert K._local_sigma(grid, edge, h, w, y, x) == pytest.approx(
            ref.local_sigma_ref(grid, edge, shape, y, x), rel=1e-9)
    if grid.shape[1] > 3:
        assert grid[:, -1].mean() > 3 * grid[:, 0].mean()


# ----------------------------------------------------------------- maxima
def _maxima(f, thr, edge, radius, cap=10000, grid=None, k_sigma=0.0):
    dy, dx = L._disc_offsets(radius)
    rows, cols = np.empty(cap, np.int64), np.empty(cap, np.int64)
    sig = np.empty(cap)
    g = np.ones((1, 1)) if grid is None else grid
    n = K._find_maxima(f, g, k_sigma, thr, edge, dy, dx, rows, cols, sig)
    k = min(n, cap)
    return n, sorted(zip(rows[:k].tolist(), cols[:k].tolist())), sig[:k]


@pytest.mark.parametrize("radius", [1.0, 2.5, 3.75])
def test_find_maxima_matches_reference_random(radius):
    rng = np.random.default_rng(4)
    from scipy import ndimage

    f = ndimage.gaussian_filter(rng.normal(0, 1, (45, 52)), 1.0).astype(np.float32)
    n, got, _ = _maxima(f, 0.05, 3, radius)
    expect = ref.find_maxima_ref(f, 0.05, 3, radius)
    assert n == len(expect) > 5
    assert got == sorted(expect)
    # local threshold from a noise grid (2×3 tiles)
    grid = np.array([[0.05, 0.2, 0.1], [0.3, 0.02, 0.15]])
    n, got, sig = _maxima(f, 0.01, 3, radius, grid=grid, k_sigma=1.5)
    expect = ref.find_maxima_ref(f, 0.01, 3, radius, grid=grid, k_sigma=1.5)
    assert n == len(expect) > 2
    assert got == sorted(expect)
    assert np.all((sig >= 0.02) & (sig <= 0.3))


def test_find_maxima_plateaus_ties_and_edges():
    # integer image with plateaus: exactly one maximum per plateau (raster-first)
    f = np.zeros((20, 20), np.float32)
    f[5:8, 5:8] = 7  # 3x3 plateau
    f[12, 12] = f[12, 13] = 4  # tie of two pixels
    f[1, 10] = 9  # inside the edge band: excluded
    f[15, 3] = 2  # just at the edge limit (edge=3 keeps col 3)
    n, got, _ = _maxima(f, 0.5, 3, 2.5)
    assert got == sorted(ref.find_maxima_ref(f, 0.5, 3, 2.5))
    assert got == [(5, 5), (12, 12), (15, 3)]
    # all-zero and flat images: nothing above threshold
    for flat in (np.zeros((10, 10), np.float32), np.full((10, 10), 3.0, np.float32)):
        assert _maxima(flat, 3.0, 1, 2.5)[0] == 0


def test_find_maxima_reports_overflow_count():
    rng = np.random.default_rng(5)
    f = rng.normal(0, 1, (40, 40)).astype(np.float32)
    n_all, _, _ = _maxima(f, -10.0, 0, 1.0)
    n, got, _ = _maxima(f, -10.0, 0, 1.0, cap=3)
    assert n == n_all > 3 and len(got) == 3


# ----------------------------------------------------------------- Gaussian fit
def _cases():
    """(image, row, col) cases: isolated, off-centre, at the edge, touching spots, saturated."""
    rng = np.random.default_rng(6)
    out = []
    for _ in range(6):
        x, y = rng.uniform(10, 20, 2)
        img = _spot_image(rng, (30, 30), [x], [y], photons=rng.uniform(300, 3000))
        out.append((img, int(round(y)), int(round(x))))
    img = _spot_image(rng, (30, 30), [1.3], [15.6])  # at the left edge: ROI clipped
    out.append((img, 16, 1))
    img = _spot_image(rng, (30, 30), [13.0, 16.2], [14.0, 14.5], photons=[1500, 900])  # touching
    out.append((img, 14, 13))
    img = np.minimum(_spot_image(rng, (30, 30), [15.2], [14.7], photons=20000), 255).astype(np.float32)
    out.append((img, 15, 15))  # saturated (flat top)
    return out


@pytest.mark.parametrize("plane", [False, True])
@pytest.mark.parametrize("case", range(9))
def test_fit_gaussian_matches_scipy_least_squares(case, plane):
    img, row, col = _cases()[case]
    if plane:  # add an illumination gradient
        yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
        img = (img + 3.0 * xx - 2.0 * yy + 50).astype(np.float32)
    theta = np.empty(7)
    ok = K._fit_gaussian(img, FULL, row, col, 5, 1.5, plane, 100, theta)
    assert ok
    expect = ref.fit_gaussian_ref(img, row, col, 5, 1.5, plane=plane)
    # within the fit's stopping tolerance (_FIT_TOL = 1e-3 px; localisation errors are ≳ 0.02 px)
    np.testing.assert_allclose(theta[:2], expect[:2], atol=K._FIT_TOL)  # x, y
    np.testing.assert_allclose(theta[2:], expect[2:], rtol=2e-3, atol=1e-2)  # N, sigma, b, b_x, b_y


@pytest.mark.parametrize("half", [3, 5])
def test_voronoi_mask_matches_reference(half):
    rng = np.random.default_rng(8)
    peaks = sorted({(int(r), int(c)) for r, c in rng.integers(0, 30, (25, 2))})
    rows = np.array([p[0] for p in peaks], np.int64)
    cols = np.array([p[1] for p in peaks], np.int64)
    mask = np.empty((2 * half + 1, 2 * half + 1), np.uint8)
    for k in range(len(peaks)):
        kept = K._voronoi_mask(rows, cols, len(peaks), k, half, 30, 30, mask)
        expect = ref.voronoi_mask_ref((30, 30), peaks, k, half)
        got = mask[:expect.shape[0], :expect.shape[1]].astype(bool)
        assert np.array_equal(got, expect)
        assert kept == expect.sum()


def test_fit_gaussian_with_mask_matches_reference():
    rng = np.random.default_rng(9)
    img = _spot_image(rng, (30, 30), [13.0, 16.5], [14.0, 14.5], photons=[1500, 900])
    peaks = [(14, 13), (14, 16)]
    keep = ref.voronoi_mask_ref((30, 30), peaks, 0, 5)
    mask = np.zeros((11, 11), np.uint8)
    mask[:keep.shape[0], :keep.shape[1]] = keep
    theta = np.empty(7)
    assert K._fit_gaussian(img, mask, 14, 13, 5, 1.5, False, 100, theta)
    expect = ref.fit_gaussian_ref(img, 14, 13, 5, 1.5, mask=keep)
    np.testing.assert_allclose(theta[:2], expect[:2], atol=2e-4)
    np.testing.assert_allclose(theta[2:], expect[2:], rtol=2e-3, atol=1e-2)
    assert abs(theta[0] - 13.0) < 0.3  # the neighbour does not pull the fit


def test_fit_gaussian_recovers_noise_free_spot():
    img = ref.render_spots((25, 25), [12.37], [11.81], 1000.0, 1.7, 5.0, None, poisson=False).astype(np.float32)
    theta = np.empty(7)
    for plane in (False, True):
        assert K._fit_gaussian(img, FULL, 12, 12, 5, 1.5, plane, 100, theta)
        np.testing.assert_allclose(theta, [12.37, 11.81, 1000.0, 1.7, 5.0, 0, 0], rtol=1e-4, atol=1e-4)


def test_fit_gaussian_fails_cleanly_on_flat_roi():
    theta = np.empty(7)
    ok = K._fit_gaussian(np.zeros((20, 20), np.float32), FULL, 10, 10, 5, 1.5, True, 40, theta)
    assert not ok or np.isfinite(theta).all()


# ----------------------------------------------------------------- radial symmetry and aperture
@pytest.mark.parametrize("case", range(9))
def test_radial_center_matches_reference(case):
    img, row, col = _cases()[case]
    xy = np.empty(2)
    K._radial_center(img, row, col, 5, xy)
    np.testing.assert_allclose(xy, ref.radial_center_ref(img, row, col, 5), atol=1e-9)


def test_radial_center_is_exact_on_symmetric_spot():
    img = ref.render_spots((25, 25), [12.3], [11.6], 1000.0, 1.5, 0.0, None, poisson=False).astype(np.float32)
    xy = np.empty(2)
    assert K._radial_center(img, 12, 12, 5, xy)
    np.testing.assert_allclose(xy, [12.3, 11.6], atol=0.02)


@pytest.mark.parametrize("case", range(9))
def test_aperture_matches_reference(case):
    img, row, col = _cases()[case]
    out = np.empty(6)
    K._aperture(img, col + 0.3, row - 0.2, 4, out)
    np.testing.assert_allclose(out, ref.aperture_ref(img, col + 0.3, row - 0.2, 4), rtol=1e-5, atol=1e-4)


# ----------------------------------------------------------------- whole frame
def _reference_frame(raw, p: DetectParams):
    """Reference pipeline composed from the twins (Gaussian localisation)."""
    d = L.derived_sizes(p)
    w = ref.prepare_ref(raw, None, -1.0 if p.invert else 1.0)
    f = ref.bandpass_ref(w, p.psf_sigma_px, d["box_half"])
    e = d["edge_px"]
    s = L._settings(p)
    grid = ref.noise_map_ref(f, e, s.noise_tile, 6)
    grid = ref.cap_noise_ref(grid, K._NOISE_CAP, raw, e)
    floor = 1e-5 * np.abs(w).max()
    peaks = ref.find_maxima_ref(f, floor, e, d["min_separation_px"], grid=grid, k_sigma=p.threshold_snr)
    # bright-spot pass (no clipping level here): saddle merge, then the halo test
    peak = [f[r, c] for r, c in peaks]
    keep = ref.merge_no_saddle_ref(f, K._SADDLE_REACH_SIGMAS * s.sigma0, K._SADDLE_RATIO, peaks, peak)
    peaks = [pk for pk, kp in zip(peaks, keep) if kp]
    peak = [f[r, c] for r, c in peaks]
    sig = [ref.local_sigma_ref(grid, e, w.shape, r, c) for r, c in peaks]
    keep = ref.halo_test_ref(f, p.threshold_snr, K._HALO_RATIO, K._HALO_REACH_TILES * s.noise_tile,
                             int(K._HALO_HALF_TILES * s.noise_tile), K._HALO_HOLE_SIGMAS * math.sqrt(2) * s.sigma0,
                             peaks, sig, peak)
    peaks = [pk for pk, kp in zip(peaks, keep) if kp]
    rows = []
    for k, (r, c) in enumerate(peaks):
        keep = ref.voronoi_mask_ref(w.shape, peaks, k, d["roi_half"])
        x, y, n, s, b, bx, by = ref.fit_gaussian_ref(w, r, c, d["roi_half"], p.psf_sigma_px, mask=keep,
                                                     plane=True)
        snr = f[r, c] / ref.local_sigma_ref(grid, e, w.shape, r, c)
        rows.append((x, y, n, s, b + bx * (x - c) + by * (y - r), snr))
    return np.array(rows)


def test_process_frame_matches_reference_pipeline():
    rng = np.random.default_rng(7)
    xs, ys = rng.uniform(6, 74, 12), rng.uniform(6, 54, 12)
    raw = ref.render_spots((60, 80), xs, ys, 1200.0, 1.5, 20.0, rng).astype(np.uint16)
    p = DetectParams()  # the full-resolution search (the binned one: test_binned_search_*)
    s = L._settings(p)
    ws = np.empty((2, 60, 80), np.float32)
    cap = 100
    out = np.empty((cap, K.N_FIELDS))
    grid = np.empty((K._n_tiles(60, s.edge, s.noise_tile), K._n_tiles(80, s.edge, s.noise_tile)))
    n = K._process_frame(raw, NO_BG, s, L._floor(raw[None], NO_BG), grid, True, ws[0], ws[1], np.empty(cap, np.int64),
                         np.empty(cap, np.int64), np.empty(cap), out)
    np.testing.assert_allclose(grid, ref.cap_noise_ref(ref.noise_map_ref(
        ref.bandpass_ref(ref.prepare_ref(raw, None, 1.0), 1.5, 6), s.edge, s.noise_tile, 6), K._NOISE_CAP, raw, s.edge),
        rtol=1e-4)
    expect = _reference_frame(raw, p)
    assert n == len(expect) >= 10
    got = out[:n]
    order_g = np.lexsort((got[:, 0], got[:, 1].round()))
    order_e = np.lexsort((expect[:, 0], expect[:, 1].round()))
    got, expect = got[order_g], expect[order_e]
    np.testing.assert_allclose(got[:, :2], expect[:, :2], atol=1e-3)
    np.testing.assert_allclose(got[:, 2], expect[:, 2], rtol=5e-3)  # mass
    np.testing.assert_allclose(got[:, 4], expect[:, 3], rtol=5e-3)  # size
    np.testing.assert_allclose(got[:, 5], expect[:, 4], rtol=1e-3, atol=0.05)  # background
    np.testing.assert_allclose(got[:, 6], expect[:, 5], rtol=2e-3)  # snr


@pytest.mark.parametrize("merge", [1.0, 2.0, 3.5])
def test_drop_duplicates_matches_reference(merge):
    rng = np.random.default_rng(31)
    n = 120
    rows = np.sort(rng.integers(0, 200, n)).astype(np.int64)
    out = np.zeros((n, K.N_FIELDS))
    out[:, 1] = rows + rng.uniform(-3, 3, n)  # fitted y within the ROI of the start row
    out[:, 0] = rng.uniform(0, 60, n)
    out[:, 3] = rng.integers(1, 6, n)  # signal with ties
    out[:, 4] = rng.uniform(0.5, 2.5, n)  # size_px
    keep = ref.drop_duplicates_ref(out, merge)
    assert 0 < keep.sum() < n
    expect = out[keep].copy()
    got = K._drop_duplicates(out, rows, n, merge, 3)
    assert got == keep.sum()
    np.testing.assert_array_equal(out[:got], expect)


# ----------------------------------------------------------------- bright spots (issue 5)
def test_cap_noise_matches_reference_and_one_spot_cannot_raise_its_tile():
    rng = np.random.default_rng(51)
    ny, nx, tile, edge = 9, 12, 16, 4
    grid = rng.uniform(0.9, 1.1, (ny, nx)) * np.linspace(1.0, 2.0, nx)[None, :]  # smooth shot-noise ramp
    raw = rng.normal(20.0, 1.0, (ny * tile + 2 * edge, nx * tile + 2 * edge))
    grid[4, 5] *= 100.0  # a bright spot fills its tile (its level rises 3×)
    raw[edge + 4 * tile:edge + 5 * tile, edge + 5 * tile:edge + 6 * tile] *= 3.0
    cap = K._NOISE_CAP
    grid[0, 0] *= 2.0 * cap  # a corner tile
    grid[7, 2:4] *= 0.8 * cap  # within the cap: untouched
    grid[2, 9] *= 1.2 * cap  # a stray-light blob: above the cap, but for 6.25× the level (shot noise ×2.5): kept
    raw[edge + 2 * tile:edge + 3 * tile, edge + 9 * tile:edge + 10 * tile] *= 6.25
    got = grid.copy()
    n_cap = K._cap_noise(got, K._NOISE_CAP, raw, edge)
    expect = ref.cap_noise_ref(grid, K._NOISE_CAP, raw, edge)
    np.testing.assert_allclose(got, expect, rtol=1e-12)
    assert n_cap == int(np.sum(got < grid)) >= 2
    assert got[4, 5] < 0.2 * grid[4, 5] and got[4, 5] < 2.0 * cap * np.median(grid[2:7, 3:8])
    assert got[7, 2] == grid[7, 2] and got[2, 9] == grid[2, 9]


def _clipped_frame(rng, shape, discs, level=255):
    """uint8 frame: noise ~20 plus clipped Gaussian spots (row, col, sigma, peak)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = rng.normal(20.0, 2.0, shape)
    for r, c, s, a in discs:
        img += a * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * s * s))
    return np.clip(np.round(img), 0, level).astype(np.uint8)


def test_merge_saturated_matches_reference():
    rng = np.random.default_rng(52)
    shape = (70, 90)
    discs = [(20.3, 30.6, 3.0, 3000.0), (50.0, 60.0, 2.0, 600.0), (1.5, 70.0, 3.0, 3000.0),  # centre inside, cut
             (-2.0, 10.0, 3.0, 3000.0), (45.0, 10.0, 1.5, 100.0)]  # centre beyond the border; unclipped
    raw = _clipped_frame(rng, shape, discs)
    # candidates on the rims (several per region), one on the unclipped spot, one far from any
    peaks = [(14, 30), (20, 25), (26, 31), (20, 36), (47, 60), (53, 60), (5, 68), (5, 72), (1, 10), (45, 10), (60, 80)]
    peaks.sort()
    peak = rng.uniform(5, 50, len(peaks))
    n = len(peaks)
    rows = np.array([p[0] for p in peaks], np.int64)
    cols = np.array([p[1] for p in peaks], np.int64)
    vals = np.arange(n, dtype=float)
    pk = peak.copy()
    sat = np.zeros((n, 3))
    m = K._merge_saturated(raw, 255.0, 3, rows, cols, vals, pk, sat, n)
    exp_pos, exp_idx, exp_sat = ref.merge_saturated_ref(raw, 255, 3, peaks, peak)
    assert m == len(exp_pos) == 5  # 3 regions inside (one cut by the border), the unclipped spot, the far one
    np.testing.assert_array_equal(np.c_[rows[:m], cols[:m]], np.array(exp_pos))
    np.testing.assert_array_equal(vals[:m], np.array(exp_idx, float))
    np.testing.assert_allclose(pk[:m], peak[exp_idx])
    np.testing.assert_allclose(sat[:m], np.array(exp_sat), atol=1e-12)
    # the region cut by the border is centred on its widest row, not on its (inward-biased) centroid
    cut = [i for i in range(m) if abs(sat[i, 2] - 70.0) < 3]
    assert len(cut) == 1 and abs(sat[cut[0], 1] - 3.0) <= 1.0


def _smooth_field(rng, shape, spots):
    """A filtered-image stand-in: Gaussian spots plus smooth noise whose variance grows with the signal (shot noise)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    sig = np.zeros(shape)
    for r, c, s, a in spots:
        sig += a * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * s * s))
    return sig + ndimage_gauss(rng.normal(0.0, 1.0, shape), 1.2) * 4.0 * np.sqrt(1.0 + sig)


def ndimage_gauss(a, s):
    from scipy import ndimage

    return ndimage.gaussian_filter(a, s)


def test_merge_no_saddle_and_halo_test_match_reference():
    rng = np.random.default_rng(53)
    shape = (80, 100)
    # a wide bright spot (noise maxima on its top), a resolved pair, a close pair, isolated spots
    spots = [(40, 50, 10.0, 100.0), (15, 20, 2.1, 40.0), (15, 29, 2.1, 35.0), (60, 20, 2.1, 40.0), (62, 24, 2.1, 30.0),
             (20, 80, 2.1, 25.0), (70, 85, 2.1, 12.0)]
    f = _smooth_field(rng, shape, spots)
    peaks = ref.find_maxima_ref(f, 6.0, 3, 3.75)
    assert sum((r - 40) ** 2 + (c - 50) ** 2 < 200 for r, c in peaks) >= 2  # the wide spot's top has several maxima
    peak = np.array([f[r, c] for r, c in peaks])
    keep = ref.merge_no_saddle_ref(f, 9.75, 0.9, peaks, peak)
    rows = np.array([p[0] for p in peaks], np.int64)
    cols = np.array([p[1] for p in peaks], np.int64)
    n = len(peaks)
    vals = np.full(n, 1.0)
    pk = peak.copy()
    sat = np.zeros((n, 3))
    m = K._merge_no_saddle(f, 9.75, 0.9, rows, cols, vals, pk, sat, n)
    assert 0 < n - m == n - keep.sum()  # something merged
    np.testing.assert_array_equal(np.c_[rows[:m], cols[:m]], np.array(peaks)[keep])
    # the resolved pair (9 px apart, σ_F ≈ 2.1) survives
    kept = np.c_[rows[:m], cols[:m]]
    assert all(np.hypot(*(kept - np.array(c)).T).min() <= 1.5 for c in [(15, 20), (15, 29)])
    # halo test on what is left
    peaks2 = [tuple(p) for p in np.c_[rows[:m], cols[:m]]]
    sig = rng.uniform(0.5, 1.5, m)
    keep2 = ref.halo_test_ref(f, 3.5, 4.0, 32.0, 8, 4.2, peaks2, sig, pk[:m])
    vals2 = sig.copy()
    m2 = K._halo_test(f, 3.5, 4.0, 32.0, 8, 4.2, rows, cols, vals2, pk, sat, m)
    assert m2 == keep2.sum() < m
    np.testing.assert_array_equal(np.c_[rows[:m2], cols[:m2]], np.array(peaks2)[keep2])


@pytest.mark.parametrize("shape", [(8, 10), (9, 11)])
@pytest.mark.parametrize("with_bg, sign", [(True, 1.0), (True, -1.0), (False, 1.0)])
def test_working_frame_bin2_is_the_working_frame_and_its_binned_sums(shape, with_bg, sign):
    rng = np.random.default_rng(5)
    raw = rng.integers(0, 255, shape).astype(np.uint8)
    bg = rng.uniform(0, 100, shape).astype(np.float32) if with_bg else np.zeros((0, 0), np.float32)
    work = np.full(shape, np.nan, np.float32)
    out = np.empty((shape[0] // 2, shape[1] // 2), np.float32)
    K._working_frame_bin2(raw, bg, sign, work, out)
    expect = sign * (raw.astype(np.float32) - (bg if with_bg else 0.0))
    np.testing.assert_array_equal(work, expect.astype(np.float32))  # every row, the odd last one too
    h2, w2 = out.shape
    np.testing.assert_allclose(out, expect[:2 * h2, :2 * w2].reshape(h2, 2, w2, 2).sum(axis=(1, 3)), rtol=1e-6,
                               atol=1e-4)


def test_to_full_res_takes_the_brightest_block_pixel_or_the_clipped_centroid():
    rng = np.random.default_rng(4)
    work = rng.normal(0, 1, (20, 24)).astype(np.float32)
    rows = np.array([1, 3, 6, 2], np.int64)
    cols = np.array([9, 2, 4, 11], np.int64)
    vals, peak = np.arange(4.0), np.arange(4.0) * 10
    sat = np.zeros((4, 3))
    sat[1] = (2.0, 7.4, 4.6)  # a clipped region: its centroid
    K._to_full_res(work, rows, cols, vals, peak, sat, 4)
    expect = []
    for k, (r, c) in enumerate([(1, 9), (3, 2), (6, 4), (2, 11)]):
        if k == 1:
            expect.append((7, 5, k))
            continue
        blk = work[2 * r:2 * r + 2, 2 * c:2 * c + 2]
        i, j = np.unravel_index(np.argmax(blk), (2, 2))
        expect.append((2 * r + i, 2 * c + j, k))
    expect.sort()  # raster order, the other arrays follow
    assert list(zip(rows, cols)) == [(r, c) for r, c, _ in expect]
    np.testing.assert_array_equal(vals, [float(k) for *_, k in expect])
    np.testing.assert_array_equal(peak, [10.0 * k for *_, k in expect])
    assert sat[[k for *_, k in expect].index(1), 0] == 2.0


def test_search_binning_default_and_overrides():
    assert L.search_binning(DetectParams()) == 1
    assert L.search_binning(DetectParams(search_binning=2)) == 2
    assert L.search_binning(DetectParams(search_binning=2, threshold=50.0)) == 1  # a full-resolution level
    s = L._settings(DetectParams(search_binning=2))
    assert s.search_bin == 2 and s.sigma0_b == pytest.approx(np.sqrt((1.5 ** 2 + 1 / 3) / 4))
    assert (s.box_half_b, s.edge_b, s.noise_tile) == (3, 2, 16)
    assert K._grid_shape(1024, 1024, s) == (K._n_tiles(512, 2, 16), K._n_tiles(512, 2, 16))
    assert L._settings(DetectParams(search_binning=2, edge_px=0)).edge_b == 0
    with pytest.raises(Exception):
        DetectParams(search_binning=3)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_binned_search_finds_the_same_spots_as_the_full_resolution_search(dtype):
    """Isolated spots well above the threshold: both searches find every one, and the fits (the same code, at
    full resolution, from start pixels at most one pixel apart) give the same positions within 0.05 px."""
    rng = np.random.default_rng(8)
    gy, gx = np.mgrid[14:180:24, 14:244:24]  # sparse, as in NTA: the tiles of the noise map are mostly background
    xs = gx.ravel() + rng.uniform(-2, 2, gx.size)
    ys = gy.ravel() + rng.uniform(-2, 2, gy.size)
    raw = ref.render_spots((192, 256), xs, ys, 2500.0, 1.5, 10.0, rng)
    raw = np.clip(raw, 0, np.iinfo(dtype).max).astype(dtype)
    got = {}
    for b in (1, 2):
        df = L.locate(raw, search_binning=b, threshold_snr=6.0).sort_values(["y", "x"]).reset_index(drop=True)
        got[b] = df
    assert len(got[1]) == len(got[2]) == xs.size
    # a fit's ROI is centred on its start pixel: one pixel apart, the two fits see slightly different pixels
    np.testing.assert_allclose(got[2][["x", "y"]].to_numpy(), got[1][["x", "y"]].to_numpy(), atol=0.05)
    np.testing.assert_allclose(got[2]["mass"], got[1]["mass"], rtol=0.03)
    assert np.mean(np.abs(got[2]["x"].to_numpy() - got[1]["x"].to_numpy()) < 1e-3) >= 0.75  # mostly the same start
    d, _ = cKDTree(np.c_[xs, ys]).query(got[2][["x", "y"]].to_numpy())
    assert d.max() < 0.5
    # the snr is the binned filtered peak over the binned frame's noise: the same order as at full resolution
    ratio = got[2]["snr"].to_numpy() / got[1]["snr"].to_numpy()
    assert 0.7 < np.median(ratio) < 1.6
