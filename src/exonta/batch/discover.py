"""Find the videos under an acquisition folder and group them into lots and samples.

Two ways to describe a batch:

**Manifest** — a ``samples.csv`` in ROOT (UTF-8, comma- or semicolon-separated,
header row, one row per video)::

    video,sample,lot,dilution,fps
    lotA/s1/rep1.tif,s1,lotA,100,
    lotA/s1/rep2.tif,s1,lotA,100,30

Columns: ``video`` (path relative to ROOT; required), ``sample`` (required),
``lot`` (optional, ``"default"`` when missing or blank), ``dilution`` and any
acquisition field (``pixel_size_um``, ``fps``, ``exposure_s``,
``temperature_c``, ``viscosity_mpas``; optional, blank = not given), and a
free-text ``notes`` column. Manifest acquisition values act like CLI flags for
that video (highest precedence over ``--config``, sidecars and file metadata).
Only the listed videos are analysed.

**Folders** — without a manifest every video found recursively is analysed; the
folder holding a video is its *sample* and that folder's parent is its *lot*
(resolved absolute paths, so ``ROOT=/data/lot7/sampleA`` gives lot ``lot7``,
sample ``sampleA``).

What counts as a video:

* files ending in ``.tif``, ``.tiff`` or a movie extension (``.avi``, ``.mp4``, ``.mov``, ``.mkv``, ``.m4v``,
  ``.webm``, ``.wmv``, ``.mpg``, ``.mpeg``; any case);
* an *image folder*: a folder without (non-hidden) sub-folders that holds at
  least two image files (``.tif``/``.tiff``/``.png``/``.jpg``/``.jpeg``/``.bmp``)
  and no movie file, and whose TIFF files — if any
  — are single-frame (checked on a few of them). A folder of multi-page TIFF
  videos (replicates of one sample) is therefore *not* an image folder; a
  folder of one-page TIFF frames is. Other files in an image folder (sidecars,
  notes) are ignored.

Skipped: hidden files and folders (name starting with ``.``), the OUT folder
when it lies inside ROOT, symlinked folders (no loops), and every other file
(sidecar ``*.exonta.toml``/``exonta.toml``, truth files, CSV, JSON ...).

Names used in output paths (lot, sample, video) go through
:func:`exonta.io.results.safe_name`; manifest values containing ``..`` or a
path separator are rejected so no result can be written outside OUT.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ..errors import ExontaInputError
from ..io.readers import (
    MICROSCOPE_FORMATS,
    MOVIE_EXTENSIONS,
    natural_sort_key,
    ome_dataset_files,
    ome_dataset_head,
    sha256_of_files,
)
from ..io.results import result_name, safe_name

__all__ = [
    "VIDEO_SUFFIXES",
    "IMAGE_SUFFIXES",
    "MANIFEST_NAME",
    "VideoEntry",
    "discover",
    "find_videos",
    "is_image_folder",
    "parse_manifest",
    "read_manifest",
    "video_sha256",
    "video_fingerprint",
]

MOVIE_SUFFIXES = frozenset(MOVIE_EXTENSIONS)  # what exonta.io.open_video decodes
VIDEO_SUFFIXES = frozenset({".tif", ".tiff"}) | MOVIE_SUFFIXES
IMAGE_SUFFIXES = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"})
MANIFEST_NAME = "samples.csv"
MANIFEST_NUMERIC = ("dilution", "pixel_size_um", "fps", "exposure_s", "temperature_c", "viscosity_mpas")
MANIFEST_COLUMNS = ("video", "sample", "lot", *MANIFEST_NUMERIC, "notes")
DEFAULT_LOT = "default"


@dataclass
class VideoEntry:
    """One video of the batch.

    Attributes
    ----------
    path : Path
        Absolute path of the video file or image folder.
    rel : str
        Path relative to ROOT (POSIX separators), for display and the catalog.
    lot, sample : str
        Group names, already made file-system safe.
    name : str
        Result-folder name (the file stem, made unique within the sample).
    acquisition : dict
        Explicit acquisition values for this video (from the manifest).
    """

    path: Path
    rel: str
    lot: str
    sample: str
    name: str = ""
    acquisition: dict[str, float] = field(default_factory=dict)

    @property
    def sample_key(self) -> tuple[str, str]:
        return (self.lot, self.sample)


# ----------------------------------------------------------------------------- discovery

def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _tiff_frames(path: Path) -> int | None:
    """Number of frames of a TIFF (None when unreadable)."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tf:
            n = 1
            for series in tf.series[:1]:
                for ax, size in zip(series.axes, series.shape):
                    if ax not in "YXS":
                        n *= int(size)
            try:
                tf.pages[1]
                n = max(n, 2)
            except IndexError:
                pass
            return n
    except Exception:  # noqa: BLE001 - any unreadable file is "not a frame"
        return None


