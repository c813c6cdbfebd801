"""exonta.pipeline: the input checksum is computed beside the analysis and lands in the result."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from exonta import pipeline
from exonta.errors import ExontaInputError

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def test_summary_sha256_is_the_file_checksum():
    path = next(SAMPLE.glob("beads100.tif"))
    vid, cfg, _, sources = pipeline.prepare(path)
    res = pipeline.analyze(vid, cfg, acquisition_sources=sources)
    assert res.input["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert res.summary()["input"]["sha256"] == res.input["sha256"]
    assert "checksum_wait" in res.timings_s


def test_checksum_of_array_video_and_error_propagation():
    frames = np.random.default_rng(0).integers(0, 255, (6, 20, 30), dtype=np.uint8)
    from exonta.io.readers import ArrayVideo

    c = pipeline._Checksum(ArrayVideo(frames), 6, 20, 30)
    assert c.result() == pipeline._sha256_chunks(ArrayVideo(frames), 6, 20, 30)

    class Broken:
        path = Path("missing.tif")

        def sha256(self):
            raise ExontaInputError("cannot read missing.tif")

    with pytest.raises(ExontaInputError, match="missing.tif"):
        pipeline._Checksum(Broken(), 1, 1, 1).result()


def test_sample_search_radius_is_recorded_whether_or_not_it_is_used():
    """The linker's sample-derived search radius is provenance: summary.json's auto_parameters always says
    what the physics radius was, what the sample gave and which one the tracks were linked with."""
    path = next(SAMPLE.glob("beads100.tif"))
    vid, cfg, _, sources = pipeline.prepare(path)
    before = dict(cfg._auto)
    res = pipeline.analyze(vid, cfg, acquisition_sources=sources)
    assert cfg._auto == before  # the caller's configuration is not changed
    rec = res.summary()["auto_parameters"]["search_range_um"]
    assert rec["physics"] > 0 and rec["used"] > 0
    relinked = rec["sample"] is not None and rec["sample"] < pipeline.RELINK_FACTOR * rec["physics"]
    assert rec["used"] == pytest.approx(rec["sample"] if relinked else rec["physics"])
    assert res.config.link.search_range_um == (pytest.approx(rec["used"]) if relinked else None)


def test_uncalibrated_mixture_warns_that_peak_fractions_are_track_fractions():
    """The bundled 100 + 200 nm sample (1:1 by number; the 100 nm beads near the detection limit) gives
    far fewer 100 nm tracks than 200 nm ones: without a depth calibration the result says that its peak
    fractions are fractions of tracks. The single-population sample gets no such warning."""
    res = {}
    for name in ("bimodal", "beads100"):
        vid, cfg, _, sources = pipeline.prepare(SAMPLE / f"{name}.tif")
        res[name] = pipeline.analyze(vid, cfg, acquisition_sources=sources)
    peaks = res["bimodal"].distribution.stats["peaks"]
    assert len(peaks) == 2 and peaks[1]["median_mass"] > 4 * peaks[0]["median_mass"]
    msgs = [w for w in res["bimodal"].warnings if "fractions of tracks" in w]
    assert len(msgs) == 1 and f"{peaks[1]['diameter_nm']:.0f} nm peak" in msgs[0]
    assert "peaks" not in (res["bimodal"].summary()["concentration_per_ml"].get("size_nm") or {})
    assert not any("fractions of tracks" in w for w in res["beads100"].warnings)
    # NTA samples: most spots of the sized tracks are counted (0.73 / 0.86 of them), so no "dimmer than the
    # counting threshold" warning (micron beads with wide, defocused spots get one: tests/realistic)
    for r in res.values():
        c = r.summary()["concentration_per_ml"]
        assert c["mean_particles_per_frame"] > 0.5 * c["tracked_spots_per_frame"] > 0
        assert not any("fainter than the counting threshold" in w for w in r.warnings)


def test_brightness_term_auto_is_measured_on_a_first_pass_and_recorded():
    """LinkParams.brightness_log_sd = "auto": the spread is measured on the first linking pass and the tracks are
    linked with it; the value used and the one measured are recorded (summary.json auto_parameters, the saved
    configuration). The default (0) and a given value are used as they are, with nothing recorded."""
    from exonta.track import link_features
    from exonta.track.quality import brightness_log_sd

    path = next(SAMPLE.glob("beads100.tif"))
    vid, cfg, _, sources = pipeline.prepare(path, overrides={"detect": {"search_binning": 2},
                                                             "link": {"brightness_log_sd": "auto"}})
    res = pipeline.analyze(vid, cfg, acquisition_sources=sources)
    rec = res.summary()["auto_parameters"]["brightness_log_sd"]
    assert 0.05 < rec["measured"] < 2.0 and rec["used"] == rec["measured"]
    assert res.config.link.brightness_log_sd == rec["used"]
    assert res.summary()["parameters"]["link"]["brightness_log_sd"] == rec["used"]
    first = link_features(res.features, res.config.acquisition,
                          res.config.link.model_copy(update={"brightness_log_sd": 0.0,
                                                             "search_range_um": None}))
    assert rec["measured"] == pytest.approx(brightness_log_sd(first, res.config.sizing.min_track_length), abs=1e-4)
    second = link_features(res.features, res.config.acquisition, res.config.link)  # what the result holds
    assert second["particle"].nunique() == res.tracks["particle"].nunique() != first["particle"].nunique()

    for overrides, value in (({}, 0.0), ({"link": {"brightness_log_sd": 0.5}}, 0.5)):
        vid, cfg, _, sources = pipeline.prepare(path, overrides=overrides)
        r = pipeline.analyze(vid, cfg, acquisition_sources=sources)
        assert "brightness_log_sd" not in r.summary()["auto_parameters"]
        assert r.config.link.brightness_log_sd == value


def test_a_burned_in_clock_on_an_nta_video_is_excluded_with_its_area():
    """A time stamp written into the bundled 100 nm video: found (a warning, auto_parameters), no detection
    inside it, the concentration's analysed area less its box, and the sizes and concentration as without it."""
    import cv2
    import tifffile

    from exonta.io.readers import ArrayVideo

    frames = tifffile.imread(SAMPLE / "beads100.tif")
    stamped = frames.copy()
    for i in range(len(stamped)):
        cv2.putText(stamped[i], f"00:{i / 30:06.3f} #{i:04d}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1,
                    cv2.LINE_AA)
    res = {}
    for name, arr in (("plain", frames), ("stamped", stamped)):
        vid, cfg, warns, src = pipeline.prepare(ArrayVideo(arr), config_file=SAMPLE / "beads100.exonta.toml")
        res[name] = pipeline.analyze(vid, cfg, acquisition_sources=src, warnings=warns)
    plain, stamp = res["plain"].summary(), res["stamped"].summary()
    assert res["plain"].config.detect.exclude_regions == [] and plain["auto_parameters"]["overlays"]["boxes"] == []
    (x0, y0, x1, y1), = res["stamped"].config.detect.exclude_regions
    assert x0 <= 4 and y0 <= 4 and 90 <= x1 <= 130 and 14 <= y1 <= 30
    assert [m for m in res["stamped"].warnings if m.startswith("burned-in overlay")]
    f = res["stamped"].features
    assert not ((f["x"] < x1 - 0.5) & (f["y"] < y1 - 0.5)).any()
    edge = plain["concentration_per_ml"]["edge_px"]
    cut = (x1 - max(x0, edge)) * (y1 - max(y0, edge)) * 0.166 ** 2
    assert stamp["concentration_per_ml"]["analysed_area_um2"] == pytest.approx(
        plain["concentration_per_ml"]["analysed_area_um2"] - cut)
    assert stamp["size_nm"]["d50"] == pytest.approx(plain["size_nm"]["d50"], rel=0.02)
    assert stamp["concentration_per_ml"]["value"] == pytest.approx(plain["concentration_per_ml"]["value"], rel=0.06)


