"""Run a batch: every video of an acquisition folder on Dask, with resume and failure isolation.

Flow of :func:`run_batch` (all catalog writes happen here, in the client):

1. :func:`exonta.batch.discover.discover` lists the videos, lots and samples.
2. For each video the client computes its *resume key*: SHA-256 of the video
   bytes (streamed; reused from the catalog when size and mtime did not
   change), the analysis-parameters hash (``AnalysisConfig.parameters_hash()``
   after merging defaults, sidecars, ``--config`` and overrides), every
   acquisition value given outside the file (sidecars, ``--config``, manifest,
   API), the calibration file's hash and the result folder. A video is
   *skipped* when its newest catalog result is ``ok`` with the same key and the
   result folder is still there; a result folder without a catalog row (a run
   killed between writing it and committing the row) is *adopted* when its
   ``summary.json`` has the same input hash, parameters hash and acquisition
   values.
3. The others run as one Dask task each (:func:`run_video`: prepare + analyze +
   atomic ``Result.write`` into ``OUT/<lot>/<sample>/<video>/``). A task never
   raises: bad input and unexpected errors come back as ``status="failed"``.
   Results are recorded as they finish (``distributed.as_completed``); the
   catalog row is committed after the result folder exists.
4. When all videos of a sample are settled its replicates are pooled
   (:func:`exonta.batch.pool.pool_sample`, also a Dask task), unless nothing
   changed since the last pooling.
5. ``results.csv`` and ``results.parquet`` are exported from the catalog.

The cluster: ``scheduler=None`` starts ``distributed.LocalCluster(n_workers=N,
threads_per_worker=1, processes=True)`` on this machine; an address
(``tcp://host:8786``) uses an existing cluster, whose workers must have exonta
installed and see ROOT and OUT at the same paths (shared file system).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ExontaInputError
from .catalog import CATALOG_NAME, Catalog, utcnow
from .discover import VideoEntry, discover, video_fingerprint, video_sha256

__all__ = ["run_video", "run_batch", "BatchReport", "VideoOutcome", "resolve_settings", "resume_key"]

_DUMMY_ACQ = {"pixel_size_um": 1.0, "fps": 1.0, "exposure_s": 1.0, "temperature_c": 22.0, "viscosity_mpas": 1.0,
              "dilution": 1.0}
LOCK_NAME = ".exonta-batch.lock"


# ============================================================================ the task

def run_video(spec: dict[str, Any]) -> dict[str, Any]:
    """Analyse one video and write its result folder (a Dask task; never raises).

    Parameters
    ----------
    spec : dict
        ``video`` (path), ``out_dir`` (the sample folder), ``name`` (result
        folder name), optional ``config_file`` (path), ``acquisition`` (dict of
        explicit acquisition values), ``overrides`` (dict of analysis sections).

    Returns
    -------
    dict
        ``status`` ("ok" / "failed"), ``video``, ``result_dir`` (str or None),
        ``summary`` (the written summary.json dict, or None), ``error`` (str or
        None), ``started_at``, ``elapsed_s``.
    """
    t0 = time.perf_counter()
    started = utcnow()
    out: dict[str, Any] = {"status": "failed", "video": str(spec.get("video")), "result_dir": None,
                           "summary": None, "error": None, "started_at": started, "elapsed_s": None}
    vid = None
    try:
        from ..io.results import read_summary
        from ..pipeline import analyze, prepare

        vid, cfg, warnings, sources = prepare(spec["video"], config_file=spec.get("config_file"),
                                              acquisition=spec.get("acquisition") or None,
                                              overrides=spec.get("overrides") or None)
        result = analyze(vid, cfg, acquisition_sources=sources, warnings=warnings)
        folder = result.write(spec["out_dir"], name=spec["name"])
        out.update(status="ok", result_dir=str(folder), summary=read_summary(folder))
    except ExontaInputError as exc:
        out["error"] = str(exc)
    except MemoryError:
        out["error"] = "out of memory while analysing this video"
    except Exception as exc:  # noqa: BLE001 - failure isolation: one bad video must not stop the batch
        out["error"] = f"unexpected error ({type(exc).__name__}: {exc})"
    finally:
        close = getattr(vid, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()
    out["elapsed_s"] = round(time.perf_counter() - t0, 3)
    return out


# ============================================================================ settings and resume keys

def _file_sha256(path: str | Path | None) -> str | None:
    if path is None:
        return None
    return video_sha256(path)


def resolve_settings(video: str | Path, config_file: str | Path | None = None,
                     acquisition: dict[str, Any] | None = None,
                     overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a video's result depends on, apart from the video bytes, resolved in the client.

    Returns
    -------
    dict
        ``parameters_hash`` (of the merged analysis parameters, as in
        summary.json) and ``acquisition`` (the acquisition values given outside
        the file: sidecars < ``config_file`` < ``acquisition``).

    Raises
    ------
    ExontaInputError
        Bad sidecar or config file.
    """
    from ..config import load_config, load_toml, sidecar_paths

    cfg, _, _ = load_config(video, config_file, explicit_acquisition=_DUMMY_ACQ, overrides=overrides)
    given: dict[str, Any] = {}
    for sc in reversed(sidecar_paths(video)):
        given.update(load_toml(sc).get("acquisition") or {})
    if config_file is not None:
        given.update(load_toml(config_file).get("acquisition") or {})
    given.update({k: v for k, v in (acquisition or {}).items() if v is not None})
    return {"parameters_hash": cfg.parameters_hash(), "acquisition": given}


