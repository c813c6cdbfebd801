"""Detection limit and size selection (exonta.analysis.visibility) on data drawn from the model itself."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from exonta.analysis.concentration import depth_model_um
from exonta.analysis.visibility import (
    LIMIT_EDGE_RATIO,
    MAX_CLIPPED_FRACTION,
    REFERENCE_DIAMETER_NM,
    detection_limit_summary,
    detection_limit_warnings,
    fit_visibility,
    inclusion,
    visible_distribution,
)
from exonta.config import Acquisition, ConcentrationParams, DetectParams
from exonta.errors import ExontaInputError

ACQ = Acquisition(pixel_size_um=0.166, fps=30.0, exposure_s=0.0005, temperature_c=22.0)  # (the draws have no blur)
CONC = ConcentrationParams()
PSF = 1.5
NOISE = 2.0  # σ_F of the filtered image, raw units
DET = DetectParams(psf_sigma_px=PSF, threshold_snr=3.5)
T = DET.threshold_snr * NOISE
A_PX2 = 2.4   # in-focus spot variance
B_PX2 = 0.25  # its growth per u²


def _grid():
    edges = np.exp(np.linspace(math.log(30.0), math.log(400.0), 61))
    return edges, np.sqrt(edges[1:] * edges[:-1]), np.diff(edges)


def _draw(ratio, diameters, rng, per_track=40):
    """Tracks whose detections follow the model exactly: u uniform over each particle's slice."""
    edges, centres, widths = _grid()
    v0 = A_PX2 + PSF**2
    m_ref = ratio * v0 * T
    g = B_PX2 / v0
    rows, post, ids, kept = [], [], [], []
    for pid, d in enumerate(diameters):
        b = int(np.clip(np.searchsorted(edges, d) - 1, 0, centres.size - 1))
        k = (centres[b] / REFERENCE_DIAMETER_NM) ** 6  # the size the deconvolution would give it
        u_star = float(depth_model_um(k, 0.5, ratio, g))
        if u_star <= 0:
            continue  # below the detection limit: no track
        u = rng.uniform(0.0, u_star, per_track)
        m = m_ref * k * np.exp(-0.5 * u**2)
        size = np.sqrt(A_PX2 + B_PX2 * u**2)
        rows.append(pd.DataFrame({"particle": pid, "signal": m / size**2, "size_px": size, "background": 10.0}))
        p = np.zeros(centres.size)
        p[b] = 1.0
        post.append(p)
        ids.append(pid)
        kept.append(b)
    tracks = pd.concat(rows, ignore_index=True)
    w = np.bincount(kept, minlength=centres.size).astype(float)
    w /= w.sum()
    table = pd.DataFrame({"diameter_nm": centres, "bin_width_nm": widths, "deconvolved_density": w / widths})
    cdf = np.cumsum(w)
    dist = SimpleNamespace(table=table, edges_nm=edges, weights=w, posterior=np.array(post), stats={
        "d50": float(np.interp(0.5, cdf, centres)), "d10": float(np.interp(0.1, cdf, centres))},
        posterior_particle_ids=np.array(ids, np.int64))
    # detections at the detection limit give the noise level: F/snr = NOISE
    f = np.full(50, 1.1 * T)
    features = pd.DataFrame({"signal": f * (A_PX2 + PSF**2) / A_PX2, "size_px": math.sqrt(A_PX2),
                             "snr": f / NOISE})
    return features, tracks, dist


@pytest.mark.parametrize("ratio, seed", [(20.0, 1), (60.0, 2), (6.0, 3)])
def test_fit_recovers_the_brightness_ratio_and_the_limit_of_a_polydisperse_sample(ratio, seed):
    rng = np.random.default_rng(seed)
    diam = 95.0 * np.exp(0.4 * rng.standard_normal(1500))  # spans the limit for every ratio here
    features, tracks, dist = _draw(ratio, diam, rng)
    model = fit_visibility(features, tracks, dist, ACQ, DET, CONC)
    assert model.threshold == pytest.approx(T, rel=1e-6)
    assert model.brightness_ratio == pytest.approx(ratio, rel=0.05)
    assert model.detection_limit_nm == pytest.approx(REFERENCE_DIAMETER_NM * ratio ** (-1 / 6), rel=0.01)
    assert model.defocus_g == pytest.approx(B_PX2 / (A_PX2 + PSF**2), rel=0.25)


