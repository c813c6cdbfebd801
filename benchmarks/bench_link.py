"""Linking speed and accuracy: exonta.track.link_features vs trackpy.link (numba), same data, same run.

Synthetic NTA-like field: ``--particles`` Brownian spheres (diameters 60-200 nm in water at 22 °C,
30 fps, 0.166 µm/px) in a 1024 × 768 px field with reflecting walls, ``--missing`` fraction of
detections dropped at random (blinking / out of the light sheet). Both linkers get the physics
search range of exonta (smallest diameter of interest 30 nm) and the same memory.

Accuracy: *precision* = fraction of the links made (consecutive positions of one track) that join
the same true particle; *recall* = fraction of the true frame-to-frame links (gaps ≤ memory) that
were made.

Usage::

    PYTHONPATH=src python benchmarks/bench_link.py [--frames 1500] [--particles 200] [--missing 0.03]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from exonta.config import Acquisition, LinkParams
from exonta.physics import diffusion_from_diameter
from exonta.track import link_features, search_range_px


def make_features(n_particles, n_frames, acq, missing, seed=0):
    rng = np.random.default_rng(seed)
    w, h = 1024.0, 768.0
    diam = rng.uniform(60.0, 200.0, n_particles)
    d = diffusion_from_diameter(diam, acq.temperature_c, acq.viscosity_mpas)
    sd_px = np.sqrt(2 * d * acq.frame_interval_s) / acq.pixel_size_um
    pos = np.column_stack([rng.uniform(0, w, n_particles), rng.uniform(0, h, n_particles)])
    frames, xs, ys, truth = [], [], [], []
    for f in range(n_frames):
        pos = pos + rng.normal(0.0, 1.0, pos.shape) * sd_px[:, None] + rng.normal(0, 0.1, pos.shape)
        pos[:, 0] = np.abs(pos[:, 0])
        pos[:, 0] = w - np.abs(w - pos[:, 0])
        pos[:, 1] = np.abs(pos[:, 1])
        pos[:, 1] = h - np.abs(h - pos[:, 1])
        keep = np.flatnonzero(rng.random(n_particles) >= missing)
        frames.append(np.full(keep.size, f))
        xs.append(pos[keep, 0])
        ys.append(pos[keep, 1])
        truth.append(keep)
    return pd.DataFrame({"frame": np.concatenate(frames), "x": np.concatenate(xs), "y": np.concatenate(ys),
                         "mass": 1.0, "truth": np.concatenate(truth)})


def score(tracks, feats, memory):
    t = tracks.sort_values(["particle", "frame"])
    same = t["particle"].to_numpy()[1:] == t["particle"].to_numpy()[:-1]
    good = (t["truth"].to_numpy()[1:] == t["truth"].to_numpy()[:-1])[same]
    precision = float(np.mean(good))
    g = feats.sort_values(["truth", "frame"])
    gap = np.diff(g["frame"].to_numpy())
    true_links = int(np.sum((g["truth"].to_numpy()[1:] == g["truth"].to_numpy()[:-1]) & (gap <= memory + 1)))
    recall = float(np.sum(good)) / true_links
    return precision, recall


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1500)
    ap.add_argument("--particles", type=int, default=200)
    ap.add_argument("--missing", type=float, default=0.03)
    ap.add_argument("--memory", type=int, default=2)
    ap.add_argument("--no-trackpy", action="store_true")
    args = ap.parse_args(argv)

    acq = Acquisition(pixel_size_um=0.166, fps=30.0, exposure_s=0.02, temperature_c=22.0)
    params = LinkParams(min_diameter_nm=30.0, memory_frames=args.memory)
    rho = search_range_px(acq, params)
    feats = make_features(args.particles, args.frames, acq, args.missing)
    print(f"{len(feats)} detections, {args.frames} frames, {args.particles} particles, "
          f"search range {rho:.1f} px, memory {args.memory}")

    rows = []
    link_features(feats.iloc[:2000], acq, params)  # warm-up (imports)
    t0 = time.perf_counter()
    ours = link_features(feats, acq, params)
    rows.append(("exonta.link_features", time.perf_counter() - t0, *score(ours, feats, args.memory)))

    if not args.no_trackpy:
        import trackpy as tp

        tp.quiet()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tp.link(feats.iloc[:2000], rho, memory=args.memory, link_strategy="numba",
                    adaptive_stop=0.5, adaptive_step=0.9)  # warm-up (numba compilation)
            t0 = time.perf_counter()
            theirs = tp.link(feats, rho, memory=args.memory, link_strategy="numba",
                             adaptive_stop=0.5, adaptive_step=0.9)
            el = time.perf_counter() - t0
        theirs = theirs[theirs.groupby("particle")["frame"].transform("size") >= 2]
        rows.append(("trackpy.link numba", el, *score(theirs, feats, args.memory)))

    print(f"{'linker':<24}{'time (s)':>10}{'precision':>11}{'recall':>9}")
    for name, el, prec, rec in rows:
        print(f"{name:<24}{el:>10.2f}{prec:>11.4f}{rec:>9.4f}")
    if len(rows) == 2:
        print(f"speed-up vs trackpy: {rows[1][1] / rows[0][1]:.1f}x")


if __name__ == "__main__":
    main()
