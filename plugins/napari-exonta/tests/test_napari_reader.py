"""Reader, lazy video adapter and sample data of napari-exonta."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_exonta._lazy import LazyVideoArray, display_contrast_limits
from napari_exonta._reader import napari_get_reader, read_videos


class _FakeVideo:
    def __init__(self, arr):
        self.arr = arr
        self.shape = arr.shape
        self.dtype = arr.dtype
        self.reads = 0

    def __getitem__(self, i):
        self.reads += 1
        return self.arr[i]


def test_lazy_array_indexing_matches_numpy():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, size=(9, 6, 7), dtype=np.uint8)
    lazy = LazyVideoArray(_FakeVideo(arr), cache_frames=3)
    assert lazy.shape == arr.shape and lazy.dtype == arr.dtype and lazy.ndim == 3 and lazy.size == arr.size
    for key in (3, -1, np.int64(2), (4, slice(1, 5), 2), slice(2, 7, 2), (Ellipsis, 3), (slice(None), 0, 0),
                np.array([1, 5]), (1, Ellipsis)):
        np.testing.assert_array_equal(lazy[key], arr[key], err_msg=str(key))
    with pytest.raises(IndexError):
        lazy[9]


def test_lazy_array_reads_each_frame_once_while_cached():
    arr = np.arange(5 * 4 * 4, dtype=np.uint16).reshape(5, 4, 4)
    fake = _FakeVideo(arr)
    lazy = LazyVideoArray(fake, cache_frames=2)
    for _ in range(3):
        lazy[1]
        lazy[1, 2:, :]
    assert fake.reads == 1
    lazy[2], lazy[3], lazy[1]  # 1 was evicted
    assert fake.reads == 4
    assert not lazy[0].flags.writeable
    lo, hi = display_contrast_limits(lazy)
    assert arr.min() <= lo < hi <= arr.max()


def test_get_reader_accepts_videos_and_image_folders(tmp_path):
    for name in ("a.tif", "b.TIFF", "c.avi", "d.mp4", "e.mov"):
        assert napari_get_reader(str(tmp_path / name)) is read_videos
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    folder = tmp_path / "frames"
    folder.mkdir()
    assert napari_get_reader(str(folder)) is None  # empty folder: not ours
    (folder / "f0001.png").write_bytes(b"")
    assert napari_get_reader(str(folder)) is read_videos
    assert napari_get_reader([str(tmp_path / "a.tif"), str(tmp_path / "c.avi")]) is read_videos


def test_reader_is_lazy_and_carries_acquisition(sim_video):
    import tifffile

    (data, kwargs, kind), = read_videos(str(sim_video))
    assert kind == "image"
    assert not isinstance(data, np.ndarray)
    assert isinstance(data, LazyVideoArray)
    assert data.shape == (60, 240, 320)
    assert data.n_reads <= 5  # only the frames sampled for the contrast limits
    np.testing.assert_array_equal(data[17], tifffile.imread(sim_video, key=17))
    meta = kwargs["metadata"]["exonta"]
    assert meta["path"] == str(sim_video)
    assert meta["acquisition_complete"] is True
    assert meta["acquisition"]["pixel_size_um"] == pytest.approx(0.166)
    assert meta["acquisition"]["exposure_s"] == pytest.approx(0.02)
    assert meta["fps"] == pytest.approx(30.0)
    assert meta["acquisition_sources"]["exposure_s"] == "sidecar"
    assert meta["video_metadata"]["pixel_size_um"] == pytest.approx(0.166)
    lo, hi = kwargs["contrast_limits"]
    assert lo < hi


def test_reader_does_not_fail_without_pixel_size(plain_tif):
    (data, kwargs, _), = read_videos(plain_tif)
    meta = kwargs["metadata"]["exonta"]
    assert data.shape == (12, 48, 64)
    assert meta["acquisition_complete"] is False
    assert "pixel_size_um" not in meta["acquisition"]
    assert any("pixel_size_um" in w for w in meta["warnings"])


def test_viewer_opens_video_with_plugin(make_napari_viewer, sim_video):
    viewer = make_napari_viewer()
    layers = viewer.open(str(sim_video), plugin="napari-exonta")
    assert len(layers) == 1
    layer = layers[0]
    assert not isinstance(layer.data, np.ndarray)
    assert layer.data.shape == (60, 240, 320)
    assert layer.metadata["exonta"]["acquisition"]["fps"] == pytest.approx(30.0)
    viewer.dims.set_current_step(0, 42)
    assert layer.data.n_reads < 20  # never the whole video


def test_sample_data_from_env_folder(make_napari_viewer, sim_dir, tmp_path, monkeypatch):
    from napari_exonta import _sample_data

    folder = tmp_path / "samples"
    folder.mkdir()
    shutil.copy(sim_dir / "beads100.tif", folder / "beads100.tif")
    shutil.copy(sim_dir / "beads100.exonta.toml", folder / "beads100.exonta.toml")
    monkeypatch.setenv("EXONTA_SAMPLE_DATA", str(folder))
    assert _sample_data.sample_folders()[0] == folder
    assert _sample_data.sample_path("beads100") == folder / "beads100.tif"
    viewer = make_napari_viewer()
    viewer.open_sample("napari-exonta", "beads100")
    layer = viewer.layers["beads100"]
    assert isinstance(layer.data, LazyVideoArray)
    assert layer.metadata["exonta"]["acquisition"]["pixel_size_um"] == pytest.approx(0.166)


def test_missing_sample_is_simulated(tmp_path, monkeypatch):
    from napari_exonta import _sample_data, _simulate_fallback

    monkeypatch.setenv("EXONTA_SAMPLE_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(_sample_data, "sample_folders", lambda: [tmp_path / "nowhere"])
    monkeypatch.setattr(_simulate_fallback, "SAMPLE_SIZE", (8, 64, 48))
    p = _sample_data.sample_path("ev")
    assert p.is_file() and p.parent == tmp_path / "cache" / "exonta" / "sample_data"
    assert (p.parent / "ev.exonta.toml").is_file()
    (data, kwargs, _), = _sample_data.ev()
    assert data.shape == (8, 48, 64)
    assert kwargs["metadata"]["exonta"]["acquisition_complete"] is True


def test_reader_opens_an_image_folder(tmp_path):
    import tifffile

    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 200, size=(5, 16, 24), dtype=np.uint8)
    for i, fr in enumerate(arr):
        tifffile.imwrite(folder / f"img_{i + 1}.tif", fr)
    reader = napari_get_reader(str(folder))
    assert reader is read_videos
    (data, kwargs, _), = reader(str(folder))
    assert data.shape == (5, 16, 24)
    np.testing.assert_array_equal(data[3], arr[3])
    assert kwargs["name"] == "frames"


def test_reader_opens_an_avi_lazily(tmp_path):
    from exonta.simulate import preset_config, write_simulation

    cfg = preset_config("beads100", n_frames=10, width_px=64, height_px=48, seed=2)
    paths = write_simulation(cfg, tmp_path, "clip", formats=("avi",))
    (data, kwargs, _), = read_videos(paths["avi"])
    assert isinstance(data, LazyVideoArray)
    assert data.shape == (10, 48, 64)
    assert data.n_reads <= 5
    frame = data[7]
    assert frame.shape == (48, 64) and frame.dtype == np.uint8
    meta = kwargs["metadata"]["exonta"]
    assert meta["fps"] == pytest.approx(30.0)
    assert meta["acquisition"]["pixel_size_um"] == pytest.approx(0.166)  # from the sidecar


def test_reader_measures_the_polarity(brightfield_tif, sim_video, tmp_path):
    (_, kwargs, _), = read_videos(str(brightfield_tif))
    assert kwargs["metadata"]["exonta"]["invert_measured"] is True  # dark beads on a light background
    (_, kwargs, _), = read_videos(str(sim_video))
    assert kwargs["metadata"]["exonta"]["invert_measured"] is False  # NTA: bright spots
    # a sidecar that sets invert decides: nothing is measured
    folder = tmp_path / "with_sidecar"
    folder.mkdir()
    video = folder / "bf.tif"
    shutil.copy(brightfield_tif, video)
    (folder / "bf.exonta.toml").write_text("[acquisition]\npixel_size_um = 0.1\nfps = 25\n\n[detect]\ninvert = false\n")
    (_, kwargs, _), = read_videos(str(video))
    meta = kwargs["metadata"]["exonta"]
    assert meta["acquisition_complete"] is True and meta["detect"]["invert"] is False
    assert meta["invert_measured"] is None


def test_manifest_patterns_are_the_formats_exonta_reads():
    """napari.yaml lists its filename patterns statically; they must be the suffixes exonta opens (TIFF and every
    movie extension of exonta.io.readers), so a .mkv or .webm recording is offered to this reader too."""
    from pathlib import Path

    import yaml

    import napari_exonta
    from exonta.io.readers import MOVIE_EXTENSIONS
    from napari_exonta._reader import VIDEO_SUFFIXES

    manifest = yaml.safe_load((Path(napari_exonta.__file__).parent / "napari.yaml").read_text())
    (reader,) = manifest["contributions"]["readers"]
    assert sorted(p.removeprefix("*") for p in reader["filename_patterns"]) == sorted(VIDEO_SUFFIXES)
    assert set(MOVIE_EXTENSIONS) <= set(VIDEO_SUFFIXES) and {".webm", ".mkv"} <= set(VIDEO_SUFFIXES)
