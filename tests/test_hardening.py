"""Hardening (issue 9): bad inputs through the real CLI, atomic outputs, security, bounded memory.

Every case runs ``exonta analyze FILE --pixel-size-um 0.166 --fps 30 --out OUT``
in-process (``typer.testing.CliRunner`` on ``exonta.cli.main.app``). The
contract a lab user can rely on:

* a bad input gives exactly one line on stderr starting with
  ``exonta: error:`` and exit code 2 — never a traceback — and leaves no result
  folder, no half-written folder and no temporary folder in OUT;
* an input that is legitimately empty (a blank, an all-black or saturated
  video, a video too short to track) gives a valid result (exit 0, a readable
  ``summary.json``) that says so in its warnings;
* a valid video in an unusual container/type (RGB, 16-bit, float32, AVI, a
  path with spaces and non-ASCII characters) is analysed normally.

Reports escaping user text is tested in tests/report/test_report_render.py
(``test_html_self_contained_and_escaped``); manifests with ``..`` in
tests/batch/test_batch_discover.py (``test_parse_manifest_errors`` and the
manifest fuzz tests) — here only the remaining escape routes are checked.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from exonta.cli.main import app
from exonta.io.results import read_summary, safe_name
from exonta.simulate import SimulationConfig, simulate

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "exonta"
RESULT_FILES = {"summary.json", "features.parquet", "tracks.parquet", "particles.csv", "size_distribution.csv",
                "size_distribution.png", "config.toml", "drift.csv"}


# ----------------------------------------------------------------------------- fixtures / helpers

@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """30 frames of 96×96 px, 8 bit, a few 100 nm particles per frame (seeded)."""
    cfg = SimulationConfig(width_px=96, height_px=96, n_frames=30, concentration_per_ml=2e9, seed=1)
    return simulate(cfg).frames


@pytest.fixture(scope="module")
def blank_frames() -> np.ndarray:
    """A buffer blank: 30 frames of camera background (noise-free expected image), no particle."""
    cfg = SimulationConfig(width_px=96, height_px=96, n_frames=30, concentration_per_ml=0, seed=2, noise=False)
    return simulate(cfg).frames


@pytest.fixture(scope="module")
def noisy_blank_frames() -> np.ndarray:
    """A buffer blank with shot and read noise, no particle."""
    cfg = SimulationConfig(width_px=96, height_px=96, n_frames=30, concentration_per_ml=0, seed=3)
    return simulate(cfg).frames


def run(video: Path | str, out: Path, *extra: str, flags: bool = True):
    args = ["analyze", str(video)]
    if flags:
        args += ["--pixel-size-um", "0.166", "--fps", "30"]
    args += ["--out", str(out), "-q", *extra]
    return CliRunner().invoke(app, args)


def leftovers(out: Path) -> list[str]:
    """Temporary / old / hidden entries a crashed write would leave behind in OUT."""
    if not out.is_dir():
        return []
    return [p.name for p in out.iterdir() if p.name.startswith(".") or ".tmp" in p.name or ".old-" in p.name]


def assert_clean_error(res, out: Path, pattern: str | None = None) -> str:
    """Exit 2, one ``exonta: error:`` line on stderr, no traceback, nothing written in OUT."""
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr, res.exception)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = res.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("exonta: error: "), lines
    assert "Traceback" not in res.stdout + res.stderr
    assert "internal error" not in lines[0]
    if pattern is not None:
        assert re.search(pattern, lines[0], re.IGNORECASE), lines[0]
    if out.is_dir():
        assert list(out.iterdir()) == [], sorted(p.name for p in out.iterdir())
    return lines[0]


def assert_valid_result(res, out: Path, name: str) -> dict:
    """Exit 0, a complete result folder OUT/name with a valid summary.json, no leftovers."""
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    assert res.exception is None
    assert "Traceback" not in res.stdout + res.stderr
    folder = out / name
    assert folder.is_dir(), sorted(p.name for p in out.iterdir())
    assert RESULT_FILES <= {p.name for p in folder.iterdir()}
    assert leftovers(out) == []
    summary = read_summary(folder)
    assert summary["counts"]["n_frames"] >= 2
    return summary


def conc(summary: dict) -> float | None:
    return summary["concentration_per_ml"]["value"]


# ----------------------------------------------------------------------------- bad inputs → exit 2

def _avi(path: Path, frames: np.ndarray) -> Path:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (frames.shape[2], frames.shape[1]),
                        False)
    for f in frames:
        w.write(np.ascontiguousarray(f))
    w.release()
    return path


def _empty(tmp: Path, fr: np.ndarray, suffix: str = ".tif") -> Path:
    p = tmp / f"empty{suffix}"
    p.write_bytes(b"")
    return p


def _truncated_tif(tmp: Path, fr: np.ndarray) -> Path:
    full = tmp / "full.tif"
    tifffile.imwrite(full, fr)
    p = tmp / "truncated.tif"
    p.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return p


def _truncated_avi(tmp: Path, fr: np.ndarray) -> Path:
    full = _avi(tmp / "full.avi", fr)
    p = tmp / "truncated.avi"
    p.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    return p


def _random(tmp: Path, fr: np.ndarray, suffix: str) -> Path:
    p = tmp / f"random{suffix}"
    p.write_bytes(np.random.default_rng(7).bytes(20_000))
    return p


def _zero_frame_avi(tmp: Path, fr: np.ndarray) -> Path:
    return _avi(tmp / "zero.avi", fr[:0])


def _one_frame_avi(tmp: Path, fr: np.ndarray) -> Path:
    return _avi(tmp / "one.avi", fr[:1])


def _one_frame_tif(tmp: Path, fr: np.ndarray) -> Path:
    p = tmp / "one.tif"
    tifffile.imwrite(p, fr[0])
    return p


def _tiny_tif(tmp: Path, fr: np.ndarray) -> Path:
    p = tmp / "tiny.tif"
    tifffile.imwrite(p, fr[:, :2, :3])
    return p


def _absurd_header_tif(tmp: Path, fr: np.ndarray) -> Path:
    """A TIFF whose header claims 40000×40000 px frames (1.6 Gpixel) but holds 64 bytes."""
    p = tmp / "absurd.tif"
    tifffile.imwrite(p, np.zeros((8, 8), np.uint8))
    with tifffile.TiffFile(p, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(40000)
        tif.pages[0].tags["ImageLength"].overwrite(40000)
    return p


def _nan_tif(tmp: Path, fr: np.ndarray) -> Path:
    p = tmp / "nan.tif"
    a = fr.astype(np.float32)
    a[3, 10, 10] = np.nan
    tifffile.imwrite(p, a)
    return p


def _inf_tif(tmp: Path, fr: np.ndarray) -> Path:
    p = tmp / "inf.tif"
    a = fr.astype(np.float32)
    a[0, 0, 0] = np.inf
    tifffile.imwrite(p, a)
    return p


def _text_as_tif(tmp: Path, fr: np.ndarray) -> Path:
    p = tmp / "notes.tif"
    p.write_text("this is a lab note, not a video\n")
    return p


BAD_VIDEOS = {
    # case id: (factory, expected words in the message, what the user should learn)
    "empty-tif": (lambda t, f: _empty(t, f, ".tif"), r"empty"),
    "empty-avi": (lambda t, f: _empty(t, f, ".avi"), r"empty"),
    "truncated-tif": (_truncated_tif, r"truncated|corrupt"),
    "truncated-avi": (_truncated_avi, r"truncated|corrupt"),
    "random-bytes-avi": (lambda t, f: _random(t, f, ".avi"), r"could not be opened|corrupt"),
    "random-bytes-mp4": (lambda t, f: _random(t, f, ".mp4"), r"could not be opened|corrupt"),
    "random-bytes-tif": (lambda t, f: _random(t, f, ".tif"), r"tiff|corrupt|not"),
    "text-file-as-tif": (_text_as_tif, r"tiff|corrupt|not"),
    "zero-frame-avi": (_zero_frame_avi, r"no decodable frame|0 frames|empty"),
    "one-frame-avi": (_one_frame_avi, r"1 frame"),
    "one-frame-tif": (_one_frame_tif, r"1 frame"),
    "tiny-frames": (_tiny_tif, r"frame (height|width) must be between"),
    "absurd-dimensions": (_absurd_header_tif, r"pixels per frame|crop|between"),
    "nan-pixels": (_nan_tif, r"nan"),
    "inf-pixels": (_inf_tif, r"nan|infinite"),
}


@pytest.mark.parametrize("case", list(BAD_VIDEOS))
def test_bad_video_is_one_clear_error(case: str, frames: np.ndarray, tmp_path: Path) -> None:
    """A corrupt, empty, truncated or unusable video: the user sees one sentence naming the file
    and what to do (re-export, convert, crop ...), exit code 2, and OUT stays empty.

    0- and 1-frame videos are errors rather than empty results: nothing can be tracked, and a lab
    user who gets a "result" from a single frame would believe the recording worked.
    """
    factory, pattern = BAD_VIDEOS[case]
    video = factory(tmp_path, frames)
    out = tmp_path / "out"
    assert_clean_error(run(video, out), out, pattern)
    assert not out.exists() or leftovers(out) == []


def test_missing_video(tmp_path: Path) -> None:
    """A typo in the file name: 'video not found: PATH'."""
    out = tmp_path / "out"
    assert_clean_error(run(tmp_path / "nope.tif", out), out, r"not found")


@pytest.mark.parametrize("flag", ["--pixel-size-um", "--fps", "--exposure-s", "--viscosity-mpas", "--dilution"])
@pytest.mark.parametrize("value", ["nan", "-1", "0", "inf"])
def test_nonsense_acquisition_values(flag: str, value: str, frames: np.ndarray, tmp_path: Path) -> None:
    """NaN, negative, zero or infinite acquisition values are refused before any analysis, naming
    the field, instead of producing NaN sizes or a division by zero."""
    video = tmp_path / "v.tif"
    tifffile.imwrite(video, frames[:12])
    out = tmp_path / "out"
    base = {"--pixel-size-um": "0.166", "--fps": "30"}
    base[flag] = value
    args = [a for kv in base.items() for a in kv]
    res = run(video, out, *args, flags=False)
    field = flag.lstrip("-").replace("-", "_")
    assert_clean_error(res, out, re.escape(field) + r"|" + flag)


@pytest.mark.parametrize("value", ["nan", "-inf", "-300"])
def test_nonsense_temperature(value: str, frames: np.ndarray, tmp_path: Path) -> None:
    """A temperature below absolute zero / NaN is refused (viscosity of water would be nonsense)."""
    video = tmp_path / "v.tif"
    tifffile.imwrite(video, frames[:12])
    out = tmp_path / "out"
    assert_clean_error(run(video, out, "--temperature-c", value), out, r"temperature")


def test_missing_acquisition_metadata(frames: np.ndarray, tmp_path: Path) -> None:
    """A plain TIFF without pixel size or frame rate, given no flags: the error says which value is
    missing and which flag sets it."""
    video = tmp_path / "plain.tif"
    tifffile.imwrite(video, frames[:12])
    out = tmp_path / "out"
    assert_clean_error(run(video, out, flags=False), out, r"pixel|fps|frame rate")


@pytest.mark.parametrize("toml, pattern", [
    ("[detect]\nbogus_key = 1\n", r"bogus_key"),
    ("foo = 1\n", r"'foo'"),
    ("[acquisition]\npixel_size = 0.1\n", r"pixel_size"),
    ("[sizing]\nmin_track_length = 'ten'\n", r"min_track_length"),
    ("[acquisition]\npixel_size_um = nan\nfps = 30.0\n", r"pixel_size_um"),
    ("[acquisition]\npixel_size_um = 0.166\nfps = -30.0\n", r"fps"),
    ("[detect\nthreshold_snr = 5\n", r"not valid TOML"),
    ("acquisition = 3\n", r"acquisition"),
    ("[link]\nsearch_range_um = [1, 2]\n", r"search_range_um|link"),
])
def test_bad_config_file(toml: str, pattern: str, frames: np.ndarray, tmp_path: Path) -> None:
    """Unknown keys (typos), wrong types, NaN/negative values and invalid TOML in --config: one
    sentence naming the key. (Acquisition values given as CLI flags take precedence over the
    file, so the [acquisition] cases run without flags.)"""
    video = tmp_path / "v.tif"
    tifffile.imwrite(video, frames[:12])
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml, encoding="utf-8")
    out = tmp_path / "out"
    flags = "[acquisition]" not in toml
    assert_clean_error(run(video, out, "--config", str(cfg), flags=flags), out, pattern)


def test_control_characters_from_user_files_stay_on_one_line(frames: np.ndarray, tmp_path: Path) -> None:
    """A config key holding a newline and a terminal escape sequence is echoed in the error: it is
    shown escaped, so stderr is still exactly one line and the terminal is not reprogrammed."""
    video = tmp_path / "v.tif"
    tifffile.imwrite(video, frames[:12])
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[detect]\n"evil\\nkey\\u001b[31m" = 1\n', encoding="utf-8")
    out = tmp_path / "out"
    line = assert_clean_error(run(video, out, "--config", str(cfg)), out, r"evil")
    assert "\x1b" not in line and "\\n" in line


def test_missing_config_and_calibration_files(frames: np.ndarray, tmp_path: Path) -> None:
    """--config / --calibration pointing nowhere: 'not found', exit 2."""
    video = tmp_path / "v.tif"
    tifffile.imwrite(video, frames[:12])
    out = tmp_path / "out"
    assert_clean_error(run(video, out, "--config", str(tmp_path / "no.toml")), out, r"not found")
    assert_clean_error(run(video, out, "--calibration", str(tmp_path / "no.json")), out, r"not found")
    bad = tmp_path / "cal.json"
    bad.write_text('{"schema": "something else"}')
    assert_clean_error(run(video, out, "--calibration", str(bad)), out, r"calibration")


@pytest.mark.parametrize("kind", ["out-is-a-file", "out-under-a-file"])
def test_unwritable_output(kind: str, frames: np.ndarray, tmp_path: Path) -> None:
    """OUT cannot be a folder (it is an existing file, or lies under one — the root-proof way to
    make an unwritable OUT): refused up front, before a possibly long analysis, and the file is
    left untouched."""
    video = tmp_path / "v.tif"
    tifffile.imwrite(video, frames[:12])
    blocker = tmp_path / "results"
    blocker.write_text("keep me")
    out = blocker if kind == "out-is-a-file" else blocker / "sub"
    res = run(video, out)
    assert_clean_error(res, tmp_path / "nothing", r"output folder|not a folder|not writable")
    assert blocker.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "v.tif"]


def test_duplicate_video_names(frames: np.ndarray, tmp_path: Path) -> None:
    """Two inputs whose result folders would collide (a/v.tif, b/v.tif) are refused before analysis."""
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        tifffile.imwrite(tmp_path / sub / "v.tif", frames[:12])
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["analyze", str(tmp_path / "a" / "v.tif"), str(tmp_path / "b" / "v.tif"),
                                   "--pixel-size-um", "0.166", "--fps", "30", "--out", str(out), "-q"])
    assert_clean_error(res, out, r"same name")


# ----------------------------------------------------------------------------- valid but unusual inputs

def _rgb(tmp: Path, fr: np.ndarray) -> Path:
    p = tmp / "rgb.tif"
    tifffile.imwrite(p, np.repeat(fr[..., None], 3, axis=-1), photometric="rgb")
    return p


def _u16(tmp: Path, fr: np.ndarray) -> Path:
    p = tmp / "u16.tif"
    tifffile.imwrite(p, fr.astype(np.uint16) * 200)
    return p


def _f32(tmp: Path, fr: np.ndarray) -> Path:
    p = tmp / "f32.tif"
    tifffile.imwrite(p, fr.astype(np.float32) / 255.0)
    return p


def _avi_ok(tmp: Path, fr: np.ndarray) -> Path:
    return _avi(tmp / "movie.avi", fr)


def _unicode_path(tmp: Path, fr: np.ndarray) -> Path:
    d = tmp / "Probe Nr 3 — exosomes µ ü"
    d.mkdir()
    p = d / "vidéo échantillon 1.tif"
    tifffile.imwrite(p, fr)
    return p


VALID_VIDEOS = {"rgb": _rgb, "uint16": _u16, "float32": _f32, "avi": _avi_ok, "spaces-non-ascii": _unicode_path}


@pytest.mark.parametrize("case", list(VALID_VIDEOS))
def test_valid_unusual_videos_are_analysed(case: str, frames: np.ndarray, tmp_path: Path) -> None:
    """RGB (converted to luminance), 16-bit, float32, MJPEG AVI and a path with spaces and
    non-ASCII characters analyse like the plain 8-bit TIFF: a complete result folder named after
    the video, particles detected and a positive concentration."""
    video = VALID_VIDEOS[case](tmp_path, frames)
    out = tmp_path / "out dir ü"
    summary = assert_valid_result(run(video, out), out, safe_name(video.stem))
    assert summary["counts"]["n_frames"] == 30
    assert summary["counts"]["n_detections"] > 30
    assert conc(summary) is not None and conc(summary) > 0
    assert summary["input"]["path"] == str(video)


@pytest.mark.parametrize("case", ["all-black", "saturated", "blank-no-particles"])
def test_legitimately_empty_videos(case: str, blank_frames: np.ndarray, tmp_path: Path) -> None:
    """A video with nothing to detect (lens cap on, saturated camera, a clean buffer blank) is a
    valid measurement of *no particles*: exit 0, a complete result with zero detections, zero
    concentration and warnings telling the user why the numbers are empty."""
    shape = blank_frames.shape
    arr = {"all-black": np.zeros(shape, np.uint8), "saturated": np.full(shape, 255, np.uint8),
           "blank-no-particles": blank_frames}[case]
    video = tmp_path / f"{case}.tif"
    tifffile.imwrite(video, arr)
    out = tmp_path / "out"
    summary = assert_valid_result(run(video, out), out, case)
    assert summary["counts"]["n_detections"] == 0
    assert summary["counts"]["n_valid_tracks"] == 0
    assert conc(summary) == 0.0
    assert summary["warnings"], "an empty result must say why"
    assert any("particles per frame" in w or "valid tracks" in w for w in summary["warnings"])


def test_noisy_blank_has_no_sized_particle(noisy_blank_frames: np.ndarray, tmp_path: Path) -> None:
    """A noisy buffer blank: a valid result, no valid (sized) track and warnings about it."""
    video = tmp_path / "blank.tif"
    tifffile.imwrite(video, noisy_blank_frames)
    out = tmp_path / "out"
    summary = assert_valid_result(run(video, out), out, "blank")
    assert summary["counts"]["n_valid_tracks"] == 0
    assert summary["warnings"]
    assert any("valid tracks" in w for w in summary["warnings"])


def test_noisy_blank_concentration_is_negligible(noisy_blank_frames: np.ndarray, frames: np.ndarray,
                                                 tmp_path: Path) -> None:
    """A buffer blank should report a concentration far below a real sample's (< 5 %)."""
    out = tmp_path / "out"
    tifffile.imwrite(tmp_path / "blank.tif", noisy_blank_frames)
    tifffile.imwrite(tmp_path / "sample.tif", frames)
    blank = assert_valid_result(run(tmp_path / "blank.tif", out), out, "blank")
    sample = assert_valid_result(run(tmp_path / "sample.tif", out), out, "sample")
    assert (conc(blank) or 0.0) < 0.05 * conc(sample)


