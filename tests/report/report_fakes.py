"""Fake-but-schema-valid batch outputs and result folders for the report tests (no video analysis needed)."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ACQ = {"pixel_size_um": 0.166, "fps": 30.0, "exposure_s": 0.02, "temperature_c": 22.0, "viscosity_mpas": 0.9544,
       "dilution": 1000.0}
PARAMS = {"detect": {"threshold_snr": 5.0, "psf_sigma_px": 1.6}, "link": {"search_range_px": 6.0, "memory": 2},
          "sizing": {"n_bins": 60, "bootstrap": 50}, "concentration": {"nominal_depth_um": 10.0}}


def size_table(mode_nm: float, gsd: float = 1.3) -> pd.DataFrame:
    """A lognormal number distribution on a 20-600 nm grid (deconvolved and raw columns)."""
    edges = np.geomspace(20.0, 600.0, 61)
    centres = np.sqrt(edges[1:] * edges[:-1])
    widths = np.diff(edges)
    mu = math.log(mode_nm) + math.log(gsd) ** 2  # the mode of a lognormal is exp(mu - s²)
    s = math.log(gsd)
    pdf = np.exp(-(np.log(centres) - mu) ** 2 / (2 * s * s)) / (centres * s * math.sqrt(2 * math.pi))
    pdf /= np.sum(pdf * widths)
    return pd.DataFrame({"diameter_nm": centres, "bin_width_nm": widths, "raw_density": pdf * 0.9 + 1e-5,
                         "deconvolved_density": pdf, "deconvolved_volume_density": pdf * centres ** 3 /
                         np.sum(pdf * centres ** 3 * widths), "concentration_per_ml": pdf * widths * 1e10})


def fake_summary(name: str, *, mode: float = 110.0, conc_stock: float = 2.0e10, dilution: float = 1000.0,
                 n_valid: int = 600, ppf: float = 40.0, drift=(0.1, -0.05), warnings=(), seed: int = 0,
                 created: str = "2026-01-05T10:00:00+00:00", limit: dict[str, Any] | None = None) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    sha = "".join(rng.choice(list("0123456789abcdef"), 64))
    size = {"mean": mode * 1.08, "mode": mode, "sd": mode * 0.3, "d10": mode * 0.72, "d50": mode * 1.04,
            "d90": mode * 1.55}
    size["ci95"] = {k: [v * 0.97, v * 1.03] for k, v in size.items()}
    if limit is not None:
        size["detection_limit"] = dict(limit)
    return {
        "schema": "exonta.summary/1", "exonta_version": "0.1.0", "created": created,
        "input": {"path": f"/data/{name}.tif", "sha256": sha, "n_frames": 900, "width": 640, "height": 480,
                  "dtype": "uint16"},
        "acquisition": {**ACQ, "dilution": dilution}, "acquisition_sources": {},
        "parameters": PARAMS, "parameters_hash": "3f2a9c0d1e4b5a67",
        "counts": {"n_frames": 900, "n_detections": int(ppf * 900), "n_tracks": int(n_valid * 1.4),
                   "n_valid_tracks": n_valid, "mean_particles_per_frame": ppf},
        "size_nm": size,
        "concentration_per_ml": {"value": conc_stock, "ci95_low": conc_stock * 0.9, "ci95_high": conc_stock * 1.1,
                                 "dilution": dilution, "method": "calibrated"},
        "drift_um_per_s": list(drift), "warnings": list(warnings),
    }


def write_result(folder: Path, summary: dict[str, Any]) -> None:
    from exonta.io.results import write_result_dir

    write_result_dir(folder.parent, folder.name,
                     {"summary.json": summary, "size_distribution.csv": size_table(summary["size_nm"]["mode"])})


def make_batch(out: Path, lots: dict[str, dict[str, list[dict[str, Any]]]], pooled: bool = True,
               failed: dict[tuple[str, str], str] | None = None) -> Path:
    """Write OUT/catalog.sqlite and the result folders.

    ``lots = {lot: {sample: [fake_summary kwargs per replicate]}}``; ``failed``
    adds one failed video per (lot, sample) with the given error.
    """
    from exonta.batch.catalog import Catalog
    from exonta.io.results import atomic_write_bytes, safe_name

    out.mkdir(parents=True, exist_ok=True)
    failed = failed or {}
    with Catalog(out / "catalog.sqlite") as cat:
        run = cat.start_run(root="/data", out=str(out), exonta_version="0.1.0", parameters={}, scheduler=None,
                            n_workers=1, n_videos=0)
        for lot, samples in lots.items():
            for sample, reps in samples.items():
                sdir = out / safe_name(lot) / safe_name(sample)
                modes = []
                for i, kw in enumerate(reps):
                    vname = f"{safe_name(sample)}_rep{i + 1}"
                    summ = fake_summary(vname, **{"seed": zlib.crc32(f"{lot}/{sample}/{i}".encode()), **kw})
                    write_result(sdir / vname, summ)
                    vid = cat.upsert_video(path=f"/data/{lot}/{sample}/{vname}.tif", rel_path=f"{lot}/{sample}/{vname}.tif",
                                           name=vname, lot=lot, sample=sample)
                    cat.add_result(video_id=vid, run_id=run, status="ok", summary=summ,
                                   result_dir=(sdir / vname).relative_to(out).as_posix())
                    modes.append(summ["size_nm"]["mode"])
                if (lot, sample) in failed:
                    vid = cat.upsert_video(path=f"/data/{lot}/{sample}/broken.tif", rel_path=f"{lot}/{sample}/broken.tif",
                                           name="broken", lot=lot, sample=sample)
                    cat.add_result(video_id=vid, run_id=run, status="failed", error=failed[(lot, sample)])
                if pooled and modes:
                    m = float(np.mean(modes))
                    stats = {"mean": m * 1.08, "mode": m, "sd": m * 0.3, "d10": m * 0.72, "d50": m * 1.04,
                             "d90": m * 1.55}
                    stats["ci95"] = {k: [v * 0.98, v * 1.02] for k, v in stats.items()}
                    ss = {"schema": "exonta.sample_summary/1", "lot": lot, "sample": sample,
                          "n_videos": len(reps), "n_ok": len(reps), "n_failed": 0,
                          "pooled": {"n_videos": len(reps), "n_tracks": 1000, "n_valid_tracks": 900, "stats": stats},
                          "pooled_error": None}
                    atomic_write_bytes(sdir / "sample_summary.json", json.dumps(ss).encode())
                    atomic_write_bytes(sdir / "size_distribution.csv", size_table(m).to_csv(index=False).encode())
                    cat.update_sample(lot, sample, {"summary_path": (sdir / "sample_summary.json").relative_to(out)
                                                    .as_posix(), "pooled_mode_nm": m})
        cat.finish_run(run, n_ok=0, n_failed=0, n_skipped=0)
    return out


SPEC_TOML = """
name = "EV release spec"
version = "1.2"

