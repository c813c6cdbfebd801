"""Where a frame's detection time goes, full-resolution vs 2×2-binned candidate search, stage by stage.

A script, not a test::

    PYTHONPATH=src python benchmarks/bench_binned_search.py [--frames 12] [--spots 100] [--nta]

Issue 3 asks for ≥ 50× trackpy's frames/s at 1024²; exonta's detector spends most of its time
in three passes over every pixel (matched filter, tile noise map, local maxima) and the rest in
the fits. This script times the stages of :func:`exonta.detect._kernels._process_frame` one by
one, on the same frames, with the settings of

* ``DetectParams(search_binning=1)`` (the default): the passes on the 1024² frame (σ_PSF = 1.5 px,
  tiles of 16 px);
* ``DetectParams(search_binning=2)`` (``--fast-search``): the working frame summed in 2×2 blocks
  as it is made (:func:`_working_frame_bin2`), then the same kernels on the 512² binned frame
  (σ_b = √((σ² + 1/3)/4); box, edge and separation halved; noise tiles of the same side in binned
  pixels); each binned maximum goes to the brightest full-res pixel of its block
  (:func:`_to_full_res`) and is fitted on the full-res working frame by the same Gaussian
  least-squares fit (:func:`_refine`).

Printed: time per stage (best of 15, one thread), candidates per frame, and recall / RMSE of the
fitted positions against the truth (match ≤ 1.5 px) at several thresholds — both thresholds are in
noise sigmas of their own filtered image. The bright-spot logic (one candidate per clipped region,
saddle merge, halo test) is left out of both; ``bench_detect.py --binning 1 2`` times the whole
detector against trackpy. The frames are those of ``bench_detect.py`` (pixel-integrated Gaussian
spots, 500–3000 photons, 20 photons/px background, 8-bit); with ``--nta`` also one frame of the
``bench_pipeline.py`` video when it exists.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_detect import render  # noqa: E402

from exonta.config import DetectParams  # noqa: E402
from exonta.detect import _kernels as K  # noqa: E402
from exonta.detect.background import estimate_background  # noqa: E402
from exonta.detect.locate import _settings  # noqa: E402


@njit(cache=False, nogil=True)
def _fit_all(work, rows, cols, n, mode, half, sigma0, out):
    mask = np.empty((2 * half + 1, 2 * half + 1), np.uint8)
    ws = K._fit_workspace(half)
    mats = np.empty((2, 7, 7))
    for k in range(n):
        K._refine(work, work, np.inf, rows, cols, n, k, mode, half, sigma0, False, mask, out[k], ws, mats)


def tmin(fn, reps=15):
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


class Detector:
    """The stages of :func:`exonta.detect._kernels._process_frame` one by one, with the settings of
    ``DetectParams(search_binning=1 or 2)``: the image-wide passes at full resolution or on the
    2×2-binned frame, then the full-resolution fits (without the bright-spot logic)."""

    def __init__(self, shape, bg, binned: bool):
        s = _settings(DetectParams(search_binning=2 if binned else 1))
        self.s, self.binned, self.bg = s, binned, bg
        h, w = shape
        self.work = np.empty((h, w), np.float32)
        sh = (h // 2, w // 2) if binned else (h, w)
        self.b = np.empty(sh, np.float32)
        self.wb = np.empty(sh, np.float32)
        self.filt = np.empty(sh, np.float32)
        self.grid = np.empty(K._grid_shape(h, w, s))
        cap = 20000
        self.rows = np.empty(cap, np.int64)
        self.cols = np.empty(cap, np.int64)
        self.vals = np.empty(cap)
        self.peak = np.zeros(cap)
        self.sat = np.zeros((cap, 3))
        self.out = np.empty((cap, K.N_FIELDS))
        self.nobg = np.zeros((0, 0), np.float32)

    # stages
    def working_frame(self, raw):
        K._working_frame_bin2(raw, self.bg, self.s.sign, self.work, self.b)

    def filter(self, raw):
        s = self.s
        if self.binned:
            K._filter_frame(self.b, self.nobg, 1.0, s.gauss_b, s.box_half_b, self.wb, self.filt)
        else:
            K._filter_frame(raw, self.bg, s.sign, s.gauss, s.box_half, self.work, self.filt)

    def noise(self, raw):
        K._noise_map(self.filt, self.s.edge_b if self.binned else self.s.edge, self.grid, 6)
        K._cap_noise(self.grid, K._NOISE_CAP, raw, self.s.edge)

    def maxima(self, k_sigma):
        s = self.s
        if self.binned:
            return K._find_maxima(self.filt, self.grid, k_sigma, 0.0, s.edge_b, s.sep_dy_b, s.sep_dx_b,
                                  self.rows, self.cols, self.vals)
        return K._find_maxima(self.filt, self.grid, k_sigma, 0.0, s.edge, s.sep_dy, s.sep_dx,
                              self.rows, self.cols, self.vals)

    def fits(self, n):
        if self.binned:
            self.sat[:n] = 0.0
            K._to_full_res(self.work, self.rows, self.cols, self.vals, self.peak, self.sat, n)
        _fit_all(self.work, self.rows, self.cols, n, self.s.mode, self.s.roi_half, self.s.sigma0, self.out)

    def run(self, raw, k_sigma):
        if self.binned:
            self.working_frame(raw)
        self.filter(raw)
        self.noise(raw)
        n = min(self.maxima(k_sigma), self.rows.shape[0])
        self.fits(n)
        return self.out[:n, :2].copy()


def stage_times(det: Detector, raw, k_sigma=3.5):
    t = {}
    if det.binned:
        t["bg-subtracted frame + 2x2 sums"] = tmin(lambda: det.working_frame(raw))
    t["filter"] = tmin(lambda: det.filter(raw))
    t["noise map"] = tmin(lambda: det.noise(raw))
    n = min(det.maxima(k_sigma), det.rows.shape[0])
    t["maxima"] = tmin(lambda: det.maxima(k_sigma))
    rows, cols = det.rows[:n].copy(), det.cols[:n].copy()

    def fits():
        det.rows[:n], det.cols[:n] = rows, cols
        det.fits(n)

    t[f"fits ({n})"] = tmin(fits)
    return t


def accuracy(det: Detector, data, k_sigma):
    tp = n_det = n_true = 0
    sq = []
    for raw, xs, ys in data:
        xy = det.run(raw, k_sigma)
        n_true += len(xs)
        n_det += len(xy)
        if not len(xy):
            continue
        d, idx = cKDTree(np.c_[xs, ys]).query(xy)
        ok = d < 1.5
        tp += len(np.unique(idx[ok]))
        sq.append(((xy[ok, 0] - xs[idx[ok]]) ** 2 + (xy[ok, 1] - ys[idx[ok]]) ** 2) / 2)
    rmse = float(np.sqrt(np.mean(np.concatenate(sq)))) if sq else float("nan")
    return tp / max(n_true, 1), n_det / len(data), rmse


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--spots", type=int, default=100)
    ap.add_argument("--nta", action="store_true", help="also time one frame of the bench_pipeline video")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(1)
    data = [render((1024, 1024), args.spots, rng, 8) for _ in range(args.frames)]
    frames = np.stack([d[0] for d in data])
    bg = estimate_background(frames)
    full, binned = Detector(frames.shape[1:], bg, False), Detector(frames.shape[1:], bg, True)
    for det in (full, binned):
        det.run(frames[0], 3.5)  # JIT
    sets = [("bench_detect frame", frames[0], full, binned)]
    video = ROOT / "benchmarks" / "_out" / "nta_1500f_1024_c7e08.tif"
    if args.nta and video.exists():
        import tifffile

        arr = tifffile.memmap(video)
        bg2 = estimate_background(arr[:64])
        sets.append(("NTA video frame 7", np.ascontiguousarray(arr[7]), Detector(arr.shape[1:], bg2, False),
                     Detector(arr.shape[1:], bg2, True)))
    print("time per 1024² frame, ms (one thread, best of 15)")
    for name, raw, f_det, b_det in sets:
        tf, tb = stage_times(f_det, raw), stage_times(b_det, raw)
        print(f"\n{name}")
        print(f"  {'full-res':<34s}{'ms':>7s}   {'2x2-binned search':<34s}{'ms':>7s}")
        lf, lb = list(tf.items()), list(tb.items())
        for i in range(max(len(lf), len(lb))):
            a = lf[i] if i < len(lf) else ("", float("nan"))
            b = lb[i] if i < len(lb) else ("", float("nan"))
            print(f"  {a[0]:<34s}{a[1]:7.2f}   {b[0]:<34s}{b[1]:7.2f}")
        print(f"  {'total':<34s}{sum(tf.values()):7.2f}   {'total':<34s}{sum(tb.values()):7.2f}"
              f"   ratio {sum(tf.values()) / sum(tb.values()):.2f}")
    print(f"\nrecall / detections per frame / RMSE px, against truth ({args.frames} frames, {args.spots} spots, "
          "fits from the candidates, no bright-spot logic)")
    print(f"  {'threshold':>9s} | {'full-res':^26s} | {'2x2-binned search':^26s}")
    for k in (3.0, 3.5, 4.0, 5.0):
        rf, nf, ef = accuracy(full, data, k)
        rb, nb, eb = accuracy(binned, data, k)
        print(f"  {k:8.1f}σ | {rf:6.3f} {nf:7.0f} {ef:8.4f}    | {rb:6.3f} {nb:7.0f} {eb:8.4f}")


if __name__ == "__main__":
    main()
