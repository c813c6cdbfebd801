"""Pure display helpers of napari-exonta (no viewer)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_exonta._results import (
    detections_layer_data,
    diameter_colors,
    diameter_range,
    excluded_regions_layer_data,
    particle_info,
    particle_msd,
    particle_title,
    summary_texts,
    track_diameters,
    tracks_layer_data,
    video_frames,
)


def test_particle_msd_exact_on_a_known_track_with_a_gap():
    # x advances 1 px per frame, frame 3 missing (gap closed by memory)
    frames = np.array([0, 1, 2, 4, 5], dtype=np.int64)
    t = pd.DataFrame({"particle": 7, "frame": frames, "x": frames * 1.0, "y": 0.0,
                      "x_corrected": frames * 1.0, "y_corrected": np.zeros(5)})
    msd = particle_msd(t, 7, pixel_size_um=0.5, fps=10.0, max_lag=3)
    assert msd["lag_frames"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(msd["msd_um2"], [0.25, 1.0, 2.25], rtol=1e-12)  # (lag·0.5 µm)²
    assert msd["n_pairs"].tolist() == [3, 2, 2]  # pairs exactly `lag` frames apart only
    np.testing.assert_allclose(msd["lag_s"], [0.1, 0.2, 0.3])
    assert particle_msd(t, 99, 0.5, 10.0).empty


def test_diameter_colors_and_range():
    lo, hi = diameter_range([100.0, 200.0, np.nan, 150.0])
    assert 100.0 <= lo < hi <= 200.0
    c = diameter_colors([100.0, 200.0, np.nan], 100.0, 200.0)
    assert c.shape == (3, 4)
    assert not np.allclose(c[0], c[1])
    np.testing.assert_allclose(c[2], [0.55, 0.55, 0.55, 0.6], atol=1e-6)
    assert diameter_range([]) == (0.0, 1.0)


def test_layer_data_only_sized_tracks(fake_result_factory):
    res = fake_result_factory(None, n_frames=20)
    d = track_diameters(res.particles)
    assert d.to_dict() == {0: 100.0, 1: 200.0}
    data, feats = tracks_layer_data(res.tracks, res.particles)
    assert data.shape == (40, 4) and len(feats) == 40
    assert np.all(np.diff(data[data[:, 0] == 0, 1]) == 1)  # sorted by frame within a track
    np.testing.assert_allclose(feats.loc[feats.particle == 1, "diameter_nm"], 200.0)
    pts, pfeat, colors = detections_layer_data(res.tracks, res.particles)
    assert pts.shape == (44, 3) and colors.shape == (44, 4)
    assert np.isnan(pfeat.loc[pfeat.particle == 2, "diameter_nm"]).all()
    empty, ef = tracks_layer_data(res.tracks.iloc[:0], res.particles)
    assert empty.shape == (0, 4) and len(ef) == 0


def test_layers_are_drawn_on_the_video_frames_when_repeated_frames_were_left_out(fake_result_factory):
    """With repeated frames left out (every picture written twice) ``frame`` numbers the distinct frames and
    ``video_frame`` the file's: the layers use the file's, so the points sit on the spots of the video."""
    res = fake_result_factory(None, n_frames=20)
    t = res.tracks.copy()
    t.insert(t.columns.get_loc("frame") + 1, "video_frame", 2 * t["frame"])
    np.testing.assert_array_equal(video_frames(t), 2 * res.tracks["frame"].to_numpy())
    np.testing.assert_array_equal(video_frames(res.tracks), res.tracks["frame"].to_numpy())
    data, _ = tracks_layer_data(t, res.particles)
    plain, _ = tracks_layer_data(res.tracks, res.particles)
    np.testing.assert_array_equal(data[:, 1], 2 * plain[:, 1])
    np.testing.assert_array_equal(data[:, [0, 2, 3]], plain[:, [0, 2, 3]])
    pts, _, _ = detections_layer_data(t, res.particles)
    np.testing.assert_array_equal(pts[:, 0], 2 * t["frame"].to_numpy())


def test_summary_texts_and_particle_title(fake_result_factory):
    res = fake_result_factory(None)
    txt = summary_texts(res.summary())
    assert txt["mode"] == "140 nm  [130–150]"
    assert txt["concentration"] == "2.5e+08 /mL  [2e+08–3.1e+08]"
    assert txt["peaks"] == "140 nm (100%)"
    assert "2 sized of 3" in txt["tracks"]
    assert txt["warnings"] == "a test warning"
    info = particle_info(res.particles, 2)
    assert info["valid"] is False
    assert "not sized" in particle_title(info)
    assert particle_info(res.particles, 42) is None
    assert "d = 100 nm [85–120]" in particle_title(particle_info(res.particles, 0))


def test_summary_texts_tolerates_missing_values():
    txt = summary_texts({"size_nm": {"mode": None}, "concentration_per_ml": {"value": float("nan")}})
    assert txt["mode"] == "n/a"
    assert txt["concentration"].startswith("n/a")
    assert txt["peaks"] == "n/a"
    assert txt["limit"] == "n/a"
    limit = {"diameter_nm": 61.6, "edge_density_ratio": 0.1}
    assert summary_texts({"size_nm": {"detection_limit": limit}})["limit"] == "62 nm (smallest seen, same material)"
    refused = {"diameter_nm": None, "reason": "not estimated: 7 % of the detections ... are clipped"}
    assert summary_texts({"size_nm": {"detection_limit": refused}})["limit"] == refused["reason"]


@pytest.mark.parametrize("valid", [True, False])
def test_track_diameters_respects_valid_flag(valid):
    p = pd.DataFrame({"particle": [3], "diameter_nm": [120.0], "valid": [valid]})
    assert len(track_diameters(p)) == int(valid)


def test_excluded_regions_as_rectangles_on_pixel_edges():
    assert excluded_regions_layer_data([]) == [] and excluded_regions_layer_data(None) == []
    (r,) = excluded_regions_layer_data([(2, 5, 10, 8)])
    np.testing.assert_array_equal(r, [[4.5, 1.5], [4.5, 9.5], [7.5, 9.5], [7.5, 1.5]])  # [y, x] corners
