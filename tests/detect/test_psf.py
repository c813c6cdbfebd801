"""exonta.detect.psf: the spot-width estimator against spots of known Gaussian sigma."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from exonta.detect.psf import estimate_psf_sigma
from exonta.errors import ExontaInputError


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
