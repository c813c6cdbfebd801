"""Batch orchestration with a fake per-video task on an in-process Dask cluster.

Resume, adoption, failure isolation and the catalog are tested here without the
analysis pipeline; tests/batch/test_batch_e2e.py runs the real pipeline on
worker processes.
"""

from __future__ import annotations

import functools
import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from exonta.batch.discover import video_sha256
from exonta.batch.pool import pool_sample
from exonta.batch.run import _DUMMY_ACQ, resolve_settings, run_batch, run_video
from exonta.errors import ExontaInputError
from exonta.io.results import write_result_dir

CALLS: list[str] = []


def fake_task(spec: dict) -> dict:
    """Stands in for run_video: writes a plausible result folder for every 'good' video."""
    path = Path(spec["video"])
    CALLS.append(path.name)
    data = path.read_bytes()
    if data.startswith(b"BAD"):
        return {"status": "failed", "error": "the file is not a video", "video": str(path)}
    if data.startswith(b"CRASH"):
        raise RuntimeError("worker crashed")
    settings = resolve_settings(path, spec.get("config_file"), spec.get("acquisition"), spec.get("overrides"))
    acq = {**_DUMMY_ACQ, **settings["acquisition"]}
    acq["exposure_s"] = 0.5 / acq["fps"]
    seed = int.from_bytes(data[:4].ljust(4, b"\0"), "little")
    rng = np.random.default_rng(seed)
    n = 10
    mode = 100.0 + float(rng.integers(0, 10))
    particles = pd.DataFrame({"particle": np.arange(n), "diameter_nm": rng.normal(mode, 3, n),
                              "valid": np.ones(n, bool)})
    tracks = pd.DataFrame({"frame": np.tile(np.arange(3), n), "particle": np.repeat(np.arange(n), 3)})
    summary = {"schema": "exonta.summary/1", "exonta_version": "0.1.0",
               "input": {"sha256": video_sha256(path), "path": str(path)}, "acquisition": acq,
               "parameters": {"sizing": {"n_bins": 40, "bootstrap": 0}}, "parameters_hash": settings["parameters_hash"],
               "counts": {"n_frames": 40, "n_tracks": n, "n_valid_tracks": n, "mean_particles_per_frame": 2.0},
               "size_nm": {"mode": mode, "d50": mode + 1, "d10": mode - 5, "d90": mode + 5, "mean": mode},
               "concentration_per_ml": {"value": 1e8 * acq["dilution"], "ci95_low": 0.9e8, "ci95_high": 1.1e8},
               "drift_um_per_s": [0.0, 0.0], "warnings": []}
    folder = write_result_dir(spec["out_dir"], spec["name"], {"summary.json": summary, "particles.csv": particles,
                                                              "tracks.parquet": tracks})
    return {"status": "ok", "result_dir": str(folder), "summary": summary, "error": None, "elapsed_s": 0.01,
            "started_at": None, "video": str(path)}


def _fake_dist(particles, acquisition, sizing, tracks=None):
    d = particles["diameter_nm"].to_numpy()
    table = pd.DataFrame({"diameter_nm": [100.0], "bin_width_nm": [10.0], "raw_density": [1.0],
                          "deconvolved_density": [1.0]})
    return SimpleNamespace(table=table, stats={"mode": float(np.median(d)), "mean": float(d.mean()),
                                               "d10": 1.0, "d50": 2.0, "d90": 3.0})


def _fake_plot(dist, path, title=""):
    Path(path).write_bytes(b"PNG")


