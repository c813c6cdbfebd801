"""Fuzzing the parsers of user files and the CLI (issue 9).

Every parser of a user-written file — the analysis config TOML, the batch
manifest ``samples.csv``, the QC spec TOML, the calibration JSON — and the
argument handling of ``exonta analyze`` must either accept the input or raise
:class:`~exonta.errors.ExontaInputError` (one sentence); no other exception may
escape. Hypothesis drives random documents that mix real key names with random
ones, random value types (including NaN, ±inf, huge numbers, nested tables,
arrays, non-ASCII text) and random raw text/bytes. Bounded time:
``max_examples=40`` per test, no deadline.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from exonta.errors import ExontaInputError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- a tiny TOML writer

def _toml_key(k: str) -> str:
    if k and all(c.isalnum() or c in "_-" for c in k) and k.isascii():
        return k
    return json.dumps(k)  # TOML basic strings accept JSON string escapes for BMP text


def _toml_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_scalar(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))


def to_toml(doc: dict[str, Any]) -> str:
    """Serialise top-level scalars, then one [table] per dict value (inline tables below)."""
    lines = [f"{_toml_key(k)} = {_toml_scalar(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"[{_toml_key(k)}]")
            lines += [f"{_toml_key(kk)} = {_toml_scalar(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def test_toml_writer_round_trips() -> None:
    """The helper above writes TOML that tomllib reads back to the same document."""
    import tomllib

    doc = {"a": 1, "b ü": [1.5, "x"], "t": {"k": True, "n": {"z": -2}}, "s": "q\"'\\"}
    assert tomllib.loads(to_toml(doc)) == doc


# ----------------------------------------------------------------------------- strategies

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -1.0, 1e300, 1e-300, 0.166, 30.0])
_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.sampled_from([0, 1, -1, 10, 64, 10**6])
_scalars = st.booleans() | _ints | _floats | _text
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=3),
                       max_leaves=8)


def _keys(real: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(real) | _text.filter(bool)


def _config_doc() -> st.SearchStrategy[dict[str, Any]]:
    from exonta.config import ACQUISITION_FIELDS, ConcentrationParams, DetectParams, LinkParams, SizingParams

    sections = {"acquisition": list(ACQUISITION_FIELDS), "detect": list(DetectParams.model_fields),
                "link": list(LinkParams.model_fields), "sizing": list(SizingParams.model_fields),
                "concentration": list(ConcentrationParams.model_fields)}
    all_keys = [k for ks in sections.values() for k in ks]
    table = st.dictionaries(_keys(all_keys), _values, max_size=4)
    return st.dictionaries(_keys(list(sections)), table | _values, max_size=4)


def _expect_input_error_or_ok(fn, *args, **kwargs) -> Any:
    try:
        return fn(*args, **kwargs)
    except ExontaInputError as exc:
        msg = str(exc)
        # a message may echo user text (even a key with a newline); the CLI prints it as one line
        assert msg.strip() and "Traceback" not in msg, msg
        return exc


# ----------------------------------------------------------------------------- config TOML

@SETTINGS
@given(doc=_config_doc())
def test_fuzz_load_config_documents(doc: dict[str, Any]) -> None:
    """Random config documents (real and random keys, any value types): AnalysisConfig or ExontaInputError."""
    from exonta.config import AnalysisConfig, load_config

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "cfg.toml"
        p.write_text(to_toml(doc), encoding="utf-8")
        out = _expect_input_error_or_ok(load_config, config_file=p,
                                        explicit_acquisition={"pixel_size_um": 0.166, "fps": 30.0})
    if not isinstance(out, ExontaInputError):
        cfg, warnings, sources = out
        assert isinstance(cfg, AnalysisConfig)
        assert math.isfinite(cfg.acquisition.pixel_size_um) and cfg.acquisition.pixel_size_um > 0
        assert isinstance(warnings, list) and isinstance(sources, dict)


@SETTINGS
@given(raw=st.binary(max_size=300) | _text.map(lambda s: s.encode("utf-8")))
def test_fuzz_load_config_raw_bytes(raw: bytes) -> None:
    """Arbitrary bytes as a config file (binary, invalid UTF-8, broken TOML) never crash."""
    from exonta.config import load_config

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "cfg.toml"
        p.write_bytes(raw)
        _expect_input_error_or_ok(load_config, config_file=p, explicit_acquisition={"pixel_size_um": 0.2, "fps": 25})


# ----------------------------------------------------------------------------- batch manifest

_manifest_cells = st.sampled_from(["video", "sample", "lot", "dilution", "fps", "pixel_size_um", "temperature_c",
                                   "a.tif", "sub/b.avi", "../x.tif", "/abs.tif", "C:\\x.tif", "..", ".", "S1",
                                   "1,5", "nan", "-1", "0", "inf", "1e400", "", " ", '"', "ü µ", "\t"]) | _text


@SETTINGS
@given(rows=st.lists(st.lists(_manifest_cells, min_size=1, max_size=5), min_size=0, max_size=5),
       sep=st.sampled_from([",", ";", "\t"]), eol=st.sampled_from(["\n", "\r\n", "\r"]))
def test_fuzz_parse_manifest(rows: list[list[str]], sep: str, eol: str) -> None:
    """Random CSV tables: rows of safe relative paths and safe names, or ExontaInputError."""
    from exonta.batch.discover import parse_manifest

    text = eol.join(sep.join(r) for r in rows)
    out = _expect_input_error_or_ok(parse_manifest, text)
    if not isinstance(out, ExontaInputError):
        assert out
        for rec in out:
            parts = rec["video"].split("/")
            assert ".." not in parts and not rec["video"].startswith("/") and ":" not in parts[0][1:2]
            for key in ("sample", "lot"):
                assert "/" not in rec[key] and "\\" not in rec[key] and rec[key] not in ("", ".", "..")
            assert all(math.isfinite(v) for v in rec["acquisition"].values())


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_fuzz_read_manifest_bytes(raw: bytes) -> None:
    """Arbitrary bytes as samples.csv (BOM, NUL, Latin-1 ...) never crash."""
    from exonta.batch.discover import read_manifest

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "samples.csv"
        p.write_bytes(raw)
        _expect_input_error_or_ok(read_manifest, p)


# ----------------------------------------------------------------------------- report spec

def _spec_doc() -> st.SearchStrategy[dict[str, Any]]:
    from exonta.report.spec import METRICS, Criterion, Spec

    metric = st.sampled_from(list(METRICS)) | _text
    crit = st.dictionaries(_keys(list(Criterion.model_fields)), _values, max_size=4) | st.fixed_dictionaries(
        {"metric": metric}, optional={"min": _floats | _ints, "max": _floats | _ints, "samples": st.lists(_text),
                                      "label": _text})
    top = st.dictionaries(_keys(list(Spec.model_fields)), _values, max_size=3)
    return st.builds(lambda t, c: {**t, "criterion": c} if c is not None else t, top,
                     st.none() | st.lists(crit, max_size=3) | _values)


@SETTINGS
@given(doc=_spec_doc())
def test_fuzz_parse_spec(doc: dict[str, Any]) -> None:
    """Random spec dicts (parsed TOML): a Spec or ExontaInputError."""
    from exonta.report.spec import Spec, parse_spec

    out = _expect_input_error_or_ok(parse_spec, doc, "fuzz.toml")
    assert isinstance(out, (Spec, ExontaInputError))


@SETTINGS
@given(doc=_spec_doc(), raw=st.none() | st.binary(max_size=200))
def test_fuzz_load_spec_files(doc: dict[str, Any], raw: bytes | None) -> None:
    """Random spec files — serialised documents or raw bytes — through load_spec."""
    from exonta.report.spec import load_spec

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "spec.toml"
        if raw is None:
            try:
                p.write_text(to_toml(doc), encoding="utf-8")
            except ValueError:
                return
        else:
            p.write_bytes(raw)
        _expect_input_error_or_ok(load_spec, p)


# ----------------------------------------------------------------------------- calibration JSON

VALID_CALIBRATION = {
    "schema": "exonta.calibration/1", "created": "2026-01-01T00:00:00+00:00", "exonta_version": "0.1",
    "standard_concentration_per_ml": 1e9, "standard_concentration_rel_uncertainty": 0.05,
    "standard_diameter_nm": 100.0, "standard_refractive_index": 1.59, "medium_refractive_index": 1.333,
    "acquisition": {"pixel_size_um": 0.166, "fps": 30.0, "exposure_s": 0.02, "temperature_c": 22.0,
                    "dilution": 1.0},
    "detect_params_hash": "abc", "detect_threshold_snr": 5.0, "detect_threshold": None, "psf_sigma_px": 1.5,
    "edge_px": 4, "noise_level": None, "mean_particles_per_frame": 20.0, "mean_particles_per_frame_rel_se": 0.02,
    "analysed_area_um2": 8000.0, "n_frames": 300, "n_distinct_particles": 400, "effective_depth_um": 8.0,
    "effective_depth_rel_se": 0.05, "brightness_column": "mass", "log_brightness_max": 9.0,
    "brightness_ratio": 20.0, "threshold_model": "hard", "defocus_q": 0.0, "sheet_sigma_um": 4.0,
    "sheet_sigma_simple_um": 4.2, "video_sha256": "0" * 64, "video_path": None, "warnings": [],
}


def _json_values() -> st.SearchStrategy[Any]:
    leaf = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False) | _text
    return st.recursive(leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                        max_leaves=6)


def test_valid_calibration_fixture_loads(tmp_path: Path) -> None:
    """The mutation base of the calibration fuzz test is itself a valid calibration."""
    from exonta.analysis.concentration import load_calibration

    p = tmp_path / "cal.json"
    p.write_text(json.dumps(VALID_CALIBRATION))
    cal = load_calibration(p)
    assert cal.effective_depth_um == 8.0


@SETTINGS
@given(changes=st.dictionaries(st.sampled_from(sorted(VALID_CALIBRATION)) | _text, _json_values()
                               | st.sampled_from([float("nan"), float("inf"), -1.0, 0.0]), max_size=4),
       drop=st.lists(st.sampled_from(sorted(VALID_CALIBRATION)), max_size=3),
       whole=st.none() | _json_values())
def test_fuzz_load_calibration(changes: dict[str, Any], drop: list[str], whole: Any) -> None:
    """A valid calibration with random keys changed/dropped/added, or a random JSON document."""
    from exonta.analysis.concentration import Calibration, load_calibration

    doc: Any = {k: v for k, v in {**VALID_CALIBRATION, **changes}.items() if k not in drop}
    if whole is not None:
        doc = whole
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "cal.json"
        p.write_text(json.dumps(doc))  # NaN/Infinity literals too: Python's json reads them back
        out = _expect_input_error_or_ok(load_calibration, p)
    assert isinstance(out, (Calibration, ExontaInputError))


@SETTINGS
@given(raw=st.binary(max_size=200))
def test_fuzz_load_calibration_bytes(raw: bytes) -> None:
    """Arbitrary bytes as a calibration file."""
    from exonta.analysis.concentration import load_calibration

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "cal.json"
        p.write_bytes(raw)
        _expect_input_error_or_ok(load_calibration, p)


# ----------------------------------------------------------------------------- safe names

@SETTINGS
@given(name=st.text(max_size=30) | st.sampled_from(["..", ".", "../..", "a/../../b", "\\\\srv\\x", "C:", "~"]))
def test_fuzz_safe_name_stays_inside_root(name: str) -> None:
    """Any sample/video name becomes one non-hidden path component directly under the output root."""
    from exonta.io.results import safe_name

    n = safe_name(name)
    assert n and "/" not in n and "\\" not in n and "\0" not in n
    assert n not in (".", "..") and not n.startswith(".")
    root = Path("/results/root")
    assert (root / n).parent == root


# ----------------------------------------------------------------------------- CLI arguments

@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory) -> Path:
    """12 frames of 32×32 px with three bright moving spots (fast to analyse)."""
    rng = np.random.default_rng(5)
    n, h, w = 12, 32, 32
    yy, xx = np.mgrid[0:h, 0:w]
    frames = rng.poisson(20, size=(n, h, w)).astype(np.float64)
    pos = rng.uniform(8, 24, size=(3, 2))
    for t in range(n):
        pos += rng.normal(0, 0.5, size=pos.shape)
        for y, x in pos:
            frames[t] += 150 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
    p = tmp_path_factory.mktemp("cli") / "tiny.tif"
    tifffile.imwrite(p, np.clip(frames, 0, 255).astype(np.uint8))
    return p


_cli_tokens = st.sampled_from([
    "--pixel-size-um", "--fps", "--exposure-s", "--temperature-c", "--viscosity-mpas", "--dilution", "--invert",
    "--no-invert", "--config", "--calibration", "--threshold-snr", "--psf-sigma-px", "--min-track-length", "--quiet",
    "-q", "--out", "-o", "--help", "--bogus", "0.166", "30", "0", "-1", "nan", "inf", "1e400", "abc", "", "ü",
    "VIDEO", "VIDEO", "OUT", "MISSING.tif", "--", "-",
]) | _text


@SETTINGS
@given(tokens=st.lists(_cli_tokens, max_size=8))
def test_fuzz_cli_analyze_arguments(tokens: list[str], tiny_video: Path) -> None:
    """Random argument lists to `exonta analyze`: only exit codes 0/1/2 (0 = analysed, 2 = usage or
    input error) and nothing but SystemExit escaping; an error is one ``exonta: error:`` line or a
    usage message, never a traceback."""
    from exonta.cli.main import app

    with tempfile.TemporaryDirectory() as d:
        subs = {"VIDEO": str(tiny_video), "OUT": str(Path(d) / "out"), "MISSING.tif": str(Path(d) / "m.tif")}
        args = ["analyze"] + [subs.get(t, t) for t in tokens]
        res = CliRunner().invoke(app, args)
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, repr(res.exception))
    assert res.exit_code in (0, 1, 2), (args, res.exit_code)
    assert "Traceback" not in res.stdout + res.stderr, args
    assert "internal error" not in res.stderr, (args, res.stderr)
    if res.exit_code == 2 and "exonta: error:" in res.stderr:
        # one line per failed input video (several positional arguments are several videos)
        assert all(ln.startswith("exonta: error: ") for ln in res.stderr.strip().splitlines()), res.stderr


@SETTINGS
@given(px=_floats, fps=_floats, thr=st.none() | _floats, mtl=st.none() | st.integers(-5, 10**9))
def test_fuzz_cli_analyze_numbers(px: float, fps: float, thr: float | None, mtl: int | None, tiny_video: Path) -> None:
    """Random numbers (NaN, ±inf, 0, negative, huge) for the numeric flags on a valid video:
    a result (exit 0) or one input-error line (exit 2)."""
    from exonta.cli.main import app

    with tempfile.TemporaryDirectory() as d:
        args = ["analyze", str(tiny_video), "--out", str(Path(d) / "out"), "-q", "--pixel-size-um", repr(px),
                "--fps", repr(fps)]
        if thr is not None:
            args += ["--threshold-snr", repr(thr)]
        if mtl is not None:
            args += ["--min-track-length", str(mtl)]
        res = CliRunner().invoke(app, args)
        leftovers = [p.name for p in (Path(d) / "out").iterdir()] if (Path(d) / "out").is_dir() else []
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, repr(res.exception))
    assert res.exit_code in (0, 2), (args, res.exit_code, res.stderr)
    if res.exit_code == 2:
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("exonta: error:"), res.stderr
        assert leftovers == []
    else:
        assert leftovers == ["tiny"]
