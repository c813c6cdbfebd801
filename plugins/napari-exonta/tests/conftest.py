"""Fixtures for the napari-exonta tests (run them under Xvfb: see the plugin README).

The repository runs pytest with ``filterwarnings = error``; napari, vispy and Qt
emit deprecation and resource noise that is not ours, so the filters below are
added to the items of this folder only.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

HERE = Path(__file__).resolve().parent

#: warnings from napari / vispy / Qt that must not fail the plugin tests (with napari 0.9.2 + PyQt6 6.11 none
#: beyond the root pyproject's DeprecationWarning filters fires; these guard against other versions)
GUI_WARNING_FILTERS = (
    "ignore::DeprecationWarning",
    "ignore::PendingDeprecationWarning",
    "ignore::FutureWarning",
    "ignore::ResourceWarning",
    "ignore:.*QtViewer.*:UserWarning",
    "ignore:.*Public access to Window.qt_viewer.*",
    "ignore:.*leaked.*:UserWarning",
)


_GUI_FIXTURES = {"make_napari_viewer", "qtbot", "make_napari_viewer_proxy"}


def _has_display() -> bool:
    if sys.platform != "linux" or os.environ.get("QT_QPA_PLATFORM"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pytest_collection_modifyitems(config, items):
    # Without a display Qt aborts the whole pytest process: skip the viewer tests instead (set
    # EXONTA_REQUIRE_GUI=1, as CI does under xvfb-run, to make a missing display an error).
    skip_gui = not _has_display() and not os.environ.get("EXONTA_REQUIRE_GUI")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            for f in GUI_WARNING_FILTERS:
                item.add_marker(pytest.mark.filterwarnings(f))
            if _GUI_FIXTURES & set(getattr(item, "fixturenames", ())):
                item.add_marker(pytest.mark.gui)
                if skip_gui:
                    item.add_marker(pytest.mark.skip(reason="no display: run under xvfb-run (see HEADLESS.md)"))


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory) -> Path:
    """A short simulated bead video (60 frames, 320×240) with its sidecar: ``beads100.tif``."""
    from exonta.simulate import preset_config, write_simulation

    out = tmp_path_factory.mktemp("napari_exonta_sim")
    cfg = preset_config("beads100", n_frames=60, width_px=320, height_px=240, seed=7)
    write_simulation(cfg, out, "beads100", formats=("tif",))
    return out


@pytest.fixture(scope="session")
def sim_video(sim_dir) -> Path:
    return sim_dir / "beads100.tif"


@pytest.fixture
def plain_tif(tmp_path) -> Path:
    """A TIFF without any acquisition metadata and without a sidecar."""
    import tifffile

    rng = np.random.default_rng(11)
    arr = rng.poisson(20, size=(12, 48, 64)).astype(np.uint16)
    arr[:, 20:23, 30:33] += 400
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, arr)
    return p


def make_fake_result(video_path: Path | str | None = None, n_frames: int = 30):
    """A real :class:`exonta.pipeline.Result` filled with small synthetic tables.

    Three particles: 0 and 1 are sized (100 nm, 200 nm), 2 is too short (unsized).
    """
    from exonta.config import Acquisition, AnalysisConfig
    from exonta.pipeline import Result

    rng = np.random.default_rng(3)
    rows = []
    for pid, (x0, y0, length) in enumerate(((60.0, 50.0, n_frames), (200.0, 150.0, n_frames), (100.0, 180.0, 4))):
        steps = rng.normal(0, 1.0, size=(length, 2)).cumsum(axis=0)
        for k in range(length):
            rows.append({"frame": k, "x": x0 + steps[k, 0], "y": y0 + steps[k, 1], "mass": 500.0, "signal": 50.0,
                         "size_px": 1.5, "background": 10.0, "snr": 12.0, "particle": pid})
    tracks = pd.DataFrame(rows)
    tracks["frame"] = tracks["frame"].astype(np.int64)
    tracks["particle"] = tracks["particle"].astype(np.int64)
    tracks["x_corrected"] = tracks["x"]
    tracks["y_corrected"] = tracks["y"]
    features = tracks.drop(columns=["particle", "x_corrected", "y_corrected"])
    particles = pd.DataFrame({
        "particle": np.array([0, 1, 2], dtype=np.int64), "n_positions": [n_frames, n_frames, 4],
        "n_steps": [n_frames - 1, n_frames - 1, 3], "first_frame": [0, 0, 0],
        "D_um2_s": [4.3, 2.1, np.nan], "D_se_um2_s": [0.8, 0.4, np.nan], "sigma_loc_um": [0.02, 0.02, np.nan],
        "diameter_nm": [100.0, 200.0, np.nan], "diameter_ci95_low_nm": [85.0, 170.0, np.nan],
        "diameter_ci95_high_nm": [120.0, 240.0, np.nan], "D_msd_um2_s": [4.1, 2.2, np.nan],
        "mean_mass": [500.0, 500.0, 500.0], "x_mean": [60.0, 200.0, 100.0], "y_mean": [50.0, 150.0, 180.0],
        "valid": [True, True, False]})
    edges = np.geomspace(20, 2000, 41)
    centres = np.sqrt(edges[:-1] * edges[1:])
    dens = np.exp(-0.5 * ((np.log(centres) - np.log(140)) / 0.3) ** 2)
    dens /= (dens * np.diff(edges)).sum()
    table = pd.DataFrame({"diameter_nm": centres, "bin_width_nm": np.diff(edges), "raw_density": dens,
                          "deconvolved_density": dens, "deconvolved_volume_density": dens})
    stats = {"mean": 150.0, "mode": 140.0, "sd": 40.0, "d10": 100.0, "d50": 145.0, "d90": 200.0,
             "ci95": {"mode": [130.0, 150.0], "d50": [135.0, 155.0]}, "peaks": [{"diameter_nm": 140.0,
                                                                               "number_fraction": 1.0}],
             "raw": {"n": 2}}
    dist = SimpleNamespace(table=table, edges_nm=edges, stats=stats)
    conc = SimpleNamespace(value_per_ml=2.5e8, ci95_low_per_ml=2.0e8, ci95_high_per_ml=3.1e8,
                           mean_particles_per_frame=2.1, per_bin_per_ml=None, warnings=[], details={})
    drift = SimpleNamespace(velocity_um_per_s=(0.0, 0.0), drift_px=None, warnings=[])
    acq = Acquisition(pixel_size_um=0.166, fps=30.0, exposure_s=0.02)
    return Result(input={"path": str(video_path) if video_path else None, "sha256": "0" * 64, "n_frames": n_frames,
                         "width": 320, "height": 240, "dtype": "uint8"},
                  config=AnalysisConfig(acquisition=acq), features=features, tracks=tracks, particles=particles,
                  distribution=dist, concentration=conc, drift=drift, warnings=["a test warning"],
                  timings_s={"total": 0.5})


@pytest.fixture
def fake_result_factory():
    return make_fake_result


def _save_screenshot(viewer, path: Path, copy_to: str | None = None) -> Path:
    """Screenshot of the whole window as PNG (and a copy for the lead)."""
    from PIL import Image

    img = viewer.screenshot(canvas_only=False, flash=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(img)).save(path)
    if copy_to:
        shutil.copy(path, copy_to)
    return path


@pytest.fixture
def save_screenshot():
    return _save_screenshot


@pytest.fixture
def brightfield_tif(tmp_path) -> Path:
    """Dark beads with bright rims on a light background (bright-field), 20 frames, no sidecar (the beads
    move far between frames, so the temporal-median background holds none of them)."""
    import tifffile

    rng = np.random.default_rng(12)
    h, w = 120, 160
    yy, xx = np.mgrid[:h, :w]
    frames = []
    for _ in range(20):
        pos = rng.uniform([15, 15], [h - 15, w - 15], (12, 2))
        rel = np.ones((h, w))
        for y, x in pos:
            r = np.hypot(yy - y, xx - x)
            rel -= 0.35 * np.exp(-0.5 * (r / 3.0) ** 2)
            rel += 0.08 * np.exp(-0.5 * ((r - 6.6) / 1.0) ** 2)
        frames.append(np.clip(rng.poisson(160 * rel), 0, 255))
    p = tmp_path / "brightfield.tif"
    tifffile.imwrite(p, np.array(frames, np.uint8))
    return p
