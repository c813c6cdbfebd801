"""Report figures as PNG data URIs (matplotlib, Agg canvas, imported lazily; no global pyplot state)."""

from __future__ import annotations

import base64
import io
import math
from typing import Any, Sequence

import numpy as np

from .spec import METRICS, TrendResult

__all__ = ["size_distribution_plot", "control_chart", "png_data_uri"]

_REP_COLOURS = ["#4C72B0", "#DD8452", "#55A868", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974"]
_DPI = 150


def _figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def png_data_uri(fig: Any) -> str:
    """Render a matplotlib Figure to a ``data:image/png;base64,...`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.04)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _style(ax: Any) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.tick_params(labelsize=7)
    ax.grid(True, color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)


def _density(table: Any) -> tuple[np.ndarray, np.ndarray] | None:
    if table is None or "diameter_nm" not in table:
        return None
    col = "deconvolved_density" if "deconvolved_density" in table and np.nansum(
        table["deconvolved_density"].to_numpy(float)) > 0 else "raw_density"
    if col not in table:
        return None
    d = table["diameter_nm"].to_numpy(float)
    y = table[col].to_numpy(float)
    if "bin_width_nm" in table:  # normalise to unit area (number fraction per nm)
        area = np.nansum(y * table["bin_width_nm"].to_numpy(float))
        if area > 0:
            y = y / area
    return d, y


def size_distribution_plot(replicates: Sequence[tuple[str, Any]], pooled: Any | None = None,
                           title: str = "", marks: dict[str, float | None] | None = None) -> str | None:
    """Number-weighted size distributions of the replicates (thin) and the pooled one (thick).

    Parameters
    ----------
    replicates : sequence of (label, size table)
        Tables with ``diameter_nm``, ``bin_width_nm`` and ``deconvolved_density``
        (or ``raw_density``).
    pooled : DataFrame, optional
        The pooled sample distribution.
    title : str
    marks : dict, optional
        Vertical markers, e.g. ``{"D10": 80, "D50": 110, "D90": 160}``.

    Returns
    -------
    str or None
        A PNG data URI; None when there is nothing to draw.
    """
    curves = [(lab, _density(t)) for lab, t in replicates]
    curves = [(lab, c) for lab, c in curves if c is not None]
    pooled_c = _density(pooled)
    if not curves and pooled_c is None:
        return None
    fig = _figure(6.6, 2.6)
    ax = fig.add_subplot(1, 1, 1)
    _style(ax)
    xmax, xmin = 0.0, np.inf
    for _, (d, y) in curves + ([("pooled", pooled_c)] if pooled_c is not None else []):
        xmin = min(xmin, _quantile_edge(d, y, 0.005) * 0.8)
    for i, (lab, (d, y)) in enumerate(curves):
        ax.plot(d, y, color=_REP_COLOURS[i % len(_REP_COLOURS)], lw=1.0, alpha=0.85,
                label="\u2009" + lab if lab.startswith("_") else lab)  # matplotlib hides "_labels"
        xmax = max(xmax, _upper_edge(d, y))
    if pooled_c is not None:
        d, y = pooled_c
        ax.fill_between(d, y, color="#222222", alpha=0.08, lw=0)
        ax.plot(d, y, color="#222222", lw=2.0, label="pooled")
        xmax = max(xmax, _upper_edge(d, y))
    for k, (name, x) in enumerate((marks or {}).items()):
        if x is not None and math.isfinite(x):
            ax.axvline(x, color="#888888", lw=0.7, ls="--")
            ax.text(x, 1.0 - 0.07 * k, f" {name}", transform=ax.get_xaxis_transform(), fontsize=6,
                    color="#555555", va="top", ha="left")  # staggered: close quantiles do not overlap
    lo = 0.0 if not np.isfinite(xmin) or xmin < 0.3 * xmax else xmin  # zoom on narrow (bead) peaks
    ax.set_xlim(lo, xmax if xmax > 0 else None)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("Hydrodynamic diameter (nm)", fontsize=8)
    ax.set_ylabel("Number fraction (1/nm)", fontsize=8)
    if title:
        ax.set_title(title, fontsize=8, loc="left")
    ax.legend(fontsize=6, frameon=False, loc="upper right")
    fig.tight_layout(pad=0.4)
    return png_data_uri(fig)


def _quantile_edge(d: np.ndarray, y: np.ndarray, q: float) -> float:
    """Diameter below which the fraction ``q`` of the plotted curve lies (plot range)."""
    y = np.nan_to_num(y)
    if y.sum() <= 0 or not d.size:
        return float(np.nanmax(d)) if d.size and q > 0.5 else 0.0
    c = np.cumsum(y) / y.sum()
    return float(d[min(int(np.searchsorted(c, q)), d.size - 1)])


def _upper_edge(d: np.ndarray, y: np.ndarray) -> float:
    return _quantile_edge(d, y, 0.995) * 1.15


def control_chart(trends: Sequence[TrendResult]) -> str | None:
    """Individuals control charts, one panel per metric, limits from the lots before each point."""
    trends = [t for t in trends if t.points]
    if not trends:
        return None
    fig = _figure(6.6, 1.45 * len(trends) + 0.3)
    axes = fig.subplots(len(trends), 1, squeeze=False)[:, 0]
    for ax, tr in zip(axes, trends):
        _style(ax)
        label, unit, _ = METRICS[tr.metric]
        x = np.arange(len(tr.points))
        vals = np.array([np.nan if p.value is None else p.value for p in tr.points], float)
        cur = tr.current
        ax.plot(x, vals, color="#4C72B0", lw=1.0, marker="o", ms=3.5, zorder=2)
        if cur is not None and cur.centre is not None:
            for y_, ls, lab in ((cur.centre, "-", "mean"), (cur.lower, "--", f"−{tr.sigma:g}σ"),
                                (cur.upper, "--", f"+{tr.sigma:g}σ")):
                ax.axhline(y_, color="#666666" if ls == "-" else "#C44E52", lw=0.8, ls=ls, zorder=1)
                ax.text(1.0, y_, f" {lab}", transform=ax.get_yaxis_transform(), fontsize=6, va="center",
                        color="#555555")
        for i, p in enumerate(tr.points):
            if p.value is None:
                continue
            if p.out_of_limits:
                ax.plot(i, p.value, marker="o", ms=7, mfc="none", mec="#C44E52", mew=1.5, zorder=3)
            if p.current:
                ax.plot(i, p.value, marker="D", ms=5, color="#C44E52" if p.out_of_limits else "#222222", zorder=4)
        ax.set_xticks(x)
        ax.set_xticklabels([p.lot for p in tr.points], fontsize=6, rotation=30 if len(x) > 6 else 0,
                           ha="right" if len(x) > 6 else "center")
        ax.set_ylabel(f"{label}\n({unit})", fontsize=7)
        if tr.metric == "concentration_per_ml":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
            ax.yaxis.get_offset_text().set_fontsize(6)
        ax.margins(x=0.05)
    fig.tight_layout(pad=0.4, h_pad=0.6)
    return png_data_uri(fig)