fake_pool = functools.partial(pool_sample, size_distribution_fn=_fake_dist, plot_fn=_fake_plot)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def _video(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


@pytest.fixture
def acq_root(tmp_path: Path) -> Path:
    root = tmp_path / "acq"
    _video(root / "A" / "s1" / "r1.avi", b"good-1")
    _video(root / "A" / "s1" / "r2.avi", b"good-2")
    _video(root / "A" / "s1" / "x.avi", b"BAD bytes")
    _video(root / "B" / "s2" / "r1.avi", b"good-3")
    _video(root / "B" / "s2" / "r2.avi", b"good-4")
    _video(root / "B" / "s3" / "crash.avi", b"CRASH")
    (root / "A" / "s1" / "exonta.toml").write_text("[acquisition]\npixel_size_um = 0.2\nfps = 25\n")
    (root / "samples.csv").write_text(
        "video,sample,lot,dilution\n"
        "A/s1/r1.avi,s1,lotA,100\nA/s1/r2.avi,s1,lotA,100\nA/s1/x.avi,s1,lotA,100\n"
        "B/s2/r1.avi,s2,lotB,10\nB/s2/r2.avi,s2,lotB,10\nB/s3/crash.avi,s3,lotB,\n")
    return root


def _run(root: Path, out: Path, client, **kw):
    CALLS.clear()
    return run_batch(root, out, client=client, task=fake_task, pool_task=fake_pool, **kw)


def test_batch_first_run_resume_and_changes(acq_root: Path, tmp_path: Path, client) -> None:
    out = tmp_path / "out"
    seen: list[tuple[int, int]] = []
    rep = _run(acq_root, out, client, progress=lambda d, t, s: seen.append((d, t)))
    status = {o.rel: o.status for o in rep.outcomes}
    assert status == {"A/s1/r1.avi": "ok", "A/s1/r2.avi": "ok", "A/s1/x.avi": "failed", "B/s2/r1.avi": "ok",
                      "B/s2/r2.avi": "ok", "B/s3/crash.avi": "failed"}
    assert rep.exit_code == 1 and len(rep.failures) == 2
    errors = {o.rel: o.error for o in rep.failures}
    assert errors["A/s1/x.avi"] == "the file is not a video"
    assert "worker crashed" in errors["B/s3/crash.avi"]
    assert seen[-1] == (6, 6)
    assert sorted(CALLS) == ["crash.avi", "r1.avi", "r1.avi", "r2.avi", "r2.avi", "x.avi"]
    # result folders and pooled summaries
    assert (out / "lotA" / "s1" / "r1" / "summary.json").is_file()
    assert (out / "lotA" / "s1" / "sample_summary.json").is_file(), (rep.notes, rep.samples)
    assert (out / "lotB" / "s3" / "sample_summary.json").is_file()
    assert (out / "results.csv").is_file() and (out / "results.parquet").is_file()
    samples = {(s["lot"], s["sample"]): s for s in rep.samples}
    assert samples[("lotA", "s1")]["n_ok"] == 2 and samples[("lotA", "s1")]["n_failed"] == 1
    assert samples[("lotB", "s2")]["concentration_mean_per_ml"] == pytest.approx(1e9, rel=1e-12)
    # catalog
    con = sqlite3.connect(out / "catalog.sqlite")
    rows = con.execute("SELECT lot, sample, video, status, parameters_hash, acquisition_json, result_dir "
                       "FROM latest_results ORDER BY lot, sample, video").fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("lotA", "s1", "r1", "ok"), ("lotA", "s1", "r2", "ok"), ("lotA", "s1", "x", "failed"),
        ("lotB", "s2", "r1", "ok"), ("lotB", "s2", "r2", "ok"), ("lotB", "s3", "crash", "failed")]
    assert rows[0][6] == "lotA/s1/r1" and '"pixel_size_um": 0.2' in rows[0][5] and '"dilution": 100.0' in rows[0][5]
    assert con.execute("SELECT status, n_ok, n_failed FROM runs").fetchall() == [("finished", 4, 2)]
    # failed rows still say which input and parameters failed
    sha, phash = con.execute("SELECT input_sha256, parameters_hash FROM latest_results WHERE video='x'").fetchone()
    assert sha == video_sha256(acq_root / "A" / "s1" / "x.avi") and phash == rows[0][4]
    assert con.execute("SELECT n_videos, n_ok, mode_mean_nm IS NOT NULL FROM samples s JOIN lots l "
                       "ON l.lot_id = s.lot_id WHERE l.name='lotA'").fetchone() == (3, 2, 1)
    con.close()
    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == 6 and set(csv["status"]) == {"ok", "failed"}

    # --- re-run: finished videos are skipped, failed ones are retried, pools are unchanged
    mtime = (out / "lotA" / "s1" / "sample_summary.json").stat().st_mtime_ns
    rep2 = _run(acq_root, out, client)
    assert sorted(CALLS) == ["crash.avi", "x.avi"]
    assert {o.rel: o.status for o in rep2.outcomes if o.status == "skipped"}.keys() == {
        "A/s1/r1.avi", "A/s1/r2.avi", "B/s2/r1.avi", "B/s2/r2.avi"}
    assert (out / "lotA" / "s1" / "sample_summary.json").stat().st_mtime_ns == mtime
    assert {(s["lot"], s["sample"]) for s in rep2.samples} == {("lotA", "s1"), ("lotB", "s2"), ("lotB", "s3")}

    # --- a changed manifest dilution re-runs exactly that video, and re-pools its sample
    text = (acq_root / "samples.csv").read_text().replace("B/s2/r2.avi,s2,lotB,10", "B/s2/r2.avi,s2,lotB,20")
    (acq_root / "samples.csv").write_text(text)
    rep3 = _run(acq_root, out, client)
    assert sorted(CALLS) == ["crash.avi", "r2.avi", "x.avi"]
    assert [o.rel for o in rep3.outcomes if o.status == "ok"] == ["B/s2/r2.avi"]
    s2 = next(s for s in rep3.samples if s["sample"] == "s2")
    assert s2["concentration_mean_per_ml"] == pytest.approx(1.5e9, rel=1e-12)

    # --- a changed sidecar parameter re-runs the videos of that folder only
    (acq_root / "A" / "s1" / "exonta.toml").write_text(
        "[acquisition]\npixel_size_um = 0.2\nfps = 25\n[detect]\nthreshold_snr = 7\n")
    _run(acq_root, out, client)
    assert sorted(CALLS) == ["crash.avi", "r1.avi", "r2.avi", "x.avi"]

    # --- a deleted result folder is recomputed; --force recomputes all
    shutil.rmtree(out / "lotB" / "s2" / "r1")
    _run(acq_root, out, client)
    assert sorted(CALLS) == ["crash.avi", "r1.avi", "x.avi"]
    _run(acq_root, out, client, force=True)
    assert len(CALLS) == 6


