"""The exonta dock widget: acquisition, live detection preview, analysis, results.

A thin front-end (ARCHITECTURE convention 7): everything it computes comes from
exonta's public API — :func:`exonta.pipeline.prepare` / :func:`~exonta.pipeline.analyze`,
:func:`exonta.detect.locate` / :func:`~exonta.detect.estimate_background`,
:meth:`exonta.pipeline.Result.write` and
:func:`exonta.analysis.concentration.load_calibration`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._lazy import LazyVideoArray
from ._plots import ParticlePlot, SizeDistributionPlot
from ._results import (
    DIAMETER_COLORMAP,
    detections_layer_data,
    excluded_regions_layer_data,
    diameter_range,
    particle_info,
    particle_msd,
    summary_texts,
    track_diameters,
    tracks_layer_data,
    video_frames,
)

if TYPE_CHECKING:
    import napari

__all__ = ["ExontaWidget", "PREVIEW_LAYER", "TRACKS_LAYER", "DETECTIONS_LAYER"]

logger = logging.getLogger(__name__)

PREVIEW_LAYER = "exonta preview"
TRACKS_LAYER = "exonta tracks"
DETECTIONS_LAYER = "exonta detections"
EXCLUDED_LAYER = "exonta excluded regions"

#: acquisition field → (label, unit suffix, minimum, maximum, decimals, step, "unknown" allowed)
_ACQ_FIELDS = {
    "pixel_size_um": ("pixel size", " µm", 0.0, 100.0, 4, 0.001, True),
    "fps": ("frame rate", " fps", 0.0, 1e5, 2, 1.0, True),
    "exposure_s": ("exposure", " s", 0.0, 100.0, 5, 0.001, True),
    "temperature_c": ("temperature", " °C", -4.0, 99.0, 1, 0.5, False),
    "dilution": ("dilution", " ×", 0.001, 1e12, 1, 1.0, False),
}


def _sources_text(meta: dict[str, Any]) -> str:
    """'sidecar: pixel size, frame rate; default: dilution' from the layer metadata."""
    by_source: dict[str, list[str]] = {}
    for key, src in (meta.get("acquisition_sources") or {}).items():
        if key in _ACQ_FIELDS:
            by_source.setdefault(src, []).append(_ACQ_FIELDS[key][0])
    txt = "; ".join(f"{src}: {', '.join(names)}" for src, names in by_source.items())
    if not meta.get("acquisition_complete", False):
        txt = "set pixel size and frame rate (not in the file or a sidecar)" + (f" — {txt}" if txt else "")
    return txt


class _Signals(QObject):
    progress = Signal(int, str)


def _as_video(video: Any) -> Any:
    """``video`` (:meth:`ExontaWidget.current_video`) as an :class:`exonta.io.Video`: an in-memory layer's
    array wrapped (:func:`exonta.io.frames_from_array`), a Video as it is."""
    if isinstance(video, np.ndarray):
        from exonta.io import frames_from_array

        return frames_from_array(video)
    return video


class ExontaWidget(QWidget):
    """Dock widget for Nanoparticle Tracking Analysis of the selected video layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Injected by napari.
    """

    preview_debounce_ms = 120

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.result: Any = None
        self.calibration: Any = None
        self.calibration_path: Path | None = None
        self.last_export: Path | None = None
        self._worker: Any = None
        self._cancel = threading.Event()
        self._bg_key: tuple | None = None
        self._bg: np.ndarray | None = None
        self._ov_key: int | None = None  # the video whose overlay counts are kept (the live preview's)
        self._ov_counts: Any = None
        self._prefilled: dict[str, float | None] = {}
        self._layer_detect: dict[str, Any] = {}
        self._signals = _Signals()
        self._signals.progress.connect(self._on_progress)
        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(self.preview_debounce_ms)
        self._preview_timer.timeout.connect(self.update_preview)
        self._plots_docked = False

        self._build_ui()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.dims.events.current_step.connect(self._schedule_preview)
        self.viewer.mouse_drag_callbacks.append(self._on_viewer_click)
        self.destroyed.connect(self._disconnect_viewer)
        self._refresh_layers()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        self._preview_timer.stop()
        self.cancel()
        super().closeEvent(event)

    def _disconnect_viewer(self, *args: Any) -> None:
        cbs = getattr(self.viewer, "mouse_drag_callbacks", [])
        if self._on_viewer_click in cbs:
            cbs.remove(self._on_viewer_click)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        from exonta.config import DetectParams

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = QWidget()
        scroll.setWidget(inner)
        outer.addWidget(scroll)
        self._scroll = scroll
        self._follow_results = False
        scroll.verticalScrollBar().rangeChanged.connect(self._scroll_to_results)
        scroll.verticalScrollBar().sliderPressed.connect(self._stop_following)
        self._content_layout = lay = QVBoxLayout(inner)
        lay.setContentsMargins(4, 4, 4, 4)

        self.layer_combo = QComboBox()
        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        row = QHBoxLayout()
        row.addWidget(QLabel("video"))
        row.addWidget(self.layer_combo, 1)
        lay.addLayout(row)

        acq_box = QGroupBox("acquisition")
        form = QFormLayout(acq_box)
        self.acq_spins: dict[str, QDoubleSpinBox] = {}
        for key, (label, suffix, lo, hi, dec, step, unknown) in _ACQ_FIELDS.items():
            sb = QDoubleSpinBox()
            sb.setRange(lo, hi)
            sb.setDecimals(dec)
            sb.setSingleStep(step)
            sb.setSuffix(suffix)
            sb.setKeyboardTracking(False)
            if unknown:
                sb.setSpecialValueText("unknown" if key != "exposure_s" else "default (1/fps)")
            self.acq_spins[key] = sb
            form.addRow(label, sb)
        self.acq_spins["temperature_c"].setValue(22.0)
        self.acq_spins["dilution"].setValue(1.0)
        self.sources_label = QLabel("")
        self.sources_label.setWordWrap(True)
        self.sources_label.setStyleSheet("color: gray; font-size: 10px")
        form.addRow(self.sources_label)
        lay.addWidget(acq_box)

        det_box = QGroupBox("detection")
        form = QFormLayout(det_box)
        d = DetectParams()
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.5, 1000.0)
        self.threshold_spin.setDecimals(1)
        self.threshold_spin.setSingleStep(0.5)
        self.threshold_spin.setValue(d.threshold_snr)
        self.psf_spin = QDoubleSpinBox()
        self.psf_spin.setRange(0.35, 20.0)
        self.psf_spin.setDecimals(2)
        self.psf_spin.setSingleStep(0.1)
        self.psf_spin.setSuffix(" px")
        self.psf_spin.setValue(d.psf_sigma_px)
        self.invert_check = QCheckBox("dark particles (bright-field)")
        self.method_combo = QComboBox()
        self.method_combo.addItems(["gaussian", "radial", "centroid"])
        self.method_combo.setCurrentText(d.localisation)
        self.preview_check = QCheckBox("live preview on the current frame")
        self.preview_check.setChecked(True)
        self.preview_label = QLabel("")
        form.addRow("threshold (SNR)", self.threshold_spin)
        form.addRow("PSF sigma", self.psf_spin)
        form.addRow("invert", self.invert_check)
        form.addRow("localisation", self.method_combo)
        form.addRow(self.preview_check)
        form.addRow(self.preview_label)
        self.preview_label.setStyleSheet("color: gray; font-size: 10px")
        lay.addWidget(det_box)
        self.threshold_spin.valueChanged.connect(self._schedule_preview)
        self.psf_spin.valueChanged.connect(self._schedule_preview)
        self.invert_check.toggled.connect(self._schedule_preview)
        self.method_combo.currentIndexChanged.connect(self._schedule_preview)
        self.preview_check.toggled.connect(self._schedule_preview)

        run_box = QGroupBox("analysis")
        v = QVBoxLayout(run_box)
        row = QHBoxLayout()
        self.calibration_button = QPushButton("Load calibration…")
        self.calibration_button.clicked.connect(self._choose_calibration)
        self.calibration_label = QLabel("no calibration (nominal depth)")
        self.calibration_label.setStyleSheet("color: gray; font-size: 10px")
        row.addWidget(self.calibration_button)
        row.addWidget(self.calibration_label, 1)
        v.addLayout(row)
        row = QHBoxLayout()
        self.analyze_button = QPushButton("Analyze")
        self.analyze_button.clicked.connect(self.run_analysis)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button = QPushButton("Export…")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self._choose_export)
        row.addWidget(self.analyze_button)
        row.addWidget(self.cancel_button)
        row.addWidget(self.export_button)
        v.addLayout(row)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setFormat("%p%")
        v.addWidget(self.progress_bar)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        v.addWidget(self.status_label)
        lay.addWidget(run_box)

        res_box = QGroupBox("result")
        form = QFormLayout(res_box)
        self.summary_labels: dict[str, QLabel] = {}
        for key, label in (("mode", "mode [95% CI]"), ("d50", "D50 [95% CI]"), ("peaks", "peaks"),
                           ("limit", "detection limit"), ("concentration", "concentration"), ("tracks", "tracks")):
            lab = QLabel("–")
            lab.setWordWrap(True)
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.summary_labels[key] = lab
            form.addRow(label, lab)
        self.warnings_label = QLabel("")
        self.warnings_label.setWordWrap(True)
        self.warnings_label.setStyleSheet("color: #d8a100; font-size: 10px")
        form.addRow(self.warnings_label)
        self.particle_spin = QSpinBox()
        self.particle_spin.setRange(-1, 0)
        self.particle_spin.setSpecialValueText("none")
        self.particle_spin.setValue(-1)
        self.particle_spin.setKeyboardTracking(False)
        self.particle_spin.valueChanged.connect(self.show_particle)
        form.addRow("particle id", self.particle_spin)
        lay.addWidget(res_box)

        self.size_plot = SizeDistributionPlot()
        self.particle_plot = ParticlePlot()
        self.plots = QWidget()
        plots_lay = QHBoxLayout(self.plots)
        plots_lay.setContentsMargins(0, 0, 0, 0)
        plots_lay.addWidget(self.size_plot, 1)
        plots_lay.addWidget(self.particle_plot, 1)
        self.plots.setMinimumHeight(200)
        lay.addStretch(1)
        self._fit_width()

    def _fit_width(self) -> None:
        """As wide as the (styled) controls need: on short screens only a vertical scroll bar appears."""
        inner = self._scroll.widget()
        inner.ensurePolished()
        self._scroll.setMinimumWidth(inner.minimumSizeHint().width()
                                     + self._scroll.verticalScrollBar().sizeHint().width() + 2)

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        super().showEvent(event)
        self._fit_width()

    def _dock_plots(self) -> None:
        """Dock the plots next to the widget (inside the widget when there is no main window)."""
        if self._plots_docked:
            return
        self._plots_docked = True
        window = getattr(self.viewer, "window", None)
        if window is not None and hasattr(window, "add_dock_widget"):
            try:
                window.add_dock_widget(self.plots, name="exonta plots", area="bottom")
                return
            except Exception:  # pragma: no cover - headless viewers without a Qt window
                logger.debug("could not dock the plots", exc_info=True)
        self._content_layout.insertWidget(self._content_layout.count() - 1, self.plots)

    # ------------------------------------------------------------------ layers and fields
    def _image_layers(self) -> list[Any]:
        from napari.layers import Image

        return [ly for ly in self.viewer.layers if isinstance(ly, Image) and ly.ndim == 3 and not ly.rgb]

    def _refresh_layers(self, event: Any = None) -> None:
        current = self.layer_combo.currentText()
        names = [ly.name for ly in self._image_layers()]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        elif names:
            self.layer_combo.setCurrentIndex(len(names) - 1)
        self.layer_combo.blockSignals(False)
        if self.layer_combo.currentText() != current:
            self._on_layer_changed()

    def selected_layer(self) -> Any:
        name = self.layer_combo.currentText()
        if name and name in self.viewer.layers:
            return self.viewer.layers[name]
        return None

    def current_video(self) -> Any:
        """The Video (or array) behind the selected layer, or None."""
        layer = self.selected_layer()
        if layer is None:
            return None
        data = layer.data
        if isinstance(data, LazyVideoArray):
            return data.video
        if hasattr(data, "iter_chunks"):
            return data
        return np.asarray(data)

    def _on_layer_changed(self, *args: Any) -> None:
        from exonta.config import DetectParams

        layer = self.selected_layer()
        self._bg_key, self._bg = None, None
        self._ov_key, self._ov_counts = None, None
        meta = dict((layer.metadata or {}).get("exonta", {}) or {}) if layer is not None else {}
        acq = dict(meta.get("acquisition") or {})
        self._prefilled = {}
        defaults = {"pixel_size_um": 0.0, "fps": 0.0, "exposure_s": 0.0, "temperature_c": 22.0, "dilution": 1.0}
        for key, sb in self.acq_spins.items():
            val = acq.get(key)
            sb.blockSignals(True)
            sb.setValue(float(val) if val is not None else defaults[key])
            sb.blockSignals(False)
            self._prefilled[key] = sb.value()
        self.sources_label.setText(_sources_text(meta) if layer is not None else "")
        self._layer_detect = dict(meta.get("detect") or {})
        det = DetectParams(**self._layer_detect) if self._layer_detect else DetectParams()
        for w, val in ((self.threshold_spin, det.threshold_snr), (self.psf_spin, det.psf_sigma_px)):
            w.blockSignals(True)
            w.setValue(float(val))
            w.blockSignals(False)
        # what the video looks like (dark bright-field beads; the reader leaves it None when a sidecar sets
        # invert or the frames do not tell), else the sidecar's or the default value
        measured = meta.get("invert_measured")
        invert = bool(det.invert) if measured is None else bool(measured)
        self.invert_check.blockSignals(True)
        self.invert_check.setChecked(invert)
        self.invert_check.blockSignals(False)
        self.method_combo.blockSignals(True)
        self.method_combo.setCurrentText(det.localisation)
        self.method_combo.blockSignals(False)
        self._schedule_preview()

    def acquisition_values(self, changed_only: bool = False) -> dict[str, float]:
        """Acquisition fields as a dict (unknown fields left out).

        With ``changed_only`` only the values the user edited after they were
        prefilled from the file / sidecar (so provenance stays right).
        """
        out: dict[str, float] = {}
        for key, sb in self.acq_spins.items():
            v = float(sb.value())
            if _ACQ_FIELDS[key][6] and v <= 0.0:
                continue
            if changed_only and self._prefilled.get(key) is not None and abs(v - self._prefilled[key]) < 1e-12:
                continue
            out[key] = v
        return out

    def detect_overrides(self) -> dict[str, Any]:
        """Detection parameters set in the widget (the rest come from the sidecar or defaults)."""
        return {"threshold_snr": float(self.threshold_spin.value()), "psf_sigma_px": float(self.psf_spin.value()),
                "invert": bool(self.invert_check.isChecked()), "localisation": self.method_combo.currentText()}

    def detect_params(self) -> Any:
        """The :class:`exonta.config.DetectParams` for the preview."""
        from exonta.config import DetectParams

        return DetectParams(**{**self._layer_detect, **self.detect_overrides()})

    def current_frame(self) -> int:
        step = self.viewer.dims.current_step
        return int(step[0]) if len(step) else 0

    # ------------------------------------------------------------------ live preview
    def _schedule_preview(self, *args: Any) -> None:
        self._preview_timer.start()

    def _set_preview_points(self, coords: np.ndarray, size: float) -> None:
        if PREVIEW_LAYER in self.viewer.layers:
            layer = self.viewer.layers[PREVIEW_LAYER]
            layer.data = coords
            layer.size = size
            layer.visible = True
        else:
            self.viewer.add_points(coords, ndim=3, name=PREVIEW_LAYER, size=size, symbol="ring",
                                   face_color="yellow", border_width=0, opacity=0.9)
            # keep the video selected, so the frame slider and the combo box stay on it
            layer = self.selected_layer()
            if layer is not None:
                self.viewer.layers.selection.active = layer

    def update_preview(self) -> int | None:
        """Detect on the current frame with the current parameters; show them as a Points layer.

        Returns the number of spots, or None when there is nothing to preview.
        """
        from exonta.detect import estimate_background, locate
        from exonta.errors import ExontaInputError

        if not self.preview_check.isChecked():
            if PREVIEW_LAYER in self.viewer.layers:
                self.viewer.layers[PREVIEW_LAYER].visible = False
            self.preview_label.setText("")
            return None
        layer = self.selected_layer()
        video = self.current_video()
        if layer is None or video is None:
            return None
        frame_idx = min(max(self.current_frame(), 0), int(layer.data.shape[0]) - 1)
        try:
            params = self.detect_params()
            key = (id(video), params.background, params.background_frames, params.background_quantile,
                   params.invert)
            if key != self._bg_key:
                self._bg = None if params.background == "none" else estimate_background(video, params)
                self._bg_key = key
            params = self._preview_exclusions(video, params)
            frame = np.asarray(layer.data[frame_idx])
            feats = locate(frame, params, background=self._bg)
        except (ExontaInputError, ValueError) as exc:
            self.preview_label.setText(f"preview: {exc}")
            return None
        coords = np.column_stack([np.full(len(feats), frame_idx, dtype=float),
                                  feats["y"].to_numpy(dtype=float), feats["x"].to_numpy(dtype=float)])
        self._set_preview_points(coords.reshape(-1, 3), size=max(6.0, 5.0 * params.psf_sigma_px))
        self._show_excluded(params.exclude_regions)
        n_ex = len(params.exclude_regions)
        self.preview_label.setText(f"{len(feats)} spots on frame {frame_idx}" + (
            f"; {n_ex} region{'s' if n_ex > 1 else ''} left out (red: burned-in overlay or given)" if n_ex else ""))
        return len(feats)

    def _preview_exclusions(self, video: Any, params: Any) -> Any:
        """``params`` with the burned-in overlays (time stamps, scale bars) added to its excluded regions, as
        :func:`exonta.pipeline.prepare` does for the analysis, so the preview shows no spot the analysis would
        drop. The camera-level counts are read once per video (16 frames); the boxes follow the spot width."""
        if not params.exclude_overlays:
            return params
        from exonta import pipeline

        if self._ov_key != id(video) or self._ov_counts is None:
            self._ov_counts = pipeline.overlay_counts(_as_video(video))
            self._ov_key = id(video)
        found, _ = pipeline.overlay_regions(self._ov_counts, params.psf_sigma_px)
        return pipeline.with_excluded_regions(params, found.boxes)

    def _show_excluded(self, regions: Any) -> None:
        """The regions the detection leaves out as red rectangles (the layer the results also use)."""
        rects = excluded_regions_layer_data(regions)
        if EXCLUDED_LAYER in self.viewer.layers:
            layer = self.viewer.layers[EXCLUDED_LAYER]
            if len(layer.data) == len(rects) and all(np.allclose(a, b) for a, b in zip(layer.data, rects)):
                return
            self._replace_layer(EXCLUDED_LAYER)
        if rects:
            self.viewer.add_shapes(rects, shape_type="rectangle", name=EXCLUDED_LAYER, edge_color="red",
                                   face_color=[1.0, 0.0, 0.0, 0.15], edge_width=1)
            layer = self.selected_layer()
            if layer is not None:  # keep the video selected (frame slider, combo box)
                self.viewer.layers.selection.active = layer

    # ------------------------------------------------------------------ calibration / export
    def _choose_calibration(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Detection-volume calibration", "",
                                              "Calibration (*.json);;All files (*)")
        if path:
            self.load_calibration(path)

    def load_calibration(self, path: str | Path) -> Any:
        """Load a calibration from ``exonta calibrate``; it is used by the next analysis."""
        from exonta.analysis.concentration import load_calibration
        from exonta.errors import ExontaInputError

        try:
            self.calibration = load_calibration(path)
        except ExontaInputError as exc:
            self._set_status(str(exc), error=True)
            return None
        self.calibration_path = Path(path)
        self.calibration_label.setText(f"calibration: {self.calibration_path.name}")
        return self.calibration

    def _choose_export(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export the result into")
        if folder:
            self.export(folder)

    def export(self, folder: str | Path) -> Path | None:
        """Write the result folder (same files as ``exonta analyze``) under ``folder``."""
        from exonta.errors import ExontaInputError

        if self.result is None:
            self._set_status("nothing to export: run Analyze first", error=True)
            return None
        try:
            out = self.result.write(folder)
        except (ExontaInputError, OSError) as exc:
            self._set_status(f"export failed: {exc}", error=True)
            return None
        self.last_export = Path(out)
        self._set_status(f"results written to …/{self.last_export.parent.name}/{self.last_export.name}")
        self.status_label.setToolTip(str(self.last_export))
        return self.last_export

    # ------------------------------------------------------------------ analysis
    def _set_status(self, text: str, error: bool = False) -> None:
        self.status_label.setStyleSheet("color: #e04040" if error else "")
        self.status_label.setText(text)

    def is_running(self) -> bool:
        return self._worker is not None

    def prepare(self) -> tuple[Any, Any, list[str], dict[str, str]]:
        """Video and validated config from the selected layer and the fields (may raise ExontaInputError)."""
        from exonta.errors import ExontaInputError
        from exonta.pipeline import prepare

        video = self.current_video()
        if video is None:
            raise ExontaInputError("open a video first (drag a TIFF/AVI or a folder of images onto napari)")
        video = _as_video(video)
        acq = self.acquisition_values(changed_only=True)
        return prepare(video, acquisition=acq or None, overrides={"detect": self.detect_overrides()})

    def run_analysis(self) -> Any:
        """Start :func:`exonta.pipeline.analyze` in a worker thread; returns the worker (or None)."""
        from exonta.errors import ExontaInputError
        from napari.qt.threading import create_worker

        if self._worker is not None:
            return None
        try:
            video, cfg, warnings, sources = self.prepare()
        except ExontaInputError as exc:
            self._set_status(str(exc), error=True)
            return None
        self._cancel.clear()
        self._follow_results = False
        self.progress_bar.setValue(0)
        self._set_status("analysing…")
        self.analyze_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        calibration = self.calibration
        worker = create_worker(self._analysis_job, video, cfg, warnings, sources, calibration,
                               _ignore_errors=True, _start_thread=False)
        worker.returned.connect(self._on_result)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()
        return worker

    def _analysis_job(self, video: Any, cfg: Any, warnings: list[str], sources: dict[str, str],
                      calibration: Any) -> Any:
        """Runs in the worker thread."""
        from exonta.pipeline import analyze

        def progress(done: int, total: int, stage: str) -> bool:
            self._signals.progress.emit(int(done * 1000 / max(total, 1)), str(stage))
            return not self._cancel.is_set()

        return analyze(video, cfg, progress=progress, calibration=calibration, acquisition_sources=sources,
                       warnings=warnings)

    def cancel(self) -> None:
        """Ask the running analysis to stop at its next progress report."""
        if self._worker is not None:
            self._cancel.set()
            self._set_status("cancelling…")

    def _on_progress(self, value: int, stage: str) -> None:
        self.progress_bar.setValue(int(value))
        self.progress_bar.setFormat(f"{stage} %p%")

    def _on_error(self, exc: BaseException) -> None:
        from exonta.errors import ExontaCancelled, ExontaInputError

        if isinstance(exc, ExontaCancelled):
            self._set_status("analysis cancelled")
            self.progress_bar.setValue(0)
            self.progress_bar.setFormat("%p%")
        elif isinstance(exc, ExontaInputError):
            self._set_status(str(exc), error=True)
        else:
            logger.error("exonta analysis failed", exc_info=exc)
            self._set_status(f"analysis failed: {type(exc).__name__}: {exc}", error=True)

    def _on_finished(self) -> None:
        self._worker = None
        self.analyze_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_result(self, result: Any) -> None:
        self.progress_bar.setValue(1000)
        self.progress_bar.setFormat("done")
        self.show_result(result)
        self._set_status(f"analysed {result.input.get('n_frames')} frames "
                         f"in {float(result.timings_s.get('total', float('nan'))):.1f} s")

    # ------------------------------------------------------------------ results
    def _replace_layer(self, name: str) -> None:
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)

    def show_result(self, result: Any) -> None:
        """Tracks / detections layers, size-distribution plot, summary and particle selector."""
        self.result = result
        self.export_button.setEnabled(True)
        diam = track_diameters(result.particles)
        lo, hi = diameter_range(diam.to_numpy())
        for name in (TRACKS_LAYER, DETECTIONS_LAYER, EXCLUDED_LAYER):
            self._replace_layer(name)
        self._preview_timer.stop()
        self.preview_label.setText("")
        self.preview_check.blockSignals(True)
        self.preview_check.setChecked(False)
        self.preview_check.blockSignals(False)
        if PREVIEW_LAYER in self.viewer.layers:
            self.viewer.layers[PREVIEW_LAYER].visible = False
        pts, pfeat, colors = detections_layer_data(result.tracks, result.particles, lo, hi)
        if len(pts):
            det = self.viewer.add_points(pts, ndim=3, name=DETECTIONS_LAYER, features=pfeat, face_color=colors,
                                         size=10, symbol="ring", border_width=0, opacity=0.9)
            det.selected_data.events.items_changed.connect(self._on_points_selected)
        self._show_excluded(result.config.detect.exclude_regions)  # overlays and given regions: nothing detected
        data, tfeat = tracks_layer_data(result.tracks, result.particles)
        if len(data):
            self.viewer.add_tracks(data, features=tfeat, color_by="diameter_nm", colormap=DIAMETER_COLORMAP,
                                   name=TRACKS_LAYER, tail_length=30, tail_width=2, blending="translucent")
        layer = self.selected_layer()
        if layer is not None:
            self.viewer.layers.selection.active = layer
        summary = result.summary()
        texts = summary_texts(summary)
        for key, lab in self.summary_labels.items():
            lab.setText(texts.get(key, "–"))
        self.warnings_label.setText(texts["warnings"])
        self.warnings_label.setToolTip(texts["warnings"])
        self._dock_plots()
        self._follow_results = True  # keep the summary in view while the docks settle
        QTimer.singleShot(50, self._scroll_to_results)
        name = Path(str(result.input.get("path") or "video")).name
        self.size_plot.plot(result.distribution, title=f"{name} — point/track colours {lo:.0f}–{hi:.0f} nm ({DIAMETER_COLORMAP})")
        ids = result.particles["particle"].to_numpy() if len(result.particles) else np.array([0])
        self.particle_spin.blockSignals(True)
        self.particle_spin.setRange(-1, int(ids.max()) if len(ids) else 0)
        self.particle_spin.blockSignals(False)
        first = -1
        if len(diam):  # show the longest sized track first: its MSD is the most telling
            p = result.particles[result.particles["particle"].isin(diam.index)]
            col = "n_positions" if "n_positions" in p else "particle"
            first = int(p.loc[p[col].idxmax(), "particle"])
        if self.particle_spin.value() == first:
            self.show_particle(first)
        else:
            self.particle_spin.setValue(first)

    def _scroll_to_results(self, *args: Any) -> None:
        """Bring the result summary into view (the controls scroll on short screens)."""
        if self._follow_results:
            self._scroll.ensureWidgetVisible(self.particle_spin)

    def _stop_following(self, *args: Any) -> None:
        self._follow_results = False

    def show_particle(self, particle: int) -> dict[str, Any] | None:
        """Plot the MSD of one particle with its D, diameter and uncertainty; return its table row."""
        if self.result is None or particle is None or int(particle) < 0:
            self.particle_plot.plot(None, None)
            return None
        particle = int(particle)
        info = particle_info(self.result.particles, particle)
        acq = self.result.analysis_acquisition  # the rate of the analysed frames (repeated frames left out)
        msd = (particle_msd(self.result.tracks, particle, acq.pixel_size_um, acq.fps)
               if info is not None else None)
        self.particle_plot.plot(msd, info, acq)
        return info

    def select_particle(self, particle: int) -> None:
        """Select a particle (as the spin box does)."""
        if self.particle_spin.maximum() < particle:
            self.particle_spin.setMaximum(int(particle))
        if self.particle_spin.value() == particle:
            self.show_particle(particle)
        else:
            self.particle_spin.setValue(int(particle))

    def select_particle_near(self, frame: int, y: float, x: float, radius_px: float = 6.0) -> int | None:
        """Select the tracked particle closest to ``(y, x)`` on ``frame`` (within ``radius_px``)."""
        if self.result is None or not len(self.result.tracks):
            return None
        t = self.result.tracks
        on = t[video_frames(t) == int(frame)]
        if not len(on):
            return None
        d2 = (on["y"].to_numpy(dtype=float) - y) ** 2 + (on["x"].to_numpy(dtype=float) - x) ** 2
        j = int(np.argmin(d2))
        if d2[j] > radius_px ** 2:
            return None
        pid = int(on["particle"].iloc[j])
        self.select_particle(pid)
        return pid

    def _on_viewer_click(self, viewer: Any, event: Any) -> None:
        """A click near a tracked detection of the current frame selects its particle."""
        if self.result is None or getattr(event, "type", "mouse_press") != "mouse_press":
            return
        layer = self.selected_layer()
        try:
            pos = layer.world_to_data(event.position) if layer is not None else event.position
        except RuntimeError:  # widget deleted
            return
        if len(pos) >= 3:
            self.select_particle_near(int(round(pos[-3])), float(pos[-2]), float(pos[-1]))

    def _on_points_selected(self, event: Any = None) -> None:
        if DETECTIONS_LAYER not in self.viewer.layers:
            return
        layer = self.viewer.layers[DETECTIONS_LAYER]
        sel = sorted(layer.selected_data)
        if len(sel) == 1:
            self.select_particle(int(layer.features["particle"].iloc[sel[0]]))