def test_short_video_is_a_result_with_a_warning(frames: np.ndarray, tmp_path: Path) -> None:
    """A valid 5-frame video (shorter than the minimum track length): a result, exit 0, with a
    warning that no track can be sized and no valid track. Counting particles per frame does not
    need tracks, so the count-based concentration is still reported (finite, ≥ 0)."""
    video = tmp_path / "short.tif"
    tifffile.imwrite(video, frames[:5])
    out = tmp_path / "out"
    summary = assert_valid_result(run(video, out), out, "short")
    assert summary["counts"]["n_valid_tracks"] == 0
    assert any("minimum track length" in w for w in summary["warnings"])
    assert conc(summary) is None or conc(summary) >= 0


# ----------------------------------------------------------------------------- atomic outputs

def test_failure_mid_write_leaves_nothing(frames: np.ndarray, tmp_path: Path, monkeypatch) -> None:
    """The plot writer crashes after the tables are written: the result folder must not appear
    (neither complete nor half), no temporary folder is left, the user sees one error line."""
    import exonta.analysis.distribution as dist

    def boom(*a, **k):
        raise RuntimeError("plotting backend exploded")

    monkeypatch.setattr(dist, "plot_size_distribution", boom)
    video = tmp_path / "v.tif"
    tifffile.imwrite(video, frames)
    out = tmp_path / "out"
    res = run(video, out)
    assert res.exit_code == 1
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("exonta: error: internal error"), lines
    assert "Traceback" not in res.stdout + res.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_oserror_mid_write_is_input_error_and_leaves_nothing(frames: np.ndarray, tmp_path: Path,
                                                             monkeypatch) -> None:
    """A disk problem while writing (e.g. disk full → OSError in the plot writer) is reported as
    'cannot write results' (exit 2) and leaves OUT without a result or temp folder."""
    import errno

    import exonta.analysis.distribution as dist

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dist, "plot_size_distribution", full)
    video = tmp_path / "v.tif"
    tifffile.imwrite(video, frames)
    out = tmp_path / "out"
    assert_clean_error(run(video, out), out, r"cannot write results.*space")


