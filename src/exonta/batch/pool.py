"""Pool the replicate videos of one sample.

Two complementary summaries per sample, written to ``OUT/<lot>/<sample>/``:

* **between videos** — mean, standard deviation, standard error (SD/√n) and
  coefficient of variation (SD/mean) of the per-video mode, D50 and
  concentration: the replicate-to-replicate reproducibility;
* **pooled distribution** — the particles and tracks tables of all successful
  replicates concatenated (particle ids renumbered so they stay unique) and
  sized again with :func:`exonta.analysis.distribution.size_distribution`: more
  tracks, hence a smoother, better-resolved deconvolved distribution (Walker
  2012 ML/EM over all tracks). Pooling needs the replicates to share the
  acquisition physics (pixel size, frame rate, exposure, temperature,
  viscosity) and the sizing parameters; otherwise the pooled distribution is
  skipped with a note in ``sample_summary.json`` and only the between-video
  statistics are given.

Files: ``sample_summary.json`` (schema ``exonta.sample_summary/1``), the pooled
``size_distribution.csv`` and ``size_distribution.png``, each written
atomically; ``sample_summary.json`` is written last.

The task function :func:`pool_sample` is module-level and takes a plain dict so
it can run on a Dask worker.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..io.results import atomic_write_bytes, finite_or_none, read_result_tables, read_summary, to_jsonable

__all__ = ["SAMPLE_SCHEMA", "between_video_stats", "combine_tables", "pool_sample", "same_acquisition"]

SAMPLE_SCHEMA = "exonta.sample_summary/1"
_PHYSICS = ("pixel_size_um", "fps", "exposure_s", "temperature_c", "viscosity_mpas")


def between_video_stats(values: list[float | None]) -> dict[str, Any]:
    """Mean, SD, SE = SD/√n and CV = SD/mean of per-video values (missing values ignored).

    Parameters
    ----------
    values : list of float or None
        One value per replicate video.

    Returns
    -------
    dict
        ``n``, ``mean``, ``sd`` (sample SD, ddof=1), ``se``, ``cv`` (None when
        undefined: n < 2 for sd/se/cv, mean == 0 for cv) and ``values``.
    """
    vals = []
    for v in values:
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            vals.append(f)
    n = len(vals)
    out: dict[str, Any] = {"n": n, "mean": None, "sd": None, "se": None, "cv": None, "values": vals}
    if n == 0:
        return out
    arr = np.asarray(vals, dtype=float)
    mean = float(arr.mean())
    out["mean"] = mean
    if n >= 2:
        sd = float(arr.std(ddof=1))
        out["sd"] = sd
        out["se"] = sd / math.sqrt(n)
        out["cv"] = sd / abs(mean) if mean != 0 else None
    return out


def _renumber(df: pd.DataFrame, mapping: dict[Any, int]) -> pd.Series:
    return df["particle"].map(mapping).astype("int64")


def combine_tables(parts: list[tuple[str, pd.DataFrame, pd.DataFrame | None]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concatenate per-video particles and tracks tables with unique particle ids.

    Parameters
    ----------
    parts : list of (video_name, particles, tracks)
        ``tracks`` may be None or empty.

    Returns
    -------
    particles, tracks : DataFrame
        ``particle`` renumbered ``0..n-1`` across videos (consistent between the
        two tables) and a ``video`` column naming the source video.
    """
    p_out, t_out = [], []
    offset = 0
    for name, particles, tracks in parts:
        ids = pd.unique(pd.concat([particles["particle"],
                                   tracks["particle"] if tracks is not None and len(tracks) else
                                   pd.Series([], dtype="int64")], ignore_index=True))
        mapping = {old: offset + i for i, old in enumerate(sorted(ids.tolist()))}
        offset += len(mapping)
        p = particles.copy()
        p["particle"] = _renumber(p, mapping) if len(p) else p["particle"].astype("int64")
        p["video"] = name
        p_out.append(p)
        if tracks is not None:
            t = tracks.copy()
            t["particle"] = _renumber(t, mapping) if len(t) else t["particle"].astype("int64")
            t["video"] = name
            t_out.append(t)
    particles_all = pd.concat(p_out, ignore_index=True) if p_out else pd.DataFrame()
    tracks_all = pd.concat(t_out, ignore_index=True) if t_out else pd.DataFrame()
    return particles_all, tracks_all


