"""Report-test fixtures; the fake-data builders live in report_fakes.py (next to this file)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from report_fakes import SPEC_TOML  # noqa: E402


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    p = tmp_path / "spec.toml"
    p.write_text(SPEC_TOML)
    return p
