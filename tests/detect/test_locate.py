"""Public API of exonta.detect: behaviour, edge cases and accuracy on synthetic spots."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference import detect_ref as ref  # noqa: E402

from exonta.config import DetectParams  # noqa: E402
from exonta.detect import COLUMNS, estimate_background, locate, locate_frames  # noqa: E402
from exonta.errors import ExontaCancelled, ExontaInputError  # noqa: E402

FEATURE_COLS = ["x", "y", "mass", "signal", "size_px", "background", "snr"]


def _grid_positions(rng, shape, n, margin=8):
    """n random positions on a jittered 12-px grid: spots ≥ 6 px apart (isolated)."""
    h, w = shape
    gy, gx = np.mgrid[margin:h - margin - 6:12, margin:w - margin - 6:12]
    pick = rng.choice(gx.size, size=n, replace=False)
    return gx.ravel()[pick] + rng.uniform(0, 6, n), gy.ravel()[pick] + rng.uniform(0, 6, n)


def _frame(rng, shape=(120, 160), n=20, photons=1500.0, bg=20.0, sigma=1.5, margin=8, dtype=np.uint16):
    xs, ys = _grid_positions(rng, shape, n, margin)
    img = ref.render_spots(shape, xs, ys, photons, sigma, bg, rng)
    return img.astype(dtype), xs, ys


def _match(df, xs, ys, tol=1.5):
    """(recall, precision, dx, dy) of detections against truth (nearest within tol)."""
    truth = np.c_[xs, ys]
    if len(df) == 0:
        return 0.0, 1.0, np.empty(0), np.empty(0)
    d, i = cKDTree(truth).query(df[["x", "y"]].to_numpy())
    ok = d < tol
    # one detection per truth spot
    uniq = np.unique(i[ok])
    recall = len(uniq) / len(truth)
    precision = len(uniq) / len(df)
    return recall, precision, df["x"].to_numpy()[ok] - xs[i[ok]], df["y"].to_numpy()[ok] - ys[i[ok]]


class FakeVideo:
    """Minimal stand-in for exonta.io's Video (iter_chunks, n_frames, frame_shape, dtype, read)."""

    def __init__(self, arr):
        self.arr = arr
        self.n_frames = arr.shape[0]
        self.frame_shape = arr.shape[1:]
        self.dtype = arr.dtype
        self.chunk_sizes = []

    def read(self, i):
        return self.arr[i]

    def iter_chunks(self, chunk_frames, start=0, stop=None):
        stop = self.n_frames if stop is None else stop
        for a in range(start, stop, chunk_frames):
            c = self.arr[a:min(a + chunk_frames, stop)]
            self.chunk_sizes.append(len(c))
            yield a, c


# ----------------------------------------------------------------- API and table
def test_locate_columns_dtypes_and_coordinates():
    img = ref.render_spots((40, 50), [20.3], [12.7], 2000.0, 1.5, 10.0, None, poisson=False)
    df = locate(img.astype(np.float32))
    assert list(df.columns) == FEATURE_COLS
    assert all(df[c].dtype == np.float64 for c in FEATURE_COLS)
    assert len(df) == 1
    row = df.iloc[0]
    assert row.x == pytest.approx(20.3, abs=1e-3) and row.y == pytest.approx(12.7, abs=1e-3)  # x = column
    assert row.mass == pytest.approx(2000.0, rel=1e-3)
    assert row.size_px == pytest.approx(1.5, rel=1e-3)
    assert row.background == pytest.approx(10.0, abs=1e-2)
    assert row.signal == pytest.approx(2000.0 / (2 * np.pi * 1.5 ** 2), rel=1e-3)


def test_locate_frames_adds_frame_and_matches_locate():
    rng = np.random.default_rng(10)
    frames = np.stack([_frame(rng, n=10)[0] for _ in range(5)])
    df = locate_frames(frames, params=DetectParams(background="none"))
    assert list(df.columns) == list(COLUMNS)
    assert df["frame"].dtype == np.int64
    assert sorted(df["frame"].unique()) == [0, 1, 2, 3, 4]
    assert df["frame"].is_monotonic_increasing
    for i in (0, 3):
        one = locate(frames[i])
        pd.testing.assert_frame_equal(df[df.frame == i][FEATURE_COLS].reset_index(drop=True), one)


