"""`exonta batch` command line: bad input exits with code 2 before any cluster starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from exonta.cli.main import app

runner = CliRunner()


def test_batch_is_registered() -> None:
    res = runner.invoke(app, ["batch", "--help"])
    assert res.exit_code == 0
    for opt in ("--out", "--config", "--calibration", "--scheduler", "--workers"):
        assert opt in res.output


def test_batch_missing_root_exits_2(tmp_path: Path) -> None:
    res = runner.invoke(app, ["batch", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "batch folder not found" in res.output


@pytest.mark.parametrize("manifest,match", [
    ("video,sample\nmissing.tif,S\n", "not found"),
    ("video,sample,lot\nL/S/a.tif,..,L\n", "'..'"),
    ("video,sample,weird\nL/S/a.tif,S,1\n", "unknown column"),
])
def test_batch_bad_manifest_exits_2(tmp_path: Path, manifest: str, match: str) -> None:
    root = tmp_path / "acq"
    (root / "L" / "S").mkdir(parents=True)
    (root / "L" / "S" / "a.tif").write_bytes(b"whatever")
    (root / "samples.csv").write_text(manifest)
    res = runner.invoke(app, ["batch", str(root), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert match in res.output
    assert not (tmp_path / "out" / "catalog.sqlite").exists()


def test_batch_no_video_and_bad_workers_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["batch", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "no video found" in res.output
    res = runner.invoke(app, ["batch", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), "--workers", "0"])
    assert res.exit_code == 2
