"""Pixel-size plausibility from the spots' width and from the spots' motion between frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from exonta.analysis.plausibility import (
    CLUTTER_INDEX,
    LINKING_LIMIT_RATIO,
    clutter_index,
    MAX_FOCUSED_SIGMA_UM,
    MIN_SPOT_SIGMA_UM,
    linking_limit_warnings,
    linking_radius_warnings,
    frame_to_frame_distances_px,
    spot_width_warnings,
)


def test_spots_narrower_than_optics_allow_name_a_pixel_size_too_small():
    # the bundled 100 nm sample's spots (σ ≈ 2 px) at 0.0166 instead of 0.166 µm/px
    w = spot_width_warnings(2.04, 0.0166)
    assert len(w) == 1 and "too small" in w[0] and "34 nm" in w[0]
    assert spot_width_warnings(2.04, 0.166) == []
    # the bound itself: just below / above MIN_SPOT_SIGMA_UM
    assert len(spot_width_warnings(1.0, 0.99 * MIN_SPOT_SIGMA_UM)) == 1
    assert spot_width_warnings(1.0, 1.01 * MIN_SPOT_SIGMA_UM) == []
    assert spot_width_warnings(None, 0.01) == [] and spot_width_warnings(float("nan"), 0.01) == []


def test_spots_far_wider_than_optics_and_particles_name_a_pixel_size_too_large():
    # 1 µm beads (spots σ 2.7 px at 0.1 µm/px) analysed at 1 µm/px read D50 26 nm
    w = spot_width_warnings(2.7, 1.0, d50_nm=26.0)
    assert len(w) == 1 and "too large" in w[0]
    assert spot_width_warnings(2.7, 0.1, d50_nm=1000.0) == []  # the right pixel size
    # wide spots of large particles are their own images: 3 µm beads with σ 1.5 µm are plausible
    assert spot_width_warnings(1.5 / 0.2, 0.2, d50_nm=3000.0) == []
    # a spot below the optics' largest focused width is never judged too wide, whatever the sizes
    assert spot_width_warnings(0.99 * MAX_FOCUSED_SIGMA_UM / 0.5, 0.5, d50_nm=10.0) == []
    # no size statistics: the upper bound is not judged
    assert spot_width_warnings(2.7, 1.0, d50_nm=None) == [] and spot_width_warnings(2.7, 1.0, float("nan")) == []


def _brute_frame_to_frame_distances(features):
    out = []
    for f in sorted(features["frame"].unique()):
        a = features.loc[features["frame"] == f, ["x", "y"]].to_numpy(float)
        b = features.loc[features["frame"] == f - 1, ["x", "y"]].to_numpy(float)
        if len(a) and len(b):
            out.append(np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min(axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def _walk(n_particles=40, n_frames=60, step_px=3.0, shape=(480, 640), seed=0, skip=()):
    rng = np.random.default_rng(seed)
    xy = rng.uniform([0, 0], [shape[1], shape[0]], (n_particles, 2))
    rows = []
    for f in range(n_frames):
        if f not in skip:
            rows += [(f, x, y) for x, y in xy]
        xy = xy + rng.normal(0.0, step_px, xy.shape)
    return pd.DataFrame(rows, columns=["frame", "x", "y"])


def test_frame_to_frame_distances_equal_a_brute_force_search():
    feats = _walk(n_particles=15, n_frames=12, skip=(5,), seed=3)  # frame 5 missing: pairs 4-5 and 5-6 drop out
    got = np.sort(frame_to_frame_distances_px(feats, max_pairs=1000))
    ref = np.sort(_brute_frame_to_frame_distances(feats))
    assert got.size == ref.size == 15 * 9
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    # sampling: at most max_pairs frame pairs
    assert frame_to_frame_distances_px(feats, max_pairs=2).size == 2 * 15
    assert frame_to_frame_distances_px(feats.iloc[:0]).size == 0


def test_tracks_broken_by_a_radius_shorter_than_the_motion_are_explained():
    feats = _walk(step_px=3.0)  # ~3.8 px median displacement between frames
    w = linking_radius_warnings(feats, 1.5, 1.66, 30.0, n_valid_tracks=0, min_track_length=10, frame_shape=(480, 640))
    assert len(w) == 1 and "too large" in w[0] and "1.5 px" in w[0]
    # a radius that holds the motion, or tracks that did form: nothing to explain
    assert linking_radius_warnings(feats, 15.0, 0.166, 30.0, 0, 10, (480, 640)) == []
    assert linking_radius_warnings(feats, 1.5, 1.66, 30.0, 10, 10, (480, 640)) == []
    # a few long tracks that suffice for size statistics (enough_for_statistics) are not judged either
    assert linking_radius_warnings(feats, 1.5, 1.66, 30.0, 4, 10, (480, 640), enough_tracks=True) == []
    assert linking_radius_warnings(feats, 1.5, 1.66, 30.0, 4, 10, (480, 640), enough_tracks=False) != []


def test_spots_unrelated_from_frame_to_frame_are_not_blamed_on_the_pixel_size():
    # a buffer blank: noise maxima at new random places in every frame
    rng = np.random.default_rng(1)
    rows = [(f, *rng.uniform([0, 0], [640, 480])) for f in range(60) for _ in range(20)]
    feats = pd.DataFrame(rows, columns=["frame", "x", "y"])
    assert np.median(frame_to_frame_distances_px(feats)) > 20.0  # far beyond any radius below
    assert linking_radius_warnings(feats, 1.5, 1.66, 30.0, 0, 10, (480, 640)) == []
    # too few spots to judge
    assert linking_radius_warnings(_walk(n_particles=1, n_frames=20), 0.5, 1.0, 30.0, 0, 10, (480, 640)) == []


@pytest.mark.parametrize("bad", [float("nan"), 0.0, -1.0])
def test_a_spot_width_that_is_not_a_width_is_not_judged(bad):
    assert spot_width_warnings(bad, 0.01, 10.0) == []


def test_noise_track_warning_from_the_spots_of_the_sized_tracks():
    import math

    from exonta.analysis.plausibility import NOISE_TRACK_SNR_RATIO, median_track_snr, noise_track_warnings

    # the median over valid tracks of each track's median snr; invalid tracks and short ones left out
    tracks = pd.DataFrame({"particle": [0, 0, 0, 1, 1, 2, 2, 2], "snr": [3.6, 3.8, 9.0, 4.0, 4.2, 20.0, 30.0, 40.0]})
    parts = pd.DataFrame({"particle": [0, 1, 2], "valid": [True, True, False]})
    assert median_track_snr(tracks, parts) == pytest.approx(np.median([3.8, 4.1]))
    assert math.isnan(median_track_snr(tracks.drop(columns="snr"), parts))
    assert math.isnan(median_track_snr(tracks, parts.assign(valid=False)))
    # at the threshold: noise; from NOISE_TRACK_SNR_RATIO × it (60 nm beads: 1.30×): particles
    edge = NOISE_TRACK_SNR_RATIO * 3.5
    w = noise_track_warnings(3.7, 3.5, 47, 28.4)
    assert len(w) == 1 and "47 sized tracks" in w[0] and "D50 28.4 nm" in w[0] and "noise maxima" in w[0]
    assert noise_track_warnings(edge * 0.99, 3.5, 47, 28.4) != []
    assert noise_track_warnings(edge, 3.5, 47, 28.4) == [] and noise_track_warnings(4.54, 3.5, 91, 55.1) == []
    # not judged: a threshold given in filtered intensity, no sizes, no tracks, no snr
    assert noise_track_warnings(3.7, None, 47, 28.4) == []
    assert noise_track_warnings(3.7, 3.5, 4, float("nan")) == [] and noise_track_warnings(3.7, 3.5, 0, 28.4) == []
    assert noise_track_warnings(float("nan"), 3.5, 47, 28.4) == []


def test_sizes_at_the_linking_limit_are_warned_about():
    # the generated 100x fluorescence MJPEG video of 200 nm beads: D50 52 nm at the default 50 nm limit
    w = linking_limit_warnings(52.0, 50.0)
    assert len(w) == 1 and "D50 52 nm" in w[0] and "down to 50 nm" in w[0] and "min_diameter_nm" in w[0]
    assert len(linking_limit_warnings(30.0, 50.0)) == 1  # below the limit as well
    assert len(linking_limit_warnings(0.999 * LINKING_LIMIT_RATIO * 50.0, 50.0)) == 1
    # simulated 60 nm beads read D50 61-63 nm: not at the limit
    assert linking_limit_warnings(1.001 * LINKING_LIMIT_RATIO * 50.0, 50.0) == []
    assert linking_limit_warnings(61.0, 50.0) == []
    # not judged: no sizes, or the noise-track warning already says what the sizes are
    assert linking_limit_warnings(None, 50.0) == [] and linking_limit_warnings(float("nan"), 50.0) == []
    assert linking_limit_warnings(43.0, 50.0, noise_tracks=True) == []


def test_clutter_index_counts_the_detections_within_the_radius():
    # brute force: uniform random detections, the mean count within the radius of random points (away from edges)
    rng = np.random.default_rng(5)
    w, h, n, r = 400.0, 300.0, 47, 44.4
    counts = []
    for _ in range(400):
        pts = rng.uniform((0, 0), (w, h), (n, 2))
        q = rng.uniform((r, r), (w - r, h - r), 2)
        counts.append(int((np.hypot(*(pts - q).T) <= r).sum()))
    assert clutter_index(n, w * h, r) == pytest.approx(np.mean(counts), rel=0.06)
    assert clutter_index(n, w * h, r) == pytest.approx(47 / 120000 * np.pi * 44.4 ** 2)
    assert np.isnan(clutter_index(10, 0, 5)) and np.isnan(clutter_index(10, 100, 0))


def test_ambiguous_links_are_warned_about_when_the_sizes_are_above_the_limit():
    # a small scene of the 100x fluorescence video: D50 62 nm (1.24x the limit), 3.4 detections within the radius
    w = linking_limit_warnings(62.0, 50.0, clutter=3.36, search_radius_um=2.89)
    assert len(w) == 1 and "ambiguous" in w[0] and "3.4 detections" in w[0] and "2.9 µm" in w[0]
    assert "memory_frames" in w[0] and "D50 62 nm" in w[0]
    # the simulated NTA cases: at most 0.57
    assert linking_limit_warnings(96.6, 50.0, clutter=0.57, search_radius_um=1.3) == []
    assert linking_limit_warnings(200.0, 50.0, clutter=1.001 * CLUTTER_INDEX, search_radius_um=1.0) != []
    assert linking_limit_warnings(200.0, 50.0, clutter=0.999 * CLUTTER_INDEX, search_radius_um=1.0) == []
    assert linking_limit_warnings(200.0, 50.0) == []  # not judged without an index
    # at the limit, one warning (the limit's), however crowded
    both = linking_limit_warnings(52.0, 50.0, clutter=2.4, search_radius_um=2.89)
    assert len(both) == 1 and "smallest diameter" in both[0]
    assert linking_limit_warnings(52.0, 50.0, noise_tracks=True, clutter=2.4, search_radius_um=2.89) == []
