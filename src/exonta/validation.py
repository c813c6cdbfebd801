"""Validation of the whole pipeline against the physical simulator's ground truth.

Each named case simulates an NTA video with :mod:`exonta.simulate`, analyses it
with :func:`exonta.pipeline.analyze` (in memory) and compares the reported
size statistics with the truth. The seeded accuracy tests
(``tests/test_validation.py``) and the benchmark matrix
(``benchmarks/bench_accuracy.py``) both run these cases, so they measure the
same thing.

Truth is the *population* the simulator draws from: nominal diameters and
number fractions of mono/mixture components, the analytic quantiles of a
lognormal component. The camera level (``photons_ref``) is set per case as an
operator would (brighter for small or weakly scattering particles, dimmer for
large ones), keeping the sample's own scattering physics (Rayleigh d⁶ × contrast).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .physics import relative_scattering

__all__ = ["CASES", "ValidationCase", "label_tracks", "refit_tracks", "run_case", "truth_stats"]


@dataclass(frozen=True)
class ValidationCase:
    """One simulated sample and what to compare."""

    name: str
    components: tuple[dict[str, Any], ...]
    concentration_per_ml: float
    n_frames: int = 400
    width_px: int = 640
    height_px: int = 480
    temperature_c: float = 22.0
    drift_um_per_s: tuple[float, float] = (0.0, 0.0)
    reference_diameter_nm: float = 100.0  # the camera level is set so this size gives photons_target
    reference_refractive_index: float = 1.59
    photons_target: float = 5000.0
    bit_depth: int = 8
    analysis: dict[str, Any] = field(default_factory=dict)

    def simulation_config(self, seed: int):
        from .simulate import SimulationConfig

        photons_ref = self.photons_target / relative_scattering(self.reference_diameter_nm,
                                                                self.reference_refractive_index)
        return SimulationConfig(width_px=self.width_px, height_px=self.height_px, n_frames=self.n_frames,
                                concentration_per_ml=self.concentration_per_ml,
                                components=[dict(c) for c in self.components], temperature_c=self.temperature_c,
                                drift_um_per_s=self.drift_um_per_s, photons_ref=photons_ref,
                                bit_depth=self.bit_depth, seed=seed)


def _mono(d_nm: float, n: float = 1.59, fraction: float = 1.0) -> dict[str, Any]:
    return {"fraction": fraction, "diameter_nm": d_nm, "cv": 0.03, "refractive_index": n}


CASES: dict[str, ValidationCase] = {
    "mono100": ValidationCase("mono100", (_mono(100),), 1.0e9),
    "mono60": ValidationCase("mono60", (_mono(60),), 1.5e9, reference_diameter_nm=60),
    "mono400": ValidationCase("mono400", (_mono(400),), 3.0e8, reference_diameter_nm=400, n_frames=500),
    # 200 nm PS scatters 64× more than 100 nm: an 8-bit camera clips it (then its peak reads ~+10–18 %);
    # this case is recorded at 16 bit, as a 12/16-bit sCMOS would.
    "bimodal100_200": ValidationCase("bimodal100_200", (_mono(100, fraction=0.5), _mono(200, fraction=0.5)),
                                     8.0e8, n_frames=500, bit_depth=16),
    "bimodal100_150": ValidationCase("bimodal100_150", (_mono(100, fraction=0.5), _mono(150, fraction=0.5)),
                                     8.0e8, n_frames=600),
    "ev_lognormal": ValidationCase("ev_lognormal", ({"distribution": "lognormal", "median_nm": 110.0, "gsd": 1.45,
                                                     "refractive_index": 1.39},), 1.5e9,
                                   reference_diameter_nm=110, reference_refractive_index=1.39, n_frames=500),
    "drift8": ValidationCase("drift8", (_mono(100),), 1.0e9, drift_um_per_s=(8.0, 0.0)),
    "mono100_37c": ValidationCase("mono100_37c", (_mono(100),), 1.0e9, temperature_c=37.0),
}


def truth_stats(case: ValidationCase) -> dict[str, Any]:
    """Population truth: component diameters and number fractions, and D10/D50/D90."""
    comps = case.components
    fr = np.array([c.get("fraction", 1.0) for c in comps], dtype=float)
    fr = fr / fr.sum()
    out: dict[str, Any] = {"peaks_nm": [], "fractions": fr.tolist()}
    if len(comps) == 1 and comps[0].get("distribution") == "lognormal":
        med, gsd = comps[0]["median_nm"], comps[0]["gsd"]
        z = {"d10": -1.2815515655446004, "d50": 0.0, "d90": 1.2815515655446004}
        out.update({k: med * math.exp(v * math.log(gsd)) for k, v in z.items()})
        out["mode"] = med * math.exp(-math.log(gsd) ** 2)  # mode of the number density per nm
        out["peaks_nm"] = [out["mode"]]
        return out
    out["peaks_nm"] = [c["diameter_nm"] for c in comps]
    if len(comps) == 1:
        d = comps[0]["diameter_nm"]
        out.update({"mode": d, "d50": d})
    return out


def run_case(name: str, seed: int = 0, **analysis_overrides: Any) -> dict[str, Any]:
    """Simulate and analyse one case.

    Returns
    -------
    dict
        ``truth`` (:func:`truth_stats`), ``size`` (summary ``size_nm``),
        ``raw`` (raw-histogram stats), ``counts``, ``drift_um_per_s``,
        ``particles`` (the per-track table), ``tracks``, ``track_truth``
        (:func:`label_tracks`, with ``fitted``: the track entered the size
        distribution), ``config`` (as resolved), ``timings_s``, ``warnings``,
        ``sample_diameters_nm`` (the diameters of the particles simulated, one per particle of the box)
        and ``result`` (the :class:`exonta.pipeline.Result`).
    """
    from .config import AnalysisConfig
    from .pipeline import analyze
    from .simulate import simulate

    case = CASES[name]
    sim = simulate(case.simulation_config(seed))
    sections = {**case.analysis, **analysis_overrides}
    cfg = AnalysisConfig(acquisition=sim.acquisition, **sections)
    result = analyze(sim.frames, cfg)
    summary = result.summary()
    labels = label_tracks(result.tracks, sim.truth)
    labels["fitted"] = labels["particle"].isin(result.distribution.posterior_particle_ids)
    return {"case": name, "seed": seed, "truth": truth_stats(case), "size": summary["size_nm"],
            "raw": summary["size_nm"].get("raw", {}), "counts": summary["counts"],
            "drift_um_per_s": summary["drift_um_per_s"], "particles": result.particles,
            "tracks": result.tracks, "track_truth": labels, "config": result.config,
            "timings_s": summary["timings_s"], "true_concentration_per_ml": sim.true_concentration_per_ml,
            "concentration_per_ml": summary["concentration_per_ml"], "warnings": list(result.warnings),
            "sample_diameters_nm": sim.truth.loc[sim.truth["frame"] == sim.truth["frame"].min(), "diameter_nm"]
            .to_numpy(float), "result": result}


def label_tracks(tracks: pd.DataFrame, truth: pd.DataFrame, max_distance_px: float = 3.0) -> pd.DataFrame:
    """Match every position of every track to the simulator's truth; one row per track.

    A position is *on* a true particle when the nearest true position in the same frame
    (``truth`` ``x, y``: the exposure-averaged position, the detector's target) is within
    ``max_distance_px``; otherwise it is *junk* (a noise maximum, a neighbour's halo, a
    mis-localised spot). A track's true particle is the one most of its on-particle positions
    belong to.

    Parameters
    ----------
    tracks : DataFrame
        ``frame, x, y, particle`` (an analysis' tracks table).
    truth : DataFrame
        ``frame, particle, x, y, diameter_nm`` (:attr:`exonta.simulate.SimulationResult.truth`).
    max_distance_px : float

    Returns
    -------
    DataFrame
        ``particle`` (track id), ``n_positions``, ``junk_fraction`` (positions matching no true
        particle), ``purity`` (fraction of the track's positions on its true particle),
        ``true_particle`` (−1 when no position matched) and ``true_diameter_nm`` (NaN then).
    """
    from scipy.spatial import cKDTree

    cols = ["particle", "n_positions", "junk_fraction", "purity", "true_particle", "true_diameter_nm"]
    if not len(tracks):
        return pd.DataFrame({c: np.zeros(0) for c in cols})
    tr = tracks[["frame", "x", "y", "particle"]].sort_values("frame", kind="stable")
    tf = tr["frame"].to_numpy(np.int64)
    txy = tr[["x", "y"]].to_numpy(float)
    gt = truth.sort_values("frame", kind="stable")
    gf = gt["frame"].to_numpy(np.int64)
    gxy = gt[["x", "y"]].to_numpy(float)
    gid = gt["particle"].to_numpy(np.int64)
    match = np.full(len(tr), -1, np.int64)
    for f in np.unique(tf):
        a0, a1 = np.searchsorted(tf, [f, f + 1])
        b0, b1 = np.searchsorted(gf, [f, f + 1])
        if b1 == b0:
            continue
        dist, idx = cKDTree(gxy[b0:b1]).query(txy[a0:a1], distance_upper_bound=max_distance_px)
        ok = np.isfinite(dist)
        match[a0:a1][ok] = gid[b0:b1][idx[ok]]
    pos = pd.DataFrame({"particle": tr["particle"].to_numpy(np.int64), "true_particle": match})
    n = pos.groupby("particle").size()
    junk = (pos["true_particle"] < 0).groupby(pos["particle"]).mean()
    on = pos[pos["true_particle"] >= 0]
    counts = on.groupby(["particle", "true_particle"]).size().reset_index(name="k")
    best = counts.sort_values(["particle", "k", "true_particle"], ascending=[True, False, True]).drop_duplicates(
        "particle").set_index("particle")
    out = pd.DataFrame({"particle": n.index.to_numpy(np.int64), "n_positions": n.to_numpy(np.int64),
                        "junk_fraction": junk.reindex(n.index).to_numpy(float)})
    out["true_particle"] = best["true_particle"].reindex(n.index).fillna(-1).to_numpy(np.int64)
    out["purity"] = (best["k"].reindex(n.index).fillna(0).to_numpy(float) / out["n_positions"].to_numpy(float))
    diam = truth.drop_duplicates("particle").set_index("particle")["diameter_nm"]
    out["true_diameter_nm"] = diam.reindex(out["true_particle"]).to_numpy(float)
    return out[cols]


def refit_tracks(run: dict[str, Any], particle_ids: Any) -> dict[str, Any]:
    """Size statistics (:func:`exonta.analysis.distribution.size_distribution`, no bootstrap) of a
    subset of a :func:`run_case` result's tracks, with the run's own acquisition and sizing
    parameters; e.g. only the tracks that :func:`label_tracks` finds free of junk positions.
    """
    from .analysis.distribution import size_distribution

    cfg = run["config"]
    keep = np.asarray(particle_ids)
    particles = run["particles"][run["particles"]["particle"].isin(keep)]
    tracks = run["tracks"][run["tracks"]["particle"].isin(keep)]
    sizing = cfg.sizing.model_copy(update={"bootstrap": 0})
    return size_distribution(particles, cfg.acquisition, sizing, tracks=tracks).stats