def is_image_folder(folder: str | Path, _entries: list[os.DirEntry] | None = None) -> bool:
    """Whether ``folder`` is a video stored as one image per frame (see the module docstring)."""
    folder = Path(folder)
    try:
        entries = _entries if _entries is not None else list(os.scandir(folder))
    except OSError:
        return False
    images: list[Path] = []
    for e in entries:
        if _is_hidden(e.name):
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                return False
            if not e.is_file():
                continue
        except OSError:
            continue
        suf = os.path.splitext(e.name)[1].lower()
        if suf in MOVIE_SUFFIXES:
            return False
        if suf in IMAGE_SUFFIXES:
            images.append(Path(e.path))
    if len(images) < 2:
        return False
    tiffs = sorted(p for p in images if p.suffix.lower() in (".tif", ".tiff"))
    if tiffs:
        sample = tiffs[:3] + tiffs[-1:]
        for p in sample:
            if _tiff_frames(p) != 1:
                return False
    return True


def find_videos(root: str | Path, exclude: list[str | Path] | tuple = (),
                unreadable: list[Path] | None = None, parts: list[Path] | None = None) -> list[Path]:
    """All videos under ``root`` (recursively, sorted), skipping hidden entries and ``exclude`` folders.
    ``unreadable``, when given, receives the microscope vendors' files found (ND2, CZI, LIF, ...: exported as
    OME-TIFF they are videos). The later files of a multi-file OME-TIFF data set whose first file is found too
    (Micro-Manager's ``…_MMStack_Pos0_1.ome.tif``, ...: any of them reads as the whole data set) are left out,
    and go to ``parts`` when given."""
    root = Path(root)
    excl = {os.path.normcase(os.path.realpath(p)) for p in exclude}
    found: list[Path] = []

    def walk(d: Path) -> None:
        if os.path.normcase(os.path.realpath(d)) in excl:
            return
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return
        if is_image_folder(d, entries):
            found.append(d)
            return
        subdirs = []
        for e in entries:
            if _is_hidden(e.name):
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    subdirs.append(Path(e.path))
                elif e.is_file() and os.path.splitext(e.name)[1].lower() in VIDEO_SUFFIXES:
                    found.append(Path(e.path))
                elif unreadable is not None and os.path.splitext(e.name)[1].lower() in MICROSCOPE_FORMATS:
                    unreadable.append(Path(e.path))
            except OSError:
                continue
        for s in subdirs:
            walk(s)

    walk(root)
    present = {os.path.realpath(v) for v in found}
    kept = []
    for v in found:
        head = ome_dataset_head(v)  # None without opening for anything but an .ome.tif(f) file
        if head is not None and str(head) != os.path.realpath(v) and str(head) in present:
            if parts is not None:
                parts.append(v)
            continue
        kept.append(v)
    return kept


def _folder_groups(video: Path) -> tuple[str, str]:
    container = Path(os.path.abspath(video)).parent  # a symlinked video belongs where it is linked
    return safe_name(container.parent.name), safe_name(container.name)


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # other drive on Windows
        return path.as_posix()


