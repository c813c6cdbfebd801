"""Matplotlib canvases docked in napari: size distribution and one particle's MSD."""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from ._results import particle_title

__all__ = ["SizeDistributionPlot", "ParticlePlot"]


class _Canvas(QWidget):
    def __init__(self, parent: QWidget | None = None, figsize: tuple[float, float] = (4.6, 2.4)):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=figsize, dpi=100, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setMinimumHeight(200)
        self.ax = self.figure.add_subplot(1, 1, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)
        self._empty("no result yet")

    def _empty(self, text: str) -> None:
        self.ax.clear()
        self.ax.text(0.5, 0.5, text, ha="center", va="center", transform=self.ax.transAxes, color="0.4")
        self.ax.set_xticks([])
        self.ax.set_yticks([])
        self.canvas.draw_idle()


class SizeDistributionPlot(_Canvas):
    """Raw per-track histogram (bars) and deconvolved distribution (line) of a result."""

    def plot(self, distribution: Any, title: str | None = None) -> None:
        from exonta.analysis.distribution import plot_size_distribution

        self.ax.clear()
        if distribution is None or not len(getattr(distribution, "table", ())):
            self._empty("no sized track")
            return
        plot_size_distribution(distribution, self.ax, title=title)
        self.ax.title.set_fontsize(9)
        lo, hi = self.ax.get_ylim()
        self.ax.set_ylim(lo, hi * 1.2)  # room for the peak labels under the title
        self.canvas.draw_idle()


class ParticlePlot(_Canvas):
    """MSD of one track with the model 4Dτ + 4σ² − 8RDΔt from exonta's estimates."""

    def plot(self, msd: Any, info: dict[str, Any] | None, acquisition: Any = None) -> None:
        self.ax.clear()
        if info is None or msd is None or not len(msd):
            self._empty("select a particle (click a point or set its id)")
            return
        lag = msd["lag_s"].to_numpy(dtype=float)
        self.ax.plot(lag, msd["msd_um2"], "o", ms=4, color="C1", label="MSD of the track")
        d = float(info.get("D_um2_s") or np.nan)
        s = float(info.get("sigma_loc_um") if info.get("sigma_loc_um") is not None else np.nan)
        if np.isfinite(d) and acquisition is not None:
            dt = 1.0 / float(acquisition.fps)
            r = float(acquisition.blur_coefficient)
            offset = 4 * (s * s if np.isfinite(s) else 0.0) - 8 * r * d * dt
            tau = np.linspace(0, lag.max(), 50)
            self.ax.plot(tau, 4 * d * tau + offset, "-", color="C0", lw=1.5,
                         label="4Dτ + 4σ² − 8RDΔt (exonta D, σ)")
        self.ax.set_xlabel("lag τ (s)")
        self.ax.set_ylabel("MSD (µm²)")
        self.ax.set_title(particle_title(info), fontsize=8)
        self.ax.legend(fontsize=7, frameon=False, loc="upper left")
        self.canvas.draw_idle()