[[criterion]]
metric = "mode_nm"
min = 70
max = 150

[[criterion]]
metric = "d90_nm"
max = 300

[[criterion]]
metric = "concentration_per_ml"
min = 1e10

[[criterion]]
metric = "concentration_cv_pct"
max = 15

[[criterion]]
metric = "valid_tracks"
min = 1000

[system_suitability]
sample = "beads100"
diameter_nm = 100
tolerance_pct = 5
concentration_per_ml = 1e8
concentration_tolerance_pct = 20

[trend]
min_lots = 3
"""


def standard_lots(n_lots: int = 5, last_mode: float = 110.0, bead_mode: float = 101.0,
                  last_conc: float = 2.0e10) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """n_lots lots of one EV sample (3 replicates) + a bead standard each; the last lot can be perturbed."""
    lots: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for k in range(n_lots):
        last = k == n_lots - 1
        mode = last_mode if last else 108.0 + 2.0 * (k % 3)
        conc = last_conc if last else 2.0e10 * (1 + 0.03 * (k % 3))
        lots[f"LOT-{k + 1:03d}"] = {
            "EV-A": [dict(mode=mode + d, conc_stock=conc * f, seed=k * 10 + i)
                     for i, (d, f) in enumerate([(-1.0, 0.97), (0.0, 1.0), (1.0, 1.03)])],
            "beads100": [dict(mode=bead_mode if last else 100.5, conc_stock=1.0e8, dilution=100.0,
                              n_valid=800, seed=k * 10 + 7)],
        }
    return lots
