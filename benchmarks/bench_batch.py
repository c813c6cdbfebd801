"""Batch throughput: videos per minute with 1 and 2 Dask worker processes on the same folder.

Usage::

    PYTHONPATH=src python benchmarks/bench_batch.py [--videos 8] [--frames 100] [--width 256] [--height 192]

For each worker count a fresh ``LocalCluster(n_workers=N, threads_per_worker=1,
processes=True)`` is started (timed separately), warmed up on one small video
per worker (numba compilation happens once per worker process), then
``exonta.batch.run_batch(..., force=True)`` analyses the same simulated folder.
The table gives the wall time of the batch and videos/minute.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path


def make_folder(root: Path, n_videos: int, n_frames: int, width: int, height: int, seed0: int = 0) -> None:
    from exonta.simulate import Component, SimulationConfig, simulate, write_simulation

    for i in range(n_videos):
        cfg = SimulationConfig(width_px=width, height_px=height, n_frames=n_frames, concentration_per_ml=3e9,
                               components=[Component(diameter_nm=150.0)], seed=seed0 + i)
        write_simulation(simulate(cfg), root / "lot" / f"s{i % 2}", f"v{i:03d}", formats=("tif",))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    from distributed import Client, LocalCluster
    from rich.console import Console
    from rich.table import Table

    from exonta.batch.run import run_batch

    tmp = Path(tempfile.mkdtemp(prefix="exonta-bench-batch-"))
    try:
        data, warm = tmp / "data", tmp / "warm"
        make_folder(data, args.videos, args.frames, args.width, args.height)
        make_folder(warm, max(args.workers), 40, 160, 120, seed0=1000)
        rows = []
        for n in args.workers:
            t0 = time.perf_counter()
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=logging.ERROR)
            client = Client(cluster)
            t_start = time.perf_counter() - t0
            try:
                run_batch(warm, tmp / f"warm-out-{n}", client=client, force=True)
                t1 = time.perf_counter()
                rep = run_batch(data, tmp / f"out-{n}", client=client, force=True)
                wall = time.perf_counter() - t1
            finally:
                client.close()
                cluster.close()
            n_ok = sum(o.succeeded for o in rep.outcomes)
            rows.append((n, t_start, wall, n_ok, 60.0 * len(rep.outcomes) / wall))
        t = Table(title=f"exonta batch: {args.videos} videos × {args.frames} frames {args.width}×{args.height}")
        for c in ("workers", "cluster start (s)", "batch wall (s)", "videos ok", "videos/min", "speed-up"):
            t.add_column(c, justify="right")
        base = rows[0][4]
        for n, ts, wall, ok, vpm in rows:
            t.add_row(str(n), f"{ts:.1f}", f"{wall:.1f}", f"{ok}/{args.videos}", f"{vpm:.1f}", f"{vpm / base:.2f}×")
        Console().print(t)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
