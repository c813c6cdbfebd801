"""Speed and accuracy of exonta.detect.locate_frames against trackpy.batch, in one run.

A script, not a test::

    PYTHONPATH=src python benchmarks/bench_detect.py [--quick] [--frames N] [--spots N] [--snr 3.5 5] [--binning 1 2] [--repeats 3] [--exonta-tiles 8]

Synthetic frames: pixel-integrated Gaussian spots (σ = 1.5 px, 500–3000
photons, ≥ 6 px apart, new random positions every frame) on 20 background
photons/px with Poisson noise; 16-bit adds a camera offset of 100 ADU, 8-bit
clips at 255. Same frames for both programs.

Fairness:
- trackpy: ``diameter`` = smallest odd integer ≥ 4σ+1 (7 px), ``engine='numba'``,
  default ``processes='auto'`` (multiprocessing on all cores) for frames/s,
  ``processes=1`` for its CPU time per frame; ``minmass`` tuned on the first frames to give the
  same precision as exonta (the smallest minmass whose precision ≥ exonta's).
- exonta: default DetectParams (static temporal-median background, Gaussian fit),
  all numba threads, at each threshold of ``--snr``: 3.5σ is the pipeline
  default (chosen for unbiased sizing: it keeps motion-blurred frames, and lets
  through single-frame noise maxima that tracking removes); 5σ is the operating
  point of a detection-only comparison at high precision. The one-time cost
  per video (temporal-median background) is reported separately ("once s"):
  it is amortised over a real video's hundreds of frames, not over the
  benchmark's few.
- both warmed up (JIT) on two frames before timing; wall-clock frames/s and
  CPU time per frame (process CPU time, all threads) are both reported: on a
  shared machine the CPU-time ratio is the more stable one;
- each program is timed ``--repeats`` times (default 3) on the same frames and
  its fastest run kept, wall and CPU time separately (trackpy's frames/s run and
  its one-process CPU-time run alike): single runs of this 2-core machine vary
  by ±20–30 %, and the fastest of a few is the least disturbed by other load.
  exonta is timed on the frames repeated ``--exonta-tiles`` times (default 8;
  one pass over 48 1024² frames takes about 0.1 s, trackpy's several seconds),
  and its time divided by that factor.
Accuracy: a detection matches the nearest true spot within 1.5 px; RMSE is per
axis, pooled over x and y, over matched spots.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.special import erf
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SIGMA = 1.5


def render(shape, n_spots, rng, bits):
    """One frame and its truth (xs, ys)."""
    h, w = shape
    pts = np.empty((0, 2))
    while len(pts) < n_spots:  # rejection sampling, ≥ 6 px apart
        cand = rng.uniform([6, 6], [w - 7, h - 7], (n_spots * 2, 2))
        for p in cand:
            if len(pts) == n_spots:
                break
            if len(pts) == 0 or np.min(np.sum((pts - p) ** 2, axis=1)) > 36:
                pts = np.vstack([pts, p])
    xs, ys = pts.T
    photons = rng.uniform(500, 3000, n_spots)
    r = int(math.ceil(5 * SIGMA))
    pad = r + 2
    img = np.full((h + 2 * pad, w + 2 * pad), 20.0)  # padded: spot windows never leave it
    for x, y, n in zip(xs, ys, photons):
        c0, r0 = int(x) - r, int(y) - r
        e = np.arange(2 * r + 3) - 0.5
        ex = np.diff(0.5 * erf((e + c0 - x) / (math.sqrt(2) * SIGMA)))
        ey = np.diff(0.5 * erf((e + r0 - y) / (math.sqrt(2) * SIGMA)))
        img[pad + r0:pad + r0 + 2 * r + 2, pad + c0:pad + c0 + 2 * r + 2] += n * np.outer(ey, ex)
    cnt = rng.poisson(img[pad:pad + h, pad:pad + w])
    if bits == 8:
        frame = np.clip(cnt, 0, 255).astype(np.uint8)
    else:
        frame = np.clip(cnt + 100, 0, 65535).astype(np.uint16)
    return frame, xs, ys


def score(df, truths):
    """(recall, precision, rmse_px) over frames."""
    tp = n_det = n_true = 0
    sq = []
    for i, (xs, ys) in enumerate(truths):
        d = df[df["frame"] == i]
        n_true += len(xs)
        n_det += len(d)
        if len(d) == 0:
            continue
        dist, idx = cKDTree(np.c_[xs, ys]).query(d[["x", "y"]].to_numpy())
        ok = dist < 1.5
        tp += len(np.unique(idx[ok]))
        sq.append(((d["x"].to_numpy()[ok] - xs[idx[ok]]) ** 2 + (d["y"].to_numpy()[ok] - ys[idx[ok]]) ** 2) / 2)
    rmse = float(np.sqrt(np.mean(np.concatenate(sq)))) if sq else float("nan")
    return tp / max(n_true, 1), tp / max(n_det, 1), rmse


def true_positive_flags(df, truths):
    """Per detection: True when it is the nearest detection of a true spot within 1.5 px."""
    flags = np.zeros(len(df), bool)
    pos = 0
    for i, (xs, ys) in enumerate(truths):
        d = df[df["frame"] == i]
        if len(d):
            dist, idx = cKDTree(d[["x", "y"]].to_numpy()).query(np.c_[xs, ys])
            hit = idx[dist < 1.5]
            f = np.zeros(len(d), bool)
            f[hit] = True
            flags[np.flatnonzero((df["frame"] == i).to_numpy())] = f
        pos += len(d)
    return flags


def run_trackpy(frames, minmass, processes="auto"):
    import trackpy as tp

    diameter = int(math.ceil(4 * SIGMA + 1)) | 1
    return tp.batch(frames, diameter, minmass=minmass, engine="numba", processes=processes)


def tune_minmass(frames, truths, target_precision):
    """Smallest trackpy minmass whose precision on these frames reaches the target.

    Runs trackpy once with minmass=0, sorts its features by mass (descending)
    and takes the lowest mass at which the cumulative precision is still ≥ the
    target.
    """
    df = run_trackpy(frames, 0, processes=1).reset_index(drop=True)
    tp_flag = true_positive_flags(df, truths)
    order = np.argsort(-df["mass"].to_numpy(), kind="stable")
    cum_prec = np.cumsum(tp_flag[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(cum_prec >= target_precision)
    if len(ok) == 0:
        return float(df["mass"].max())
    return float(df["mass"].to_numpy()[order[ok[-1]]])


def cold_start_s():
    """Seconds for a fresh interpreter to import exonta.detect and locate one frame (cached JIT)."""
    code = ("import time; t=time.perf_counter(); import numpy as np; from exonta.detect import locate; "
            "locate(np.random.default_rng(0).poisson(20,(128,128)).astype(np.uint16)); "
            "print(time.perf_counter()-t)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few frames, for a smoke run")
    ap.add_argument("--frames", type=int, default=None, help="frames per configuration")
    ap.add_argument("--spots", type=int, default=100, help="spots per frame")
    ap.add_argument("--snr", type=float, nargs="+", default=[3.5, 5.0],
                    help="exonta thresholds to run (noise sigmas; 3.5 = the pipeline default, tuned for sizing)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="time each program this many times on the same frames and keep its fastest run "
                         "(both programs alike; this 2-core machine varies by ±20-30 %% between runs)")
    ap.add_argument("--exonta-tiles", type=int, default=8,
                    help="time exonta on the frames repeated this many times (its pass over 48 frames lasts "
                         "~0.1 s, too short to time on a noisy machine); per-frame rates are reported")
    ap.add_argument("--binning", type=int, nargs="+", default=[1], choices=[1, 2],
                    help="exonta candidate search: 1 = full resolution (default), 2 = on the 2x2-binned frame "
                         "(DetectParams.search_binning); each is compared with trackpy tuned to its precision")
    args = ap.parse_args(argv)
    n_frames = args.frames or (16 if args.quick else 48)
    reps = 1 if args.quick else max(1, int(args.repeats))
    tiles = 1 if args.quick else max(1, int(args.exonta_tiles))

    # trackpy 0.7 on pandas 3 warns (Pandas4Warning: `inplace=` in DataFrame.drop/reset_index, trackpy/feature.py
    # lines 407-408) on every frame; it still works. Silence trackpy's warnings only.
    warnings.filterwarnings("ignore", module=r"trackpy(\..*)?")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import numba
    import trackpy as tp

    tp.quiet()
    from exonta.config import DetectParams
    from exonta.detect import estimate_background, locate_frames

    print(f"cold start (fresh process, cached JIT): import + first locate() = {cold_start_s():.2f} s")
    print(f"numba threads: {numba.get_num_threads()}, trackpy {tp.__version__}, frames/config: {n_frames}, "
          f"spots/frame: {args.spots}\n")
    rows = []
    for shape in ((480, 640), (1024, 1024)):
        for bits in (8, 16):
            rng = np.random.default_rng(1)
            data = [render(shape, args.spots, rng, bits) for _ in range(n_frames)]
            frames = np.stack([d[0] for d in data])
            truths = [(d[1], d[2]) for d in data]
            for snr, binning in [(a, b) for a in args.snr for b in args.binning]:
                p = DetectParams(threshold_snr=snr, search_binning=binning)
                # warm-up (JIT) on two frames
                locate_frames(frames[:2], p)
                run_trackpy(frames[:2], 0, processes=1)
                t, c = time.perf_counter(), time.process_time()
                bg = estimate_background(frames)  # one-time cost per video (median of ≤ 64 frames)
                t_once, c_once = time.perf_counter() - t, time.process_time() - c
                ours = locate_frames(frames, p, background=bg)  # scored against the truth
                # timed on the frames repeated `tiles` times: one pass over 48 frames lasts only ~0.1 s
                tiled = np.concatenate([frames] * tiles) if tiles > 1 else frames
                t_det = c_det = math.inf
                for _ in range(reps):  # the fastest of `reps` runs, wall and CPU time each
                    t2, c2 = time.perf_counter(), time.process_time()
                    locate_frames(tiled, p, background=bg)
                    t_det = min(t_det, (time.perf_counter() - t2) / tiles)
                    c_det = min(c_det, (time.process_time() - c2) / tiles)
                del tiled
                t_ours, c_ours = t_once + t_det, c_once + c_det
                r_o, p_o, e_o = score(ours, truths)
                n_tune = min(4, n_frames)
                minmass = tune_minmass(frames[:n_tune], truths[:n_tune], p_o)
                t_tp = c_tp = math.inf
                for _ in range(reps):
                    t = time.perf_counter()
                    theirs = run_trackpy(frames, minmass)  # processes='auto': trackpy's own multiprocessing
                    t_tp = min(t_tp, time.perf_counter() - t)
                    c = time.process_time()
                    run_trackpy(frames[:n_tune], minmass, processes=1)  # CPU time needs one process
                    c_tp = min(c_tp, (time.process_time() - c) * n_frames / n_tune)
                r_t, p_t, e_t = score(theirs, truths)
                rows.append((f"{shape[1]}x{shape[0]}", bits, f"{snr:.1f}" + ("b" if binning == 2 else ""), n_frames / t_ours, n_frames / t_det, t_once,
                             n_frames / t_tp, 1e3 * c_ours / n_frames, 1e3 * c_det / n_frames, 1e3 * c_tp / n_frames,
                             e_o, e_t, r_o, r_t, p_o, p_t, minmass))
    hdr = (f"{'size':>9} {'bit':>3} {'snr':>4} | {'fps ex':>6} {'(det)':>6} {'once s':>6} {'fps tp':>6} {'wall×':>6} "
           f"{'(det)':>6} | "
           f"{'cpu ms/f ex':>11} {'(det)':>6} "
           f"{'cpu ms/f tp':>11} {'cpu×':>5} {'(det)':>5} | {'RMSE ex':>7} {'RMSE tp':>7} {'ratio':>5} | {'rec ex':>6} "
           f"{'rec tp':>6} | {'prec ex':>7} {'prec tp':>7} | minmass")
    print(hdr)
    print("-" * len(hdr))
    for (size, bits, snr, f_o, f_d, t_bg, f_t, c_o, c_d, c_t, e_o, e_t, r_o, r_t, p_o, p_t, mm) in rows:
        print(f"{size:>9} {bits:>3} {snr:>4} | {f_o:6.1f} {f_d:6.1f} {t_bg:6.2f} {f_t:6.2f} {f_o / f_t:6.1f} "
              f"{f_d / f_t:6.1f} | "
              f"{c_o:11.1f} {c_d:6.1f} {c_t:11.1f} "
              f"{c_t / c_o:5.1f} {c_t / c_d:5.1f} | {e_o:7.3f} {e_t:7.3f} {e_o / e_t:5.2f} | {r_o:6.3f} {r_t:6.3f} | "
              f"{p_o:7.3f} {p_t:7.3f} | {mm:.0f}")
    print("\nsnr: exonta's threshold in noise sigmas; 'b' = candidate search on the 2x2-binned frame (--binning 2).")
    print("fps ex, cpu ms/f ex: including the one-time per-video cost (once s: static background, plus JIT compilation on a first run); "
          "(det) = per-frame detection only (what a long video costs per frame).")
    print("wall× = frames/s ratio (both on all cores: numba threads / trackpy processes='auto'); cpu× = ratio of "
          "CPU time per frame (robust to other load on the machine).")


if __name__ == "__main__":
    main()