def test_rerun_replaces_old_result_completely(frames: np.ndarray, tmp_path: Path) -> None:
    """Re-analysing into the same OUT replaces OUT/<name> as a whole: stale files from an older
    run (or a user's note dropped in the folder) do not survive next to new results."""
    video = tmp_path / "v.tif"
    tifffile.imwrite(video, frames)
    out = tmp_path / "out"
    old = out / "v"
    old.mkdir(parents=True)
    (old / "stale.txt").write_text("from last year")
    (old / "summary.json").write_text("{}")
    summary = assert_valid_result(run(video, out), out, "v")
    assert not (old / "stale.txt").exists()
    first = summary["created"], (old / "features.parquet").stat().st_ino
    summary2 = assert_valid_result(run(video, out, "--threshold-snr", "6"), out, "v")
    assert summary2["parameters"]["detect"]["threshold_snr"] == 6
    assert (old / "features.parquet").stat().st_ino != first[1]
    assert sorted(p.name for p in out.iterdir()) == ["v"]


def test_write_result_dir_never_escapes_out_root(tmp_path: Path) -> None:
    """Result-folder names from sample names / manifests are sanitised into one path component."""
    from exonta.io.results import write_result_dir

    out = tmp_path / "out"
    for name in ("../evil", "..", "/etc/passwd", "a/../../b", "..\\..\\win", "\0x", ".hidden", "C:\\x"):
        folder = write_result_dir(out, name, {"a.txt": "x"})
        assert folder.resolve().parent == out.resolve(), (name, folder)
        assert not folder.name.startswith(".")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert leftovers(out) == []


