"""The console entry point (exonta.cli.main.main): exit status and complete outputs with the fast process end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from exonta.cli.main import _exit_code

ENTRY = "from exonta.cli.main import main; main()"


def run_entry(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.mark.parametrize("code, status", [(None, 0), (0, 0), (2, 2), (3, 3), (256 + 4, 4)])
def test_exit_code_follows_sys_exit(code, status):
    assert _exit_code(code) == status


def test_exit_code_of_a_message_is_1_and_prints_it(capsys):
    assert _exit_code("stopped: reason") == 1
    assert "stopped: reason" in capsys.readouterr().err


def test_version_prints_and_exits_0():
    proc = run_entry("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip().startswith("exonta ")


def test_bad_input_exits_2_with_one_line(tmp_path):
    proc = run_entry("analyze", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "video not found" in lines[0]
    assert not (tmp_path / "out").exists()


SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "beads100.tif"


def test_analysis_output_is_complete_and_stdout_flushed(tmp_path):
    """The process ends with os._exit after the command: every file must be whole, the summary printed."""
    out = tmp_path / "out"
    proc = run_entry("analyze", str(SAMPLE), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert len(folders) == 1
    summary = json.loads((folders[0] / "summary.json").read_text())  # a truncated file would not parse
    import pandas as pd

    tracks = pd.read_parquet(folders[0] / "tracks.parquet")
    features = pd.read_parquet(folders[0] / "features.parquet")
    assert summary["counts"]["n_tracks"] == tracks["particle"].nunique() > 0
    assert len(features) >= len(tracks)
    assert (folders[0] / "size_distribution.png").stat().st_size > 1000
    # the printed summary reached the pipe, to its last line
    assert "D50 (nm)" in proc.stdout
    assert "results:" in proc.stdout and proc.stdout.rstrip().endswith(folders[0].name)
