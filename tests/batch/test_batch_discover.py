"""Discovery of videos, grouping into lots/samples, manifest parsing, hashing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exonta.batch.discover import (
    discover,
    find_videos,
    is_image_folder,
    parse_manifest,
    video_fingerprint,
    video_sha256,
)
from exonta.errors import ExontaInputError


def _tiff(path: Path, n_frames: int, seed: int = 0) -> Path:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(n_frames, 8, 10), dtype=np.uint8)
    tifffile.imwrite(path, arr if n_frames > 1 else arr[0], photometric="minisblack")
    return path


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "acq"
    _tiff(root / "lotA" / "s1" / "rep1.tif", 3)
    _tiff(root / "lotA" / "s1" / "rep2.TIFF", 3)
    _touch(root / "lotA" / "s1" / "rep1.exonta.toml", b"[acquisition]\nfps = 30\n")
    _touch(root / "lotA" / "s1" / "rep1.truth.json", b"{}")
    _touch(root / "lotA" / "s2" / "movie.avi")
    _touch(root / "lotA" / "s2" / ".hidden.mp4")
    _touch(root / "lotB" / "s3" / "clip.mov")
    # a folder of single-frame TIFF images is one video
    for i in range(3):
        _tiff(root / "lotB" / "s3" / "frames_run" / f"f{i}.tif", 1, seed=i)
    _touch(root / ".cache" / "x.tif")
    _touch(root / "out" / "old" / "result.tif")  # the OUT folder inside ROOT
    _touch(root / "lotB" / "notes.txt")
    return root


def test_find_videos_kinds_and_skips(tree: Path) -> None:
    found = [p.relative_to(tree).as_posix() for p in find_videos(tree, exclude=[tree / "out"])]
    assert found == ["lotA/s1/rep1.tif", "lotA/s1/rep2.TIFF", "lotA/s2/movie.avi", "lotB/s3/clip.mov",
                     "lotB/s3/frames_run"]


def test_image_folder_rules(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    for i in range(3):
        _tiff(frames / f"img{i}.tif", 1, seed=i)
    _touch(frames / "exonta.toml", b"")
    assert is_image_folder(frames)
    pngs = tmp_path / "pngs"
    _touch(pngs / "a.png")
    _touch(pngs / "b.png")
    assert is_image_folder(pngs)
    # multi-page TIFF videos: replicates of a sample, not frames
    reps = tmp_path / "reps"
    _tiff(reps / "r1.tif", 3)
    _tiff(reps / "r2.tif", 3)
    assert not is_image_folder(reps)
    # a corrupt TIFF makes it a folder of (possibly bad) videos
    bad = tmp_path / "bad"
    _tiff(bad / "a.tif", 1)
    _touch(bad / "b.tif", b"not a tiff at all")
    assert not is_image_folder(bad)
    # one image, a movie file or a sub-folder: not an image folder
    one = tmp_path / "one"
    _touch(one / "a.png")
    assert not is_image_folder(one)
    mixed = tmp_path / "mixed"
    _touch(mixed / "a.png")
    _touch(mixed / "b.png")
    _touch(mixed / "c.avi")
    assert not is_image_folder(mixed)
    nested = tmp_path / "nested"
    _touch(nested / "a.png")
    _touch(nested / "b.png")
    (nested / "sub").mkdir()
    assert not is_image_folder(nested)


def test_discover_by_folder(tree: Path) -> None:
    entries, notes = discover(tree, tree / "out")
    assert notes == []
    got = {(e.rel, e.lot, e.sample, e.name) for e in entries}
    assert got == {("lotA/s1/rep1.tif", "lotA", "s1", "rep1"), ("lotA/s1/rep2.TIFF", "lotA", "s1", "rep2"),
                   ("lotA/s2/movie.avi", "lotA", "s2", "movie"), ("lotB/s3/clip.mov", "lotB", "s3", "clip"),
                   ("lotB/s3/frames_run", "lotB", "s3", "frames_run")}
    assert all(e.path.is_absolute() and e.acquisition == {} for e in entries)


def test_discover_root_is_the_sample(tmp_path: Path) -> None:
    root = tmp_path / "lot7" / "sampleA"
    _tiff(root / "r1.tif", 2)
    entries, _ = discover(root)
    assert [(e.lot, e.sample) for e in entries] == [("lot7", "sampleA")]


def test_discover_name_collisions_are_made_unique(tmp_path: Path) -> None:
    root = tmp_path / "L" / "S"
    _tiff(root / "a.tif", 2)
    _touch(root / "a.avi")
    entries, _ = discover(root)
    names = sorted(e.name for e in entries)
    assert len(set(names)) == 2 and "a" in names


def test_discover_bad_root(tmp_path: Path) -> None:
    with pytest.raises(ExontaInputError, match="not found"):
        discover(tmp_path / "missing")
    f = _touch(tmp_path / "file.tif")
    with pytest.raises(ExontaInputError, match="not a folder"):
        discover(f)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExontaInputError, match="no video found"):
        discover(tmp_path / "empty")
    with pytest.raises(ExontaInputError, match="must not be the batch folder"):
        discover(tmp_path / "empty", tmp_path / "empty" / ".")


def test_discover_with_manifest(tree: Path) -> None:
    (tree / "samples.csv").write_text(
        "video,sample,lot,dilution,fps\n"
        "lotA/s1/rep1.tif,S1,L1,100,\n"
        "lotA/s1/rep2.TIFF,S1,L1,100,25\n"
        "lotB/s3/frames_run,S9,,1000,\n", encoding="utf-8")
    entries, notes = discover(tree, tree / "out")
    got = {(e.rel, e.lot, e.sample): e.acquisition for e in entries}
    assert got == {("lotA/s1/rep1.tif", "L1", "S1"): {"dilution": 100.0},
                   ("lotA/s1/rep2.TIFF", "L1", "S1"): {"dilution": 100.0, "fps": 25.0},
                   ("lotB/s3/frames_run", "default", "S9"): {"dilution": 1000.0}}
    assert len(notes) == 1 and "2 video(s)" in notes[0]


@pytest.mark.parametrize("text,match", [
    ("video,sample\nmissing.tif,S\n", "not found"),
    ("video,sample\nlotA/s1/rep1.tif,S\nlotA/../lotA/s1/rep1.tif,T\n", r"'\.\.'"),
    ("video,sample\nlotA/s1/rep1.tif,S\nlotA//s1/rep1.tif,T\n", "twice"),
    ("video,sample\nlotB/notes.txt,S\n", "not a supported video"),
    ("video,sample\nlotA,S\n", "not a folder of image frames"),
])
def test_manifest_bad_rows(tree: Path, text: str, match: str) -> None:
    (tree / "samples.csv").write_text(text, encoding="utf-8")
    with pytest.raises(ExontaInputError, match=match):
        discover(tree)


def test_manifest_not_utf8(tree: Path) -> None:
    (tree / "samples.csv").write_bytes("video,sample\nlotA/s1/rep1.tif,Probe\xe9\n".encode("latin-1"))
    with pytest.raises(ExontaInputError, match="UTF-8"):
        discover(tree)


def test_parse_manifest_semicolons_and_decimal_commas() -> None:
    rows = parse_manifest("\ufeffVideo ; Sample ; Lot ; Dilution ; temperature_c\n"
                          "a/b.tif;s 1;L/x\n".replace("L/x", "Lx") + "c.avi;s2;Lx;1,5;-2,5\n")
    assert [r["video"] for r in rows] == ["a/b.tif", "c.avi"]
    assert rows[0]["sample"] == "s 1" and rows[0]["acquisition"] == {}
    assert rows[1]["acquisition"] == {"dilution": 1.5, "temperature_c": -2.5}
    assert rows[1]["row"] == 3


@pytest.mark.parametrize("text,match", [
    ("", "empty"),
    ("video,lot\na.tif,L\n", "no 'sample' column"),
    ("video,sample,colour\na.tif,s,red\n", "unknown column"),
    ("video,sample\n", "no rows"),
    ("video,sample\n../a.tif,s\n", r"'\.\.'"),
    ("video,sample\n/abs/a.tif,s\n", "relative"),
    ("video,sample\nC:\\a.tif,s\n", "relative"),
    ("video,sample\na.tif,..\n", r"'\.\.'"),
    ("video,sample,lot\na.tif,s,x/../y\n", r"'\.\.'"),
    ("video,sample\na.tif,\n", "empty"),
    ("video,sample,dilution\na.tif,s,abc\n", "not a number"),
    ("video,sample,dilution\na.tif,s,-3\n", "positive"),
    ("video,sample,fps\na.tif,s,nan\n", "finite"),
    ("video,sample\na.tif,s\n./a.tif,t\n", "twice"),
    ("video,sample\na.tif,s,extra\n", "fields"),
    ("video,sample,video\na.tif,s,b\n", "duplicated"),
])
def test_parse_manifest_errors(text: str, match: str) -> None:
    with pytest.raises(ExontaInputError, match=match):
        parse_manifest(text)


_manifest_alphabet = st.sampled_from(list("abc./\\,;\"'\n\r\t 0123456789-+eE") + ["..", "video", "sample", "lot",
                                                                                      "dilution", "fps", "\ufeff",
                                                                                      "\0", "é"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_manifest_alphabet, max_size=60).map("".join))
def test_parse_manifest_fuzz_only_input_errors(text: str) -> None:
    try:
        rows = parse_manifest("video,sample,lot,dilution\n" + text)
    except ExontaInputError:
        return
    for r in rows:
        assert ".." not in r["video"].split("/")
        assert not r["video"].startswith("/")
        for name in (r["sample"], r["lot"]):
            assert name and "/" not in name and "\\" not in name and not name.startswith(".")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_parse_manifest_fuzz_any_text(text: str) -> None:
    try:
        parse_manifest(text)
    except ExontaInputError:
        pass


def test_video_sha256_matches_sha256sum_and_reader(tmp_path: Path) -> None:
    p = _touch(tmp_path / "v.avi", bytes(range(256)) * 5000)
    assert video_sha256(p, chunk_bytes=1000) == hashlib.sha256(p.read_bytes()).hexdigest()
    folder = tmp_path / "frames"
    for i in (10, 2, 1):
        _tiff(folder / f"f{i}.tif", 1, seed=i)
    expect = hashlib.sha256()
    for i in (1, 2, 10):  # natural order, as the reader
        f = folder / f"f{i}.tif"
        expect.update(f.name.encode() + b"\0" + f.read_bytes())
    assert video_sha256(folder) == expect.hexdigest()
    from exonta.io import open_video

    assert open_video(folder).sha256() == video_sha256(folder)  # resume compares it with summary.json
    fp1 = video_fingerprint(p)
    p.write_bytes(b"changed")
    assert video_fingerprint(p) != fp1
    assert video_fingerprint(folder).startswith("dir:3:")


def test_manifest_same_file_twice_via_symlink(tree: Path) -> None:
    (tree / "lotA" / "s1" / "link.tif").symlink_to(tree / "lotA" / "s1" / "rep1.tif")
    (tree / "samples.csv").write_text("video,sample\nlotA/s1/rep1.tif,S\nlotA/s1/link.tif,T\n", encoding="utf-8")
    with pytest.raises(ExontaInputError, match="same video"):
        discover(tree)


def test_every_movie_format_the_reader_opens_is_found(tmp_path: Path) -> None:
    """Batch finds the same movie formats that exonta.io.open_video decodes (one list, not two)."""
    from exonta.io.readers import MOVIE_EXTENSIONS

    root = tmp_path / "acq"
    for i, ext in enumerate(MOVIE_EXTENSIONS):
        _touch(root / "lot" / f"s{i}" / f"clip{ext.upper() if i % 2 else ext}")
    found = {p.suffix.lower() for p in find_videos(root)}
    assert found == set(MOVIE_EXTENSIONS) and {".mkv", ".webm", ".mpg"} <= found


def test_discover_names_microscope_files_it_cannot_read(tmp_path: Path) -> None:
    """ND2/CZI files beside videos: a note with how many and what to do; only vendor files: the error says so."""
    root = tmp_path / "lot1"
    _tiff(root / "s1" / "a.tif", 2)
    _touch(root / "s1" / "b.nd2")
    _touch(root / "s2" / "c.czi")
    entries, notes = discover(root)
    assert [e.path.name for e in entries] == ["a.tif"]
    assert any("2 microscope file(s)" in n and "Nikon" in n and "Zeiss" in n and "OME-TIFF" in n for n in notes)
    only = tmp_path / "lot2"
    _touch(only / "x.nd2")
    with pytest.raises(ExontaInputError, match="no video found.*1 microscope file.*export them as OME-TIFF"):
        discover(only)


@pytest.mark.parametrize("binary_only", [False, True])
def test_discover_takes_a_multi_file_ome_tiff_once(tmp_path: Path, binary_only: bool) -> None:
    """Micro-Manager's ``_MMStack_Pos0.ome.tif`` + ``_MMStack_Pos0_1.ome.tif`` are one video (analysed through
    the first file), not two replicates of one sample; a later part without its first file stays a video."""
    from tests.mm_tiff import write_multifile_ome

    folder = tmp_path / "lot1" / "s1"
    folder.mkdir(parents=True)
    frames = np.random.default_rng(5).integers(0, 255, (12, 32, 32)).astype(np.uint8)
    names = ("v_MMStack_Pos0.ome.tif", "v_MMStack_Pos0_1.ome.tif")
    write_multifile_ome(folder, frames, names, binary_only=binary_only)
    _tiff(folder / "other.tif", 3)
    entries, notes = discover(tmp_path / "lot1")
    assert sorted(e.path.name for e in entries) == ["other.tif", names[0]]
    assert any("1 file(s)" in n and "multi-file OME-TIFF" in n and names[1] in n for n in notes)
    (folder / names[0]).unlink()
    entries, _ = discover(tmp_path / "lot1")
    assert sorted(e.path.name for e in entries) == ["other.tif", names[1]]
