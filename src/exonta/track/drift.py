"""Ensemble drift and flow: estimate it, check it is uniform, subtract it.

Every particle in a field shares the motion of the fluid (stage drift,
convection, flow in the cell) on top of its own Brownian motion. Per frame, the
common displacement is estimated robustly (median over all particles linked
between the frame and the previous one), smoothed over
``LinkParams.drift_smoothing_frames`` frames and cumulated; subtracting it from
the positions leaves the Brownian part.

The estimate contains each particle's own steps: subtracting it removes a share
of about ``1/m`` of the particle's Brownian motion, ``m`` the one-frame steps in
the smoothing window, and biases ``D`` low by about as much (3 particles in
view and a 15-frame window: D 0.961 ± 0.009 of the truth over 12 seeds, i.e.
diameters 4 % too large; tests/track/test_drift.py). The window is therefore
widened until it holds ``LinkParams.drift_min_steps`` steps on average (400:
1.004 ± 0.008). A slow drift left in the positions costs only its square
(``u²Δt²`` per step), so a wide window loses little: a stage wobble of 0.45 µm/s
amplitude (0.32 µm/s rms) left whole adds 0.2 % to the one-frame MSD of a 1 µm
bead at 25 frames/s.

A drift/flow that is *not* the same everywhere in the field (shear in a flow
cell, convection rolls) cannot be removed by one common correction: the
residual velocity adds ``0.75 |u|² Δt`` to the (2-D, pooled) CVE estimate of
``D`` (``u`` the residual velocity), which makes particles look smaller. The field is
split into halves (left/right and top/bottom); when the robust mean velocities
of the halves differ significantly (``z > 5``) and by more than
``max(1 µm/s, 20 % of the mean speed)``, :func:`estimate_drift` warns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..config import Acquisition, LinkParams
from ..errors import ExontaInputError
from .link import search_range_um

__all__ = ["DriftResult", "estimate_drift", "smoothing_window", "subtract_drift"]

#: Non-uniform flow warning: minimum significance of the difference between field halves.
NONUNIFORM_Z = 5.0
#: Non-uniform flow warning: minimum velocity difference, µm/s ...
NONUNIFORM_MIN_UM_S = 1.0
#: ... and as a fraction of the mean drift speed.
NONUNIFORM_REL = 0.2
#: Strong-flow warning when the displacement per frame exceeds this fraction of the search range.
FLOW_SEARCH_FRACTION = 0.3
#: Flow warnings need the mean drift to differ from zero by this many standard errors: a few tracks (a
#: buffer blank's noise links, a very dilute sample) give a mean step that is mostly their own diffusion.
FLOW_MIN_Z = 3.0


@dataclass
class DriftResult:
    """Estimated ensemble drift of one video.

    Attributes
    ----------
    drift_px : DataFrame
        Columns ``frame`` (every frame from the first to the last of the
        tracks), ``dx_px``, ``dy_px``: cumulative smoothed drift relative to
        the first frame, px.
    velocity_um_per_s : tuple of float
        Mean drift velocity ``(vx, vy)`` over the video, µm/s (x = columns,
        y = rows).
    warnings : list of str
        Strong or non-uniform flow; empty for a well-behaved sample.
    region_velocity_um_per_s : dict
        Robust mean velocity ``(vx, vy)`` in each half of the field
        (``"left"``, ``"right"``, ``"top"``, ``"bottom"``), µm/s, for QC.
    n_steps : int
        Number of one-frame displacements the estimate is based on.
    velocity_se_um_per_s : tuple of float
        Standard error of each component of ``velocity_um_per_s`` (from the spread of the one-frame
        displacements: robust, 1.2533·σ_MAD/√n), µm/s; NaN without displacements.
    smoothing_frames : int
        Window of the moving average actually used (:func:`smoothing_window`), frames.
    """

    drift_px: pd.DataFrame
    velocity_um_per_s: tuple[float, float]
    warnings: list[str] = field(default_factory=list)
    region_velocity_um_per_s: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_steps: int = 0
    velocity_se_um_per_s: tuple[float, float] = (math.nan, math.nan)
    smoothing_frames: int = 1


def _steps(tracks: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """One-frame displacements of linked particles: (frame_to, dx, dy, x_mid, y_mid)."""
    for c in ("particle", "frame", "x", "y"):
        if c not in tracks.columns:
            raise ExontaInputError(f"the tracks table has no column {c!r}; link the features first "
                                   "(exonta.track.link_features)")
    p = tracks["particle"].to_numpy()
    f = tracks["frame"].to_numpy().astype(np.int64)
    x = tracks["x"].to_numpy(dtype=np.float64)
    y = tracks["y"].to_numpy(dtype=np.float64)
    if p.size > 1 and not np.all((p[1:] > p[:-1]) | ((p[1:] == p[:-1]) & (f[1:] > f[:-1]))):
        o = np.lexsort((f, p))  # the tracks table of link_features is already in this order
        p, f, x, y = p[o], f[o], x[o], y[o]
    ok = (p[1:] == p[:-1]) & (f[1:] - f[:-1] == 1)
    dx = (x[1:] - x[:-1])[ok]
    dy = (y[1:] - y[:-1])[ok]
    xm = (0.5 * (x[1:] + x[:-1]))[ok]
    ym = (0.5 * (y[1:] + y[:-1]))[ok]
    return f[1:][ok], dx, dy, xm, ym, (int(f.min()) if f.size else 0), (int(f.max()) if f.size else -1)


def _robust_mean_se(v: np.ndarray) -> tuple[float, float]:
    """Median and its standard error (1.2533 σ/√n for a near-normal sample, σ from the MAD)."""
    n = v.size
    if n == 0:
        return math.nan, math.nan
    med = float(np.median(v))
    sd = 1.4826 * float(np.median(np.abs(v - med))) if n > 1 else math.nan
    return med, 1.2533 * sd / math.sqrt(n) if n > 1 else math.nan


def _smooth(values: np.ndarray, weights: np.ndarray, window: int, fallback: float) -> np.ndarray:
    """Centred weighted moving average; windows without data take ``fallback``."""
    window = min(int(window), values.size)
    if window <= 1:
        return np.where(weights > 0, values, fallback)
    k = np.ones(int(window))
    num = np.convolve(np.where(weights > 0, values * weights, 0.0), k, mode="same")
    den = np.convolve(weights, k, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    return np.where(den > 0, out, fallback)


def smoothing_window(params: LinkParams, n_steps: int, n_frames: int) -> int:
    """Frames of the drift's moving average: ``params.drift_smoothing_frames``, widened until the window holds
    ``params.drift_min_steps`` one-frame steps at the video's mean rate of ``n_steps / n_frames`` (at most the
    video's length)."""
    win = int(params.drift_smoothing_frames)
    if params.drift_min_steps > 0 and n_steps > 0 and n_frames > 0:
        per_frame = n_steps / n_frames
        win = max(win, int(math.ceil(params.drift_min_steps / per_frame)))
    return max(1, min(win, max(n_frames, 1)))