def same_acquisition(acquisitions: list[dict[str, Any]], rtol: float = 1e-6) -> bool:
    """Whether the replicates share the acquisition physics (dilution may differ)."""
    if not acquisitions:
        return True
    ref = acquisitions[0]
    for a in acquisitions[1:]:
        for k in _PHYSICS:
            x, y = ref.get(k), a.get(k)
            if x is None or y is None:
                if x is not y:
                    return False
                continue
            if not math.isclose(float(x), float(y), rel_tol=rtol, abs_tol=0.0):
                return False
    return True


def _atomic_plot(plot_fn: Callable[..., Any], dist: Any, path: Path, title: str) -> None:
    tmp = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        plot_fn(dist, tmp, title=title)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def pool_sample(spec: dict[str, Any], *, size_distribution_fn: Callable[..., Any] | None = None,
                plot_fn: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Pool the replicate videos of one sample and write its summary files (a Dask task).

    Parameters
    ----------
    spec : dict
        ``lot``, ``sample``, ``sample_dir`` (absolute folder), ``pooled_key``
        and ``videos``: a list of dicts with ``name``, ``rel`` (path relative to
        ROOT), ``status`` (``"ok"``/``"failed"``), ``result_dir`` (absolute,
        for ok videos), ``error`` (for failed ones).
    size_distribution_fn, plot_fn : callable, optional
        Replace :func:`exonta.analysis.distribution.size_distribution` /
        ``plot_size_distribution`` (tests).

    Returns
    -------
    dict
        ``status`` ("ok" or "failed"), ``error``, ``summary_path`` and the
        catalog ``samples`` fields (``n_videos``, ``mode_mean_nm`` ...).
        Never raises.
    """
    try:
        return _pool_sample(spec, size_distribution_fn, plot_fn)
    except Exception as exc:  # noqa: BLE001 - failure isolation: report, never crash the batch
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "summary_path": None, "fields": {}}


def _pool_sample(spec: dict[str, Any], size_distribution_fn, plot_fn) -> dict[str, Any]:
    from .. import __version__
    from ..config import Acquisition, SizingParams
    from .catalog import utcnow

    sample_dir = Path(spec["sample_dir"])
    sample_dir.mkdir(parents=True, exist_ok=True)
    videos = list(spec.get("videos") or [])
    ok_summaries: list[tuple[dict[str, Any], dict[str, Any]]] = []
    video_rows = []
    for v in videos:
        row = {"name": v.get("name"), "video": v.get("rel"), "status": v.get("status"), "error": v.get("error"),
               "result_dir": None}
        if v.get("status") == "ok" and v.get("result_dir"):
            s = read_summary(v["result_dir"])
            ok_summaries.append((v, s))
            row.update({
                "result_dir": os.path.relpath(v["result_dir"], sample_dir),
                "input_sha256": (s.get("input") or {}).get("sha256"),
                "parameters_hash": s.get("parameters_hash"),
                "mode_nm": (s.get("size_nm") or {}).get("mode"),
                "d50_nm": (s.get("size_nm") or {}).get("d50"),
                "concentration_per_ml": (s.get("concentration_per_ml") or {}).get("value"),
                "n_valid_tracks": (s.get("counts") or {}).get("n_valid_tracks"),
                "dilution": (s.get("acquisition") or {}).get("dilution"),
            })
        video_rows.append(row)

    between = {
        "mode_nm": between_video_stats([(s.get("size_nm") or {}).get("mode") for _, s in ok_summaries]),
        "d50_nm": between_video_stats([(s.get("size_nm") or {}).get("d50") for _, s in ok_summaries]),
        "concentration_per_ml": between_video_stats(
            [(s.get("concentration_per_ml") or {}).get("value") for _, s in ok_summaries]),
    }
    dilutions = {(s.get("acquisition") or {}).get("dilution") for _, s in ok_summaries}
    dilution = next(iter(dilutions)) if len(dilutions) == 1 else None

    pooled: dict[str, Any] | None = None
    pooled_error: str | None = None
    if not ok_summaries:
        pooled_error = "no replicate video of this sample was analysed successfully"
    else:
        acqs = [s.get("acquisition") or {} for _, s in ok_summaries]
        sizings = [json.dumps((s.get("parameters") or {}).get("sizing"), sort_keys=True) for _, s in ok_summaries]
        if not same_acquisition(acqs):
            pooled_error = ("the replicate videos were recorded with different acquisition settings; "
                            "no pooled distribution (see the per-video results)")
        elif len(set(sizings)) != 1:
            pooled_error = "the replicate videos used different sizing parameters; no pooled distribution"
    csv_written = png_written = False
    if pooled_error is None:
        if size_distribution_fn is None or plot_fn is None:
            from ..analysis import distribution as _dist

            size_distribution_fn = size_distribution_fn or _dist.size_distribution
            plot_fn = plot_fn or _dist.plot_size_distribution
        parts = []
        for v, _ in ok_summaries:
            tables = read_result_tables(v["result_dir"])
            if "particles" not in tables:
                raise FileNotFoundError(f"particles.csv missing in {v['result_dir']}")
            parts.append((str(v.get("name")), tables["particles"], tables.get("tracks")))
        particles, tracks = combine_tables(parts)
        first = ok_summaries[0][1]
        acq = Acquisition(**first["acquisition"])
        sizing = SizingParams(**first["parameters"]["sizing"])
        dist = size_distribution_fn(particles, acq, sizing, tracks=tracks)
        table = dist.table
        atomic_write_bytes(sample_dir / "size_distribution.csv", table.to_csv(index=False).encode("utf-8"))
        csv_written = True
        stats = to_jsonable(dict(getattr(dist, "stats", {}) or {}))
        title = f"{spec.get('lot')} / {spec.get('sample')} — pooled {len(parts)} video(s)"
        _atomic_plot(plot_fn, dist, sample_dir / "size_distribution.png", title)
        png_written = True
        n_valid = int(particles["valid"].astype(bool).sum()) if "valid" in particles else int(len(particles))
        pooled = {"n_videos": len(parts), "n_tracks": int(len(particles)), "n_valid_tracks": n_valid,
                  "stats": stats, "acquisition": first["acquisition"],
                  "parameters_hash": first.get("parameters_hash")}

    if pooled is None:  # drop a pooled distribution left by an earlier run: it would be stale
        for stale in ("size_distribution.csv", "size_distribution.png"):
            try:
                (sample_dir / stale).unlink()
            except FileNotFoundError:
                pass

    n_ok = len(ok_summaries)
    n_failed = sum(1 for v in videos if v.get("status") != "ok")
    summary = {
        "schema": SAMPLE_SCHEMA,
        "exonta_version": __version__,
        "created": utcnow(),
        "lot": spec.get("lot"),
        "sample": spec.get("sample"),
        "pooled_key": spec.get("pooled_key"),
        "n_videos": len(videos),
        "n_ok": n_ok,
        "n_failed": n_failed,
        "dilution": dilution,
        "videos": video_rows,
        "between_videos": between,
        "pooled": pooled,
        "pooled_error": pooled_error,
        "files": {"size_distribution_csv": "size_distribution.csv" if csv_written else None,
                  "size_distribution_png": "size_distribution.png" if png_written else None},
    }
    path = sample_dir / "sample_summary.json"
    atomic_write_bytes(path, json.dumps(to_jsonable(summary), indent=2, ensure_ascii=False).encode("utf-8"))

    pstats = (pooled or {}).get("stats") or {}
    fields = {
        "dilution": dilution, "n_videos": len(videos), "n_ok": n_ok, "n_failed": n_failed,
        "mode_mean_nm": between["mode_nm"]["mean"], "mode_se_nm": between["mode_nm"]["se"],
        "mode_cv": between["mode_nm"]["cv"],
        "d50_mean_nm": between["d50_nm"]["mean"], "d50_se_nm": between["d50_nm"]["se"],
        "d50_cv": between["d50_nm"]["cv"],
        "concentration_mean_per_ml": between["concentration_per_ml"]["mean"],
        "concentration_se_per_ml": between["concentration_per_ml"]["se"],
        "concentration_cv": between["concentration_per_ml"]["cv"],
        "pooled_mode_nm": finite_or_none(pstats.get("mode")), "pooled_mean_nm": finite_or_none(pstats.get("mean")),
        "pooled_d10_nm": finite_or_none(pstats.get("d10")), "pooled_d50_nm": finite_or_none(pstats.get("d50")),
        "pooled_d90_nm": finite_or_none(pstats.get("d90")),
        "pooled_n_tracks": (pooled or {}).get("n_valid_tracks"),
        "pooled_key": spec.get("pooled_key"),
        "pooled_error": pooled_error,
    }
    return {"status": "ok", "error": None, "summary_path": str(path), "fields": fields,
            "between_videos": between}


