"""The exonta dock widget: preview, analysis (mocked and real), result layers, export."""

from __future__ import annotations

import importlib.util
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

from napari_exonta._reader import read_videos
from napari_exonta._widget import DETECTIONS_LAYER, EXCLUDED_LAYER, PREVIEW_LAYER, TRACKS_LAYER, ExontaWidget

SCREENSHOT_COPY = "/tmp/napari_exonta_screenshot.png"


def _viewer_with_video(make_napari_viewer, path):
    viewer = make_napari_viewer(show=True)
    data, kwargs, _ = read_videos(str(path))[0]
    viewer.add_image(data, **kwargs)
    widget = ExontaWidget(viewer)
    viewer.window.add_dock_widget(widget, name="exonta", area="right")
    return viewer, widget


def _wait_idle(qtbot, widget, timeout_ms=120_000):
    qtbot.waitUntil(lambda: not widget.is_running(), timeout=timeout_ms)


def test_fields_prefilled_from_sidecar(make_napari_viewer, sim_video):
    viewer, w = _viewer_with_video(make_napari_viewer, sim_video)
    assert w.layer_combo.currentText() == "beads100"
    assert w.acq_spins["pixel_size_um"].value() == pytest.approx(0.166)
    assert w.acq_spins["fps"].value() == pytest.approx(30.0)
    assert w.acq_spins["exposure_s"].value() == pytest.approx(0.02)
    assert w.acquisition_values(changed_only=True) == {}
    w.acq_spins["temperature_c"].setValue(25.0)
    assert w.acquisition_values(changed_only=True) == {"temperature_c": 25.0}
    video, cfg, _, sources = w.prepare()
    assert cfg.acquisition.temperature_c == 25.0 and sources["temperature_c"] == "cli"
    assert sources["pixel_size_um"] == "sidecar"
    assert cfg.detect.threshold_snr == pytest.approx(w.threshold_spin.value())


def test_preview_follows_threshold_and_frame(make_napari_viewer, sim_video, qtbot):
    viewer, w = _viewer_with_video(make_napari_viewer, sim_video)
    w.threshold_spin.setValue(8.0)
    n_high = w.update_preview()
    layer = viewer.layers[PREVIEW_LAYER]
    assert n_high is not None and len(layer.data) == n_high
    assert np.all(layer.data[:, 0] == viewer.dims.current_step[0])
    # lowering the threshold (debounced through the QTimer) gives more preview points
    w.threshold_spin.setValue(3.0)
    qtbot.waitUntil(lambda: len(viewer.layers[PREVIEW_LAYER].data) > n_high, timeout=5000)
    # moving the frame slider re-detects on that frame
    viewer.dims.set_current_step(0, 25)
    qtbot.waitUntil(lambda: len(layer.data) and np.all(layer.data[:, 0] == 25), timeout=5000)
    # the background is estimated once, not per update
    bg = w._bg
    w.psf_spin.setValue(1.8)
    qtbot.wait(w.preview_debounce_ms * 3)
    assert w._bg is bg
    t0 = time.perf_counter()
    w.update_preview()
    assert time.perf_counter() - t0 < 0.5  # feels immediate on a 320×240 frame
    w.preview_check.setChecked(False)
    qtbot.waitUntil(lambda: not viewer.layers[PREVIEW_LAYER].visible, timeout=5000)


