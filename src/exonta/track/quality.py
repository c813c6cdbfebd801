"""Rejecting junk links: positions of a track that one Brownian particle does not explain.

At the detection thresholds that keep the dim, motion-blurred frames of real
particles (3.5 noise sigmas), noise maxima are 10–55 % of all detections in the
simulated validation cases. The linker's search radius must admit the fastest
particle of interest, so it also admits noise maxima far from a slow particle's
true position: when a particle's own spot is missed (a gap) or at a track's
first steps (before its adaptive radius has learned its speed) the track takes
a noise maximum many of its own step lengths away. One such position adds two
huge steps; the track then looks several times faster, and the size
distribution gets a spurious small-size component (simulated 400 nm beads: a
10–13 % component at ~60 nm made of short, dim, defocused tracks with one to
three such positions each).

:func:`prune_outlier_positions` tests every position of a track against the
rest of the same track:

* an **interior** position is compared with the time-weighted interpolation of
  its two neighbours. For a Brownian path, this *bridge residual* is
  independent of the displacement between the neighbours (Brownian-bridge
  property of Gaussian increments; with a static localisation error the
  covariance between the residual and that displacement is
  ``−σ²/2 + σ²/2 = 0`` for equal time gaps), so the displacement that
  replaces its two steps is not selected. The positions that are *kept* are
  conditioned on passing the test, which selects slow steps when the level is
  loose (tests/track/test_quality.py: −19 % in MSD at p = 0.02, none at 1e-7);
* an **end** position is compared through its one step.

Both are normalised to a mean of ``2DΔt`` (px², two axes): the squared residual
over ``2 t₁t₂/(t₁ + t₂)`` and the squared end step over ``2t`` (``t₁, t₂, t``:
frames to the neighbours). Each then is ``Exp``-distributed with the track's
own (unknown) scale, and its ratio ``u`` to the mean of the ``n_o`` positions
that share no step with it is ``F(2, 2n_o)``-distributed, whatever the
particle's diffusion coefficient: ``P(U > u) = (1 + u/n_o)^(−n_o)``. The least
probable position is removed when this is below
``LinkParams.outlier_probability``, and the test is repeated on what remains
(a junk position also inflates the residuals of its neighbours; they are
excluded from its reference and judged again after its removal). This is the
predictive bound of the linker's adaptive radius
(:func:`exonta.track.link.adaptive_radius2`) applied two-sided, after the
whole track is known, so that a track's first steps and steps across gaps are
judged too. (Localisation noise adds ``3σ²`` to an interior residual and
``2σ²`` to an end step for one-frame gaps: close enough for a tail test.)

Pruning is off by default (``outlier_probability = 0``): on the simulated
EV-like lognormal sample, removing junk positions (even with the truth) moves
D50 up, because the valid tracks over-represent large particles and the junk
links were offsetting that; see :class:`~exonta.config.LinkParams`. The
default remedy for junk links is the second linking pass with the sample's
own radius (:func:`sample_search_range_um`, ``LinkParams.sample_search``),
which on simulated 400 nm beads removes the spurious ~60 nm component
(12 % → 2 %) and leaves polydisperse samples, whose fastest tracks need the
physics radius, unchanged.

A removed position leaves a gap; the track is not split. Positions of a
track made only of noise maxima are mutually consistent and are not removed;
:class:`~exonta.config.SizingParams` ``exclude_faster_than_grid`` and the
search radius deal with those.

References
----------
Jaqaman, K. et al., Nat. Methods 5:695 (2008) (per-track Brownian search
radius). Vestergaard, C. L., Blainey, P. C. & Flyvbjerg, H., Phys. Rev. E
89:022726 (2014) (displacement covariance with noise and blur).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..config import LinkParams
from ..errors import ExontaInputError

__all__ = ["brightness_log_sd", "prune_outlier_positions", "robust_track_diffusion", "sample_search_range_um"]

#: a test needs at least this many positions that share no step with the tested one
MIN_REFERENCE_POSITIONS = 3


def prune_outlier_positions(tracks: pd.DataFrame, params: LinkParams | None = None,
                            columns: tuple[str, str] | None = None) -> pd.DataFrame:
    """Drop the positions of each track that are inconsistent with the rest of it (see the module docstring).

    Parameters
    ----------
    tracks : DataFrame
        Tracks table with ``particle``, ``frame`` and positions (px).
    params : LinkParams, optional
        ``outlier_probability`` (per position; 0 disables pruning) and
        ``max_outlier_fraction`` (most of a track that may be removed).
    columns : (str, str), optional
        Position columns; default ``x_corrected``/``y_corrected`` when present
        (drift removed), else ``x``/``y``.

    Returns
    -------
    DataFrame
        The tracks table without the rejected positions (tracks left with fewer
        than two positions are dropped), sorted by ``particle`` then ``frame``,
        fresh index. ``attrs["n_outlier_positions"]`` holds the number removed.
    """
    from ._quality_kernels import prune_kernel

    params = params if params is not None else LinkParams()
    if columns is None:
        columns = ("x_corrected", "y_corrected") if {"x_corrected", "y_corrected"} <= set(tracks.columns) \
            else ("x", "y")
    missing = [c for c in ("particle", "frame", *columns) if c not in tracks.columns]
    if missing:
        raise ExontaInputError(f"the tracks table has no column {missing[0]!r}; link the features first "
                               "(exonta.track.link_features)")
    alpha = float(params.outlier_probability)
    out = tracks.sort_values(["particle", "frame"], kind="stable").reset_index(drop=True)
    if alpha <= 0 or len(out) == 0:
        out.attrs["n_outlier_positions"] = 0
        return out
    p = out["particle"].to_numpy().astype(np.int64)
    fr = out["frame"].to_numpy().astype(np.int64)
    x = np.ascontiguousarray(out[columns[0]].to_numpy(dtype=np.float64))
    y = np.ascontiguousarray(out[columns[1]].to_numpy(dtype=np.float64))
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    offsets = np.append(starts, p.size).astype(np.int64)
    keep = np.ones(p.size, dtype=bool)
    prune_kernel(offsets, fr, x, y, math.log(alpha), 0.5 * math.log(1.0 / alpha), MIN_REFERENCE_POSITIONS,
                 float(params.max_outlier_fraction), keep)
    n_removed = int((~keep).sum())
    if n_removed:
        kept_p = p[keep]
        ids, cnt = np.unique(kept_p, return_counts=True)
        ok = np.isin(p, ids[cnt >= 2]) & keep
        out = out.loc[ok].reset_index(drop=True)
    out.attrs["n_outlier_positions"] = n_removed
    return out


#: tracks shorter than this many one-frame steps do not enter the sample's diffusion estimate
MIN_SAMPLE_STEPS = 5


def robust_track_diffusion(tracks: pd.DataFrame, pixel_size_um: float, frame_interval_s: float,
                           min_positions: int = 10, columns: tuple[str, str] | None = None) -> np.ndarray:
    """Per-track diffusion coefficient from the *median* squared one-frame step, µm²/s.

    For 2-D Brownian motion ``r²/(4DΔt) ~ Exp(1)``, whose median is ``ln 2``, so
    ``D̂ = median(r²) / (4Δt ln 2)``. The median ignores a minority of junk steps (a noise maximum
    linked into the track), and localisation noise only inflates it (``+σ²/(Δt ln 2)``): an
    upper-side estimate, which is what a search radius needs. Tracks with fewer than
    ``min_positions`` positions or :data:`MIN_SAMPLE_STEPS` one-frame steps are left out.

    Returns
    -------
    ndarray
        One value per retained track (order of ``particle``).
    """
    if columns is None:
        columns = ("x_corrected", "y_corrected") if {"x_corrected", "y_corrected"} <= set(tracks.columns) \
            else ("x", "y")
    if len(tracks) == 0:
        return np.zeros(0)
    t = tracks.sort_values(["particle", "frame"], kind="stable")
    p = t["particle"].to_numpy().astype(np.int64)
    f = t["frame"].to_numpy().astype(np.int64)
    x = t[columns[0]].to_numpy(dtype=float)
    y = t[columns[1]].to_numpy(dtype=float)
    same = p[1:] == p[:-1]
    one = same & (np.diff(f) == 1)
    r2 = (np.diff(x) ** 2 + np.diff(y) ** 2)[one] * pixel_size_um ** 2
    pid = p[1:][one]
    ids, n_pos = np.unique(p, return_counts=True)
    long_ids = set(ids[n_pos >= min_positions].tolist())
    df = pd.DataFrame({"particle": pid, "r2": r2})
    g = df.groupby("particle")["r2"]
    med, cnt = g.median(), g.size()
    sel = (cnt >= MIN_SAMPLE_STEPS) & med.index.isin(list(long_ids))
    return med[sel].to_numpy() / (4.0 * frame_interval_s * math.log(2.0))


def sample_search_range_um(tracks: pd.DataFrame, acquisition, params: LinkParams | None = None,
                           min_positions: int = 10) -> float | None:
    """Search radius that follows the measured diffusion of the sample, µm (second linking pass).

    The physics radius (:func:`exonta.track.link.search_range_um`) must admit the smallest
    particle of interest (``LinkParams.min_diameter_nm``): at 50 nm and 0.1 µm/px that is about
    30 px, and every noise maximum within it is a candidate link for a slow micron bead whose
    spot is missed. After a first pass, the sample's own fast end is known: ``D_hi``, the
    ``LinkParams.sample_diffusion_quantile`` quantile of :func:`robust_track_diffusion` over the
    tracks of at least ``min_positions`` positions, gives
    ``ρ = sqrt(4 D_hi Δt ln(1/p))`` with ``p = search_miss_probability`` (the physics radius's
    rule, applied to the sample's fastest particles instead of the smallest of interest). Never
    larger than the physics radius.

    Returns
    -------
    float or None
        The radius, µm; None when fewer than ``LinkParams.sample_min_tracks`` tracks qualify
        or their diffusion quantile is 0 (keep the physics radius).
    """
    from .link import search_range_um

    params = params if params is not None else LinkParams()
    d = robust_track_diffusion(tracks, acquisition.pixel_size_um, acquisition.frame_interval_s, min_positions)
    d = d[np.isfinite(d)]
    if d.size < params.sample_min_tracks:
        return None
    d_hi = float(np.quantile(d, params.sample_diffusion_quantile))
    if not d_hi > 0:  # the tracks do not move (every picture repeated, stuck particles): no radius to learn
        return None
    rho = math.sqrt(4.0 * max(d_hi, 0.0) * acquisition.frame_interval_s
                    * math.log(1.0 / params.search_miss_probability))
    return float(min(rho, search_range_um(acquisition, params)))


def brightness_log_sd(tracks: pd.DataFrame, min_positions: int = 10, min_steps: int = 50) -> float | None:
    """Frame-to-frame spread of a particle's log peak brightness, measured on linked tracks.

    The robust standard deviation (1.4826 × the median absolute deviation) of
    ``ln(signal)`` changes between consecutive frames within the tracks of at least
    ``min_positions`` positions: what one particle's brightness does from one frame to
    the next (shot noise of the fit, motion through the light sheet), for the brightness
    term of the link cost (``LinkParams.brightness_log_sd``, :mod:`exonta.track.link`).
    The median, not the mean square: the wrong links of a first pass make heavy tails.

    Returns
    -------
    float or None
        The spread, floored at 0.05; None without a ``signal`` column or with fewer than
        ``min_steps`` steps.
    """
    from .link import log_brightness

    if not len(tracks) or "signal" not in tracks:
        return None
    t = tracks[["particle", "frame", "signal"]].sort_values(["particle", "frame"], kind="stable")
    pid = t["particle"].to_numpy()
    frame = t["frame"].to_numpy()
    lb = log_brightness(t["signal"].to_numpy())
    codes = pd.factorize(pid)[0]
    n_pos = np.bincount(codes)[codes]
    step = (pid[1:] == pid[:-1]) & (np.diff(frame) == 1) & (n_pos[1:] >= min_positions)
    d = np.diff(lb)[step]
    d = d[np.isfinite(d)]
    if d.size < min_steps:
        return None
    return float(max(1.4826 * np.median(np.abs(d - np.median(d))), 0.05))
