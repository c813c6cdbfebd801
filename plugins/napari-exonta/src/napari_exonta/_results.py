"""Pure helpers turning an exonta Result into napari layer data and display text (no Qt).

Nothing here computes an analysis quantity: tracks, sizes, distributions and
concentrations all come from :func:`exonta.pipeline.analyze`. The only numbers
derived here are for display: colours, and the time-averaged MSD curve of one
track (with the model curve of exonta's own D and σ_loc) for the particle plot.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DIAMETER_COLORMAP",
    "diameter_range",
    "diameter_colors",
    "track_diameters",
    "tracks_layer_data",
    "detections_layer_data",
    "excluded_regions_layer_data",
    "summary_texts",
    "particle_msd",
    "particle_info",
    "particle_title",
    "video_frames",
]

DIAMETER_COLORMAP = "turbo"
_UNSIZED_RGBA = (0.55, 0.55, 0.55, 0.6)


def _fmt(v: Any, spec: str = ".0f") -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return format(f, spec) if math.isfinite(f) else "n/a"


def track_diameters(particles: pd.DataFrame) -> pd.Series:
    """Diameter (nm) of every *valid* track indexed by particle id (NaN-free)."""
    if particles is None or not len(particles) or "diameter_nm" not in particles:
        return pd.Series([], dtype=float, name="diameter_nm")
    p = particles
    ok = np.isfinite(p["diameter_nm"].to_numpy(dtype=float))
    if "valid" in p:
        ok &= p["valid"].to_numpy(dtype=bool)
    s = pd.Series(p.loc[ok, "diameter_nm"].to_numpy(dtype=float), index=p.loc[ok, "particle"].to_numpy(),
                  name="diameter_nm")
    return s


def diameter_range(diameters: Any) -> tuple[float, float]:
    """Colour range (nm): 2nd–98th percentile of the sized tracks (robust to outliers)."""
    d = np.asarray(diameters, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(d, [2, 98]))
    if not hi > lo:
        lo, hi = lo - 1.0, hi + 1.0
    return lo, hi


def diameter_colors(diameters: Any, lo: float, hi: float, colormap: str = DIAMETER_COLORMAP) -> np.ndarray:
    """RGBA colours (n, 4) for diameters (nm); NaN (unsized) is grey."""
    from napari.utils.colormaps import ensure_colormap

    d = np.asarray(diameters, dtype=float)
    out = np.tile(np.asarray(_UNSIZED_RGBA, dtype=np.float32), (d.size, 1))
    ok = np.isfinite(d)
    if ok.any():
        t = np.clip((d[ok] - lo) / (hi - lo), 0.0, 1.0)
        out[ok] = np.asarray(ensure_colormap(colormap).map(t), dtype=np.float32)
    return out


def video_frames(table: pd.DataFrame) -> np.ndarray:
    """The video frame of each row: ``video_frame`` when the analysis left out repeated frames (its ``frame``
    then numbers the distinct frames, :mod:`exonta.detect.repeats`), else ``frame``."""
    col = "video_frame" if "video_frame" in table else "frame"
    return table[col].to_numpy()


def tracks_layer_data(tracks: pd.DataFrame, particles: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """napari Tracks data ``[particle, frame, y, x]`` of the sized tracks, and per-vertex features.

    Only tracks with a valid diameter are included (a Tracks layer colours by
    the min–max of its feature, which NaN would break). Positions are the
    measured ones (``x``, ``y``, with drift), so they overlay the video.

    Returns
    -------
    data : float ndarray (n, 4)
    features : DataFrame with ``particle`` and ``diameter_nm`` (one row per vertex)
    """
    diam = track_diameters(particles)
    if tracks is None or not len(tracks) or not len(diam):
        return np.empty((0, 4)), pd.DataFrame({"particle": pd.Series([], dtype=np.int64),
                                               "diameter_nm": pd.Series([], dtype=float)})
    t = tracks[tracks["particle"].isin(diam.index)].sort_values(["particle", "frame"], kind="stable")
    data = np.column_stack([t["particle"].to_numpy(dtype=float), video_frames(t).astype(float),
                            t["y"].to_numpy(dtype=float), t["x"].to_numpy(dtype=float)])
    feats = pd.DataFrame({"particle": t["particle"].to_numpy(dtype=np.int64),
                          "diameter_nm": diam.reindex(t["particle"].to_numpy()).to_numpy(dtype=float)})
    return data, feats


def excluded_regions_layer_data(regions) -> list[np.ndarray]:
    """Rectangles of a Shapes layer (``(4, 2)`` corners ``[y, x]``) for the regions the analysis left out
    (``DetectParams.exclude_regions``: burned-in overlays found or given, ``(x0, y0, x1, y1)`` px, half-open).

    The corners are the regions' outer pixel edges (pixel centres at integers): a detection shown inside a
    rectangle would have been dropped.
    """
    out = []
    for x0, y0, x1, y1 in regions or ():
        ya, yb, xa, xb = y0 - 0.5, y1 - 0.5, x0 - 0.5, x1 - 0.5
        out.append(np.array([[ya, xa], [ya, xb], [yb, xb], [yb, xa]], float))
    return out


def detections_layer_data(tracks: pd.DataFrame, particles: pd.DataFrame,
                          lo: float | None = None, hi: float | None = None) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Points data ``[frame, y, x]`` of every linked detection, features and RGBA colours.

    Detections are coloured by their track's diameter (grey for tracks that
    were too short or could not be sized).
    """
    diam = track_diameters(particles)
    if lo is None or hi is None:
        lo, hi = diameter_range(diam.to_numpy())
    if tracks is None or not len(tracks):
        return (np.empty((0, 3)), pd.DataFrame({"particle": pd.Series([], dtype=np.int64),
                                                "diameter_nm": pd.Series([], dtype=float)}),
                np.empty((0, 4), dtype=np.float32))
    pid = tracks["particle"].to_numpy(dtype=np.int64)
    d = diam.reindex(pid).to_numpy(dtype=float)
    data = np.column_stack([video_frames(tracks).astype(float), tracks["y"].to_numpy(dtype=float),
                            tracks["x"].to_numpy(dtype=float)])
    feats = pd.DataFrame({"particle": pid, "diameter_nm": d})
    return data, feats, diameter_colors(d, lo, hi)


