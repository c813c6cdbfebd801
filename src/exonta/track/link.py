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
6. pairs that are unambiguous (the source has one candidate and the detection
   has one candidate) are linked directly; the rest is solved exactly by the
   sparse Jonker–Volgenant algorithm (LAPJVsp,
   :func:`scipy.sparse.csgraph.min_weight_full_bipartite_matching`).

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
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_array
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

from ..config import Acquisition, LinkParams
from ..errors import ExontaCancelled, ExontaInputError
from ..physics import diffusion_from_diameter

__all__ = ["adaptive_radius2", "link_features", "search_range_px", "search_range_um"]

_REQUIRED = ("frame", "x", "y")
_ADAPTIVE_FLOOR_PX = 1.0  # smallest per-track search radius, px
_DENSE_MAX = 160  # augmented problems up to this size are solved densely (faster than building a sparse graph)


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


def _match_frame(src_pos: np.ndarray, src_gap: np.ndarray, dst_pos: np.ndarray, rho2,
                 src_tree_r: float, cost_unit2: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Optimal links between active sources and the detections of one frame.

    Parameters
    ----------
    src_pos : (k, 2) float array
        Last positions of the active tracks, px.
    src_gap : (k,) int array
        Missing frames since each track was last seen (0 = seen in the previous frame).
    dst_pos : (m, 2) float array
        Detections of the current frame, px.
    rho2 : float or (k,) float array
        Squared base search radius of every source (one value for all), px²; costs are in units of
        ``cost_unit2`` (default: the largest).
    cost_unit2 : float, optional
        Squared radius (px²) the costs are expressed in; leaving a source or a
        detection unlinked costs half of it.
    src_tree_r : float
        Largest radius to query (base radius × sqrt(max gap + 1)), px.

    Returns
    -------
    src_idx, dst_idx : int arrays
        Linked pairs.
    """
    empty = np.empty(0, dtype=np.int64)
    t_src = cKDTree(src_pos)
    t_dst = cKDTree(dst_pos)
    sdm = t_src.sparse_distance_matrix(t_dst, src_tree_r, output_type="ndarray")
    if sdm.size == 0:
        return empty, empty
    i = sdm["i"].astype(np.int64)
    j = sdm["j"].astype(np.int64)
    # cost: squared displacement over frames spanned, in units of the base radius ρ² (the largest one);
    # a pair is a candidate only inside its source's own (gap-widened) radius; leaving a source or a
    # detection unlinked costs 1/2 each
    rho2_src = np.broadcast_to(np.asarray(rho2, dtype=float), (src_pos.shape[0],))
    rho2_max = float(rho2_src.max()) if cost_unit2 is None else float(cost_unit2)
    r2 = sdm["v"] ** 2 / (src_gap[i] + 1.0)
    keep = r2 < rho2_src[i]
    cost = r2 / rho2_max
    i, j, cost = i[keep], j[keep], cost[keep]
    if i.size == 0:
        return empty, empty
    k, m = src_pos.shape[0], dst_pos.shape[0]
    row_deg = np.bincount(i, minlength=k)
    col_deg = np.bincount(j, minlength=m)
    trivial = (row_deg[i] == 1) & (col_deg[j] == 1)
    out_i = [i[trivial]]
    out_j = [j[trivial]]
    rest = ~trivial
    if np.any(rest):
        ri, rj, rc = i[rest], j[rest], cost[rest]
        rows, li = np.unique(ri, return_inverse=True)
        cols, lj = np.unique(rj, return_inverse=True)
        nr, nc = rows.size, cols.size
        n = nr + nc
        half = 0.5
        # augmented LAP (Jaqaman 2008): [[C, diag(1/2)], [diag(1/2), Cᵀ-pattern·0]];
        # a constant offset keeps every weight non-zero without changing the optimum
        # (every full matching has exactly n edges).
        if n <= _DENSE_MAX:
            big = (n + 1) * 4.0  # never chosen: dearer than leaving everything unlinked
            c = np.full((n, n), big)
            c[li, lj] = rc
            c[np.arange(nr), nc + np.arange(nr)] = half
            c[nr + np.arange(nc), np.arange(nc)] = half
            c[nr:, nc:] = 0.0
            r_ind, c_ind = linear_sum_assignment(c)
            sel = (r_ind < nr) & (c_ind < nc)
            out_i.append(rows[r_ind[sel]])
            out_j.append(cols[c_ind[sel]])
            return np.concatenate(out_i), np.concatenate(out_j)
        off = 1.0
        ar = np.concatenate([li, np.arange(nr), nr + np.arange(nc), nr + lj])
        ac = np.concatenate([lj, nc + np.arange(nr), np.arange(nc), nc + li])
        aw = np.concatenate([rc + off, np.full(nr, half + off), np.full(nc, half + off), np.full(lj.size, off)])
        graph = coo_array((aw, (ar, ac)), shape=(n, n)).tocsr()
        r_ind, c_ind = min_weight_full_bipartite_matching(graph)
        sel = (r_ind < nr) & (c_ind < nc)
        out_i.append(rows[r_ind[sel]])
        out_j.append(cols[c_ind[sel]])
    return np.concatenate(out_i), np.concatenate(out_j)


def _notify(progress, fraction: float, message: str) -> None:
    if progress is None:
        return
    if progress(fraction, message) is False:
        raise ExontaCancelled("linking cancelled")


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
    rho = search_range_px(acquisition, params)
    rho2 = rho * rho
    memory = int(params.memory_frames)
    r_query = rho * math.sqrt(memory + 1.0) * (1.0 + 1e-9)

    frames = features["frame"].to_numpy().astype(np.int64)
    order = np.argsort(frames, kind="stable")
    fr_sorted = frames[order]
    xy = np.column_stack([features["x"].to_numpy(dtype=np.float64)[order],
                          features["y"].to_numpy(dtype=np.float64)[order]])
    n_feat = fr_sorted.size
    track_of = np.full(n_feat, -1, dtype=np.int64)
    if n_feat:
        uframes, starts = np.unique(fr_sorted, return_index=True)
        ends = np.append(starts[1:], n_feat)
    else:
        uframes = starts = ends = np.empty(0, dtype=np.int64)

    act_pos = np.empty((0, 2))
    act_last = np.empty(0, dtype=np.int64)
    act_id = np.empty(0, dtype=np.int64)
    act_sq = np.empty(0)  # sum of squared steps / (frames spanned), px², per active track
    act_n = np.empty(0, dtype=np.int64)  # number of steps per active track
    adaptive = bool(params.adaptive_search)
    p_track = float(params.track_miss_probability)
    floor2 = _ADAPTIVE_FLOOR_PX ** 2
    next_id = 0
    n_frames = uframes.size
    every = max(1, n_frames // 100)
    for fi in range(n_frames):
        f, s, e = int(uframes[fi]), int(starts[fi]), int(ends[fi])
        if fi % every == 0:
            _notify(progress, fi / max(n_frames, 1), "linking")
        alive = (f - act_last - 1) <= memory
        if not np.all(alive):
            act_pos, act_last, act_id = act_pos[alive], act_last[alive], act_id[alive]
            act_sq, act_n = act_sq[alive], act_n[alive]
        dst = xy[s:e]
        m = e - s
        ids = np.full(m, -1, dtype=np.int64)
        if act_id.size:
            gap = f - act_last - 1
            gate2 = adaptive_radius2(act_sq, act_n, rho2, p_track, floor2) if adaptive else rho2
            si, dj = _match_frame(act_pos, gap, dst, gate2, r_query, cost_unit2=rho2)
            ids[dj] = act_id[si]
            d = dst[dj] - act_pos[si]
            act_sq[si] += (d[:, 0] ** 2 + d[:, 1] ** 2) / (gap[si] + 1.0)
            act_n[si] += 1
            act_pos[si] = dst[dj]
            act_last[si] = f
        new = ids < 0
        n_new = int(new.sum())
        if n_new:
            ids[new] = np.arange(next_id, next_id + n_new)
            next_id += n_new
            act_pos = np.concatenate([act_pos, dst[new]])
            act_last = np.concatenate([act_last, np.full(n_new, f, dtype=np.int64)])
            act_id = np.concatenate([act_id, ids[new]])
            act_sq = np.concatenate([act_sq, np.zeros(n_new)])
            act_n = np.concatenate([act_n, np.zeros(n_new, dtype=np.int64)])
        track_of[s:e] = ids
    _notify(progress, 1.0, "linking")

    particle = np.empty(n_feat, dtype=np.int64)
    particle[order] = track_of
    counts = np.bincount(track_of, minlength=next_id) if n_feat else np.zeros(0, dtype=np.int64)
    keep_track = counts >= 2
    new_number = np.cumsum(keep_track) - 1  # ids are already in order of first appearance
    keep_row = keep_track[particle] if n_feat else np.zeros(0, dtype=bool)
    out = features.loc[keep_row].copy()
    out["particle"] = new_number[particle[keep_row]].astype(np.int64)
    out["frame"] = out["frame"].astype(np.int64)
    out["x_corrected"] = out["x"].astype(np.float64)
    out["y_corrected"] = out["y"].astype(np.float64)
    out = out.sort_values(["particle", "frame"], kind="stable").reset_index(drop=True)
    return out
