"""The SQLite catalog: schema, transactions, history, view, export."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from exonta.batch.catalog import SCHEMA_VERSION, Catalog, result_row_from_summary
from exonta.errors import ExontaInputError


def _summary(mode: float = 101.0, conc: float = 2e8) -> dict:
    return {
        "schema": "exonta.summary/1", "exonta_version": "0.1.0",
        "input": {"sha256": "ab" * 32, "path": "/x/v.tif"},
        "acquisition": {"pixel_size_um": 0.166, "fps": 30.0, "dilution": 10.0},
        "parameters": {"sizing": {"n_bins": 120}}, "parameters_hash": "0123456789abcdef",
        "counts": {"n_frames": 40, "n_tracks": 12, "n_valid_tracks": 9, "mean_particles_per_frame": 3.5},
        "size_nm": {"mode": mode, "mean": 110.0, "sd": 20.0, "d10": 80.0, "d50": 105.0, "d90": 140.0},
        "concentration_per_ml": {"value": conc, "ci95_low": 1.5e8, "ci95_high": float("nan")},
        "drift_um_per_s": [0.5, -0.25],
        "warnings": ["w1"],
    }


def test_result_row_from_summary() -> None:
    row = result_row_from_summary(_summary())
    assert row["mode_nm"] == 101.0 and row["d90_nm"] == 140.0
    assert row["concentration_ci95_high_per_ml"] is None  # NaN → NULL
    assert row["n_valid_tracks"] == 9 and row["particles_per_frame"] == 3.5
    assert row["drift_y_um_per_s"] == -0.25
    assert row["input_sha256"] == "ab" * 32 and row["parameters_hash"] == "0123456789abcdef"
    assert '"dilution": 10.0' in row["acquisition_json"]


def test_catalog_roundtrip(tmp_path: Path) -> None:
    db = tmp_path / "catalog.sqlite"
    with Catalog(db) as cat:
        assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        run = cat.start_run(root="/r", out=str(tmp_path), exonta_version="0.1.0", parameters={"a": 1},
                            scheduler="local", n_workers=2, n_videos=3)
        v1 = cat.upsert_video(path="/r/L/S/a.tif", rel_path="L/S/a.tif", name="a", lot="L", sample="S",
                              fingerprint="file:1:2", video_sha256="cd" * 32, acquisition={"dilution": 10})
        v2 = cat.upsert_video(path="/r/L/S/b.tif", rel_path="L/S/b.tif", name="b", lot="L", sample="S")
        v3 = cat.upsert_video(path="/r/M/T/c.tif", rel_path="M/T/c.tif", name="c", lot="M", sample="T")
        # upsert keeps the id
        assert cat.upsert_video(path="/r/L/S/a.tif", rel_path="L/S/a.tif", name="a", lot="L", sample="S",
                                fingerprint="file:1:2", video_sha256="cd" * 32) == v1
        assert cat.cached_sha256("/r/L/S/a.tif", "file:1:2") == "cd" * 32
        assert cat.cached_sha256("/r/L/S/a.tif", "file:1:3") is None
        cat.add_result(video_id=v1, run_id=run, status="failed", error="boom", resume_key="k0")
        cat.add_result(video_id=v1, run_id=run, status="ok", resume_key="k1", summary=_summary(),
                       result_dir="L/S/a", elapsed_s=1.5)
        cat.add_result(video_id=v2, run_id=run, status="failed", error="corrupt", resume_key="k2")
        cat.add_result(video_id=v3, run_id=run, status="ok", resume_key="k3", summary=_summary(200.0),
                       result_dir="M/T/c", adopted=True)
        assert cat.latest_result(v1)["resume_key"] == "k1"
        assert cat.latest_ok_result(v1, "k1")["mode_nm"] == 101.0
        assert cat.latest_ok_result(v2, "k2") is None
        cat.update_sample("L", "S", {"n_videos": 2, "n_ok": 1, "mode_mean_nm": 101.0, "pooled_key": "p"})
        with pytest.raises(KeyError):
            cat.update_sample("L", "S", {"bogus": 1})
        cat.finish_run(run, n_ok=2, n_failed=1, n_skipped=0)
        df = cat.latest_dataframe()
        assert list(df["video"]) == ["a", "b", "c"]
        assert list(df["status"]) == ["ok", "failed", "ok"]
        assert list(df["lot"]) == ["L", "L", "M"] and list(df["adopted"]) == [0, 0, 1]
        assert df.loc[1, "error"] == "corrupt"
        csv, pq = cat.export(tmp_path)
    assert pd.read_csv(csv)["mode_nm"].iloc[0] == 101.0
    assert len(pd.read_parquet(pq)) == 3
    # readable by any sqlite client, lots → samples → videos → results
    con = sqlite3.connect(db)
    rows = con.execute("SELECT l.name, s.name, s.mode_mean_nm, COUNT(r.result_id) FROM lots l "
                       "JOIN samples s ON s.lot_id = l.lot_id JOIN videos v ON v.sample_id = s.sample_id "
                       "JOIN results r ON r.video_id = v.video_id GROUP BY s.sample_id ORDER BY l.name").fetchall()
    assert rows == [("L", "S", 101.0, 3), ("M", "T", None, 1)]
    assert con.execute("SELECT status, n_ok FROM runs").fetchone() == ("finished", 2)
    con.close()


def test_transaction_rolls_back(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.sqlite") as cat:
        with pytest.raises(RuntimeError):
            with cat.transaction() as c:
                c.execute("INSERT INTO lots (name, created_at) VALUES ('L', 'now')")
                raise RuntimeError("interrupted")
        assert cat.query("SELECT COUNT(*) FROM lots")[0][0] == 0


def test_not_a_catalog(tmp_path: Path) -> None:
    bad = tmp_path / "catalog.sqlite"
    bad.write_bytes(b"garbage" * 200)
    with pytest.raises(ExontaInputError, match="not a valid exonta catalog"):
        Catalog(bad)


def test_result_row_carries_the_detection_limit() -> None:
    s = _summary()
    assert result_row_from_summary(s)["detection_limit_nm"] is None  # an analysis without the entry
    s["size_nm"]["detection_limit"] = {"diameter_nm": 61.5, "method": "..."}
    assert result_row_from_summary(s)["detection_limit_nm"] == 61.5
    s["size_nm"]["detection_limit"] = {"diameter_nm": None, "reason": "not estimated: clipped"}
    assert result_row_from_summary(s)["detection_limit_nm"] is None


def test_schema_1_catalog_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    from exonta.batch import catalog as catmod

    # the schema-1 tables and view: today's schema without the detection_limit_nm column
    old_schema = (catmod._SCHEMA.replace("    detection_limit_nm REAL,\n", "")
                  .replace(" r.detection_limit_nm,", ""))
    assert "detection_limit_nm" not in old_schema
    db = tmp_path / "catalog.sqlite"
    conn = sqlite3.connect(db)
    for stmt in catmod._split_sql(old_schema):
        conn.execute(stmt)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO lots (lot_id, name, created_at) VALUES (1, 'L', 't')")
    conn.execute("INSERT INTO samples (sample_id, lot_id, name) VALUES (1, 1, 'S')")
    conn.execute("INSERT INTO videos (video_id, path, rel_path, name, sample_id, first_seen_at, last_seen_at) "
                 "VALUES (1, '/r/a.tif', 'a.tif', 'a', 1, 't', 't')")
    conn.execute("INSERT INTO results (video_id, status, mode_nm, finished_at) VALUES (1, 'ok', 100.0, 't')")
    conn.commit()
    conn.close()
    with Catalog(db) as cat:
        assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        old = cat.conn.execute("SELECT mode_nm, detection_limit_nm FROM latest_results").fetchone()
        assert old["mode_nm"] == 100.0 and old["detection_limit_nm"] is None
        s = _summary()
        s["size_nm"]["detection_limit"] = {"diameter_nm": 58.0}
        cat.add_result(video_id=1, run_id=None, status="ok", summary=s)
        new = cat.conn.execute("SELECT mode_nm, detection_limit_nm FROM latest_results").fetchone()
        assert new["mode_nm"] == 101.0 and new["detection_limit_nm"] == 58.0
    with Catalog(db) as cat:  # opening again changes nothing
        assert cat.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2
