"""The batch catalog: one SQLite database ``OUT/catalog.sqlite`` describing every result.

Only the batch *client* process writes it (workers return small dicts), each
change in one transaction, in WAL mode with ``synchronous=FULL``: a killed run
keeps every committed row and never leaves a half-written one. A result row is
committed only after its result folder has been renamed into place.

Schema (``PRAGMA user_version = 2``)::

    lots     (lot_id PK, name UNIQUE, created_at)
    samples  (sample_id PK, lot_id → lots, name, UNIQUE(lot_id, name),
              dilution, n_videos, n_ok, n_failed,
              mode_mean_nm, mode_se_nm, mode_cv,            -- between replicate videos
              d50_mean_nm, d50_se_nm, d50_cv,
              concentration_mean_per_ml, concentration_se_per_ml, concentration_cv,
              pooled_mode_nm, pooled_mean_nm, pooled_d10_nm, pooled_d50_nm, pooled_d90_nm,
              pooled_n_tracks, pooled_key, summary_path, pooled_error, updated_at)
    videos   (video_id PK, path UNIQUE (absolute), rel_path (relative to ROOT), name,
              sample_id → samples, fingerprint (size+mtime), video_sha256 (batch hash of the bytes),
              acquisition_json (explicit values from the manifest), first_seen_at, last_seen_at)
    runs     (run_id PK, started_at, finished_at, root, out, exonta_version, parameters_json
              (command options), scheduler, n_workers, n_videos, n_ok, n_failed, n_skipped,
              status 'running' (or killed) | 'finished' | 'interrupted' (Ctrl-C) | 'failed')
    results  (result_id PK, video_id → videos, run_id → runs, status 'ok' | 'failed',
              error, resume_key (hash of input + parameters + given acquisition + calibration + result
              folder, see exonta.batch.run), adopted (0/1: folder found without a row and verified),
              exonta_version, input_sha256 (from summary.json; the batch's hash of the file for failed
              videos), parameters_json, parameters_hash (AnalysisConfig.parameters_hash()),
              acquisition_json (resolved acquisition), warnings_json,
              mode_nm, mean_nm, sd_nm, d10_nm, d50_nm, d90_nm,
              concentration_per_ml, concentration_ci95_low_per_ml, concentration_ci95_high_per_ml,
              n_frames, n_tracks, n_valid_tracks, particles_per_frame,
              drift_x_um_per_s, drift_y_um_per_s, detection_limit_nm (size_nm.detection_limit,
              schema 2), result_dir (relative to OUT), elapsed_s, started_at, finished_at)

A schema-1 catalog (exonta before session 11) is migrated when opened: the column
``detection_limit_nm`` is added (NULL for its rows) and the view rebuilt.

Every run appends result rows (history is kept). The view ``latest_results``
joins ``lots → samples → videos → results`` and keeps, per video, its newest
result; it is what ``results.csv`` / ``results.parquet`` export and what a QC
report should read::

    SELECT * FROM latest_results WHERE lot = 'lotA' ORDER BY sample, video

Timestamps are ISO 8601 UTC strings; paths in ``result_dir`` / ``summary_path``
are relative to OUT.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from ..errors import ExontaInputError
from ..io.results import atomic_write_bytes, finite_or_none, to_jsonable, write_parquet

__all__ = ["Catalog", "SCHEMA_VERSION", "CATALOG_NAME", "utcnow", "result_row_from_summary"]

SCHEMA_VERSION = 2
CATALOG_NAME = "catalog.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lots (
    lot_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    sample_id INTEGER PRIMARY KEY,
    lot_id INTEGER NOT NULL REFERENCES lots(lot_id),
    name TEXT NOT NULL,
    dilution REAL,
    n_videos INTEGER, n_ok INTEGER, n_failed INTEGER,
    mode_mean_nm REAL, mode_se_nm REAL, mode_cv REAL,
    d50_mean_nm REAL, d50_se_nm REAL, d50_cv REAL,
    concentration_mean_per_ml REAL, concentration_se_per_ml REAL, concentration_cv REAL,
    pooled_mode_nm REAL, pooled_mean_nm REAL, pooled_d10_nm REAL, pooled_d50_nm REAL, pooled_d90_nm REAL,
    pooled_n_tracks INTEGER,
    pooled_key TEXT, summary_path TEXT, pooled_error TEXT,
    updated_at TEXT,
    UNIQUE(lot_id, name)
);
CREATE TABLE IF NOT EXISTS videos (
    video_id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    rel_path TEXT NOT NULL,
    name TEXT NOT NULL,
    sample_id INTEGER NOT NULL REFERENCES samples(sample_id),
    fingerprint TEXT,
    video_sha256 TEXT,
    acquisition_json TEXT,
    first_seen_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    root TEXT, out TEXT,
    exonta_version TEXT,
    parameters_json TEXT,
    scheduler TEXT, n_workers INTEGER,
    n_videos INTEGER, n_ok INTEGER, n_failed INTEGER, n_skipped INTEGER,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    result_id INTEGER PRIMARY KEY,
    video_id INTEGER NOT NULL REFERENCES videos(video_id),
    run_id INTEGER REFERENCES runs(run_id),
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    resume_key TEXT,
    adopted INTEGER NOT NULL DEFAULT 0,
    exonta_version TEXT,
    input_sha256 TEXT,
    parameters_json TEXT,
    parameters_hash TEXT,
    acquisition_json TEXT,
    warnings_json TEXT,
    mode_nm REAL, mean_nm REAL, sd_nm REAL, d10_nm REAL, d50_nm REAL, d90_nm REAL,
    concentration_per_ml REAL, concentration_ci95_low_per_ml REAL, concentration_ci95_high_per_ml REAL,
    n_frames INTEGER, n_tracks INTEGER, n_valid_tracks INTEGER, particles_per_frame REAL,
    drift_x_um_per_s REAL, drift_y_um_per_s REAL,
    detection_limit_nm REAL,
    result_dir TEXT,
    elapsed_s REAL,
    started_at TEXT,
    finished_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_video ON results(video_id, result_id);
CREATE INDEX IF NOT EXISTS samples_lot ON samples(lot_id);
CREATE INDEX IF NOT EXISTS videos_sample ON videos(sample_id);
CREATE VIEW IF NOT EXISTS latest_results AS
SELECT l.name AS lot, s.name AS sample, v.name AS video, v.rel_path AS video_path,
       r.result_id, r.run_id, r.status, r.error, r.adopted, r.exonta_version, r.input_sha256,
       r.parameters_hash, r.parameters_json, r.acquisition_json,
       r.mode_nm, r.mean_nm, r.sd_nm, r.d10_nm, r.d50_nm, r.d90_nm,
       r.concentration_per_ml, r.concentration_ci95_low_per_ml, r.concentration_ci95_high_per_ml,
       r.n_frames, r.n_tracks, r.n_valid_tracks, r.particles_per_frame,
       r.drift_x_um_per_s, r.drift_y_um_per_s, r.detection_limit_nm, r.result_dir, r.elapsed_s, r.warnings_json,
       r.started_at, r.finished_at,
       l.lot_id, s.sample_id, v.video_id
FROM results r
JOIN videos v ON v.video_id = r.video_id
JOIN samples s ON s.sample_id = v.sample_id
JOIN lots l ON l.lot_id = s.lot_id
WHERE r.result_id = (SELECT MAX(r2.result_id) FROM results r2 WHERE r2.video_id = r.video_id);
"""