def test_chunking_and_video_objects_give_identical_results():
    rng = np.random.default_rng(11)
    frames = np.stack([_frame(rng, n=8)[0] for _ in range(12)])
    a = locate_frames(frames, chunk_frames=64)
    vid = FakeVideo(frames)
    b = locate_frames(vid, chunk_frames=5)
    assert vid.chunk_sizes == [5, 5, 2]
    pd.testing.assert_frame_equal(a, b)
    assert len(a) > 80


def test_params_object_and_overrides():
    rng = np.random.default_rng(12)
    img = _frame(rng, n=15, photons=600)[0]
    hi = locate(img, DetectParams(threshold_snr=50.0))
    lo = locate(img, DetectParams(threshold_snr=50.0), threshold_snr=5.0)
    assert len(lo) > len(hi)
    assert (lo["snr"] > 5.0).all()
    manual = locate(img, threshold=1e9)
    assert len(manual) == 0


def test_bad_input_raises_exonta_input_error():
    with pytest.raises(ExontaInputError, match="2-D"):
        locate(np.zeros((3, 10, 10)))
    with pytest.raises(ExontaInputError, match="threshold_snr"):
        locate(np.zeros((10, 10)), threshold_snr=-1)
    with pytest.raises(ExontaInputError, match="unknown"):
        locate(np.zeros((10, 10)), diameter=7)
    with pytest.raises(ExontaInputError, match="NaN"):
        locate(np.full((10, 10), np.nan))
    with pytest.raises(ExontaInputError, match="shape"):
        locate(np.zeros((10, 10)), background=np.zeros((10, 11)))
    with pytest.raises(ExontaInputError, match="3-D"):
        locate_frames(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ExontaInputError, match="pixel type"):
        locate(np.zeros((10, 10), complex))


def test_progress_and_cancel():
    rng = np.random.default_rng(13)
    frames = np.stack([_frame(rng, shape=(40, 40), n=2)[0] for _ in range(7)])
    calls = []
    locate_frames(frames, chunk_frames=3, progress=lambda d, t, s: calls.append((d, t, s)))
    assert calls == [(0, 7, "detect"), (3, 7, "detect"), (6, 7, "detect"), (7, 7, "detect")]
    seen = []

    def stop(done, total, stage):
        seen.append(done)
        return done < 3

    with pytest.raises(ExontaCancelled):
        locate_frames(frames, chunk_frames=3, progress=stop)
    assert seen == [0, 3]


def test_read_ahead_stops_cleanly_on_cancel_and_reports_bad_chunks():
    """The next chunk is read in a background thread: cancelling reads at most one chunk ahead and closes
    the video's iterator; a bad chunk found while reading ahead is reported as an input error."""
    rng = np.random.default_rng(14)
    frames = np.stack([_frame(rng, shape=(40, 40), n=2)[0] for _ in range(12)])
    closed = []

    class Tracked(FakeVideo):
        def iter_chunks(self, chunk_frames, start=0, stop=None):
            try:
                yield from super().iter_chunks(chunk_frames, start, stop)
            finally:
                closed.append(True)

    vid = Tracked(frames)
    with pytest.raises(ExontaCancelled):
        locate_frames(vid, chunk_frames=2, progress=lambda d, t, s: d < 2)
    assert closed == [True]
    assert vid.chunk_sizes == [2, 2]  # the chunk processed and the one read ahead, no more

    bad = frames.astype(np.float32)
    bad[9, 5, 5] = np.nan
    with pytest.raises(ExontaInputError, match="NaN"):
        locate_frames(FakeVideo(bad), chunk_frames=4)


# ----------------------------------------------------------------- edge cases
@pytest.mark.parametrize("value", [0, 7, 255])
def test_flat_frames_give_no_spots(value):
    for dtype in (np.uint8, np.uint16, np.float32):
        assert len(locate(np.full((64, 64), value, dtype))) == 0
    frames = np.full((12, 32, 32), value, np.uint8)
    assert len(locate_frames(frames)) == 0


@pytest.mark.parametrize("binning", [1, 2])
def test_tiny_frames_are_handled(binning):
    assert len(locate(np.ones((3, 3), np.uint8), search_binning=binning)) == 0
    assert len(locate(np.arange(20, dtype=np.uint16).reshape(1, 20), search_binning=binning)) == 0
    assert len(locate(np.ones((1, 1), np.float32), search_binning=binning)) == 0
    assert len(locate_frames(np.ones((3, 2, 40), np.uint8), search_binning=binning)) == 0
    # odd sizes: the binned search leaves the last row and column out of the search, not out of the fits
    img = ref.render_spots((41, 53), [20.3, 47.0], [20.6, 9.2], 3000.0, 1.5, 5.0, None, poisson=False)
    df = locate(img.astype(np.uint16), search_binning=binning)
    np.testing.assert_allclose(df.sort_values("x")[["x", "y"]].to_numpy(), [[20.3, 20.6], [47.0, 9.2]], atol=0.05)