def test_clipped_or_too_few_detections_are_refused():
    rng = np.random.default_rng(4)
    features, tracks, dist = _draw(20.0, 95.0 * np.exp(0.4 * rng.standard_normal(600)), rng)
    peak = tracks["signal"] + tracks["background"]
    level = float(np.quantile(peak, 0.5))  # half the spots clip, far more than MAX_CLIPPED_FRACTION of the small ones
    assert MAX_CLIPPED_FRACTION < 0.25
    with pytest.raises(ExontaInputError, match="clipped"):
        fit_visibility(features, tracks, dist, ACQ, DET, CONC, saturation_level=level)
    refused = detection_limit_summary(features, tracks, dist, ACQ, DET, CONC, saturation_level=level)
    assert refused["diameter_nm"] is None and "clipped" in refused["reason"]
    assert detection_limit_warnings({"d10": 70.0, "detection_limit": refused}) == []
    fit_visibility(features, tracks, dist, ACQ, DET, CONC, saturation_level=float(peak.max()) + 1)  # none clipped
    with pytest.raises(ExontaInputError, match="too few"):
        fit_visibility(features, tracks.iloc[:100], dist, ACQ, DET, CONC)


def test_summary_only_where_the_light_sheet_model_applies():
    rng = np.random.default_rng(5)
    features, tracks, dist = _draw(20.0, 95.0 * np.exp(0.4 * rng.standard_normal(600)), rng)
    out = detection_limit_summary(features, tracks, dist, ACQ, DET, CONC)
    assert out["diameter_nm"] == pytest.approx(100.0 * 20.0 ** (-1 / 6), rel=0.02)
    # only the bin at the limit can fall on the other side of a limit fitted 1 % off
    assert 0.0 <= out["tracks_below_fraction"] < 0.05 and out["edge_density_ratio"] > 0
    dark = DET.model_copy(update={"invert": True})  # bright-field: no light sheet
    assert detection_limit_summary(features, tracks, dist, ACQ, dark, CONC) is None
    big = SimpleNamespace(**{**vars(dist), "stats": {"d50": 800.0}})  # micron beads: not Rayleigh
    assert detection_limit_summary(features, tracks, big, ACQ, DET, CONC) is None


def test_inclusion_is_zero_below_the_limit_and_grows_with_the_slice():
    rng = np.random.default_rng(6)
    features, tracks, dist = _draw(20.0, 95.0 * np.exp(0.4 * rng.standard_normal(600)), rng)
    model = fit_visibility(features, tracks, dist, ACQ, DET, CONC)
    d = np.array([0.9, 1.05, 1.5, 3.0]) * model.detection_limit_nm
    iota = inclusion(d, model, ACQ, CONC)
    assert iota[0] == 0.0 and np.all(iota[1:] > 0) and np.all(np.diff(iota[1:]) > 0)


def test_visible_distribution_undoes_the_inclusion_above_the_limit():
    rng = np.random.default_rng(7)
    features, tracks, dist = _draw(20.0, 95.0 * np.exp(0.4 * rng.standard_normal(1500)), rng)
    model = fit_visibility(features, tracks, dist, ACQ, DET, CONC)
    edges, centres, widths = _grid()
    population = np.exp(-0.5 * (np.log(centres / 110.0) / 0.35) ** 2)  # the sample, per bin
    iota = inclusion(centres, model, ACQ, CONC)
    tracks_w = population * iota  # what a video of it would give
    table = dist.table.assign(deconvolved_density=tracks_w / tracks_w.sum() / widths)
    out = visible_distribution(SimpleNamespace(table=table, edges_nm=edges, weights=tracks_w / tracks_w.sum()),
                               model, ACQ, CONC)
    seen = iota > 0
    expect = np.where(seen, population, 0.0)
    np.testing.assert_allclose(out["weights"], expect / expect.sum(), rtol=1e-9, atol=1e-15)
    assert out["tracks_below_limit_fraction"] == 0.0
    d50_tracks = float(np.interp(0.5, np.cumsum(tracks_w) / tracks_w.sum(), edges[1:]))
    d50_sample = float(np.interp(0.5, np.cumsum(expect) / expect.sum(), edges[1:]))
    assert out["stats"]["d50"] == pytest.approx(d50_sample, rel=0.02) and d50_tracks > 1.03 * d50_sample


def test_warning_only_when_the_distribution_reaches_the_limit():
    stats = {"d10": 70.0, "detection_limit": {"diameter_nm": 62.0, "edge_density_ratio": LIMIT_EDGE_RATIO + 0.1}}
    (msg,) = detection_limit_warnings(stats)
    assert "~62 nm" in msg and "D10 70 nm" in msg
    stats["detection_limit"]["edge_density_ratio"] = LIMIT_EDGE_RATIO - 0.1
    assert detection_limit_warnings(stats) == []
    assert detection_limit_warnings({"d10": 70.0}) == []
