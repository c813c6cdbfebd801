"""Tests of exonta.io.readers: round trips, metadata, conversions, chunking and bad inputs."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tracemalloc
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from exonta.errors import ExontaInputError
from exonta.io import ArrayVideo, Video, frames_from_array, open_video
from exonta.io.readers import ImageFolderVideo, OpenCVVideo, TiffVideo, natural_sort_key


# ---------------------------------------------------------------------------- helpers
def _frames(n=6, h=24, w=32, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random((n, h, w)).astype(dtype) * 1000
    hi = min(np.iinfo(dtype).max, 60000)
    return rng.integers(0, hi, (n, h, w), endpoint=True).astype(dtype)


def _smooth_frames(n=8, h=48, w=64, seed=0):
    """Smooth 8-bit frames (compress well with lossy codecs)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w), np.uint8)
    for i in range(n):
        cx, cy = rng.uniform(10, w - 10), rng.uniform(10, h - 10)
        out[i] = (40 + 150 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 6.0 ** 2))).astype(np.uint8)
    return out


def _write_avi(path, frames, fourcc="FFV1", fps=25.0):
    n, h, w = frames.shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h), isColor=False)
    if not writer.isOpened():
        pytest.skip(f"OpenCV cannot write {fourcc} here")
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def _write_png(path, img):
    ok, buf = cv2.imencode(".png", img)
    assert ok
    Path(path).write_bytes(buf.tobytes())


def _write_jpg(path, img):
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 98])
    assert ok
    Path(path).write_bytes(buf.tobytes())


def _tw(path, data, **kwargs):
    """tifffile.imwrite, gray unless told otherwise (a (3, h, w) stack is not RGB)."""
    if "photometric" not in kwargs and not kwargs.get("imagej"):
        kwargs["photometric"] = "minisblack"
    tifffile.imwrite(path, data, **kwargs)


def _all(video: Video) -> np.ndarray:
    return np.concatenate([c for _, c in video.iter_chunks(5)])


def _expected_gray(rgb):
    w = np.array([0.299, 0.587, 0.114])
    return rgb[..., :3].astype(np.float64) @ w


# ---------------------------------------------------------------------------- TIFF
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_roundtrip_memmapped(tmp_path, dtype):
    a = _frames(dtype=dtype)
    p = tmp_path / "stack.tif"
    _tw(p, a)
    with open_video(p) as v:
        assert isinstance(v, TiffVideo)
        assert v.memmapped
        assert v.format == "tiff"
        assert (v.n_frames, v.height, v.width) == a.shape
        assert v.frame_shape == a.shape[1:]
        assert v.dtype == np.dtype(dtype)
        assert v.fps is None and v.metadata == {}
        np.testing.assert_array_equal(_all(v), a)
        np.testing.assert_array_equal(v.read(3), a[3])
        np.testing.assert_array_equal(v.read_range(1, 4), a[1:4])


def test_tiff_compressed_is_read_page_by_page(tmp_path):
    a = _frames(n=7)
    p = tmp_path / "zlib.tif"
    _tw(p, a, compression="zlib")
    with open_video(p) as v:
        assert not v.memmapped
        np.testing.assert_array_equal(_all(v), a)
        np.testing.assert_array_equal(v.read(6), a[6])
        np.testing.assert_array_equal(v[2:5], a[2:5])


def test_tiff_big_endian(tmp_path):
    a = _frames(n=3)
    p = tmp_path / "be.tif"
    _tw(p, a, byteorder=">")
    with open_video(p) as v:
        out = v[:]
        assert out.dtype == np.dtype("=u2")
        np.testing.assert_array_equal(out, a)


def test_tiff_single_frame(tmp_path):
    a = _frames(n=1)[0]
    p = tmp_path / "one.tif"
    _tw(p, a)
    with open_video(p) as v:
        assert v.n_frames == 1 and len(v) == 1
        np.testing.assert_array_equal(v.read(0), a)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("planar", [False, True])
def test_tiff_rgb_to_gray_keeps_dtype(tmp_path, dtype, planar):
    rng = np.random.default_rng(3)
    hi = np.iinfo(dtype).max
    rgb = rng.integers(0, hi, (4, 16, 20, 3), endpoint=True).astype(dtype)
    gray_in = rng.integers(0, hi, (4, 16, 20), endpoint=True).astype(dtype)
    rgb[0] = gray_in[0][..., None]  # equal channels → exactly the gray value
    p = tmp_path / "rgb.tif"
    if planar:
        _tw(p, np.ascontiguousarray(np.moveaxis(rgb, -1, 1)), photometric="rgb",
                         planarconfig="separate")
    else:
        _tw(p, rgb, photometric="rgb")
    with open_video(p) as v:
        assert v.shape == (4, 16, 20)
        assert v.dtype == np.dtype(dtype)
        out = v[:]
    np.testing.assert_array_equal(out[0], gray_in[0])
    np.testing.assert_allclose(out.astype(float), _expected_gray(rgb), atol=1.0)


def test_tiff_rgba_to_gray(tmp_path):
    rng = np.random.default_rng(4)
    rgba = rng.integers(0, 255, (3, 12, 14, 4), endpoint=True).astype(np.uint8)
    p = tmp_path / "rgba.tif"
    _tw(p, rgba, photometric="rgb", extrasamples=["unassalpha"])
    with open_video(p) as v:
        np.testing.assert_allclose(v[:].astype(float), _expected_gray(rgba), atol=1.0)


def test_ome_tiff_metadata(tmp_path):
    a = _frames(n=5)
    p = tmp_path / "acq.ome.tif"
    _tw(p, a, ome=True, metadata={
        "axes": "TYX", "PhysicalSizeX": 65.0, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 65.0,
        "TimeIncrement": 33.3, "TimeIncrementUnit": "ms",
        "Plane": {"ExposureTime": [0.01] * 5, "ExposureTimeUnit": ["s"] * 5},
    })
    with open_video(p) as v:
        assert v.format == "ome-tiff"
        assert v.metadata["pixel_size_um"] == pytest.approx(0.065, rel=1e-12)
        assert v.metadata["fps"] == pytest.approx(1 / 0.0333, rel=1e-12)
        assert v.fps == pytest.approx(1 / 0.0333, rel=1e-12)
        assert v.metadata["exposure_s"] == pytest.approx(0.01, rel=1e-12)
        np.testing.assert_array_equal(v[:], a)


def test_ome_tiff_default_units_and_only_present_values(tmp_path):
    p = tmp_path / "acq2.ome.tif"
    _tw(p, _frames(n=2), ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.117})
    with open_video(p) as v:
        assert v.metadata == {"pixel_size_um": pytest.approx(0.117, rel=1e-12)}
        assert v.fps is None