def _assign_names(entries: list[VideoEntry]) -> None:
    """Result-folder names: the file stem, disambiguated within a sample."""
    by_sample: dict[tuple[str, str], list[VideoEntry]] = {}
    for e in entries:
        by_sample.setdefault(e.sample_key, []).append(e)
    for group in by_sample.values():
        used: set[str] = set()
        for e in group:
            base = result_name(e.path)
            name = base
            if name.lower() in used:
                name = safe_name(e.path.name.replace(".", "_"))
            k = 2
            while name.lower() in used:
                name = f"{base}_{k}"
                k += 1
            used.add(name.lower())
            e.name = name


# ----------------------------------------------------------------------------- manifest

def _check_group_name(value: str, column: str, row: int) -> str:
    v = value.strip()
    if not v:
        raise ExontaInputError(f"samples.csv row {row}: the {column!r} column is empty; give every video a {column}")
    if ".." in v or "/" in v or "\\" in v:
        raise ExontaInputError(
            f"samples.csv row {row}: {column} {v!r} contains '..' or a path separator; use a plain name")
    return safe_name(v)


def _parse_number(text: str, column: str, row: int, decimal_comma: bool) -> float | None:
    t = text.strip()
    if not t:
        return None
    if decimal_comma:
        t = t.replace(",", ".")
    try:
        v = float(t)
    except ValueError:
        raise ExontaInputError(f"samples.csv row {row}: {column} {text.strip()!r} is not a number") from None
    if not math.isfinite(v):
        raise ExontaInputError(f"samples.csv row {row}: {column} must be a finite number, got {text.strip()!r}")
    if column != "temperature_c" and v <= 0:
        raise ExontaInputError(f"samples.csv row {row}: {column} must be positive, got {text.strip()!r}")
    return v


def _check_video_path(text: str, row: int) -> str:
    t = text.strip()
    if not t:
        raise ExontaInputError(f"samples.csv row {row}: the 'video' column is empty")
    if "\0" in t:
        raise ExontaInputError(f"samples.csv row {row}: the video path contains a NUL character")
    pw = PureWindowsPath(t)
    pp = PurePosixPath(t.replace("\\", "/"))
    if pp.is_absolute() or pw.is_absolute() or pw.drive:
        raise ExontaInputError(f"samples.csv row {row}: video {t!r} must be a path relative to the batch folder")
    if ".." in pp.parts:
        raise ExontaInputError(f"samples.csv row {row}: video {t!r} must not contain '..'")
    return pp.as_posix()


