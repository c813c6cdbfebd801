"""exonta.detect.polarity: dark (bright-field) or bright particles, on seeded synthetic frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi

from exonta.detect.polarity import DARK_RATIO, MIN_STRENGTH, _smooth_nearest, estimate_polarity
from exonta.errors import ExontaInputError

SHAPE = (160, 200)


def _positions(rng, n, margin=12):
    return rng.uniform([margin, margin], [SHAPE[0] - margin, SHAPE[1] - margin], (n, 2))


def _blob(yy, xx, y, x, sigma):
    return np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma * sigma))


def bright_frames(rng, n_frames=4, n_spots=15, photons=400.0, background=20.0, sigma=1.6):
    """Bright Gaussian spots (NTA / fluorescence) on a dark Poisson background, uint16."""
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    out = []
    for _ in range(n_frames):
        lam = np.full(SHAPE, background)
        for y, x in _positions(rng, n_spots):
            lam += photons / (2 * math.pi * sigma ** 2) * _blob(yy, xx, y, x, sigma)
        out.append(rng.poisson(lam))
    return np.array(out, np.uint16)


def dark_frames(rng, n_frames=4, n_beads=15, level=160.0, contrast=0.35, rim=0.25, radius=3.0):
    """Bright-field beads: a dark core with a bright rim on a light Poisson background, uint8."""
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    out = []
    for _ in range(n_frames):
        rel = np.ones(SHAPE)
        for y, x in _positions(rng, n_beads):
            r = np.hypot(yy - y, xx - x)
            rel -= contrast * np.exp(-0.5 * (r / radius) ** 2)
            rel += rim * contrast * np.exp(-0.5 * ((r - 2.2 * radius) / 1.0) ** 2)
        out.append(np.clip(rng.poisson(level * rel), 0, 255))
    return np.array(out, np.uint8)


def test_smoothing_matches_scipy():
    img = np.random.default_rng(0).normal(size=(37, 52)).astype(np.float32)
    for sigma in (0.8, 1.0, 2.5):
        ref = ndi.gaussian_filter(img.astype(np.float64), sigma, mode="nearest", truncate=3.0)
        np.testing.assert_allclose(_smooth_nearest(img, sigma), ref, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bright_spots_are_bright(seed):
    est = estimate_polarity(bright_frames(np.random.default_rng(seed)))
    assert est.dark is False
    assert est.bright_strength >= 2 * MIN_STRENGTH
    assert est.dark_strength * DARK_RATIO < est.bright_strength


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dark_beads_with_bright_rims_are_dark(seed):
    est = estimate_polarity(dark_frames(np.random.default_rng(seed)))
    assert est.dark is True
    assert est.dark_strength >= DARK_RATIO * est.bright_strength
    assert est.dark_strength >= 2 * MIN_STRENGTH
    assert est.scale_px in (1, 2, 4)


def test_rims_would_count_without_the_satellite_rule():
    """The rims are strong bright extrema: the satellite rule is what keeps them from voting."""
    from exonta.detect.polarity import _max_filter_nearest

    frames = dark_frames(np.random.default_rng(4), rim=0.6)
    w = frames.astype(np.float32) - np.median(frames, axis=0)
    z = np.stack([_smooth_nearest(f, 1.0) for f in w])
    z /= 1.4826 * np.median(np.abs(z - np.median(z)))
    bright_peaks = sum(int(((f > MIN_STRENGTH) & (f == _max_filter_nearest(f, 5))).sum()) for f in z)
    assert bright_peaks >= 5  # rims above the threshold ...
    assert estimate_polarity(frames).dark is True  # ... and still dark


def test_empty_video_is_undecided():
    rng = np.random.default_rng(5)
    frames = rng.poisson(50.0, (4, *SHAPE)).astype(np.uint16)
    est = estimate_polarity(frames)
    assert est.dark is None and math.isnan(est.scale_px)
    assert est.bright_strength < MIN_STRENGTH and est.dark_strength < MIN_STRENGTH


def test_frame_offsets_do_not_make_dark_particles():
    """Lamp flicker: whole frames darker than the background must not look like dark particles."""
    rng = np.random.default_rng(6)
    frames = bright_frames(rng, n_spots=6, photons=250.0).astype(np.int32)
    frames += np.array([0, -6, 0, -6])[:, None, None]
    est = estimate_polarity(frames.astype(np.float32), background=np.full(SHAPE, 20.0, np.float32))
    assert est.dark is False


def test_one_dark_speck_does_not_decide():
    """Fewer than RANK dark extrema count as none: a single dark dust grain beside dim bright spots."""
    rng = np.random.default_rng(7)
    frames = bright_frames(rng, photons=150.0).astype(np.float32)
    frames[:, 80:83, 100:103] -= 200.0
    assert estimate_polarity(frames, background=np.full(SHAPE, 20.0, np.float32)).dark is False


def test_bad_frames_raise_input_error():
    with pytest.raises(ExontaInputError):
        estimate_polarity(np.zeros((2, 4, 4)))
    bad = np.ones((3, 20, 20), np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ExontaInputError):
        estimate_polarity(bad)