def resume_key(video_sha: str, settings: dict[str, Any], calibration_sha: str | None, result_rel: str) -> str:
    """Hash of everything a video's result depends on (see the module docstring)."""
    blob = json.dumps({"v": 1, "input": video_sha, "parameters_hash": settings["parameters_hash"],
                       "acquisition": {k: settings["acquisition"][k] for k in sorted(settings["acquisition"])},
                       "calibration": calibration_sha, "result": result_rel}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _close(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    except (TypeError, ValueError):
        return a == b


def summary_matches(summary: dict[str, Any], video_sha: str, settings: dict[str, Any]) -> bool:
    """Whether an existing summary.json was computed from this video with these settings."""
    if (summary.get("input") or {}).get("sha256") != video_sha:
        return False
    if summary.get("parameters_hash") != settings["parameters_hash"]:
        return False
    acq = summary.get("acquisition") or {}
    return all(_close(acq.get(k), v) for k, v in settings["acquisition"].items())


# ============================================================================ report

@dataclass
class VideoOutcome:
    """What happened to one video in this run."""

    rel: str
    lot: str
    sample: str
    name: str
    status: str  # "ok" (analysed now), "skipped" (unchanged), "adopted", "failed"
    error: str | None = None
    result_dir: str | None = None
    mode_nm: float | None = None
    d50_nm: float | None = None
    concentration_per_ml: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status in ("ok", "skipped", "adopted")


@dataclass
class BatchReport:
    """Outcome of :func:`run_batch`."""

    run_id: int
    out: Path
    outcomes: list[VideoOutcome] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def catalog_path(self) -> Path:
        return self.out / CATALOG_NAME

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failures(self) -> list[VideoOutcome]:
        return [o for o in self.outcomes if not o.succeeded]

    @property
    def exit_code(self) -> int:
        """0 when every video succeeded, 1 when some failed."""
        return 1 if self.failures else 0


# ============================================================================ orchestration helpers

@contextlib.contextmanager
def _output_lock(out: Path) -> Iterator[None]:
    """Refuse two batch runs writing into the same OUT at once (released automatically if killed)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    fh = open(out / LOCK_NAME, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ExontaInputError(f"another `exonta batch` is writing into {out}; wait for it to finish or "
                                   f"use another --out folder") from None
        yield
    finally:
        fh.close()


class _LazyClient:
    """Start (or connect to) the Dask cluster only when there is work."""

    def __init__(self, client: Any, scheduler: str | None, workers: int | None):
        self._client = client
        self.scheduler = scheduler
        self.workers = workers
        self._stack = contextlib.ExitStack()

    def get(self) -> Any:
        if self._client is None:
            from distributed import Client, LocalCluster

            if self.scheduler:
                try:
                    self._client = self._stack.enter_context(Client(self.scheduler, timeout="15s"))
                except (OSError, TimeoutError, ValueError) as exc:
                    raise ExontaInputError(f"cannot connect to the Dask scheduler at {self.scheduler} ({exc}); "
                                           f"check the address (tcp://HOST:PORT) and that it is running") from None
            else:
                n = int(self.workers or os.cpu_count() or 1)
                cluster = self._stack.enter_context(
                    LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                 silence_logs=logging.ERROR))
                self._client = self._stack.enter_context(Client(cluster))
        return self._client

    def close(self) -> None:
        self._stack.close()


def _is_inside(path: Path, parent: Path) -> bool:
    try:
        return os.path.commonpath([os.path.realpath(path), os.path.realpath(parent)]) == os.path.realpath(parent)
    except ValueError:
        return False


def _remove_stale_temporaries(sample_dirs: set[Path]) -> None:
    """Delete half-written result folders left by a killed run (we hold the OUT lock, so none is live)."""
    import re
    import shutil

    pat = re.compile(r"^\..+\.(tmp|old)-[0-9a-f]{8}$")
    for d in sample_dirs:
        try:
            children = list(d.iterdir())
        except OSError:
            continue
        for c in children:
            if pat.match(c.name) and c.is_dir() and not c.is_symlink():
                shutil.rmtree(c, ignore_errors=True)
            elif c.name.startswith(".") and (".tmp-" in c.name or c.name.endswith(".tmp")) and c.is_file():
                with contextlib.suppress(OSError):
                    c.unlink()


def _numbers(summary: dict[str, Any] | None) -> dict[str, Any]:
    s = summary or {}
    return {"mode_nm": (s.get("size_nm") or {}).get("mode"), "d50_nm": (s.get("size_nm") or {}).get("d50"),
            "concentration_per_ml": (s.get("concentration_per_ml") or {}).get("value")}


# ============================================================================ the batch

def run_batch(
    root: str | Path,
    out: str | Path,
    *,
    config_file: str | Path | None = None,
    calibration: str | Path | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    acquisition: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    client: Any = None,
    progress: Callable[[int, int, str], Any] | None = None,
    task: Callable[[dict[str, Any]], dict[str, Any]] = run_video,
    pool_task: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> BatchReport:
    """Analyse every video under ``root`` into ``out`` (see the module docstring).

    Parameters
    ----------
    root : path
        Acquisition folder (with an optional ``samples.csv`` manifest).
    out : path
        Output folder: ``OUT/<lot>/<sample>/<video>/`` result folders,
        ``OUT/<lot>/<sample>/sample_summary.json``, ``OUT/catalog.sqlite``,
        ``OUT/results.csv`` and ``OUT/results.parquet``.
    config_file : path, optional
        TOML configuration applied to every video (sidecars still apply below it).
    calibration : path, optional
        Detection-volume calibration JSON for every video.
    scheduler : str, optional
        Address of an existing Dask scheduler; default: a local cluster.
    workers : int, optional
        Worker processes of the local cluster (default: number of CPU cores).
    acquisition : dict, optional
        Acquisition values for every video (manifest values take precedence).
    overrides : dict, optional
        Analysis parameters for every video, ``{"detect": {"threshold_snr": 6}}``.
    force : bool
        Re-analyse every video even when an up-to-date result exists.
    client : distributed.Client, optional
        Use this client (tests, notebooks); ``scheduler``/``workers`` are ignored.
    progress : callable, optional
        ``progress(done, total, stage)`` over the videos.
    task, pool_task : callable
        The per-video and per-sample tasks (default :func:`run_video`,
        :func:`exonta.batch.pool.pool_sample`); for tests. They must be
        importable by the workers.

    Returns
    -------
    BatchReport

    Raises
    ------
    ExontaInputError
        ROOT missing, bad manifest, bad config/calibration file, no video,
        OUT not writable, scheduler unreachable, another batch writing to OUT.

    Notes
    -----
    The local cluster starts worker *processes* (spawn): a script calling
    ``run_batch`` must guard its entry point with ``if __name__ == "__main__":``
    like any multiprocessing program. Only one batch may write into an OUT
    folder at a time (an OS file lock, released even when the run is killed).
    """
    from .. import __version__
    from ..config import load_config
    from .pool import pool_sample

    root = Path(root)
    out = Path(out)
    if workers is not None and workers < 1:
        raise ExontaInputError(f"--workers must be at least 1, got {workers}")
    entries, notes = discover(root, out)
    root = Path(os.path.realpath(root))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExontaInputError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    out = Path(os.path.realpath(out))
    if config_file is not None:
        config_file = Path(config_file).resolve()
    overrides = json.loads(json.dumps(overrides or {}))
    cal_sha = None
    if calibration is not None:
        calibration = Path(calibration).resolve()
        if not calibration.is_file():
            raise ExontaInputError(f"calibration file not found: {calibration}")
        from ..analysis.concentration import load_calibration

        load_calibration(calibration)  # a bad calibration is bad input for the whole batch (exit 2)
        cal_sha = _file_sha256(calibration)
        overrides.setdefault("concentration", {})["calibration"] = str(calibration)
    # validate the global configuration once: a bad --config is bad input for the whole batch
    load_config(None, config_file, explicit_acquisition=_DUMMY_ACQ, overrides=overrides)
    acquisition = {k: v for k, v in (acquisition or {}).items() if v is not None}

    with _output_lock(out), Catalog(out / CATALOG_NAME) as cat:
        run_id = cat.start_run(
            root=str(root), out=str(out), exonta_version=__version__,
            parameters={"config_file": str(config_file) if config_file else None,
                        "calibration": str(calibration) if calibration else None, "overrides": overrides,
                        "acquisition": acquisition, "force": force},
            scheduler=scheduler or ("client" if client is not None else "local"),
            n_workers=workers, n_videos=len(entries))
        report = BatchReport(run_id=run_id, out=out, notes=list(notes))
        lazy = _LazyClient(client, scheduler, workers)
        if scheduler and workers and client is None:
            report.notes.append("--workers is ignored with --scheduler (the cluster has its own workers)")
        status = "interrupted"
        try:
            _run(cat, report, entries, root, out, config_file, acquisition, overrides, cal_sha, force,
                 lazy, progress, task, pool_task or pool_sample)
            status = "finished"
        except Exception:
            status = "failed"
            raise
        finally:
            try:
                lazy.close()
            finally:
                cat.finish_run(run_id, n_ok=report.count("ok") + report.count("adopted"),
                               n_failed=len(report.failures), n_skipped=report.count("skipped"), status=status)
                with contextlib.suppress(Exception):
                    cat.export(out)
    return report


def _run(cat: Catalog, report: BatchReport, entries: list[VideoEntry], root: Path, out: Path,
         config_file: Path | None, acquisition: dict[str, Any], overrides: dict[str, Any], cal_sha: str | None,
         force: bool, lazy: _LazyClient, progress, task, pool_task) -> None:
    from ..io.results import read_summary

    total = len(entries)
    done = 0

    def tick() -> None:
        if progress is not None:
            progress(done, total, "videos")

    _remove_stale_temporaries({out / e.lot / e.sample for e in entries})
    # per-entry state: video_id, key, status, result_dir
    state: dict[int, dict[str, Any]] = {}
    # videos are submitted as soon as their key is known, so workers start while the client still hashes
    futures: dict[Any, tuple[str, Any]] = {}

    def submit(fn: Callable[[dict[str, Any]], dict[str, Any]], spec: dict[str, Any], kind: str, ident: Any):
        f = lazy.get().submit(fn, spec, pure=False, key=f"exonta-{kind}-{os.urandom(6).hex()}")
        futures[f] = (kind, ident)
        return f

    tick()
    for i, e in enumerate(entries):
        sample_dir = out / e.lot / e.sample
        result_dir = sample_dir / e.name
        if not _is_inside(result_dir, out):  # names are safe; this is a second line of defence
            raise ExontaInputError(f"the result folder of {e.rel} would be outside {out}")
        result_rel = result_dir.relative_to(out).as_posix()
        explicit = {**acquisition, **e.acquisition}
        st: dict[str, Any] = {"entry": e, "sample_dir": sample_dir, "result_dir": result_dir,
                              "result_rel": result_rel, "key": None, "status": None}
        state[i] = st
        abspath = str(e.path)
        try:
            fp = video_fingerprint(e.path)
            sha = cat.cached_sha256(abspath, fp) or video_sha256(e.path)
        except OSError as exc:
            fp, sha = None, None
            st["error"] = f"cannot read the video: {exc.strerror or exc}"
        st["sha"] = sha
        st["video_id"] = cat.upsert_video(path=abspath, rel_path=e.rel, name=e.name, lot=e.lot, sample=e.sample,
                                          fingerprint=fp, video_sha256=sha, acquisition=e.acquisition)
        if sha is not None:
            try:
                settings = resolve_settings(e.path, config_file, explicit, overrides)
                st["parameters_hash"] = settings["parameters_hash"]
            except ExontaInputError as exc:
                st["error"] = str(exc)
                settings = None
        if st.get("error"):
            _record(cat, report, st, {"status": "failed", "error": st["error"]})
            done += 1
            tick()
            continue
        key = resume_key(sha, settings, cal_sha, result_rel)
        st["key"] = key
        if not force:
            prev = cat.latest_result(st["video_id"])
            summary = None
            if (result_dir / "summary.json").is_file():
                with contextlib.suppress(ExontaInputError, OSError):
                    summary = read_summary(result_dir)
            if (prev is not None and prev["status"] == "ok" and prev["resume_key"] == key and summary is not None
                    and summary.get("parameters_hash") == settings["parameters_hash"]):
                st["status"] = "skipped"
                report.outcomes.append(VideoOutcome(e.rel, e.lot, e.sample, e.name, "skipped",
                                                    result_dir=result_rel, **_numbers(summary)))
                done += 1
                tick()
                continue
            if summary is not None and summary_matches(summary, sha, settings) and (
                    prev is None or prev["resume_key"] != key or prev["status"] != "ok"):
                _record(cat, report, st, {"status": "ok", "summary": summary, "result_dir": str(result_dir),
                                          "elapsed_s": None, "started_at": None}, adopted=True)
                done += 1
                tick()
                continue
        spec = {"video": abspath, "out_dir": str(sample_dir), "name": e.name,
                "config_file": str(config_file) if config_file else None, "acquisition": explicit,
                "overrides": overrides}
        submit(task, spec, "video", i)

    # samples: which entries belong to each, and how many are still pending
    samples: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(entries):
        samples.setdefault(e.sample_key, []).append(i)
    pending = {k: sum(1 for i in idx if state[i]["status"] is None) for k, idx in samples.items()}

    def pool_spec(k: tuple[str, str]) -> dict[str, Any] | None:
        idx = samples[k]
        vids = []
        for i in idx:
            s = state[i]
            vids.append({"name": s["entry"].name, "rel": s["entry"].rel,
                         "status": "ok" if s["status"] in ("ok", "skipped", "adopted") else "failed",
                         "result_dir": str(s["result_dir"]) if s["status"] in ("ok", "skipped", "adopted") else None,
                         "error": s.get("error"), "key": s.get("key")})
        from .. import __version__

        pkey = hashlib.sha256(json.dumps(
            {"v": __version__, "videos": sorted((v["name"], v["status"], v["key"] or "") for v in vids)},
            sort_keys=True).encode()).hexdigest()[:32]
        row = cat.sample(*k)
        sample_dir = out / k[0] / k[1]
        if (not force and row is not None and row["pooled_key"] == pkey
                and (sample_dir / "sample_summary.json").is_file()):
            return None
        return {"lot": k[0], "sample": k[1], "sample_dir": str(sample_dir), "pooled_key": pkey, "videos": vids}

    def record_pool(k: tuple[str, str], res: dict[str, Any]) -> None:
        fields = dict(res.get("fields") or {})
        if res.get("summary_path"):
            fields["summary_path"] = Path(res["summary_path"]).relative_to(out).as_posix()
        if res.get("status") != "ok":
            fields = {"pooled_error": res.get("error"), "pooled_key": None}
            report.notes.append(f"pooling {k[0]}/{k[1]} failed: {res.get('error')}")
        cat.update_sample(k[0], k[1], fields)
        report.samples.append({"lot": k[0], "sample": k[1], **fields})

    pool_specs_ready = [(k, pool_spec(k)) for k, n in pending.items() if n == 0]

    def note_unchanged(k: tuple[str, str]) -> None:
        row = cat.sample(*k)
        report.samples.append({"lot": k[0], "sample": k[1], **{kk: row[kk] for kk in row.keys()
                                                               if kk not in ("sample_id", "lot_id", "name")}})

    for k, s in pool_specs_ready:
        if s is None:
            note_unchanged(k)
        else:
            submit(pool_task, s, "pool", k)
    if not futures:
        return

    from distributed import as_completed

    ac = as_completed(list(futures))
    for fut in ac:
        kind, ident = futures.pop(fut)
        try:
            res = fut.result()
        except Exception as exc:  # noqa: BLE001 - a worker died (segfault, OOM kill ...)
            res = {"status": "failed", "error": f"the worker running this task failed ({type(exc).__name__}: "
                                                f"{exc})"}
        fut.release()
        if kind == "video":
            st = state[ident]
            if res.get("status") == "ok":
                res["result_dir"] = str(st["result_dir"]) if not res.get("result_dir") else res["result_dir"]
            _record(cat, report, st, res)
            done += 1
            tick()
            k = st["entry"].sample_key
            pending[k] -= 1
            if pending[k] == 0:
                spec = pool_spec(k)
                if spec is not None:
                    ac.add(submit(pool_task, spec, "pool", k))
                else:
                    note_unchanged(k)
        else:
            if res.get("status") != "ok" and "fields" not in res:
                res = {"status": "failed", "error": res.get("error"), "fields": {}, "summary_path": None}
            record_pool(ident, res)


def _record(cat: Catalog, report: BatchReport, st: dict[str, Any], res: dict[str, Any],
            adopted: bool = False) -> None:
    """Commit one video's result row and note the outcome."""
    e: VideoEntry = st["entry"]
    ok = res.get("status") == "ok"
    summary = res.get("summary") if ok else None
    result_rel = None
    if ok:
        result_rel = Path(res["result_dir"]).resolve().relative_to(report.out).as_posix() \
            if _is_inside(Path(res["result_dir"]), report.out) else str(res["result_dir"])
    cat.add_result(video_id=st["video_id"], run_id=report.run_id, status="ok" if ok else "failed",
                   error=None if ok else (res.get("error") or "unknown error"), resume_key=st.get("key"),
                   summary=summary, result_dir=result_rel, elapsed_s=res.get("elapsed_s"),
                   started_at=res.get("started_at"), adopted=adopted, input_sha256=st.get("sha"),
                   parameters_hash=st.get("parameters_hash"))
    status = ("adopted" if adopted else "ok") if ok else "failed"
    st["status"] = status
    if not ok:
        st["error"] = res.get("error") or "unknown error"
    report.outcomes.append(VideoOutcome(e.rel, e.lot, e.sample, e.name, status, error=st.get("error") if not ok
                                        else None, result_dir=result_rel, **_numbers(summary)))