def parse_manifest(text: str) -> list[dict[str, Any]]:
    """Parse the text of a ``samples.csv`` manifest.

    Parameters
    ----------
    text : str
        The file's content.

    Returns
    -------
    list of dict
        One dict per row: ``video`` (relative POSIX path), ``sample``, ``lot``
        (safe names), ``acquisition`` (dict of the numeric columns that were
        given), ``row`` (1-based line number in the file).

    Raises
    ------
    ExontaInputError
        Missing or unknown column, empty name, ``..`` or absolute paths,
        non-numeric or non-positive values, duplicate videos, no rows.
    """
    if not isinstance(text, str):
        raise ExontaInputError("samples.csv must be text")
    text = text.lstrip("\ufeff")
    if "\0" in text:
        raise ExontaInputError("samples.csv contains NUL bytes; save it as a plain UTF-8 CSV file")
    lines = text.splitlines()
    header_line = next((ln for ln in lines if ln.strip()), "")
    if not header_line:
        raise ExontaInputError("samples.csv is empty; it needs a header row 'video,sample,lot,dilution' and one row "
                               "per video")
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    decimal_comma = delimiter == ";"
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        rows = list(reader)
    except csv.Error as exc:
        raise ExontaInputError(f"samples.csv is not a valid CSV file: {exc}") from None
    # first non-empty row is the header
    start = 0
    while start < len(rows) and not any(c.strip() for c in rows[start]):
        start += 1
    header = [c.strip().lower() for c in rows[start]] if start < len(rows) else []
    for req in ("video", "sample"):
        if req not in header:
            raise ExontaInputError(f"samples.csv has no {req!r} column; the header must include "
                                   f"video,sample (and optionally lot, dilution, acquisition fields)")
    for col in header:
        if col not in MANIFEST_COLUMNS:
            raise ExontaInputError(f"samples.csv has an unknown column {col!r}; allowed: {', '.join(MANIFEST_COLUMNS)}")
    if len(set(header)) != len(header):
        raise ExontaInputError("samples.csv has a duplicated column name in its header")
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(rows[start + 1:], start=start + 2):
        if not any(c.strip() for c in raw):
            continue
        if len(raw) > len(header):
            raise ExontaInputError(f"samples.csv row {i} has {len(raw)} fields but the header has {len(header)}")
        rec = dict(zip(header, raw + [""] * (len(header) - len(raw))))
        video = _check_video_path(rec["video"], i)
        key = video
        if key in seen:
            raise ExontaInputError(f"samples.csv lists video {video!r} twice (rows {seen[key]} and {i})")
        seen[key] = i
        sample = _check_group_name(rec["sample"], "sample", i)
        lot = _check_group_name(rec["lot"], "lot", i) if rec.get("lot", "").strip() else DEFAULT_LOT
        acq = {}
        for col in MANIFEST_NUMERIC:
            if col in rec:
                v = _parse_number(rec[col], col, i, decimal_comma)
                if v is not None:
                    acq[col] = v
        out.append({"video": video, "sample": sample, "lot": lot, "acquisition": acq, "row": i})
    if not out:
        raise ExontaInputError("samples.csv has a header but no rows; add one row per video")
    return out


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Read and parse a ``samples.csv`` file (see :func:`parse_manifest`)."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ExontaInputError(f"{p} is not UTF-8 text; save it as 'CSV UTF-8'") from None
    except OSError as exc:
        raise ExontaInputError(f"cannot read {p}: {exc.strerror or exc}") from None
    return parse_manifest(text)


# ----------------------------------------------------------------------------- main entry