def test_a_yellow_clock_on_an_rgb_video_is_found_by_its_colour():
    """The bundled 100 nm video stored as RGB with a yellow time stamp (grey level 226 of 255, not the camera's
    white): found by its colour, no detection inside it, sizes as for the same RGB video without it."""
    import cv2
    import tifffile

    from exonta.io.readers import ArrayVideo

    frames = tifffile.imread(SAMPLE / "beads100.tif")
    rgb = np.ascontiguousarray(np.repeat(frames[..., None], 3, axis=-1))
    stamped = rgb.copy()
    for i in range(len(stamped)):
        cv2.putText(stamped[i], f"00:{i / 30:06.3f} #{i:04d}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 0), 1, cv2.LINE_AA)
    res = {}
    for name, arr in (("plain", rgb), ("stamped", stamped)):
        vid, cfg, warns, src = pipeline.prepare(ArrayVideo(arr), config_file=SAMPLE / "beads100.exonta.toml")
        res[name] = pipeline.analyze(vid, cfg, acquisition_sources=src, warnings=warns)
    assert res["plain"].config.detect.exclude_regions == []
    (x0, y0, x1, y1), = res["stamped"].config.detect.exclude_regions
    assert x0 <= 4 and y0 <= 4 and 90 <= x1 <= 130 and 14 <= y1 <= 30
    assert [m for m in res["stamped"].warnings if m.startswith("burned-in overlay") and "in colour" in m]
    assert "saturated colour" in res["stamped"].summary()["auto_parameters"]["overlays"]["method"]
    f = res["stamped"].features
    assert not ((f["x"] < x1 - 0.5) & (f["y"] < y1 - 0.5)).any()
    plain, stamp = res["plain"].summary(), res["stamped"].summary()
    assert stamp["size_nm"]["d50"] == pytest.approx(plain["size_nm"]["d50"], rel=0.02)


def test_repeated_frames_are_left_out_and_the_distinct_ones_analysed_at_their_own_rate():
    """The bundled 100 nm video written with every picture twice (a 30 frames/s camera in a 60 frames/s file)
    and with every fifth picture repeated (30 -> 36 frames/s): the repeats are found, the distinct frames
    are analysed at 30 frames/s, the sizes and the concentration are those of the original video, the tables
    keep the file's frame in ``video_frame``. Without the step the doubled video reads 31 % too large."""
    import tifffile

    from exonta.config import Acquisition, AnalysisConfig, DetectParams
    from exonta.io.readers import ArrayVideo

    frames = tifffile.imread(SAMPLE / "beads100.tif")
    n = len(frames)
    conversion = [j for i in range(n) for j in ((i, i) if i % 5 == 4 else (i,))]

    def run(arr, fps, **detect):
        acq = Acquisition(pixel_size_um=0.166, fps=fps, exposure_s=0.016, temperature_c=22.0)
        return pipeline.analyze(ArrayVideo(arr), AnalysisConfig(acquisition=acq, detect=DetectParams(**detect)))

    plain = run(frames, 30.0)
    assert "repeated_frames" not in plain.input and "video_frame" not in plain.tracks
    for arr, fps, n_rep in ((np.repeat(frames, 2, axis=0), 60.0, n), (frames[conversion], 36.0, n // 5)):
        res = run(arr, fps)
        rec = res.input["repeated_frames"]
        assert rec["n_repeated"] == n_rep and rec["n_frames_analysed"] == n and rec["regular"]
        assert rec["fps_analysed"] == pytest.approx(30.0, rel=0.002) and res.analysis_acquisition.fps == rec["fps_analysed"]
        assert res.config.acquisition.fps == fps  # the saved configuration keeps the file's rate
        assert res.input["n_frames"] == len(arr) and res.summary()["counts"]["n_frames"] == n
        assert [w for w in res.warnings if f"{n_rep} of {len(arr)} frames" in w and "repeat" in w]
        t = res.tracks
        assert t["frame"].max() < n and t["video_frame"].max() < len(arr)
        assert not np.isin(t["video_frame"], np.flatnonzero(np.r_[False, np.all(arr[1:] == arr[:-1], axis=(1, 2))])).any()
        s, p = res.summary(), plain.summary()
        assert s["size_nm"]["d50"] == pytest.approx(p["size_nm"]["d50"], rel=0.02)
        assert s["size_nm"]["mode"] == pytest.approx(p["size_nm"]["mode"], rel=0.03)
        assert s["concentration_per_ml"]["value"] == pytest.approx(p["concentration_per_ml"]["value"], rel=0.05)
    kept = run(np.repeat(frames, 2, axis=0), 60.0, drop_repeated_frames=False)
    assert "repeated_frames" not in kept.input
    assert kept.summary()["size_nm"]["d50"] > 1.15 * plain.summary()["size_nm"]["d50"]  # zero steps: +31 %


def test_h264_with_every_picture_twice_is_analysed_at_the_camera_rate(tmp_path):
    """The bundled 100 nm video as x264 CRF 23: once as recorded (30 frames/s) and once with every picture written
    twice (a 60 frames/s file). The doubled file's repeats are the encoder's refinements, not exact copies; they
    are found, and the doubled file sizes like the plain one, whether the user gives the camera's 30 frames/s
    (with its 20 ms exposure, longer than the file's frame interval) or the file's 60. The codec is noted. Before
    the gap rule the doubled file read D50 260 nm."""
    import tifffile

    from ffmpeg_writer import write_h264

    frames = tifffile.imread(SAMPLE / "beads100.tif")
    plain = write_h264(tmp_path / "plain.mp4", frames, fps=30.0, crf=23)
    doubled = write_h264(tmp_path / "doubled.mp4", np.repeat(frames, 2, axis=0), fps=60.0, crf=23)

    def run(path, **acq):
        vid, cfg, warns, src = pipeline.prepare(path, acquisition={"pixel_size_um": 0.166, "temperature_c": 22.0,
                                                                   **acq})
        return pipeline.analyze(vid, cfg, acquisition_sources=src, warnings=warns)

    ref = run(plain, fps=30.0, exposure_s=0.02)
    assert ref.input["codec"] == "h264" and "repeated_frames" not in ref.input
    assert [w for w in ref.warnings if "compressed with H.264" in w]
    d50 = ref.summary()["size_nm"]["d50"]
    assert 95.0 < d50 < 115.0
    for acq, camera in (({"fps": 30.0, "exposure_s": 0.02}, True), ({"fps": 60.0, "exposure_s": 0.016}, False)):
        res = run(doubled, **acq)
        rec = res.input["repeated_frames"]
        assert rec["n_repeated"] == len(frames) and rec["camera_rate_given"] is camera
        assert rec["fps_file"] == pytest.approx(60.0) and rec["fps_analysed"] == pytest.approx(30.0, rel=1e-3)
        assert res.config.acquisition.fps == acq["fps"]  # the saved configuration keeps what was given
        assert res.summary()["size_nm"]["d50"] == pytest.approx(d50, rel=0.03)


def test_a_given_rate_is_the_cameras_only_when_it_matches_the_distinct_pictures():
    """resolve_repeated_frames: a rate given by the user that differs from the container's and matches its
    distinct pictures is the camera's; one equal to the container's, or read from the file, is the file's."""
    from exonta.config import Acquisition

    n = 40
    changes = np.r_[np.nan, np.tile([0.0, 1.0], n)[:2 * n - 1]]  # frames 1, 3, ... repeat
    feats = pd.DataFrame({"frame": np.arange(2 * n), "x": 5.0, "y": 5.0})
    cases = [(30.0, "cli", 60.0, 30.0, True), (60.0, "cli", 60.0, 30.0, False), (60.0, "file", 60.0, 30.0, False),
             (30.0, "cli", None, 15.0, False), (25.0, "config", 60.0, 12.5, False)]
    for given, source, container, analysed, camera in cases:
        acq = Acquisition(pixel_size_um=0.1, fps=given, exposure_s=0.01)
        _, out, rec, warns = pipeline.resolve_repeated_frames(feats, changes, acq, {"fps": source}, container)
        assert out.fps == pytest.approx(analysed) and rec["camera_rate_given"] is camera, (given, source, container)
        assert rec["fps_file"] == pytest.approx(container if camera else given)
        assert ("camera's" in warns[0]) is camera


def test_repeated_pictures_with_a_fresh_time_stamp_are_found_outside_the_stamp():
    """Every picture of the bundled 100 nm video written twice, with a time stamp drawn anew on every written
    frame: the overlay step finds the stamp, and the repeats are found outside it."""
    import cv2
    import tifffile

    from exonta.io.readers import ArrayVideo

    frames = np.repeat(tifffile.imread(SAMPLE / "beads100.tif"), 2, axis=0)
    for i in range(len(frames)):
        cv2.putText(frames[i], f"00:{i / 60:06.3f} #{i:04d}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1,
                    cv2.LINE_AA)
    vid, cfg, warns, src = pipeline.prepare(ArrayVideo(frames), acquisition={
        "pixel_size_um": 0.166, "fps": 60.0, "exposure_s": 0.016, "temperature_c": 22.0})
    assert len(cfg.detect.exclude_regions) == 1
    from exonta.detect.repeats import find_repeated_frames, frame_changes

    whole = frame_changes(frames)
    assert np.all(whole[1::2] > 0)  # over the whole frame the stamp changes every repeat (a near repeat at best)
    assert find_repeated_frames(whole).n_repeated in (0, len(frames) // 2)
    res = pipeline.analyze(vid, cfg, acquisition_sources=src, warnings=warns)
    rec = res.input["repeated_frames"]
    assert rec["n_repeated"] == len(frames) // 2 and rec["fps_analysed"] == pytest.approx(30.0)
    assert 95.0 < res.summary()["size_nm"]["d50"] < 110.0


def test_the_readers_notes_reach_the_warnings(tmp_path):
    """A stack saved with its planes labelled as Z slices is analysed as a video, and the result says so."""
    import tifffile

    p = tmp_path / "zstack.tif"
    tifffile.imwrite(p, tifffile.imread(SAMPLE / "beads100.tif")[:40], imagej=True, metadata={"axes": "ZYX"})
    vid, cfg, warns, src = pipeline.prepare(p, acquisition={"pixel_size_um": 0.166, "fps": 30.0, "exposure_s": 0.02,
                                                            "temperature_c": 22.0})
    res = pipeline.analyze(vid, cfg, acquisition_sources=src, warnings=warns)
    assert [w for w in res.warnings if "labelled as Z slices" in w and "zstack.tif" in w]
    assert res.input["n_frames"] == 40


def test_a_given_frame_rate_that_contradicts_the_movie_is_warned_about():
    assert pipeline.frame_rate_warnings(30.0, "cli", 60.0) and "60 frames/s" in pipeline.frame_rate_warnings(
        30.0, "cli", 60.0)[0]
    assert pipeline.frame_rate_warnings(30.0, "config", 30.2) == []  # within 2 %
    assert pipeline.frame_rate_warnings(30.0, "file", 60.0) == []  # read from the movie itself
    assert pipeline.frame_rate_warnings(30.0, "cli", None) == []  # a TIFF stack states none
    assert pipeline.frame_rate_warnings(30.0, "cli", 60.0, {"camera_rate_given": True}) == []  # explained


def test_in_lossily_compressed_frames_a_rayleigh_artefact_peak_raises_the_threshold():
    """The automatic threshold takes a peak too bright for Rayleigh scattering (d⁶) as a reason to try a higher
    threshold only in lossily compressed frames, where compression junk is likely (the 1500-frame NTA benchmark
    as x264 CRF 18: D50 66 nm at 3.5 σ, 101 nm at 5 σ). In a TIFF or a lossless movie it stays a warning: the
    d² rule alone decides, as the simulated NTA validation expects."""
    from types import SimpleNamespace

    ghost = {"diameter_nm": 27.0, "number_fraction": 0.41, "median_mass": 50.0, "n_tracks": 3000.0}
    beads = {"diameter_nm": 101.0, "number_fraction": 0.59, "median_mass": 1299.0, "n_tracks": 4500.0}

    def result(lossy, peaks=(ghost, beads)):
        return SimpleNamespace(distribution=SimpleNamespace(stats={"peaks": list(peaks)}),
                               input={"lossy_compression": lossy} if lossy else {})

    for lossy in ("H.264", "Motion JPEG", "JPEG"):
        assert pipeline._implausible_fraction(result(lossy)) == pytest.approx(0.41)
    assert pipeline._implausible_fraction(result(None)) == 0.0
    # Motion JPEG's junk can outnumber the particles and leave them no peak: the tracks above are the reference
    lone = dict(ghost, number_fraction=1.0,
                population_above={"diameter_nm": 105.0, "number_fraction": 0.22, "median_mass": 1300.0,
                                   "n_tracks": 3800.0})
    assert pipeline._implausible_fraction(result("Motion JPEG", [lone])) == pytest.approx(1.0)
    assert pipeline._implausible_fraction(result(None, [lone])) == 0.0
    bright = dict(ghost, median_mass=1299.0 / 2.0)  # too bright even for d²: implausible in every file
    assert pipeline._implausible_fraction(SimpleNamespace(distribution=SimpleNamespace(stats={"peaks": [bright, beads]}),
                                                          input={})) == pytest.approx(0.41)


def test_frames_dropped_by_the_capture_program_are_analysed_at_their_times(tmp_path, monkeypatch):
    """The bundled 100 nm video written losslessly (FFV1, Matroska) with 25 % of its frames dropped at random and
    the others keeping their timestamps (a capture program that could not keep up). Without the file's frame
    rate or exposure given (the container states 30 frames/s): the frames go on the camera's 30 frames/s grid,
    the missing ones are gaps, and the size and the concentration are those of the complete video. Read as
    consecutive frames (timestamps ignored) the same file sizes ~20 % too small."""
    import tifffile

    from exonta.io import open_video
    from exonta.io.readers import OpenCVVideo
    from ffmpeg_writer import encode_dropping

    frames = tifffile.imread(SAMPLE / "beads100.tif")
    n = len(frames)
    drop = np.flatnonzero(np.random.default_rng(1).random(n) < 0.25)
    drop = drop[(drop > 0) & (drop < n - 1)]
    kept = np.setdiff1d(np.arange(n), drop)
    path = encode_dropping(tmp_path / "dropped.mkv", frames, drop, fps=30.0)
    tif = tmp_path / "whole.tif"
    tifffile.imwrite(tif, frames)

    def run(p, **acq):
        vid, cfg, warns, src = pipeline.prepare(p, acquisition={"pixel_size_um": 0.166, "temperature_c": 22.0, **acq})
        return pipeline.analyze(vid, cfg, acquisition_sources=src, warnings=warns)

    ref = run(tif, fps=30.0)  # a TIFF stack states no rate
    res = run(path)
    rec = res.input["dropped_frames"]
    assert rec["n_missing"] == drop.size and rec["missing"] == drop.tolist() and rec["n_frames_grid"] == n
    assert rec["fps_timestamps"] == pytest.approx(30.0, rel=2e-3)
    assert res.analysis_acquisition.fps == rec["fps_analysed"]
    assert res.input["n_frames"] == kept.size and res.summary()["counts"]["n_frames"] == kept.size
    assert [w for w in res.warnings if f"{drop.size} frames are missing" in w]
    t = res.tracks
    assert set(t["frame"]) <= set(kept.tolist()) and (t["frame"].to_numpy() == kept[t["video_frame"]]).all()
    d_ref, d = ref.summary()["size_nm"]["d50"], res.summary()["size_nm"]["d50"]
    assert d == pytest.approx(d_ref, rel=0.05)
    c_ref, c = (r.summary()["concentration_per_ml"]["value"] for r in (ref, res))
    assert c == pytest.approx(c_ref, rel=0.03)
    assert res.summary()["concentration_per_ml"]["n_frames"] == kept.size  # counts over the recorded frames

    monkeypatch.setattr(OpenCVVideo, "frame_times_s", lambda self: None)
    naive = pipeline.analyze(open_video(path), res.config.model_copy(update={"acquisition": ref.config.acquisition}))
    assert "dropped_frames" not in naive.input and naive.summary()["size_nm"]["d50"] < 0.9 * d_ref


def test_dropped_frames_are_counted_by_a_calibration_from_the_result():
    """frames_on_grid: the frame numbering and the recorded frames of a result with dropped frames."""
    from exonta.detect.repeats import frames_on_grid

    n, present = frames_on_grid({"n_frames": 7, "dropped_frames": {"n_frames_grid": 10, "missing": [2, 5, 6]}})
    assert n == 10 and present.tolist() == [0, 1, 3, 4, 7, 8, 9]
    assert frames_on_grid({"n_frames": 7}) == (7, None)
    assert frames_on_grid({"n_frames": 9, "repeated_frames": {"n_frames_analysed": 4}}) == (4, None)


def test_timestamps_irregular_or_spanning_a_pause_keep_the_frames_consecutive():
    """resolve_dropped_frames: regular times change nothing; times on no steady grid, or spanning far more frames
    than the movie holds (a paused recording), are analysed as consecutive frames with a warning; a given frame
    rate is kept (the grid in the file's time), one read from the file becomes the camera's."""
    from exonta.config import Acquisition

    feats = pd.DataFrame({"frame": np.arange(50), "x": 5.0, "y": 5.0})
    acq = Acquisition(pixel_size_um=0.1, fps=28.0, exposure_s=0.01)
    same, a, rec, warns, _ = pipeline.resolve_dropped_frames(feats, np.arange(50) / 30.0, acq, {"fps": "file"})
    assert same is feats and a is acq and rec is None and warns == []
    wander = np.cumsum(np.random.default_rng(0).uniform(0.02, 0.05, 50))
    same, a, rec, warns, _ = pipeline.resolve_dropped_frames(feats, wander, acq, {"fps": "file"})
    assert same is feats and rec is None and "not evenly spaced" in warns[0]
    same, a, rec, warns, _ = pipeline.resolve_dropped_frames(feats, wander, acq, {"fps": "file"}, warn_irregular=False)
    assert same is feats and rec is None and warns == []  # an OME-TIFF's jittery software times
    paused = np.r_[np.arange(25), 10**6 + np.arange(25)] / 30.0
    same, a, rec, warns, _ = pipeline.resolve_dropped_frames(feats, paused, acq, {"fps": "file"})
    assert same is feats and rec is None and "paused" in warns[0]
    gaps = np.r_[np.arange(25), 27 + np.arange(25)] / 30.0
    for source, fps in (("file", 30.0), ("cli", 28.0)):
        out, a, rec, warns, _ = pipeline.resolve_dropped_frames(feats, gaps, acq, {"fps": source})
        assert a.fps == pytest.approx(fps) and rec["n_missing"] == 2 and rec["missing"] == [25, 26]
        assert out["frame"].tolist() == list(range(25)) + list(range(27, 52))
        assert out["video_frame"].tolist() == list(range(50))
        assert ("taken as the camera's" in warns[0]) is (source == "cli")


def test_lossy_frames_get_the_rounding_noise_floor(tmp_path):
    """resolve_noise_floor (through prepare): 1/sqrt(12) for an H.264 movie, recorded among the automatic
    parameters; 0 for a TIFF stack; a value given in the configuration is kept."""
    import tifffile

    from ffmpeg_writer import write_h264

    frames = tifffile.imread(SAMPLE / "beads100.tif")[:20]
    acq = {"pixel_size_um": 0.166, "fps": 30.0, "temperature_c": 22.0}
    movie = write_h264(tmp_path / "m.mp4", frames)
    tif = tmp_path / "m.tif"
    tifffile.imwrite(tif, frames)
    _, cfg, _, _ = pipeline.prepare(movie, acquisition=acq)
    assert cfg.detect.noise_floor == pytest.approx(1 / np.sqrt(12), rel=1e-5)
    assert cfg._auto["noise_floor"]["compression"] == "H.264"
    _, cfg, _, _ = pipeline.prepare(tif, acquisition=acq)
    assert cfg.detect.noise_floor == 0.0 and "noise_floor" not in cfg._auto
    _, cfg, _, _ = pipeline.prepare(movie, acquisition=acq, overrides={"detect": {"noise_floor": 0.0}})
    assert cfg.detect.noise_floor == 0.0 and "noise_floor" not in cfg._auto


def test_an_ome_tiff_with_dropped_frames_is_analysed_at_its_plane_times(tmp_path):
    """An OME-TIFF (as Micro-Manager writes) of the bundled 100 nm video with 25 % of its frames missing, each
    plane's DeltaT the time it was taken: the frame rate comes from the times (no --fps), the frames go on the
    30 frames/s grid, and the size is that of the complete video."""
    import tifffile

    frames = tifffile.imread(SAMPLE / "beads100.tif")
    n = len(frames)
    drop = np.flatnonzero(np.random.default_rng(2).random(n) < 0.25)
    drop = drop[(drop > 0) & (drop < n - 1)]
    kept = np.setdiff1d(np.arange(n), drop)
    path = tmp_path / "dropped.ome.tif"
    tifffile.imwrite(path, frames[kept], metadata={"axes": "TYX", "PhysicalSizeX": 0.166, "PhysicalSizeY": 0.166,
                                                   "Plane": {"DeltaT": (kept / 30.0).tolist(),
                                                             "DeltaTUnit": ["s"] * kept.size}})
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, frames)

    def run(p, **acq):
        vid, cfg, warns, src = pipeline.prepare(p, acquisition={"temperature_c": 22.0, **acq})
        return pipeline.analyze(vid, cfg, acquisition_sources=src, warnings=warns)

    ref = run(whole, fps=30.0, pixel_size_um=0.166)
    res = run(path)
    rec = res.input["dropped_frames"]
    assert res.input["format"] == "ome-tiff" and res.acquisition_sources["fps"] == "file"
    assert rec["missing"] == drop.tolist() and res.analysis_acquisition.fps == pytest.approx(30.0, rel=1e-3)
    assert res.summary()["size_nm"]["d50"] == pytest.approx(ref.summary()["size_nm"]["d50"], rel=0.05)


def test_a_micro_manager_tiff_with_dropped_frames_is_analysed_at_its_elapsed_times(tmp_path):
    """The bundled 100 nm video as Micro-Manager writes it without OME (per-image ElapsedTime-ms, the software's
    arrival times, jittering by up to 3 ms at 30 frames/s; Exposure-ms; PixelSizeUm) with 25 % of its frames
    dropped: rate, pixel size and exposure come from the file, the frames go on the 30 frames/s grid, and the
    size is that of the complete video."""
    import tifffile

    from tests.mm_tiff import write_mm_tiff

    frames = tifffile.imread(SAMPLE / "beads100.tif")
    truth = tomllib.loads((SAMPLE / "beads100.exonta.toml").read_text())["acquisition"]
    n = len(frames)
    rng = np.random.default_rng(4)
    drop = np.flatnonzero(rng.random(n) < 0.25)
    drop = drop[(drop > 0) & (drop < n - 1)]
    kept = np.setdiff1d(np.arange(n), drop)
    t_ms = 5000.0 + kept * 1000.0 / 30.0 + rng.uniform(0.0, 3.0, kept.size)
    path = tmp_path / "dropped_MMStack.tif"
    write_mm_tiff(path, frames[kept], t_ms, exposure_ms=truth["exposure_s"] * 1000.0,
                  pixel_size_um=truth["pixel_size_um"])
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, frames)

    def run(p, **acq):
        vid, cfg, warns, src = pipeline.prepare(p, acquisition={"temperature_c": truth["temperature_c"], **acq})
        return pipeline.analyze(vid, cfg, acquisition_sources=src, warnings=warns)

    ref = run(whole, fps=30.0, pixel_size_um=truth["pixel_size_um"], exposure_s=truth["exposure_s"])
    res = run(path)
    rec = res.input["dropped_frames"]
    assert {res.acquisition_sources[k] for k in ("fps", "pixel_size_um", "exposure_s")} == {"file"}
    assert res.analysis_acquisition.exposure_s == pytest.approx(truth["exposure_s"])
    assert rec["missing"] == drop.tolist() and res.analysis_acquisition.fps == pytest.approx(30.0, rel=2e-3)
    assert res.summary()["size_nm"]["d50"] == pytest.approx(ref.summary()["size_nm"]["d50"], rel=0.05)
    c, c_ref = res.summary()["concentration_per_ml"]["value"], ref.summary()["concentration_per_ml"]["value"]
    assert c == pytest.approx(c_ref, rel=0.03)


def test_an_assumed_exposure_reports_what_it_does_to_the_sizes(tmp_path):
    """Without an exposure time, the D50 is also given for an exposure of a tenth of the frame interval: the same
    number an analysis told that exposure reports; the warning names both. With the exposure given, neither."""
    import shutil

    path = tmp_path / "b100.tif"
    shutil.copy(SAMPLE / "beads100.tif", path)  # without its sidecar: no exposure time
    acq = {"temperature_c": 22.0, "fps": 30.0, "pixel_size_um": 0.166}

    def run(**extra):
        vid, cfg, warns, src = pipeline.prepare(path, acquisition={**acq, **extra})
        return pipeline.analyze(vid, cfg, acquisition_sources=src, warnings=warns)

    res = run()
    s = res.summary()["size_nm"]
    sens = s["exposure_assumed"]
    assert sens["exposure_s"] == pytest.approx(1 / 30) and sens["short_exposure_s"] == pytest.approx(1 / 300)
    assert sens["d50_nm"] == s["d50"]
    short = run(exposure_s=1 / 300).summary()["size_nm"]
    assert sens["short_d50_nm"] == pytest.approx(short["d50"], rel=1e-6)
    assert "exposure_assumed" not in short
    # blur taken for localisation error: too short an exposure reads the particles slow (large)
    assert sens["short_d50_nm"] > 1.05 * sens["d50_nm"]
    text = [w for w in res.warnings if w.startswith("exposure time not given")]
    assert len(text) == 1 and f"{s['d50']:.1f} nm" in text[0] and f"{short['d50']:.1f} nm" in text[0]
    assert not [w for w in run(exposure_s=0.02).warnings if "exposure" in w]


def test_the_counting_threshold_does_not_follow_the_detection_threshold(monkeypatch):
    """The counting noise σ_F is measured at the reference threshold (3.5 σ) whatever the detection threshold:
    F/snr of detections near a 5 σ threshold is ~2× that near 3.5 σ, which made the count threshold 2.2× higher
    and the concentration 27 % lower. Now: the same threshold, and the concentration within 10 %; an automatic
    second pass takes the first pass's noise (no extra detection); a calibration made from a 5 σ analysis stores
    the reference noise."""
    from exonta.analysis.concentration import calibrate

    def run(**detect):
        vid, cfg, warns, src = pipeline.prepare(SAMPLE / "beads100.tif", overrides={"detect": detect} if detect else None)
        return pipeline.analyze(vid, cfg, acquisition_sources=src, warnings=warns)

    ref = run()
    high = run(threshold_snr=5.0)
    c0, c1 = ref.concentration.details, high.concentration.details
    assert c1["noise_level"] == pytest.approx(c0["noise_level"], rel=1e-9)  # 200 frames: the reference pass = all
    assert c1["count_threshold"] == pytest.approx(c0["count_threshold"], rel=1e-9)
    assert high.concentration.value_per_ml == pytest.approx(ref.concentration.value_per_ml, rel=0.10)
    # what is left is the detector missing spots the count needs: measured against the reference detections
    share = c1["counted_spots_found_fraction"]
    assert 0.85 < share < 1.0 and "counted_spots_found_fraction" not in c0
    assert share == pytest.approx(high.concentration.value_per_ml / ref.concentration.value_per_ml, abs=0.04)
    assert any(w.startswith("at the detection threshold of 5 noise sigmas") for w in high.warnings) == (share < 0.95)
    # the noise near the 5 sigma threshold itself is much higher (what made the old count wrong)
    from exonta.analysis.concentration import filtered_noise_level

    assert filtered_noise_level(high.features, 1.5, 5.0) > 1.5 * c0["noise_level"]
    cal = calibrate(high, 2.0e9)
    assert cal.noise_level == pytest.approx(c0["noise_level"], rel=1e-9)
    # automatic threshold: the second pass reuses the first pass's noise
    monkeypatch.setattr(pipeline, "_implausible_fraction",
                        lambda res: 1.0 if res.config.detect.threshold_snr == 3.5 else 0.0)

    def no_reference_pass(*a, **k):
        raise AssertionError("the first pass's detections should have been used")

    monkeypatch.setattr(pipeline, "reference_detections", no_reference_pass)
    auto = run()
    assert auto.config.detect.threshold_snr == 5.0
    assert auto.concentration.details["noise_level"] == pytest.approx(c0["noise_level"], rel=1e-9)


def test_a_buffer_blank_gives_no_size_statistics_and_no_flow_warning():
    """A video of camera noise only (a buffer blank): its few noise links give neither size statistics (fewer than
    MIN_TRACKS_FOR_STATISTICS tracks; before, two of them read "D50 20.4 nm, CI 20.4–20.4") nor a "strong
    drift" warning (their mean step is their own wandering: not significant), and the concentration is ~0."""
    from exonta.analysis.distribution import MIN_TRACKS_FOR_STATISTICS
    from exonta.config import Acquisition, AnalysisConfig
    from exonta.io.readers import ArrayVideo

    frames = np.random.default_rng(1).poisson(20, (200, 256, 256)).astype(np.uint8)
    acq = Acquisition(pixel_size_um=0.1, fps=30.0, exposure_s=0.02, temperature_c=22.0)
    res = pipeline.analyze(ArrayVideo(frames), AnalysisConfig(acquisition=acq))
    s = res.summary()
    assert 0 < s["size_nm"]["n_tracks_used"] < MIN_TRACKS_FOR_STATISTICS  # some noise links, too few to size
    assert all(np.isnan(s["size_nm"][k]) for k in ("mode", "d50", "d10", "d90")) and s["size_nm"]["peaks"] == []
    assert [w for w in res.warnings if "no size statistics" in w]
    assert not [w for w in res.warnings if "drift" in w or "flow" in w]
    v, se = np.hypot(*s["drift_um_per_s"]), np.hypot(*s["drift_se_um_per_s"]) / np.sqrt(2)
    assert v > 1.0 and v < 3.0 * se  # an estimate of a few µm/s, within its noise
    assert s["concentration_per_ml"]["value"] < 1e6


def test_a_blank_at_a_fine_pixel_size_has_noise_tracks_and_says_so():
    """Camera noise only, at 0.05 µm/px: the linker's radius for 50 nm particles is 3× wider in pixels than at
    0.166 µm/px and chains noise maxima into 52 tracks of 10 positions, which read "D50 43 nm". Their spots are the
    noise maxima just above the threshold (median 3.7 σ at 3.5): a warning says the sizes describe noise, and the
    concentration does not claim that fainter particles were missed. A real sample gives neither (the bundled ones:
    test_uncalibrated_mixture_warns_that_peak_fractions_are_track_fractions; 60 nm beads in
    tests/analysis/test_plausibility.py)."""
    from exonta.analysis.plausibility import NOISE_TRACK_SNR_RATIO, median_track_snr
    from exonta.config import Acquisition, AnalysisConfig
    from exonta.io.readers import ArrayVideo

    frames = np.random.default_rng(1).poisson(20, (300, 256, 256)).astype(np.uint8)
    acq = Acquisition(pixel_size_um=0.05, fps=25.0, exposure_s=0.02, temperature_c=22.0)
    res = pipeline.analyze(ArrayVideo(frames), AnalysisConfig(acquisition=acq))
    s = res.summary()
    assert s["counts"]["n_valid_tracks"] >= 20 and np.isfinite(s["size_nm"]["d50"])  # noise chains, "sized"
    assert median_track_snr(res.tracks, res.particles) < NOISE_TRACK_SNR_RATIO * 3.5
    noise = [w for w in res.warnings if "chains of noise maxima" in w]
    assert len(noise) == 1 and f"{s['size_nm']['d50']:.3g} nm" in noise[0]
    assert not any("fainter than the counting threshold" in w for w in res.warnings)


def test_analyze_of_a_path_without_configuration_reads_the_sidecar(tmp_path):
    """``analyze(path)`` resolves the configuration as ``prepare`` (and the CLI) do: the sidecar's exposure and
    temperature are used and named as such, not assumed (before, only the file's own metadata was read)."""
    import tifffile

    frames = np.random.default_rng(2).poisson(20, (30, 64, 64)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "v.tif", frames)
    (tmp_path / "v.exonta.toml").write_text(
        "[acquisition]\npixel_size_um = 0.12\nfps = 25.0\nexposure_s = 0.01\ntemperature_c = 30.0\n"
        "[detect]\nthreshold_snr = 4.5\n", encoding="utf-8")
    res = pipeline.analyze(tmp_path / "v.tif")
    acq = res.config.acquisition
    assert (acq.pixel_size_um, acq.fps, acq.exposure_s, acq.temperature_c) == (0.12, 25.0, 0.01, 30.0)
    assert {res.acquisition_sources[k] for k in ("pixel_size_um", "fps", "exposure_s", "temperature_c")} == {"sidecar"}
    assert res.config.detect.threshold_snr == 4.5
    assert not [w for w in res.warnings if "not given" in w]


def test_a_12_bit_camera_in_16_bit_words_clips_at_4095_or_65520_left_aligned():
    """Simulated 200 nm beads on an 8-bit camera (clipped spots), the same frames rewritten as 12-bit data in
    16-bit words (x·16 + 15: 255 -> 4095; and left-aligned, ×16 more: clipping at 65520): the clipping level is
    found and recorded, and the analysis gives
    the 8-bit one's tracks, sizes and concentration (before: the clipped tops went into the fits as real; here the
    concentration read 5.99e8 against 8.26e8 per mL)."""
    from exonta.config import AnalysisConfig
    from exonta.io.readers import ArrayVideo
    from exonta.simulate import preset_config, simulate

    sim = simulate(preset_config("beads200", width_px=320, height_px=240, n_frames=240, seed=3,
                                 concentration_per_ml=4e8))
    frames8 = np.asarray(sim.frames)
    assert frames8.dtype == np.uint8 and (frames8 == 255).sum() > 1000  # spots clip
    frames12 = frames8.astype(np.uint16) * 16 + 15
    acq = sim.acquisition
    res = {}
    for name, arr in (("8", frames8), ("12", frames12), ("12 left-aligned", frames12 * 16)):
        res[name] = pipeline.analyze(ArrayVideo(arr), AnalysisConfig(acquisition=acq))
    assert res["8"].config.detect.saturation_level is None
    assert res["12"].auto_parameters["saturation_level"]["used"] == 4095.0
    assert res["12 left-aligned"].config.detect.saturation_level == 65520.0
    a = res["8"].summary()
    for name in ("12", "12 left-aligned"):
        b = res[name].summary()
        assert b["counts"]["n_valid_tracks"] == pytest.approx(a["counts"]["n_valid_tracks"], abs=2)
        assert b["size_nm"]["d50"] == pytest.approx(a["size_nm"]["d50"], rel=0.01)
        assert b["concentration_per_ml"]["value"] == pytest.approx(a["concentration_per_ml"]["value"], rel=0.03)


def test_a_pixel_size_off_by_ten_is_named_by_the_spots_and_their_motion():
    """The bundled 100 nm sample (0.166 µm/px) with a slipped decimal: at 0.0166 µm/px it reads D50 ~10 µm
    from spots of σ 34 nm, which no light microscope makes; at 1.66 µm/px the linking radius (1.7 px) is
    shorter than the spots' motion between frames, no track reaches 10 positions, and the advice was to
    record a longer video. Each gets the warning that names the pixel size; the right one gets neither."""
    path = SAMPLE / "beads100.tif"

    def pixel_warnings(px):
        vid, cfg, _w, _s = pipeline.prepare(path, acquisition={"pixel_size_um": px})
        res = pipeline.analyze(vid, cfg)
        return res, [w for w in res.warnings if "pixel size is probably" in w]

    res, w = pixel_warnings(0.0166)
    assert res.distribution.stats["d50"] > 5000.0
    assert len(w) == 1 and "narrower than a light microscope" in w[0] and "too small" in w[0]
    res, w = pixel_warnings(1.66)
    assert int(res.particles["valid"].sum()) == 0
    assert len(w) == 1 and "the tracks break" in w[0] and "too large" in w[0]
    # the missing statistics point at that warning, not at "record a longer video"
    note = [m for m in res.warnings if "no size statistics" in m]
    assert len(note) == 1 and "linking radius" in note[0] and "longer video" not in note[0]
    res, w = pixel_warnings(0.166)
    assert 90.0 < res.distribution.stats["d50"] < 115.0 and w == []


def test_the_spot_width_is_judged_only_when_measured_or_given():
    """A failed measurement leaves the default spot width (1.5 px), which says nothing about the video: no warning
    from it at a fine pixel size; the same width measured, or given, is judged."""
    from exonta.config import Acquisition, AnalysisConfig

    acq = Acquisition(pixel_size_um=0.02, fps=30.0, exposure_s=0.01)
    cfg = AnalysisConfig(acquisition=acq)
    cfg._auto = {"psf_sigma_px": {"measured": None, "used": 1.5}}
    assert pipeline._spot_plausibility(acq, cfg, 100.0) == []
    cfg._auto = {"psf_sigma_px": {"measured": 1.5, "used": 1.5}}
    assert len(pipeline._spot_plausibility(acq, cfg, 100.0)) == 1
    given = AnalysisConfig(acquisition=acq, detect={"psf_sigma_px": 1.5})
    assert len(pipeline._spot_plausibility(acq, given, 100.0)) == 1
