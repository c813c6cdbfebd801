"""Shared test fixtures. Makes ``tests/`` importable so tests can use ``reference.*`` slow twins."""

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))