def discover(root: str | Path, out: str | Path | None = None) -> tuple[list[VideoEntry], list[str]]:
    """Find the videos of a batch and assign lots, samples and result names.

    Parameters
    ----------
    root : path
        The acquisition folder.
    out : path, optional
        The output folder; skipped when it lies inside ``root``.

    Returns
    -------
    entries : list of VideoEntry
    notes : list of str
        Informational messages (e.g. videos on disk that the manifest does not list).

    Raises
    ------
    ExontaInputError
        ROOT missing, bad manifest, a listed video missing, no video found.
    """
    root = Path(root)
    if not root.exists():
        raise ExontaInputError(f"batch folder not found: {root}")
    if not root.is_dir():
        raise ExontaInputError(f"{root} is not a folder; give the folder that holds the videos")
    root = Path(os.path.realpath(root))
    if out is not None and os.path.realpath(out) == str(root):
        raise ExontaInputError(f"the output folder must not be the batch folder itself ({root}); use a sub-folder "
                               f"such as {root / 'results'} or another folder")
    exclude = [out] if out is not None else []
    notes: list[str] = []
    manifest = root / MANIFEST_NAME
    entries: list[VideoEntry] = []
    if manifest.is_file():
        rows = read_manifest(manifest)
        rows_by_file: dict[str, int] = {}
        for r in rows:
            p = root / r["video"]
            if not p.exists():
                raise ExontaInputError(f"samples.csv row {r['row']}: video {r['video']!r} not found under {root}")
            if p.is_dir():
                if not is_image_folder(p):
                    raise ExontaInputError(
                        f"samples.csv row {r['row']}: {r['video']!r} is a folder but not a folder of image frames")
            elif p.suffix.lower() not in VIDEO_SUFFIXES:
                raise ExontaInputError(
                    f"samples.csv row {r['row']}: {r['video']!r} is not a supported video "
                    f"({', '.join(sorted(VIDEO_SUFFIXES))} or a folder of images)")
            real = os.path.normcase(os.path.realpath(p))
            if real in rows_by_file:
                raise ExontaInputError(f"samples.csv rows {rows_by_file[real]} and {r['row']} are the same video "
                                       f"({r['video']!r}); list each video once")
            rows_by_file[real] = r["row"]
            entries.append(VideoEntry(path=p, rel=r["video"], lot=r["lot"], sample=r["sample"],
                                      acquisition=dict(r["acquisition"])))
        listed = set(rows_by_file)
        unlisted = [v for v in find_videos(root, exclude) if os.path.normcase(os.path.realpath(v)) not in listed]
        if unlisted:
            notes.append(f"{len(unlisted)} video(s) under {root} are not listed in samples.csv and were not "
                         f"analysed (e.g. {_rel(unlisted[0], root)})")
    else:
        vendor: list[Path] = []
        parts: list[Path] = []
        for v in find_videos(root, exclude, vendor, parts):
            lot, sample = _folder_groups(v)
            entries.append(VideoEntry(path=v, rel=_rel(v, root), lot=lot, sample=sample))
        if vendor:
            kinds = ", ".join(sorted({MICROSCOPE_FORMATS[os.path.splitext(v.name)[1].lower()] for v in vendor}))
            vendor_note = (f"{len(vendor)} microscope file(s) under {root} ({kinds}; e.g. {_rel(vendor[0], root)}) "
                           f"are not read: export them as OME-TIFF to analyse them")
            if not entries:
                raise ExontaInputError(f"no video found under {root}: {vendor_note}")
            notes.append(vendor_note)
        if parts:
            notes.append(f"{len(parts)} file(s) under {root} are later parts of multi-file OME-TIFF data sets (e.g. "
                         f"{_rel(parts[0], root)}) and are analysed with their data set's first file")
        if not entries:
            raise ExontaInputError(
                f"no video found under {root} (looked for {', '.join(sorted(VIDEO_SUFFIXES))} files and folders of "
                f"images)")
    _assign_names(entries)
    return entries, notes


# ----------------------------------------------------------------------------- hashing

def _folder_images(folder: Path) -> list[Path]:
    """The frames of an image folder, in the reader's (natural) order."""
    return sorted((p for p in folder.iterdir()
                   if not _is_hidden(p.name) and p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: natural_sort_key(p.name))


def video_fingerprint(path: str | Path) -> str:
    """Cheap change detector (size and modification time) used to reuse a stored hash."""
    p = Path(path)
    if p.is_dir():
        kind, files = "dir", _folder_images(p)
    else:  # one file, or a multi-file OME-TIFF: any of its files may change
        kind, files = "files", ome_dataset_files(p)
        if len(files) == 1:
            st = p.stat()
            return f"file:{st.st_size}:{st.st_mtime_ns}"
    sts = [f.stat() for f in files]
    return f"{kind}:{len(files)}:{sum(s.st_size for s in sts)}:{max((s.st_mtime_ns for s in sts), default=0)}"


def video_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a video, streamed in 1 MiB chunks.

    A file hashes its bytes (the same value as ``sha256sum``; a multi-file OME-TIFF data set the bytes of its
    files in frame order, :func:`exonta.io.readers.ome_dataset_files`); an image folder
    hashes, for every image in natural name order, its name, a NUL byte and its
    bytes — the same values as ``exonta.io.readers`` ``Video.sha256()``, so the
    hash can be compared with ``summary.json`` ``input.sha256``.
    """
    p = Path(path)
    files = _folder_images(p) if p.is_dir() else ome_dataset_files(p)
    return sha256_of_files(files, include_names=p.is_dir(), chunk_bytes=chunk_bytes)
