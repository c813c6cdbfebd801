"""Video readers: one :class:`Video` interface over TIFF stacks, movie files, image folders and arrays.

:func:`open_video` opens

* multi-page TIFF, OME-TIFF and ImageJ hyperstacks (via ``tifffile``), memory-mapped when the
  image data are stored uncompressed and contiguously, read page by page otherwise;
* AVI / MP4 / MOV / MKV movies (via OpenCV's FFmpeg backend, read sequentially);
* a folder of image files (PNG, JPEG, TIFF, BMP), one image per frame in natural sort order
  (``frame2`` before ``frame10``);
* a single image file (a 1-frame video).

Frames are delivered as grayscale ``(k, h, w)`` arrays in chunks (:meth:`Video.iter_chunks`), so
memory does not grow with the length of the video. RGB(A) frames are converted to luminance with
the ITU-R BT.601 weights (0.299 R + 0.587 G + 0.114 B) keeping the integer type. 8- and 16-bit
unsigned data are kept as they are, float32 is kept (and must be finite); other numeric types are
converted to float32 (signed/32-bit integers, float16/float64) or uint8 (boolean masks).

With ``invert=True`` (bright-field: dark particles on a light background) every value ``v``
becomes ``max - v``, where ``max`` is the dtype's maximum for unsigned integers and the maximum
of the whole video for float data.

Every problem with the input file raises :class:`~exonta.errors.ExontaInputError` with one
sentence saying which file, what is wrong and what to do; errors of ``tifffile`` and OpenCV are
wrapped, never passed through.

:func:`frames_from_array` wraps an in-memory array in the same interface (:class:`ArrayVideo`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExontaInputError
from .results import finite_or_none

__all__ = [
    "Video",
    "TiffVideo",
    "OpenCVVideo",
    "ImageFolderVideo",
    "ImageFileVideo",
    "ArrayVideo",
    "open_video",
    "frames_from_array",
    "natural_sort_key",
    "sha256_of_files",
    "TIFF_EXTENSIONS",
    "MOVIE_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "MIN_SIDE_PX",
    "MAX_SIDE_PX",
    "MAX_FRAME_PIXELS",
]

TIFF_EXTENSIONS = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
MOVIE_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv", ".m4v", ".webm", ".wmv", ".mpg", ".mpeg", ".gif", ".3gp", ".flv",
                    ".ogv", ".mts", ".m2ts", ".asf")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_FOLDER_EXTENSIONS = IMAGE_EXTENSIONS + (".tif", ".tiff")

#: Frames smaller than this (either side, pixels) are refused.
MIN_SIDE_PX = 4
#: Frames larger than this (either side, pixels) are refused.
MAX_SIDE_PX = 65536
#: Frames with more pixels than this are refused (guards against corrupt headers).
MAX_FRAME_PIXELS = 1 << 28

# ITU-R BT.601 luma weights, the convention of OpenCV and Pillow.
_LUMA_RGB = (0.299, 0.587, 0.114)

_LENGTH_TO_UM = {
    "m": 1e6, "dm": 1e5, "cm": 1e4, "mm": 1e3, "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0,
    "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0, "nm": 1e-3, "pm": 1e-6, "å": 1e-4,
    "\\u00b5m": 1.0,
}
_TIME_TO_S = {
    "s": 1.0, "sec": 1.0, "ms": 1e-3, "µs": 1e-6, "μs": 1e-6, "us": 1e-6, "ns": 1e-9,
    "min": 60.0, "h": 3600.0,
}

# Plausible ranges for values found in file metadata; anything outside is ignored as bogus.
_PIXEL_SIZE_RANGE_UM = (1e-3, 1000.0)
_FPS_RANGE = (1e-6, 1e6)
#: Micro-Manager's private TIFF tag: per-image metadata as JSON.
_MM_TAG = 51123
_EXPOSURE_RANGE_S = (1e-9, 3600.0)
# TIFF resolution given per inch/cm is usually a print DPI; only this range is "clearly physical".
_RESOLUTION_PHYSICAL_UM = (0.005, 50.0)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def natural_sort_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``frame2`` before ``frame10``).

    Parameters
    ----------
    name : str
        File name.

    Returns
    -------
    tuple
        Alternating text (lower-cased) and integer parts, then the name itself as a tie-break.
    """
    parts = re.split(r"(\d+)", name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name



def sha256_of_files(files, include_names: bool = False, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 hex digest of files streamed in order (the input checksum of a video).

    A single file gives the same value as ``sha256sum``. With ``include_names``
    (image folders), each file contributes its name (UTF-8, undecodable bytes
    kept via ``surrogateescape``), a NUL byte, then its content. Raises
    :class:`OSError` when a file cannot be read.
    """
    h = hashlib.sha256()
    for p in files:
        p = Path(p)
        if include_names:
            h.update(p.name.encode("utf-8", "surrogateescape") + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(chunk_bytes), b""):
                h.update(block)
    return h.hexdigest()


def _check_dims(height: int, width: int, where: str) -> None:
    for side, v in (("height", height), ("width", width)):
        if v < MIN_SIDE_PX or v > MAX_SIDE_PX:
            raise ExontaInputError(
                f"{where} has frames of {width}×{height} px, but the frame {side} must be between "
                f"{MIN_SIDE_PX} and {MAX_SIDE_PX} px; check that the file is a video of the sample")
    if height * width > MAX_FRAME_PIXELS:
        raise ExontaInputError(
            f"{where} has frames of {width}×{height} px, more than the {MAX_FRAME_PIXELS} pixels per frame "
            f"exonta accepts; crop the video to the region of interest")


def _output_dtype(src: np.dtype, where: str) -> np.dtype:
    """dtype delivered for frames stored as ``src`` (see module docstring)."""
    src = np.dtype(src)
    if src.kind == "u" and src.itemsize in (1, 2):
        return np.dtype(src.newbyteorder("="))
    if src.kind == "f" and src.itemsize == 4:
        return np.dtype(np.float32)
    if src.kind == "b":
        return np.dtype(np.uint8)
    if src.kind in "uif":
        return np.dtype(np.float32)
    raise ExontaInputError(
        f"{where} stores pixels as {src} which exonta cannot analyse; export the video as 8- or 16-bit "
        f"unsigned integer or float32 grayscale")


def _to_gray(frames: np.ndarray, order: str) -> np.ndarray:
    """Convert ``(k, h, w, c)`` colour frames to ``(k, h, w)`` luminance, keeping the dtype.

    ``order`` is ``"rgb"``, ``"rgba"``, ``"bgr"``, ``"bgra"`` or ``"la"`` (gray + alpha).
    """
    if order == "la":
        return np.ascontiguousarray(frames[..., 0])
    k, h, w, c = frames.shape
    dt = frames.dtype
    if dt in (np.uint8, np.float32):  # OpenCV is fast; its 16-bit path is only ~1e-5 accurate
        import cv2

        code = {
            "rgb": cv2.COLOR_RGB2GRAY, "rgba": cv2.COLOR_RGBA2GRAY,
            "bgr": cv2.COLOR_BGR2GRAY, "bgra": cv2.COLOR_BGRA2GRAY,
        }[order]
        flat = np.ascontiguousarray(frames).reshape(k * h, w, c)
        if not flat.dtype.isnative:
            flat = flat.astype(flat.dtype.newbyteorder("="))
        return cv2.cvtColor(flat, code).reshape(k, h, w)
    wr, wg, wb = _LUMA_RGB
    if order.startswith("bgr"):
        wr, wb = wb, wr  # channel 0 is blue
    work = np.float32 if dt.itemsize <= 2 else np.float64
    gray = (frames[..., 0].astype(work) * work(wr) + frames[..., 1].astype(work) * work(wg)
            + frames[..., 2].astype(work) * work(wb))
    if dt.kind in "ui":
        info = np.iinfo(dt)
        gray = np.clip(np.rint(gray), info.min, info.max)
    return gray.astype(dt.newbyteorder("="))


def _rgb_frame(frame: np.ndarray, order: str) -> np.ndarray | None:
    """One ``(h, w, c)`` colour frame as a new ``(h, w, 3)`` R, G, B array (native byte order, alpha left
    out); ``None`` for grey + alpha."""
    if order == "la":
        return None
    rgb = frame[..., 2::-1] if order.startswith("bgr") else frame[..., :3]
    return np.array(rgb, dtype=rgb.dtype.newbyteorder("="))


def _order_for_samples(n: int, bgr: bool, where: str) -> str | None:
    if n == 1:
        return None
    if n == 2:
        return "la"
    if n in (3, 4):
        base = "bgr" if bgr else "rgb"
        return base + ("a" if n == 4 else "")
    raise ExontaInputError(
        f"{where} has {n} samples per pixel; exonta reads grayscale or RGB(A) frames, so export a "
        f"single-channel video")


def _wrap(exc: BaseException, where: str, action: str = "reading") -> ExontaInputError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if len(text) > 200:
        text = text[:200] + "…"
    return ExontaInputError(
        f"{where} could not be read ({action} failed: {text}); check that the file is complete and not "
        f"corrupt, or re-export it")


def _in_range(v: float | None, lo_hi: tuple[float, float]) -> bool:
    return v is not None and math.isfinite(v) and lo_hi[0] <= v <= lo_hi[1]


# --------------------------------------------------------------------------------------------
# the interface
# --------------------------------------------------------------------------------------------

class Video:
    """A grayscale video, read lazily in chunks.

    Obtain one with :func:`open_video` or :func:`frames_from_array`. It is a context manager
    (``close`` on exit), a napari-compatible lazy array (``shape``, ``dtype``, ``ndim``,
    ``__getitem__``), and picklable: a file-backed video pickles as its path and re-opens the file
    where it is unpickled (for Dask workers). A closed video re-opens its file on the next read.

    Attributes
    ----------
    path : pathlib.Path or None
        The file or folder (``None`` for an in-memory array).
    name : str
        Short name for messages (file name, or ``"in-memory array"``).
    format : str
        ``"tiff"``, ``"ome-tiff"``, ``"imagej-tiff"``, ``"avi"``, ``"mp4"``, ``"mov"``, ``"mkv"``,
        ``"m4v"``, ``"image-folder"``, ``"image"`` or ``"array"``.
    n_frames, height, width : int
        Number of frames and frame size in pixels.
    dtype : numpy.dtype
        dtype of delivered frames (uint8, uint16 or float32).
    source_dtype : numpy.dtype
        dtype stored in the file.
    fps : float or None
        The file's own frame rate (frames/s), ``None`` when the file does not record one.
    metadata : dict
        Acquisition values recorded in the file, with exonta's names (``pixel_size_um``, ``fps``,
        ``exposure_s``); only values actually present are included.
    invert : bool
        Whether values are inverted (``max - value``) for bright-field videos.
    notes : list of str
        What the reader chose that the user should know (a TIFF with several image series, frames
        labelled as Z slices or channels read as time); the analysis adds them to its warnings.
    lossy : str or None
        The lossy compression the frames were stored with (``"H.264"``, ``"Motion JPEG"``, ``"JPEG"``,
        ...), None for uncompressed or lossless data. Compression artefacts are a likely source of
        junk detections there (:func:`exonta.pipeline.analyze`, automatic threshold).
    """

    path: Path | None
    format: str
    n_frames: int
    height: int
    width: int
    dtype: np.dtype
    source_dtype: np.dtype
    fps: float | None
    metadata: dict[str, Any]
    invert: bool

    def __init__(self, path: Path | None, invert: bool = False) -> None:
        self.path = path
        self.invert = bool(invert)
        self.fps = None
        self.metadata = {}
        self.notes: list[str] = []
        self.lossy: str | None = None
        self._lock = threading.RLock()
        self._float_max: float | None = None
        self._keep_colour = False  # read_with_colour: keep the colours of the frame converted to grey
        self._colour: np.ndarray | None = None
        self._times_s: np.ndarray | None = None  # per-frame times read from the file's metadata, if any

    #: Whether :meth:`frame_times_s` are the recording's own times (a movie's timestamps), not times that
    #: may jitter (software arrival times).
    frame_times_exact = True

    def frame_times_s(self) -> np.ndarray | None:
        """Each frame's timestamp in seconds from the first, when the file stores one for every frame and they
        increase: a movie's timestamps, an OME-TIFF's plane ``DeltaT``, Micro-Manager's per-image
        ``ElapsedTime-ms`` (a stack or a folder of its files), EXIF times of a folder of images; ``None``
        otherwise."""
        t = self._times_s
        if t is None or t.size < 2 or not (np.diff(t) > 0).all():
            return None
        return t - t[0]

    # -- backend hooks ---------------------------------------------------------------------
    def _read_gray(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` as a new ``(k, h, w)`` array in the source dtype (native order)."""
        raise NotImplementedError

    def _close(self) -> None:
        pass

    # -- basic properties ------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else "in-memory array"

    @property
    def _where(self) -> str:
        return f"'{self.path}'" if self.path is not None else "the in-memory array"

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return (self.height, self.width)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_frames, height, width)``."""
        return (self.n_frames, self.height, self.width)

    @property
    def ndim(self) -> int:
        return 3

    @property
    def size(self) -> int:
        return self.n_frames * self.height * self.width

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.n_frames

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r} format={self.format} frames={self.n_frames} "
                f"{self.width}×{self.height} {self.dtype}{' inverted' if self.invert else ''}>")

    # -- reading ---------------------------------------------------------------------------
    def _convert(self, raw: np.ndarray, start: int) -> np.ndarray:
        """Source-dtype gray frames → delivered dtype, finite check, inversion."""
        out = raw
        if out.dtype != self.dtype:
            if out.dtype.kind == "b":
                out = out.astype(np.uint8) * np.uint8(255)
            else:
                with np.errstate(over="ignore", invalid="ignore"):  # overflow → inf, caught below
                    out = out.astype(self.dtype)
        if self.dtype.kind == "f":
            finite = np.isfinite(out)
            if not finite.all():
                bad = start + int(np.flatnonzero(~finite.reshape(len(out), -1).all(axis=1))[0])
                raise ExontaInputError(
                    f"frame {bad} of {self._where} contains NaN or infinite values; replace them (e.g. by "
                    f"the background level) and save the video again")
        if self.invert:
            if self.dtype.kind == "u":
                np.invert(out, out=out)  # == dtype max - value for unsigned integers
            else:
                out = np.subtract(np.float32(self._video_max()), out, dtype=np.float32)
        return out

    def _video_max(self) -> float:
        if self._float_max is None:
            m = -np.inf
            for start in range(0, self.n_frames, 64):
                stop = min(start + 64, self.n_frames)
                raw = self._safe_read(start, stop)
                saved, self.invert = self.invert, False
                try:
                    chunk = self._convert(raw, start)
                finally:
                    self.invert = saved
                m = max(m, float(chunk.max()))
            self._float_max = m
        return self._float_max

    def _safe_read(self, start: int, stop: int) -> np.ndarray:
        with self._lock:
            try:
                raw = self._read_gray(start, stop)
            except ExontaInputError:
                raise
            except MemoryError as exc:
                raise ExontaInputError(
                    f"frames {start}–{stop - 1} of {self._where} do not fit in memory; use smaller chunks "
                    f"(chunk_frames) or a machine with more memory") from exc
            except Exception as exc:  # wrap every tifffile/OpenCV/OS error
                raise _wrap(exc, self._where) from exc
        k = stop - start
        if raw.shape != (k, self.height, self.width):
            raise ExontaInputError(
                f"frames {start}–{stop - 1} of {self._where} have shape {raw.shape[1:]} instead of "
                f"{self.frame_shape}; the file is inconsistent, re-export it")
        return raw

    def _check_index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.n_frames
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {index} is out of range for {self.name} ({self.n_frames} frames)")
        return i

    def read(self, index: int) -> np.ndarray:
        """One frame as a ``(h, w)`` array (negative indices count from the end)."""
        i = self._check_index(index)
        return self._convert(self._safe_read(i, i + 1), i)[0]

    def read_with_colour(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """One frame as :meth:`read` gives it, and the same frame in colour before its conversion to grey:
        ``(h, w, 3)`` R, G, B in the file's units and dtype (alpha left out; not inverted), or ``None`` when
        the source has one channel. Burned-in text drawn in a colour is found by it
        (:mod:`exonta.detect.overlay`)."""
        with self._lock:
            self._keep_colour, self._colour = True, None
            try:
                frame = self.read(index)
            finally:
                self._keep_colour = False
            colour, self._colour = self._colour, None
        return frame, colour

    def _gray(self, frames: np.ndarray, order: str) -> np.ndarray:
        """:func:`_to_gray` of ``(k, h, w, c)`` colour frames, keeping the last frame's colours for
        :meth:`read_with_colour` when it asks (the first conversion only: that is the frame asked for; the
        value range of an inverted float video, read afterwards, converts other frames)."""
        if getattr(self, "_keep_colour", False) and self._colour is None:
            self._colour = _rgb_frame(frames[-1], order)
        return _to_gray(frames, order)

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start`` to ``stop - 1`` as a ``(stop - start, h, w)`` array.

        ``stop`` is clipped to ``n_frames``; an empty range gives a ``(0, h, w)`` array.
        """
        start, stop = self._normalise_range(start, stop)
        if stop <= start:
            return np.empty((0, self.height, self.width), self.dtype)
        return self._convert(self._safe_read(start, stop), start)

    def _normalise_range(self, start: int, stop: int | None) -> tuple[int, int]:
        start = int(start)
        stop = self.n_frames if stop is None else min(int(stop), self.n_frames)
        if start < 0:
            raise ExontaInputError(f"start frame must be ≥ 0, got {start}")
        return start, stop

    def iter_chunks(self, chunk_frames: int = 64, start: int = 0,
                    stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield consecutive chunks of frames.

        Parameters
        ----------
        chunk_frames : int
            Maximum number of frames per chunk (memory is bounded by this, not by the video).
        start, stop : int
            Frame range, as ``range(start, stop)``; ``stop=None`` means the end of the video.

        Yields
        ------
        first : int
            Index of the first frame of the chunk.
        frames : numpy.ndarray
            ``(k, h, w)`` grayscale frames (inverted if asked), ``1 ≤ k ≤ chunk_frames``; a new
            array each time, safe to keep.
        """
        if int(chunk_frames) < 1:
            raise ExontaInputError(f"chunk_frames must be ≥ 1, got {chunk_frames}")
        chunk_frames = int(chunk_frames)
        start, stop = self._normalise_range(start, stop)
        for a in range(start, stop, chunk_frames):
            b = min(a + chunk_frames, stop)
            yield a, self._convert(self._safe_read(a, b), a)

    def __iter__(self) -> Iterator[np.ndarray]:
        for first, chunk in self.iter_chunks():
            yield from chunk

    def __getitem__(self, key: Any) -> np.ndarray:
        """NumPy-style indexing on ``(frame, row, column)``; only the frames asked for are read."""
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(j for j, k in enumerate(key) if k is Ellipsis)
            fill = 3 - (len(key) - 1)
            key = key[:i] + (slice(None),) * max(fill, 0) + key[i + 1:]
        if len(key) == 0:
            key = (slice(None),)
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):
            frames = self.read(int(first))
        elif isinstance(first, slice):
            a, b, step = first.indices(self.n_frames)
            if step == 1:
                frames = self.read_range(a, b) if b > a else np.empty((0,) + self.frame_shape, self.dtype)
            else:
                idx = range(a, b, step)
                frames = (np.stack([self.read(i) for i in idx]) if len(idx)
                          else np.empty((0,) + self.frame_shape, self.dtype))
        else:
            idx = np.asarray(first)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
            flat = [self.read(int(i)) for i in idx.ravel()]
            frames = (np.stack(flat) if flat else np.empty((0,) + self.frame_shape, self.dtype))
            frames = frames.reshape(idx.shape + self.frame_shape)
            if idx.ndim != 1:
                return frames[(Ellipsis,) + tuple(rest)] if rest else frames
        if rest:
            if frames.ndim == 2:
                return frames[tuple(rest)]
            return frames[(slice(None),) + tuple(rest)]
        return frames

    # -- provenance ------------------------------------------------------------------------
    def _hash_files(self) -> list[Path]:
        return [self.path] if self.path is not None else []

    # image folders hash each file's name too (frame order and renames change the input)
    _hash_names = False

    def sha256(self) -> str:
        """SHA-256 hex digest of the file (streamed; for a folder, see :class:`ImageFolderVideo`)."""
        try:
            return sha256_of_files(self._hash_files(), include_names=self._hash_names)
        except OSError as exc:
            raise _wrap(exc, self._where, "hashing") from exc

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        """Release the file handle (a later read re-opens the file)."""
        with self._lock:
            self._close()

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._close()
        except Exception:
            pass

    def __reduce__(self):
        return (_reopen, (type(self).__name__, str(self.path), self.invert))


def _reopen(kind: str, path: str, invert: bool) -> Video:
    cls = {c.__name__: c for c in (TiffVideo, OpenCVVideo, ImageFolderVideo, ImageFileVideo)}[kind]
    return cls(Path(path), invert=invert)


# --------------------------------------------------------------------------------------------
# TIFF
# --------------------------------------------------------------------------------------------

class TiffVideo(Video):
    """Multi-page TIFF / OME-TIFF / ImageJ stack (first image series of the file).

    Axes of the series are mapped to frames × Y × X (× samples): one leading axis of any kind
    (T, Z, pages …) is the frame axis; several non-singleton leading axes (e.g. time and channels)
    are refused. Uncompressed contiguous data are read straight from the file (:attr:`memmapped`),
    otherwise page by page through tifffile.
    """

    def __init__(self, path: Path, invert: bool = False) -> None:
        super().__init__(path, invert)
        self._tif = None
        self._fh = None
        self._whole_arr = None
        self._others = None  # open handles of the other files of a multi-file OME-TIFF
        self._parts: list[Path] = []  # the files of a multi-file OME-TIFF data set, this one first
        self._memmap_ok = False
        self._open()

    @property
    def memmapped(self) -> bool:
        """True when the frames are uncompressed and contiguous in the file (read with one positioned
        read per chunk, no decoding)."""
        return self._memmap_ok

    def _open(self) -> None:
        import tifffile

        where = self._where
        with _TiffLogCapture() as log:
            try:
                tif = tifffile.TiffFile(self.path)
            except Exception as exc:
                raise ExontaInputError(
                    f"{where} is not a readable TIFF file ({_short(exc)}); check that the file is complete "
                    f"and really a TIFF, or re-export it") from exc
            try:
                tif.series  # noqa: B018 - parse the page chain while the log is captured
            except Exception:
                pass
        self._missing_files = log.missing_files
        try:
            if log.broken_chain:
                raise ExontaInputError(
                    f"{where} is truncated or corrupt (its chain of frames points beyond the end of the "
                    f"file); copy or export the video again")
            self._setup(tif)
        except ExontaInputError:
            tif.close()
            raise
        except Exception as exc:
            tif.close()
            raise _wrap(exc, where, "opening") from exc
        self._tif = tif

    def _setup(self, tif) -> None:
        where = self._where
        series_list = tif.series
        if not series_list or len(tif.pages) == 0:
            raise ExontaInputError(f"{where} contains no images; check the file or re-export the video")
        series = series_list[0]
        axes, shape = series.axes, tuple(int(s) for s in series.shape)
        if 0 in shape:
            raise ExontaInputError(f"{where} contains 0 frames; re-export the video")
        if "Y" not in axes or "X" not in axes or axes.index("X") != axes.index("Y") + 1:
            raise ExontaInputError(
                f"{where} has image axes {axes!r} without a Y×X plane; export a T×Y×X stack")
        iy = axes.index("Y")
        h, w = shape[iy], shape[iy + 1]
        lead = [(a, s) for a, s in zip(axes[:iy], shape[:iy])]
        trail = list(zip(axes[iy + 2:], shape[iy + 2:]))
        samples, sample_pos = 1, None
        if trail:
            if len(trail) != 1 or trail[0][0] != "S":
                raise ExontaInputError(
                    f"{where} has axes {axes!r} with extra axes after X; export a T×Y×X stack")
            samples, sample_pos = trail[0][1], "last"
        elif lead and lead[-1][0] == "S":
            samples, sample_pos = lead[-1][1], "before"
            lead = lead[:-1]
        if len(lead) > 1:
            dims = " × ".join(f"{a}={s}" for a, s in lead)
            raise ExontaInputError(
                f"{where} is a hyperstack with several non-image axes ({dims}); exonta needs one "
                f"time series of single-channel frames, so export one channel/plane as a T×Y×X stack")
        n = lead[0][1] if lead else 1
        _check_dims(h, w, where)
        self.notes = []
        if len(series_list) > 1:
            self.notes.append(f"{where} holds {len(series_list)} image series; only the first ({n} frames of "
                              f"{w}×{h} px) is analysed")
        try:
            meta = _binary_only_metadata_file(tif.pages.first.description or "")
        except Exception:
            meta = None
        if meta is not None:
            self.notes.append(f"{where} is a later file of a multi-file data set whose metadata are in {meta!r}: "
                              f"only its own {n} frames are analysed; give {meta!r} to analyse the whole data set")
        label = {"Z": "Z slices", "C": "channels"}.get(lead[0][0]) if lead and n > 1 else None
        if label:
            self.notes.append(f"the {n} planes of {where} are labelled as {label}, not time points; they are "
                              "analysed as the frames of a video")
        self._order = _order_for_samples(samples, bgr=False, where=where)
        self._samples, self._sample_pos = samples, sample_pos
        self.n_frames, self.height, self.width = n, h, w
        src = np.dtype(series.dtype)
        self.source_dtype = src
        self.dtype = _output_dtype(src, where)
        self._raw_shape = (n, h, w) if samples == 1 else (
            (n, h, w, samples) if sample_pos == "last" else (n, samples, h, w))
        self._frame_raw_shape = self._raw_shape[1:]

        fsize = os.path.getsize(self.path)
        offset = series.dataoffset
        self._memmap_ok = False
        if offset is not None and src.kind in "uifb":
            nbytes = int(np.prod(self._raw_shape)) * src.itemsize
            if offset + nbytes > fsize:
                raise ExontaInputError(
                    f"{where} is truncated: it should hold {n} frames ({nbytes} bytes of image data) but "
                    f"the file ends early; copy or export the video again")
            self._memmap_ok = True
            self._mm_dtype = src.newbyteorder(tif.byteorder)
            self._mm_offset = int(offset)
        else:
            pages = series.pages
            self._parts = _series_files(tif)
            if len(pages) != n or tuple(series.keyframe.shape) != self._frame_raw_shape:
                total = int(np.prod(self._raw_shape)) * src.itemsize
                if total > 1 << 30:
                    raise ExontaInputError(
                        f"{where} stores its frames in a layout exonta cannot read page by page and is too "
                        f"large to load at once; save it as an uncompressed or one-frame-per-page TIFF")
                self._whole = True
            else:
                self._whole = False
                for i, page in enumerate(pages):
                    if page is None:
                        missing = self._missing_files
                        if missing:
                            raise ExontaInputError(
                                f"{where} belongs to a multi-file data set: its frames from {i} on are in "
                                f"{', '.join(repr(m) for m in missing)}, which is not beside it; copy all files "
                                f"of the data set into one folder")
                        raise ExontaInputError(
                            f"{where} is missing frame {i} (the file is truncated or refers to other files "
                            f"that are not there); copy the complete data set")
                    offs, counts = page.dataoffsets, page.databytecounts
                    # a multi-file OME-TIFF (Micro-Manager splits at 4 GB, Bio-Formats exports) keeps some
                    # frames in the other files of the data set: each page against its own file's size
                    parent = getattr(page, "parent", None)
                    size = fsize if parent is None or parent is tif else _file_size(parent, fsize)
                    if not offs or max(o + c for o, c in zip(offs, counts)) > size or min(counts) <= 0:
                        holder = "" if parent is None or parent is tif else f" (in {Path(parent.filename).name})"
                        raise ExontaInputError(
                            f"{where} is truncated or corrupt: the data of frame {i}{holder} lie beyond the end "
                            f"of the file; copy or export the video again")
        if tif.is_ome:
            self.format = "ome-tiff"
        elif tif.is_imagej:
            self.format = "imagej-tiff"
        else:
            self.format = "tiff"
        with _TiffLogCapture():  # a file with Micro-Manager tags but no Micro-Manager header logs its misses
            try:
                if tif.is_ome and tif.ome_metadata:
                    self._times_s = _ome_frame_times(tif.ome_metadata, self.n_frames)
            except Exception:  # unreadable OME metadata: no per-frame times (the frames are still read)
                self._times_s = None
            if self._times_s is None:
                self._times_s = _mm_frame_times(tif, self.n_frames)
            self.metadata = _tiff_metadata(tif, self._times_s)
        self.fps = self.metadata.get("fps")

    #: OME plane times (else Micro-Manager's ``ElapsedTime-ms``) are often the acquisition software's arrival
    #: times, which jitter.
    frame_times_exact = False

    def _hash_files(self) -> list[Path]:
        return list(self._parts) if len(self._parts) > 1 else super()._hash_files()

    def _ensure_open(self):
        if self._tif is None:
            import tifffile

            self._tif = tifffile.TiffFile(self.path)
        if self._others is None:
            self._others = _open_other_files(self._tif)
        return self._tif

    def _read_gray(self, start: int, stop: int) -> np.ndarray:
        k = stop - start
        if self._memmap_ok:
            raw = self._read_contiguous(start, stop)
        else:
            tif = self._ensure_open()
            if self._whole:
                if self._whole_arr is None:
                    self._whole_arr = tif.series[0].asarray().reshape(self._raw_shape)
                raw = self._whole_arr[start:stop]
            else:
                raw = tif.asarray(key=range(start, stop), series=0).reshape((k,) + self._frame_raw_shape)
        if self._samples == 1:
            out = raw if raw.dtype.isnative and raw.flags.owndata else np.array(raw, dtype=raw.dtype.newbyteorder("="))
        else:
            if self._sample_pos == "before":
                raw = np.moveaxis(raw, 1, -1)
            out = self._gray(raw, self._order)
        return out

    def _read_contiguous(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) of an uncompressed contiguous series, read straight into a new array.

        One positioned read per call: 3–5× less CPU than copying out of a memory map (which takes a
        page fault per 4 KiB of the map and of the copy).
        """
        if self._fh is None:
            self._fh = open(self.path, "rb", buffering=0)
        out = np.empty((stop - start,) + self._frame_raw_shape, self._mm_dtype)
        frame_bytes = out.nbytes // max(stop - start, 1)
        view = memoryview(out).cast("B")
        self._fh.seek(self._mm_offset + start * frame_bytes)
        got = 0
        while got < len(view):
            n = self._fh.readinto(view[got:])
            if not n:
                raise ExontaInputError(
                    f"{self._where} ended while frames {start}–{stop - 1} were read (was it truncated or "
                    f"overwritten during the analysis?); copy the complete file and run again")
            got += n
        return out

    def _close(self) -> None:
        self._whole_arr = None
        for fh in self._others or ():
            fh.close()
        self._others = None
        if self._tif is not None:
            self._tif.close()
            self._tif = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def ome_dataset_head(path: str | Path) -> Path | None:
    """The file that holds the first frame of a multi-file OME-TIFF data set that ``path`` belongs to; None when
    ``path`` is not such a part (one-file OME-TIFF, another TIFF, unreadable).

    Micro-Manager splits an acquisition into ``…_MMStack_Pos0.ome.tif``, ``…_MMStack_Pos0_1.ome.tif``, … (4 GB
    each), and tifffile reads the whole series from any of them: a batch must analyse the data set once, through
    its head, not once per file.
    """
    return _ome_dataset(path)[0]


def ome_dataset_files(path: str | Path) -> list[Path]:
    """The files a video is read from: ``[path]``, or for a multi-file OME-TIFF data set all its files in frame
    order (what its checksum covers and what a batch watches for changes)."""
    return _ome_dataset(path)[1]


def _ome_dataset(path: str | Path) -> tuple[Path | None, list[Path]]:
    """``(head, files)`` of :func:`ome_dataset_head` and :func:`ome_dataset_files`, from one opening of the file.
    Only the first page's OME-XML is read unless it names other files."""
    p = Path(path)
    if not p.name.lower().endswith((".ome.tif", ".ome.tiff")) or not p.is_file():
        return None, [p]
    try:
        import tifffile

        with _TiffLogCapture(), tifffile.TiffFile(p) as tif:
            desc = tif.pages.first.description or ""
            meta = _binary_only_metadata_file(desc)
            if meta is not None:  # tifffile reads such a part as its own frames only
                return Path(os.path.realpath(p.parent / meta)), [p]
            names = set(re.findall(r'FileName\s*=\s*"([^"]+)"', desc))
            if not names or names <= {p.name}:
                return None, [p]
            files = _series_files(tif)
            first = tif.series[0].pages[0]
            parent = getattr(first, "parent", None)
            head = p if first is None or parent is None or parent is tif else Path(parent.filehandle.path)
            return Path(os.path.realpath(head)), files if len(files) > 1 else [p]
    except Exception:
        return None, [p]


def _series_parents(tif: Any) -> list[Any]:
    """The ``TiffFile`` objects holding the pages of the first series of ``tif`` (``tif`` itself among them), in
    frame order; ``[tif]`` when the series cannot be read."""
    parents: list[Any] = []
    try:
        for page in tif.series[0].pages:
            parent = getattr(page, "parent", None)
            if page is not None and parent is not None and not any(parent is q for q in parents):
                parents.append(parent)
    except Exception:
        return [tif]
    return parents or [tif]


def _series_files(tif: Any) -> list[Path]:
    """The files holding the pages of the first series of ``tif``, in frame order (the same list whichever of
    them was opened)."""
    return [Path(parent.filehandle.path) for parent in _series_parents(tif)]


def _binary_only_metadata_file(description: str) -> str | None:
    """``MetadataFile`` of an OME-XML ``BinaryOnly`` stub (a later file of a Micro-Manager data set), else None."""
    if "BinaryOnly" not in description:
        return None
    found = re.search(r'<(?:\w+:)?BinaryOnly\b[^>]*\bMetadataFile\s*=\s*"([^"]+)"', description)
    return found.group(1) if found else None


def _open_other_files(tif: Any) -> list[Any]:
    """Open, and return, the file handles of the other files whose pages the first series of ``tif`` holds.

    tifffile closes the other files of a multi-file OME-TIFF once it has parsed them and warns ("reading array
    from closed file") each time it opens one again for a frame; kept open, they are read like the first.
    """
    handles = []
    for parent in _series_parents(tif):
        fh = parent.filehandle
        if parent is tif or not fh.closed:
            continue
        try:
            fh.open()
        except Exception:  # a file that does not open: tifffile reports it when the frame is read
            continue
        handles.append(fh)
    return handles


def _file_size(tif: Any, default: int) -> int:
    """Size in bytes of the file an open ``tifffile.TiffFile`` reads."""
    try:
        return int(tif.filehandle.size)
    except Exception:
        return default


class _TiffLogCapture(logging.Handler):
    """Collect tifffile's log messages while a file is opened (it logs, not raises, broken chains)."""

    _MARKERS = ("invalid page offset", "invalid offset to first page", "failed to reshape")

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.broken_chain = False
        self.missing_files: list[str] = []  # other files of a multi-file OME-TIFF that could not be read

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:
            return
        if any(m in msg for m in self._MARKERS):
            self.broken_chain = True
        found = re.search(r"failed to read '([^']+)'", msg)
        if found:
            self.missing_files.append(found.group(1))

    def __enter__(self) -> _TiffLogCapture:
        logging.getLogger("tifffile").addHandler(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger("tifffile").removeHandler(self)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]




def _ome_plane_times(planes: list) -> list[tuple[int, float]]:
    """``(TheT, DeltaT in s)`` of the OME ``Plane`` elements of the first channel and Z plane, sorted by TheT
    (one per time point; planes without a usable time are left out)."""
    stamps = {}
    for p in planes:
        if p.get("TheC", "0") == "0" and p.get("TheZ", "0") == "0":
            t, u = finite_or_none(p.get("DeltaT")), p.get("DeltaTUnit", "s").strip().lower()
            if t is not None and u in _TIME_TO_S and finite_or_none(p.get("TheT")) is not None:
                stamps[int(float(p.get("TheT")))] = t * _TIME_TO_S[u]
    return sorted(stamps.items())


def _ome_pixels(xml: str):
    """The first ``Pixels`` element of an OME-XML text, or None (unparsable or without one)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    return next((e for e in root.iter() if _local(e.tag) == "Pixels"), None)


def _ome_frame_times(xml: str, n_frames: int) -> np.ndarray | None:
    """The OME planes' ``DeltaT`` (s) of time points ``0 … n_frames − 1``, or None unless every one has a time."""
    pixels = _ome_pixels(xml)
    if pixels is None:
        return None
    stamps = _ome_plane_times([e for e in pixels if _local(e.tag) == "Plane"])
    if [t for t, _ in stamps] != list(range(n_frames)):
        return None
    return np.array([s for _, s in stamps], float)


def _ome_metadata(xml: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pixels = _ome_pixels(xml)
    if pixels is None:
        return out
    a = pixels.attrib
    px = finite_or_none(a.get("PhysicalSizeX"))
    unit = a.get("PhysicalSizeXUnit", "µm").strip().lower()
    if px is not None and unit in _LENGTH_TO_UM:
        v = px * _LENGTH_TO_UM[unit]
        if _in_range(v, _PIXEL_SIZE_RANGE_UM):
            out["pixel_size_um"] = v
    planes = [e for e in pixels if _local(e.tag) == "Plane"]
    dt = finite_or_none(a.get("TimeIncrement"))
    tunit = a.get("TimeIncrementUnit", "s").strip().lower()
    interval = dt * _TIME_TO_S[tunit] if dt is not None and tunit in _TIME_TO_S else None
    if interval is None or interval <= 0:
        # fall back on the time stamps of the planes of the first channel/plane
        stamps = _ome_plane_times(planes)
        if len(stamps) >= 2:
            diffs = np.diff([s for _, s in stamps]) / np.diff([t for t, _ in stamps])
            interval = float(np.median(diffs)) if np.all(np.isfinite(diffs)) else None
    if interval is not None and interval > 0 and _in_range(1.0 / interval, _FPS_RANGE):
        out["fps"] = 1.0 / interval
    exposures = []
    for p in planes:
        e, u = finite_or_none(p.get("ExposureTime")), p.get("ExposureTimeUnit", "s").strip().lower()
        if e is not None and u in _TIME_TO_S:
            exposures.append(e * _TIME_TO_S[u])
    if exposures:
        e = float(np.median(exposures))
        if _in_range(e, _EXPOSURE_RANGE_S):
            out["exposure_s"] = e
    return out


def _resolution_um(page, unit_to_um: float | None) -> float | None:
    tag = page.tags.get("XResolution")
    if tag is None or unit_to_um is None:
        return None
    val = tag.value
    try:
        num, den = (val if isinstance(val, tuple) else (val, 1))[:2]
        px_per_unit = float(num) / float(den)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(px_per_unit) or px_per_unit <= 0:
        return None
    return unit_to_um / px_per_unit


def _mm_image_metadata(page) -> dict | None:
    """The Micro-Manager per-image metadata (JSON in private TIFF tag 51123) of one page, or None."""
    tag = page.tags.get(_MM_TAG)
    value = tag.value if tag is not None else None
    return value if isinstance(value, dict) else None


def _mm_elapsed_s(md: dict | None) -> float | None:
    """Micro-Manager's ``ElapsedTime-ms`` of one image's metadata, in s (None when missing)."""
    t = finite_or_none((md or {}).get("ElapsedTime-ms"))
    return None if t is None else t / 1000.0


def _mm_acquisition(md: dict | None, out: dict[str, Any]) -> None:
    """Pixel size (``PixelSizeUm``) and exposure (``Exposure-ms``) of Micro-Manager's per-image metadata, into
    ``out`` where it has none yet and the values are plausible."""
    md = md or {}
    v = finite_or_none(md.get("PixelSizeUm"))
    if "pixel_size_um" not in out and v and _in_range(v, _PIXEL_SIZE_RANGE_UM):
        out["pixel_size_um"] = v
    e = finite_or_none(md.get("Exposure-ms"))
    if "exposure_s" not in out and e is not None and _in_range(e / 1000.0, _EXPOSURE_RANGE_S):
        out["exposure_s"] = e / 1000.0


def _all_times(times) -> np.ndarray | None:
    """The times of an iterable (s, None for a frame without one) as an array; None at the first missing one."""
    out = []
    for t in times:
        if t is None:
            return None
        out.append(t)
    return np.array(out, float) if out else None


def _mm_frame_times(tif, n_frames: int) -> np.ndarray | None:
    """Micro-Manager's per-image ``ElapsedTime-ms`` (s) of the first series' ``n_frames`` pages, or None
    unless the file has the tag and every frame gives a time.

    Micro-Manager writes the time each image reached the acquisition software: it follows the camera's
    frames with some jitter, and a gap where the camera or the software dropped frames.
    """
    try:
        if not tif.pages.first.is_micromanager:
            return None
        pages = tif.series[0].pages
        if len(pages) != n_frames or any(p is None for p in pages):
            return None
        return _all_times(_mm_elapsed_s(_mm_image_metadata(tif.pages.get(p.index, aspage=True, cache=False)))
                          for p in pages)
    except Exception:  # unreadable tags: no per-frame times (the frames are still read)
        return None


def _rate_from_times(times_s: np.ndarray | None) -> float | None:
    """The camera's frame rate (frames/s) from per-frame times: the rate of their time grid
    (:func:`exonta.io.timing.frame_timing`, which sees dropped frames), else, for times on no steady grid
    (software arrival times that jitter), the slope of the times against the frame index."""
    from .timing import frame_timing

    if times_s is None or times_s.size < 2 or not (np.diff(times_s) > 0).all():
        return None
    timing = frame_timing(times_s)
    if timing is not None and timing.grid is not None:
        rate = timing.fps
    else:
        slope = float(np.polyfit(np.arange(times_s.size, dtype=float), times_s, 1)[0])
        rate = 1.0 / slope if slope > 0 else None
    return rate if rate is not None and math.isfinite(rate) and _in_range(rate, _FPS_RANGE) else None


def _tiff_metadata(tif, frame_times_s: np.ndarray | None = None) -> dict[str, Any]:
    """Acquisition values recorded in a TIFF (OME, ImageJ, Micro-Manager or baseline tags).

    The frame rate comes from, in this order: OME ``TimeIncrement`` (else the planes' ``DeltaT``), ImageJ's
    ``finterval``, the per-frame times ``frame_times_s`` (Micro-Manager's ``ElapsedTime-ms``: what the camera
    delivered), Micro-Manager's ``Interval_ms`` (what was asked for; 0 for "as fast as the camera goes"), Andor
    Solis's kinetic cycle time. The exposure comes from OME ``ExposureTime``, Micro-Manager's ``Exposure-ms`` or
    Andor's exposure time.
    """
    out: dict[str, Any] = {}
    try:
        if tif.is_ome and tif.ome_metadata:
            out.update(_ome_metadata(tif.ome_metadata))
    except Exception:
        pass
    page = tif.pages[0]
    ij = None
    try:
        ij = tif.imagej_metadata if tif.is_imagej else None
    except Exception:
        ij = None
    if ij:
        if "pixel_size_um" not in out:
            unit = str(ij.get("unit", "")).strip().lower()
            v = _resolution_um(page, _LENGTH_TO_UM.get(unit))
            if _in_range(v, _PIXEL_SIZE_RANGE_UM):
                out["pixel_size_um"] = v
        fi = finite_or_none(ij.get("finterval"))
        if "fps" not in out and fi is not None and fi > 0 and _in_range(1.0 / fi, _FPS_RANGE):
            out["fps"] = 1.0 / fi
    if "fps" not in out:
        rate = _rate_from_times(frame_times_s)
        if rate is not None:
            out["fps"] = rate
    try:
        image = _mm_image_metadata(page) or {}
        mm = tif.micromanager_metadata if tif.is_micromanager else None
        summary = (mm or {}).get("Summary") or {}
        if "pixel_size_um" not in out:
            v = finite_or_none(summary.get("PixelSize_um"))
            if v and _in_range(v, _PIXEL_SIZE_RANGE_UM):
                out["pixel_size_um"] = v
        if "fps" not in out:
            iv = finite_or_none(summary.get("Interval_ms"))
            if iv and iv > 0 and _in_range(1000.0 / iv, _FPS_RANGE):
                out["fps"] = 1000.0 / iv
        _mm_acquisition(image, out)
    except Exception:
        pass
    try:  # Andor Solis: private tags 4864-5030, times in s
        andor = page.andor_tags if page.is_andor else None
        if andor:
            cycle = finite_or_none(andor.get("KineticCycleTime"))
            if "fps" not in out and cycle is not None and cycle > 0 and _in_range(1.0 / cycle, _FPS_RANGE):
                out["fps"] = 1.0 / cycle
            e = finite_or_none(andor.get("ExposureTime"))
            if "exposure_s" not in out and e is not None and _in_range(e, _EXPOSURE_RANGE_S):
                out["exposure_s"] = e
    except Exception:
        pass
    if "pixel_size_um" not in out and not ij:
        tag = page.tags.get("ResolutionUnit")
        unit = int(tag.value) if tag is not None else 2
        v = _resolution_um(page, {2: 25400.0, 3: 10000.0}.get(unit))
        if _in_range(v, _RESOLUTION_PHYSICAL_UM):
            out["pixel_size_um"] = v
    _drop_impossible_exposure(out)
    return out


def _drop_impossible_exposure(out: dict[str, Any]) -> None:
    """Leave out a recorded exposure longer than the recorded frame interval.

    A camera cannot expose a frame for longer than the interval between frames, so one of the two values is
    not a frame's (an exposure setting of another mode, a requested rather than the achieved rate). The rate is
    kept: the sizes need it, and the exposure then falls back to the assumed one, which the analysis reports
    with its effect. Without this a file's inconsistent metadata would end in the pipeline's "exposure longer
    than the frame interval" error, which is meant for values the user gives.
    """
    e = out.get("exposure_s")
    fps = out.get("fps")
    if e is not None and fps and e > 1.0 / fps * (1.0 + 1e-6):
        del out["exposure_s"]


# --------------------------------------------------------------------------------------------
# movies (OpenCV)
# --------------------------------------------------------------------------------------------

_OPENCV_QUIETED = False


def _quiet_opencv() -> None:
    """Silence OpenCV's and FFmpeg's own messages on stderr (exonta reports the problem itself).

    Without this, a corrupt movie prints ``[ WARN:0] global cap.cpp ...`` or ``[mjpeg @ 0x...]
    overread`` lines before exonta's one-line error. ``OPENCV_FFMPEG_LOGLEVEL`` is only set when
    the user has not set it (it is read when OpenCV's FFmpeg backend first opens a file).
    """
    global _OPENCV_QUIETED
    if _OPENCV_QUIETED:
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # OpenCV builds without the utils.logging module
        pass
    _OPENCV_QUIETED = True


#: Codecs (FOURCC, lower case) that code frames as differences from other frames, by family name.
_INTER_FRAME_CODECS = {
    **dict.fromkeys(("h264", "avc1", "avc3", "x264", "davc"), "H.264"),
    **dict.fromkeys(("hevc", "hev1", "hvc1", "h265", "x265"), "H.265/HEVC"),
    **dict.fromkeys(("mp4v", "fmp4", "xvid", "divx", "dx50", "dx40", "3ivx", "m4s2"), "MPEG-4 part 2"),
    **dict.fromkeys(("mpg1", "mpg2", "mpeg", "m2v1"), "MPEG-1/2"),
    **dict.fromkeys(("vp80", "vp8 "), "VP8"),
    **dict.fromkeys(("vp90", "vp09", "vp9 "), "VP9"),
    **dict.fromkeys(("av01",), "AV1"),
    **dict.fromkeys(("wmv3", "wvc1", "wmv2", "wmv1"), "Windows Media Video"),
    **dict.fromkeys(("h263", "s263", "u263"), "H.263"),
    **dict.fromkeys(("flv1",), "Sorenson Spark (H.263, Flash video)"),
    **dict.fromkeys(("theo",), "Theora"),
}


#: An 8-bit movie whose first frame stays below this grey level gets a note (16-bit frames reduced to 8 bits?).
_FEW_LEVELS = 16

#: Suffixes of JPEG image files (lossy).
_JPEG_EXTENSIONS = (".jpg", ".jpeg")
#: Motion-JPEG four-character codes (each frame a JPEG image: lossy, but coded by itself).
_MJPEG_CODECS = frozenset(("mjpg", "mjpa", "mjpb", "jpeg", "avdj", "dmb1", "avrn"))


def _fourcc(value: Any) -> str:
    """The four-character code of an OpenCV ``CAP_PROP_FOURCC`` value ("" when unknown)."""
    v = finite_or_none(value)
    if v is None or v <= 0:
        return ""
    text = int(v).to_bytes(4, "little", signed=False).decode("latin-1")
    return text if text.isprintable() else ""


class OpenCVVideo(Video):
    """AVI / MP4 / MOV / MKV movie decoded by OpenCV (FFmpeg backend), read sequentially.

    :attr:`codec` is the container's four-character code (``"h264"``, ``"MJPG"``, ...; ``""`` when
    unknown). A codec that codes frames as differences from other frames (H.264, HEVC, MPEG-4, VP8/9,
    AV1, ...) adds a note (:attr:`Video.notes`): its motion prediction biases small displacements.

    The frame count stored in the container is checked at opening (the last announced frame must
    be decodable and be the last one); when it is missing or wrong the frames are counted by
    decoding the file once. A file that decodes to markedly fewer frames than its header announces
    is reported as truncated. Random access (:meth:`read`) seeks, which is slower than reading
    forwards.
    """

    _SEEK_FORWARD_MAX = 64  # read forward instead of seeking when the target is this close

    def __init__(self, path: Path, invert: bool = False) -> None:
        super().__init__(path, invert)
        self._cap = None
        self._pos = 0
        self._pos_exact = True  # the next frame read is frame _pos for sure (not after an approximate seek)
        self._times_ms: np.ndarray | None = None  # per-frame timestamps, filled as frames are read in order
        self._raw16 = False  # decoded without OpenCV's 8-bit BGR conversion (16-bit grey movies)
        self.codec = ""
        self.format = self.path.suffix.lower().lstrip(".")
        try:
            self._setup()
        except ExontaInputError:
            self._close()
            raise
        except Exception as exc:
            self._close()
            raise _wrap(exc, self._where, "opening") from exc

    def _new_capture(self):
        _quiet_opencv()
        import cv2

        cap = None
        backends = [cv2.CAP_FFMPEG]
        if self.path.suffix.lower() == ".avi" and not self._raw16:
            backends.append(cv2.CAP_OPENCV_MJPEG)
        for api in backends:
            try:
                cap = (cv2.VideoCapture(str(self.path), api, [cv2.CAP_PROP_CONVERT_RGB, 0]) if self._raw16 else
                       cv2.VideoCapture(str(self.path), api))
            except cv2.error:
                cap = None
            if cap is not None and cap.isOpened():
                return cap
            if cap is not None:
                cap.release()
        raise ExontaInputError(
            f"{self._where} could not be opened as a video (unknown codec, corrupt or not a movie file); "
            f"check the file or convert it to an uncompressed TIFF stack")

    def _ensure_open(self):
        if self._cap is None:
            self._cap = self._new_capture()
            self._pos = 0
            self._pos_exact = True
        return self._cap

    def _note_time(self, index: int) -> None:
        """Keep the timestamp of frame ``index``, just grabbed, when the read position is known exactly."""
        if self._pos_exact and self._times_ms is not None and 0 <= index < self._times_ms.size:
            import cv2

            self._times_ms[index] = self._cap.get(cv2.CAP_PROP_POS_MSEC)

    def frame_times_s(self) -> np.ndarray | None:
        """Each frame's presentation timestamp (s, the first frame at 0), as the container stores it.

        The times are kept as the frames are read in order (an analysis reads every frame); the frames not
        read that way yet are decoded once here. ``None`` when the container gives no usable times (not
        increasing). A camera or capture program that drops frames leaves gaps in these times
        (:func:`exonta.io.timing.frame_timing`).
        """
        with self._lock:
            t = self._times_ms
            if t is None or not np.isfinite(t).all():
                self._close()
                cap = self._ensure_open()
                for i in range(self.n_frames):
                    if not cap.grab():
                        self._close()
                        self._truncated(i)
                    self._pos = i + 1
                    self._note_time(i)
                t = self._times_ms
            times = (t - t[0]) / 1000.0
        if times.size > 1 and not (np.diff(times) > 0).all():
            return None
        return times

    def _setup(self) -> None:
        import cv2

        cap = self._ensure_open()
        ok, frame = cap.read()
        self.codec = _fourcc(cap.get(cv2.CAP_PROP_FOURCC))
        if not ok or frame is None:
            why = (f"its codec ({self.codec}) cannot be decoded here, or the file is corrupt; re-export it as "
                   "uncompressed, MJPEG or FFV1 AVI or as a TIFF stack" if self.codec else
                   "0 frames, or a corrupt file; check the recording or re-export it")
            raise ExontaInputError(f"{self._where} contains no decodable frame ({why})")
        self._pos = 1
        family = _INTER_FRAME_CODECS.get(self.codec.lower())
        self.lossy = family or ("Motion JPEG" if self.codec.lower() in _MJPEG_CODECS else None)
        if family is None and self._sixteen_bit_grey(frame.shape[:2]):
            self._close()
            self._raw16 = True
            cap = self._ensure_open()
            ok, frame = cap.read()
            if not ok or frame is None:
                raise ExontaInputError(f"{self._where} contains no decodable frame (0 frames, or a corrupt file)")
            self._pos = 1
        h, w = frame.shape[:2]
        _check_dims(h, w, self._where)
        self.height, self.width = int(h), int(w)
        if frame.dtype == np.uint8 and 0 < int(frame.max()) < _FEW_LEVELS:
            self.notes.append(
                f"the first frame of {self._where} holds only grey levels 0-{int(frame.max())} of 255: if the camera "
                "recorded more than 8 bits, the movie's frames lost their lower bits when decoded (OpenCV reads "
                "16-bit PNG or big-endian frames in a movie as 8-bit); export the recording as a 16-bit TIFF stack")
        c = 1 if frame.ndim == 2 else frame.shape[2]
        self._order = _order_for_samples(c, bgr=True, where=self._where)
        self.source_dtype = np.dtype(frame.dtype)
        self.dtype = _output_dtype(self.source_dtype, self._where)
        fps = finite_or_none(cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps if fps is not None and 0 < fps <= 1e5 else None
        if family is not None:
            self.notes.append(
                f"{self._where} is compressed with {family}, a codec that predicts each frame from other frames: "
                "it smooths dim spots and can hold small displacements still, which reads as slower motion, so "
                "small particles can size several % too large (+2 to +8 % on 100 nm beads at H.264 quality "
                "CRF 18-28); record uncompressed or lossless (TIFF, raw or FFV1 AVI) for release measurements")
        if self.fps is not None:
            self.metadata = {"fps": self.fps}
        reported = finite_or_none(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        reported = int(round(reported)) if reported is not None and reported > 0 else 0
        counted: list[float] = []
        self.n_frames = self._verify_count(reported, counted)
        self._times_ms = np.full(self.n_frames, np.nan)
        if len(counted) == self.n_frames:
            self._times_ms[:] = counted

    def _sixteen_bit_grey(self, shape: tuple[int, int]) -> bool:
        """Whether the movie's frames are 16-bit grey (FFV1 or raw gray16le, as scientific recorders write).

        OpenCV converts every decoded frame to 8-bit BGR, which keeps only the top 8 bits: a 12-bit camera's
        frames would come out as a few grey levels. Decoded without that conversion, such a stream comes back
        as 16-bit single-channel frames (FFmpeg's gray16le; other formats come back as 8-bit planes or
        colour and are read through the conversion as before). The probe opens the file a second time
        (~35 ms for a 1024² H.264 movie), so it is not made for the inter-frame codecs, whose decoders here
        give no 16-bit grey frames.
        """
        import cv2

        if self._cap is None or self._cap.getBackendName() != "FFMPEG":
            return False
        try:
            probe = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_CONVERT_RGB, 0])
        except cv2.error:
            return False
        try:
            ok, raw = probe.read() if probe.isOpened() else (False, None)
        finally:
            probe.release()
        return bool(ok and raw is not None and raw.dtype == np.uint16 and raw.shape == tuple(shape))

    def _verify_count(self, reported: int, times_ms: list[float]) -> int:
        """The number of decodable frames. When the header's count has to be checked by decoding, the
        frames' timestamps are appended to ``times_ms`` on the way."""
        import cv2

        cap = self._cap
        if reported == 1:
            if not cap.grab():
                return 1
        elif reported > 1:
            try:
                cap.set(cv2.CAP_PROP_POS_FRAMES, reported - 1)
                ok = cap.grab()
                if ok and not cap.grab():
                    self._close()
                    return reported
            except cv2.error:
                pass
        # header count missing or wrong: count by decoding once from the start
        self._close()
        cap = self._ensure_open()
        n = 0
        while cap.grab():
            times_ms.append(cap.get(cv2.CAP_PROP_POS_MSEC))
            n += 1
        self._close()
        if n == 0:
            raise ExontaInputError(
                f"{self._where} contains no decodable frame; check the recording or re-export it")
        if reported and n < reported - max(2, int(0.01 * reported)) and not self._complete(times_ms, reported):
            raise ExontaInputError(
                f"{self._where} is truncated or corrupt: its header announces {reported} frames but only "
                f"{n} can be decoded; copy or export the video again")
        return n

    def _complete(self, times_ms: list[float], reported: int) -> bool:
        """Whether decoded frames that fall short of the header's count still reach its end in time.

        Without a stored count (Matroska, WebM) the count is the duration × the frame rate. A recording
        whose camera or capture program dropped frames has fewer frames than that, but its last frame is
        stamped at the end; a truncated file stops early.
        """
        fps = self.fps
        t = np.asarray(times_ms, float)
        if fps is None or t.size < 2 or not np.isfinite(t).all() or not (np.diff(t) > 0).all():
            return False
        end_ms = (reported - 1) / fps * 1000.0
        return bool(t[-1] - t[0] >= end_ms - 2.0 * 1000.0 / fps)

    def _seek(self, index: int) -> None:
        import cv2

        cap = self._ensure_open()
        if index == self._pos:
            return
        if self._pos < index <= self._pos + self._SEEK_FORWARD_MAX:
            while self._pos < index:
                if not cap.grab():
                    self._truncated(self._pos)
                self._note_time(self._pos)
                self._pos += 1
            return
        if index == 0:
            self._close()
            self._ensure_open()
            return
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        self._pos = index
        # OpenCV seeks by time (index / frame rate): in a movie with gaps in its timestamps it lands near,
        # not on, the frame; times read from here on are not trusted until the next read from the start
        self._pos_exact = False

    def _truncated(self, index: int):
        raise ExontaInputError(
            f"frame {index} of {self._where} could not be decoded although the video has {self.n_frames} "
            f"frames; the file is truncated or corrupt, copy or export it again")

    def _read_gray(self, start: int, stop: int) -> np.ndarray:
        self._seek(start)
        cap = self._cap
        out = np.empty((stop - start, self.height, self.width), self.source_dtype)
        for j in range(stop - start):
            ok, frame = cap.read()
            if not ok or frame is None:
                self._close()
                self._truncated(start + j)
            self._note_time(start + j)
            self._pos += 1
            if frame.shape[:2] != (self.height, self.width):
                raise ExontaInputError(
                    f"frame {start + j} of {self._where} has a different size than the first frame; the "
                    f"file is corrupt, re-export it")
            if self._order is None:
                out[j] = frame if frame.ndim == 2 else frame[..., 0]
            else:
                out[j] = self._gray(frame[None], self._order)[0]
        return out

    def _close(self) -> None:
        cap = getattr(self, "_cap", None)
        if cap is not None:
            cap.release()
        self._cap = None
        self._pos = 0


# --------------------------------------------------------------------------------------------
# image files and folders
# --------------------------------------------------------------------------------------------

def _decode_image(path: Path) -> tuple[np.ndarray, str | None]:
    """Decode one image file → (array (h, w) or (h, w, c), colour order or None)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ExontaInputError(f"'{path}' contains no image; remove it or re-export it")
            s = tif.series[0]
            axes = s.axes
            if axes not in ("YX", "YXS", "SYX"):
                raise ExontaInputError(
                    f"'{path}' holds {s.shape} ({axes}) instead of one 2-D image; a folder must hold one "
                    f"image per frame")
            arr = s.asarray()
            if axes == "SYX":
                arr = np.moveaxis(arr, 0, -1)
            order = None if arr.ndim == 2 else _order_for_samples(arr.shape[2], False, f"'{path}'")
            return arr, order
    import cv2

    buf = np.fromfile(path, dtype=np.uint8)
    if buf.size == 0:
        raise ExontaInputError(f"'{path}' is empty (0 bytes); remove it or copy it again")
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ExontaInputError(
            f"'{path}' could not be decoded as an image; it is corrupt or not a "
            f"{path.suffix.lstrip('.').upper()} file, replace or remove it")
    order = None if arr.ndim == 2 else _order_for_samples(arr.shape[2], True, f"'{path}'")
    return arr, order


def _gray_frame(path: Path, video: Video | None = None) -> np.ndarray:
    """The image file as a gray ``(h, w)`` frame (colour converted by ``video._gray`` when given, so that
    :meth:`Video.read_with_colour` sees the colours)."""
    try:
        arr, order = _decode_image(path)
    except ExontaInputError:
        raise
    except Exception as exc:
        raise _wrap(exc, f"'{path}'", "decoding") from exc
    if order is not None:
        arr = (video._gray if video is not None else _to_gray)(arr[None], order)[0]
    return np.asarray(arr, dtype=arr.dtype.newbyteorder("="))


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image header, without decoding; None when unknown."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return tuple(int(v) for v in im.size)  # type: ignore[return-value]
    except Exception:
        return None


class ImageFileVideo(Video):
    """A single image file (PNG, JPEG, BMP): a 1-frame video."""

    def __init__(self, path: Path, invert: bool = False) -> None:
        super().__init__(path, invert)
        self.format = "image"
        self.lossy = "JPEG" if self.path.suffix.lower() in _JPEG_EXTENSIONS else None
        frame = _gray_frame(self.path)
        _check_dims(frame.shape[0], frame.shape[1], self._where)
        self.n_frames, self.height, self.width = 1, int(frame.shape[0]), int(frame.shape[1])
        self.source_dtype = frame.dtype
        self.dtype = _output_dtype(frame.dtype, self._where)

    def _read_gray(self, start: int, stop: int) -> np.ndarray:
        return _gray_frame(self.path, self)[None].copy()


#: Microscope vendors' own file formats (not read: exported as OME-TIFF they are), by extension.
MICROSCOPE_FORMATS = {
    ".nd2": "Nikon NIS-Elements (ND2)", ".czi": "Zeiss ZEN (CZI)", ".lif": "Leica LAS X (LIF)",
    ".lsm": "Zeiss LSM", ".oib": "Olympus FluoView (OIB)", ".oif": "Olympus FluoView (OIF)",
    ".vsi": "Olympus cellSens (VSI)", ".ims": "Imaris (IMS)", ".sif": "Andor Solis (SIF)",
    ".cxd": "Hamamatsu HCImage (CXD)", ".zarr": "Zarr (OME-Zarr)", ".nd": "MetaMorph (ND)",
    ".stk": "MetaMorph (STK)", ".dv": "DeltaVision (DV)", ".spe": "Princeton Instruments (SPE)",
}

_EXIF_IFD = 0x8769
_EXIF_EXPOSURE_TIME = 0x829A
_EXIF_DATETIME_ORIGINAL = 0x9003
_EXIF_SUBSEC_ORIGINAL = 0x9291


def _mm_file_metadata(path: Path) -> dict | None:
    """Micro-Manager's per-image metadata of a one-image TIFF file (tag 51123), or None."""
    import tifffile

    with _TiffLogCapture():
        try:
            with tifffile.TiffFile(path) as tif:
                return _mm_image_metadata(tif.pages.first)
        except Exception:
            return None


def _exif_of(path: Path) -> tuple[float | None, float | None]:
    """``(exposure_s, time_s)`` from an image's EXIF: ``ExposureTime`` and ``DateTimeOriginal`` +
    ``SubSecTimeOriginal`` (seconds since the epoch, as if UTC; None without sub-second digits)."""
    import datetime as _dt

    from PIL import Image

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            sub = exif.get_ifd(_EXIF_IFD)
    except Exception:
        return None, None
    exposure = finite_or_none(sub.get(_EXIF_EXPOSURE_TIME))
    stamp, frac = sub.get(_EXIF_DATETIME_ORIGINAL), str(sub.get(_EXIF_SUBSEC_ORIGINAL) or "").strip().strip("\x00")
    t = None
    if isinstance(stamp, str) and frac.isdigit():
        try:
            base = _dt.datetime.strptime(stamp.strip().strip("\x00"), "%Y:%m:%d %H:%M:%S")
            t = base.replace(tzinfo=_dt.timezone.utc).timestamp() + int(frac) / 10 ** len(frac)
        except ValueError:
            t = None
    return exposure, t


def _folder_metadata(files: list[Path]) -> tuple[dict[str, Any], np.ndarray | None]:
    """Acquisition values and per-image times recorded in a folder's images.

    Micro-Manager's "separate image files" (one TIFF per image, each with its per-image metadata: tag 51123):
    ``ElapsedTime-ms`` of every image, ``Exposure-ms`` and ``PixelSizeUm``. Otherwise EXIF (cameras and phones,
    JPEG or TIFF): ``ExposureTime``, and ``DateTimeOriginal`` + ``SubSecTimeOriginal`` of every image as times.
    The frame rate comes from the times (:func:`_rate_from_times`). Nothing is read when the first image has
    neither.
    """
    out: dict[str, Any] = {}
    times = None
    first = files[0]
    mm = _mm_file_metadata(first) if first.suffix.lower() in (".tif", ".tiff") else None
    if mm is not None:
        _mm_acquisition(mm, out)
        times = _all_times(_mm_elapsed_s(mm if p == first else _mm_file_metadata(p)) for p in files)
    else:
        exposure, t0 = _exif_of(first)
        if exposure is not None and _in_range(exposure, _EXPOSURE_RANGE_S):
            out["exposure_s"] = exposure
        if t0 is not None:
            times = _all_times(t0 if p == first else _exif_of(p)[1] for p in files)
    rate = _rate_from_times(times)
    if rate is not None:
        out["fps"] = rate
    _drop_impossible_exposure(out)
    return out, times


class ImageFolderVideo(Video):
    """A folder of image files (PNG, JPEG, TIFF, BMP), one per frame, in natural sort order.

    Hidden files and other file types are ignored. All images must have the same size and pixel
    type. :meth:`sha256` hashes, for every image in frame order, its file name (UTF-8), a NUL byte
    and its content.
    """

    def __init__(self, path: Path, invert: bool = False) -> None:
        super().__init__(path, invert)
        self.format = "image-folder"
        try:
            entries = [p for p in self.path.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _FOLDER_EXTENSIONS]
        except OSError as exc:
            raise _wrap(exc, self._where, "listing the folder") from exc
        if not entries:
            raise ExontaInputError(
                f"folder {self._where} contains no image files ({', '.join(_FOLDER_EXTENSIONS)}); put one "
                f"image per frame in it or give the path of a video file")
        self.files = sorted(entries, key=lambda p: natural_sort_key(p.name))
        self.lossy = "JPEG" if any(p.suffix.lower() in _JPEG_EXTENSIONS for p in self.files) else None
        first = _gray_frame(self.files[0])
        h, w = int(first.shape[0]), int(first.shape[1])
        _check_dims(h, w, f"'{self.files[0]}'")
        for p in self.files[1:]:
            size = _header_size(p)
            if size is not None and size != (w, h):
                raise ExontaInputError(
                    f"images in folder {self._where} differ in size: '{p.name}' is {size[0]}×{size[1]} px "
                    f"but '{self.files[0].name}' is {w}×{h} px; all frames must have the same size")
        self.n_frames, self.height, self.width = len(self.files), h, w
        self.source_dtype = first.dtype
        self.dtype = _output_dtype(first.dtype, self._where)
        self.metadata, self._times_s = _folder_metadata(self.files)
        self.fps = self.metadata.get("fps")

    #: Per-image times in a folder are software arrival times (Micro-Manager) or camera clock times with
    #: millisecond resolution (EXIF): they may jitter.
    frame_times_exact = False

    def _read_gray(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.height, self.width), self.source_dtype)
        for j, p in enumerate(self.files[start:stop]):
            frame = _gray_frame(p, self)
            if frame.shape != self.frame_shape:
                raise ExontaInputError(
                    f"images in folder {self._where} differ in size: '{p.name}' is "
                    f"{frame.shape[1]}×{frame.shape[0]} px but the first image is {self.width}×{self.height} "
                    f"px; all frames must have the same size")
            if frame.dtype != self.source_dtype:
                raise ExontaInputError(
                    f"images in folder {self._where} differ in pixel type: '{p.name}' is {frame.dtype} but "
                    f"the first image is {self.source_dtype}; save all frames with the same bit depth")
            out[j] = frame
        return out

    _hash_names = True

    def _hash_files(self) -> list[Path]:
        return list(self.files)


# --------------------------------------------------------------------------------------------
# in-memory arrays
# --------------------------------------------------------------------------------------------

class ArrayVideo(Video):
    """An in-memory array with the :class:`Video` interface (no copy unless a conversion is needed).

    Parameters
    ----------
    arr : array_like
        ``(n, h, w)`` frames, ``(h, w)`` one frame, or ``(n, h, w, 3|4)`` RGB(A) frames.
    fps : float, optional
        Frame rate (frames/s), reported as :attr:`fps` and ``metadata["fps"]``.
    invert : bool
        Invert values (bright-field videos).
    metadata : dict, optional
        Further acquisition values (``pixel_size_um``, ``exposure_s``).
    """

    def __init__(self, arr: Any, fps: float | None = None, invert: bool = False,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(None, invert)
        self.format = "array"
        a = np.asarray(arr)
        where = self._where
        if a.ndim == 2:
            a = a[None]
        order = None
        if a.ndim == 4:
            order = _order_for_samples(a.shape[3], bgr=False, where=where)
        elif a.ndim != 3:
            raise ExontaInputError(
                f"the in-memory array has shape {a.shape}; give frames as (n, h, w) or (n, h, w, 3)")
        if a.shape[0] == 0:
            raise ExontaInputError("the in-memory array contains 0 frames; give at least one frame")
        _check_dims(a.shape[1], a.shape[2], where)
        self.source_dtype = a.dtype
        self.dtype = _output_dtype(a.dtype, where)
        self._arr, self._order = a, order
        self.n_frames, self.height, self.width = (int(s) for s in a.shape[:3])
        self.metadata = dict(metadata or {})
        if fps is not None:
            fps = float(fps)
            if not (math.isfinite(fps) and fps > 0):
                raise ExontaInputError(f"fps must be a positive number, got {fps}")
            self.fps = fps
            self.metadata["fps"] = fps

    def _read_gray(self, start: int, stop: int) -> np.ndarray:
        raw = self._arr[start:stop]
        if self._order is not None:
            return self._gray(raw, self._order)
        return np.array(raw, dtype=raw.dtype.newbyteorder("="))

    def _video_max(self) -> float:
        if self._float_max is None and self._order is None and self.source_dtype.kind == "f":
            if not np.isfinite(self._arr).all():
                self._convert(self._arr, 0)  # raises with the frame number
            self._float_max = float(self._arr.max())
        return super()._video_max()

    def sha256(self) -> str:
        """SHA-256 of the shape, dtype and bytes of the array."""
        h = hashlib.sha256(f"{self._arr.shape}|{self._arr.dtype.str}|".encode())
        for i in range(self.n_frames):
            h.update(np.ascontiguousarray(self._arr[i]).tobytes())
        return h.hexdigest()

    def __reduce__(self):
        return (ArrayVideo, (self._arr, self.fps, self.invert, self.metadata))


def frames_from_array(arr: Any, fps: float | None = None, invert: bool = False,
                      metadata: dict[str, Any] | None = None) -> ArrayVideo:
    """Wrap in-memory frames as a :class:`Video` (see :class:`ArrayVideo`)."""
    return ArrayVideo(arr, fps=fps, invert=invert, metadata=metadata)


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------

def open_video(path: str | os.PathLike | Video | np.ndarray, invert: bool = False) -> Video:
    """Open a video file, an image folder or an image file for chunked reading.

    Parameters
    ----------
    path : str or path-like
        A TIFF / OME-TIFF / ImageJ stack (``.tif``, ``.tiff``), a movie (``.avi``, ``.mp4``, ``.mov``,
        ``.mkv``, ``.m4v``), a folder of images (one per frame) or a single image (``.png``,
        ``.jpg``, ``.bmp``). An already opened :class:`Video` is returned as is (re-opened if
        ``invert`` differs); a NumPy array is wrapped by :func:`frames_from_array`.
    invert : bool
        Invert intensities (``max - value``) for bright-field videos with dark particles.

    Returns
    -------
    Video

    Raises
    ------
    ExontaInputError
        Whenever the path cannot be read as a video: missing, unsupported type, empty, truncated or
        corrupt file, 0 frames, inconsistent images in a folder, frames smaller than 4 px or larger
        than 65536 px, unusable pixel type.
    """
    if isinstance(path, Video):
        if path.invert == bool(invert):
            return path
        if isinstance(path, ArrayVideo):
            return ArrayVideo(path._arr, fps=path.fps, invert=invert, metadata=path.metadata)
        return _reopen(type(path).__name__, str(path.path), bool(invert))
    if isinstance(path, np.ndarray):
        return frames_from_array(path, invert=invert)
    try:
        p = Path(os.fspath(path))
    except TypeError:
        raise ExontaInputError(f"expected the path of a video, got {type(path).__name__}") from None
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except OSError as exc:
        raise _wrap(exc, f"'{p}'", "accessing the path") from exc
    if not exists:
        raise ExontaInputError(f"'{p}' does not exist; check the path (and the working directory)")
    ext = p.suffix.lower()
    if ext in MICROSCOPE_FORMATS:  # before the folder test: a Zarr store is a folder
        raise ExontaInputError(
            f"'{p}' is a {MICROSCOPE_FORMATS[ext]} file, which exonta does not read; export the time series as an "
            f"OME-TIFF (in the microscope software, or in Fiji with File > Import > Bio-Formats, then File > Save "
            f"As > OME-TIFF): its pixel size and frame times come along")
    if is_dir:
        return ImageFolderVideo(p, invert=invert)
    if ext not in TIFF_EXTENSIONS + MOVIE_EXTENSIONS + IMAGE_EXTENSIONS:
        known = ", ".join(TIFF_EXTENSIONS[:2] + MOVIE_EXTENSIONS + IMAGE_EXTENSIONS)
        raise ExontaInputError(
            f"'{p}' has an unsupported file type '{ext or '(no extension)'}'; exonta reads {known} files "
            f"and folders of images, so convert the video to a TIFF stack")
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise _wrap(exc, f"'{p}'", "accessing the file") from exc
    if size == 0:
        raise ExontaInputError(f"'{p}' is empty (0 bytes); the recording or the copy did not complete")
    try:
        if ext in TIFF_EXTENSIONS:
            return TiffVideo(p, invert=invert)
        if ext in MOVIE_EXTENSIONS:
            return OpenCVVideo(p, invert=invert)
        return ImageFileVideo(p, invert=invert)
    except ExontaInputError:
        raise
    except MemoryError as exc:
        raise ExontaInputError(
            f"'{p}' declares image data too large to read; check that the file is a video of the sample"
        ) from exc
    except Exception as exc:  # anything a decoder throws on a bad file
        raise _wrap(exc, f"'{p}'", "opening") from exc
