"""Slow, obviously-correct numpy/scipy twins of the kernels in exonta.detect._kernels.

Each function mirrors one kernel's definition (not its implementation): scipy's
ndimage filters for the band-pass, brute-force loops for the maxima,
scipy.optimize.least_squares for the Gaussian fit, vectorised numpy for the
radial-symmetry centre and the aperture photometry. Also: a pixel-integrated
Gaussian spot renderer and the Mortensen et al. (2010) localisation-error
formulas used by the accuracy tests and the benchmark.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, optimize
from scipy.special import erf

from exonta.detect.psf import _frame_candidates


# ----------------------------------------------------------------- synthetic data
def pixel_gauss_1d(n: int, mu: float, sigma: float) -> np.ndarray:
    """Fraction of a unit-mass 1-D Gaussian centred at ``mu`` in each pixel 0..n-1."""
    edges = np.arange(n + 1) - 0.5
    return np.diff(0.5 * erf((edges - mu) / (math.sqrt(2.0) * sigma)))


def render_spots(shape, xs, ys, photons, sigma_px, background_photons, rng, *, poisson=True):
    """Expected (or Poisson-sampled) photon image of pixel-integrated Gaussian spots.

    Parameters
    ----------
    shape : (h, w)
    xs, ys : array
        Spot centres, px (x = column, y = row, pixel centres at integers).
    photons : float or array
        Total photons per spot.
    sigma_px : float
    background_photons : float or (h, w) array
        Expected background photons per pixel.
    rng : numpy.random.Generator
    """
    h, w = shape
    img = np.zeros((h, w)) + background_photons
    ph = np.broadcast_to(np.asarray(photons, float), np.shape(xs))
    for x, y, n in zip(xs, ys, ph):
        # only a window around the spot (exact to < 1e-12 of the mass)
        r = int(math.ceil(8 * sigma_px))
        c0, c1 = max(int(x) - r, 0), min(int(x) + r + 2, w)
        r0, r1 = max(int(y) - r, 0), min(int(y) + r + 2, h)
        if c1 <= c0 or r1 <= r0:
            continue
        ex = pixel_gauss_1d(c1 - c0, x - c0, sigma_px)
        ey = pixel_gauss_1d(r1 - r0, y - r0, sigma_px)
        img[r0:r1, c0:c1] += n * np.outer(ey, ex)
    return rng.poisson(img).astype(np.float64) if poisson else img


def mortensen_lsq_variance(photons, sigma_px, background_photons, pixel=1.0, excess_noise=1.0):
    """Expected variance (px²) per axis of a least-squares Gaussian fit.

    Mortensen, Churchman, Spudich & Flyvbjerg, Nat. Methods 7:377 (2010), eq. (6)::

        var = F · σa²/N · (16/9 + 8π σa² b² / (N a²)),   σa² = σ² + a²/12

    with N photons, σ the PSF sigma, a the pixel size, b² the expected
    background photons per pixel and F the excess-noise factor (1 without EM
    gain, 2 with).
    """
    sa2 = sigma_px ** 2 + pixel ** 2 / 12.0
    return excess_noise * sa2 / photons * (16.0 / 9.0 + 8.0 * math.pi * sa2 * background_photons
                                           / (photons * pixel ** 2))


def mortensen_mle_variance(photons, sigma_px, background_photons, pixel=1.0, excess_noise=1.0):
    """Cramér–Rao bound (MLE) of the same reference, eq. (5)::

        var = F · σa²/N · [1 + ∫₀¹ ln t / (1 + t/τ) dt]⁻¹,   τ = 2π σa² b² / (N a²)
    """
    sa2 = sigma_px ** 2 + pixel ** 2 / 12.0
    tau = 2.0 * math.pi * sa2 * background_photons / (photons * pixel ** 2)
    if tau == 0:  # no background: the bracket tends to 1
        return excess_noise * sa2 / photons
    t = np.linspace(1e-9, 1.0, 200001)
    integral = np.trapezoid(np.log(t) / (1.0 + t / tau), t)
    return excess_noise * sa2 / photons / (1.0 + integral)


# ----------------------------------------------------------------- kernels' twins
def prepare_ref(raw, bg, sign):
    out = np.asarray(raw, np.float64)
    if bg is not None and np.size(bg):
        out = out - np.asarray(bg, np.float64)
    return (sign * out).astype(np.float32)


def gaussian_kernel_ref(sigma):
    r = max(int(math.ceil(3.0 * sigma)), 1)
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def bandpass_ref(img, sigma, box_half):
    """G_σ * img − mean over a (2b+1)² box, 'nearest' edges (scipy.ndimage)."""
    img = np.asarray(img, np.float64)
    g = gaussian_kernel_ref(sigma)
    sm = ndimage.correlate1d(ndimage.correlate1d(img, g, axis=1, mode="nearest"), g, axis=0, mode="nearest")
    box = ndimage.uniform_filter(img, size=2 * box_half + 1, mode="nearest")
    return sm - box


def clipped_sigma_ref(f, y0, y1, x0, x1, row_step, n_iter, col_step=1):
    """Iterative ±3σ clipping (σ/0.9865867 after the first pass) until the kept set is stable."""
    v = np.asarray(f[y0:y1:row_step, x0:x1:col_step], np.float64).ravel()
    if v.size == 0:
        return 0.0
    keep = np.ones(v.size, bool)
    prev, sd = -1, 0.0
    for it in range(n_iter):
        k = v[keep]
        if k.size < 2:
            break
        sd = k.std() / (0.9865867 if it > 0 else 1.0)
        if k.size == prev:
            break
        prev = k.size
        keep = (v >= k.mean() - 3 * sd) & (v <= k.mean() + 3 * sd)
    return sd


def noise_map_ref(f, edge, tile, n_iter):
    h, w = f.shape
    ny, nx = max(1, (h - 2 * edge) // tile), max(1, (w - 2 * edge) // tile)
    yb = [edge + (i * max(h - 2 * edge, 0)) // ny for i in range(ny + 1)]
    xb = [edge + (j * max(w - 2 * edge, 0)) // nx for j in range(nx + 1)]
    return np.array([[clipped_sigma_ref(f, yb[i], yb[i + 1], xb[j], xb[j + 1], 2, n_iter)
                      for j in range(nx)] for i in range(ny)])


def local_sigma_ref(grid, edge, shape, y, x):
    """Bilinear interpolation between tile centres, constant beyond the outer centres."""
    h, w = shape
    ny, nx = grid.shape
    cy = edge + (np.arange(ny) + 0.5) * max(h - 2 * edge, 1) / ny
    cx = edge + (np.arange(nx) + 0.5) * max(w - 2 * edge, 1) / nx
    col = np.array([np.interp(x, cx, grid[i]) for i in range(ny)])
    return float(np.interp(y, cy, col))


def find_maxima_ref(f, thr, edge, radius, grid=None, k_sigma=0.0):
    """Brute force: pixels above max(k·σ_local, thr) that beat every disc neighbour (ties: raster order)."""
    h, w = f.shape
    r = int(math.floor(radius))
    found = []
    for y in range(edge, h - edge):
        for x in range(edge, w - edge):
            v = f[y, x]
            t = thr if grid is None else max(k_sigma * local_sigma_ref(grid, edge, f.shape, y, x), thr)
            if not v > t:
                continue
            ok = True
            for yy in range(max(y - r, 0), min(y + r + 1, h)):
                for xx in range(max(x - r, 0), min(x + r + 1, w)):
                    if (yy, xx) == (y, x) or (yy - y) ** 2 + (xx - x) ** 2 > radius ** 2 + 1e-9:
                        continue
                    u = f[yy, xx]
                    if u > v or (u == v and (yy, xx) < (y, x)):
                        ok = False
            if ok:
                found.append((y, x))
    return found


def _roi(shape, row, col, half):
    h, w = shape
    return max(row - half, 0), min(row + half + 1, h), max(col - half, 0), min(col + half + 1, w)


def voronoi_mask_ref(shape, peaks, k, half):
    """ROI pixels of peak k that are not strictly closer to another peak."""
    row, col = peaks[k]
    r0, r1, c0, c1 = _roi(shape, row, col, half)
    yy, xx = np.mgrid[r0:r1, c0:c1]
    keep = np.ones(yy.shape, bool)
    dk = (yy - row) ** 2 + (xx - col) ** 2
    for m, (r, c) in enumerate(peaks):
        if m != k:
            keep &= ~(((yy - r) ** 2 + (xx - c) ** 2) < dk)
    return keep


def fit_gaussian_ref(img, row, col, half, sigma0, mask=None, plane=False):
    """(x, y, N, sigma, b, b_x, b_y) of a least-squares pixel-integrated Gaussian fit (scipy).

    ``mask`` (ROI-shaped bool) selects the pixels used (all by default); with
    ``plane`` the background is b + b_x (j − col) + b_y (i − row), else b.
    """
    img = np.asarray(img, np.float64)
    r0, r1, c0, c1 = _roi(img.shape, row, col, half)
    d = img[r0:r1, c0:c1]
    if mask is None:
        mask = np.ones(d.shape, bool)
    border_mask = np.zeros(d.shape, bool)
    border_mask[[0, -1], :] = True
    border_mask[:, [0, -1]] = True
    border = d[border_mask & mask]
    b0 = border.mean() if border.size else 0.0
    n0 = max(img[row, col] - b0, 1e-6) * 2 * math.pi * sigma0 ** 2

    jj, ii = np.meshgrid(np.arange(c0, c1) - col, np.arange(r0, r1) - row)

    def resid(p):
        x, y, n, s, b = p[:5]
        bx, by = (p[5], p[6]) if plane else (0.0, 0.0)
        ex = pixel_gauss_1d(c1 - c0, x - c0, s)
        ey = pixel_gauss_1d(r1 - r0, y - r0, s)
        return (b + bx * jj + by * ii + n * np.outer(ey, ex) - d)[mask]

    p0 = [col, row, n0, sigma0, b0] + ([0.0, 0.0] if plane else [])
    res = optimize.least_squares(resid, p0, method="lm", xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=10000)
    return np.r_[res.x, [0.0, 0.0]] if not plane else res.x


def radial_center_ref(img, row, col, half):
    """Parthasarathy (2012) radial-symmetry centre, vectorised numpy."""
    img = np.asarray(img, np.float64)
    r0, r1, c0, c1 = _roi(img.shape, row, col, half)
    d = img[r0:r1, c0:c1]
    du = d[:-1, 1:] - d[1:, :-1]
    dv = d[:-1, :-1] - d[1:, 1:]
    su = ndimage.uniform_filter(du, 3, mode="constant") * 9
    sv = ndimage.uniform_filter(dv, 3, mode="constant") * 9
    cnt = ndimage.uniform_filter(np.ones_like(du), 3, mode="constant") * 9
    su, sv = su / cnt, sv / cnt
    ym, xm = np.mgrid[0:du.shape[0], 0:du.shape[1]].astype(float)
    xm += c0 + 0.5
    ym += r0 + 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        m = -(sv + su) / (su - sv)
    m[~np.isfinite(m)] = 1e10
    b = ym - m * xm
    g2 = su ** 2 + sv ** 2
    xc, yc = (g2 * xm).sum() / g2.sum(), (g2 * ym).sum() / g2.sum()
    wgt = g2 / np.maximum(np.hypot(xm - xc, ym - yc), 1e-6)
    # weighted least squares for the point closest to all lines y = m x + b
    wm = wgt / (m * m + 1)
    a = np.array([[(m * m * wm).sum(), -(m * wm).sum()], [-(m * wm).sum(), wm.sum()]])
    rhs = np.array([-(m * b * wm).sum(), (b * wm).sum()])
    x, y = np.linalg.solve(a, rhs)
    return x, y


def aperture_ref(img, xc, yc, radius):
    """(x_centroid, y_centroid, mass, signal, size, bg) as in _kernels._aperture."""
    img = np.asarray(img, np.float64)
    h, w = img.shape
    rc, cc = int(math.floor(yc + 0.5)), int(math.floor(xc + 0.5))
    yy, xx = np.mgrid[0:h, 0:w]
    d2 = (yy - rc) ** 2 + (xx - cc) ** 2
    ro = radius + 2
    ann = img[(d2 > radius ** 2) & (d2 <= ro ** 2)]
    bg = np.median(ann) if ann.size else 0.0
    disc = d2 <= radius ** 2
    v = img[disc] - bg
    mass = v.sum()
    wv = np.clip(v, 0, None)
    if wv.sum() > 0:
        xm = (wv * xx[disc]).sum() / wv.sum()
        ym = (wv * yy[disc]).sum() / wv.sum()
        s2 = (wv * ((xx[disc] - xm) ** 2 + (yy[disc] - ym) ** 2)).sum() / wv.sum() / 2 - 1 / 12
        size = math.sqrt(max(s2, 0.0))
    else:
        xm, ym, size = float(cc), float(rc), 0.0
    sig = (img[max(rc - 1, 0):rc + 2, max(cc - 1, 0):cc + 2] - bg).max()
    return xm, ym, mass, sig, size, bg


def drop_duplicates_ref(spots, merge_sigma):
    """Keep-mask of (x, y, mass, signal, size_px, ...) rows: of every pair closer than
    merge_sigma × max(min(size_px), 1), the one with the smaller signal (the later on ties) is dropped."""
    spots = np.asarray(spots, float)
    keep = np.ones(len(spots), bool)
    for k in range(len(spots)):
        for m in range(k + 1, len(spots)):
            r = merge_sigma * max(min(spots[k, 4], spots[m, 4]), 1.0)
            if math.hypot(spots[k, 0] - spots[m, 0], spots[k, 1] - spots[m, 1]) < r:
                keep[k if spots[m, 3] > spots[k, 3] else m] = False
    return keep


# ----------------------------------------------------------------- bright spots
def tile_levels_ref(raw, edge, shape):
    """Mean raw level per noise tile (every other row, the tiles of noise_map_ref)."""
    h, w = np.asarray(raw).shape
    ny, nx = shape
    yb = [edge + (i * max(h - 2 * edge, 0)) // ny for i in range(ny + 1)]
    xb = [edge + (j * max(w - 2 * edge, 0)) // nx for j in range(nx + 1)]
    return np.array([[np.asarray(raw, float)[yb[i]:yb[i + 1]:2, xb[j]:xb[j + 1]].mean() for j in range(nx)]
                     for i in range(ny)])


def cap_noise_ref(grid, ratio, raw, edge):
    """Each tile's noise capped at ratio × the median (np.median) of its (border-clipped) 5×5 neighbourhood ×
    max(1, sqrt(level / median level of the same tiles)), levels = clipped-at-0 mean raw per tile."""
    g = np.asarray(grid, float)
    lev = np.maximum(tile_levels_ref(raw, edge, g.shape), 0.0)
    out = g.copy()
    ny, nx = g.shape
    for i in range(ny):
        for j in range(nx):
            win = np.s_[max(i - 2, 0):i + 3, max(j - 2, 0):j + 3]
            lim = ratio * np.median(g[win])
            lm = np.median(lev[win])
            if lm > 0 and lev[i, j] > lm:
                lim *= math.sqrt(lev[i, j] / lm)
            out[i, j] = min(g[i, j], lim)
    return out


def merge_saturated_ref(raw, saturation, reach, peaks, peak):
    """One candidate per 8-connected clipped region (scipy.ndimage.label): the highest-peak candidate whose
    nearest clipped pixel within the (2·reach+1)² box belongs to the region, moved to the rounded centroid.
    Regions cut by the border: centre = far edge − half the extent along the border, dropped when outside.
    Returns the kept (row, col), their index into ``peaks`` and (radius, centre row, centre col) per kept one."""
    raw = np.asarray(raw)
    h, w = raw.shape
    lab, _ = ndimage.label(raw >= saturation, structure=np.ones((3, 3)))
    owner = []
    for r, c in peaks:
        best, cand = None, None
        for y in range(max(r - reach, 0), min(r + reach + 1, h)):
            for x in range(max(c - reach, 0), min(c + reach + 1, w)):
                if lab[y, x] and (best is None or (y - r) ** 2 + (x - c) ** 2 < best):
                    best, cand = (y - r) ** 2 + (x - c) ** 2, lab[y, x]
        owner.append(cand)
    out, idx, sat = [], [], []
    for k, (r, c) in enumerate(peaks):
        g = owner[k]
        if g is None:
            out.append((r, c)), idx.append(k), sat.append((0.0, 0.0, 0.0))
            continue
        members = [m for m in range(len(peaks)) if owner[m] == g]
        if max(members, key=lambda m: (peak[m], -m)) != k:
            continue
        ys, xs = np.nonzero(lab == g)
        cy, cx = ys.mean(), xs.mean()
        # cut by a border: a disc's extent along the border is its diameter (or a shorter chord when its
        # centre is beyond the border), its far edge is centre + radius
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        if y0 == 0 and y1 < h - 1:
            cy = y1 + 0.5 - (x1 - x0 + 1) / 2
        elif y1 == h - 1 and y0 > 0:
            cy = y0 - 0.5 + (x1 - x0 + 1) / 2
        if x0 == 0 and x1 < w - 1:
            cx = x1 + 0.5 - (y1 - y0 + 1) / 2
        elif x1 == w - 1 and x0 > 0:
            cx = x0 - 0.5 + (y1 - y0 + 1) / 2
        if not (0 <= cy <= h - 1 and 0 <= cx <= w - 1):
            continue
        out.append((int(round(cy)), int(round(cx)))), idx.append(k)
        sat.append((math.sqrt(ys.size / math.pi), cy, cx))
    order = sorted(range(len(out)), key=lambda i: out[i])
    return [out[i] for i in order], [idx[i] for i in order], [sat[i] for i in order]


def merge_no_saddle_ref(f, reach, ratio, peaks, peak, sat=None):
    """Keep-mask: pairs (in order k < m, both still kept) within reach px with no pixel of f on the
    segment (nearest to unit steps) below ratio × the lower peak lose the lower one (ties: the unclipped,
    else the later)."""
    n = len(peaks)
    sat = np.zeros(n) if sat is None else np.asarray(sat, float)
    keep = np.ones(n, bool)
    for k in range(n):
        for m in range(k + 1, n):
            if not (keep[k] and keep[m]):
                continue
            (r0, c0), (r1, c1) = peaks[k], peaks[m]
            d = math.hypot(r1 - r0, c1 - c0)
            if d > reach:
                continue
            steps = int(math.ceil(d))
            lo = min(peak[k], peak[m])
            line = [f[int(round(r0 + (r1 - r0) * t / steps)), int(round(c0 + (c1 - c0) * t / steps))]
                    for t in range(1, steps)]
            if all(v >= ratio * lo for v in line):
                drop_k = peak[m] > peak[k] or (peak[m] == peak[k] and sat[m] > sat[k])
                keep[k if drop_k else m] = False
    return keep


def halo_test_ref(f, k_sigma, ratio, reach, half, hole, peaks, vals, peak, sat=None):
    """Keep-mask: a candidate with a candidate within reach px whose peak is > ratio × its own (or which
    is clipped while it is not) must exceed k_sigma × max(its σ, the 3σ-clipped RMS of f in the
    (2·half+1)² window around it without the disc of radius hole)."""
    n = len(peaks)
    sat = np.zeros(n) if sat is None else np.asarray(sat, float)
    h, w = f.shape
    keep = np.ones(n, bool)
    for k, (r, c) in enumerate(peaks):
        near = any((peak[m] > ratio * peak[k] or (sat[m] > 0 and sat[k] == 0))
                   and (peaks[m][0] - r) ** 2 + (peaks[m][1] - c) ** 2 <= reach ** 2
                   for m in range(n) if m != k)
        if not near:
            continue
        yy, xx = np.mgrid[max(r - half, 0):min(r + half + 1, h), max(c - half, 0):min(c + half + 1, w)]
        ring = (yy - r) ** 2 + (xx - c) ** 2 > hole ** 2
        v = f[yy[ring], xx[ring]][:, None]
        sd = clipped_sigma_ref(v, 0, v.shape[0], 0, 1, 1, 6)
        keep[k] = peak[k] > k_sigma * max(sd, vals[k])
    return keep


# ----------------------------------------------------------------- spot width (exonta.detect.psf)
def psf_norm_log_ref(img, sigma):
    """Scale-normalised, sign-flipped LoG with scipy: ``−σ² ∇²(G_σ * img)``, border "nearest",
    kernels truncated at 3σ."""
    return -(sigma * sigma) * ndimage.gaussian_laplace(np.asarray(img, np.float32), sigma, mode="nearest",
                                                       truncate=3.0)


def psf_robust_sd_ref(a):
    """1.4826 × MAD of ``a`` (its std when that is 0, then 1), with np.median."""
    med = np.median(a)
    return float(1.4826 * np.median(np.abs(a - med))) or float(np.std(a)) or 1.0


def psf_scaled_response_ref(img, sigma):
    """Noise-normalised coarse-scale response at full size: for σ ≥ 4 px the LoG of the b×b block
    means (b the largest power of 2 ≤ σ/2) at σ/b, each value repeated over its block and the
    uncovered border filled with the minimum; then divided by its robust sd over the full image."""
    img = np.asarray(img, np.float32)
    b = 1
    while 2 * b <= sigma / 2:
        b *= 2
    if b == 1:
        r = psf_norm_log_ref(img, sigma)
    else:
        h, w = img.shape
        hb, wb = h // b, w // b
        small = img[:hb * b, :wb * b].reshape(hb, b, wb, b).mean(axis=(1, 3))
        rs = psf_norm_log_ref(small, sigma / b)
        r = np.full((h, w), np.float32(rs.min()), np.float32)
        r[:hb * b, :wb * b] = np.kron(rs, np.ones((b, b), np.float32))
    return r / psf_robust_sd_ref(r)


def psf_candidates_ref(w, max_candidates, min_snr, scales=(1.0, 2.0, 4.0, 8.0, 16.0)):
    """(frame, row, col, score, scale) of the strongest blob candidates, with scipy.ndimage:
    per frame the best scaled response over ``scales`` (the smaller scale on ties), its 5×5
    local maxima above ``min_snr`` (maximum_filter, mode "nearest"), one per 4-connected plateau
    at its rounded centre of mass (label, center_of_mass), away from the border by
    ⌈1.5·scale⌉ + 2 px; the ``max_candidates`` strongest per frame, then the ``2·max_candidates``
    strongest overall."""
    k, h, wd = w.shape
    out = []
    for i in range(k):
        best = np.full((h, wd), -np.inf, np.float32)
        best_scale = np.zeros((h, wd), np.float32)
        for s in scales:
            if 3 * s > min(h, wd) / 2:
                break
            r = psf_scaled_response_ref(w[i], s)
            upd = r > best
            best[upd] = r[upd]
            best_scale[upd] = s
        peak = (best == ndimage.maximum_filter(best, size=5, mode="nearest")) & (best > min_snr)
        lab, n_lab = ndimage.label(peak)
        com = np.asarray(ndimage.center_of_mass(peak, lab, np.arange(1, n_lab + 1)), float).reshape(-1, 2)
        # the border margin and ranking are not what this reference checks: the shipped selection
        out += _frame_candidates(i, com, best, best_scale, max_candidates)
    out.sort(key=lambda t: -t[3])
    return out[: max_candidates * 2]


def psf_response_ref(w, yc, xc, sigma):
    """Normalised LoG response at the sub-pixel point (yc, xc): the 2-D kernel
    ``(2 − q)·exp(−q/2)/(2πσ²)``, ``q = ((y − yc)² + (x − xc)²)/σ²``, on the (2⌈3.5σ⌉ + 1)² pixels
    around the nearest pixel, minus its mean, times the frame, summed. None when the window does
    not fit."""
    h, wd = w.shape
    rad = int(math.ceil(3.5 * sigma))
    r0, c0 = int(round(yc)), int(round(xc))
    if r0 - rad < 0 or c0 - rad < 0 or r0 + rad >= h or c0 + rad >= wd:
        return None
    yy, xx = np.mgrid[r0 - rad:r0 + rad + 1, c0 - rad:c0 + rad + 1]
    q = ((yy - yc) ** 2 + (xx - xc) ** 2) / (sigma * sigma)
    ker = (2.0 - q) * np.exp(-0.5 * q) / (2 * math.pi * sigma * sigma)
    ker = ker - ker.mean()
    return float((ker * np.asarray(w, float)[r0 - rad:r0 + rad + 1, c0 - rad:c0 + rad + 1]).sum())


def psf_scale_at_ref(w, yc, xc, scales):
    """Scale of the maximum normalised LoG response at (yc, xc), one scale at a time: responses
    while the window fits, stopping at a scale above 2.5× the best with less than half its
    response; None at the ends of the range; else the σ of the grid geomspace(σ_max/1.6, 1.6·σ_max,
    161) whose σ²-weighted least-squares fit of A·s²/(σ² + s²)² over s in [σ_max/2, 2σ_max] is best
    (None at the grid's ends). Returns (sigma or None, maximum response or nan)."""
    resp = []
    best, best_s = -math.inf, 0.0
    for s in scales:
        v = psf_response_ref(w, yc, xc, float(s))
        if v is None:
            break
        resp.append(v)
        if v > best:
            best, best_s = v, float(s)
        elif s > 2.5 * best_s and v < 0.5 * best:
            break
    if len(resp) < 3:
        return None, math.nan
    resp = np.asarray(resp)
    sc = np.asarray(scales)[:resp.size]
    j = int(np.argmax(resp))
    if j == 0 or j == resp.size - 1:
        return None, float(resp[j])
    use = (sc >= sc[j] / 2) & (sc <= sc[j] * 2)
    x, y, wt = sc[use], resp[use], sc[use] ** 2
    cand = np.geomspace(sc[j] / 1.6, sc[j] * 1.6, 161)
    cost = []
    for c in cand:
        model = x ** 2 / (c ** 2 + x ** 2) ** 2
        amp = (wt * model * y).sum() / (wt * model * model).sum()
        cost.append((wt * (y - amp * model) ** 2).sum())
    k = int(np.argmin(cost))
    if k == 0 or k == cand.size - 1:
        return None, float(resp[j])
    return float(cand[k]), float(resp[j])