def estimate_drift(tracks: pd.DataFrame, acquisition: Acquisition, params: LinkParams | None = None) -> DriftResult:
    """Estimate the common drift/flow of all particles, frame by frame.

    Parameters
    ----------
    tracks : DataFrame
        Tracks table (``particle``, ``frame``, ``x``, ``y`` in px). Only
        displacements between consecutive frames are used.
    acquisition : Acquisition
        Pixel size and frame rate (velocities in µm/s).
    params : LinkParams, optional
        ``drift_smoothing_frames`` (window of the centred moving average of
        the per-frame drift) and ``drift_min_steps`` (:func:`smoothing_window`),
        ``flow_warning_um_per_s``; the search range is
        used to judge whether the flow threatens linking.

    Returns
    -------
    DriftResult

    Notes
    -----
    The per-frame drift is the *median* of the one-frame displacements of the
    particles present in both frames (robust to mislinks and to a few fast
    particles), smoothed with a centred moving average weighted by the number
    of displacements, then cumulated. Each particle contributes ~1/m of its
    own step to the estimate it is corrected with (m displacements per window),
    and ``D`` is biased low by about as much: the window is widened to hold
    ``drift_min_steps`` of them (module docstring).
    """
    params = params if params is not None else LinkParams()
    f_to, dx, dy, xm, ym, f0, f1 = _steps(tracks)
    px = acquisition.pixel_size_um
    fps = acquisition.fps
    n_frames = max(f1 - f0 + 1, 0)
    frames = np.arange(f0, f0 + n_frames, dtype=np.int64)
    if dx.size == 0:
        zero = np.zeros(n_frames)
        return DriftResult(pd.DataFrame({"frame": frames, "dx_px": zero, "dy_px": zero.copy()}),
                           (0.0, 0.0), ["no particle was linked over consecutive frames: drift not estimated"],
                           {}, 0)
    # per-frame medians (via pandas' grouped median: fast and exact)
    g = pd.DataFrame({"f": f_to, "dx": dx, "dy": dy}).groupby("f", sort=True)
    med = g.median()
    cnt = g.size().to_numpy().astype(float)
    idx = med.index.to_numpy().astype(np.int64) - f0
    per_dx = np.zeros(n_frames)
    per_dy = np.zeros(n_frames)
    w = np.zeros(n_frames)
    per_dx[idx] = med["dx"].to_numpy()
    per_dy[idx] = med["dy"].to_numpy()
    w[idx] = cnt
    mean_dx = float(np.sum(per_dx * w) / np.sum(w))
    mean_dy = float(np.sum(per_dy * w) / np.sum(w))
    win = smoothing_window(params, int(dx.size), n_frames)
    sdx = _smooth(per_dx, w, win, mean_dx)
    sdy = _smooth(per_dy, w, win, mean_dy)
    # the step into the first frame does not exist: drift is relative to frame f0
    sdx[0] = 0.0
    sdy[0] = 0.0
    drift = pd.DataFrame({"frame": frames, "dx_px": np.cumsum(sdx), "dy_px": np.cumsum(sdy)})
    vx, vy = mean_dx * px * fps, mean_dy * px * fps
    speed = math.hypot(vx, vy)
    se_x = _robust_mean_se(dx)[1] * px * fps
    se_y = _robust_mean_se(dy)[1] * px * fps
    # |v|/SE against zero drift (χ² with 2 degrees of freedom: P(z > 3) ≈ 1 %); too few steps for a
    # spread: not significant
    se = math.hypot(se_x, se_y) / math.sqrt(2.0)
    significant = math.isfinite(se) and (se == 0.0 or speed > FLOW_MIN_Z * se)

    warnings: list[str] = []
    if significant and speed > params.flow_warning_um_per_s:
        warnings.append(
            f"strong drift/flow of {speed:.3g} µm/s (above {params.flow_warning_um_per_s:g} µm/s): it was "
            "subtracted, but let the sample settle, check the cell for leaks or bubbles and the temperature "
            "equilibration")
    rho = search_range_um(acquisition, params)
    per_frame_um = speed / fps
    if significant and per_frame_um > FLOW_SEARCH_FRACTION * rho:
        warnings.append(
            f"the flow moves particles by {per_frame_um:.3g} µm per frame, "
            f"{100 * per_frame_um / rho:.0f} % of the linking search range ({rho:.3g} µm): tracks may break; "
            "reduce the flow or raise search_range_um")

    # compare field halves on the residual steps (common time-dependent drift removed), so that a
    # drift varying in time does not masquerade as a spatial difference
    k = f_to - f0
    rdx = dx - sdx[k]
    rdy = dy - sdy[k]
    regions: dict[str, tuple[float, float]] = {}
    scale = px * fps
    for axis_name, coord, names in (("left and right", xm, ("left", "right")),
                                    ("top and bottom", ym, ("top", "bottom"))):
        cut = np.median(coord)
        masks = (coord < cut, coord >= cut)
        stats = []
        for name, msk in zip(names, masks):
            mx, sx = _robust_mean_se(rdx[msk])
            my, sy = _robust_mean_se(rdy[msk])
            mx += mean_dx
            my += mean_dy
            stats.append((mx, sx, my, sy))
            regions[name] = (mx * scale, my * scale)
        (ax, asx, ay, asy), (bx, bsx, by, bsy) = stats
        diff = math.hypot(ax - bx, ay - by) * scale
        se = math.sqrt(asx**2 + bsx**2 + asy**2 + bsy**2) * scale
        if not (math.isfinite(diff) and math.isfinite(se)):
            continue
        z = diff / se if se > 0 else math.inf
        if z > NONUNIFORM_Z and diff > max(NONUNIFORM_MIN_UM_S, NONUNIFORM_REL * speed):
            warnings.append(
                f"flow is not uniform across the field: the {axis_name} halves move at "
                f"({ax * scale:.3g}, {ay * scale:.3g}) and ({bx * scale:.3g}, {by * scale:.3g}) µm/s; a common drift "
                "correction cannot remove this and the sizes will be biased low: stop the flow or analyse a "
                "smaller region")
    return DriftResult(drift, (vx, vy), warnings, regions, int(dx.size), (se_x, se_y), win)