@pytest.mark.parametrize("binning", [1, 2])
def test_saturated_spots_give_one_detection_each(binning):
    img = ref.render_spots((60, 60), [20.0, 40.3], [30.0, 25.6], 50000.0, 1.5, 5.0, None, poisson=False)
    img = np.minimum(img, 255).astype(np.uint8)  # flat-topped plateaus
    df = locate(img, search_binning=binning)
    assert len(df) == 2
    # the Gaussian model does not fit a clipped top: within a quarter pixel, not better
    np.testing.assert_allclose(df.sort_values("x")[["x", "y"]].to_numpy(), [[20.0, 30.0], [40.3, 25.6]], atol=0.25)


def test_spots_at_the_edge_are_excluded_or_localised():
    img = ref.render_spots((50, 50), [1.0, 5.2, 25.0], [10.0, 35.0, 25.0], 3000.0, 1.5, 5.0, None, poisson=False)
    df = locate(img)
    # default edge = ceil(2.5 sigma) = 4 px: the spot at x=1 is excluded, x=5.2 is kept (clipped ROI)
    assert sorted(np.round(df.x, 1)) == [5.2, 25.0]
    df0 = locate(img, edge_px=0)
    assert len(df0) == 3
    assert np.abs(df0.sort_values("x").x.to_numpy() - [1.0, 5.2, 25.0]).max() < 0.05


def test_touching_spots_are_resolved():
    # The matched filter widens spots to σ√2, so two spots resolve when they are more than
    # about 2√2·σ ≈ 4.2 px apart (σ = 1.5 px); 5 px apart is resolved, 3.5 px is one spot.
    img = ref.render_spots((40, 40), [17.5, 22.5], [20.0, 20.0], 3000.0, 1.5, 5.0, None, poisson=False)
    df = locate(img)
    assert len(df) == 2
    np.testing.assert_allclose(np.sort(df.x.to_numpy()), [17.5, 22.5], atol=0.25)
    assert len(locate(img, min_separation_px=5.5)) == 1
    close = ref.render_spots((40, 40), [18.25, 21.75], [20.0, 20.0], 3000.0, 1.5, 5.0, None, poisson=False)
    assert len(locate(close)) == 1


