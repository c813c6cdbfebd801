"""Where a size error comes from: track selection, junk links, or the estimator.

For each validation case (:mod:`exonta.validation`) the simulator's truth is
matched to every track (:func:`exonta.validation.label_tracks`: a position is
*junk* when no true particle is within 3 px in its frame) and four size
statistics are printed side by side:

* ``sample``: the population the simulator draws from (what the tests judge);
* ``tracks``: the true diameters of the tracks that entered the size
  distribution, one count per track (what an unbiased deconvolution of those
  tracks should return);
* ``deconv``: the reported deconvolved statistic;
* ``clean``: the deconvolution of only the fitted tracks without a junk position.

``tracks − sample`` is the **selection bias** (larger particles are visible in a
thicker slab and give more, longer tracks); ``deconv − clean`` is the effect of
the **junk links**; ``clean − tracks`` is the **estimator** error. Prints a table;
not a test.

Usage: ``python benchmarks/bench_selection.py [--cases ev_lognormal,mono100_37c] [--seeds 1]
[--search-binning 2] [--set link.brightness_log_sd=0.45]``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from exonta.analysis.distribution import weighted_quantiles
from exonta.validation import CASES, refit_tracks, run_case

STATS = {"d10": 0.1, "d50": 0.5, "d90": 0.9}


def _pct(value: float, ref: float) -> str:
    return f"{100 * (value / ref - 1):+6.1f}" if np.isfinite(value) and np.isfinite(ref) and ref else "   nan"


def _fraction_small(size: dict, split_nm: float) -> float:
    peaks = size.get("peaks") or []
    return float(sum(p["number_fraction"] for p in peaks if p["diameter_nm"] < split_nm))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="ev_lognormal,mono100_37c,drift8,bimodal100_200,mono400")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--search-binning", type=int, choices=(1, 2), default=None,
                    help="candidate search: 1 = full resolution, 2 = 2x2-binned (--fast-search); default: the case's")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="an analysis parameter, e.g. link.brightness_log_sd=0.45 (repeatable; values parsed as JSON)")
    args = ap.parse_args()
    overrides: dict = {} if args.search_binning is None else {"detect": {"search_binning": args.search_binning}}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        overrides.setdefault(section, {})[name] = parsed
    print(f"{'case':16s} seed  fitted  junk-tracks junk-pos | {'stat':5s} {'sample':>7s} {'tracks':>7s} "
          f"{'deconv':>7s} {'clean':>7s} | selection  junk  estimator  (% of the reference to the left)")
    for name in args.cases.split(","):
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            r = run_case(name, seed=seed, **overrides)
            lab = r["track_truth"]
            fit = lab[lab["fitted"]]
            clean_ids = fit.loc[fit["junk_fraction"] == 0, "particle"].to_numpy()
            clean = refit_tracks(r, clean_ids)
            head = (f"{name:16s} {seed:4d} {len(fit):7d} {100 * np.mean(fit['junk_fraction'] > 0):10.1f}% "
                    f"{100 * np.average(fit['junk_fraction'], weights=fit['n_positions']):7.2f}%")
            truth, size = r["truth"], r["size"]
            rows = []
            if len(truth["peaks_nm"]) == 2:
                split = float(np.sqrt(np.prod(truth["peaks_nm"])))
                smp = 100 * truth["fractions"][0]
                trk = 100 * np.mean(fit["true_diameter_nm"] < split)
                dec = 100 * _fraction_small(size, split)
                cln = 100 * _fraction_small(clean, split)
                rows.append((f"%<{split:.0f}", smp, trk, dec, cln,
                             f"{trk - smp:+6.1f}pt {dec - cln:+6.1f}pt {cln - trk:+6.1f}pt"))
            else:
                q = weighted_quantiles(fit["true_diameter_nm"], list(STATS.values()))
                for (stat, _), trk in zip(STATS.items(), q):
                    smp = truth.get(stat, float("nan"))
                    dec = size.get(stat) or float("nan")
                    cln = clean.get(stat) or float("nan")
                    rows.append((stat, smp, trk, dec, cln, f"{_pct(trk, smp)}   {_pct(dec, cln)}   {_pct(cln, trk)}"))
            for i, (stat, smp, trk, dec, cln, err) in enumerate(rows):
                left = head if i == 0 else " " * len(head)
                print(f"{left} | {stat:5s} {smp:7.1f} {trk:7.1f} {dec:7.1f} {cln:7.1f} | {err}")
            print(f"{'':16s} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
