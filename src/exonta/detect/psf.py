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

Implementation: numpy only, because it runs in every cold ``exonta analyze`` process (importing
``scipy.ndimage`` costs 0.15–0.5 s there, and loading each cached numba kernel tens of ms). The
filters are those of ``scipy.ndimage`` (``gaussian_laplace``, ``maximum_filter`` with
``mode="nearest"``, ``label`` and ``center_of_mass``), written as separable float32
shift-and-add passes, running maxima and label propagation over the set pixels; the tests
compare them with scipy. The fine-scale responses of one spot are a few matrix products on one
window (the LoG kernel is a sum of three separable terms), and the noise median and MAD come
from one sort. About 0.1 s for four 512×512 frames (0.4 s with scipy.ndimage).

References
----------
Lindeberg, T. Feature detection with automatic scale selection. Int. J. Comput. Vis. 30:79–116
(1998).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ExontaInputError
from .overlay import bright_clip_level

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


def _gaussian_kernels_1d(sigma: float, truncate: float) -> tuple[np.ndarray, np.ndarray]:
    """Sampled 1-D Gaussian (unit sum) and its second derivative, as ``scipy.ndimage`` builds them.

    Parameters
    ----------
    sigma : float
        Standard deviation, px.
    truncate : float
        Half-width of the kernels in sigmas: radius ``int(truncate·sigma + 0.5)`` px.

    Returns
    -------
    g, d2 : ndarray (2·radius + 1,), float64
        ``g = exp(−x²/2σ²) / Σ exp(−x²/2σ²)`` and ``d2 = g·(x²/σ⁴ − 1/σ²)`` (both symmetric).
    """
    rad = int(truncate * float(sigma) + 0.5)
    x = np.arange(-rad, rad + 1, dtype=np.float64)
    s2 = float(sigma) * float(sigma)
    g = np.exp(-0.5 / s2 * x * x)
    g /= g.sum()
    return g, g * (x * x / (s2 * s2) - 1.0 / s2)


def _symmetric_pass(p: np.ndarray, weights: np.ndarray, axis: int, n: int) -> np.ndarray:
    """Correlate ``p`` along ``axis`` with the symmetric ``weights`` (odd length ``2r + 1``), keeping
    the ``n`` outputs that have ``r`` samples on both sides (``p`` is padded by ``r`` on that axis).
    float32 shift-and-add: one multiply per pair of taps."""
    rad = (weights.size - 1) // 2

    def win(k: int) -> np.ndarray:
        return p[k:k + n] if axis == 0 else p[:, k:k + n]

    out = win(rad) * np.float32(weights[rad])
    tmp = np.empty_like(out)
    for k in range(1, rad + 1):
        np.add(win(rad - k), win(rad + k), out=tmp)
        tmp *= np.float32(weights[rad + k])
        out += tmp
    return out


def _gaussian_laplace_nearest(img: np.ndarray, sigma: float, truncate: float = 3.0) -> np.ndarray:
    """Laplacian of Gaussian of a 2-D image, border mode "nearest" (the edge pixel repeated).

    The separable sum ``∂²_y(G_σ * img) + ∂²_x(G_σ * img)`` with the kernels of
    :func:`_gaussian_kernels_1d`: the same filter as ``scipy.ndimage.gaussian_laplace(img, sigma,
    mode="nearest", truncate=truncate)``, computed in float32 (agrees with it to ~1e-6 of the
    image's largest absolute value).

    Parameters
    ----------
    img : ndarray (h, w)
        Image (any real dtype; computed as float32).
    sigma : float
        Gaussian standard deviation, px.
    truncate : float
        Kernel half-width in sigmas.

    Returns
    -------
    ndarray (h, w), float32
    """
    g, d2 = _gaussian_kernels_1d(sigma, truncate)
    rad = (g.size - 1) // 2
    h, w = img.shape
    # padding both axes once: filtering the repeated edge rows along x gives the repeated edge
    # rows of the x-filtered image, so the y passes need no second padding
    p = np.pad(np.asarray(img, dtype=np.float32), rad, mode="edge")
    gx = _symmetric_pass(p, g, 1, w)
    dxx = _symmetric_pass(p, d2, 1, w)
    out = _symmetric_pass(gx, d2, 0, h)
    out += _symmetric_pass(dxx, g, 0, h)
    return out


