"""`exonta calibrate`: in-process CLI tests (the analysis mocked), plus a slow end-to-end run."""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from exonta.analysis.concentration import load_calibration
from exonta.cli.main import app
from exonta.config import Acquisition, AnalysisConfig

runner = CliRunner()


def _fake_result(n_frames=400, lam=20.0, ratio=20.0, sigma_um=3.0, seed=0):
    """A Result-like object: Poisson arrivals, residence ~10 frames, brightness from a Gaussian sheet."""
    rng = np.random.default_rng(seed)
    h, w = 108, 208
    n_arr = rng.poisson(lam / 10.0 * (n_frames + 200))
    start = rng.integers(-200, n_frames, n_arr)
    length = rng.geometric(0.1, n_arr)
    pid = np.repeat(np.arange(n_arr), length)
    frame = np.repeat(start, length) + (np.arange(pid.size) - np.repeat(np.cumsum(length) - length, length))
    ok = (frame >= 0) & (frame < n_frames)
    pid, frame = pid[ok], frame[ok]
    z = rng.uniform(0, sigma_um * math.sqrt(2 * math.log(ratio)), pid.size)
    snr = 5.0 * ratio * np.exp(-z**2 / (2 * sigma_um**2))
    x = rng.uniform(4, w - 5, n_arr)[pid]
    y = rng.uniform(4, h - 5, n_arr)[pid]
    tracks = pd.DataFrame({"frame": frame.astype(np.int64), "x": x, "y": y, "mass": snr * 10, "signal": snr,
                           "size_px": 1.5, "background": 10.0, "snr": snr, "particle": pid.astype(np.int64)})
    features = tracks.drop(columns="particle")
    parts = tracks.groupby("particle").agg(n_positions=("frame", "size")).reset_index()
    parts["diameter_nm"] = 100.0
    parts["valid"] = parts["n_positions"] >= 10
    edges = np.geomspace(20, 2000, 41)
    c = np.sqrt(edges[1:] * edges[:-1])
    wts = np.exp(-0.5 * (np.log(c / 100.0) / 0.04) ** 2)
    wts /= wts.sum()
    dist = types.SimpleNamespace(table=pd.DataFrame({"diameter_nm": c, "bin_width_nm": np.diff(edges),
                                                     "deconvolved_density": wts / np.diff(edges)}), stats={})
    acq = Acquisition(pixel_size_um=0.2, fps=30.0, exposure_s=0.02, temperature_c=22.0)
    cfg = AnalysisConfig(acquisition=acq, detect={"psf_sigma_px": 1.5, "edge_px": 4, "threshold_snr": 5.0})
    return types.SimpleNamespace(input={"path": "standard.tif", "sha256": "f" * 64, "n_frames": n_frames,
                                        "width": w, "height": h}, config=cfg, features=features, tracks=tracks,
                                 particles=parts, distribution=dist, concentration=None, warnings=[])


@pytest.fixture
def mocked_pipeline(monkeypatch):
    import exonta.pipeline as pl

    calls = {}

    def fake_prepare(video, config_file=None, acquisition=None, overrides=None, invert=None):
        calls["prepare"] = {"video": video, "acquisition": acquisition, "invert": invert}
        return "VIDEO", _fake_result().config, [], {}

    def fake_analyze(video, config, progress=None, **kw):
        calls["analyze"] = video
        return _fake_result()

    monkeypatch.setattr(pl, "prepare", fake_prepare)
    monkeypatch.setattr(pl, "analyze", fake_analyze)
    return calls