def summary_texts(summary: dict[str, Any]) -> dict[str, str]:
    """Short display strings from ``Result.summary()`` (mode, D50, concentration with CI, counts, detection limit)."""
    s = summary.get("size_nm", {}) or {}
    ci = s.get("ci95") or {}
    c = summary.get("concentration_per_ml", {}) or {}
    n = summary.get("counts", {}) or {}

    def with_ci(key: str) -> str:
        lo_hi = ci.get(key) or [None, None]
        if _fmt(s.get(key)) == "n/a":
            return "n/a"
        txt = f"{_fmt(s.get(key))} nm"
        if lo_hi[0] is not None and _fmt(lo_hi[0]) != "n/a":
            txt += f"  [{_fmt(lo_hi[0])}–{_fmt(lo_hi[1])}]"
        return txt

    conc = f"{_fmt(c.get('value'), '.3g')} /mL"
    if c.get("ci95_low") is not None:
        conc += f"  [{_fmt(c.get('ci95_low'), '.2g')}–{_fmt(c.get('ci95_high'), '.2g')}]"
    peaks = ", ".join(f"{_fmt(p.get('diameter_nm'))} nm ({100 * float(p.get('number_fraction', 0)):.0f}%)"
                      for p in (s.get("peaks") or []))
    lim = s.get("detection_limit") or {}
    if lim.get("diameter_nm") is not None:
        limit = f"{_fmt(lim['diameter_nm'], '.0f')} nm (smallest seen, same material)"
    else:
        limit = lim.get("reason") or "n/a"
    return {
        "mode": with_ci("mode"),
        "d50": with_ci("d50"),
        "concentration": conc,
        "tracks": f"{n.get('n_valid_tracks', 0)} sized of {n.get('n_tracks', 0)}, "
                  f"{_fmt(n.get('mean_particles_per_frame'), '.1f')} particles/frame",
        "peaks": peaks or "n/a",
        "limit": limit,
        "warnings": "\n".join(summary.get("warnings") or []),
    }


def particle_msd(tracks: pd.DataFrame, particle: int, pixel_size_um: float, fps: float,
                 max_lag: int | None = None) -> pd.DataFrame:
    """Time-averaged 2-D MSD of one track (drift-corrected positions), for display.

    Gaps (frames missing inside the track) are skipped: only pairs exactly
    ``lag`` frames apart are averaged.

    Returns
    -------
    DataFrame
        ``lag_frames``, ``lag_s``, ``msd_um2``, ``n_pairs``.
    """
    t = tracks[tracks["particle"] == particle].sort_values("frame")
    cols = ("x_corrected", "y_corrected") if "x_corrected" in t else ("x", "y")
    empty = pd.DataFrame({"lag_frames": pd.Series([], dtype=np.int64), "lag_s": pd.Series([], dtype=float),
                          "msd_um2": pd.Series([], dtype=float), "n_pairs": pd.Series([], dtype=np.int64)})
    if len(t) < 2:
        return empty
    f = t["frame"].to_numpy(dtype=np.int64)
    f0, span = f[0], int(f[-1] - f[0]) + 1
    pos = np.full((span, 2), np.nan)
    pos[f - f0] = t[list(cols)].to_numpy(dtype=float) * float(pixel_size_um)
    if max_lag is None:
        max_lag = max(1, min(30, span // 3))
    rows = []
    for lag in range(1, min(max_lag, span - 1) + 1):
        d = pos[lag:] - pos[:-lag]
        sq = np.sum(d * d, axis=1)
        ok = np.isfinite(sq)
        if ok.sum() == 0:
            continue
        rows.append((lag, lag / float(fps), float(sq[ok].mean()), int(ok.sum())))
    if not rows:
        return empty
    return pd.DataFrame(rows, columns=["lag_frames", "lag_s", "msd_um2", "n_pairs"])


def particle_info(particles: pd.DataFrame, particle: int) -> dict[str, Any] | None:
    """The particles-table row of one track as a dict (``None`` when unknown)."""
    if particles is None or not len(particles):
        return None
    row = particles[particles["particle"] == particle]
    if not len(row):
        return None
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.iloc[0].to_dict().items()}


def particle_title(info: dict[str, Any]) -> str:
    """One-line description of a particle: D ± SE, diameter with 95 % CI, track length."""
    txt = (f"particle {int(info['particle'])}: D = {_fmt(info.get('D_um2_s'), '.3g')} ± "
           f"{_fmt(info.get('D_se_um2_s'), '.2g')} µm²/s, d = {_fmt(info.get('diameter_nm'))} nm "
           f"[{_fmt(info.get('diameter_ci95_low_nm'))}–{_fmt(info.get('diameter_ci95_high_nm'))}]")
    txt += f", {info.get('n_positions', '?')} positions"
    if not info.get("valid", True):
        txt += " (not sized: too short or D ≤ 0)"
    return txt