# ----------------------------------------------------------------------------- security

_DANGEROUS = [
    (re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|cloudpickle|shelve|marshal)\b", re.M), "pickle-like import"),
    (re.compile(r"\b(pickle|dill|cloudpickle|marshal)\.loads?\("), "unpickling"),
    (re.compile(r"(?<![\w.])eval\("), "eval("),
    (re.compile(r"(?<![\w.])exec\("), "exec("),
    (re.compile(r"\byaml\.(load|unsafe_load|full_load)\("), "yaml.load("),
    (re.compile(r"allow_pickle\s*=\s*True"), "np.load(allow_pickle=True)"),
    (re.compile(r"\bread_pickle\("), "pandas.read_pickle"),
    (re.compile(r"shell\s*=\s*True"), "subprocess shell=True"),
    (re.compile(r"\bos\.system\("), "os.system"),
]


def test_no_unsafe_deserialisation_or_eval_in_source() -> None:
    """User files (videos, TOML, CSV manifests, JSON calibrations, specs) are never unpickled,
    eval'ed or loaded with unsafe YAML, and no shell runs user text. (Video.__reduce__ only
    *produces* pickles of a path for Dask workers; it does not load user files.)"""
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    hits = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        for rx, what in _DANGEROUS:
            for m in rx.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                hits.append(f"{f.relative_to(SRC)}:{line}: {what}")
    assert hits == []


