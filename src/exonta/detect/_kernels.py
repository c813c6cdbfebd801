"""Private numba kernels of :mod:`exonta.detect`.

Every kernel takes arrays and scalars and fills preallocated outputs; the one
public wrapper (:mod:`exonta.detect.locate`) validates, allocates and builds the
DataFrame. Each kernel has a slow numpy twin in ``tests/reference/detect_ref.py``.

Per-frame pipeline (:func:`_process_frame`)::

    raw ─prepare─▶ W = sign·(raw − background)              (float32)
        ─bandpass─▶ F = G_σ * W − box_mean(W)               (matched filter)
        ─noise────▶ σ_F = 1.4826·MAD(F) on a pixel subsample
        ─maxima───▶ pixels with F > thr that are the maximum of F in a disc
                    of radius min_separation (ties broken by raster index)
        ─refine───▶ Gaussian LSQ fit / radial symmetry / centroid per candidate

Coordinates: x = column, y = row, the centre of the top-left pixel is (0, 0).
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import get_num_threads, njit, prange

# Columns of the per-spot output array, in order.
FIELDS = ("x", "y", "mass", "signal", "size_px", "background", "snr")
N_FIELDS = len(FIELDS)

MODE_GAUSSIAN = 0
MODE_RADIAL = 1
MODE_CENTROID = 2

# All per-run settings of the frame kernel in one (numba-typed) namedtuple.
# Scalars must be given with fixed Python types (see locate._settings) so that a
# single compiled specialisation is reused.
Settings = namedtuple(
    "Settings",
    [
        "sign",           # float: +1, or -1 for dark spots (invert)
        "gauss",          # float32 (2r+1,): normalised 1-D Gaussian of sigma = psf
        "box_half",       # int: half-width of the local-mean box
        "threshold",      # float: manual threshold on F; < 0 means automatic
        "threshold_snr",  # float: automatic threshold in units of sigma_F
        "edge",           # int: pixels excluded at each edge
        "sep_dy",         # int64 (m,): disc offsets of the min-separation test
        "sep_dx",         # int64 (m,)
        "mode",           # int: MODE_GAUSSIAN / MODE_RADIAL / MODE_CENTROID
        "roi_half",       # int: half-width of the fitting ROI / aperture radius
        "sigma0",         # float: PSF sigma, px (fit start value)
    ],
)

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


# --------------------------------------------------------------------------- filters
@njit(cache=True, nogil=True)
def _clamp(i, n):
    if i < 0:
        return 0
    if i >= n:
        return n - 1
    return i


@njit(cache=True, nogil=True)
def _prepare(raw, bg, sign, out):
    """``out = sign * (raw - bg)`` as float32 (``bg`` may be shape (0, 0) = none).

    Returns the largest absolute value of ``out`` (sets the rounding floor of
    the threshold).
    """
    h, w = raw.shape
    has_bg = bg.shape[0] > 0
    s = np.float32(sign)
    amax = np.float32(0.0)
    for y in range(h):
        for x in range(w):
            v = np.float32(raw[y, x])
            if has_bg:
                v -= bg[y, x]
            v *= s
            out[y, x] = v
            if abs(v) > amax:
                amax = abs(v)
    return amax


@njit(cache=True, nogil=True)
def _bandpass(img, gauss, box_half, gh, bh, out):
    """Matched filter ``out = G * img - box_mean(img)`` (separable, nearest-edge padding).

    Parameters
    ----------
    img : float32 (h, w)
    gauss : float32 (2r+1,)
        Normalised 1-D Gaussian (sum 1).
    box_half : int
        Half-width b of the (2b+1)² local-mean box.
    gh, bh : float32 (h, w)
        Scratch: row-filtered Gaussian and row box sums.
    out : float32 (h, w)
    """
    h, w = img.shape
    r = gauss.shape[0] // 2
    nb = 2 * box_half + 1
    inv_area = np.float32(1.0 / (nb * nb))
    # ---- horizontal pass
    for y in range(h):
        for x in range(w):
            if x >= r and x < w - r:
                acc = np.float32(0.0)
                for k in range(2 * r + 1):
                    acc += gauss[k] * img[y, x + k - r]
            else:
                acc = np.float32(0.0)
                for k in range(2 * r + 1):
                    acc += gauss[k] * img[y, _clamp(x + k - r, w)]
            gh[y, x] = acc
        s = 0.0  # float64 running sum: no drift along the row
        for k in range(-box_half, box_half + 1):
            s += img[y, _clamp(k, w)]
        bh[y, 0] = s
        for x in range(1, w):
            s += img[y, _clamp(x + box_half, w)] - img[y, _clamp(x - box_half - 1, w)]
            bh[y, x] = s
    # ---- vertical pass
    acc_b = np.zeros(w, np.float64)
    for k in range(-box_half, box_half + 1):
        yy = _clamp(k, h)
        for x in range(w):
            acc_b[x] += bh[yy, x]
    for y in range(h):
        if y > 0:
            ya = _clamp(y + box_half, h)
            yr = _clamp(y - box_half - 1, h)
            for x in range(w):
                acc_b[x] += bh[ya, x] - bh[yr, x]
        for x in range(w):
            out[y, x] = -np.float32(acc_b[x]) * inv_area
        for k in range(2 * r + 1):
            yy = _clamp(y + k - r, h)
            g = gauss[k]
            for x in range(w):
                out[y, x] += g * gh[yy, x]


@njit(cache=True, nogil=True)
def _robust_sigma(f, edge, target_samples):
    """Robust noise sigma of ``f``: 1.4826·MAD on a regular pixel subsample.

    Only pixels at least ``edge`` from every border are used; the grid step is
    chosen to give about ``target_samples`` samples. Spots are sparse, so the
    median absolute deviation is insensitive to them.
    """
    h, w = f.shape
    y0, y1 = edge, h - edge
    x0, x1 = edge, w - edge
    if y1 <= y0 or x1 <= x0:
        return 0.0
    n_px = (y1 - y0) * (x1 - x0)
    step = max(1, int(math.sqrt(n_px / max(target_samples, 1))))
    ny = (y1 - y0 + step - 1) // step
    nx = (x1 - x0 + step - 1) // step
    buf = np.empty(ny * nx, np.float64)
    n = 0
    for y in range(y0, y1, step):
        for x in range(x0, x1, step):
            buf[n] = f[y, x]
            n += 1
    med = np.median(buf[:n])
    for i in range(n):
        buf[i] = abs(buf[i] - med)
    return 1.4826 * np.median(buf[:n])


@njit(cache=True, nogil=True)
def _find_maxima(f, thr, edge, sep_dy, sep_dx, rows, cols, vals):
    """Local maxima of ``f`` above ``thr`` with a minimum separation.

    A pixel p is kept when ``f[p] > thr`` and, for every offset d of the disc
    (``sep_dy``, ``sep_dx``), ``f[p] > f[p+d]`` or (``f[p] == f[p+d]`` and p
    comes first in raster order): exactly one maximum survives per plateau.
    Neighbours outside the image are ignored; pixels closer than ``edge`` to a
    border are never kept.

    Returns the total number of maxima; only the first ``len(rows)`` are written.
    """
    h, w = f.shape
    cap = rows.shape[0]
    n = 0
    m = sep_dy.shape[0]
    for y in range(edge, h - edge):
        for x in range(edge, w - edge):
            v = f[y, x]
            if not v > thr:
                continue
            ok = True
            for j in range(m):
                yy = y + sep_dy[j]
                xx = x + sep_dx[j]
                if yy < 0 or yy >= h or xx < 0 or xx >= w:
                    continue
                u = f[yy, xx]
                if u > v or (u == v and (yy < y or (yy == y and xx < x))):
                    ok = False
                    break
            if ok:
                if n < cap:
                    rows[n] = y
                    cols[n] = x
                    vals[n] = v
                n += 1
    return n


# --------------------------------------------------------------------------- refinement
@njit(cache=True, nogil=True)
def _solve_small(a, b, out):
    """Solve ``a @ out = b`` (n ≤ 8) by Gaussian elimination with partial pivoting.

    ``a`` and ``b`` are overwritten. Returns False when singular.
    """
    n = b.shape[0]
    for c in range(n):
        p = c
        best = abs(a[c, c])
        for r in range(c + 1, n):
            if abs(a[r, c]) > best:
                best = abs(a[r, c])
                p = r
        if not best > 1e-300:
            return False
        if p != c:
            for k in range(n):
                t = a[c, k]
                a[c, k] = a[p, k]
                a[p, k] = t
            t = b[c]
            b[c] = b[p]
            b[p] = t
        for r in range(c + 1, n):
            fac = a[r, c] / a[c, c]
            for k in range(c, n):
                a[r, k] -= fac * a[c, k]
            b[r] -= fac * b[c]
    for r in range(n - 1, -1, -1):
        s = b[r]
        for k in range(r + 1, n):
            s -= a[r, k] * out[k]
        out[r] = s / a[r, r]
    return True


@njit(cache=True, nogil=True)
def _pixel_gauss_1d(origin, n, mu, sigma, e, de_dmu, de_ds):
    """Pixel-integrated 1-D Gaussian and its derivatives.

    ``e[j] = ½[erf((t+½)/(√2σ)) − erf((t−½)/(√2σ))]`` with ``t = origin + j − mu``
    (the fraction of a unit-mass Gaussian falling in pixel j), and its
    derivatives with respect to ``mu`` and ``sigma``.
    """
    inv = 1.0 / (_SQRT2 * sigma)
    c1 = 1.0 / (_SQRT2PI * sigma)
    for j in range(n):
        t = origin + j - mu
        ap = t + 0.5
        am = t - 0.5
        ep = math.exp(-0.5 * (ap / sigma) ** 2)
        em = math.exp(-0.5 * (am / sigma) ** 2)
        e[j] = 0.5 * (math.erf(ap * inv) - math.erf(am * inv))
        de_dmu[j] = c1 * (em - ep)
        de_ds[j] = c1 / sigma * (am * em - ap * ep)


@njit(cache=True, nogil=True)
def _gauss_sse(img, r0, r1, c0, c1, x, y, amp, sigma, b, ex, ey, dx, dy, sx, sy):
    nr = r1 - r0
    nc = c1 - c0
    _pixel_gauss_1d(c0, nc, x, sigma, ex, dx, sx)
    _pixel_gauss_1d(r0, nr, y, sigma, ey, dy, sy)
    sse = 0.0
    for i in range(nr):
        for j in range(nc):
            d = img[r0 + i, c0 + j] - (b + amp * ex[j] * ey[i])
            sse += d * d
    return sse


@njit(cache=True, nogil=True)
def _fit_gaussian(img, row, col, half, sigma0, max_iter, theta):
    """Least-squares fit of a pixel-integrated 2-D Gaussian + offset on a ROI.

    Model (per pixel, mass N, centre (x, y), width σ, offset b)::

        μ(i, j) = b + N·E(j; x, σ)·E(i; y, σ),   E = pixel-integrated 1-D Gaussian

    minimised by Levenberg–Marquardt on the (2·half+1)² ROI centred on
    (row, col), clipped to the image.

    Parameters
    ----------
    img : float32 (h, w)
        Background-subtracted frame.
    row, col : int
        Start pixel (the detected maximum).
    half : int
        ROI half-width, px.
    sigma0 : float
        Start value of σ, px.
    max_iter : int
    theta : float64 (5,)
        Output ``(x, y, N, sigma, b)``.

    Returns
    -------
    ok : bool
        False when the fit failed (non-finite, N ≤ 0, σ out of range, centre
        left the ROI); ``theta`` is then undefined.

    References
    ----------
    Smith, Joseph, Rieger & Lidke, Nat. Methods 7:373 (2010) (pixel-integrated
    Gaussian model); Mortensen et al., Nat. Methods 7:377 (2010).
    """
    h, w = img.shape
    r0 = max(row - half, 0)
    r1 = min(row + half + 1, h)
    c0 = max(col - half, 0)
    c1 = min(col + half + 1, w)
    nr = r1 - r0
    nc = c1 - c0
    if nr < 3 or nc < 3:
        return False
    # start values: offset = mean of the ROI border, mass from the peak
    sb = 0.0
    nbord = 0
    for i in range(nr):
        for j in range(nc):
            if i == 0 or j == 0 or i == nr - 1 or j == nc - 1:
                sb += img[r0 + i, c0 + j]
                nbord += 1
    b = sb / nbord
    peak = img[row, col] - b
    sigma = sigma0
    amp = max(peak, 1e-6) * 2.0 * math.pi * sigma * sigma
    x = float(col)
    y = float(row)
    ex = np.empty(nc)
    dxv = np.empty(nc)
    sxv = np.empty(nc)
    ey = np.empty(nr)
    dyv = np.empty(nr)
    syv = np.empty(nr)
    jtj = np.empty((5, 5))
    jtr = np.empty(5)
    a = np.empty((5, 5))
    rhs = np.empty(5)
    step = np.empty(5)
    jac = np.empty(5)
    lam = 1e-3
    sse = _gauss_sse(img, r0, r1, c0, c1, x, y, amp, sigma, b, ex, ey, dxv, dyv, sxv, syv)
    for _ in range(max_iter):
        # Jacobian at the current point (ex.. hold the current-point values)
        jtj[:, :] = 0.0
        jtr[:] = 0.0
        for i in range(nr):
            for j in range(nc):
                exy = ex[j] * ey[i]
                res = img[r0 + i, c0 + j] - (b + amp * exy)
                jac[0] = amp * dxv[j] * ey[i]
                jac[1] = amp * ex[j] * dyv[i]
                jac[2] = exy
                jac[3] = amp * (sxv[j] * ey[i] + ex[j] * syv[i])
                jac[4] = 1.0
                for p in range(5):
                    jtr[p] += jac[p] * res
                    for q in range(p + 1):
                        jtj[p, q] += jac[p] * jac[q]
        for p in range(5):
            for q in range(p):
                jtj[q, p] = jtj[p, q]
        accepted = False
        converged = False
        for _t in range(12):
            for p in range(5):
                for q in range(5):
                    a[p, q] = jtj[p, q]
                a[p, p] += lam * jtj[p, p] + 1e-12
                rhs[p] = jtr[p]
            if not _solve_small(a, rhs, step):
                lam *= 10.0
                continue
            xn = x + step[0]
            yn = y + step[1]
            an = amp + step[2]
            sn = sigma + step[3]
            bn = b + step[4]
            if (an <= 0.0 or sn < 0.25 or sn > 2.0 * half or abs(xn - col) > half
                    or abs(yn - row) > half or not math.isfinite(xn + yn + an + sn + bn)):
                lam *= 10.0
                continue
            sse_n = _gauss_sse(img, r0, r1, c0, c1, xn, yn, an, sn, bn, ex, ey, dxv, dyv, sxv, syv)
            if sse_n <= sse:
                converged = abs(step[0]) < 1e-5 and abs(step[1]) < 1e-5 and abs(step[3]) < 1e-5
                x, y, amp, sigma, b, sse = xn, yn, an, sn, bn, sse_n
                lam = max(lam * 0.1, 1e-9)
                accepted = True
                break
            lam *= 10.0
        if not accepted:
            # restore derivative arrays at the current point; nothing improves
            _gauss_sse(img, r0, r1, c0, c1, x, y, amp, sigma, b, ex, ey, dxv, dyv, sxv, syv)
            break
        if converged:
            break
    theta[0] = x
    theta[1] = y
    theta[2] = amp
    theta[3] = sigma
    theta[4] = b
    return amp > 0.0 and math.isfinite(x + y + amp + sigma + b)


@njit(cache=True, nogil=True)
def _radial_center(img, row, col, half, out_xy):
    """Radial-symmetry centre of the ROI around (row, col) (Parthasarathy 2012).

    Intensity gradients at the pixel-corner midpoints (Roberts cross, smoothed
    by a 3×3 mean) define lines; the centre is the point minimising the sum of
    squared distances to these lines, weighted by gradient magnitude² over the
    distance to the gradient-weighted centroid.

    Returns False when the ROI is too small or the system is singular.

    References
    ----------
    Parthasarathy, Nat. Methods 9:724 (2012).
    """
    h, w = img.shape
    r0 = max(row - half, 0)
    r1 = min(row + half + 1, h)
    c0 = max(col - half, 0)
    c1 = min(col + half + 1, w)
    nr = r1 - r0
    nc = c1 - c0
    if nr < 4 or nc < 4:
        return False
    mr = nr - 1
    mc = nc - 1
    du = np.empty((mr, mc))
    dv = np.empty((mr, mc))
    for i in range(mr):
        for j in range(mc):
            du[i, j] = img[r0 + i, c0 + j + 1] - img[r0 + i + 1, c0 + j]
            dv[i, j] = img[r0 + i, c0 + j] - img[r0 + i + 1, c0 + j + 1]
    # 3×3 mean smoothing (only over available neighbours)
    su = np.empty((mr, mc))
    sv = np.empty((mr, mc))
    for i in range(mr):
        for j in range(mc):
            au = 0.0
            av = 0.0
            cnt = 0
            for ii in range(max(i - 1, 0), min(i + 2, mr)):
                for jj in range(max(j - 1, 0), min(j + 2, mc)):
                    au += du[ii, jj]
                    av += dv[ii, jj]
                    cnt += 1
            su[i, j] = au / cnt
            sv[i, j] = av / cnt
    # gradient-magnitude² weighted centroid of the midpoints
    sw = 0.0
    sx = 0.0
    sy = 0.0
    for i in range(mr):
        for j in range(mc):
            g2 = su[i, j] ** 2 + sv[i, j] ** 2
            sw += g2
            sx += g2 * (c0 + j + 0.5)
            sy += g2 * (r0 + i + 0.5)
    if not sw > 0.0:
        return False
    xcen = sx / sw
    ycen = sy / sw
    s_w = 0.0
    s_mmw = 0.0
    s_mw = 0.0
    s_mbw = 0.0
    s_bw = 0.0
    for i in range(mr):
        for j in range(mc):
            xm = c0 + j + 0.5
            ym = r0 + i + 0.5
            den = su[i, j] - sv[i, j]
            # slope of the gradient line in (x right, y down) coordinates
            if den == 0.0:
                m = 1e10
            else:
                m = -(sv[i, j] + su[i, j]) / den
            if not math.isfinite(m):
                m = 1e10
            bb = ym - m * xm
            g2 = su[i, j] ** 2 + sv[i, j] ** 2
            dist = math.sqrt((xm - xcen) ** 2 + (ym - ycen) ** 2)
            wgt = g2 / max(dist, 1e-6)
            wm = wgt / (m * m + 1.0)
            s_w += wm
            s_mmw += m * m * wm
            s_mw += m * wm
            s_mbw += m * bb * wm
            s_bw += bb * wm
    det = s_mw * s_mw - s_mmw * s_w
    if det == 0.0 or not math.isfinite(det):
        return False
    xc = (s_mbw * s_w - s_mw * s_bw) / det
    yc = (s_mbw * s_mw - s_mmw * s_bw) / det
    if not (math.isfinite(xc) and math.isfinite(yc)):
        return False
    out_xy[0] = xc
    out_xy[1] = yc
    return abs(xc - col) <= half and abs(yc - row) <= half


@njit(cache=True, nogil=True)
def _aperture(img, xc, yc, radius, out):
    """Aperture photometry and moments around (xc, yc).

    Local background = median of the pixels whose centre lies in the annulus
    ``radius < d ≤ radius + 2`` (robust to a neighbouring spot). Inside the
    disc ``d ≤ radius`` (d measured from the nearest pixel to (xc, yc)):
    ``mass = Σ(I − bg)``; centroid and second moment use the weights
    ``max(I − bg, 0)``; ``size = sqrt(⟨r²⟩/2 − 1/12)`` (1/12: pixel-integration
    variance); ``signal`` = max of ``I − bg`` in the 3×3 around the centre.

    ``out`` receives ``(x_centroid, y_centroid, mass, signal, size, bg)``.
    """
    h, w = img.shape
    rc = int(math.floor(yc + 0.5))
    cc = int(math.floor(xc + 0.5))
    ro = radius + 2
    ann = np.empty((2 * ro + 1) * (2 * ro + 1))
    na = 0
    for i in range(max(rc - ro, 0), min(rc + ro + 1, h)):
        for j in range(max(cc - ro, 0), min(cc + ro + 1, w)):
            d2 = (i - rc) ** 2 + (j - cc) ** 2
            if d2 > radius * radius and d2 <= ro * ro:
                ann[na] = img[i, j]
                na += 1
    bg = np.median(ann[:na]) if na > 0 else 0.0
    mass = 0.0
    sw = 0.0
    sx = 0.0
    sy = 0.0
    for i in range(max(rc - radius, 0), min(rc + radius + 1, h)):
        for j in range(max(cc - radius, 0), min(cc + radius + 1, w)):
            if (i - rc) ** 2 + (j - cc) ** 2 <= radius * radius:
                v = img[i, j] - bg
                mass += v
                if v > 0.0:
                    sw += v
                    sx += v * j
                    sy += v * i
    if sw > 0.0:
        xm = sx / sw
        ym = sy / sw
    else:
        xm = float(cc)
        ym = float(rc)
    s2 = 0.0
    for i in range(max(rc - radius, 0), min(rc + radius + 1, h)):
        for j in range(max(cc - radius, 0), min(cc + radius + 1, w)):
            if (i - rc) ** 2 + (j - cc) ** 2 <= radius * radius:
                v = img[i, j] - bg
                if v > 0.0:
                    s2 += v * ((j - xm) ** 2 + (i - ym) ** 2)
    size = math.sqrt(max(s2 / sw / 2.0 - 1.0 / 12.0, 0.0)) if sw > 0.0 else 0.0
    sig = -np.inf
    for i in range(max(rc - 1, 0), min(rc + 2, h)):
        for j in range(max(cc - 1, 0), min(cc + 2, w)):
            sig = max(sig, img[i, j] - bg)
    out[0] = xm
    out[1] = ym
    out[2] = mass
    out[3] = sig
    out[4] = size
    out[5] = bg


@njit(cache=True, nogil=True)
def _refine(img, row, col, mode, half, sigma0, out):
    """Sub-pixel position and photometry of one candidate.

    Fills ``out[:6] = (x, y, mass, signal, size_px, local_background)`` in the
    units of ``img`` (background-subtracted working frame).
    """
    ap = np.empty(6)
    if mode == MODE_GAUSSIAN:
        theta = np.empty(5)
        if _fit_gaussian(img, row, col, half, sigma0, 40, theta):
            out[0] = theta[0]
            out[1] = theta[1]
            out[2] = theta[2]
            out[3] = theta[2] / (2.0 * math.pi * theta[3] * theta[3])
            out[4] = theta[3]
            out[5] = theta[4]
            return
        mode = MODE_CENTROID  # fall back
    radius = max(int(math.ceil(half * 0.8)), 2)
    if mode == MODE_RADIAL:
        xy = np.empty(2)
        if _radial_center(img, row, col, half, xy):
            _aperture(img, xy[0], xy[1], radius, ap)
            out[0] = xy[0]
            out[1] = xy[1]
            out[2:6] = ap[2:6]
            return
    # centroid, re-centred once when it moved by more than half a pixel
    _aperture(img, float(col), float(row), radius, ap)
    if abs(ap[0] - col) > 0.5 or abs(ap[1] - row) > 0.5:
        _aperture(img, ap[0], ap[1], radius, ap)
    out[:6] = ap[:6]


# --------------------------------------------------------------------------- drivers
@njit(cache=True, nogil=True)
def _process_frame(raw, bg, s, work, gh, bh, filt, rows, cols, vals, out):
    """Detect and localise the spots of one frame.

    Parameters
    ----------
    raw : (h, w) uint8 / uint16 / float32
    bg : float32 (h, w) or (0, 0)
        Background in raw units (subtracted before the sign flip).
    s : Settings
    work, gh, bh, filt : float32 (h, w)
        Scratch.
    rows, cols : int64 (cap,), vals : float64 (cap,)
        Scratch for the candidates.
    out : float64 (cap, N_FIELDS)
        Spots, columns :data:`FIELDS`.

    Returns
    -------
    n : int
        Number of spots (may exceed ``cap``: then only ``cap`` are written and
        the caller must retry with a larger capacity).
    sigma_f : float
        Noise of the filtered frame.
    """
    amax = _prepare(raw, bg, s.sign, work)
    _bandpass(work, s.gauss, s.box_half, gh, bh, filt)
    sigma_f = _robust_sigma(filt, s.edge, 40000)
    if s.threshold >= 0.0:
        thr = s.threshold
    else:
        thr = s.threshold_snr * sigma_f
    # rounding floor: a flat frame must give no spot
    thr = max(thr, 1e-5 * amax, 1e-30)
    n = _find_maxima(filt, thr, s.edge, s.sep_dy, s.sep_dx, rows, cols, vals)
    cap = rows.shape[0]
    has_bg = bg.shape[0] > 0
    noise = sigma_f if sigma_f > 0.0 else thr / max(s.threshold_snr, 1e-30)
    for k in range(min(n, cap)):
        _refine(work, rows[k], cols[k], s.mode, s.roi_half, s.sigma0, out[k])
        b0 = bg[rows[k], cols[k]] if has_bg else 0.0
        out[k, 5] = b0 + s.sign * out[k, 5]
        out[k, 6] = vals[k] / noise
    return n, sigma_f


@njit(cache=True, parallel=True)
def _locate_chunk(frames, bg, s, out, counts, noise):
    """Run :func:`_process_frame` on every frame of a chunk, frames in parallel.

    Parameters
    ----------
    frames : (k, h, w) uint8 / uint16 / float32
    bg : float32 (h, w) or (0, 0)
    s : Settings
    out : float64 (k, cap, N_FIELDS)
    counts : int64 (k,)
        Number of spots per frame (may exceed cap, see _process_frame).
    noise : float64 (k,)
        Filtered-frame noise sigma per frame.
    """
    k, h, w = frames.shape
    cap = out.shape[1]
    nw = min(get_num_threads(), k)
    for wi in prange(nw):
        work = np.empty((h, w), np.float32)
        gh = np.empty((h, w), np.float32)
        bh = np.empty((h, w), np.float32)
        filt = np.empty((h, w), np.float32)
        rows = np.empty(cap, np.int64)
        cols = np.empty(cap, np.int64)
        vals = np.empty(cap, np.float64)
        for i in range(wi, k, nw):
            n, sf = _process_frame(frames[i], bg, s, work, gh, bh, filt, rows, cols, vals, out[i])
            counts[i] = n
            noise[i] = sf
