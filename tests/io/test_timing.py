"""exonta.io.timing: frames placed on the camera's time grid from a movie's timestamps."""

from __future__ import annotations

import numpy as np
import pytest

from exonta.io.timing import GRID_TOLERANCE, frame_timing


def _grid_by_search(times_s, interval_s):
    """Slow twin: each frame's grid index by trying every index up to the last time."""
    n_max = int(round((times_s[-1] - times_s[0]) / interval_s)) + 2
    cands = np.arange(n_max) * interval_s
    return np.array([int(np.argmin(np.abs(cands - (t - times_s[0])))) for t in times_s])


def test_a_steady_camera_is_regular_and_left_alone():
    rng = np.random.default_rng(0)
    t = np.arange(300) / 25.0 + rng.uniform(-0.004, 0.004, 300)  # ±0.1 interval of timestamp jitter
    ft = frame_timing(t)
    assert ft.regular and ft.n_missing == 0 and ft.max_gap == 0
    assert ft.fps == pytest.approx(25.0, rel=1e-3) and ft.grid.tolist() == list(range(300))
    assert ft.missing().size == 0 and ft.n_grid == 300


@pytest.mark.parametrize("fps, fraction, seed", [(30.0, 0.1, 0), (30.0, 0.3, 1), (99.7, 0.2, 2)])
def test_dropped_frames_leave_gaps_on_the_grid(fps, fraction, seed):
    """Frames dropped at random (up to runs of several): each kept frame returns to its camera index, the
    dropped ones are the missing grid indices, the rate is the camera's (not the average of the file)."""
    rng = np.random.default_rng(seed)
    n = 600
    kept = np.flatnonzero(rng.random(n) >= fraction)
    kept = kept - kept[0]
    t = kept / fps + rng.uniform(-0.15, 0.15, kept.size) / fps  # time stamps rounded or jittered
    ft = frame_timing(t)
    assert not ft.regular and ft.fps == pytest.approx(fps, rel=2e-3)
    np.testing.assert_array_equal(ft.grid, kept)
    np.testing.assert_array_equal(ft.grid, _grid_by_search(t, 1.0 / ft.fps))
    np.testing.assert_array_equal(ft.missing(), np.setdiff1d(np.arange(kept[-1] + 1), kept))
    assert ft.n_missing == kept[-1] + 1 - kept.size and ft.n_grid == kept[-1] + 1
    assert ft.max_gap == int(np.diff(kept).max()) - 1
    assert ft.offset_p95 < GRID_TOLERANCE


def test_times_off_any_grid_are_irregular_without_a_grid():
    """A variable-frame-rate file whose times wander (a screen recording): no grid is made up."""
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.uniform(0.02, 0.05, 200))
    ft = frame_timing(t)
    assert ft.grid is None and not ft.regular and ft.n_missing == 0 and ft.offset_p95 > GRID_TOLERANCE
    assert ft.missing().size == 0 and ft.n_grid == 0


@pytest.mark.parametrize("times", [None, [0.0, 0.1], [0.0, 0.1, 0.1, 0.2], [0.0, 0.2, 0.1, 0.3],
                                   [0.0, np.nan, 0.2, 0.3], np.zeros((2, 3))])
def test_no_usable_times_give_none(times):
    assert frame_timing(None if times is None else np.asarray(times, float)) is None
