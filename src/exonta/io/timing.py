"""Frame timing of a movie from its per-frame timestamps: frames dropped by the camera or capture program.

Pure computation (no file access): :class:`exonta.io.readers.OpenCVVideo` reads the timestamps,
:func:`exonta.pipeline.resolve_dropped_frames` uses the result.

A camera runs at a steady rate, but the program that stores its frames may drop some when the disk or
the processor cannot keep up. Containers with per-frame timestamps (MP4, MOV, Matroska, WebM) then
show a gap of two or more frame intervals where a frame is missing; phones and screen recorders write
such variable-frame-rate files too. Read as consecutive frames, each step across a gap spans 2, 3, ...
frame intervals but is taken as one, so diffusion reads too fast and sizes too small (10 % of frames
dropped at random inflate the mean squared step by ~10 %). On the camera's time grid the frames keep
their true times: the missing ones are gaps that tracking bridges (gap closing) and the diffusion
estimators skip (only one-frame steps enter the CVE; :mod:`exonta.analysis.diffusion`).

The grid: a first frame interval is the mean of the intervals between consecutive timestamps within
±25 % of their median; each frame steps ``round(Δt / interval)`` grid places from the one before, and
the interval is refitted as the slope of the times against their grid places (twice). The times must
sit on that grid within :data:`GRID_TOLERANCE` of an interval (timestamps from a steady
camera do; a file whose times wander off a grid, e.g. a screen recording of a live view, is reported as
irregular and analysed frame by frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FrameTiming", "frame_timing", "GRID_TOLERANCE"]

#: A timestamp may sit this far (fraction of a frame interval) from its grid point; the 95th percentile
#: of the frames' offsets must be within it for the grid to be used.
GRID_TOLERANCE = 0.25


@dataclass(frozen=True)
class FrameTiming:
    """How a movie's frames sit in time.

    Attributes
    ----------
    interval_s : float
        The camera's frame interval (s).
    grid : ndarray of int64 or None
        Each file frame's place on the camera's time grid (frames of ``interval_s`` from the first);
        ``None`` when the times are not on a grid (``regular`` is then False as well).
    n_missing : int
        Grid frames with no file frame (dropped); 0 when none or ``grid`` is None.
    max_gap : int
        The longest run of consecutive missing frames.
    regular : bool
        True when every frame follows the previous one by one interval (nothing to correct).
    offset_p95 : float
        95th percentile of the frames' distance to their grid point (fraction of an interval).
    """

    interval_s: float
    grid: np.ndarray | None
    n_missing: int
    max_gap: int
    regular: bool
    offset_p95: float

    @property
    def fps(self) -> float:
        """The camera's frame rate (frames/s)."""
        return 1.0 / self.interval_s

    @property
    def n_grid(self) -> int:
        """Frames on the camera's grid from the first to the last file frame (file frames + missing)."""
        return int(self.grid[-1]) + 1 if self.grid is not None else 0

    def missing(self) -> np.ndarray:
        """The grid indices of the dropped frames (int64, sorted)."""
        if self.grid is None:
            return np.zeros(0, np.int64)
        present = np.zeros(self.n_grid, bool)
        present[self.grid] = True
        return np.flatnonzero(~present).astype(np.int64)


def frame_timing(times_s: np.ndarray | None) -> FrameTiming | None:
    """Place a movie's frames on the camera's time grid.

    Parameters
    ----------
    times_s : array of float or None
        Each frame's timestamp (s), increasing; ``None`` (no timestamps) gives ``None``.

    Returns
    -------
    FrameTiming or None
        ``None`` with fewer than 3 frames, non-finite or non-increasing times.

    Examples
    --------
    >>> t = np.array([0, 1, 2, 4, 5, 8]) / 30
    >>> ft = frame_timing(t)
    >>> ft.grid.tolist(), ft.n_missing, ft.max_gap, round(ft.fps, 3)
    ([0, 1, 2, 4, 5, 8], 3, 2, 30.0)
    """
    if times_s is None:
        return None
    t = np.asarray(times_s, dtype=float)
    if t.ndim != 1 or t.size < 3 or not np.isfinite(t).all():
        return None
    dt = np.diff(t)
    if not (dt > 0).all():
        return None
    med = float(np.median(dt))
    interval = float(dt[np.abs(dt - med) <= 0.25 * med].mean())
    for _ in range(2):  # grid from the interval, then the interval as the slope of the times on the grid
        steps = dt / interval
        k = np.maximum(np.rint(steps), 1).astype(np.int64)
        grid = np.concatenate([[0], np.cumsum(k)])
        interval, start = np.polyfit(grid.astype(float), t, 1)
        interval = float(interval)
    offset = np.abs((t - start) / interval - grid)
    p95 = float(np.percentile(offset, 95))
    if p95 > GRID_TOLERANCE or (np.abs(steps - k) > 0.5).any():
        return FrameTiming(interval, None, 0, 0, False, p95)
    gaps = k - 1
    return FrameTiming(interval, grid.astype(np.int64), int(gaps.sum()), int(gaps.max()),
                       bool((k == 1).all()), p95)