def subtract_drift(tracks: pd.DataFrame, drift: DriftResult) -> pd.DataFrame:
    """Remove an estimated drift from the positions.

    Parameters
    ----------
    tracks : DataFrame
        Tracks table with ``frame``, ``x``, ``y`` (px).
    drift : DriftResult
        From :func:`estimate_drift`. Frames outside its range take the
        drift of the nearest frame.

    Returns
    -------
    DataFrame
        A copy of ``tracks`` with ``x_corrected = x − dx_px(frame)`` and
        ``y_corrected = y − dy_px(frame)``.
    """
    for c in ("frame", "x", "y"):
        if c not in tracks.columns:
            raise ExontaInputError(f"the tracks table has no column {c!r}")
    out = tracks.copy()
    f = out["frame"].to_numpy().astype(np.float64)
    d = drift.drift_px
    if len(d) == 0:
        out["x_corrected"] = out["x"].astype(np.float64)
        out["y_corrected"] = out["y"].astype(np.float64)
        return out
    fr = d["frame"].to_numpy().astype(np.float64)
    dxp = d["dx_px"].to_numpy(dtype=np.float64)
    dyp = d["dy_px"].to_numpy(dtype=np.float64)
    fi = out["frame"].to_numpy()
    if (np.issubdtype(fi.dtype, np.integer) and np.array_equal(fr, fr[0] + np.arange(fr.size))):
        # consecutive whole frames (as estimate_drift makes them): a lookup, clamped at both ends
        # (the values np.interp gives at its knots)
        k = np.clip(fi.astype(np.int64) - int(fr[0]), 0, fr.size - 1)
        shift_x, shift_y = dxp[k], dyp[k]
    else:
        shift_x, shift_y = np.interp(f, fr, dxp), np.interp(f, fr, dyp)
    out["x_corrected"] = out["x"].to_numpy(dtype=np.float64) - shift_x
    out["y_corrected"] = out["y"].to_numpy(dtype=np.float64) - shift_y
    return out