_RESULT_NUMBERS = ("mode_nm", "mean_nm", "sd_nm", "d10_nm", "d50_nm", "d90_nm", "concentration_per_ml",
                   "concentration_ci95_low_per_ml", "concentration_ci95_high_per_ml", "n_frames", "n_tracks",
                   "n_valid_tracks", "particles_per_frame", "drift_x_um_per_s", "drift_y_um_per_s",
                   "detection_limit_nm")

_SAMPLE_FIELDS = ("dilution", "n_videos", "n_ok", "n_failed", "mode_mean_nm", "mode_se_nm", "mode_cv",
                  "d50_mean_nm", "d50_se_nm", "d50_cv", "concentration_mean_per_ml", "concentration_se_per_ml",
                  "concentration_cv", "pooled_mode_nm", "pooled_mean_nm", "pooled_d10_nm", "pooled_d50_nm",
                  "pooled_d90_nm", "pooled_n_tracks", "pooled_key", "summary_path", "pooled_error")



def utcnow() -> str:
    """Current time, ISO 8601 UTC, second precision."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _json(obj: Any) -> str | None:
    return None if obj is None else json.dumps(to_jsonable(obj), sort_keys=True, ensure_ascii=False)


def result_row_from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """Key numbers of a ``summary.json`` dict as ``results`` columns."""
    size = summary.get("size_nm") or {}
    conc = summary.get("concentration_per_ml") or {}
    counts = summary.get("counts") or {}
    drift = summary.get("drift_um_per_s") or [None, None]
    inp = summary.get("input") or {}
    row = {
        "mode_nm": finite_or_none(size.get("mode")), "mean_nm": finite_or_none(size.get("mean")), "sd_nm": finite_or_none(size.get("sd")),
        "d10_nm": finite_or_none(size.get("d10")), "d50_nm": finite_or_none(size.get("d50")), "d90_nm": finite_or_none(size.get("d90")),
        "concentration_per_ml": finite_or_none(conc.get("value")),
        "concentration_ci95_low_per_ml": finite_or_none(conc.get("ci95_low")),
        "concentration_ci95_high_per_ml": finite_or_none(conc.get("ci95_high")),
        "n_frames": counts.get("n_frames") if counts.get("n_frames") is None else int(counts["n_frames"]),
        "n_tracks": counts.get("n_tracks") if counts.get("n_tracks") is None else int(counts["n_tracks"]),
        "n_valid_tracks": (counts.get("n_valid_tracks") if counts.get("n_valid_tracks") is None
                           else int(counts["n_valid_tracks"])),
        "particles_per_frame": finite_or_none(counts.get("mean_particles_per_frame")),
        "drift_x_um_per_s": finite_or_none(drift[0]) if len(drift) > 0 else None,
        "drift_y_um_per_s": finite_or_none(drift[1]) if len(drift) > 1 else None,
        "detection_limit_nm": finite_or_none((size.get("detection_limit") or {}).get("diameter_nm")),
        "exonta_version": summary.get("exonta_version"),
        "input_sha256": inp.get("sha256"),
        "parameters_json": _json(summary.get("parameters")),
        "parameters_hash": summary.get("parameters_hash"),
        "acquisition_json": _json(summary.get("acquisition")),
        "warnings_json": _json(summary.get("warnings") or []),
    }
    return row


class Catalog:
    """The SQLite catalog of a batch output folder (write from one process only).

    Parameters
    ----------
    path : path
        The database file (created with the schema when missing).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise ExontaInputError(f"cannot open the catalog {self.path}: {exc}") from None
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ExontaInputError(f"the catalog {self.path} was written by a newer exonta (schema {version}); "
                                       f"upgrade exonta or use another --out folder")
            with self.transaction():
                if version == 1:  # schema 1 → 2: the detection limit column; the view selects it
                    self.conn.execute("ALTER TABLE results ADD COLUMN detection_limit_nm REAL")
                    self.conn.execute("DROP VIEW IF EXISTS latest_results")
                for stmt in _split_sql(_SCHEMA):
                    self.conn.execute(stmt)
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise ExontaInputError(f"{self.path} is not a valid exonta catalog ({exc}); move it away or use "
                                   f"another --out folder") from None

    # ------------------------------------------------------------------ plumbing
    class _Tx:
        def __init__(self, conn: sqlite3.Connection):
            self.conn = conn

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:
            if exc_type is None:
                self.conn.execute("COMMIT")
            else:
                self.conn.execute("ROLLBACK")

    def transaction(self) -> "Catalog._Tx":
        """Context manager: one write transaction (committed on success, rolled back on error)."""
        return Catalog._Tx(self.conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ runs
    def start_run(self, *, root: str, out: str, exonta_version: str, parameters: dict[str, Any],
                  scheduler: str | None, n_workers: int | None, n_videos: int) -> int:
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO runs (started_at, root, out, exonta_version, parameters_json, scheduler, n_workers, "
                "n_videos, n_ok, n_failed, n_skipped, status) VALUES (?,?,?,?,?,?,?,?,0,0,0,'running')",
                (utcnow(), root, out, exonta_version, _json(parameters), scheduler, n_workers, n_videos))
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, *, n_ok: int, n_failed: int, n_skipped: int, status: str = "finished") -> None:
        with self.transaction() as c:
            c.execute("UPDATE runs SET finished_at=?, n_ok=?, n_failed=?, n_skipped=?, status=? WHERE run_id=?",
                      (utcnow(), n_ok, n_failed, n_skipped, status, run_id))

    # ------------------------------------------------------------------ lots, samples, videos
    def _lot_id(self, c: sqlite3.Connection, lot: str) -> int:
        c.execute("INSERT OR IGNORE INTO lots (name, created_at) VALUES (?, ?)", (lot, utcnow()))
        return int(c.execute("SELECT lot_id FROM lots WHERE name=?", (lot,)).fetchone()[0])

    def _sample_id(self, c: sqlite3.Connection, lot: str, sample: str) -> int:
        lot_id = self._lot_id(c, lot)
        c.execute("INSERT OR IGNORE INTO samples (lot_id, name, updated_at) VALUES (?, ?, ?)",
                  (lot_id, sample, utcnow()))
        return int(c.execute("SELECT sample_id FROM samples WHERE lot_id=? AND name=?",
                             (lot_id, sample)).fetchone()[0])

    def upsert_video(self, *, path: str, rel_path: str, name: str, lot: str, sample: str,
                     fingerprint: str | None = None, video_sha256: str | None = None,
                     acquisition: dict[str, Any] | None = None) -> int:
        """Insert or update a video (and its lot and sample); return its ``video_id``."""
        now = utcnow()
        with self.transaction() as c:
            sid = self._sample_id(c, lot, sample)
            c.execute(
                "INSERT INTO videos (path, rel_path, name, sample_id, fingerprint, video_sha256, acquisition_json, "
                "first_seen_at, last_seen_at) VALUES (?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(path) DO UPDATE SET rel_path=excluded.rel_path, name=excluded.name, "
                "sample_id=excluded.sample_id, fingerprint=excluded.fingerprint, "
                "video_sha256=excluded.video_sha256, acquisition_json=excluded.acquisition_json, "
                "last_seen_at=excluded.last_seen_at",
                (path, rel_path, name, sid, fingerprint, video_sha256, _json(acquisition or {}), now, now))
            return int(c.execute("SELECT video_id FROM videos WHERE path=?", (path,)).fetchone()[0])

    def video(self, path: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM videos WHERE path=?", (path,)).fetchone()

    def cached_sha256(self, path: str, fingerprint: str) -> str | None:
        """The stored hash of a video when its size and modification time did not change."""
        row = self.conn.execute("SELECT fingerprint, video_sha256 FROM videos WHERE path=?", (path,)).fetchone()
        if row is not None and row["fingerprint"] == fingerprint and row["video_sha256"]:
            return str(row["video_sha256"])
        return None

    # ------------------------------------------------------------------ results
    def add_result(self, *, video_id: int, run_id: int | None, status: str, error: str | None = None,
                   resume_key: str | None = None, summary: dict[str, Any] | None = None,
                   result_dir: str | None = None, elapsed_s: float | None = None, started_at: str | None = None,
                   adopted: bool = False, input_sha256: str | None = None,
                   parameters_hash: str | None = None) -> int:
        """Append one result row (commit after the result folder exists).

        ``input_sha256`` / ``parameters_hash`` fill those columns when there is
        no summary (failed videos); a summary's own values take precedence.
        """
        row: dict[str, Any] = {k: None for k in _RESULT_NUMBERS}
        row.update({"exonta_version": None, "input_sha256": None, "parameters_json": None,
                    "parameters_hash": None, "acquisition_json": None, "warnings_json": None})
        row["input_sha256"], row["parameters_hash"] = input_sha256, parameters_hash
        if summary:
            row.update(result_row_from_summary(summary))
        row.update({"video_id": video_id, "run_id": run_id, "status": status, "error": error,
                    "resume_key": resume_key, "adopted": int(bool(adopted)), "result_dir": result_dir,
                    "elapsed_s": elapsed_s, "started_at": started_at, "finished_at": utcnow()})
        cols = list(row)
        with self.transaction() as c:
            cur = c.execute(f"INSERT INTO results ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                            [row[k] for k in cols])
            return int(cur.lastrowid)

    def latest_result(self, video_id: int) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM results WHERE video_id=? ORDER BY result_id DESC LIMIT 1",
                                 (video_id,)).fetchone()

    def latest_ok_result(self, video_id: int, resume_key: str) -> sqlite3.Row | None:
        """Newest successful result of a video computed with this resume key."""
        return self.conn.execute(
            "SELECT * FROM results WHERE video_id=? AND status='ok' AND resume_key=? ORDER BY result_id DESC LIMIT 1",
            (video_id, resume_key)).fetchone()

    # ------------------------------------------------------------------ samples
    def update_sample(self, lot: str, sample: str, values: dict[str, Any]) -> None:
        unknown = set(values) - set(_SAMPLE_FIELDS)
        if unknown:
            raise KeyError(f"unknown sample field(s): {sorted(unknown)}")
        with self.transaction() as c:
            sid = self._sample_id(c, lot, sample)
            if values:
                sets = ", ".join(f"{k}=?" for k in values)
                c.execute(f"UPDATE samples SET {sets}, updated_at=? WHERE sample_id=?",
                          [values[k] for k in values] + [utcnow(), sid])

    def sample(self, lot: str, sample: str) -> sqlite3.Row | None:
        return self.conn.execute(
            "SELECT s.* FROM samples s JOIN lots l ON l.lot_id=s.lot_id WHERE l.name=? AND s.name=?",
            (lot, sample)).fetchone()

    # ------------------------------------------------------------------ queries and export
    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        return list(self.conn.execute(sql, params).fetchall())

    def iter_latest(self) -> Iterator[sqlite3.Row]:
        yield from self.conn.execute("SELECT * FROM latest_results ORDER BY lot, sample, video, video_path")

    def latest_dataframe(self):
        """The ``latest_results`` view as a pandas DataFrame."""
        import pandas as pd

        rows = self.conn.execute("SELECT * FROM latest_results ORDER BY lot, sample, video, video_path")
        cols = [d[0] for d in rows.description]
        return pd.DataFrame([tuple(r) for r in rows.fetchall()], columns=cols)

    def export(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``results.csv`` and ``results.parquet`` (latest result per video) atomically."""
        out_dir = Path(out_dir)
        df = self.latest_dataframe()
        csv_path, pq_path = out_dir / "results.csv", out_dir / "results.parquet"
        atomic_write_bytes(csv_path, df.to_csv(index=False).encode("utf-8"))
        buf = io.BytesIO()
        write_parquet(df, buf)
        atomic_write_bytes(pq_path, buf.getvalue())
        return csv_path, pq_path


def _split_sql(script: str) -> list[str]:
    """Split the schema script into statements (the schema has no ';' inside statements)."""
    return [s.strip() for s in script.split(";") if s.strip()]
