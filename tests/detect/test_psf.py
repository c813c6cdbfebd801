"""exonta.detect.psf: the spot-width estimator against spots of known Gaussian sigma, and its
numpy filters against scipy.ndimage and the slow twins in tests/reference/detect_ref.py."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.special import erf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference import detect_ref as ref  # noqa: E402

from exonta.detect import psf as P  # noqa: E402
from exonta.detect.psf import estimate_psf_sigma  # noqa: E402
from exonta.errors import ExontaInputError  # noqa: E402


def _frames(sigma_px, rng, n_frames=3, side=200, flux=3000.0, background=100.0, dark=False):
    """Poisson frames of pixel-integrated Gaussian spots on a jittered grid (isolated spots)."""
    t = np.arange(side, dtype=float)
    step = int(8 * sigma_px) + 8
    grid = np.arange(int(6 * sigma_px) + 5, side - int(6 * sigma_px) - 5, step)
    out = []
    amp = flux * max(1.0, sigma_px ** 2 / 4)
    for _ in range(n_frames):
        img = np.full((side, side), background)
        for gy in grid:
            for gx in grid:
                y, x = gy + rng.uniform(-1, 1), gx + rng.uniform(-1, 1)
                ex = 0.5 * (erf((t + 0.5 - x) / (np.sqrt(2) * sigma_px)) - erf((t - 0.5 - x) / (np.sqrt(2) * sigma_px)))
                ey = 0.5 * (erf((t + 0.5 - y) / (np.sqrt(2) * sigma_px)) - erf((t - 0.5 - y) / (np.sqrt(2) * sigma_px)))
                img = img + (-amp if dark else amp) * np.outer(ey, ex)
        out.append(rng.poisson(np.clip(img, 0, None)))
    return np.asarray(out, dtype=np.float32)


@pytest.mark.parametrize("sigma_px", [1.0, 1.5, 3.0, 6.0])
def test_known_sigma_noise_free(sigma_px):
    rng = np.random.default_rng(1)
    fr = _frames(sigma_px, rng)
    est = estimate_psf_sigma(fr, background=np.full(fr.shape[1:], 100.0))
    assert est.sigma_px is not None and est.n_spots >= 5
    # Poisson noise biases the scale selection slightly low (≈ 3–6 %)
    assert est.sigma_px == pytest.approx(sigma_px, rel=0.08)


def test_dark_spots_with_invert_and_temporal_background():
    rng = np.random.default_rng(2)
    fr = _frames(3.0, rng, n_frames=6, background=180.0, dark=True, flux=2000.0)
    # jittered grid moves the spots by ±1 px only: give the background explicitly
    est = estimate_psf_sigma(fr, background=np.full(fr.shape[1:], 180.0), invert=True)
    assert est.sigma_px == pytest.approx(3.0, rel=0.1)
    wrong = estimate_psf_sigma(fr, background=np.full(fr.shape[1:], 180.0), invert=False)
    assert wrong.sigma_px is None or abs(wrong.sigma_px - 3.0) > 0.3


def test_no_spots_returns_none():
    rng = np.random.default_rng(3)
    fr = rng.poisson(100.0, size=(4, 128, 128)).astype(np.float32)
    est = estimate_psf_sigma(fr)
    assert est.sigma_px is None


def test_saturated_spots_are_skipped():
    rng = np.random.default_rng(4)
    fr = np.clip(_frames(2.0, rng, flux=20000.0), 0, 255).astype(np.uint8)
    assert (fr == 255).any()
    est = estimate_psf_sigma(fr, background=np.full(fr.shape[1:], 100.0))
    assert est.sigma_px is None  # every spot clipped: no estimate rather than a flat-top width


def test_bad_input():
    with pytest.raises(ExontaInputError):
        estimate_psf_sigma(np.zeros((2, 4, 4)))
    with pytest.raises(ExontaInputError):
        estimate_psf_sigma(np.zeros((2, 32, 32)), background=np.zeros((10, 10)))


# ----------------------------------------------------------------- filters against scipy.ndimage
_SHAPES = [(1, 1), (1, 9), (9, 1), (3, 5), (7, 6), (37, 53), (64, 65)]


@pytest.mark.parametrize("shape", _SHAPES)
@pytest.mark.parametrize("sigma,truncate", [(0.6, 3.0), (1.0, 3.0), (1.3, 4.0), (2.0, 3.0), (2.5, 3.0), (4.0, 3.0)])
def test_gaussian_laplace_matches_scipy(shape, sigma, truncate):
    """Kernel radius up to 12 px: larger than the small images, so the "nearest" border is all there is."""
    rng = np.random.default_rng(10)
    for offset in (0.0, 1000.0):
        img = (offset + 10.0 * rng.normal(size=shape)).astype(np.float32)
        got = P._gaussian_laplace_nearest(img, sigma, truncate)
        want = ndi.gaussian_laplace(img, sigma, mode="nearest", truncate=truncate)
        assert got.dtype == np.float32 and got.shape == img.shape
        # float32 shift-and-add against scipy's float64 lines: ~1e-6 of the pixel scale
        np.testing.assert_allclose(got, want, rtol=0, atol=5e-6 * np.abs(img).max())


def test_gaussian_laplace_border_is_nearest():
    """A ramp with a step at the border: "nearest" and "reflect" differ there by far more than the tolerance."""
    rng = np.random.default_rng(11)
    img = (np.add.outer(np.arange(41.0), 3.0 * np.arange(30.0)) + rng.normal(size=(41, 30))).astype(np.float32)
    img[:, -1] += 50.0
    got = P._gaussian_laplace_nearest(img, 2.0, 3.0)
    tol = 5e-6 * np.abs(img).max()
    np.testing.assert_allclose(got, ndi.gaussian_laplace(img, 2.0, mode="nearest", truncate=3.0), rtol=0, atol=tol)
    reflect = ndi.gaussian_laplace(img, 2.0, mode="reflect", truncate=3.0)
    assert np.abs(got - reflect)[:, -3:].max() > 1000 * tol


def test_gaussian_kernels_match_scipy_weights():
    for sigma in (0.7, 1.0, 2.0, 3.3):
        g, d2 = P._gaussian_kernels_1d(sigma, 3.0)
        rad = int(3.0 * sigma + 0.5)
        assert g.size == d2.size == 2 * rad + 1
        impulse = np.zeros(4 * rad + 3)
        impulse[2 * rad + 1] = 1.0
        # correlating a unit impulse returns the reversed weights (these are symmetric)
        for order, k in ((0, g), (2, d2)):
            want = ndi.gaussian_filter1d(impulse, sigma, order=order, mode="constant", truncate=3.0)
            np.testing.assert_allclose(k, want[rad + 1:3 * rad + 2], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape", _SHAPES + [(2, 3), (33, 47)])
@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_max_filter_matches_scipy_exactly(shape, size):
    rng = np.random.default_rng(12)
    for img in (rng.normal(size=shape).astype(np.float32),
                rng.integers(0, 4, size=shape).astype(np.float32)):  # many ties
        got = P._max_filter_nearest(img, size)
        np.testing.assert_array_equal(got, ndi.maximum_filter(img, size=size, mode="nearest"))
        assert got.dtype == img.dtype


def test_max_filter_rejects_even_size():
    with pytest.raises(ValueError):
        P._max_filter_nearest(np.zeros((5, 5), np.float32), 4)


def _centroids_scipy(mask):
    lab, n = ndi.label(mask)
    if n == 0:
        return np.zeros((0, 2))
    return np.asarray(ndi.center_of_mass(mask, lab, np.arange(1, n + 1)), float).reshape(-1, 2)


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 1), (2, 2), (33, 47), (64, 64)])
@pytest.mark.parametrize("density", [0.0, 0.02, 0.2, 0.5, 0.9, 1.0])
def test_component_centroids_match_scipy(shape, density):
    """Same components, same order (scipy.ndimage.label numbering), same centres of mass."""
    rng = np.random.default_rng(13)
    mask = rng.random(shape) < density
    got = P._component_centroids(mask)
    want = _centroids_scipy(mask)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_component_centroids_plateaus_and_snakes():
    rng = np.random.default_rng(14)
    # b×b plateaus (what the binned scales give), some touching
    mask = np.kron(rng.random((12, 15)) < 0.3, np.ones((4, 4), bool))
    np.testing.assert_array_equal(P._component_centroids(mask), _centroids_scipy(mask))
    # a long serpentine and diagonal neighbours (not 4-connected: separate components)
    snake = np.zeros((25, 21), bool)
    snake[::6, 1:20] = True  # rows 0, 6, 12, 18, 24 joined at alternate ends
    for top in range(0, 24, 6):
        snake[top + 1:top + 6, 19 if (top // 6) % 2 == 0 else 1] = True
    snake[2, 5] = snake[3, 6] = True  # touching only diagonally
    got = P._component_centroids(snake)
    np.testing.assert_array_equal(got, _centroids_scipy(snake))
    assert got.shape[0] == 3


def test_median_and_mad_bit_for_bit():
    rng = np.random.default_rng(15)
    for n in list(range(1, 12)) + [100, 101, 4096, 4097]:
        for a in (rng.normal(size=n).astype(np.float32),
                  rng.integers(-3, 4, size=n).astype(np.float32),  # ties and a zero MAD
                  (rng.normal(size=n) * 100).astype(np.float32) ** 3):
            med, mad = P._median_and_mad(a)
            want_med = np.median(a)
            want_mad = np.median(np.abs(a - want_med))
            assert med == want_med and mad == want_mad
            assert P._robust_sd(a) == ref.psf_robust_sd_ref(a)
    img = rng.normal(size=(37, 52)).astype(np.float32)
    assert P._robust_sd(img) == ref.psf_robust_sd_ref(img)


def test_robust_sd_fallbacks():
    assert P._robust_sd(np.array([0, 0, 0, 5, 9], np.float32)) == pytest.approx(np.std([0, 0, 0, 5, 9]))
    assert P._robust_sd(np.zeros(8, np.float32)) == 1.0


# ----------------------------------------------------------------- stages against the slow twins
def _binned_levels(img, b):
    levels = {1: img}
    while b not in levels:
        top = max(levels)
        levels[2 * top] = P._bin2(levels[top])
    return levels[b]


def test_bin2_is_block_mean():
    rng = np.random.default_rng(16)
    img = rng.normal(size=(37, 50)).astype(np.float32)
    for b in (2, 4, 8):
        h, w = img.shape[0] // b, img.shape[1] // b
        want = img[:h * b, :w * b].astype(np.float64).reshape(h, b, w, b).mean(axis=(1, 3))
        np.testing.assert_allclose(_binned_levels(img, b), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(96, 96), (128, 128), (150, 203)])  # (150, 203): no whole number of bins
def test_scaled_response_matches_reference(shape):
    rng = np.random.default_rng(17)
    img = (rng.poisson(100.0, size=shape) - 100.0).astype(np.float32)
    img[40:44, 50:55] += 60.0
    for s in (1.0, 2.0, 4.0, 8.0, 16.0):
        if 3 * s > min(shape) / 2:
            break
        b = P._bin_factor(s)
        got = P._scaled_response(_binned_levels(img, b), b, shape, s)
        want = ref.psf_scaled_response_ref(img, s)
        assert got.shape == shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_candidates_match_reference():
    """Same candidates (frame, pixel, coarse scale) in the same order; scores to float32 rounding."""
    rng = np.random.default_rng(18)
    bright = _frames(1.5, rng, n_frames=2)
    dark = _frames(3.0, rng, n_frames=2, side=150, background=180.0, dark=True, flux=2000.0)
    odd = np.concatenate([dark, np.full((2, 150, 3), 180.0, np.float32)], axis=2)[:, :147]  # 147 × 153 px
    for frames, bg, invert in ((bright, 100.0, False), (dark, 180.0, True), (odd, 180.0, True)):
        w = P._working_frames(frames, np.full(frames.shape[1:], bg), invert)
        got = P._candidates(w, 40, 8.0)
        want = ref.psf_candidates_ref(w, 40, 8.0)
        assert len(got) >= 10
        assert [(f, r, c, s) for f, r, c, _, s in got] == [(f, r, c, s) for f, r, c, _, s in want]
        np.testing.assert_allclose([t[3] for t in got], [t[3] for t in want], rtol=1e-5)


def test_responses_match_reference():
    rng = np.random.default_rng(19)
    w = (rng.poisson(100.0, size=(90, 80)) + 0.0).astype(np.float32)  # an offset left in: zero-sum kernels
    scales = np.geomspace(0.6, 9.0, 40)
    for _ in range(5):
        yc, xc = rng.uniform(40, 50), rng.uniform(35, 45)
        n = int(np.count_nonzero(np.ceil(3.5 * scales) <= min(round(yc), round(xc), 89 - round(yc), 79 - round(xc))))
        got = P._responses(w, yc, xc, scales[:n])
        want = [ref.psf_response_ref(w, yc, xc, float(s)) for s in scales[:n]]
        assert n >= 30 and None not in want
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


@pytest.mark.parametrize("sigma_px,centre", [(1.0, (50.3, 49.6)), (2.5, (50.0, 50.0)), (4.0, (47.8, 52.1)),
                                              (3.0, (14.2, 50.0))])  # near the border: the window limits the scales
def test_scale_at_matches_reference(sigma_px, centre):
    rng = np.random.default_rng(20)
    yy, xx = np.mgrid[0:100, 0:100]
    spot = 4000.0 / (2 * math.pi * sigma_px ** 2) * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2)
                                                          / (2 * sigma_px ** 2))
    w = (rng.poisson(spot + 50.0) - 50.0).astype(np.float32)
    scales = np.geomspace(P.SIGMA_MIN_PX, 12.0, 55)
    cache: dict = {}
    for _ in range(2):  # the second call reuses the cached fit grid
        got = P._scale_at(w, centre[0], centre[1], scales, cache)
        want = ref.psf_scale_at_ref(w, centre[0], centre[1], scales)
        assert (got[0] is None) == (want[0] is None)
        if want[0] is not None:
            assert got[0] == pytest.approx(want[0], rel=1e-9)
            assert got[0] == pytest.approx(math.sqrt(sigma_px ** 2 + 1 / 12), rel=0.15)
        assert got[1] == pytest.approx(want[1], rel=1e-9)
    assert cache


def test_scale_at_noise_matches_reference():
    """No spot: no early stop, the responses run to the largest scale that fits."""
    rng = np.random.default_rng(21)
    w = rng.normal(size=(120, 120)).astype(np.float32)
    scales = np.geomspace(P.SIGMA_MIN_PX, 16.0, 58)
    for yc, xc in ((60.0, 60.0), (30.4, 81.7)):
        got = P._scale_at(w, yc, xc, scales)
        want = ref.psf_scale_at_ref(w, yc, xc, scales)
        assert (got[0] is None) == (want[0] is None)
        if want[0] is not None:
            assert got[0] == pytest.approx(want[0], rel=1e-9)
        assert got[1] == pytest.approx(want[1], rel=1e-9, nan_ok=True)
