"""Estimate the width of the particle images (the spot's Gaussian sigma) from the video itself.

The detector's matched filter, minimum separation, fitting window and edge margin all scale with
``psf_sigma_px``. NTA videos of 30–200 nm particles have diffraction-limited spots (σ ≈ 1–2 px),
but the videos users try first are often micron-sized beads on an ordinary microscope, whose
images are several pixels wide (a 1 µm bead at 0.1 µm/px: σ ≈ 3–4 px; in bright-field a dark
disc with a bright rim). Filtering those at σ = 1.5 px splits one bead into several maxima and
localises it poorly, so the width is measured first.

Method (scale-space blob size, Lindeberg 1998): the scale-normalised Laplacian of Gaussian
``−σ² ∇²(G_σ * W)`` of a Gaussian spot of standard deviation ``s`` peaks, at the spot centre,
exactly at ``σ = s``: the response is ``A σ² / (π (s² + σ²)²)``. For a pixel-integrated spot the
variance is ``s² + 1/12`` px², which is removed from the result. We

1. form ``W = sign·(frame − background)`` (``sign = −1`` for dark particles, background = the
   per-pixel temporal median of the given frames, or each frame's median for fewer than 5
   frames);
2. find candidate spots: local maxima of the best noise-normalised response over a few coarse
   scales (1, 2, 4, 8, 16 px; the larger ones on a binned copy), at least 8 noise sigmas, away
   from the border; spots with a clipped (saturated) pixel are skipped (flat tops look wider);
3. for each candidate, refine its centre (centroid), evaluate the normalised LoG there on a fine
   scale grid (12 per octave from 0.6 px) and fit the Gaussian-spot response above around its
   maximum (least squares weighted by σ², the inverse noise variance of the response); reject
   candidates whose maximum is at the ends of the scale range or that have a neighbour closer
   than 3 × the larger scale (overlapping spots look wider);
4. return the 25th percentile of the accepted spots' widths (defocus and motion blur only widen
   a spot; the in-focus width is what the detector should match).

For non-Gaussian images (a bright-field bead: dark disc, bright rim, Airy rings) the result is
the width of the Gaussian whose matched filter responds most, which is what the detector needs.
Accuracy on Poisson-noise Gaussian spots of σ = 1–9 px: within 6 % (slightly low, a selection
effect of noise); on the simulated NTA videos (1.5 px PSF, motion-blurred): 1.6–1.9 px.

The estimate is a pure function of the pixels given; :func:`exonta.pipeline.prepare` calls it
on a few frames spread over the video.

References
----------
Lindeberg, T. Feature detection with automatic scale selection. Int. J. Comput. Vis. 30:79–116
(1998).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..errors import ExontaInputError

__all__ = ["PsfEstimate", "estimate_psf_sigma"]

#: Range of spot sigmas the estimator can return, px (DetectParams accepts 0.3 < σ ≤ 20).
SIGMA_MIN_PX = 0.6
SIGMA_MAX_PX = 16.0
_COARSE_SCALES = (1.0, 2.0, 4.0, 8.0, 16.0)
#: Percentile of the per-spot widths returned: defocus and motion blur only widen spots, so a low
#: quantile is the in-focus width (the median is 10–15 % wider on simulated NTA videos).
QUANTILE = 25.0
_FINE_STEPS_PER_OCTAVE = 12


@dataclass(frozen=True)
class PsfEstimate:
    """Result of :func:`estimate_psf_sigma`.

    Attributes
    ----------
    sigma_px : float or None
        Gaussian sigma of the in-focus spot, px (None when no usable spot was found).
    n_spots : int
        Number of spots the median was taken over.
    spread_px : float
        Interquartile range of the per-spot estimates, px (a wide spread means mixed sizes or
        strong defocus).
    """

    sigma_px: float | None
    n_spots: int
    spread_px: float


def _working_frames(frames: np.ndarray, background: np.ndarray | None, invert: bool) -> np.ndarray:
    a = np.asarray(frames, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] == 0 or min(a.shape[1:]) < 8:
        raise ExontaInputError(f"estimate_psf_sigma needs frames of shape (n, h, w) with h, w ≥ 8, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ExontaInputError("the frames contain NaN or infinite values")
    if background is not None:
        bg = np.asarray(background, dtype=np.float32)
        if bg.shape != a.shape[1:]:
            raise ExontaInputError(f"background has shape {bg.shape} but the frames are {a.shape[1:]}")
        w = a - bg[None]
    elif a.shape[0] >= 5:
        w = a - np.median(a, axis=0)[None]
    else:
        w = a - np.median(a, axis=(1, 2), keepdims=True)
    return -w if invert else w


def _norm_log(img: np.ndarray, sigma: float) -> np.ndarray:
    """Scale-normalised, sign-flipped LoG: positive at bright blobs of std ≈ sigma."""
    return -(sigma * sigma) * ndi.gaussian_laplace(img, sigma, mode="nearest", truncate=3.0)


def _binned_norm_log(img: np.ndarray, sigma: float) -> np.ndarray:
    """:func:`_norm_log` at a coarse scale on a b×b-binned copy (b = σ/2, a power of 2), repeated
    back to full size: the normalised LoG is scale invariant, and candidates only need to be
    found to within a pixel or two (they are refined afterwards); 5–20× faster at σ ≥ 4."""
    b = 1
    while 2 * b <= sigma / 2:
        b *= 2
    if b == 1:
        return _norm_log(img, sigma)
    h, w = img.shape
    hb, wb = h // b, w // b
    small = img[:hb * b, :wb * b].reshape(hb, b, wb, b).mean(axis=(1, 3))
    r = np.repeat(np.repeat(_norm_log(small, sigma / b), b, axis=0), b, axis=1)
    out = np.full((h, w), np.float32(r.min()) if r.size else 0, np.float32)
    out[:hb * b, :wb * b] = r
    return out


def _robust_sd(a: np.ndarray) -> float:
    med = np.median(a)
    return float(1.4826 * np.median(np.abs(a - med))) or float(np.std(a)) or 1.0


def _candidates(w: np.ndarray, max_candidates: int, min_snr: float):
    """(frame, row, col, score) of the strongest blob candidates over coarse scales."""
    k, h, wd = w.shape
    out = []
    for i in range(k):
        best = np.full((h, wd), -np.inf, np.float32)
        best_scale = np.zeros((h, wd), np.float32)
        for s in _COARSE_SCALES:
            if 3 * s > min(h, wd) / 2:
                break
            r = _binned_norm_log(w[i], s)
            r = r / _robust_sd(r)
            upd = r > best
            best[upd] = r[upd]
            best_scale[upd] = s
        peak = (best == ndi.maximum_filter(best, size=5, mode="nearest")) & (best > min_snr)
        # one candidate per plateau (the binned coarse scales repeat values over b×b blocks)
        lab, n_lab = ndi.label(peak)
        if n_lab == 0:
            continue
        com = np.asarray(ndi.center_of_mass(peak, lab, np.arange(1, n_lab + 1)), float).reshape(-1, 2)
        rows, cols = np.rint(com[:, 0]).astype(int), np.rint(com[:, 1]).astype(int)
        margin = np.ceil(1.5 * best_scale[rows, cols]).astype(int) + 2
        keep = (rows >= margin) & (cols >= margin) & (rows < h - margin) & (cols < wd - margin)
        rows, cols = rows[keep], cols[keep]
        score = best[rows, cols]
        order = np.argsort(score)[::-1][:max_candidates]
        out += [(i, int(rows[j]), int(cols[j]), float(score[j]), float(best_scale[rows[j], cols[j]]))
                for j in order]
    out.sort(key=lambda t: -t[3])
    return out[: max_candidates * 2]


def _refine_centre(w: np.ndarray, row: int, col: int, scale: float) -> tuple[float, float]:
    """Sub-pixel centre: centroid of the positive part of ``w`` within ``1.5·scale`` of (row, col)."""
    h, wd = w.shape
    rad = max(1, int(math.ceil(1.5 * scale)))
    y0, y1 = max(row - rad, 0), min(row + rad + 1, h)
    x0, x1 = max(col - rad, 0), min(col + rad + 1, wd)
    p = np.clip(w[y0:y1, x0:x1].astype(np.float64), 0, None)
    tot = p.sum()
    if tot <= 0:
        return float(row), float(col)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return float((p * yy).sum() / tot), float((p * xx).sum() / tot)


def _response(w: np.ndarray, yc: float, xc: float, sigma: float) -> float | None:
    """Normalised LoG response ``−σ²∇²G_σ * w`` at the sub-pixel point (yc, xc), or None
    when the kernel window does not fit in the frame. The kernel is made zero-sum, so a
    constant offset left in ``w`` does not matter."""
    h, wd = w.shape
    rad = int(math.ceil(3.5 * sigma))
    r0, c0 = int(round(yc)), int(round(xc))
    if r0 - rad < 0 or c0 - rad < 0 or r0 + rad >= h or c0 + rad >= wd:
        return None
    dy = np.arange(r0 - rad, r0 + rad + 1) - yc
    dx = np.arange(c0 - rad, c0 + rad + 1) - xc
    q = (dy[:, None] ** 2 + dx[None, :] ** 2) / (sigma * sigma)
    ker = (2.0 - q) * np.exp(-0.5 * q) / (2 * math.pi * sigma * sigma)
    ker -= ker.mean()
    return float((ker * w[r0 - rad:r0 + rad + 1, c0 - rad:c0 + rad + 1]).sum())


def _scale_at(w: np.ndarray, yc: float, xc: float,
              scales: np.ndarray) -> tuple[float | None, float]:
    """Scale of the maximum normalised LoG response at the spot centre (yc, xc) and that response."""
    resp: list[float] = []
    best, best_s = -math.inf, 0.0
    for s in scales:
        v = _response(w, yc, xc, float(s))
        if v is None:
            break
        resp.append(v)
        if v > best:
            best, best_s = v, float(s)
        elif s > 2.5 * best_s and v < 0.5 * best:  # well past the maximum (the fit uses ≤ 2× it)
            break
    if len(resp) < 3:
        return None, math.nan
    resp_a = np.asarray(resp)
    sc = scales[:resp_a.size]
    j = int(np.argmax(resp_a))
    if j == 0 or j == resp_a.size - 1:
        return None, float(resp_a[j])
    # least-squares fit of the Gaussian-spot response A σ²/(s² + σ²)² over σ in [σ_max/2, 2 σ_max],
    # weighted by σ² (white noise in the normalised response has variance ∝ 1/σ²); less biased
    # by noise than the arg-max itself, which favours the noisier small scales
    use = (sc >= sc[j] / 2) & (sc <= sc[j] * 2)
    x, y, wt = sc[use], resp_a[use], sc[use] ** 2
    cand = np.geomspace(sc[j] / 1.6, sc[j] * 1.6, 161)
    model = x[None, :] ** 2 / (cand[:, None] ** 2 + x[None, :] ** 2) ** 2
    amp = (wt * model * y).sum(axis=1) / (wt * model * model).sum(axis=1)
    cost = (wt * (y[None, :] - amp[:, None] * model) ** 2).sum(axis=1)
    k = int(np.argmin(cost))
    if k == 0 or k == cand.size - 1:
        return None, float(resp_a[j])
    return float(cand[k]), float(resp_a[j])


def estimate_psf_sigma(
    frames: np.ndarray,
    background: np.ndarray | None = None,
    invert: bool = False,
    max_spots: int = 100,
    min_snr: float = 8.0,
) -> PsfEstimate:
    """Estimate the Gaussian sigma of the particle images in a few frames.

    Parameters
    ----------
    frames : ndarray (n, h, w) or (h, w)
        A few raw frames (any real dtype), e.g. 4 frames spread over the video.
    background : ndarray (h, w), optional
        Background in the same units; default: the temporal median of ``frames`` (≥ 5 frames)
        or each frame's median.
    invert : bool
        Dark particles on a light background (bright-field).
    max_spots : int
        Number of the strongest candidate spots examined.
    min_snr : float
        Minimum candidate strength, in robust noise sigmas of the normalised LoG response.

    Returns
    -------
    PsfEstimate
        ``sigma_px`` is None when fewer than 3 usable spots were found (an empty or very noisy
        video); the caller then keeps its default.

    References
    ----------
    Lindeberg, Int. J. Comput. Vis. 30:79 (1998) (automatic scale selection).
    """
    w = _working_frames(frames, background, invert)
    k, h, wd = w.shape
    raw = np.asarray(frames)
    raw = raw[None] if raw.ndim == 2 else raw
    # clipped pixels (the dtype's extreme on the particle side) flatten a spot's top: skip such spots
    if raw.dtype.kind in "ui":
        clip = np.iinfo(raw.dtype).min if invert else np.iinfo(raw.dtype).max
        saturated = raw == clip
    else:
        saturated = None
    smax = min(SIGMA_MAX_PX, (min(h, wd) - 4) / 8.0)
    if smax <= SIGMA_MIN_PX * 1.5:
        return PsfEstimate(None, 0, math.nan)
    n_fine = max(8, int(round(_FINE_STEPS_PER_OCTAVE * math.log2(smax / SIGMA_MIN_PX))) + 1)
    scales = np.geomspace(SIGMA_MIN_PX, smax, n_fine)
    cands = _candidates(w, max(2 * max_spots // max(k, 1), 4), min_snr)[:max_spots]
    found = []  # (frame, row, col, sigma_eff, response)
    for f, r, c, score, coarse in cands:
        if saturated is not None:
            rad = int(math.ceil(2 * coarse))
            if saturated[f, max(r - rad, 0):r + rad + 1, max(c - rad, 0):c + rad + 1].any():
                continue
        yc, xc = _refine_centre(w[f], r, c, coarse)
        s, _ = _scale_at(w[f], yc, xc, scales)
        if s is not None:  # ranked by the coarse score, not by the fine response (no noise selection)
            found.append((f, yc, xc, s, score))
    # one entry per spot: candidates whose centres converged within one scale are the same spot
    found.sort(key=lambda t: -t[4])
    spots: list[tuple[int, float, float, float, float]] = []
    for cand in found:
        f, y, x, s, _ = cand
        if not any(g == f and math.hypot(yg - y, xg - x) < max(s, sg) for g, yg, xg, sg, _ in spots):
            spots.append(cand)
    # isolation: drop spots with a neighbour in the same frame closer than 3 × the larger scale
    ok = []
    for i, (f, y, x, s, score) in enumerate(spots):
        close = any(g == f and j != i and math.hypot(yg - y, xg - x) < 3.0 * max(s, sg)
                    for j, (g, yg, xg, sg, _) in enumerate(spots))
        if not close:
            ok.append((s, score))
    if len(ok) < 3:
        return PsfEstimate(None, len(ok), math.nan)
    est = np.array([s for s, _ in ok])
    sig_eff = float(np.percentile(est, QUANTILE))
    sigma = math.sqrt(max(sig_eff * sig_eff - 1.0 / 12.0, SIGMA_MIN_PX ** 2))
    q75, q25 = np.percentile(est, [75, 25])
    return PsfEstimate(sigma, int(est.size), float(q75 - q25))