def test_preview_leaves_out_a_burned_in_clock(make_napari_viewer, sim_video, tmp_path):
    """A time stamp written into the frames: the live preview finds no spot in it (the analysis would drop
    them), shows its box in red, and the box is the one the analysis will use."""
    import shutil

    import cv2
    import tifffile

    from exonta.detect import locate

    frames = tifffile.imread(sim_video)
    top = int(np.iinfo(frames.dtype).max)
    for i in range(len(frames)):
        cv2.putText(frames[i], f"00:{i / 30:06.3f} #{i:04d}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, top, 1,
                    cv2.LINE_AA)
    path = tmp_path / "stamped.tif"
    tifffile.imwrite(path, frames)
    shutil.copy(sim_video.with_name("beads100.exonta.toml"), tmp_path / "stamped.exonta.toml")
    viewer, w = _viewer_with_video(make_napari_viewer, path)
    w.threshold_spin.setValue(4.0)
    w.psf_spin.setValue(1.2)  # boxes widened by ceil(3 sigma) + 2 = 6 px
    n = w.update_preview()
    assert n is not None and n > 0
    excluded = viewer.layers[EXCLUDED_LAYER]
    assert len(excluded.data) == 1
    (y0, x0), (y1, x1) = excluded.data[0].min(axis=0) + 0.5, excluded.data[0].max(axis=0) + 0.5
    assert x0 <= 4 and y0 <= 4 and 90 <= x1 <= 130 and 14 <= y1 <= 30
    pts = viewer.layers[PREVIEW_LAYER].data
    assert len(pts) == n and not ((pts[:, 2] < x1 - 0.5) & (pts[:, 1] < y1 - 0.5)).any()
    assert "1 region left out" in w.preview_label.text()
    # without the exclusion the same detection finds spots on the text (the check above can fail)
    frame_idx = int(pts[0, 0])
    raw = locate(frames[frame_idx], w.detect_params(), background=w._bg)
    assert ((raw["x"] < x1 - 0.5) & (raw["y"] < y1 - 0.5)).any()
    # the analysis leaves out the same box
    _, cfg, _, _ = w.prepare()
    assert [tuple(r) for r in cfg.detect.exclude_regions] == [(int(x0), int(y0), int(x1), int(y1))]
    # the counts are read once per video; a new spot width only re-widens the box
    counts = w._ov_counts
    w.psf_spin.setValue(2.0)  # 8 px
    w.update_preview()
    assert w._ov_counts is counts
    y1b, x1b = viewer.layers[EXCLUDED_LAYER].data[0].max(axis=0) + 0.5
    assert (y1b, x1b) == (y1 + 2, x1 + 2)


