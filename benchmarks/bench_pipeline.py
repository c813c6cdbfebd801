"""End-to-end speed: ``exonta analyze`` vs a trackpy pipeline on one NanoSight-length video, same run.

A script, not a test::

    python benchmarks/bench_pipeline.py [--frames 1500] [--trackpy-frames K] [--workdir benchmarks/_out]

Target (issue 4): a 1500-frame 1024 × 1024 8-bit video analysed in ≤ 10 s on 2
cores, ≥ 20× faster than trackpy (batch + link + per-particle MSD).

Video: ``exonta.simulate`` (100 nm polystyrene beads, defaults of
:class:`~exonta.simulate.SimulationConfig`: 0.166 µm/px, 30 fps, σ_PSF 1.5 px),
written once as an uncompressed OME-TIFF to ``--workdir`` and reused.

exonta
  * API: :func:`exonta.pipeline.prepare` + :func:`~exonta.pipeline.analyze`,
    *warm*: a warm-up analysis of the first 40 frames runs first (its first
    call includes numba JIT / cache loading: reported as the JIT overhead).
  * CLI: ``exonta analyze VIDEO --out DIR -q`` in a fresh subprocess (cold:
    interpreter start, imports, numba cache load, result folder written);
    its peak RSS is the "peak RSS" reported.

trackpy (0.7), chosen to be fair:
  * ``trackpy.batch(frames, 7, minmass=M, engine='numba', processes='auto')``,
    diameter 7 = smallest odd ≥ 4σ+1 with σ = 1.5 px; ``M`` is chosen on the
    first frames so trackpy finds as many spots per frame as exonta did;
  * ``trackpy.link(features, R, memory=2)`` with exonta's physics search range
    ``R = exonta.track.search_range_px(acq, LinkParams())``, then
    ``trackpy.filter_stubs`` with exonta's minimum track length;
  * per-particle MSD: ``trackpy.imsd`` (lags 1..10), a straight-line fit of
    the first 4 lags (MSD = 4DΔt + offset, the offset absorbs localisation
    noise) → D → diameter by Stokes–Einstein (same viscosity/temperature).
  * ``--trackpy-frames K`` times trackpy on the first K frames only and
    extrapolates linearly to the full video (said so in the output).
The frames given to trackpy are a memory map of the same TIFF (reading is
inside its timing, as exonta's reading is inside exonta's).

CPU time (process + reaped children, all threads) is printed beside wall
time: the machine may be shared, and the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIGMA_PX = 1.5
TRUE_DIAMETER_NM = 100.0


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def make_video(workdir: Path, n_frames: int, conc: float) -> tuple[Path, dict]:
    from exonta.simulate import SimulationConfig, write_simulation

    name = f"nta_{n_frames}f_1024_c{conc:.0e}".replace("+", "")
    tif = workdir / f"{name}.tif"
    truth = workdir / f"{name}.truth.json"
    if not (tif.exists() and truth.exists()):
        print(f"generating {tif} ({n_frames} frames, {conc:.2g}/mL) ...", flush=True)
        t = time.perf_counter()
        cfg = SimulationConfig(width_px=1024, height_px=1024, n_frames=n_frames, concentration_per_ml=conc,
                               seed=0)
        write_simulation(cfg, workdir, name, formats=("tif",))
        print(f"  generated in {time.perf_counter() - t:.1f} s", flush=True)
    return tif, json.loads(truth.read_text())


def run_exonta_api(tif: Path, config_file: Path | None = None):
    from exonta.pipeline import analyze, prepare

    video, cfg, warns, sources = prepare(tif, config_file=config_file)
    small = video.read_range(0, min(40, video.n_frames))
    t = time.perf_counter()
    analyze(small, cfg)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    analyze(small, cfg)
    t_second = time.perf_counter() - t
    video, cfg, warns, sources = prepare(tif, config_file=config_file)  # fresh handle, as a user would open it
    c0, t0 = cpu_s(), time.perf_counter()
    res = analyze(video, cfg, acquisition_sources=sources, warnings=warns)
    wall = time.perf_counter() - t0
    return res, wall, cpu_s() - c0, t_first - t_second, cfg


def run_exonta_cli(tif: Path, out: Path, config_file: Path | None = None) -> tuple[float, float, float, float]:
    exe = Path(sys.executable).with_name("exonta")
    cmd = [str(exe), "analyze", str(tif), "--out", str(out), "-q"] if exe.exists() else \
        [sys.executable, "-m", "exonta", "analyze", str(tif), "--out", str(out), "-q"]
    if config_file is not None:
        cmd += ["--config", str(config_file)]
    if out.exists():
        shutil.rmtree(out)
    # Peak memory: polled from /proc (ru_maxrss of a child is useless here: Linux carries the
    # parent's RSS at fork into it). VmHWM = peak resident set, which includes the pages of the
    # memory-mapped video; RssAnon = the process's own (heap) memory, its peak polled every 20 ms.
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    hwm = anon = 0.0
    status_file = Path(f"/proc/{proc.pid}/status")
    while True:
        try:
            for line in status_file.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm = max(hwm, float(line.split()[1]) / 1024.0)
                elif line.startswith("RssAnon:"):
                    anon = max(anon, float(line.split()[1]) / 1024.0)
        except (OSError, ValueError, IndexError):
            pass
        try:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)  # this child's own CPU time
        except ChildProcessError:
            break
        if pid:
            break
        time.sleep(0.02)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
    return wall, ru.ru_utime + ru.ru_stime, hwm, anon


def run_trackpy(tif: Path, n_frames: int, exonta_features, acq, link_params, sizing):
    import tifffile
    import trackpy as tp

    from exonta.physics import diameter_from_diffusion
    from exonta.track import search_range_px

    warnings.filterwarnings("ignore", module="trackpy")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    tp.quiet()
    diameter = int(np.ceil(4 * SIGMA_PX + 1)) | 1  # 7 px, odd

    # minmass: same detections per frame as exonta, tuned on the first 10 frames (not timed)
    frames_all = tifffile.memmap(tif)
    n_tune = 10
    target = int(np.sum(exonta_features["frame"].to_numpy() < n_tune))
    f0 = tp.batch(np.asarray(frames_all[:n_tune]), diameter, minmass=0, engine="numba", processes=1)
    masses = np.sort(f0["mass"].to_numpy())[::-1]
    minmass = float(masses[min(target, len(masses) - 1)]) if len(masses) else 0.0
    # warm numba once (not timed)
    tp.locate(np.asarray(frames_all[0]), diameter, minmass=minmass, engine="numba")
    del frames_all

    rho = search_range_px(acq, link_params)
    timings = {}
    c0 = cpu_s()
    t0 = time.perf_counter()
    frames = tifffile.memmap(tif)[:n_frames]
    feats = tp.batch(frames, diameter, minmass=minmass, engine="numba", processes="auto")
    timings["detect"] = time.perf_counter() - t0
    t = time.perf_counter()
    tracks = tp.link(feats, rho, memory=2)
    tracks = tp.filter_stubs(tracks, sizing.min_track_length)
    timings["link"] = time.perf_counter() - t
    t = time.perf_counter()
    fps = acq.fps
    im = tp.imsd(tracks, acq.pixel_size_um, fps, max_lagtime=10)  # µm², index lag time (s)
    lag = im.index.to_numpy()[:4]
    msd = im.to_numpy()[:4]
    ok = np.all(np.isfinite(msd), axis=0)
    slope = np.polyfit(lag, msd[:, ok], 1)[0]  # µm²/s
    d = slope / 4.0
    d = d[d > 0]
    diam = diameter_from_diffusion(d, acq.temperature_c, acq.viscosity_mpas)
    timings["diffusion"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    cpu = cpu_s() - c0
    return dict(timings=timings, cpu=cpu, minmass=minmass, diameter=diameter, rho=rho,
                n_features=len(feats), n_tracks=int(tracks["particle"].nunique()), n_sized=len(diam),
                median_nm=float(np.median(diam)) if len(diam) else float("nan"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--trackpy-frames", type=int, default=None,
                    help="time trackpy on the first K frames and extrapolate linearly")
    ap.add_argument("--concentration", type=float, default=7e8, help="particles/mL of the simulation")
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "_out")
    ap.add_argument("--no-trackpy", action="store_true")
    ap.add_argument("--cleanup", action="store_true", help="delete the generated video at the end")
    ap.add_argument("--search-binning", type=int, choices=[1, 2], default=1,
                    help="exonta's candidate search: 1 = full resolution (default), 2 = on the 2x2-binned frame "
                         "(passed to both the API and the CLI as a config file with [detect] search_binning)")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    config_file = None
    if args.search_binning != 1:
        config_file = args.workdir / f"search_binning_{args.search_binning}.toml"
        config_file.write_text(f"[detect]\nsearch_binning = {args.search_binning}\n")

    print(f"exonta end-to-end benchmark; cores={os.cpu_count()}, load avg (1/5/15 min) at start: {load()}")
    tif, truth = make_video(args.workdir, args.frames, args.concentration)
    print(f"video: {tif.name}, {args.frames} × 1024 × 1024 uint8, {tif.stat().st_size / 2**20:.0f} MiB; "
          f"truth: {truth['mean_in_field_per_frame']:.0f} particles in field/frame, "
          f"{truth['mean_in_field_within_sheet_sigma_per_frame']:.0f} within ±1σ of the sheet")

    from exonta.config import LinkParams

    print(f"exonta candidate search: {'2x2-binned frame' if args.search_binning == 2 else 'full resolution'}")
    res, wall, cpu, jit, cfg = run_exonta_api(tif, config_file)
    rss_api = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    tim = dict(res.summary()["timings_s"])
    n_feat = len(res.features)
    stats = res.distribution.stats
    print(f"exonta API (warm): {wall:.2f} s wall, {cpu:.2f} s CPU; JIT/cache-load overhead of a cold first "
          f"call: {jit:.2f} s; {n_feat / args.frames:.0f} detections/frame, "
          f"{int(res.particles['valid'].sum())} valid tracks; load avg now {load()}")
    cli_wall, cli_cpu, cli_rss, cli_anon = run_exonta_cli(tif, args.workdir / "cli_out", config_file)
    print(f"exonta CLI (cold process, writes the result folder): {cli_wall:.2f} s wall, {cli_cpu:.2f} s CPU, "
          f"peak RSS {cli_rss:.0f} MiB (peak anonymous {cli_anon:.0f} MiB); load avg now {load()}")

    tp_res = None
    if not args.no_trackpy:
        k = min(args.trackpy_frames or args.frames, args.frames)
        link_params = cfg.link if cfg.link is not None else LinkParams()
        tp_res = run_trackpy(tif, k, res.features, cfg.acquisition, link_params, cfg.sizing)
        scale = args.frames / k
        if k < args.frames:
            print(f"trackpy timed on the first {k} frames and EXTRAPOLATED linearly ×{scale:.2f} to "
                  f"{args.frames} frames")
        tp_res["timings"] = {s: v * scale for s, v in tp_res["timings"].items()}
        tp_res["cpu"] *= scale
        print(f"trackpy: diameter={tp_res['diameter']} minmass={tp_res['minmass']:.0f} "
              f"search_range={tp_res['rho']:.2f} px memory=2; {tp_res['n_features'] / k:.0f} detections/frame, "
              f"{tp_res['n_tracks']} tracks ≥ {cfg.sizing.min_track_length} positions, {tp_res['n_sized']} sized; "
              f"load avg now {load()}")

    tpt = tp_res["timings"] if tp_res else {}
    print()
    print(f"{'stage':<14}{'exonta s':>10}{'trackpy s':>11}{'ratio':>9}")
    for stage in ("open", "detect", "link", "diffusion", "distribution", "concentration", "total"):
        e = tim.get(stage, float("nan"))
        t = tpt.get(stage)
        ts = f"{t:>11.2f}" if t is not None else f"{'—':>11}"
        rs = f"{t / e:>8.1f}×" if t is not None and e > 0 else f"{'':>9}"
        print(f"{stage:<14}{e:>10.2f}{ts}{rs}")
    print(f"{'CPU total':<14}{cpu:>10.2f}" + (f"{tp_res['cpu']:>11.2f}{tp_res['cpu'] / cpu:>8.1f}×" if tp_res else ""))
    print(f"{'CLI wall':<14}{cli_wall:>10.2f}" +
          (f"{tpt['total']:>11.2f}{tpt['total'] / cli_wall:>8.1f}×" if tp_res else ""))
    print(f"frames/s: exonta API {args.frames / wall:.0f}, exonta CLI {args.frames / cli_wall:.0f}"
          + (f", trackpy {args.frames / tpt['total']:.1f}" if tp_res else ""))
    print(f"peak RSS of the exonta CLI process: {cli_rss:.0f} MiB; peak anonymous (heap) memory {cli_anon:.0f} MiB; "
          f"this process's peak after the API runs {rss_api:.0f} MiB")
    print(f"size of the simulated {TRUE_DIAMETER_NM:.0f} nm beads: exonta mode {stats.get('mode', float('nan')):.1f} nm, "
          f"D50 {stats.get('d50', float('nan')):.1f} nm"
          + (f"; trackpy median of per-particle diameters {tp_res['median_nm']:.1f} nm" if tp_res else ""))
    def verdict(t: float) -> str:
        return (f"{t:.2f} s ({'MET' if t <= 10 else 'NOT met'})"
                + (f", {tpt['total'] / t:.1f}× trackpy ({'MET' if tpt['total'] / t >= 20 else 'NOT met'})"
                   if tp_res else ""))

    print(f"targets ≤ 10 s and ≥ 20× trackpy: `exonta analyze` (CLI, cold process, writes the result folder) "
          f"{verdict(cli_wall)}; API warm (analyze() after prepare()) {verdict(wall)}")
    print(f"load avg at end: {load()}")
    if args.cleanup:
        for p in args.workdir.glob(tif.stem + "*"):
            p.unlink()
        shutil.rmtree(args.workdir / "cli_out", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