def _max_filter_nearest(a: np.ndarray, size: int) -> np.ndarray:
    """Maximum over the ``size × size`` square around each pixel (``size`` odd), border mode
    "nearest": ``scipy.ndimage.maximum_filter(a, size=size, mode="nearest")``, exactly."""
    if size % 2 != 1 or size < 1:
        raise ValueError(f"size must be a positive odd integer, got {size}")
    rad = size // 2
    h, w = a.shape
    p = np.pad(a, rad, mode="edge")
    rows = p[0:h].copy()
    for k in range(1, size):
        np.maximum(rows, p[k:k + h], out=rows)
    out = rows[:, 0:w].copy()
    for k in range(1, size):
        np.maximum(out, rows[:, k:k + w], out=out)
    return out


def _component_centroids(mask: np.ndarray) -> np.ndarray:
    """Centroids of the 4-connected components of a boolean image.

    Components are numbered as ``scipy.ndimage.label`` numbers them (by their first pixel in
    raster order), and the centroids equal ``scipy.ndimage.center_of_mass(mask, labels, ...)``.
    Made for sparse masks (local-maximum plateaus): works on the list of set pixels, joining
    right and lower neighbours by minimum-label propagation with pointer jumping.

    Parameters
    ----------
    mask : ndarray (h, w), bool

    Returns
    -------
    ndarray (n_components, 2), float64
        (row, col) of each component, px.
    """
    mask = np.asarray(mask, dtype=bool)
    w = mask.shape[1]
    flat = np.flatnonzero(mask)  # raster order
    rows, cols = np.divmod(flat, w)
    right = np.flatnonzero(mask[:, :-1] & mask[:, 1:])  # in (h, w − 1) raster indices
    down = np.flatnonzero(mask[:-1] & mask[1:])  # in (h − 1, w) raster indices, = flat index of the top one
    if right.size == 0 and down.size == 0:
        return np.stack([rows, cols], axis=1).astype(np.float64)
    left_px = (right // (w - 1)) * w + right % (w - 1)
    a = np.searchsorted(flat, np.concatenate([left_px, down]))
    b = np.searchsorted(flat, np.concatenate([left_px + 1, down + w]))
    lab = np.arange(flat.size)
    while True:
        m = np.minimum(lab[a], lab[b])
        new = lab.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        new = new[new]  # pointer jumping: labels are indices of pixels of the same component
        if np.array_equal(new, lab):
            break
        lab = new
    # lab = index of each component's first pixel (raster order), so np.unique keeps label order
    _, comp = np.unique(lab, return_inverse=True)
    count = np.bincount(comp).astype(np.float64)
    return np.stack([np.bincount(comp, weights=rows.astype(np.float64)) / count,
                     np.bincount(comp, weights=cols.astype(np.float64)) / count], axis=1)


def _norm_log(img: np.ndarray, sigma: float) -> np.ndarray:
    """Scale-normalised, sign-flipped LoG: positive at bright blobs of std ≈ sigma."""
    return -(sigma * sigma) * _gaussian_laplace_nearest(img, sigma, truncate=3.0)


def _bin_factor(sigma: float) -> int:
    """Binning of the coarse scale ``sigma`` in :func:`_scaled_response`: the largest power of 2
    ``b`` with ``b ≤ sigma/2`` (1 below σ = 4 px)."""
    b = 1
    while 2 * b <= sigma / 2:
        b *= 2
    return b


def _kth_of_two_sorted(a: np.ndarray, b: np.ndarray, k: int):
    """The ``k``-th smallest (0-based) element of the union of two non-decreasing arrays
    (binary search on the number of elements taken from ``a``)."""
    lo, hi = max(0, k + 1 - b.size), min(k + 1, a.size)
    while lo < hi:
        i = (lo + hi) // 2
        if a[i] < b[k - i]:  # the k + 1 smallest hold more than i elements of a
            lo = i + 1
        else:
            hi = i
    j = k + 1 - lo
    if lo == 0:
        return b[j - 1]
    if j == 0:
        return a[lo - 1]
    return max(a[lo - 1], b[j - 1])


def _median_and_mad(a: np.ndarray):
    """``np.median(a)`` and ``np.median(np.abs(a − median))``, bit for bit, with one sort.

    The absolute deviations of the sorted values are two sorted runs (decreasing below the
    median, increasing above), so their middle order statistics are found by binary search
    instead of a second selection. Sorting (SIMD-vectorised in numpy 2 on x86) is also faster than
    ``np.partition`` on 10⁵–10⁶ float32 values.
    """
    s = np.sort(a, axis=None)
    n = s.size
    mid = slice(n // 2 - 1, n // 2 + 1) if n % 2 == 0 else slice(n // 2, n // 2 + 1)
    med = np.mean(s[mid], axis=0)  # as np.median: the mean of the middle one or two values
    dev = np.abs(s - med)
    split = int(np.searchsorted(s, med))
    below, above = dev[:split][::-1], dev[split:]
    ks = (n // 2 - 1, n // 2) if n % 2 == 0 else (n // 2,)
    mid_dev = np.array([_kth_of_two_sorted(below, above, k) for k in ks], dtype=dev.dtype)
    return med, np.mean(mid_dev, axis=0)


def _robust_sd(a: np.ndarray) -> float:
    """1.4826 × the median absolute deviation of ``a`` (its std for a normal distribution); the
    standard deviation when the MAD is 0, and 1 when that is 0 too."""
    _, mad = _median_and_mad(a)
    return float(1.4826 * mad) or float(np.std(a)) or 1.0


def _bin2(a: np.ndarray) -> np.ndarray:
    """Means of the 2×2 blocks of ``a`` (float32; an odd last row or column is dropped)."""
    h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
    out = a[0:h:2, 0:w:2] + a[1:h:2, 0:w:2]
    out += a[0:h:2, 1:w:2]
    out += a[1:h:2, 1:w:2]
    out *= np.float32(0.25)
    return out


def _scaled_response(small: np.ndarray, b: int, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """:func:`_norm_log` at a coarse scale divided by its robust noise sigma (median absolute
    deviation), at full size.

    For σ ≥ 4 px it is computed on a b×b-binned copy (b = :func:`_bin_factor`) and repeated
    back to full size: the normalised LoG is scale invariant, and candidates only need to be
    found to within a pixel or two (they are refined afterwards); 5–20× faster. When the image
    is a whole number of bins, the median and MAD of the repeated copy are those of the binned
    one (every value repeated b² times), so the noise is measured on the small array; otherwise
    the uncovered border is filled with the minimum and the noise measured on the full copy.

    Parameters
    ----------
    small : ndarray (h // b, w // b), float32
        The working frame binned b×b (block means of its top-left ``b·(h // b) × b·(w // b)``
        pixels); the frame itself for b = 1.
    b : int
        Bin side, px.
    shape : (h, w)
        Shape of the frame.
    sigma : float
        Scale, full-resolution px.

    Returns
    -------
    ndarray (h, w), float32
    """
    rs = _norm_log(small, sigma / b)
    if b == 1:
        return rs / _robust_sd(rs)
    h, w = shape
    hb, wb = small.shape

    def expand(v: np.ndarray) -> np.ndarray:
        rep = np.repeat(np.repeat(v, b, axis=0), b, axis=1)
        if rep.shape == (h, w):
            return rep
        out = np.full((h, w), np.float32(v.min()) if v.size else 0, np.float32)
        out[:hb * b, :wb * b] = rep
        return out

    if hb * b == h and wb * b == w and rs.size:
        sd = float(1.4826 * _median_and_mad(rs)[1])
        if sd:  # (the std fallback of _robust_sd would differ in rounding: use the full copy)
            return expand(rs / sd)
    r = expand(rs)
    return r / _robust_sd(r)


def _candidates(w: np.ndarray, max_candidates: int, min_snr: float):
    """(frame, row, col, score) of the strongest blob candidates over coarse scales."""
    k, h, wd = w.shape
    out = []
    for i in range(k):
        best = np.full((h, wd), -np.inf, np.float32)
        best_scale = np.zeros((h, wd), np.float32)
        binned = {1: w[i]}  # bin side → the frame binned (each level from the previous one)
        for s in _COARSE_SCALES:
            if 3 * s > min(h, wd) / 2:
                break
            b = _bin_factor(s)
            while b not in binned:
                top = max(binned)
                binned[2 * top] = _bin2(binned[top])
            r = _scaled_response(binned[b], b, (h, wd), s)
            np.putmask(best_scale, r > best, np.float32(s))
            np.maximum(best, r, out=best)
        peak = (best == _max_filter_nearest(best, 5)) & (best > min_snr)
        # one candidate per plateau (the binned coarse scales repeat values over b×b blocks)
        out += _frame_candidates(i, _component_centroids(peak), best, best_scale, max_candidates)
    out.sort(key=lambda t: -t[3])
    return out[: max_candidates * 2]


def _frame_candidates(i: int, centres: np.ndarray, best: np.ndarray, best_scale: np.ndarray,
                      max_candidates: int) -> list[tuple[int, int, int, float, float]]:
    """(frame ``i``, row, col, score, scale) of the ``max_candidates`` strongest plateau centres
    (``centres``: (n, 2) row, col) at least ⌈1.5·scale⌉ + 2 px from the border, strongest first."""
    if centres.shape[0] == 0:
        return []
    h, wd = best.shape
    rows, cols = np.rint(centres[:, 0]).astype(int), np.rint(centres[:, 1]).astype(int)
    margin = np.ceil(1.5 * best_scale[rows, cols]).astype(int) + 2
    keep = (rows >= margin) & (cols >= margin) & (rows < h - margin) & (cols < wd - margin)
    rows, cols = rows[keep], cols[keep]
    score = best[rows, cols]
    order = np.argsort(score)[::-1][:max_candidates]
    return [(i, int(rows[j]), int(cols[j]), float(score[j]), float(best_scale[rows[j], cols[j]])) for j in order]


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


def _responses(w: np.ndarray, yc: float, xc: float, scales: np.ndarray) -> np.ndarray:
    """Normalised LoG responses ``−σ²∇²G_σ * w`` at the sub-pixel point (yc, xc), one per scale.

    For each σ the kernel ``(2 − q)·exp(−q/2) / (2πσ²)``, ``q = (dy² + dx²)/σ²``, is sampled on
    the ``(2r + 1)²`` pixels around the nearest pixel (``r = ⌈3.5σ⌉``) and made zero-sum there,
    so a constant offset left in ``w`` does not matter. The kernel is a sum of three separable
    terms (``exp(−q/2) = e_y·e_x``), so every scale costs a few matrix-vector products on one
    shared window instead of a 2-D kernel: ``Σ ker·w = (2·e_yᵀWe_x − (e_y q_y)ᵀWe_x −
    e_yᵀW(e_x q_x)) / (2πσ²)``, minus the kernel's mean times the window sum.

    Parameters
    ----------
    w : ndarray (h, w)
        Working frame.
    yc, xc : float
        Point, px (row, column).
    scales : ndarray (n,)
        Increasing sigmas, px; the largest window must fit in the frame (the caller checks).

    Returns
    -------
    ndarray (n,), float64
    """
    sc = np.asarray(scales, dtype=np.float64)
    rads = np.ceil(3.5 * sc).astype(np.int64)
    big = int(rads.max())
    r0, c0 = int(round(yc)), int(round(xc))
    off = np.arange(-big, big + 1)
    inside = (np.abs(off)[None, :] <= rads[:, None]).astype(np.float64)  # (n, L) window of each scale
    inv_s2 = 1.0 / (sc * sc)[:, None]
    qy = ((r0 + off) - yc)[None, :] ** 2 * inv_s2
    qx = ((c0 + off) - xc)[None, :] ** 2 * inv_s2
    ey = np.exp(-0.5 * qy) * inside
    ex = np.exp(-0.5 * qx) * inside
    eyq, exq = ey * qy, ex * qx
    win = w[r0 - big:r0 + big + 1, c0 - big:c0 + big + 1].astype(np.float64)
    n = sc.size
    wx = win @ np.concatenate([ex, exq, inside]).T  # (L, 3n): the window times each x-profile
    t_g = np.einsum("sl,ls->s", ey, wx[:, :n])  # e_yᵀ W e_x
    t_y = np.einsum("sl,ls->s", eyq, wx[:, :n])  # (e_y q_y)ᵀ W e_x
    t_x = np.einsum("sl,ls->s", ey, wx[:, n:2 * n])  # e_yᵀ W (e_x q_x)
    w_sum = np.einsum("sl,ls->s", inside, wx[:, 2 * n:])  # sum of w in each scale's window
    sy, sx, syq, sxq = ey.sum(1), ex.sum(1), eyq.sum(1), exq.sum(1)
    norm = 1.0 / (2.0 * math.pi * sc * sc)
    k_mean = norm * (2.0 * sy * sx - syq * sx - sy * sxq) / (2 * rads + 1) ** 2
    return norm * (2.0 * t_g - t_y - t_x) - k_mean * w_sum


def _scale_at(w: np.ndarray, yc: float, xc: float, scales: np.ndarray,
              fit_cache: dict | None = None) -> tuple[float | None, float]:
    """Scale of the maximum normalised LoG response at the spot centre (yc, xc) and that response.

    The responses (:func:`_responses`) are taken over increasing scales while the window fits
    in the frame, and stop once well past the maximum (a scale above 2.5× the best one with less
    than half its response); they are computed in blocks of scales, the first three octaves
    at once, then one octave at a time. ``fit_cache`` (a dict kept over the calls with the same
    ``scales``) holds the parts of the fit that depend on the scales only.
    """
    h, wd = w.shape
    r0, c0 = int(round(yc)), int(round(xc))
    room = min(r0, c0, h - 1 - r0, wd - 1 - c0)
    n_fit = int(np.count_nonzero(np.ceil(3.5 * scales) <= room))  # the window grows with the scale
    resp: list[float] = []
    best, best_s = -math.inf, 0.0
    i, done = 0, False
    while i < n_fit and not done:
        stop = min(n_fit, i + (3 * _FINE_STEPS_PER_OCTAVE + 1 if i == 0 else _FINE_STEPS_PER_OCTAVE))
        for s, v in zip(scales[i:stop].tolist(), _responses(w, yc, xc, scales[i:stop]).tolist()):
            resp.append(v)
            if v > best:
                best, best_s = v, s
            elif s > 2.5 * best_s and v < 0.5 * best:  # well past the maximum (the fit uses ≤ 2× it)
                done = True
                break
        i = stop
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
    use = np.flatnonzero((sc >= sc[j] / 2) & (sc <= sc[j] * 2))  # a run of consecutive scales
    key = (j, int(use[0]), int(use[-1]))
    grid = None if fit_cache is None else fit_cache.get(key)
    if grid is None:
        x = sc[use]
        wt = x ** 2
        cand = np.geomspace(sc[j] / 1.6, sc[j] * 1.6, 161)
        model = x[None, :] ** 2 / (cand[:, None] ** 2 + x[None, :] ** 2) ** 2
        wt_model = wt * model
        grid = (cand, model, wt, wt_model, (wt_model * model).sum(axis=1))
        if fit_cache is not None:
            fit_cache[key] = grid
    cand, model, wt, wt_model, den = grid
    y = resp_a[use]
    amp = (wt_model * y).sum(axis=1) / den
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
    saturation_level: float | None = None,
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
    saturation_level : float, optional
        The camera's clipping level (``DetectParams.saturation_level``; default: the integer type's largest
        value): spots with pixels at or above it are skipped.

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
        saturated = raw == np.iinfo(raw.dtype).min if invert else raw >= bright_clip_level(raw.dtype, saturation_level)
    else:
        saturated = None
    smax = min(SIGMA_MAX_PX, (min(h, wd) - 4) / 8.0)
    if smax <= SIGMA_MIN_PX * 1.5:
        return PsfEstimate(None, 0, math.nan)
    n_fine = max(8, int(round(_FINE_STEPS_PER_OCTAVE * math.log2(smax / SIGMA_MIN_PX))) + 1)
    scales = np.geomspace(SIGMA_MIN_PX, smax, n_fine)
    cands = _candidates(w, max(2 * max_spots // max(k, 1), 4), min_snr)[:max_spots]
    found = []  # (frame, row, col, sigma_eff, response)
    fit_cache: dict = {}
    for f, r, c, score, coarse in cands:
        if saturated is not None:
            rad = int(math.ceil(2 * coarse))
            if saturated[f, max(r - rad, 0):r + rad + 1, max(c - rad, 0):c + rad + 1].any():
                continue
        yc, xc = _refine_centre(w[f], r, c, coarse)
        s, _ = _scale_at(w[f], yc, xc, scales, fit_cache)
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
