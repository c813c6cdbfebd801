"""Sizing accuracy on synthetic tracks: raw per-track histogram vs likelihood deconvolution.

Tracks are drawn directly (exact blurred Brownian motion + localisation noise,
``tests/reference/distribution_ref.py``), the particles table is the CVE per
track, and :func:`exonta.analysis.distribution.size_distribution` is run with
the exact DST likelihood (tracks table) and with the Gamma fallback (particles
table only).  Prints one row per (case, statistic): truth, raw-histogram value,
deconvolved values and their errors in %.

Usage::

    PYTHONPATH=src python benchmarks/bench_sizing.py [--n-tracks 1000] [--seed 0] [--bootstrap 100]

(The lead will add a video-based column through the pipeline.)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT / "tests"))
sys.path.insert(0, str(_ROOT / "src"))

from exonta.analysis.distribution import size_distribution  # noqa: E402
from exonta.config import Acquisition, SizingParams  # noqa: E402
from reference.distribution_ref import cve_particles, simulate_tracks  # noqa: E402

Z90 = 1.2815515655446004


def _cases(rng, n):
    logn = 110.0 * np.exp(math.log(1.45) * rng.standard_normal(n))
    return {
        "mono 100 nm": (np.full(n, 100.0), {"mode": 100.0, "d50": 100.0}),
        "bimodal 100+200 1:1": (np.where(rng.random(n) < 0.5, 100.0, 200.0),
                                {"peak1": 100.0, "peak2": 200.0, "frac1": 0.5}),
        "bimodal 100+150 1:1": (np.where(rng.random(n) < 0.5, 100.0, 150.0),
                                {"peak1": 100.0, "peak2": 150.0, "frac1": 0.5}),
        "lognormal 110 nm GSD 1.45": (logn, {"d10": 110 * 1.45 ** -Z90, "d50": 110.0, "d90": 110 * 1.45 ** Z90}),
    }


def _value(stats, key):
    peaks = stats.get("peaks", [])
    if key.startswith("peak"):
        i = int(key[-1]) - 1
        return peaks[i]["diameter_nm"] if len(peaks) == 2 else float("nan")
    if key == "frac1":
        return peaks[0]["number_fraction"] if len(peaks) == 2 else float("nan")
    return stats[key]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-tracks", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--gap-prob", type=float, default=0.02, help="probability of a missed detection per frame")
    args = ap.parse_args(argv)
    acq = Acquisition(pixel_size_um=0.166, fps=30.0, exposure_s=0.02, temperature_c=22.0)
    params = SizingParams(bootstrap=args.bootstrap, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    # warm-up (numba compilation) outside the timings
    tr0 = simulate_tracks(np.full(20, 100.0), rng)
    size_distribution(cve_particles(tr0, acq), acq, SizingParams(bootstrap=2), tracks=tr0)
    head = (f"{'case':28s} {'stat':6s} {'truth':>8s} {'raw':>8s} {'err%':>7s} {'exact':>8s} {'err%':>7s} "
            f"{'ci95 (exact)':>17s} {'gamma':>8s} {'err%':>7s}")
    print(f"{args.n_tracks} tracks per case, {args.bootstrap} bootstrap replicates, seed {args.seed}, "
          f"sigma 30-50 nm, exposure 0.02 s at 30 fps, track length 10 + Geometric(mean 20)")
    print(head)
    print("-" * len(head))
    timings = []
    for name, (diam, truth) in _cases(rng, args.n_tracks).items():
        tracks = simulate_tracks(diam, rng, gap_prob=args.gap_prob)
        parts = cve_particles(tracks, acq)
        t0 = time.perf_counter()
        exact = size_distribution(parts, acq, params, tracks=tracks)
        t1 = time.perf_counter()
        gam = size_distribution(parts, acq, params)
        t2 = time.perf_counter()
        timings.append((name, int(exact.stats["n_tracks_used"]), t1 - t0, t2 - t1))
        for key, tv in truth.items():
            raw_v = _value(exact.stats["raw"], key)
            ex_v = _value(exact.stats, key)
            ga_v = _value(gam.stats, key)
            ci = exact.stats["ci95"].get(key)
            ci_s = f"[{ci[0]:6.1f}, {ci[1]:6.1f}]" if ci else ""
            err = (lambda v: 100 * (v - tv) / tv) if key != "frac1" else (lambda v: 100 * (v - tv))
            print(f"{name:28s} {key:6s} {tv:8.3g} {raw_v:8.4g} {err(raw_v):7.1f} {ex_v:8.4g} {err(ex_v):7.1f} "
                  f"{ci_s:>17s} {ga_v:8.4g} {err(ga_v):7.1f}")
        print(f"{'':28s} peaks: raw {len(exact.stats['raw']['peaks'])}, exact {len(exact.stats['peaks'])}, "
              f"gamma {len(gam.stats['peaks'])}")
    print("\n(frac1: error in percentage points; raw peaks from the lightly smoothed raw histogram)")
    print(f"\n{'case':28s} {'tracks':>7s} {'exact s':>8s} {'gamma s':>8s}  (likelihood + fit + bootstrap)")
    for name, n, te, tg in timings:
        print(f"{name:28s} {n:7d} {te:8.2f} {tg:8.2f}")


if __name__ == "__main__":
    main()
