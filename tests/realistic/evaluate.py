"""Run ``exonta analyze`` (the CLI, as a user would) on generated realistic recordings; print a table.

Usage::

    python tests/realistic/recording.py /tmp/rl/data            # write the cases
    python tests/realistic/evaluate.py /tmp/rl/data /tmp/rl/out  # analyse them, print truth vs measured
    python tests/realistic/evaluate.py /tmp/rl/data /tmp/rl/out --auto-polarity  # without --invert

Each input (a JPEG folder ``<case>`` or a movie ``<case>.avi``) is analysed with the flags a user
gives: ``--pixel-size-um``, ``--fps``, ``--temperature-c`` and ``--invert`` for bright-field (no
exposure time: users rarely know it). ``--auto-polarity`` leaves ``--invert`` out (exonta then measures
whether the particles are dark). Extra ``exonta analyze`` flags can follow ``--``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def analyze_case(video: Path, truth: dict, out: Path, extra: list[str], auto_polarity: bool = False) -> dict:
    cmd = [sys.executable, "-m", "exonta", "analyze", str(video), "--out", str(out), "--quiet",
           "--pixel-size-um", str(truth["pixel_size_um"]), "--fps", str(truth["fps"]),
           "--temperature-c", str(truth["temperature_c"])]
    if truth["mode"] == "brightfield" and not auto_polarity:
        cmd.append("--invert")
    cmd += extra
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    row = {"input": video.name, "truth_nm": truth["diameter_nm"], "wall_s": round(wall, 1), "cmd": " ".join(cmd)}
    name = video.stem if video.is_file() else video.name
    summ = out / name / "summary.json"
    if proc.returncode != 0 or not summ.is_file():
        row["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return row
    s = json.loads(summ.read_text())
    size = s["size_nm"]
    row.update(d50=size.get("d50"), mode=size.get("mode"), n_tracks=s["counts"]["n_tracks"],
               n_valid=s["counts"]["n_valid_tracks"], psf=s["parameters"]["detect"]["psf_sigma_px"],
               grid_max=s["parameters"]["sizing"]["size_max_nm"],
               drift=s.get("drift_um_per_s"), n_warn=len(s.get("warnings") or []))
    return row


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    auto_polarity = "--auto-polarity" in argv
    argv = [a for a in argv if a != "--auto-polarity"]
    data, out = Path(argv[0]), Path(argv[1])
    only = set(argv[2:])
    print(f"{'input':28s} {'truth':>6s} {'D50':>7s} {'err%':>6s} {'mode':>7s} {'err%':>6s} {'tracks':>7s} "
          f"{'valid':>6s} {'psf':>5s} {'grid':>6s} {'t_s':>5s}")
    for tj in sorted(data.glob("*.truth.json")):
        case = tj.name[:-len(".truth.json")]
        if only and case not in only:
            continue
        truth = json.loads(tj.read_text())
        for video in (data / case, data / f"{case}.avi"):
            if not video.exists():
                continue
            r = analyze_case(video, truth, out, extra, auto_polarity)
            if "error" in r:
                print(f"{r['input']:28s} {r['truth_nm']:6.0f}  ERROR {r['error']}")
                continue
            t = r["truth_nm"]

            def f(v):
                return f"{v:7.0f} {100 * (v / t - 1):+6.1f}" if v is not None else f"{'n/a':>7s} {'':>6s}"
            print(f"{r['input']:28s} {t:6.0f} {f(r['d50'])} {f(r['mode'])} {r['n_tracks']:7d} {r['n_valid']:6d} "
                  f"{r['psf']:5.2f} {r['grid_max']:6.0f} {r['wall_s']:5.1f}", flush=True)


if __name__ == "__main__":
    main()