def test_batch_adopts_result_without_catalog_row(acq_root: Path, tmp_path: Path, client) -> None:
    out = tmp_path / "out"
    _run(acq_root, out, client)
    # simulate a kill between the result folder rename and the catalog commit: drop the rows
    con = sqlite3.connect(out / "catalog.sqlite")
    con.execute("DELETE FROM results WHERE video_id IN (SELECT video_id FROM videos WHERE rel_path LIKE 'B/s2/%')")
    con.commit()
    con.close()
    rep = _run(acq_root, out, client)
    assert sorted(CALLS) == ["crash.avi", "x.avi"]
    assert {o.rel for o in rep.outcomes if o.status == "adopted"} == {"B/s2/r1.avi", "B/s2/r2.avi"}
    con = sqlite3.connect(out / "catalog.sqlite")
    assert con.execute("SELECT COUNT(*) FROM latest_results WHERE adopted=1 AND status='ok'").fetchone() == (2,)
    con.close()
    # a result folder computed with other settings is not adopted
    (out / "catalog.sqlite").unlink()
    text = (acq_root / "samples.csv").read_text().replace("lotB,10", "lotB,50")
    (acq_root / "samples.csv").write_text(text)
    rep = _run(acq_root, out, client)
    assert {o.rel for o in rep.outcomes if o.status == "adopted"} == {"A/s1/r1.avi", "A/s1/r2.avi"}
    assert sorted(CALLS) == ["crash.avi", "r1.avi", "r2.avi", "x.avi"]


def test_batch_folder_mode_and_bad_input(tmp_path: Path, client) -> None:
    root = tmp_path / "acq"
    _video(root / "L1" / "S1" / "a.avi", b"good-a")
    _video(root / "L1" / "S1" / "b.avi", b"good-b")
    (root / "L1" / "S1" / "a.exonta.toml").write_text("[acquisition]\npixel_size_um = 0.1\nfps = 30\n")
    (root / "L1" / "S1" / "b.exonta.toml").write_text("[acquisition]\npixel_size_um = 0.1\nfps = 30\n")
    out = root / "results"  # OUT inside ROOT is skipped by discovery
    rep = _run(root, out, client)
    assert rep.exit_code == 0 and {(o.lot, o.sample) for o in rep.outcomes} == {("L1", "S1")}
    rep = _run(root, out, client)
    assert CALLS == [] and all(o.status == "skipped" for o in rep.outcomes)
    # a broken sidecar fails that video in the client, the others continue
    (root / "L1" / "S1" / "b.exonta.toml").write_text("[acquisition\nnot toml")
    rep = _run(root, out, client)
    st = {o.rel: (o.status, o.error) for o in rep.outcomes}
    assert st["L1/S1/a.avi"][0] == "skipped" and st["L1/S1/b.avi"][0] == "failed"
    assert "not valid TOML" in st["L1/S1/b.avi"][1]
    with pytest.raises(ExontaInputError, match="not found"):
        run_batch(tmp_path / "missing", out, client=client)
    with pytest.raises(ExontaInputError, match="config file not found"):
        run_batch(root, out, client=client, config_file=tmp_path / "nope.toml")
    with pytest.raises(ExontaInputError, match="calibration file not found"):
        run_batch(root, out, client=client, calibration=tmp_path / "nope.json")
    bad_cal = tmp_path / "cal.json"
    bad_cal.write_text("{not json")
    with pytest.raises(ExontaInputError, match="cal.json"):
        run_batch(root, out, client=client, calibration=bad_cal)
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text("[detect]\nthreshold_snr = -1\n")
    with pytest.raises(ExontaInputError, match="threshold_snr"):
        run_batch(root, out, client=client, config_file=bad_cfg)


def test_run_video_isolates_failures(tmp_path: Path, monkeypatch) -> None:
    import exonta.pipeline as pipeline

    def bad_input(*a, **k):
        raise ExontaInputError("cannot read x.tif: not a TIFF file")

    monkeypatch.setattr(pipeline, "prepare", bad_input)
    res = run_video({"video": str(tmp_path / "x.tif"), "out_dir": str(tmp_path), "name": "x"})
    assert res["status"] == "failed" and res["error"] == "cannot read x.tif: not a TIFF file"
    assert res["result_dir"] is None and res["elapsed_s"] >= 0

    def crash(*a, **k):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(pipeline, "prepare", crash)
    res = run_video({"video": str(tmp_path / "y.tif"), "out_dir": str(tmp_path), "name": "y"})
    assert res["status"] == "failed" and "ZeroDivisionError" in res["error"]
    assert not any(tmp_path.iterdir())