def test_8_and_16_bit_give_the_same_spots():
    rng = np.random.default_rng(14)
    img16, xs, ys = _frame(rng, n=20, photons=1500, bg=20)
    img8 = np.clip(img16 // 2, 0, 255).astype(np.uint8)
    d16, d8 = locate(img16), locate(img8)
    r16, p16, _, _ = _match(d16, xs, ys)
    r8, p8, _, _ = _match(d8, xs, ys)
    assert r16 == 1.0 and r8 == 1.0 and p16 == 1.0 and p8 == 1.0
    a, b = d16.sort_values("x"), d8.sort_values("x")
    np.testing.assert_allclose(a.x.to_numpy(), b.x.to_numpy(), atol=0.15)
    assert np.median(a.mass.to_numpy() / b.mass.to_numpy()) == pytest.approx(2.0, rel=0.05)


def test_other_dtypes_are_converted():
    rng = np.random.default_rng(15)
    img, xs, ys = _frame(rng, n=10)
    ref_df = locate(img)
    for dt in (np.int32, np.float64, np.int16):
        pd.testing.assert_frame_equal(locate(img.astype(dt)), ref_df, atol=1e-4, check_exact=False)


@pytest.mark.parametrize("localisation", ["gaussian", "radial", "centroid"])
def test_invert_finds_dark_spots(localisation):
    rng = np.random.default_rng(16)
    h, w = 100, 120
    xs, ys = _grid_positions(rng, (h, w), 12)
    bright = ref.render_spots((h, w), xs, ys, 3000.0, 1.5, 0.0, None, poisson=False)
    dark = rng.poisson(np.clip(800.0 - bright, 0, None)).astype(np.uint16)
    # single-frame precision is a 5-sigma property; the pipeline default (3.5) relies on tracking to drop noise
    df = locate(dark, invert=True, localisation=localisation, threshold_snr=5.0)
    rec, prec, dx, dy = _match(df, xs, ys)
    assert rec >= 0.9 and prec == 1.0
    assert np.sqrt(np.mean(dx ** 2)) < 0.3
    assert (df["mass"] > 0).all()
    assert df["background"].median() == pytest.approx(800, rel=0.05)  # raw units, not inverted
    assert len(locate(dark, threshold_snr=5.0)) < 3  # not inverted: the dark spots are not detected


# ----------------------------------------------------------------- background
@pytest.mark.parametrize("binning", [1, 2])
def test_uneven_background_creates_no_false_spots(binning):
    rng = np.random.default_rng(17)
    h, w = 200, 260
    yy, xx = np.mgrid[0:h, 0:w]
    illum = 40 + 0.4 * xx + 0.2 * yy  # gradient
    illum += 400 * np.exp(-((xx - 90) ** 2 + (yy - 110) ** 2) / (2 * 25.0 ** 2))  # stray-light blob
    illum += 150 * np.exp(-((xx - 200) ** 2 + (yy - 50) ** 2) / (2 * 12.0 ** 2))  # smaller glare
    empty = rng.poisson(illum).astype(np.uint16)
    # at a 5-sigma threshold a frame of pure (uneven) background gives at most one noise spot
    assert len(locate(empty, threshold_snr=5.0, search_binning=binning)) <= 1
    xs, ys = _grid_positions(rng, (h, w), 40)
    img = rng.poisson(illum + ref.render_spots((h, w), xs, ys, 1500.0, 1.5, 0.0, None, poisson=False))
    rec, prec, _, _ = _match(locate(img.astype(np.uint16), threshold_snr=5.0, search_binning=binning), xs, ys)
    assert rec >= 0.9 and prec >= 0.95


@pytest.mark.parametrize("n", [1, 2, 7, 8])
def test_temporal_median_matches_numpy(n):
    from exonta.detect.background import _median_stack

    stack = np.random.default_rng(n).integers(0, 1000, (n, 9, 13)).astype(np.uint16)
    np.testing.assert_allclose(_median_stack(stack), np.median(stack.astype(np.float64), axis=0), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("n", [1, 7, 8, 64])
@pytest.mark.parametrize("q", [0.1, 0.25, 0.75])
def test_temporal_quantile_matches_numpy(dtype, n, q):
    from exonta.detect.background import _quantile_stack

    stack = np.random.default_rng(n).integers(0, 250, (n, 9, 13)).astype(dtype)
    np.testing.assert_array_equal(_quantile_stack(stack, q),
                                  np.quantile(stack.astype(np.float64), q, axis=0, method="midpoint"))


def test_background_quantile_follows_invert():
    from exonta.detect.background import background_quantile

    assert background_quantile(DetectParams()) == 0.25
    assert background_quantile(DetectParams(invert=True)) == 0.75
    assert background_quantile(DetectParams(background_quantile=0.5)) == 0.5


def test_slow_bright_particle_does_not_become_background():
    """A large, slow particle over the same pixels in 62 % of the sampled frames must stay out of the static
    background: with the temporal median its halo entered the background, and the negative hole it left in
    frame − background once it had moved on gave persistent false spots at the hole's rim (simulated 400 nm
    beads: 9 % of the counted detections; tests/analysis/test_concentration.py, case ps400)."""
    from exonta.detect.background import estimate_background

    rng = np.random.default_rng(5)
    n, h, w = 64, 64, 64
    yy, xx = np.mgrid[0:h, 0:w]
    halo = 150.0 * np.exp(-((xx - 32) ** 2 + (yy - 32) ** 2) / (2 * 6.0 ** 2))
    present = (np.arange(n) % 8) < 5  # 5 frames in 8, spread over the video
    frames = np.stack([rng.poisson(20.0 + halo * p) for p in present]).astype(np.uint8)
    centre = (slice(28, 37), slice(28, 37))
    bg = estimate_background(frames)  # default: lower quartile
    # the empty level within its noise (a higher quantile of the frames without the particle), not the halo (150)
    assert abs(float(bg[centre].mean()) - float(bg[:10, :10].mean())) < 2.0 * np.sqrt(20.0)
    med = estimate_background(frames, background_quantile=0.5)
    assert float(med[centre].mean()) - float(med[:10, :10].mean()) > 50.0  # the median took the halo in
    # dark particles (invert): the upper quartile, by the same argument
    dark = np.stack([rng.poisson(200.0 - halo * p) for p in present]).astype(np.uint8)
    bg_dark = estimate_background(dark, invert=True)
    assert abs(float(bg_dark[centre].mean()) - float(bg_dark[:10, :10].mean())) < 2.0 * np.sqrt(200.0)


def test_static_background_estimate_and_use():
    rng = np.random.default_rng(18)
    h, w, n = 80, 100, 30
    yy, xx = np.mgrid[0:h, 0:w]
    illum = 30 + 200 * np.exp(-((xx - 40) ** 2 + (yy - 30) ** 2) / (2 * 15.0 ** 2))
    truth = []
    frames = np.empty((n, h, w), np.uint16)
    for i in range(n):
        xs, ys = _grid_positions(rng, (h, w), 6)
        truth.append((xs, ys))
        frames[i] = rng.poisson(illum + ref.render_spots((h, w), xs, ys, 1200.0, 1.5, 0.0, None, poisson=False))
    bg = estimate_background(frames, DetectParams(background_frames=20))
    assert bg.dtype == np.float32 and bg.shape == (h, w)
    # the lower quartile of Poisson counts: 0.674 sigma below the mean (normal approximation)
    assert np.median(np.abs(bg - (illum - 0.674 * np.sqrt(illum)))) < 0.1 * np.sqrt(illum).mean() + 1.0
    assert np.array_equal(bg, estimate_background(FakeVideo(frames), background_frames=20))
    for mode in ("static", "rolling", "none"):
        df = locate_frames(frames, params=DetectParams(background=mode, threshold_snr=5.0),
                           chunk_frames=8)
        recs = []
        for i, (xs, ys) in enumerate(truth):
            rec, prec, _, _ = _match(df[df.frame == i], xs, ys)
            recs.append((rec, prec))
        recs = np.array(recs)
        assert recs[:, 0].mean() > 0.95 and recs[:, 1].mean() > 0.95, mode
        if mode != "none":
            # the reported background is the raw local level under the spot
            xi = np.clip(df.x.round().astype(int), 0, w - 1)
            yi = np.clip(df.y.round().astype(int), 0, h - 1)
            assert np.median(np.abs(df.background - illum[yi, xi])) < 5.0
    one = locate(frames[0], background=bg)
    assert _match(one, *truth[0])[0] == 1.0


# ----------------------------------------------------------------- accuracy
@pytest.mark.slow
@pytest.mark.parametrize("localisation, binning", [("gaussian", 1), ("radial", 1), ("gaussian", 2)])
def test_localisation_unbiased_and_near_mortensen_bound(localisation, binning):
    """Many isolated spots at moderate SNR (N = 1000 photons, b = 10 photons/px, σ = 1.5 px).

    Mortensen et al. 2010 eq. (6) (F = 1, σa² = σ² + a²/12, background b):
    σ_LSQ ≈ 0.074 px per axis. The Gaussian fit must be within 1.5× that and
    unbiased to < 0.02 px, also at a fixed sub-pixel offset (no pixel locking).
    """
    rng = np.random.default_rng(19)
    photons, bg, sigma = 1000.0, 10.0, 1.5
    bound = np.sqrt(ref.mortensen_lsq_variance(photons, sigma, bg))
    assert bound == pytest.approx(0.0743, abs=5e-4)
    errs = []
    for frac in (None, 0.3):
        dxs, dys = [], []
        for _ in range(20):  # 20 frames × 64 spots on an 8×8 grid (well separated)
            gx, gy = np.meshgrid(np.arange(8) * 16 + 10.0, np.arange(8) * 16 + 10.0)
            if frac is None:
                off = rng.uniform(-0.5, 0.5, (2, 64))
            else:
                off = np.full((2, 64), frac)
            xs, ys = gx.ravel() + off[0], gy.ravel() + off[1]
            img = ref.render_spots((140, 140), xs, ys, photons, sigma, bg, rng).astype(np.uint16)
            df = locate(img, localisation=localisation, search_binning=binning)
            rec, prec, dx, dy = _match(df, xs, ys)
            assert rec == 1.0 and prec == 1.0
            dxs.append(dx)
            dys.append(dy)
        dx, dy = np.concatenate(dxs), np.concatenate(dys)
        assert abs(dx.mean()) < 0.02 and abs(dy.mean()) < 0.02
        errs.append((np.sqrt(np.mean(dx ** 2)), np.sqrt(np.mean(dy ** 2))))
    if localisation == "gaussian":
        assert max(max(e) for e in errs) < 1.5 * bound
    else:
        assert max(max(e) for e in errs) < 2.0 * bound


@pytest.mark.slow
def test_recall_precision_on_dense_frames():
    """100 spots per 512×512 frame (denser than usual NTA), N = 400–2000 photons, b = 15/px:
    recall ≥ 0.95, precision ≥ 0.97 at a 5-sigma threshold, mass unbiased.

    Much denser scenes lose recall: the local-mean term of the band-pass lowers
    the filtered peak of a dim spot within ~8 px of a bright one.
    """
    rng = np.random.default_rng(20)
    recs, precs, mass_err = [], [], []
    for _ in range(6):
        pts = []  # truth at least 5 px apart
        while len(pts) < 100:
            p = rng.uniform(6, 506, 2)
            if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 > 25 for q in pts):
                pts.append(p)
        xs, ys = np.array(pts).T
        photons = rng.uniform(400, 2000, 100)
        img = ref.render_spots((512, 512), xs, ys, photons, 1.5, 15.0, rng).astype(np.uint16)
        df = locate(img, threshold_snr=5.0)
        rec, prec, _, _ = _match(df, xs, ys)
        recs.append(rec)
        precs.append(prec)
        d, i = cKDTree(np.c_[xs, ys]).query(df[["x", "y"]].to_numpy())
        mass_err.append(np.median(df.mass.to_numpy()[d < 1] / photons[i[d < 1]]))
    assert np.mean(recs) >= 0.95
    assert np.mean(precs) >= 0.97
    assert np.median(mass_err) == pytest.approx(1.0, abs=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("binning", [1, 2])
def test_false_positive_rate_on_pure_noise(binning):
    rng = np.random.default_rng(21)
    frames = rng.poisson(30.0, (20, 256, 256)).astype(np.uint16)
    df = locate_frames(frames, params=DetectParams(background="none", threshold_snr=5.0, search_binning=binning))
    assert len(df) / 20 < 1.0  # < 1 false spot per 65k-px frame at threshold_snr = 5


def test_concurrent_calls_from_threads_agree():
    """The reusable scratch is per call when busy: concurrent previews give the serial result."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(22)
    imgs = [_frame(rng, n=12)[0] for _ in range(6)]
    serial = [locate(im) for im in imgs]
    with ThreadPoolExecutor(3) as ex:
        par = list(ex.map(locate, imgs))
    for a, b in zip(serial, par):
        pd.testing.assert_frame_equal(a, b)


def test_rolling_background_follows_illumination_change():
    rng = np.random.default_rng(23)
    h, w, n = 64, 64, 40
    yy, xx = np.mgrid[0:h, 0:w]
    truth, frames = [], np.empty((n, h, w), np.uint16)
    for i in range(n):
        level = 30 if i < n // 2 else 300  # the light source brightens half-way
        illum = level * (1 + np.exp(-((xx - 32) ** 2 + (yy - 32) ** 2) / (2 * 10.0 ** 2)))
        xs, ys = _grid_positions(rng, (h, w), 4)
        truth.append((xs, ys))
        frames[i] = rng.poisson(illum + ref.render_spots((h, w), xs, ys, 3000.0, 1.5, 0.0, None, poisson=False))
    df = locate_frames(frames, params=DetectParams(background="rolling", background_frames=10), chunk_frames=5)
    rec = np.mean([_match(df[df.frame == i], *truth[i])[0] for i in range(n)])
    prec = np.mean([_match(df[df.frame == i], *truth[i])[1] for i in range(n)])
    assert rec > 0.95 and prec > 0.95
    late = df[df.frame >= n // 2 + 5]
    assert late.background.median() > 300  # the local background follows the change


@pytest.mark.slow
def test_saturated_8bit_spots_are_not_found_twice():
    """Simulated 8-bit 200 nm beads (clipped tops, bright halos): a particle gives one detection, not two
    fits converging on it (before the duplicate merge about half of all detections were such pairs)."""
    from exonta.simulate import SimulationConfig, simulate

    sim = simulate(SimulationConfig(width_px=256, height_px=192, n_frames=40, concentration_per_ml=1e8, bit_depth=8,
                                    components=[{"diameter_nm": 200.0, "refractive_index": 1.59}], seed=5))
    assert (sim.frames == 255).any()  # the tops are clipped
    df = locate_frames(sim.frames)
    assert len(df) > 100
    close = 0
    for _, g in df.groupby("frame"):
        if len(g) > 1:
            d, i = cKDTree(g[["x", "y"]].to_numpy()).query(g[["x", "y"]].to_numpy(), k=2)
            size = np.maximum(g["size_px"].to_numpy(), 1.0)
            close += int(np.sum(d[:, 1] < 2.0 * np.minimum(size, size[i[:, 1]])))
    assert close == 0
    # one candidate per clipped region (detect._kernels._merge_saturated) now removes these pairs before the
    # fits, so the fit-based merge finds nothing left to merge here; it must not add detections either
    off = locate_frames(sim.frames, merge_within_sigma=0.0)
    assert len(off) >= len(df)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float64"])
def test_load_kernels_loads_exactly_what_detection_uses(dtype):
    """load_kernels (run by pipeline.prepare in a background thread) must load the signatures locate_frames
    then calls, or it only costs time: no new specialisation may appear afterwards (fresh process)."""
    import subprocess
    import sys

    code = f"""
import numpy as np
from exonta.detect import locate_frames, _kernels as K, background as B
from exonta.detect.locate import load_kernels
load_kernels(np.{dtype})
before = (len(K._locate_chunk.signatures), len(B._order_stat_int_kernel.signatures))
a = np.random.default_rng(0).integers(0, 200, (12, 48, 40)).astype(np.{dtype})
locate_frames(a)
after = (len(K._locate_chunk.signatures), len(B._order_stat_int_kernel.signatures))
print(before, after)
assert before == after and before[0] == 1, (before, after)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _recall_and_false(sim, feats, z_max_um):
    """Share of the in-focus (|z| < z_max_um) truth beads with a detection within 3 px; detections per frame
    farther than 3 px from every bead; beads with more than one detection within 3 px."""
    h, w = sim.frames.shape[1:]
    tr = sim.truth[sim.truth.in_field]
    tr = tr[(tr.x > 8) & (tr.x < w - 9) & (tr.y > 8) & (tr.y < h - 9)]
    found, unmatched, twice = [], 0, 0
    for f in range(sim.frames.shape[0]):
        g, t = feats[feats.frame == f], tr[tr.frame == f]
        if len(t) == 0:
            unmatched += len(g)
            continue
        d, i = cKDTree(t[["x", "y"]].to_numpy()).query(g[["x", "y"]].to_numpy())
        unmatched += int((d >= 3).sum())
        hits = np.bincount(i[d < 3], minlength=len(t))
        found += list(hits[np.abs(t.z_um.to_numpy()) < z_max_um] > 0)
        twice += int((hits > 1).sum())
    return float(np.mean(found)), unmatched / sim.frames.shape[0], twice, len(found)


@pytest.mark.parametrize("binning", [1, 2])
def test_clipped_200nm_beads_are_found_once_each_on_an_8bit_camera(binning):
    """Issue 5: 200 nm PS beads (64× a 100 nm bead) clip the simulator's 8-bit camera near focus.

    A bright spot filled its noise tile, whose noise rose ~100×, and the bead fell below its own threshold
    (recall 0.71/0.40/0.35 at |z| = 0–2/2–4/4–6 µm). With the capped tile noise, one candidate per clipped
    region and the halo test, every bead within 6 µm of focus is found, and the frames have no more
    unmatched detections than a frame with no bead at all (same noise): no halo or rim maxima.
    """
    from exonta.simulate import SimulationConfig, simulate

    cfg = dict(n_frames=12, seed=2002, width_px=640, height_px=480)
    p = DetectParams(background="none", search_binning=binning)
    sim = simulate(SimulationConfig(concentration_per_ml=1e8, components=[{"diameter_nm": 200.0}], **cfg))
    assert (sim.frames == 255).any()  # clipped
    recall, unmatched, twice, n = _recall_and_false(sim, locate_frames(sim.frames, p), 6.0)
    blank = simulate(SimulationConfig(concentration_per_ml=1e3, components=[{"diameter_nm": 100.0}], **cfg))
    noise = len(locate_frames(blank.frames, p)) / cfg["n_frames"]
    assert n >= 50 and recall > 0.9, (recall, n)
    assert unmatched <= noise + 3.0, (unmatched, noise)
    assert twice <= 0.05 * n, twice


def test_the_filter_noise_gain_is_the_noise_of_filtered_white_noise():
    """filter_noise_gain: sigma of the matched-filtered frame per unit pixel noise (the binned search's kernel
    too), against the filtered noise itself (reference band-pass)."""
    from exonta.detect.locate import filter_noise_gain, gaussian_kernel

    z = np.random.default_rng(0).normal(size=(600, 600))
    for sigma, box_half in ((1.5, 6), (0.8, 3), (3.0, 12)):
        measured = ref.bandpass_ref(z, sigma, box_half)[40:-40, 40:-40].std()
        assert filter_noise_gain(gaussian_kernel(sigma), box_half) == pytest.approx(measured, rel=0.03)


@pytest.mark.parametrize("binning", [1, 2])
def test_a_noise_floor_keeps_faint_blobs_on_a_flattened_background_out(binning):
    """A background a codec flattened to exactly 0, with single pixels one grey level up (what compression leaves
    of the noise) and real spots (peak 60): without a floor the noise measures 0 and every such pixel is a spot;
    with the rounding-noise floor 1/sqrt(12) (a lone 1-level pixel filters to 1.3 floor sigmas) only the real
    spots remain, and their snr is at most their filtered peak over the floor (equal in tiles of flat zeros)."""
    from exonta.detect.locate import filter_noise_gain, gaussian_kernel

    rng = np.random.default_rng(4)
    shape = (160, 200)
    xs, ys = _grid_positions(rng, shape, 72, margin=12)  # distinct cells of a 12-px grid
    img = np.zeros(shape)
    for x, y in zip(xs[:12], ys[:12]):  # 12 real spots
        spot = np.outer(ref.pixel_gauss_1d(shape[0], y, 1.5), ref.pixel_gauss_1d(shape[1], x, 1.5))
        img += 60.0 * spot * 2 * np.pi * 2.25  # peak 60
    frame = np.round(img).astype(np.uint8)
    frame[np.rint(ys[12:]).astype(int), np.rint(xs[12:]).astype(int)] = 1  # 60 lone pixels
    base = dict(background="none", search_binning=binning, psf_sigma_px=1.5)
    loose = locate(frame, DetectParams(**base))
    floored = locate(frame, DetectParams(**base, noise_floor=1 / np.sqrt(12)))
    assert len(loose) >= 12 + 10  # lone pixels taken for spots (others fail the fit)
    assert len(floored) == 12 and _match(floored, xs[:12], ys[:12])[:2] == (1.0, 1.0)
    peak = ref.bandpass_ref(frame, 1.5, 6)
    floor_f = filter_noise_gain(gaussian_kernel(1.5), 6) / np.sqrt(12)
    rows, cols = np.rint(floored["y"]).astype(int), np.rint(floored["x"]).astype(int)
    if binning == 1:  # the floor bounds the noise from below (tiles holding a spot measure more)
        bound = peak[rows, cols] / floor_f
        assert (floored["snr"].to_numpy() <= bound * (1 + 1e-4)).all()
        assert np.isclose(floored["snr"].to_numpy(), bound, rtol=1e-4).sum() >= 2


def test_first_frames_and_the_background_info():
    """``FirstFrames`` streams the first n frames of a source (a detection on it equals one on the sliced
    array), and ``info`` hands out the background the detection subtracted (then usable as ``background=``)."""
    from exonta.detect.background import FirstFrames

    rng = np.random.default_rng(5)
    frames = rng.poisson(20.0, (30, 48, 64)).astype(np.uint16)
    for i in range(30):  # a spot that moves (a still one would be background)
        frames[i, 20:23, 8 + i:11 + i] += 200
    first = FirstFrames(frames, 12)
    assert first.n_frames == 12 and first.frame_shape == (48, 64)
    np.testing.assert_array_equal(first.read(11), frames[11])
    with pytest.raises(IndexError):
        first.read(12)
    assert FirstFrames(frames, 100).n_frames == 30
    info = {}
    whole = locate_frames(frames, info=info)
    bg = info["background"]
    assert bg is not None and bg.shape == (48, 64) and 14.0 < float(np.median(bg)) <= 20.0  # a low temporal quantile
    a = locate_frames(FirstFrames(frames, 12), background=bg)
    b = locate_frames(frames[:12], background=bg)
    pd.testing.assert_frame_equal(a, b)
    assert a["frame"].max() == 11 and len(a) > 0
    pd.testing.assert_frame_equal(a, whole[whole["frame"] < 12].reset_index(drop=True))
    info = {}
    locate_frames(frames, params=DetectParams(background="none"), info=info)
    assert info["background"] is None
