"""Linking detections into trajectories.

The linker is a frame-to-frame *globally optimal* assignment (a linear
assignment problem, LAP) on sparse candidate pairs, with gap closing:

1. the search radius comes from physics (:func:`search_range_px`): the fastest
   particle of interest (smallest diameter, Stokes–Einstein) sets it;
2. every particle still "active" (seen in one of the last ``memory_frames + 1``
   frames) is a candidate source; candidate pairs are found with k-d trees;
3. a pair with a gap of ``g`` missing frames is compared to a radius grown by
   ``sqrt(g + 1)`` (the diffusive spread over ``g + 1`` frame intervals): its
   cost is the *normalised* squared displacement ``r² / (g + 1)``;
4. leaving a source or a detection unlinked costs ``ρ²/2`` each, so a pair is
   linked only when its normalised cost is below ``ρ²`` (it is inside the
   search radius) and the sum of costs of the whole frame is minimal
   (Jaqaman et al., Nat. Methods 5:695, 2008, frame-to-frame step);
5. with ``LinkParams.adaptive_search`` (default) each track also has its own
   gate, from its own past steps (:func:`adaptive_radius2`: the predictive
   ``F(2, 2n)`` bound, miss probability ``LinkParams.track_miss_probability``),
   never wider than the physics radius: a slow particle's track no longer
   accepts a noise maximum many of its own step lengths away when its own spot
   is missed. Noise maxima are 10–55 % of all detections at a 3.5-sigma
   threshold in the simulated validation cases, and every such link adds a
   huge step that makes the track look small (same detections, fixed →
   adaptive at p = 1e-4: 37 °C 100 nm D50 −4.5 % → −1.4 %, 8 µm/s drift
   −4.9 % → −2.7 %, 400 nm −15.7 % → −3.0 %). The price: a true step outside
   a track's gate splits the track, which biases sizes up (about 1 % on
   noise-free detections at p = 1e-4, and +7 % on the D50 of the EV-like
   lognormal sample, whose small, fast particles are split most); the default
   p = 1e-6 keeps most of the gain (37 °C D50 −4.0 % fixed, −3.0 % adaptive)
   with the lognormal D50 at +2.9 %. Costs stay in units of the physics radius, so among candidates
   the shortest (gap-normalised) displacements win;
5b. with ``LinkParams.brightness_log_sd = s > 0`` a link also costs the change of the log peak
   brightness, ``Δ = ln(signal_j) − ln(signal_i)``, as the negative log-likelihood of a Gaussian of
   spread ``s`` in the units of the distance cost (``ρ²`` ≙ ``ln(1/p)`` nats for the fastest particle,
   ``p = LinkParams.search_miss_probability``): ``c = (r²/((g+1)ρ²) + β·min(Δ², 9s²)) / (1 + 9βs²)``,
   ``β = 1/(2 s² ln(1/p))``. Capped and rescaled so that every pair inside its gate stays linkable
   (the gate alone decides whether a particle can be linked); the term only changes which of close
   candidates is chosen. Why: in a crowded field the assignment by distance alone prefers the
   shorter of two crossing steps, so a fast particle's long true steps are given to a neighbour and
   its track ends; the tracks kept are slower than the particles (simulated 60 nm beads, 1.5e9/mL,
   0.3 other detections inside the radius: the tracked spans' true D50 +5.5 %, from +1.7 % at 5× dilution).
   Neighbours differ in brightness (their depths in the sheet differ) far more than one particle does
   between frames (simulator: spread of ``ln signal`` 1.0 across detections, 0.41 frame to frame).
   Opt-in (default 0): on a generated bright-field MJPEG recording of 0.5 µm beads, where a bead's
   brightness jumps with defocus and compression, the binned search read D50 −25 % with it (−5.6 %
   without); ``"auto"`` measures ``s`` on a first pass (:func:`exonta.track.quality.brightness_log_sd`);
6. the assignment is solved exactly by sparse shortest augmenting paths
   (Jonker & Volgenant, Computing 38:325, 1987) in numba
   (:mod:`exonta.track._linkkernels`): each augmentation explores only the
   subnetwork of its source, so an unambiguous pair costs O(1); candidate
   pairs come from a strip search over the detections sorted by ``x``.

Unlike trackpy's subnet enumeration, the LAP is polynomial: crowded fields
cannot raise a ``SubnetOversizeException`` or blow up combinatorially, and the
assignment is optimal (not limited to subnets of a maximum size).

Choice of the default search radius
-----------------------------------
For 2-D Brownian motion the one-frame step length ``r`` satisfies
``r² / (4 D Δt) ~ Exp(1)``, so ``P(r > ρ) = exp(-ρ² / (4 D Δt))``. Asking for a
miss probability ``p`` (``LinkParams.search_miss_probability``, default 1e-3)
for the *smallest* particle of interest gives

    ρ = sqrt(4 D_max Δt · ln(1/p)) = k · sqrt(4 D_max Δt),  k = sqrt(ln(1/p)) ≈ 2.63,

i.e. about 3.7 standard deviations of the per-axis step. Larger particles
diffuse more slowly and are missed with probability ``p^(d/d_min)`` (1e-6 at
twice the minimum diameter). Localisation noise (tens of nm) is negligible
against the µm-scale steps that set ρ.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..config import Acquisition, LinkParams
from ..errors import ExontaCancelled, ExontaInputError
from ..physics import diameter_from_diffusion, diffusion_from_diameter

__all__ = ["adaptive_radius2", "followed_diameter_nm", "link_features", "search_range_px", "search_range_um"]

_REQUIRED = ("frame", "x", "y")
_ADAPTIVE_FLOOR_PX = 1.0  # smallest per-track search radius, px


def search_range_um(acquisition: Acquisition, params: LinkParams) -> float:
    """Maximum one-frame displacement considered when linking, µm.

    ``params.search_range_um`` when set; otherwise
    ``sqrt(4 D_max Δt ln(1/p))`` with ``D_max`` the Stokes–Einstein diffusion
    coefficient of a sphere of ``params.min_diameter_nm`` at the acquisition's
    temperature and viscosity, ``Δt = 1/fps`` and
    ``p = params.search_miss_probability`` (see the module docstring).

    Parameters
    ----------
    acquisition : Acquisition
    params : LinkParams

    Returns
    -------
    float
        Search radius in µm.
    """
    if params.search_range_um is not None:
        return float(params.search_range_um)
    d_max = diffusion_from_diameter(params.min_diameter_nm, acquisition.temperature_c, acquisition.viscosity_mpas)
    return math.sqrt(4.0 * d_max * acquisition.frame_interval_s * math.log(1.0 / params.search_miss_probability))


def followed_diameter_nm(acquisition: Acquisition, params: LinkParams) -> float:
    """The smallest diameter whose steps the search radius follows, nm: the inverse of :func:`search_range_um`.

    The diameter whose one-frame displacement exceeds the radius with probability
    ``params.search_miss_probability`` (2-D Brownian steps, ``P(r > ρ) = exp(−ρ²/4DΔt)``), by Stokes–Einstein
    at the acquisition's temperature and viscosity: ``params.min_diameter_nm`` for the radius derived from it;
    larger for a radius narrowed to the sample's own (``auto_parameters.search_range_um``) or given by the user.
    """
    rho = search_range_um(acquisition, params)
    d_um2_s = rho * rho / (4.0 * acquisition.frame_interval_s * math.log(1.0 / params.search_miss_probability))
    return float(diameter_from_diffusion(d_um2_s, acquisition.temperature_c, acquisition.viscosity_mpas))


def search_range_px(acquisition: Acquisition, params: LinkParams) -> float:
    """Maximum one-frame displacement considered when linking, px.

    :func:`search_range_um` divided by ``acquisition.pixel_size_um``. A gap of
    ``g`` missing frames widens it by ``sqrt(g + 1)``.
    """
    return search_range_um(acquisition, params) / acquisition.pixel_size_um


def adaptive_radius2(sum_sq_px2, n_steps, rho2_max_px2: float, miss_probability: float,
                     floor2_px2: float = 1.0) -> np.ndarray:
    """Squared per-track search radius from the track's own past steps, px².

    For a freely diffusing particle the squared length of its next (2-D)
    one-frame step divided by the mean of its ``n`` previous squared steps is
    ``F(2, 2n)``-distributed whatever its diffusion coefficient, so
    ``P(next step² > c · mean) = (1 + c/n)^(-n)``. Setting this to ``p``
    gives ``c_n = n (p^(-1/n) − 1)`` (``→ ln(1/p)`` for long tracks): a radius
    that misses the track's true next step with probability ``p``, exactly,
    including the uncertainty of its own short history. Localisation noise and
    drift are in the measured steps and so in the radius. The radius is bounded
    by the physics radius ``rho2_max_px2`` (a track without steps gets it) and
    from below by ``floor2_px2``. This is u-track's per-track Brownian search
    radius (Jaqaman et al. 2008: a multiple of the track's own displacement
    SD, bounded by a minimum and maximum) with the multiple set by the
    predictive F distribution.

    Parameters
    ----------
    sum_sq_px2 : ndarray (k,)
        Sum over each track's steps of squared displacement / frames spanned, px².
    n_steps : ndarray of int (k,)
        Number of steps of each track.
    rho2_max_px2 : float
        Squared physics radius, px².
    miss_probability : float
        ``p``.
    floor2_px2 : float
        Smallest squared radius, px².

    Returns
    -------
    ndarray (k,)
    """
    n = np.asarray(n_steps, dtype=float)
    out = np.full(n.shape, float(rho2_max_px2))
    has = n > 0
    if np.any(has):
        nh = n[has]
        c = nh * np.expm1(-np.log(miss_probability) / nh)
        out[has] = np.clip(c * np.asarray(sum_sq_px2, dtype=float)[has] / nh, floor2_px2, rho2_max_px2)
    return out


def log_brightness(signal: np.ndarray) -> np.ndarray:
    """``ln`` of the fitted peak brightness (``signal``), non-finite and non-positive values at ``ln 1e-6``."""
    return np.log(np.clip(np.nan_to_num(np.asarray(signal, dtype=np.float64), nan=1e-6), 1e-6, None))


def _validate(features: pd.DataFrame) -> None:
    if not isinstance(features, pd.DataFrame):
        raise ExontaInputError(f"features must be a pandas DataFrame, got {type(features).__name__}")
    missing = [c for c in _REQUIRED if c not in features.columns]
    if missing:
        raise ExontaInputError(
            f"the features table has no column {missing[0]!r}; it needs columns frame, x, y "
            "(as produced by exonta.detect)")
    if "particle" in features.columns:
        raise ExontaInputError("the features table already has a 'particle' column; drop it before linking")
    for c in ("x", "y"):
        v = features[c].to_numpy(dtype=float)
        if v.size and not np.all(np.isfinite(v)):
            raise ExontaInputError(f"column {c!r} of the features table contains NaN or infinite values; "
                                   "drop those rows before linking")
    fr = features["frame"].to_numpy()
    if fr.size and not np.issubdtype(fr.dtype, np.integer):
        frf = fr.astype(float)
        if not np.all(np.isfinite(frf)) or np.any(frf != np.round(frf)):
            raise ExontaInputError("column 'frame' of the features table must hold whole frame numbers")


def _notify(progress, fraction: float, message: str) -> None:
    if progress is None:
        return
    if progress(fraction, message) is False:
        raise ExontaCancelled("linking cancelled")


def _link_sorted(fr_sorted: np.ndarray, x: np.ndarray, y: np.ndarray, rho2: float, reach_px: float, memory: int,
                 adaptive: bool, miss_probability: float, progress, lb_sorted: np.ndarray | None = None,
                 brightness_log_sd: float = 0.0, search_miss_probability: float = 1e-3
                 ) -> np.ndarray:
    """Track id of every detection (sorted by frame), ids in order of creation.

    ``lb_sorted`` (:func:`log_brightness` of the detections, same order) with ``brightness_log_sd > 0``
    adds the brightness term of the cost (module docstring, 5b); otherwise distance only.

    The frame loop runs in :func:`exonta.track._linkkernels.link_frames_kernel` (candidate pairs,
    per-track gates, exact sparse assignment, track state), in chunks of about 1 % of the frames
    between progress reports.
    """
    from ._linkkernels import link_frames_kernel

    n_feat = fr_sorted.size
    track_of = np.full(n_feat, -1, dtype=np.int64)
    if n_feat:
        uframes, starts = np.unique(fr_sorted, return_index=True)
        uframes = uframes.astype(np.int64)
        ends = np.append(starts[1:], n_feat).astype(np.int64)
        starts = starts.astype(np.int64)
    else:
        uframes = starts = ends = np.empty(0, dtype=np.int64)
    act_x = np.empty(n_feat)
    act_y = np.empty(n_feat)
    act_last = np.empty(n_feat, dtype=np.int64)
    act_id = np.empty(n_feat, dtype=np.int64)
    act_sq = np.empty(n_feat)  # sum of squared steps / (frames spanned), px², per active track
    act_n = np.empty(n_feat, dtype=np.int64)  # number of steps per active track
    act_lb = np.empty(n_feat)  # log brightness of each active track's last detection
    if lb_sorted is None or not brightness_log_sd > 0:
        lb, beta, dmax2 = np.zeros(n_feat), 0.0, 0.0
    else:
        lb = np.ascontiguousarray(lb_sorted, dtype=np.float64)
        beta = 1.0 / (2.0 * brightness_log_sd ** 2 * -np.log(search_miss_probability))
        dmax2 = (3.0 * brightness_log_sd) ** 2
    counters = np.zeros(2, dtype=np.int64)  # active tracks, next track id
    neg_log_p = float(-np.log(miss_probability))
    floor2 = _ADAPTIVE_FLOOR_PX ** 2
    n_frames = uframes.size
    every = max(1, n_frames // 100)
    for fi in range(0, n_frames, every):
        _notify(progress, fi / max(n_frames, 1), "linking")
        link_frames_kernel(x, y, uframes, starts, ends, fi, min(fi + every, n_frames), int(memory),
                           float(rho2), float(reach_px), adaptive, neg_log_p, floor2, act_x, act_y, act_last, act_id,
                           act_sq, act_n, counters, track_of, lb, beta, dmax2, act_lb)
    return track_of


def link_features(features: pd.DataFrame, acquisition: Acquisition, params: LinkParams | None = None,
                  progress: Callable[[float, str], bool | None] | None = None) -> pd.DataFrame:
    """Link detections into trajectories (frame-to-frame optimal assignment with gap closing).

    Parameters
    ----------
    features : DataFrame
        Features table: ``frame`` (int), ``x``, ``y`` (px) and any other
        columns (``mass``, ``signal``, ``size_px``, ``background``, ``snr``),
        which are kept.
    acquisition : Acquisition
        Pixel size, frame rate, temperature and viscosity (for the default
        search range).
    params : LinkParams, optional
        Search range (or the smallest diameter of interest that sets it),
        ``memory_frames`` for gap closing.
    progress : callable, optional
        Called as ``progress(fraction_done, message)`` about 100 times; if it
        returns ``False`` linking stops with :class:`~exonta.errors.ExontaCancelled`.

    Returns
    -------
    DataFrame
        Tracks table: the features columns plus ``particle`` (int64, numbered
        from 0 in order of first appearance) and ``x_corrected`` /
        ``y_corrected`` (copies of ``x`` / ``y``; :func:`exonta.track.subtract_drift`
        fills them with drift-corrected values). Tracks with a single position
        are dropped. (One spot found twice is removed by the detector,
        ``DetectParams.merge_within_sigma``.)
        Sorted by ``particle`` then ``frame``, fresh index.

    Raises
    ------
    ExontaInputError
        Missing columns, non-finite coordinates, a ``particle`` column already present.

    Notes
    -----
    See the module docstring for the cost model and the choice of the search
    radius. A particle may vanish for up to ``memory_frames`` frames; the
    radius for a gap of ``g`` frames is ``ρ sqrt(g + 1)``.

    References
    ----------
    Jaqaman, K. et al., "Robust single-particle tracking in live-cell
    time-lapse sequences", Nat. Methods 5:695 (2008).
    Crocker, J. C. & Grier, D. G., J. Colloid Interface Sci. 179:298 (1996).
    """
    params = params if params is not None else LinkParams()
    _validate(features)
    if params.brightness_log_sd == "auto":
        raise ExontaInputError('link_features needs a number for LinkParams.brightness_log_sd; "auto" is measured by '
                               "exonta.pipeline (or exonta.track.quality.brightness_log_sd on a first linking pass)")
    rho = search_range_px(acquisition, params)
    rho2 = rho * rho
    memory = int(params.memory_frames)
    r_query = rho * math.sqrt(memory + 1.0) * (1.0 + 1e-9)

    frames = features["frame"].to_numpy().astype(np.int64)
    order = np.argsort(frames, kind="stable")
    fr_sorted = frames[order]
    x = np.ascontiguousarray(features["x"].to_numpy(dtype=np.float64)[order])
    y = np.ascontiguousarray(features["y"].to_numpy(dtype=np.float64)[order])
    brightness_sd = float(params.brightness_log_sd)
    lb = None
    if brightness_sd > 0 and "signal" in features:
        lb = log_brightness(features["signal"].to_numpy(dtype=np.float64)[order])
    track_of = _link_sorted(fr_sorted, x, y, rho2, r_query, memory, bool(params.adaptive_search),
                            float(params.track_miss_probability), progress, lb, brightness_sd,
                            float(params.search_miss_probability))
    n_feat = fr_sorted.size
    next_id = int(track_of.max()) + 1 if n_feat else 0
    _notify(progress, 1.0, "linking")

    counts = np.bincount(track_of, minlength=next_id) if n_feat else np.zeros(0, dtype=np.int64)
    keep_track = counts >= 2
    new_number = np.cumsum(keep_track) - 1  # ids are already in order of first appearance
    # kept rows in frame order, then (stable) by particle: sorted by particle, then frame
    kept = keep_track[track_of] if n_feat else np.zeros(0, dtype=bool)
    part_fs = new_number[track_of[kept]]
    by_particle = np.argsort(part_fs, kind="stable")
    out = features.take(order[kept][by_particle]).reset_index(drop=True)
    out["particle"] = part_fs[by_particle].astype(np.int64)
    out["frame"] = out["frame"].astype(np.int64)
    out["x_corrected"] = out["x"].astype(np.float64)
    out["y_corrected"] = out["y"].astype(np.float64)
    return out
