"""Property tests of exonta.io.readers on bad and random input (bounded: the file runs in ~10-20 s).

Whatever the bytes, opening and iterating a file must either give a working video or raise
ExontaInputError; no other exception may escape. Random TIFF stacks must read back unchanged.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exonta.errors import ExontaInputError
from exonta.io import open_video

# EXONTA_FUZZ_EXAMPLES=2000 runs a deeper, randomised search (default: 50 reproducible examples).
_DEEP = int(os.environ.get("EXONTA_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_DEEP or 50, deadline=None, derandomize=not _DEEP, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _seed_files(folder: Path) -> dict[str, bytes]:
    """Small valid files of every supported kind, as bytes."""
    rng = np.random.default_rng(11)
    a8 = rng.integers(0, 255, (6, 16, 20), endpoint=True).astype(np.uint8)
    out: dict[str, bytes] = {}
    specs = {
        "plain.tif": dict(photometric="minisblack"),
        "zlib.tif": dict(photometric="minisblack", compression="zlib"),
        "ome.tif": dict(ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.1, "TimeIncrement": 0.02}),
        "ij.tif": dict(imagej=True, metadata={"axes": "TYX", "finterval": 0.05}),
    }
    for name, kw in specs.items():
        p = folder / name
        tifffile.imwrite(p, a8 if name != "zlib.tif" else a8.astype(np.uint16) * 200, **kw)
        out[name] = p.read_bytes()
    for name, fourcc in (("ffv1.avi", "FFV1"), ("mjpg.avi", "MJPG")):
        p = folder / name
        writer = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*fourcc), 25.0, (20, 16), isColor=False)
        if writer.isOpened():
            for f in a8:
                writer.write(f)
        writer.release()
        if p.exists() and p.stat().st_size:
            out[name] = p.read_bytes()
    ok, buf = cv2.imencode(".png", a8[0])
    assert ok
    out["img.png"] = buf.tobytes()
    ok, buf = cv2.imencode(".jpg", a8[0])
    assert ok
    out["img.jpg"] = buf.tobytes()
    return out


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return _seed_files(tmp_path_factory.mktemp("seeds"))


def _open_and_consume(path: Path) -> None:
    """Open and read everything; only ExontaInputError is an acceptable failure."""
    try:
        with open_video(path) as v:
            n = 0
            for first, chunk in v.iter_chunks(4):
                assert first == n
                assert chunk.ndim == 3 and chunk.shape[1:] == v.frame_shape
                assert chunk.dtype == v.dtype
                n += len(chunk)
            assert n == v.n_frames >= 1
            assert v[0].shape == v.frame_shape
    except ExontaInputError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg


# magic numbers so that random tails reach the format parsers, not only the sniffers
_MAGIC = [b"", b"II*\x00", b"MM\x00*", b"II+\x00\x08\x00\x00\x00", b"II*\x00\x08\x00\x00\x00",
          b"RIFF\x00\x10\x00\x00AVI LIST", b"\x00\x00\x00\x18ftypisom", b"\x89PNG\r\n\x1a\n",
          b"\xff\xd8\xff\xe0"]


@FUZZ
@given(magic=st.sampled_from(_MAGIC), data=st.binary(min_size=0, max_size=4096),
       ext=st.sampled_from([".tif", ".avi", ".png", ".mp4", ".jpg"]))
def test_random_bytes_never_crash(magic, data, ext):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"fuzz{ext}"
        p.write_bytes(magic + data)
        _open_and_consume(p)


@FUZZ
@given(which=st.integers(0, 99), cut=st.floats(0.0, 1.0), flips=st.lists(
    st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255)), max_size=4))
def test_truncated_or_corrupted_real_files_never_crash(seeds, which, cut, flips):
    names = sorted(seeds)
    name = names[which % len(names)]
    data = bytearray(seeds[name][: int(len(seeds[name]) * cut)])
    for pos, xor in flips:
        if data:
            data[int(pos * len(data))] ^= xor
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"damaged{Path(name).suffix}"
        p.write_bytes(bytes(data))
        _open_and_consume(p)


_DTYPES = [np.uint8, np.uint16, np.float32, np.int16, np.float64]


@FUZZ
@given(n=st.integers(1, 5), h=st.integers(4, 33), w=st.integers(4, 33),
       dtype=st.sampled_from(_DTYPES), compression=st.sampled_from([None, "zlib"]),
       seed=st.integers(0, 2**32 - 1))
def test_random_tiff_stacks_read_back_equal(n, h, w, dtype, compression, seed):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        a = (rng.standard_normal((n, h, w)) * 1e3).astype(dt)
    else:
        info = np.iinfo(dt)
        a = rng.integers(info.min, info.max, (n, h, w), endpoint=True).astype(dt)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "stack.tif"
        tifffile.imwrite(p, a if n > 1 else a[0], photometric="minisblack", compression=compression)
        with open_video(p) as v:
            assert v.shape == (n, h, w)
            out = np.concatenate([c for _, c in v.iter_chunks(2)])
            if dt in (np.uint8, np.uint16, np.float32):
                assert out.dtype == dt
                np.testing.assert_array_equal(out, a)
            else:
                assert out.dtype == np.float32
                np.testing.assert_array_equal(out, a.astype(np.float32))
            assert v.memmapped == (compression is None)