def test_analysis_with_mocked_pipeline(make_napari_viewer, sim_video, qtbot, tmp_path, monkeypatch,
                                       fake_result_factory, save_screenshot):
    import exonta.pipeline

    calls = {}

    def fake_analyze(video, config, progress=None, **kw):
        calls["config"], calls["kw"] = config, kw
        for done in (0, 250, 500, 1000):
            assert progress(done, 1000, "detect") is not False
        res = fake_result_factory(sim_video, n_frames=30)
        res.config.detect.exclude_regions = [(0, 0, 120, 20)]  # a burned-in time stamp
        return res

    monkeypatch.setattr(exonta.pipeline, "analyze", fake_analyze)
    viewer, w = _viewer_with_video(make_napari_viewer, sim_video)
    w.threshold_spin.setValue(6.5)
    assert w.run_analysis() is not None
    _wait_idle(qtbot, w)
    assert calls["config"].detect.threshold_snr == pytest.approx(6.5)
    assert calls["kw"]["acquisition_sources"]["pixel_size_um"] == "sidecar"
    assert w.progress_bar.value() == 1000
    assert w.result is not None

    tracks = viewer.layers[TRACKS_LAYER]
    assert tracks.data.shape == (60, 4)  # the two sized tracks, 30 frames each; the unsized one is left out
    assert set(np.unique(tracks.data[:, 0])) == {0, 1}
    assert tracks.color_by == "diameter_nm"
    np.testing.assert_allclose(np.unique(tracks.features["diameter_nm"]), [100.0, 200.0])
    det = viewer.layers[DETECTIONS_LAYER]
    assert det.data.shape == (64, 3)
    excluded = viewer.layers[EXCLUDED_LAYER]  # the regions the analysis left out, over every frame
    assert excluded.shape_type == ["rectangle"] and len(excluded.data) == 1
    np.testing.assert_allclose(excluded.data[0][:, -2:].min(axis=0), [-0.5, -0.5])
    np.testing.assert_allclose(excluded.data[0][:, -2:].max(axis=0), [19.5, 119.5])
    np.testing.assert_array_equal(det.features["particle"].to_numpy()[-4:], [2, 2, 2, 2])
    colors = det.face_color
    assert not np.allclose(colors[0], colors[30])  # 100 nm vs 200 nm
    np.testing.assert_allclose(colors[-1][:3], [0.55, 0.55, 0.55], atol=0.01)  # unsized: grey
    assert "140" in w.summary_labels["mode"].text() and "130" in w.summary_labels["mode"].text()
    assert "145" in w.summary_labels["d50"].text()
    assert "2.5e+08" in w.summary_labels["concentration"].text()
    assert "3.1e+08" in w.summary_labels["concentration"].text()

    # particle selection: spin box (first sized particle is shown) and click position
    assert w.particle_spin.value() == 0
    info = w.show_particle(1)
    assert info["diameter_nm"] == pytest.approx(200.0)
    assert "particle 1" in w.particle_plot.ax.get_title()
    t = w.result.tracks
    row = t[(t.particle == 1) & (t.frame == 12)].iloc[0]
    assert w.select_particle_near(12, row.y + 1.0, row.x - 1.0) == 1
    assert w.particle_spin.value() == 1
    assert w.select_particle_near(12, 5.0, 5.0) is None
    row0 = t[(t.particle == 0) & (t.frame == 7)].iloc[0]
    w._on_viewer_click(viewer, SimpleNamespace(type="mouse_press", position=(7.0, row0.y, row0.x)))
    assert w.particle_spin.value() == 0
    # repeated frames left out (every picture written twice): a click is in the video's frames, the MSD's lags
    # in the distinct frames' rate (exonta.detect.repeats)
    fps = w.result.config.acquisition.fps
    t2 = t.copy()
    t2.insert(t2.columns.get_loc("frame") + 1, "video_frame", 2 * t2["frame"])
    w.result.tracks = t2
    w.result.analysis_acquisition = w.result.config.acquisition.model_copy(update={"fps": fps / 2})
    assert w.select_particle_near(24, row.y + 1.0, row.x - 1.0) == 1
    assert w.select_particle_near(13, row.y + 1.0, row.x - 1.0) is None  # an odd frame: no analysed frame
    w.show_particle(1)
    lags = w.particle_plot.ax.lines[0].get_xdata()
    np.testing.assert_allclose(lags[:2], [2.0 / fps, 4.0 / fps])
    assert w.size_plot.ax.get_xscale() == "log"

    out = w.export(tmp_path / "export")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["size_nm"]["mode"] == pytest.approx(140.0)
    assert (out / "particles.csv").is_file() and (out / "tracks.parquet").is_file()
    save_screenshot(viewer, tmp_path / "mock.png")


def test_cancel_stops_the_worker(make_napari_viewer, sim_video, qtbot, monkeypatch):
    import exonta.pipeline
    from exonta.errors import ExontaCancelled

    started = []

    def slow_analyze(video, config, progress=None, **kw):
        for i in range(2000):
            started.append(i)
            if progress(i % 1000, 1000, "detect") is False:
                raise ExontaCancelled("analysis cancelled")
            time.sleep(0.005)
        raise AssertionError("was not cancelled")

    monkeypatch.setattr(exonta.pipeline, "analyze", slow_analyze)
    viewer, w = _viewer_with_video(make_napari_viewer, sim_video)
    w.run_analysis()
    assert w.is_running() and w.cancel_button.isEnabled() and not w.analyze_button.isEnabled()
    qtbot.waitUntil(lambda: len(started) > 5, timeout=10_000)
    qtbot.wait(20)  # the UI stays responsive while the worker runs
    w.cancel()
    _wait_idle(qtbot, w, 10_000)
    assert "cancelled" in w.status_label.text()
    assert w.result is None and w.analyze_button.isEnabled()
    assert len(started) < 2000


def test_calibration_is_passed_to_analyze(make_napari_viewer, sim_video, qtbot, tmp_path, monkeypatch,
                                           fake_result_factory):
    import exonta.analysis.concentration as conc
    import exonta.pipeline

    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    viewer, w = _viewer_with_video(make_napari_viewer, sim_video)
    assert w.load_calibration(bad) is None
    assert "calibration" in w.status_label.text() and w.calibration is None
    sentinel = object()
    monkeypatch.setattr(conc, "load_calibration", lambda path: sentinel)
    assert w.load_calibration(tmp_path / "cal.json") is sentinel
    assert "cal.json" in w.calibration_label.text()
    seen = {}

    def fake_analyze(video, config, progress=None, calibration=None, **kw):
        seen["calibration"] = calibration
        return fake_result_factory(sim_video)

    monkeypatch.setattr(exonta.pipeline, "analyze", fake_analyze)
    w.run_analysis()
    _wait_idle(qtbot, w)
    assert seen["calibration"] is sentinel


