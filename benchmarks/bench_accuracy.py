"""Accuracy matrix of the whole pipeline on simulated videos (issue 4 targets).

For every case in :mod:`exonta.validation`: truth, raw per-track histogram,
deconvolved distribution, and the error of the deconvolved statistic. Prints a
table; ``--seeds 3`` repeats each case with several seeds.

Usage: ``python benchmarks/bench_accuracy.py [--cases mono100,bimodal100_200] [--seeds 1]
[--set link.adaptive_search=false --set sizing.localization_error=brightness]`` (``--set`` overrides
analysis parameters, e.g. to compare a setting against the defaults).
"""

from __future__ import annotations

import argparse
import time

from exonta.validation import CASES, run_case


def _peaks(size: dict) -> str:
    return ", ".join(f"{p['diameter_nm']:.0f} ({100 * p['number_fraction']:.0f}%)" for p in size.get("peaks") or [])


def _parse_value(text: str):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="analysis parameter override (repeatable), e.g. link.adaptive_search=false")
    args = ap.parse_args()
    overrides: dict[str, dict] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        overrides.setdefault(section, {})[name] = _parse_value(value)
    rows = []
    for name in args.cases.split(","):
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            r = run_case(name, seed=seed, **overrides)
            wall = time.perf_counter() - t0
            truth, size, raw = r["truth"], r["size"], r["raw"] or {}
            for stat in ("mode", "d10", "d50", "d90"):
                if stat not in truth:
                    continue
                err = 100 * (size[stat] / truth[stat] - 1) if size.get(stat) else float("nan")
                rows.append((name, seed, stat, truth[stat], raw.get(stat, float("nan")), size.get(stat), err, ""))
            rows.append((name, seed, "peaks", "; ".join(f"{d:.0f}" for d in truth["peaks_nm"]), None, None, None,
                         _peaks(size)))
            rows.append((name, seed, "tracks", r["counts"]["n_valid_tracks"], None, None, None,
                         f"{r['counts']['mean_particles_per_frame']:.0f}/frame, drift {r['drift_um_per_s'][0]:.2f} µm/s, "
                         f"{wall:.0f} s"))
    print(f"{'case':<16}{'seed':>4}  {'stat':<7}{'truth':>10}{'raw':>9}{'deconv':>9}{'err %':>8}  notes")
    for name, seed, stat, truth, raw, dec, err, note in rows:
        fmt = (lambda v: f"{v:>9.1f}" if isinstance(v, float) else f"{'' if v is None else v!s:>9}")
        tr = f"{truth:>10.1f}" if isinstance(truth, float) else f"{truth!s:>10}"
        e = f"{err:>+8.1f}" if isinstance(err, float) else f"{'':>8}"
        print(f"{name:<16}{seed:>4}  {stat:<7}{tr}{fmt(raw)}{fmt(dec)}{e}  {note}")


if __name__ == "__main__":
    main()
