"""exonta._threads: idle OpenMP workers sleep unless the user chose otherwise (fresh processes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_CODE = """
import os, numpy as np
from numba.np.ufunc import parallel
from exonta.detect import locate_frames
assert not parallel._is_initialized
locate_frames(np.random.default_rng(0).poisson(20, (4, 64, 64)).astype(np.uint16))
assert parallel._is_initialized
import numba
print(numba.threading_layer(), os.environ.get("OMP_WAIT_POLICY"))
"""


def _run(extra_env: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(extra_env)
    out = subprocess.run([sys.executable, "-c", _CODE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_detection_sets_passive_wait_before_the_pool_starts():
    layer, policy = _run({})
    if layer != "omp":
        pytest.skip(f"threading layer {layer}: the wait policy does not apply")
    assert policy == "passive"


@pytest.mark.parametrize("var, value", [("OMP_WAIT_POLICY", "active"), ("GOMP_SPINCOUNT", "1000")])
def test_a_users_choice_is_kept(var, value):
    layer, policy = _run({var: value})
    assert policy == (value if var == "OMP_WAIT_POLICY" else "None")


def test_no_change_once_the_pool_runs(monkeypatch):
    from numba.np.ufunc import parallel

    from exonta._threads import prefer_passive_omp_wait

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setattr(parallel, "_is_initialized", True)
    prefer_passive_omp_wait()
    assert "OMP_WAIT_POLICY" not in os.environ