def test_dark_particles_ticked_for_a_bright_field_video(make_napari_viewer, brightfield_tif, sim_video):
    viewer, w = _viewer_with_video(make_napari_viewer, brightfield_tif)
    assert w.invert_check.isChecked()
    assert w.detect_params().invert is True
    data, kwargs, _ = read_videos(str(sim_video))[0]
    viewer.add_image(data, **kwargs)  # an NTA video: bright spots, the box unticked
    w.layer_combo.setCurrentText(kwargs["name"])
    assert not w.invert_check.isChecked()


def test_missing_pixel_size_is_reported(make_napari_viewer, plain_tif):
    viewer, w = _viewer_with_video(make_napari_viewer, plain_tif)
    assert w.acq_spins["pixel_size_um"].value() == 0.0  # shown as "unknown"
    assert w.run_analysis() is None
    assert "pixel_size_um" in w.status_label.text()


_PIPELINE_READY = all(importlib.util.find_spec(m) is not None for m in
                      ("exonta.track", "exonta.analysis.diffusion", "exonta.analysis.distribution",
                       "exonta.analysis.concentration"))


@pytest.mark.skipif(not _PIPELINE_READY, reason="the exonta pipeline modules are not all present yet")
def test_end_to_end_real_pipeline(make_napari_viewer, sim_video, qtbot, tmp_path, save_screenshot):
    viewer, w = _viewer_with_video(make_napari_viewer, sim_video)
    viewer.window.resize(1280, 1000)
    viewer.dims.set_current_step(0, 30)
    w.update_preview()
    stages = []
    w._signals.progress.connect(lambda value, stage: stages.append((value, stage)))
    assert w.run_analysis() is not None
    _wait_idle(qtbot, w)
    assert w.result is not None, w.status_label.text()
    res = w.result
    assert len(stages) > 5 and {"detect", "link"} <= {s for _, s in stages}
    assert [v for v, _ in stages] == sorted(v for v, _ in stages)  # the bar only moves forward
    assert w.progress_bar.value() == 1000
    assert res.input["n_frames"] == 60
    det = viewer.layers[DETECTIONS_LAYER]
    assert len(det.data) == len(res.tracks)
    n_sized = int(res.particles["valid"].sum())
    if n_sized:
        tracks = viewer.layers[TRACKS_LAYER]
        assert len(np.unique(tracks.data[:, 0])) == n_sized
        # 100 nm beads: the median sized track is within a factor 2 of the truth (short video)
        med = float(np.median(tracks.features["diameter_nm"]))
        assert 50.0 < med < 200.0
        longest = res.particles.loc[res.particles["valid"], "n_positions"].max()
        shown = res.particles.set_index("particle").loc[w.particle_spin.value()]
        assert shown["n_positions"] == longest
        assert f"particle {w.particle_spin.value()}:" in w.particle_plot.ax.get_title()
    assert w.summary_labels["mode"].text() != "–"
    assert w.summary_labels["limit"].text() not in ("–", "")  # the limit, or why it was not estimated
    out = w.export(tmp_path / "results")
    assert (out / "summary.json").is_file() and (out / "size_distribution.png").is_file()
    viewer.dims.set_current_step(0, 30)
    qtbot.wait(200)
    save_screenshot(viewer, tmp_path / "napari_exonta_screenshot.png", copy_to=SCREENSHOT_COPY)


def test_widget_is_contributed_through_npe2(make_napari_viewer, sim_video):
    viewer = make_napari_viewer()
    viewer.open(str(sim_video), plugin="napari-exonta")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-exonta", "NTA analysis")
    assert isinstance(widget, ExontaWidget)
    assert widget.layer_combo.currentText() == "beads100"