def test_ome_tiff_mm_units(tmp_path):
    p = tmp_path / "acq3.ome.tif"
    _tw(p, _frames(n=2), ome=True,
                     metadata={"axes": "TYX", "PhysicalSizeX": 0.0002, "PhysicalSizeXUnit": "mm",
                               "TimeIncrement": 0.01, "TimeIncrementUnit": "s"})
    with open_video(p) as v:
        assert v.metadata["pixel_size_um"] == pytest.approx(0.2, rel=1e-12)
        assert v.metadata["fps"] == pytest.approx(100.0, rel=1e-12)


def test_ome_tiff_fps_from_plane_timestamps(tmp_path):
    p = tmp_path / "dt.ome.tif"
    _tw(p, _frames(n=4, dtype=np.uint8), ome=True,
        metadata={"axes": "TYX", "Plane": {"DeltaT": [0, 20, 40, 60], "DeltaTUnit": ["ms"] * 4}})
    with open_video(p) as v:
        assert v.metadata == {"fps": pytest.approx(50.0, rel=1e-9)}


def test_imagej_metadata(tmp_path):
    a = _frames(n=4)
    p = tmp_path / "ij.tif"
    _tw(p, a, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "TYX", "unit": "um", "finterval": 0.02})
    with open_video(p) as v:
        assert v.format == "imagej-tiff"
        assert v.metadata["pixel_size_um"] == pytest.approx(0.25, rel=1e-6)
        assert v.metadata["fps"] == pytest.approx(50.0, rel=1e-12)
        np.testing.assert_array_equal(v[:], a)


def test_tiff_resolution_print_dpi_ignored_physical_used(tmp_path):
    p1, p2 = tmp_path / "dpi.tif", tmp_path / "cm.tif"
    _tw(p1, _frames(n=2, dtype=np.uint8), resolution=(72, 72))
    _tw(p2, _frames(n=2, dtype=np.uint8), resolution=(1e4 / 0.2, 1e4 / 0.2),
                     resolutionunit="CENTIMETER")
    with open_video(p1) as v1, open_video(p2) as v2:
        assert "pixel_size_um" not in v1.metadata
        assert v2.metadata["pixel_size_um"] == pytest.approx(0.2, rel=1e-6)


def test_tiff_float32_kept_and_nan_rejected(tmp_path):
    a = _frames(n=4, dtype=np.float32)
    p = tmp_path / "f.tif"
    _tw(p, a)
    with open_video(p) as v:
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v[:], a)
    a[2, 3, 4] = np.nan
    q = tmp_path / "nan.tif"
    _tw(q, a)
    with open_video(q) as v:
        np.testing.assert_array_equal(v.read(1), a[1])
        with pytest.raises(ExontaInputError, match="frame 2 .*NaN"):
            for _ in v.iter_chunks(2):
                pass


@pytest.mark.parametrize("dtype", [np.int16, np.float64, np.uint32, np.int8])
def test_tiff_other_dtypes_become_float32(tmp_path, dtype):
    rng = np.random.default_rng(5)
    a = rng.integers(-100 if np.dtype(dtype).kind != "u" else 0, 120, (3, 8, 9)).astype(dtype)
    p = tmp_path / "x.tif"
    _tw(p, a)
    with open_video(p) as v:
        assert v.dtype == np.float32
        assert v.source_dtype == np.dtype(dtype)
        np.testing.assert_array_equal(v[:], a.astype(np.float32))


def test_tiff_bool_becomes_uint8(tmp_path):
    a = np.ones((4, 8, 8), bool)
    a[1] = False
    p = tmp_path / "mask.tif"
    _tw(p, a)
    with open_video(p) as v:
        assert v.dtype == np.uint8
        np.testing.assert_array_equal(v[:], a.astype(np.uint8) * 255)


def test_tiff_complex_rejected(tmp_path):
    p = tmp_path / "c.tif"
    _tw(p, np.zeros((2, 8, 8), np.complex64))
    with pytest.raises(ExontaInputError, match="complex64"):
        open_video(p)


def test_tiff_multichannel_hyperstack_rejected(tmp_path):
    p = tmp_path / "tc.tif"
    _tw(p, np.zeros((3, 2, 8, 8), np.uint8), imagej=True, metadata={"axes": "TCYX"})
    with pytest.raises(ExontaInputError, match="hyperstack"):
        open_video(p)


def test_imagej_hyperstack_single_channel_ok(tmp_path):
    a = _frames(n=5, dtype=np.uint8)[:, None]  # T, C=1, Y, X
    p = tmp_path / "tc1.tif"
    _tw(p, a, imagej=True, metadata={"axes": "TCYX"})
    with open_video(p) as v:
        assert v.shape == (5, 24, 32)
        np.testing.assert_array_equal(v[:], a[:, 0])


def test_tiff_notes_say_what_the_reader_chose(tmp_path):
    """Several image series: the first is read and a note says so; planes labelled Z or C are read as time
    with a note; a plain T×Y×X stack gets none."""
    a = _frames(n=5, dtype=np.uint8)
    plain = tmp_path / "t.tif"
    _tw(plain, a)
    with open_video(plain) as v:
        assert v.notes == []
    two = tmp_path / "two.tif"
    with tifffile.TiffWriter(two) as tw:
        tw.write(a)
        tw.write(a[:2, :10, :10])
    with open_video(two) as v:
        assert v.shape == (5, 24, 32) and len(v.notes) == 1 and "2 image series" in v.notes[0]
    for axes, word in (("ZYX", "Z slices"), ("CYX", "channels")):
        p = tmp_path / f"{axes}.tif"
        _tw(p, a, imagej=True, metadata={"axes": axes})
        with open_video(p) as v:
            assert v.shape == (5, 24, 32) and len(v.notes) == 1 and word in v.notes[0]


# ---------------------------------------------------------------------------- movies
def test_avi_lossless_roundtrip_and_fps(tmp_path):
    a = _frames(n=12, h=40, w=48, dtype=np.uint8)
    p = _write_avi(tmp_path / "movie.avi", a, "FFV1", fps=30.0)
    with open_video(p) as v:
        assert isinstance(v, OpenCVVideo)
        assert v.format == "avi"
        assert v.n_frames == 12
        assert v.frame_shape == (40, 48)
        assert v.dtype == np.uint8
        assert v.fps == pytest.approx(30.0, rel=1e-6)
        assert v.metadata == {"fps": pytest.approx(30.0, rel=1e-6)}
        np.testing.assert_array_equal(_all(v), a)
        # random access (backwards and forwards) matches sequential reading
        for i in (7, 2, 11, 0, 5):
            np.testing.assert_array_equal(v.read(i), a[i])
        np.testing.assert_array_equal(v[3:9], a[3:9])