def test_dangerous_patterns_are_detected() -> None:
    """The grep above can fail: each pattern matches its dangerous form, not a harmless one."""
    bad = ["import pickle", "pickle.loads(b)", "x = eval(s)", "exec(code)", "yaml.load(fh)",
           "np.load(p, allow_pickle=True)", "pd.read_pickle(p)", "run(c, shell=True)", "os.system(c)"]
    for code in bad:
        assert any(rx.search(code) for rx, _ in _DANGEROUS), code
    for code in ["ast.literal_eval(s)", "model.eval()", "df.eval('a+b')", "yaml.safe_load(fh)"]:
        assert not any(rx.search(code) for rx, _ in _DANGEROUS), code


# ----------------------------------------------------------------------------- bounded memory

@pytest.mark.slow
def test_long_video_memory_is_bounded() -> None:
    """Analysing a lazily generated video (nothing on disk, nothing pre-loaded) in a fresh process:
    the peak-RSS growth must not scale with the video's length. A 1500-frame 256² video (94 MB)
    may use at most 20 % of its extra size more than a 150-frame one, and less than its own size.
    (benchmarks/bench_memory.py runs the same measurement at 1024² and thousands of frames.)"""
    script = REPO / "benchmarks" / "bench_memory.py"

    def measure(n: int) -> dict:
        proc = subprocess.run([sys.executable, str(script), "--frames", str(n), "--size", "256", "--json"],
                              capture_output=True, text=True, timeout=300, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    short, long = measure(150), measure(1500)
    assert long["n_detections"] > 5 * short["n_detections"] > 0  # the long video really was analysed
    extra_video_mb = long["video_mb"] - short["video_mb"]
    assert long["growth_mb"] - short["growth_mb"] < 0.2 * extra_video_mb, (short, long)
    assert long["growth_mb"] < long["video_mb"], long
