"""Pooling the replicate videos of a sample (with a fake size-distribution function)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from exonta.batch.pool import between_video_stats, combine_tables, pool_sample, same_acquisition
from exonta.io.results import write_result_dir

ACQ = {"pixel_size_um": 0.166, "fps": 30.0, "exposure_s": 0.02, "temperature_c": 22.0, "viscosity_mpas": 0.9544,
       "dilution": 10.0}


def test_between_video_stats() -> None:
    s = between_video_stats([100.0, 110.0, None, float("nan"), 120.0])
    assert s["n"] == 3 and s["mean"] == pytest.approx(110.0, rel=1e-12)
    assert s["sd"] == pytest.approx(10.0, rel=1e-12)
    assert s["se"] == pytest.approx(10.0 / math.sqrt(3), rel=1e-12)
    assert s["cv"] == pytest.approx(10.0 / 110.0, rel=1e-12)
    one = between_video_stats([5.0])
    assert one["mean"] == 5.0 and one["se"] is None and one["cv"] is None
    assert between_video_stats([])["mean"] is None


def test_combine_tables_unique_ids() -> None:
    p1 = pd.DataFrame({"particle": [3, 7], "diameter_nm": [100.0, 110.0], "valid": [True, False]})
    t1 = pd.DataFrame({"frame": [0, 1, 0], "particle": [3, 3, 7]})
    p2 = pd.DataFrame({"particle": [3], "diameter_nm": [200.0], "valid": [True]})
    t2 = pd.DataFrame({"frame": [5, 6], "particle": [3, 3]})
    p, t = combine_tables([("a", p1, t1), ("b", p2, t2)])
    assert p["particle"].tolist() == [0, 1, 2] and p["particle"].is_unique
    assert p["video"].tolist() == ["a", "a", "b"]
    assert t["particle"].tolist() == [0, 0, 1, 2, 2]
    # the same physical track keeps the same id in both tables
    merged = t.merge(p, on=["particle", "video"])
    assert sorted(merged.groupby("particle")["diameter_nm"].first().tolist()) == [100.0, 110.0, 200.0]


def test_same_acquisition() -> None:
    assert same_acquisition([ACQ, {**ACQ, "dilution": 100.0}])
    assert not same_acquisition([ACQ, {**ACQ, "fps": 25.0}])


def _fake_result(root: Path, name: str, mode: float, conc: float, n: int, seed: int, acq: dict = ACQ) -> Path:
    rng = np.random.default_rng(seed)
    particles = pd.DataFrame({"particle": np.arange(n) * 2, "diameter_nm": rng.normal(mode, 5, n),
                              "valid": np.ones(n, bool), "n_steps": np.full(n, 12)})
    tracks = pd.DataFrame({"frame": np.tile(np.arange(3), n), "particle": np.repeat(np.arange(n) * 2, 3),
                           "x": rng.random(3 * n), "y": rng.random(3 * n)})
    summary = {"schema": "exonta.summary/1", "input": {"sha256": f"{seed:064x}"}, "acquisition": acq,
               "parameters": {"sizing": {"n_bins": 50, "bootstrap": 0}}, "parameters_hash": "h",
               "counts": {"n_valid_tracks": n}, "size_nm": {"mode": mode, "d50": mode + 2},
               "concentration_per_ml": {"value": conc}}
    return write_result_dir(root, name, {"summary.json": summary, "particles.csv": particles,
                                         "tracks.parquet": tracks})


def _fake_dist(calls: list):
    def size_distribution(particles, acquisition, sizing, tracks=None):
        calls.append((particles, acquisition, sizing, tracks))
        d = particles["diameter_nm"].to_numpy()
        table = pd.DataFrame({"diameter_nm": [50.0, 100.0, 150.0], "bin_width_nm": [50.0] * 3,
                              "raw_density": [0.1, 0.8, 0.1], "deconvolved_density": [0.0, 1.0, 0.0]})
        return SimpleNamespace(table=table, stats={"mean": float(d.mean()), "mode": 100.0, "d10": 90.0,
                                                   "d50": float(np.median(d)), "d90": 111.0,
                                                   "ci95": {"mode": [99.0, 101.0]}})
    return size_distribution


def _fake_plot(dist, path, title=""):
    Path(path).write_bytes(b"\x89PNG fake " + title.encode())


def test_pool_sample_with_fakes(tmp_path: Path) -> None:
    sdir = tmp_path / "L" / "S"
    r1 = _fake_result(sdir, "rep1", 100.0, 2e8, 20, 1)
    r2 = _fake_result(sdir, "rep2", 104.0, 2.4e8, 30, 2)
    calls: list = []
    spec = {"lot": "L", "sample": "S", "sample_dir": str(sdir), "pooled_key": "pk", "videos": [
        {"name": "rep1", "rel": "L/S/rep1.tif", "status": "ok", "result_dir": str(r1)},
        {"name": "rep2", "rel": "L/S/rep2.tif", "status": "ok", "result_dir": str(r2)},
        {"name": "bad", "rel": "L/S/bad.tif", "status": "failed", "error": "corrupt TIFF"}]}
    res = pool_sample(spec, size_distribution_fn=_fake_dist(calls), plot_fn=_fake_plot)
    assert res["status"] == "ok", res
    particles, acq, sizing, tracks = calls[0]
    assert len(particles) == 50 and particles["particle"].is_unique
    assert set(tracks["particle"]) == set(particles["particle"])
    assert acq.fps == 30.0 and sizing.n_bins == 50 and sizing.bootstrap == 0
    f = res["fields"]
    assert f["n_videos"] == 3 and f["n_ok"] == 2 and f["n_failed"] == 1
    assert f["mode_mean_nm"] == pytest.approx(102.0, rel=1e-12)
    assert f["mode_se_nm"] == pytest.approx(2.0, rel=1e-12)  # sd = 2√2, se = sd/√2
    assert f["concentration_cv"] == pytest.approx(np.std([2e8, 2.4e8], ddof=1) / 2.2e8, rel=1e-12)
    assert f["pooled_mode_nm"] == 100.0 and f["pooled_n_tracks"] == 50 and f["dilution"] == 10.0
    data = json.loads((sdir / "sample_summary.json").read_text())
    assert data["schema"] == "exonta.sample_summary/1" and data["pooled_key"] == "pk"
    assert data["pooled"]["stats"]["ci95"]["mode"] == [99.0, 101.0]
    assert [v["status"] for v in data["videos"]] == ["ok", "ok", "failed"]
    assert data["videos"][0]["result_dir"] == "rep1"
    assert pd.read_csv(sdir / "size_distribution.csv")["deconvolved_density"].tolist() == [0.0, 1.0, 0.0]
    assert (sdir / "size_distribution.png").read_bytes().startswith(b"\x89PNG")
    assert not [p for p in sdir.iterdir() if p.name.startswith(".")]  # no temp files left


def test_pool_sample_different_acquisitions_and_failures(tmp_path: Path) -> None:
    sdir = tmp_path / "L" / "S"
    r1 = _fake_result(sdir, "rep1", 100.0, 2e8, 5, 1)
    r2 = _fake_result(sdir, "rep2", 100.0, 2e8, 5, 2, acq={**ACQ, "fps": 60.0, "exposure_s": 0.01})
    (sdir / "size_distribution.csv").write_text("stale")
    calls: list = []
    spec = {"lot": "L", "sample": "S", "sample_dir": str(sdir), "videos": [
        {"name": "rep1", "status": "ok", "result_dir": str(r1)},
        {"name": "rep2", "status": "ok", "result_dir": str(r2)}]}
    res = pool_sample(spec, size_distribution_fn=_fake_dist(calls), plot_fn=_fake_plot)
    assert res["status"] == "ok" and not calls
    assert "different acquisition" in res["fields"]["pooled_error"]
    assert res["fields"]["mode_mean_nm"] == 100.0 and res["fields"]["pooled_mode_nm"] is None
    assert not (sdir / "size_distribution.csv").exists()
    # nothing succeeded
    res = pool_sample({"lot": "L", "sample": "S", "sample_dir": str(sdir),
                       "videos": [{"name": "x", "status": "failed", "error": "bad"}]},
                      size_distribution_fn=_fake_dist(calls), plot_fn=_fake_plot)
    assert res["status"] == "ok" and res["fields"]["n_ok"] == 0 and res["fields"]["mode_mean_nm"] is None
    # an exception inside pooling is reported, never raised
    def boom(*a, **k):
        raise RuntimeError("kaputt")
    res = pool_sample({"lot": "L", "sample": "S", "sample_dir": str(sdir),
                       "videos": [{"name": "rep1", "status": "ok", "result_dir": str(r1)}]},
                      size_distribution_fn=boom, plot_fn=_fake_plot)
    assert res["status"] == "failed" and "kaputt" in res["error"]