def test_calibrate_writes_calibration(tmp_path, mocked_pipeline):
    out = tmp_path / "cal.json"
    res = runner.invoke(app, ["calibrate", str(tmp_path / "std.tif"), "--concentration-per-ml", "4e9",
                              "--pixel-size-um", "0.2", "--fps", "30", "--dilution", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "effective depth" in res.output and "sheet sigma" in res.output
    cal = load_calibration(out)
    assert cal.standard_concentration_per_ml == 4e9
    assert cal.standard_diameter_nm == 100.0 and cal.standard_refractive_index == 1.59
    assert mocked_pipeline["prepare"]["acquisition"] == {"pixel_size_um": 0.2, "fps": 30.0, "dilution": 2.0}
    # depth = N̄ / (A · C) with the fake result's ~20 particles/frame over 800 µm²
    assert cal.effective_depth_um == pytest.approx(
        cal.mean_particles_per_frame / (cal.analysed_area_um2 * 4e9 / 1e12), rel=1e-9)
    # synthetic spots of size_px = psf: filtered peak = signal/2, noise = 0.5, counting threshold 12 × 0.5 = 6;
    # the centre's filtered peak is 5·20/2 = 50
    assert cal.count_threshold == pytest.approx(6.0, rel=0.05)
    assert cal.brightness_ratio == pytest.approx(50.0 / 6.0, rel=0.15)
    assert json.loads(out.read_text())["schema"] == "exonta.calibration/1"


def test_calibrate_options(tmp_path, mocked_pipeline):
    out = tmp_path / "cal.json"
    res = runner.invoke(app, ["calibrate", "std.tif", "--concentration-per-ml", "1e9", "--diameter-nm", "200",
                              "--refractive-index", "1.45", "--concentration-uncertainty", "0.05", "--invert",
                              "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == ""
    cal = load_calibration(out)
    assert (cal.standard_diameter_nm, cal.standard_refractive_index) == (200.0, 1.45)
    assert cal.standard_concentration_rel_uncertainty == 0.05
    assert mocked_pipeline["prepare"]["invert"] is True


@pytest.mark.parametrize("args, msg", [
    (["--concentration-per-ml", "-5"], "positive"),
    (["--concentration-per-ml", "1e8", "--concentration-uncertainty", "2"], "uncertainty"),
])
def test_calibrate_bad_numbers(tmp_path, mocked_pipeline, args, msg):
    res = runner.invoke(app, ["calibrate", "std.tif", *args, "--out", str(tmp_path / "c.json")])
    assert res.exit_code == 2
    assert msg in res.output


def test_calibrate_missing_video_and_folder(tmp_path):
    res = runner.invoke(app, ["calibrate", str(tmp_path / "nope.tif"), "--concentration-per-ml", "1e8",
                              "--pixel-size-um", "0.2", "--fps", "30", "--out", str(tmp_path / "c.json")])
    assert res.exit_code == 2
    assert "not found" in res.output
    res = runner.invoke(app, ["calibrate", str(tmp_path / "nope.tif"), "--concentration-per-ml", "1e8",
                              "--out", str(tmp_path / "missing" / "c.json")])
    assert res.exit_code == 2
    assert "does not exist" in res.output


def test_calibrate_requires_concentration(tmp_path):
    res = runner.invoke(app, ["calibrate", "std.tif", "--out", str(tmp_path / "c.json")])
    assert res.exit_code == 2


def test_analyze_rejects_bad_calibration_file(tmp_path):
    bad = tmp_path / "cal.json"
    bad.write_text('{"schema": "something/else"}')
    res = runner.invoke(app, ["analyze", str(tmp_path / "v.tif"), "--calibration", str(bad), "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "not an exonta calibration" in res.output


@pytest.mark.slow
def test_calibrate_then_analyze_end_to_end(tmp_path):
    """Simulated 100 nm standard → exonta calibrate → exonta analyze --calibration on another video."""
    from exonta.simulate import SimulationConfig, write_simulation

    base = dict(width_px=320, height_px=240, n_frames=300, components=[{"diameter_nm": 100.0, "refractive_index": 1.59}])
    write_simulation(SimulationConfig(concentration_per_ml=4e8, seed=1, **base), tmp_path, "standard", formats=("tif",))
    write_simulation(SimulationConfig(concentration_per_ml=2e8, seed=2, **base), tmp_path, "sample", formats=("tif",))
    truth_std = json.loads((tmp_path / "standard.truth.json").read_text())
    truth_sample = json.loads((tmp_path / "sample.truth.json").read_text())
    c_std = truth_std.get("true_concentration_per_ml", 4e8)
    c_sample = truth_sample.get("true_concentration_per_ml", 2e8)
    cal = tmp_path / "cal.json"
    res = runner.invoke(app, ["calibrate", str(tmp_path / "standard.tif"), "--concentration-per-ml", str(c_std),
                              "--out", str(cal)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["analyze", str(tmp_path / "sample.tif"), "--calibration", str(cal), "--out",
                              str(tmp_path / "out"), "--quiet", "--config", str(_pcfg(tmp_path))])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "sample" / "summary.json").read_text())
    conc = summary["concentration_per_ml"]
    assert conc["method"].startswith("calibrated+")
    # a small, short video: this checks the plumbing; accuracy is tested in tests/analysis/test_concentration.py
    assert 0.5 * c_sample < conc["value"] < 2.0 * c_sample
    assert conc["ci95_low"] < conc["value"] < conc["ci95_high"]


def _pcfg(tmp_path):
    p = tmp_path / "ps.toml"
    p.write_text("[concentration]\nparticle_refractive_index = 1.59\n")
    return p
