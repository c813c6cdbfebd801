"""Concentration accuracy and 95 % CI coverage on repeated simulations.

Each replicate is a complete, independent experiment: a fresh calibration
video of 100 nm polystyrene beads (known concentration) and a fresh sample
video, both simulated with the same optics, the sample analysed with that
calibration. The CI claims to cover the sample's true concentration with the
uncertainty of the count *and* of the calibration, so both are redrawn every
time (re-using one calibration would make all replicates share its error and
the coverage check dishonest).

Reported: per replicate ratio value/truth and whether the CI covers the
truth, the share of counted spots clipped by the camera (``clip``) and near
the detector's own threshold (``near``: a count limited by the detector); overall coverage, the mean reported relative SE and the empirical SD
of ``log(value/truth)`` (a calibrated uncertainty has the two about equal).

Usage::

    PYTHONPATH=src python benchmarks/bench_concentration.py [--seeds 20] [--frames 400]
        [--sample-diameter-nm 100] [--sample-concentration 2e8] [--width 640 --height 480]

Takes ~1 min per replicate on one core at the defaults.

The simulated box is closed (a fixed number of particles): when the counted
slab is a large fraction ``f = h/(2·z_half)`` of its depth, the number of
particles in the slab fluctuates less than in a real (open) sample, by
``sqrt(1 − f)`` in standard deviation, and the CI (which assumes an open sample)
over-covers. ``--z-half-um 40`` makes the box deep enough for the open-sample
statistics.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings

import numpy as np


def _analyse(sim, refractive_index, calibration=None):
    from exonta.config import AnalysisConfig
    from exonta.pipeline import analyze

    cfg = AnalysisConfig(acquisition=sim.acquisition, sizing={"bootstrap": 0},
                         concentration={"particle_refractive_index": refractive_index})
    return analyze(sim.frames, cfg, calibration=calibration)


def replicate(seed: int, args) -> dict:
    from exonta.analysis.concentration import calibrate
    from exonta.simulate import SimulationConfig, simulate

    base = dict(width_px=args.width, height_px=args.height, n_frames=args.frames, z_half_um=args.z_half_um)
    std = simulate(SimulationConfig(concentration_per_ml=args.calibration_concentration, seed=2 * seed + 1000,
                                    components=[{"diameter_nm": 100.0, "refractive_index": 1.59}], **base))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = calibrate(_analyse(std, 1.59), std.true_concentration_per_ml)
        sample = simulate(SimulationConfig(
            concentration_per_ml=args.sample_concentration, seed=2 * seed + 1001,
            components=[{"diameter_nm": args.sample_diameter_nm, "refractive_index": 1.59}], **base))
        res = _analyse(sample, 1.59, calibration=cal)
    c = res.concentration
    truth = sample.true_concentration_per_ml
    return {"seed": seed, "truth": truth, "value": c.value_per_ml, "lo": c.ci95_low_per_ml, "hi": c.ci95_high_per_ml,
            "rel_se": c.details.get("rel_se"), "cal_rel_se": c.details.get("calibration_rel_se"),
            "per_frame": c.mean_particles_per_frame, "uncorrected": c.details.get("uncorrected_per_ml"),
            "noise_ratio": c.details.get("noise_ratio_to_calibration"), "method": c.details.get("method"), "spread": c.details.get("brightness_spread"),
            "cal_depth_um": cal.effective_depth_um, "clipped": c.details.get("clipped_fraction"),
            "near_limit": c.details.get("near_detection_limit_fraction")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--calibration-concentration", type=float, default=1e8)
    ap.add_argument("--sample-concentration", type=float, default=2e8)
    ap.add_argument("--sample-diameter-nm", type=float, default=100.0)
    ap.add_argument("--z-half-um", type=float, default=None,
                    help="half depth of the simulated box (default: automatic, ~10 µm for 100 nm beads, so the "
                         "counted slab is ~60 %% of the box and its count fluctuates less than in an open sample)")
    args = ap.parse_args(argv)
    rows = []
    print(f"{'seed':>4} {'truth/mL':>10} {'value/truth':>11} {'CI/truth':>16} {'relSE':>6} {'cal':>6} "
          f"{'N/frame':>7} {'uncorr':>6} {'noise':>5} {'clip':>5} {'near':>5} {'covers':>6} {'s':>5} method")
    for seed in range(args.seeds):
        t = time.perf_counter()
        r = replicate(seed, args)
        rows.append(r)
        cov = r["lo"] is not None and r["lo"] <= r["truth"] <= r["hi"]
        r["covers"] = cov
        print(f"{seed:4d} {r['truth']:10.3g} {r['value'] / r['truth']:11.3f} "
              f"{r['lo'] / r['truth']:7.3f}–{r['hi'] / r['truth']:7.3f} {r['rel_se']:6.3f} {r['cal_rel_se']:6.3f} "
              f"{r['per_frame']:7.1f} {r['uncorrected'] / r['truth']:6.3f} {r['noise_ratio'] or float('nan'):5.2f} "
              f"{r['clipped'] or 0.0:5.2f} {r['near_limit'] or 0.0:5.2f} "
              f"{str(cov):>6} {time.perf_counter() - t:5.0f} {r['method']} (spread {r['spread'] or float('nan'):.2f})", flush=True)
    ratio = np.array([r["value"] / r["truth"] for r in rows])
    coverage = np.mean([r["covers"] for r in rows])
    n = len(rows)
    # 95 % binomial interval of the coverage itself (Wilson)
    z = 1.96
    centre = (coverage + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(coverage * (1 - coverage) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    print(f"\ncoverage of the 95% CI: {coverage:.2f} ({n} replicates; Wilson 95% interval "
          f"{centre - half:.2f}–{centre + half:.2f})")
    print(f"mean value/truth {ratio.mean():.3f}; empirical SD of log(value/truth) {np.std(np.log(ratio), ddof=1):.3f}; "
          f"mean reported relative SE {np.mean([r['rel_se'] for r in rows]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
