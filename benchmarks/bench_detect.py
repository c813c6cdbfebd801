"""Speed and accuracy of exonta.detect.locate_frames against trackpy.batch, in one run.

A script, not a test::

    PYTHONPATH=src python benchmarks/bench_detect.py [--quick] [--frames N] [--spots N]

Synthetic frames: pixel-integrated Gaussian spots (σ = 1.5 px, 500–3000
photons, ≥ 6 px apart, new random positions every frame) on 20 background
photons/px with Poisson noise; 16-bit adds a camera offset of 100 ADU, 8-bit
clips at 255. Same frames for both programs.

Fairness:
- trackpy: ``diameter`` = smallest odd integer ≥ 4σ+1 (7 px), ``engine='numba'``,
  default ``processes`` (1); ``minmass`` tuned on the first frames to give the
  same precision as exonta (the smallest minmass whose precision ≥ exonta's).
- exonta: default DetectParams (static temporal-median background, Gaussian fit),
  all numba threads. Its time includes the background estimate.
- both warmed up (JIT) on two frames before timing; wall-clock time.
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


def precision_of(df, truths):
    return score(df, truths)[1]


def run_trackpy(frames, minmass):
    import trackpy as tp

    diameter = int(math.ceil(4 * SIGMA + 1)) | 1
    return tp.batch(frames, diameter, minmass=minmass, engine="numba")


def tune_minmass(frames, truths, target_precision):
    """Smallest trackpy minmass whose precision on these frames reaches the target."""
    df = run_trackpy(frames, 0)
    masses = np.unique(np.quantile(df["mass"].to_numpy(), np.linspace(0, 0.9, 91)))
    for m in masses:
        if precision_of(df[df["mass"] >= m], truths) >= target_precision:
            return float(m)
    return float(masses[-1])


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
    args = ap.parse_args(argv)
    n_frames = args.frames or (6 if args.quick else 24)

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="trackpy")
    import numba
    import trackpy as tp

    tp.quiet()
    from exonta.detect import locate_frames

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
            # warm-up (JIT) on two frames
            locate_frames(frames[:2])
            run_trackpy(frames[:2], 0)
            t = time.perf_counter()
            ours = locate_frames(frames)
            t_ours = time.perf_counter() - t
            r_o, p_o, e_o = score(ours, truths)
            n_tune = min(4, n_frames)
            minmass = tune_minmass(frames[:n_tune], truths[:n_tune], p_o)
            t = time.perf_counter()
            theirs = run_trackpy(frames, minmass)
            t_tp = time.perf_counter() - t
            r_t, p_t, e_t = score(theirs, truths)
            rows.append((f"{shape[1]}x{shape[0]}", bits, n_frames / t_ours, n_frames / t_tp, e_o, e_t, r_o, r_t,
                         p_o, p_t, minmass))
    hdr = (f"{'size':>9} {'bit':>3} | {'fps exonta':>10} {'fps trackpy':>11} {'speed×':>7} | {'RMSE ex':>7} "
           f"{'RMSE tp':>7} {'ratio':>5} | {'rec ex':>6} {'rec tp':>6} | {'prec ex':>7} {'prec tp':>7} | minmass")
    print(hdr)
    print("-" * len(hdr))
    for (size, bits, f_o, f_t, e_o, e_t, r_o, r_t, p_o, p_t, mm) in rows:
        print(f"{size:>9} {bits:>3} | {f_o:10.1f} {f_t:11.2f} {f_o / f_t:7.1f} | {e_o:7.3f} {e_t:7.3f} "
              f"{e_o / e_t:5.2f} | {r_o:6.3f} {r_t:6.3f} | {p_o:7.3f} {p_t:7.3f} | {mm:.0f}")


if __name__ == "__main__":
    main()