def test_avi_path_with_percent_sign(tmp_path):
    a = _frames(n=3, h=16, w=16, dtype=np.uint8)
    p = _write_avi(tmp_path / "run%d 50%.avi", a, "FFV1")
    with open_video(p) as v:
        np.testing.assert_array_equal(v[:], a)


def test_avi_mjpg_approximate(tmp_path):
    a = _smooth_frames()
    p = _write_avi(tmp_path / "mjpg.avi", a, "MJPG", fps=25.0)
    with open_video(p) as v:
        out = _all(v)
    assert out.shape == a.shape
    diff = np.abs(out.astype(int) - a.astype(int))
    assert diff.mean() < 2.0 and diff.max() <= 20


def test_mp4_if_available(tmp_path):
    a = _smooth_frames(n=10)
    p = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), 20.0, (64, 48), isColor=False)
    if not writer.isOpened():
        pytest.skip("no mp4 writer")
    for f in a:
        writer.write(f)
    writer.release()
    with open_video(p) as v:
        assert v.format == "mp4"
        assert v.n_frames == 10
        assert v.fps == pytest.approx(20.0, rel=1e-3)
        assert np.abs(_all(v).astype(int) - a.astype(int)).mean() < 3.0


# ---------------------------------------------------------------------------- folders / images
def test_image_folder_png_natural_sort(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    names = ["frame10.png", "frame2.png", "frame1.png"]
    values = {"frame1.png": 10, "frame2.png": 20, "frame10.png": 30}
    for name in names:
        _write_png(d / name, np.full((12, 16), values[name], np.uint8))
    (d / "notes.txt").write_text("ignored")
    (d / ".hidden.png").write_bytes(b"junk")
    with open_video(d) as v:
        assert isinstance(v, ImageFolderVideo)
        assert v.format == "image-folder"
        assert [p.name for p in v.files] == ["frame1.png", "frame2.png", "frame10.png"]
        out = v[:]
        assert out.shape == (3, 12, 16)
        np.testing.assert_array_equal(out[:, 0, 0], [10, 20, 30])
        assert v.fps is None and v.metadata == {}


def test_image_folder_jpeg_color_and_16bit_png(tmp_path):
    d = tmp_path / "jpg"
    d.mkdir()
    a = _smooth_frames(n=3, h=32, w=40)
    for i, f in enumerate(a):
        _write_jpg(d / f"img_{i}.jpg", np.dstack([f, f, f]))
    with open_video(d) as v:
        assert v.dtype == np.uint8
        assert np.abs(v[:].astype(int) - a.astype(int)).max() <= 6
    d16 = tmp_path / "png16"
    d16.mkdir()
    b = _frames(n=3, h=10, w=12, dtype=np.uint16)
    for i, f in enumerate(b):
        _write_png(d16 / f"f{i}.png", f)
    with open_video(d16) as v:
        assert v.dtype == np.uint16
        np.testing.assert_array_equal(v[:], b)


def test_image_folder_mismatched_sizes(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    _write_png(d / "a1.png", np.zeros((12, 16), np.uint8))
    _write_png(d / "a2.png", np.zeros((12, 18), np.uint8))
    with pytest.raises(ExontaInputError, match="differ in size.*a2.png"):
        open_video(d)


def test_image_folder_mismatched_bit_depth(tmp_path):
    d = tmp_path / "depth"
    d.mkdir()
    _write_png(d / "a1.png", np.zeros((12, 16), np.uint8))
    _write_png(d / "a2.png", np.zeros((12, 16), np.uint16))
    with open_video(d) as v:
        with pytest.raises(ExontaInputError, match="pixel type.*a2.png"):
            v.read_range(0, 2)


def test_single_png_is_one_frame(tmp_path):
    img = _frames(n=1, h=9, w=11, dtype=np.uint8)[0]
    p = tmp_path / "single.png"
    _write_png(p, img)
    with open_video(p) as v:
        assert v.format == "image" and v.n_frames == 1
        np.testing.assert_array_equal(v.read(0), img)


def test_natural_sort_key():
    names = ["f10.png", "f2.png", "f1.png", "F3.png", "f02b.png"]
    assert sorted(names, key=natural_sort_key) == ["f1.png", "f2.png", "f02b.png", "F3.png", "f10.png"]


# ---------------------------------------------------------------------------- invert
def test_invert_unsigned_uses_dtype_max(tmp_path):
    for dtype in (np.uint8, np.uint16):
        a = _frames(n=3, dtype=dtype)
        p = tmp_path / f"inv_{np.dtype(dtype).name}.tif"
        _tw(p, a)
        with open_video(p, invert=True) as v:
            assert v.invert and v.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(v[:], np.iinfo(dtype).max - a)
            np.testing.assert_array_equal(v.read(1), np.iinfo(dtype).max - a[1])


def test_invert_float_uses_video_max(tmp_path):
    a = _frames(n=5, dtype=np.float32)
    p = tmp_path / "invf.tif"
    _tw(p, a)
    with open_video(p, invert=True) as v:
        np.testing.assert_allclose(v[:], a.max() - a, rtol=0, atol=1e-3)
        assert float(v[:].min()) == 0.0
    av = frames_from_array(a, invert=True)
    np.testing.assert_allclose(av[:], a.max() - a, rtol=0, atol=1e-3)


def test_open_video_reopens_with_other_invert(tmp_path):
    a = _frames(n=2, dtype=np.uint8)
    p = tmp_path / "r.tif"
    _tw(p, a)
    v = open_video(p)
    assert open_video(v) is v
    w = open_video(v, invert=True)
    np.testing.assert_array_equal(w[:], 255 - a)
    v.close()
    w.close()


# ---------------------------------------------------------------------------- chunks / memory
def test_chunks_cover_every_frame_once(tmp_path):
    a = _frames(n=23, h=8, w=8)
    p = tmp_path / "chunks.tif"
    _tw(p, a)
    with open_video(p) as v:
        for chunk, start, stop in [(5, 0, None), (7, 3, 20), (64, 0, None), (1, 21, 99)]:
            seen = []
            for first, arr in v.iter_chunks(chunk, start=start, stop=stop):
                assert 1 <= len(arr) <= chunk
                assert arr.shape[1:] == (8, 8)
                np.testing.assert_array_equal(arr, a[first:first + len(arr)])
                seen.extend(range(first, first + len(arr)))
            end = min(stop if stop is not None else 23, 23)
            assert seen == list(range(start, end))
        with pytest.raises(ExontaInputError):
            next(v.iter_chunks(0))


def test_iter_chunks_on_memmap_does_not_load_everything(tmp_path):
    n, h, w = 200, 64, 64
    a = np.broadcast_to(np.arange(n, dtype=np.uint16)[:, None, None], (n, h, w))
    p = tmp_path / "big.tif"
    _tw(p, a)
    chunk_bytes = 8 * h * w * 2
    with open_video(p) as v:
        assert v.memmapped
        tracemalloc.start()
        try:
            count = 0
            for first, arr in v.iter_chunks(8):
                assert len(arr) <= 8
                assert not isinstance(arr, np.memmap)
                assert arr[0, 0, 0] == first
                count += len(arr)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert count == n
    total = n * h * w * 2  # 1.6 MB
    assert peak < 4 * chunk_bytes + 200_000
    assert peak < total / 4


def test_chunks_are_independent_copies(tmp_path):
    a = _frames(n=4, dtype=np.uint8)
    p = tmp_path / "copy.tif"
    _tw(p, a)
    with open_video(p) as v:
        _, arr = next(v.iter_chunks(4))
        arr[:] = 0
        np.testing.assert_array_equal(v[:], a)


# ---------------------------------------------------------------------------- interface
def test_getitem_napari_style(tmp_path):
    a = _frames(n=9, dtype=np.uint16)
    p = tmp_path / "idx.tif"
    _tw(p, a)
    with open_video(p) as v:
        assert v.shape == a.shape and v.ndim == 3 and v.dtype == a.dtype and len(v) == 9
        assert v.size == a.size and v.nbytes == a.nbytes
        np.testing.assert_array_equal(v[4], a[4])
        np.testing.assert_array_equal(v[-1], a[-1])
        np.testing.assert_array_equal(v[np.int64(2)], a[2])
        np.testing.assert_array_equal(v[1:8:3], a[1:8:3])
        np.testing.assert_array_equal(v[::-2], a[::-2])
        np.testing.assert_array_equal(v[(5, slice(2, 10), slice(None, None, 2))], a[5, 2:10, ::2])
        np.testing.assert_array_equal(v[2:4, 3], a[2:4, 3])
        np.testing.assert_array_equal(v[..., 5], a[..., 5])
        np.testing.assert_array_equal(v[[0, 3, 8]], a[[0, 3, 8]])
        assert v[5:2].shape == (0, 24, 32)
        with pytest.raises(IndexError):
            v[9]


def test_pickle_and_sha256_file(tmp_path):
    a = _frames(n=3)
    p = tmp_path / "pk.tif"
    _tw(p, a)
    v = open_video(p, invert=True)
    w = pickle.loads(pickle.dumps(v))
    assert isinstance(w, TiffVideo) and w.invert and w.path == p
    np.testing.assert_array_equal(w[:], v[:])
    assert v.sha256() == hashlib.sha256(p.read_bytes()).hexdigest()
    v.close()
    np.testing.assert_array_equal(v.read(0), 65535 - a[0])  # re-opens after close
    v.close()
    w.close()


def test_sha256_folder_depends_on_content(tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    for i in range(3):
        _write_png(d / f"f{i}.png", np.full((8, 8), i, np.uint8))
    h1 = open_video(d).sha256()
    assert h1 == open_video(d).sha256()
    _write_png(d / "f1.png", np.full((8, 8), 7, np.uint8))
    assert open_video(d).sha256() != h1


def test_array_video(tmp_path):
    a = _frames(n=5, dtype=np.uint16)
    v = frames_from_array(a, fps=12.5)
    assert isinstance(v, ArrayVideo) and isinstance(v, Video)
    assert v.path is None and v.format == "array"
    assert v.fps == 12.5 and v.metadata == {"fps": 12.5}
    np.testing.assert_array_equal(_all(v), a)
    np.testing.assert_array_equal(v[2, 1:3], a[2, 1:3])
    w = pickle.loads(pickle.dumps(v))
    np.testing.assert_array_equal(w[:], a)
    assert w.sha256() == v.sha256()
    assert frames_from_array(a[0]).shape == (1,) + a.shape[1:]
    rgb = np.random.default_rng(2).integers(0, 255, (2, 8, 8, 3)).astype(np.uint8)
    np.testing.assert_allclose(frames_from_array(rgb)[:].astype(float), _expected_gray(rgb), atol=1.0)
    assert open_video(a).shape == a.shape
    with pytest.raises(ExontaInputError):
        frames_from_array(np.zeros((0, 8, 8)))
    with pytest.raises(ExontaInputError, match="NaN"):
        f = a.astype(np.float32)
        f[4, 0, 0] = np.inf
        frames_from_array(f)[:]


@pytest.mark.parametrize("name", ["with space", "nön-ascii µm 粒子"])
def test_paths_with_spaces_and_non_ascii(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    a = _frames(n=3, dtype=np.uint8)
    tp = d / f"{name}.tif"
    _tw(tp, a)
    with open_video(tp) as v:
        np.testing.assert_array_equal(v[:], a)
    ap = _write_avi(d / f"{name}.avi", a, "FFV1")
    with open_video(ap) as v:
        np.testing.assert_array_equal(v[:], a)
    fd = d / f"{name} frames"
    fd.mkdir()
    for i, f in enumerate(a):
        _write_png(fd / f"{name} {i}.png", f)
    with open_video(fd) as v:
        np.testing.assert_array_equal(v[:], a)


# ---------------------------------------------------------------------------- bad inputs
def _assert_bad(path, match=None):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ExontaInputError, match=match) as info:
            v = open_video(path)
            try:
                for _ in v.iter_chunks(4):
                    pass
            finally:
                v.close()
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 400
    return msg


def test_missing_path(tmp_path):
    msg = _assert_bad(tmp_path / "nope.tif", "does not exist")
    assert "nope.tif" in msg


def test_unsupported_extension(tmp_path):
    p = tmp_path / "video.xyz"
    p.write_bytes(b"abc")
    _assert_bad(p, "unsupported file type '.xyz'")


@pytest.mark.parametrize("ext", [".tif", ".avi", ".mp4", ".png"])
def test_empty_file(tmp_path, ext):
    p = tmp_path / f"empty{ext}"
    p.write_bytes(b"")
    _assert_bad(p, "empty")


@pytest.mark.parametrize("ext", [".tif", ".tiff", ".avi", ".mov", ".png", ".jpg"])
def test_random_bytes_with_video_extension(tmp_path, ext):
    p = tmp_path / f"random{ext}"
    p.write_bytes(np.random.default_rng(7).bytes(5000))
    assert "random" in _assert_bad(p)


@pytest.mark.parametrize("kwargs", [{}, {"compression": "zlib"}, {"imagej": True, "metadata": {"axes": "TYX"}}])
def test_truncated_tiff(tmp_path, kwargs):
    a = _frames(n=6, h=32, w=32)
    p = tmp_path / "full.tif"
    _tw(p, a, **kwargs)
    data = p.read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) * 9 // 10):
        q = tmp_path / f"cut{cut}.tif"
        q.write_bytes(data[:cut])
        _assert_bad(q, "truncated|corrupt|could not be read")


def test_truncated_ome_tiff(tmp_path):
    a = _frames(n=6, h=32, w=32)
    p = tmp_path / "full.ome.tif"
    _tw(p, a, ome=True, metadata={"axes": "TYX"})
    data = p.read_bytes()
    q = tmp_path / "cut.ome.tif"
    q.write_bytes(data[: len(data) // 2])
    _assert_bad(q)


def test_truncated_avi(tmp_path):
    a = _frames(n=20, h=32, w=32, dtype=np.uint8)
    p = _write_avi(tmp_path / "full.avi", a, "FFV1")
    data = p.read_bytes()
    q = tmp_path / "cut.avi"
    q.write_bytes(data[: len(data) // 2])
    _assert_bad(q, "truncated|corrupt|no decodable")


def test_zero_frame_videos(tmp_path):
    p = tmp_path / "zero.avi"
    writer = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (32, 32), isColor=False)
    writer.release()
    if p.exists() and p.stat().st_size > 0:
        _assert_bad(p, "no decodable frame|could not be opened")
    d = tmp_path / "nothing"
    d.mkdir()
    _assert_bad(d, "no image files")


@pytest.mark.parametrize("shape", [(2, 3, 8), (2, 8, 2), (1, 4, 70000)])
def test_absurd_dimensions(tmp_path, shape):
    p = tmp_path / "dims.tif"
    _tw(p, np.zeros(shape, np.uint8))
    _assert_bad(p, "must be between 4 and 65536")


def test_tiny_png_rejected(tmp_path):
    p = tmp_path / "tiny.png"
    _write_png(p, np.zeros((3, 3), np.uint8))
    _assert_bad(p, "must be between")


def test_corrupt_png_in_folder(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    _write_png(d / "f1.png", np.zeros((8, 8), np.uint8))
    (d / "f2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    _assert_bad(d, "f2.png")


def _coloured_clip(n=4, h=24, w=32):
    """Grey noise frames stored as RGB with a yellow bar (R = G = 250, B = 20) at rows 2-5, columns 3-20."""
    rng = np.random.default_rng(21)
    grey = rng.integers(40, 60, (n, h, w)).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[:, 2:6, 3:21] = (250, 250, 20)
    return rgb


@pytest.mark.parametrize("source", ["array", "tiff", "avi", "png-folder", "png"])
def test_read_with_colour_gives_the_rgb_frame_of_colour_sources(tmp_path, source):
    rgb = _coloured_clip()
    if source == "array":
        video = frames_from_array(rgb)
    elif source == "tiff":
        _tw(tmp_path / "c.tif", rgb, photometric="rgb")
        video = open_video(tmp_path / "c.tif")
    elif source == "avi":  # lossless colour
        p = tmp_path / "c.avi"
        writer = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (32, 24), isColor=True)
        for f in rgb:
            writer.write(np.ascontiguousarray(f[..., ::-1]))  # OpenCV writes BGR
        writer.release()
        video = open_video(p)
    else:
        d = tmp_path / "frames"
        d.mkdir()
        for i, f in enumerate(rgb):
            cv2.imwrite(str(d / f"f{i:03d}.png"), np.ascontiguousarray(f[..., ::-1]))
        video = open_video(d if source == "png-folder" else d / "f002.png")
    i = 0 if source == "png" else 2
    with video as v:
        frame, colour = v.read_with_colour(i)
        np.testing.assert_array_equal(frame, v.read(i))  # the same frame as read() gives
        assert colour is not None and colour.shape == (24, 32, 3) and colour.dtype == np.uint8
        np.testing.assert_array_equal(colour, rgb[2])  # R, G, B whatever the file's order
        assert tuple(colour[3, 10]) == (250, 250, 20)
        # an ordinary read afterwards keeps nothing
        v.read(0)
        assert v._colour is None


def test_read_with_colour_is_none_for_grey_sources(tmp_path):
    a = _frames(n=3)
    _tw(tmp_path / "g.tif", a)
    with open_video(tmp_path / "g.tif") as v:
        frame, colour = v.read_with_colour(1)
        np.testing.assert_array_equal(frame, a[1])
        assert colour is None
    frame, colour = frames_from_array(a).read_with_colour(0)
    assert colour is None and np.array_equal(frame, a[0])


def test_read_with_colour_of_an_inverted_float_video_is_the_frame_asked_for():
    """The first read of an inverted float video also reads the whole video (its value range): the colour
    returned is still that of the frame asked for."""
    rng = np.random.default_rng(8)
    rgb = rng.random((5, 6, 7, 3)).astype(np.float32)
    v = ArrayVideo(rgb, invert=True)
    frame, colour = v.read_with_colour(1)
    np.testing.assert_array_equal(colour, rgb[1])
    np.testing.assert_array_equal(frame, v.read(1))


def test_an_h264_movie_reads_exactly_by_index_and_notes_its_codec(tmp_path):
    """H.264 (x264 with B-frames and one keyframe per 12 frames): random access returns the frame that reading
    forwards returns, the codec is named, and a note says that an inter-frame codec biases small motions.
    An MJPEG or FFV1 AVI codes every frame by itself and gets no such note."""
    from ffmpeg_writer import write_h264

    frames = _smooth_frames(n=30, h=48, w=64)
    path = write_h264(tmp_path / "clip.mp4", frames, fps=25.0, crf=20, extra=("-bf", "3", "-g", "12"))
    with open_video(path) as v:
        assert isinstance(v, OpenCVVideo) and v.codec == "h264" and len(v) == 30 and v.fps == pytest.approx(25.0)
        assert [n for n in v.notes if "H.264" in n and "predicts each frame" in n]
        forward = v[0:30]
        assert np.abs(forward.astype(int) - frames).mean() < 3.0  # lossy, but the same pictures
    with open_video(path) as v:
        for i in (17, 3, 29, 12, 11, 0, 25):
            assert np.array_equal(v[i], forward[i]), i
    for fourcc in ("MJPG", "FFV1"):
        avi = _write_avi(tmp_path / f"clip_{fourcc}.avi", frames, fourcc=fourcc)
        with open_video(avi) as v:
            assert v.codec.lower() == fourcc.lower() and v.notes == []


@pytest.mark.parametrize("suffix, codec_args, family", [
    (".webm", ("-c:v", "libvpx-vp9", "-crf", "30", "-b:v", "0", "-pix_fmt", "yuv420p"), "VP9"),
    (".wmv", ("-c:v", "wmv2", "-q:v", "3"), "Windows Media Video"),
    (".mpg", ("-c:v", "mpeg2video", "-q:v", "3"), "MPEG-1/2"),
    (".mkv", ("-c:v", "ffv1"), None),
    (".gif", (), None),
    (".3gp", ("-c:v", "mpeg4", "-q:v", "3"), "MPEG-4"),
    (".flv", ("-c:v", "flv1", "-q:v", "3"), "Sorenson"),
    (".ogv", ("-c:v", "libtheora", "-q:v", "8"), "Theora"),
    (".mts", ("-c:v", "mpeg2video", "-q:v", "3"), "MPEG-1/2"),
    (".asf", ("-c:v", "wmv2", "-q:v", "3"), "Windows Media Video"),
])
def test_other_movie_containers_are_read_and_their_codec_noted(tmp_path, suffix, codec_args, family):
    """WebM (VP9), Windows Media (WMV, ASF), MPEG-2 program and transport streams, Matroska, animated GIF, 3GP
    (phones), Flash video and Ogg Theora open like the other movies; inter-frame codecs get the note, lossless
    ones (FFV1, GIF's grey palette) do not."""
    from ffmpeg_writer import encode

    frames = _smooth_frames(n=12, h=48, w=64)
    path = encode(tmp_path / f"clip{suffix}", frames, codec_args, fps=25.0)
    with open_video(path) as v:
        assert isinstance(v, OpenCVVideo) and len(v) == 12 and v.fps == pytest.approx(25.0)
        got = v[0:12]
        assert np.abs(got.astype(int) - frames).mean() < 3.0
        notes = [n for n in v.notes if "predicts each frame" in n]
        assert (notes[0].split("compressed with ")[1].startswith(family) if family else notes == []), v.notes


def test_a_movie_whose_codec_cannot_be_decoded_names_the_codec(tmp_path):
    """AV1 has no decoder in OpenCV's wheels (their FFmpeg lacks one): the error names the codec and what to do,
    instead of calling the file empty. Should a build decode it, it is read and noted as an inter-frame codec."""
    from ffmpeg_writer import encode

    frames = _smooth_frames(n=6, h=48, w=64)
    path = encode(tmp_path / "clip.mkv", frames, ("-c:v", "libaom-av1", "-crf", "35", "-cpu-used", "8"), fps=25.0)
    try:
        v = open_video(path)
    except ExontaInputError as err:
        assert "AV01" in str(err).upper() and "cannot be decoded" in str(err) and "re-export" in str(err)
    else:
        with v:
            assert [n for n in v.notes if "AV1" in n]


def test_lossy_compression_is_recorded_per_format(tmp_path):
    """Video.lossy names the lossy compression of the stored frames: H.264, Motion JPEG, JPEG images; None for
    TIFF, PNG folders and lossless movies."""
    from ffmpeg_writer import write_h264

    frames = _smooth_frames(n=4, h=48, w=64)
    tif = tmp_path / "v.tif"
    tifffile.imwrite(tif, frames)
    jpgs, pngs = tmp_path / "jpg", tmp_path / "png"
    jpgs.mkdir()
    pngs.mkdir()
    for i, f in enumerate(frames):
        _write_jpg(jpgs / f"f{i}.jpg", f)
        _write_png(pngs / f"f{i}.png", f)
    cases = {write_h264(tmp_path / "v.mp4", frames): "H.264", _write_avi(tmp_path / "m.avi", frames, "MJPG"): "Motion JPEG",
             _write_avi(tmp_path / "l.avi", frames, "FFV1"): None, jpgs: "JPEG", pngs: None, tif: None,
             jpgs / "f0.jpg": "JPEG"}
    for path, lossy in cases.items():
        with open_video(path) as v:
            assert v.lossy == lossy, (path, v.lossy)


@pytest.mark.parametrize("suffix, codec_args", [
    (".mkv", ("-c:v", "ffv1")),
    (".mp4", ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "12", "-bf", "2", "-g", "10")),
])
def test_a_movie_with_dropped_frames_opens_with_its_timestamps(tmp_path, suffix, codec_args):
    """Frames dropped by the capture program leave gaps in the timestamps of a Matroska or MP4 movie. Matroska
    stores no frame count (it is the duration × the rate): the short count is not taken for a truncated file,
    because the last frame is stamped at the end. Reading in order gives the kept frames, and their times
    (also when asked for before any frame was read)."""
    from ffmpeg_writer import encode_dropping

    frames = _smooth_frames(n=40, h=48, w=64)
    drop = [5, 6, 17, 30]
    kept = np.setdiff1d(np.arange(40), drop)
    path = encode_dropping(tmp_path / f"clip{suffix}", frames, drop, codec_args, fps=25.0)
    with open_video(path) as v:
        assert isinstance(v, OpenCVVideo) and len(v) == kept.size
        np.testing.assert_allclose(v.frame_times_s(), kept / 25.0, atol=1.5e-3)  # before any read: decodes once
    with open_video(path) as v:
        got = v[0:len(v)]
        np.testing.assert_allclose(v.frame_times_s(), kept / 25.0, atol=1.5e-3)  # kept while reading
    assert np.abs(got.astype(int) - frames[kept]).mean() < 2.0


def test_a_cut_off_matroska_movie_is_still_reported_as_truncated(tmp_path):
    """Without a stored frame count, frames that stop well before the movie's duration mean a cut-off file."""
    from ffmpeg_writer import encode_dropping

    path = encode_dropping(tmp_path / "clip.mkv", _smooth_frames(n=60, h=48, w=64), [7], fps=25.0)
    cut = tmp_path / "cut.mkv"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(ExontaInputError, match="truncated"):
        open_video(cut)


def test_files_without_per_frame_times_give_none(tmp_path):
    frames = _smooth_frames(n=5, h=48, w=64)
    tif = tmp_path / "v.tif"
    tifffile.imwrite(tif, frames)
    with open_video(tif) as v:
        assert v.frame_times_s() is None
    with open_video(_write_avi(tmp_path / "v.avi", frames, "FFV1", fps=20.0)) as v:
        np.testing.assert_allclose(v.frame_times_s(), np.arange(5) / 20.0, atol=1e-6)  # AVI: index / rate


def test_a_16_bit_grey_movie_keeps_its_16_bits(tmp_path):
    """FFV1 in Matroska with 16-bit grey frames (a 12-bit camera's recording, values up to ~2000): read as
    uint16, every value exact. OpenCV's usual 8-bit conversion kept only the top 8 bits (values 0-7). A movie
    format that still comes out reduced (16-bit PNG frames in a QuickTime movie) gets a note saying so."""
    from ffmpeg_writer import encode16

    rng = np.random.default_rng(0)
    frames = (rng.poisson(300, (6, 48, 64)) + np.arange(64)[None, None, :] * 25).astype(np.uint16)
    with open_video(encode16(tmp_path / "g16.mkv", frames, ("-c:v", "ffv1"))) as v:
        assert v.dtype == np.uint16 and v.source_dtype == np.uint16 and len(v) == 6
        np.testing.assert_array_equal(v[0:6], frames)
        np.testing.assert_array_equal(v[3], frames[3])
        assert not [n for n in v.notes if "grey levels" in n]
    with open_video(encode16(tmp_path / "g16.mov", frames, ("-c:v", "png", "-pix_fmt", "gray16be"))) as v:
        if v.dtype == np.uint8:
            assert [n for n in v.notes if "grey levels 0-" in n and "16-bit TIFF" in n]
        else:  # an OpenCV that decodes it fully
            np.testing.assert_array_equal(v[0:6], frames)


def test_an_ome_tiff_gives_its_planes_times(tmp_path):
    """OME Plane DeltaT (ms here) becomes frame_times_s (s, from the first frame) when every time point has one."""
    frames = _smooth_frames(n=5, h=48, w=64).astype(np.uint16)
    t_ms = [100.0, 140.0, 180.0, 260.0, 300.0]
    full = tmp_path / "full.ome.tif"
    tifffile.imwrite(full, frames, metadata={"axes": "TYX", "Plane": {"DeltaT": t_ms, "DeltaTUnit": ["ms"] * 5}})
    with open_video(full) as v:
        np.testing.assert_allclose(v.frame_times_s(), [0.0, 0.04, 0.08, 0.16, 0.2])
        assert v.metadata["fps"] == pytest.approx(25.0)  # the median interval
    plain = tmp_path / "plain.ome.tif"
    tifffile.imwrite(plain, frames, metadata={"axes": "TYX"})
    with open_video(plain) as v:
        assert v.frame_times_s() is None


def test_micro_manager_image_metadata_gives_times_rate_exposure_and_pixel_size(tmp_path, capfd):
    """Micro-Manager's per-image tag (no OME, no MM header): ElapsedTime-ms become the frame times and set the
    rate (the arrival times jitter: the slope, not the first interval), Exposure-ms the exposure, PixelSizeUm
    the pixel size; nothing is printed about the missing Micro-Manager header."""
    from tests.mm_tiff import write_mm_tiff

    frames = _smooth_frames(n=40, h=48, w=64).astype(np.uint16)
    jitter = np.random.default_rng(3).uniform(0.0, 4.0, 40)  # arrival jitter up to 4 ms at 50 frames/s
    t_ms = 1000.0 + 20.0 * np.arange(40) + jitter
    p = tmp_path / "mm.tif"
    write_mm_tiff(p, frames, t_ms, exposure_ms=12.5, pixel_size_um=0.108)
    with open_video(p) as v:
        np.testing.assert_allclose(v.frame_times_s(), (t_ms - t_ms[0]) / 1000.0)
        assert v.metadata["fps"] == pytest.approx(50.0, rel=0.01)
        assert v.metadata["exposure_s"] == pytest.approx(0.0125)
        assert v.metadata["pixel_size_um"] == pytest.approx(0.108)
        np.testing.assert_array_equal(v[:], frames)
    assert "micromanager" not in capfd.readouterr().err
    # one frame without a time: no per-frame times, no rate from them
    q = tmp_path / "mm_gap.tif"
    write_mm_tiff(q, frames[:5], [0.0, 20.0, None, 60.0, 80.0])
    with open_video(q) as v:
        assert v.frame_times_s() is None and "fps" not in v.metadata


def test_micro_manager_times_rate_sees_dropped_frames(tmp_path):
    """Times on a 40 frames/s grid with gaps: the rate is the grid's (40), not the average over the gaps (~32)."""
    from tests.mm_tiff import write_mm_tiff

    kept = np.array([0, 1, 2, 4, 5, 6, 9, 10, 11, 12, 13, 15, 16, 17, 18, 19])
    write_mm_tiff(tmp_path / "mm.tif", _smooth_frames(n=kept.size, h=32, w=32).astype(np.uint8), kept * 25.0)
    with open_video(tmp_path / "mm.tif") as v:
        assert v.metadata["fps"] == pytest.approx(40.0, rel=1e-6)
        np.testing.assert_allclose(v.frame_times_s(), kept * 0.025)


def test_a_recorded_exposure_longer_than_the_recorded_interval_is_left_out(tmp_path):
    """A Micro-Manager stack (like an image folder) whose Exposure-ms exceeds its frame interval: the rate is
    kept, the exposure left out (the analysis then assumes one and says so); an exposure equal to the interval
    stays."""
    from tests.mm_tiff import write_mm_tiff

    frames = _smooth_frames(n=12, h=32, w=32).astype(np.uint16)
    write_mm_tiff(tmp_path / "long.tif", frames, 25.0 * np.arange(12), exposure_ms=30.0, pixel_size_um=0.1)
    with open_video(tmp_path / "long.tif") as v:
        assert v.metadata["fps"] == pytest.approx(40.0) and "exposure_s" not in v.metadata
        assert v.metadata["pixel_size_um"] == pytest.approx(0.1)
    write_mm_tiff(tmp_path / "equal.tif", frames, 25.0 * np.arange(12), exposure_ms=25.0)
    with open_video(tmp_path / "equal.tif") as v:
        assert v.metadata["exposure_s"] == pytest.approx(0.025)


def test_andor_solis_tags_give_rate_and_exposure(tmp_path):
    """Andor Solis TIFF tags (4864 id, 4876 exposure, 4878 kinetic cycle time, both in s)."""
    p = tmp_path / "andor.tif"
    tags = [(4864, "I", 1, 1, True), (4876, "d", 1, 0.015, True), (4878, "d", 1, 0.04, True)]
    _tw(p, _frames(n=3, dtype=np.uint16), extratags=tags)
    with open_video(p) as v:
        assert v.metadata["fps"] == pytest.approx(25.0) and v.metadata["exposure_s"] == pytest.approx(0.015)
    _tw(tmp_path / "zero.tif", _frames(n=3, dtype=np.uint16), extratags=[(4864, "I", 1, 1, True),
                                                                        (4878, "d", 1, 0.0, True)])
    with open_video(tmp_path / "zero.tif") as v:  # a cycle time of 0 is no rate
        assert "fps" not in v.metadata and "exposure_s" not in v.metadata


def _exif_jpeg(path, frame, exposure=None, stamp=None, subsec=None):
    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    ex = Image.Exif()
    ifd = ex.get_ifd(0x8769)
    if exposure is not None:
        ifd[0x829A] = IFDRational(*exposure)
    if stamp is not None:
        ifd[0x9003] = stamp
    if subsec is not None:
        ifd[0x9291] = subsec
    Image.fromarray(frame).save(path, exif=ex, quality=95)


def test_a_micro_manager_image_folder_gives_times_rate_exposure_and_pixel_size(tmp_path):
    """Micro-Manager's "separate image files": one TIFF per image, each with its tag 51123."""
    frames = _smooth_frames(n=15, h=40, w=48).astype(np.uint16)
    t_ms = 200.0 + 40.0 * np.arange(15) + np.random.default_rng(1).uniform(0.0, 3.0, 15)
    for i, f in enumerate(frames):
        md = {"ElapsedTime-ms": float(t_ms[i]), "Exposure-ms": 10.0, "PixelSizeUm": 0.2}
        tifffile.imwrite(tmp_path / f"img_channel000_position000_time{i:09d}_z000.tif", f,
                         photometric="minisblack", extratags=[(51123, "s", 0, json.dumps(md), True)])
    with open_video(tmp_path) as v:
        assert v.format == "image-folder"
        assert v.metadata["fps"] == pytest.approx(25.0, rel=0.01)
        assert v.metadata["exposure_s"] == pytest.approx(0.01) and v.metadata["pixel_size_um"] == pytest.approx(0.2)
        np.testing.assert_allclose(v.frame_times_s(), (t_ms - t_ms[0]) / 1000.0)
        np.testing.assert_array_equal(v[:], frames)


def test_exif_in_an_image_folder_gives_exposure_and_times(tmp_path):
    """EXIF ExposureTime, and DateTimeOriginal + SubSecTimeOriginal of every image (here 20 frames/s across a
    change of second); without sub-seconds on every image no times, the exposure stays."""
    frames = _smooth_frames(n=12, h=40, w=48).astype(np.uint8)
    for i, f in enumerate(frames):
        t = 59.5 + 0.05 * i
        _exif_jpeg(tmp_path / f"f{i:02d}.jpg", f, exposure=(1, 200),
                   stamp="2026:11:24 10:%02d:%02d" % (int(t) // 60 + 0, int(t) % 60), subsec="%03d" % round((t % 1) * 1000))
    with open_video(tmp_path) as v:
        assert v.metadata["fps"] == pytest.approx(20.0, rel=1e-3) and v.metadata["exposure_s"] == pytest.approx(0.005)
        np.testing.assert_allclose(v.frame_times_s(), 0.05 * np.arange(12), atol=1e-6)
    other = tmp_path / "no_subsec"
    other.mkdir()
    for i, f in enumerate(frames[:4]):
        _exif_jpeg(other / f"f{i}.jpg", f, exposure=(1, 50), stamp="2026:11:24 10:00:00",
                   subsec=None if i == 2 else "100")
    with open_video(other) as v:
        assert v.frame_times_s() is None and v.metadata == {"exposure_s": pytest.approx(0.02)}
    plain = tmp_path / "plain"
    plain.mkdir()
    for i, f in enumerate(frames[:3]):
        cv2.imwrite(str(plain / f"f{i}.png"), f)
    with open_video(plain) as v:
        assert v.metadata == {} and v.frame_times_s() is None and v.fps is None


@pytest.mark.parametrize("name, vendor", [("run.nd2", "Nikon"), ("run.CZI", "Zeiss"), ("run.lif", "Leica"),
                                          ("store.zarr", "Zarr")])
def test_microscope_vendor_formats_get_an_export_hint(tmp_path, name, vendor):
    p = tmp_path / name
    if name.endswith("zarr"):
        p.mkdir()
        (p / ".zattrs").write_text("{}")
    else:
        p.write_bytes(b"\x00" * 64)
    with pytest.raises(ExontaInputError, match=f"is a {vendor}.*export the time series as an OME-TIFF"):
        open_video(p)


@pytest.mark.parametrize("binary_only", [False, True])
def test_a_multi_file_ome_tiff_is_read_whole_from_any_of_its_files(tmp_path, binary_only):
    """A series split over three OME-TIFF files (Micro-Manager at 4 GB): opened through its first file (or, with
    Micro-Manager's BinaryOnly stubs, through a later one) every frame is read, with no warning about closed
    files; a missing part is named; each part's own file size bounds its frames (before, the first file's size
    made the data set "truncated or corrupt")."""
    from exonta.io.readers import ome_dataset_head
    from tests.mm_tiff import write_multifile_ome

    frames = np.random.default_rng(4).integers(0, 4000, (23, 40, 56)).astype(np.uint16)
    names = ("s_MMStack_Pos0.ome.tif", "s_MMStack_Pos0_1.ome.tif", "s_MMStack_Pos0_2.ome.tif")
    write_multifile_ome(tmp_path, frames, names, binary_only=binary_only)
    for name in (names[0], names[2]) if not binary_only else (names[0],):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with open_video(tmp_path / name) as v:
                assert v.n_frames == 23 and v.metadata["fps"] == pytest.approx(25.0) and not v.notes
                np.testing.assert_array_equal(v[:], frames)
                np.testing.assert_array_equal(v.read(20), frames[20])
                np.testing.assert_array_equal(np.concatenate([c for _, c in v.iter_chunks(5)]), frames)
    if binary_only:  # tifffile reads a stub part as its own frames: said so, with the file to give instead
        with open_video(tmp_path / names[2]) as v:
            assert v.n_frames == 8 and [x for x in v.notes if f"metadata are in '{names[0]}'" in x]
    # the checksum covers every file of the data set, in frame order, whichever file is opened
    from exonta.batch.discover import video_fingerprint, video_sha256

    expected = hashlib.sha256(b"".join((tmp_path / n).read_bytes() for n in names)).hexdigest()
    for name in (names[0], names[2]) if not binary_only else (names[0],):
        with open_video(tmp_path / name) as v:
            assert v.sha256() == expected
    assert video_sha256(tmp_path / names[0]) == expected
    before = video_fingerprint(tmp_path / names[0])
    os.utime(tmp_path / names[1], ns=(1, 2 * 10**18))  # a later part rewritten
    assert video_fingerprint(tmp_path / names[0]) != before
    assert ome_dataset_head(tmp_path / names[1]) == Path(os.path.realpath(tmp_path / names[0]))
    assert ome_dataset_head(tmp_path / names[0]) == Path(os.path.realpath(tmp_path / names[0]))
    (tmp_path / names[1]).unlink()
    with pytest.raises(ExontaInputError, match=f"multi-file data set: its frames from 7 on are in '{names[1]}'"):
        open_video(tmp_path / names[0])
