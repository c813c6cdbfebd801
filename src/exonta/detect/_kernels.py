"""Private numba kernels of :mod:`exonta.detect`.

Every kernel takes arrays and scalars and fills preallocated outputs; the one
public wrapper (:mod:`exonta.detect.locate`) validates, allocates and builds the
DataFrame. Each kernel has a slow numpy twin in ``tests/reference/detect_ref.py``.

Per-frame pipeline (:func:`_process_frame`)::

    raw ─prepare─▶ W = sign·(raw − background)              (float32)
        ─bandpass─▶ F = G_σ * W − box_mean(W)               (matched filter)
        ─noise────▶ σ_F = 3σ-clipped RMS of F per 16-px tile (shot noise
                    varies with the illumination), capped at 8× the median
                    of its 5×5 tiles (a bright spot must not raise its own
                    threshold), bilinearly interpolated
        ─maxima───▶ pixels with F > k·σ_F that are the maximum of F in a disc
                    of radius min_separation (ties broken by raster index)
        ─bright───▶ one candidate per clipped region (at its centre), no two
                    without a saddle of F between them, none that is noise in
                    the shot-noise halo of a much brighter spot
        ─refine───▶ Gaussian LSQ fit / radial symmetry / centroid per candidate

Coordinates: x = column, y = row, the centre of the top-left pixel is (0, 0).
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit, prange

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
        "noise_tile",     # int: side of the tiles of the local noise estimate, px
        "saturation",     # float: raw value at/above which a pixel is left out of fits (inf: none)
        "merge_sigma",    # float: fitted spots closer than this × the smaller size_px are one spot (0: off)
        # candidate search on the 2×2-binned frame (search_bin = 2; 1: at full resolution); the lengths of
        # the search in binned pixels (see locate._settings):
        "search_bin",     # int: 1 or 2
        "gauss_b",        # float32: normalised 1-D Gaussian of the binned spot's sigma
        "box_half_b",     # int
        "edge_b",         # int
        "sep_dy_b",       # int64 (m,)
        "sep_dx_b",       # int64 (m,)
        "sigma0_b",       # float: the binned spot's sigma, binned px
        # smallest tile noise of the filtered frame (a floor on the grid; 0: none), full-res and binned:
        # DetectParams.noise_floor through the filter (lossily compressed frames, see locate._settings)
        "min_sigma_f",    # float
        "min_sigma_f_b",  # float
        # (the noise tiles keep their side, noise_tile, in binned pixels: the same number of samples per tile)
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


# Rows between fresh sums of the running vertical box sum in _filter_frame.
_BOX_REFRESH = 32


@njit(cache=True, nogil=True, fastmath=True)
def _taps_row(dst, src, off, coef, ntap, w):
    """``dst[x] = Σ_k coef[k]·src[off + k + x]`` for x < w.

    Four taps per pass over ``dst`` (each pass a vectorised loop over
    contiguous rows): a tap-per-pass loop is bound by the load/store of
    ``dst``, not by the arithmetic.
    """
    if ntap >= 4:
        c0 = coef[0]
        c1 = coef[1]
        c2 = coef[2]
        c3 = coef[3]
        a0 = src[off:off + w]
        a1 = src[off + 1:off + 1 + w]
        a2 = src[off + 2:off + 2 + w]
        a3 = src[off + 3:off + 3 + w]
        for x in range(w):
            dst[x] = (c0 * a0[x] + c1 * a1[x]) + (c2 * a2[x] + c3 * a3[x])
        k = 4
    else:
        c0 = coef[0]
        a0 = src[off:off + w]
        for x in range(w):
            dst[x] = c0 * a0[x]
        k = 1
    while k + 4 <= ntap:
        c0 = coef[k]
        c1 = coef[k + 1]
        c2 = coef[k + 2]
        c3 = coef[k + 3]
        a0 = src[off + k:off + k + w]
        a1 = src[off + k + 1:off + k + 1 + w]
        a2 = src[off + k + 2:off + k + 2 + w]
        a3 = src[off + k + 3:off + k + 3 + w]
        for x in range(w):
            dst[x] += (c0 * a0[x] + c1 * a1[x]) + (c2 * a2[x] + c3 * a3[x])
        k += 4
    while k < ntap:
        c0 = coef[k]
        a0 = src[off + k:off + k + w]
        for x in range(w):
            dst[x] += c0 * a0[x]
        k += 1


# Radius (taps each side) up to which the Gaussian along x is one pass (:func:`_sym11_row`).
_SYM_R = 5


@njit(cache=True, nogil=True, fastmath=True)
def _sym11_row(dst, src, off, half, w):
    """``dst[x] = half[0]·v[x+5] + Σ_{1≤j≤5} half[j]·(v[x+5−j] + v[x+5+j])``, ``v = src[off:]``, for x < w.

    A symmetric filter of up to 11 taps (``half`` float32 (6,): centre, then each side; zeros for a
    shorter one) in a single pass over ``dst``, pairs summed before the multiply. Every load is an
    offset of one slice, with a 0-based loop: LLVM vectorises it (0.43 against 0.59 ms per 1024²
    frame for 11 taps four to a pass, :func:`_taps_row`; an index ``off + x`` with a run-time ``off``
    is not vectorised, since its sign is unknown).
    """
    c0 = half[0]
    c1 = half[1]
    c2 = half[2]
    c3 = half[3]
    c4 = half[4]
    c5 = half[5]
    v = src[off:off + w + 10]
    for x in range(w):
        dst[x] = (((c5 * (v[x] + v[x + 10]) + c4 * (v[x + 1] + v[x + 9]))
                   + (c3 * (v[x + 2] + v[x + 8]) + c2 * (v[x + 3] + v[x + 7])))
                  + (c1 * (v[x + 4] + v[x + 6]) + c0 * v[x + 5]))


@njit(cache=True, nogil=True, fastmath=True)
def _box_row(dst, src, off, nb, w, quad):
    """``dst[x] = Σ_{k<nb} src[off + k + x]`` for x < w, by sums of four
    (``quad[x] = src[off+x] + … + src[off+x+3]``, scratch of length ≥ w + nb)
    added four at a time: ≈ nb/4 + 1 additions per pixel instead of nb − 1."""
    nq = nb // 4
    if nq == 0:
        a0 = src[off:off + w]
        for x in range(w):
            dst[x] = a0[x]
        for k in range(1, nb):
            a0 = src[off + k:off + k + w]
            for x in range(w):
                dst[x] += a0[x]
        return
    m = w + 4 * (nq - 1)
    a0 = src[off:off + m]
    a1 = src[off + 1:off + 1 + m]
    a2 = src[off + 2:off + 2 + m]
    a3 = src[off + 3:off + 3 + m]
    for x in range(m):
        quad[x] = (a0[x] + a1[x]) + (a2[x] + a3[x])
    j = 0
    first = True
    while j < nq:
        if j + 4 <= nq:
            q0 = quad[4 * j:4 * j + w]
            q1 = quad[4 * j + 4:4 * j + 4 + w]
            q2 = quad[4 * j + 8:4 * j + 8 + w]
            q3 = quad[4 * j + 12:4 * j + 12 + w]
            if first:
                for x in range(w):
                    dst[x] = (q0[x] + q1[x]) + (q2[x] + q3[x])
            else:
                for x in range(w):
                    dst[x] += (q0[x] + q1[x]) + (q2[x] + q3[x])
            j += 4
        else:
            q0 = quad[4 * j:4 * j + w]
            if first:
                for x in range(w):
                    dst[x] = q0[x]
            else:
                for x in range(w):
                    dst[x] += q0[x]
            j += 1
        first = False
    for k in range(4 * nq, nb):
        a0 = src[off + k:off + k + w]
        for x in range(w):
            dst[x] += a0[x]


@njit(cache=True, nogil=True, fastmath=True)
def _filter_frame(raw, bg, sign, gauss, box_half, work, filt):
    """Working frame and matched filter of one frame, in one streaming pass.

    ``work = sign·(raw − bg)`` (float32; ``bg`` may be shape (0, 0) = none) and
    ``filt = G * work − box_mean(work)``: separable Gaussian ``gauss`` minus
    the mean over a (2b+1)² box, ``b = box_half``, nearest-edge padding.

    Rows are streamed: each input row is prepared, padded and filtered along
    x into two small ring buffers (Gaussian, box sums) of ``2·max(r, b)+2``
    rows, and each output row is formed from the ring as soon as the rows it
    needs are in (Gaussian taps along y; box by a running float32 sum along
    y, summed afresh every ``_BOX_REFRESH`` rows). The whole working set stays
    in cache. Every loop runs over contiguous rows (vectorised): the Gaussian
    along x in one pass up to 11 taps (:func:`_sym11_row`), otherwise and
    along y four taps per pass (:func:`_taps_row`), the box along x from sums
    of four (:func:`_box_row`).

    Parameters
    ----------
    raw : (h, w) uint8 / uint16 / float32
    bg : float32 (h, w) or (0, 0)
    sign : float
        +1, or −1 for dark spots.
    gauss : float32 (2r+1,)
        Normalised 1-D Gaussian (sum 1).
    box_half : int
    work, filt : float32 (h, w)
        Outputs.
    """
    h, w = raw.shape
    r = gauss.shape[0] // 2
    ntap = 2 * r + 1
    b = box_half
    nb = 2 * b + 1
    pad = max(r, b)  # rows above and below
    n_ring = 2 * pad + 2
    sym = r <= _SYM_R
    half = np.zeros(_SYM_R + 1, np.float32)
    if sym:
        half[:r + 1] = gauss[r:]
    xpad = max(pad, _SYM_R) if sym else pad  # columns left and right
    ring_g = np.empty((n_ring, w), np.float32)
    ring_b = np.empty((n_ring, w), np.float32)
    row = np.empty(w + 2 * xpad, np.float32)
    quad = np.empty(w + 2 * xpad, np.float32)
    acc = np.zeros(w, np.float32)
    has_bg = bg.shape[0] > 0
    s = np.float32(sign)
    inv_area = np.float32(1.0 / (nb * nb))
    nxt = 0
    for y in range(h):
        # ---- bring in the input rows up to y + pad (clamped): prepare + x-filter
        need = min(y + pad, h - 1)
        while nxt <= need:
            wr = work[nxt]
            _working_row(raw, bg, nxt, has_bg, s, wr)
            v0 = wr[0]
            v1 = wr[w - 1]
            for x in range(xpad):
                row[x] = v0
                row[xpad + w + x] = v1
            row[xpad:xpad + w] = wr
            if sym:
                _sym11_row(ring_g[nxt % n_ring], row, xpad - _SYM_R, half, w)
            else:
                _taps_row(ring_g[nxt % n_ring], row, xpad - r, gauss, ntap, w)
            _box_row(ring_b[nxt % n_ring], row, xpad - b, nb, w, quad)
            nxt += 1
        # ---- output row y
        if y % _BOX_REFRESH == 0:  # sum afresh now and then: a float32 running sum drifts
            acc[:] = 0.0
            for k in range(y - b, y + b + 1):
                src = ring_b[_clamp(k, h) % n_ring]
                for x in range(w):
                    acc[x] += src[x]
        else:
            add = ring_b[_clamp(y + b, h) % n_ring]
            sub = ring_b[_clamp(y - b - 1, h) % n_ring]
            for x in range(w):
                acc[x] += add[x] - sub[x]
        o_row = filt[y]
        k = 0
        while k < ntap:  # Gaussian along y, four taps per pass
            if k + 4 <= ntap:
                a0 = ring_g[_clamp(y + k - r, h) % n_ring]
                a1 = ring_g[_clamp(y + k + 1 - r, h) % n_ring]
                a2 = ring_g[_clamp(y + k + 2 - r, h) % n_ring]
                a3 = ring_g[_clamp(y + k + 3 - r, h) % n_ring]
                c0 = gauss[k]
                c1 = gauss[k + 1]
                c2 = gauss[k + 2]
                c3 = gauss[k + 3]
                if k == 0:
                    for x in range(w):
                        o_row[x] = ((c0 * a0[x] + c1 * a1[x]) + (c2 * a2[x] + c3 * a3[x])) - acc[x] * inv_area
                else:
                    for x in range(w):
                        o_row[x] += (c0 * a0[x] + c1 * a1[x]) + (c2 * a2[x] + c3 * a3[x])
                k += 4
            else:
                a0 = ring_g[_clamp(y + k - r, h) % n_ring]
                c0 = gauss[k]
                if k == 0:
                    for x in range(w):
                        o_row[x] = c0 * a0[x] - acc[x] * inv_area
                else:
                    for x in range(w):
                        o_row[x] += c0 * a0[x]
                k += 1


@njit(cache=True, nogil=True, fastmath=True)
def _working_row(raw, bg, y, has_bg, sg, wr):
    """Row ``y`` of the working frame: ``wr = sg·(raw[y] − bg[y])``, or ``sg·raw[y]`` without a background."""
    rr = raw[y]
    if has_bg:
        br = bg[y]
        for x in range(wr.shape[0]):
            wr[x] = sg * (np.float32(rr[x]) - br[x])
    else:
        for x in range(wr.shape[0]):
            wr[x] = sg * np.float32(rr[x])


@njit(cache=True, nogil=True, fastmath=True)
def _working_frame_bin2(raw, bg, sign, work, out):
    """The working frame ``work = sign·(raw − bg)`` (float32; ``bg`` may be shape (0, 0) = none; the
    frame the fits use) and ``out[i, j]``, the sum of its 2×2 block ``work[2i:2i+2, 2j:2j+2]`` (an odd
    last row or column is left out of ``out``), in one pass: each pair of working rows is summed into
    its binned row while it is still in cache (the working frame is not read back)."""
    has_bg = bg.shape[0] > 0
    sg = np.float32(sign)
    h2, w2 = out.shape
    for i in range(h2):
        _working_row(raw, bg, 2 * i, has_bg, sg, work[2 * i])
        _working_row(raw, bg, 2 * i + 1, has_bg, sg, work[2 * i + 1])
        _bin2_row(work[2 * i], work[2 * i + 1], out[i])
    for y in range(2 * h2, raw.shape[0]):  # an odd last row: in the working frame only
        _working_row(raw, bg, y, has_bg, sg, work[y])


@njit(cache=True, nogil=True, fastmath=True)
def _bin2_row(r0, r1, o):
    """``o[j] = r0[2j] + r0[2j+1] + r1[2j] + r1[2j+1]`` for j < len(o)."""
    for j in range(o.shape[0]):
        o[j] = (r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1])


# RMS of a unit normal truncated at ±3σ: corrects the clipped estimate.
_CLIP_K = 3.0
_CLIP_CORR = 0.9865867


@njit(cache=True, nogil=True, fastmath=True)
def _clip_pass(buf, n, lo, hi, c):
    """Count, sum and sum of squares of ``buf[:n] − c`` over the samples within [lo, hi] (all
    float32), branch-free and vectorised (the order of summation is free).

    The sums are float32: the shift ``c`` (a previous estimate of the mean) keeps them free of
    cancellation, and eight vector lanes each add a few dozen of a tile's samples, so the rounding
    is far below the estimate's statistical error; float32 halves the memory traffic and doubles
    the lanes of a float64 version."""
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    k = np.float32(0.0)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for i in range(n):
        v = buf[i]
        m = one if (v >= lo) & (v <= hi) else zero
        d = m * (v - c)
        s1 += d
        s2 += d * d
        k += m
    return float(k), float(s1), float(s2)


@njit(cache=True, nogil=True)
def _clipped_sigma_buf(buf, n, n_iter):
    """:func:`_clipped_sigma` of the samples ``buf[:n]`` (float32). The sums of each pass are
    of ``buf − c``, ``c`` the previous pass's mean (the first sample for the first pass)."""
    c = buf[0] if n > 0 else np.float32(0.0)
    prev = -1.0
    sd = 0.0
    lo = np.float32(-np.inf)
    hi = np.float32(np.inf)
    for it in range(n_iter):
        k, s1, s2 = _clip_pass(buf, n, lo, hi, c)
        if k < 2.0:
            break
        dm = s1 / k
        sd = math.sqrt(max(s2 / k - dm * dm, 0.0))
        if it > 0:
            sd /= _CLIP_CORR
        if k == prev:
            break
        prev = k
        mean = c + dm
        lo = np.float32(mean - _CLIP_K * sd)
        hi = np.float32(mean + _CLIP_K * sd)
        c = np.float32(mean)
    return sd


@njit(cache=True, nogil=True)
def _clipped_sigma(f, y0, y1, x0, x1, row_step, n_iter):
    """Robust noise sigma of ``f[y0:y1:row_step, x0:x1]`` by iterative 3σ clipping.

    Start with the standard deviation of all pixels, then repeatedly keep the
    pixels within mean ± 3σ and recompute (σ corrected by the ratio
    0.98659 of a ±3σ-truncated normal), until the kept set stops changing or
    ``n_iter`` passes. Spots are sparse outliers and get clipped; no sorting,
    so it is cheap enough for many small tiles. Returns 0 for an empty region.
    The samples are copied once into a contiguous buffer, whose clipping
    passes are branch-free and vectorised (:func:`_clip_pass`).
    """
    if y1 <= y0 or x1 <= x0:
        return 0.0
    buf = np.empty(((y1 - y0 + row_step - 1) // row_step) * (x1 - x0), np.float32)
    n = _gather(f, y0, y1, x0, x1, row_step, buf)
    return _clipped_sigma_buf(buf, n, n_iter)


@njit(cache=True, nogil=True)
def _gather(f, y0, y1, x0, x1, row_step, buf):
    """Copy ``f[y0:y1:row_step, x0:x1]`` into ``buf`` (float32, row-major); returns the count."""
    n = 0
    m = x1 - x0
    for y in range(y0, y1, row_step):
        dst = buf[n:n + m]
        src = f[y, x0:x1]
        for x in range(m):  # 0-based loop over slices: vectorised
            dst[x] = src[x]
        n += m
    return n


@njit(cache=True, nogil=True)
def _n_tiles(n, edge, tile):
    """Number of noise tiles along an axis of length n (interior [edge, n-edge))."""
    return max(1, (n - 2 * edge) // tile)


@njit(cache=True, nogil=True)
def _tile_span(length, edge, n_tiles, i):
    """``[lo, hi)`` of tile ``i`` of ``n_tiles`` splitting the interior ``[edge, length − edge)`` evenly."""
    inner = max(length - 2 * edge, 0)
    return edge + (i * inner) // n_tiles, edge + ((i + 1) * inner) // n_tiles


@njit(cache=True, nogil=True)
def _grid_shape(h, w, s):
    """(ny, nx) of the tile-noise grid of an (h, w) frame: of the binned frame when ``s.search_bin`` is 2."""
    if s.search_bin == 2:
        return _n_tiles(h // 2, s.edge_b, s.noise_tile), _n_tiles(w // 2, s.edge_b, s.noise_tile)
    return _n_tiles(h, s.edge, s.noise_tile), _n_tiles(w, s.edge, s.noise_tile)


@njit(cache=True, nogil=True)
def _noise_map(f, edge, grid, n_iter):
    """Noise sigma of ``f`` per tile: the interior ``[edge, n-edge)`` of each axis
    is split evenly into ``grid.shape`` tiles and each gets :func:`_clipped_sigma`
    (of every other row of the tile).

    Shot noise makes the noise larger where the illumination is brighter (a
    stray-light blob); a per-tile sigma keeps the threshold at the same false-
    positive rate everywhere.

    Every other row: 2× faster, little lost (the filter correlates rows). Not every other
    column as well: as precise on pure noise, but in the halo of bright clipped spots the
    clipping of the smaller sample then lowers σ, and on 400 nm beads junk tracks made an
    invented 8 % component at 68 nm (bench_accuracy mono400). A tile's samples are copied
    into one contiguous float32 buffer whose clipping passes are vectorised.
    """
    h, w = f.shape
    ny, nx = grid.shape
    lh = max(h - 2 * edge, 0)
    lw = max(w - 2 * edge, 0)
    buf = np.empty(((lh // ny + 2) // 2 + 1) * (lw // nx + 2), np.float32)
    for i in range(ny):
        y0, y1 = _tile_span(h, edge, ny, i)
        for j in range(nx):
            x0, x1 = _tile_span(w, edge, nx, j)
            n = _gather(f, y0, y1, x0, x1, 2, buf)
            grid[i, j] = _clipped_sigma_buf(buf, n, n_iter) if n > 0 else 0.0


@njit(cache=True, nogil=True)
def _local_sigma(grid, edge, h, w, y, x):
    """Bilinear interpolation of the tile-noise grid between tile centres (clamped)."""
    ny, nx = grid.shape
    th = max(h - 2 * edge, 1) / ny
    tw = max(w - 2 * edge, 1) / nx
    u = min(max((y - edge) / th - 0.5, 0.0), ny - 1.0)
    v = min(max((x - edge) / tw - 0.5, 0.0), nx - 1.0)
    i0 = min(int(u), ny - 1)
    j0 = min(int(v), nx - 1)
    i1 = min(i0 + 1, ny - 1)
    j1 = min(j0 + 1, nx - 1)
    fu = u - i0
    fv = v - j0
    return ((1 - fu) * ((1 - fv) * grid[i0, j0] + fv * grid[i0, j1])
            + fu * ((1 - fv) * grid[i1, j0] + fv * grid[i1, j1]))


# Row-segment length of the branch-free threshold pre-scan in _find_maxima, px.
_SEG = 64


@njit(cache=True, nogil=True)
def _tile_floor(grid):
    """Lower bound of the interpolated noise over each tile: the minimum of
    ``grid`` over the tile and its 8 neighbours (the bilinear interpolation of
    :func:`_local_sigma` inside a tile only mixes those), less a rounding margin."""
    ny, nx = grid.shape
    lo = np.empty((ny, nx))
    for i in range(ny):
        for j in range(nx):
            m = grid[i, j]
            for ii in range(max(i - 1, 0), min(i + 2, ny)):
                for jj in range(max(j - 1, 0), min(j + 2, nx)):
                    m = min(m, grid[ii, jj])
            lo[i, j] = m * (1.0 - 1e-9)
    return lo


@njit(cache=True, nogil=True)
def _find_maxima(f, grid, k_sigma, thr_abs, edge, sep_dy, sep_dx, rows, cols, sig):
    """Local maxima of ``f`` above a (local) threshold with a minimum separation.

    A pixel p is kept when ``f[p] > max(k_sigma·σ(p), thr_abs)`` — σ(p) the
    tile-noise ``grid`` interpolated at p (:func:`_local_sigma`) — and, for
    every offset d of the disc (``sep_dy``, ``sep_dx``), ``f[p] > f[p+d]`` or
    (``f[p] == f[p+d]`` and p comes first in raster order): exactly one maximum
    survives per plateau. Neighbours outside the image are ignored; pixels
    closer than ``edge`` to a border are never kept.

    The scan goes row by row. Each row is first compared, branch-free and
    64 px at a time (vectorised), with a lower bound of the threshold in its
    noise tile (:func:`_tile_floor`, laid out along the row of tiles), and a
    run with no pixel above it is skipped. A single global bound (the noise of
    the quietest tile) would be exceeded in most runs of a field with haze or
    uneven illumination.

    Returns the total number of maxima; only the first ``len(rows)`` are
    written (raster order), with ``sig`` = σ(p).
    """
    h, w = f.shape
    cap = rows.shape[0]
    n = 0
    m = sep_dy.shape[0]
    ny, nx = grid.shape
    lo = _tile_floor(grid)
    thr_row = np.empty(w, np.float32)  # pre-scan bound along a row of tiles (rounded down)
    cross = m >= 4 and abs(sep_dy[3]) + abs(sep_dx[3]) == 1  # the disc holds the 4 direct neighbours
    x_hi = w - edge
    for i in range(ny):
        y0, y1 = _tile_span(h, edge, ny, i)
        for j in range(nx):
            t = max(k_sigma * lo[i, j], thr_abs)
            t32 = np.float32(t)
            if t32 > t:  # float32 rounding must not lose a pixel of the pre-scan
                t32 = np.nextafter(t32, np.float32(-np.inf))
            x0, x1 = _tile_span(w, edge, nx, j)
            thr_row[x0:x1] = t32
        for y in range(y0, y1):
            fr = f[y]
            inner_y = cross and 0 < y < h - 1
            for xs in range(edge, x_hi, _SEG):
                xe = min(xs + _SEG, x_hi)
                seg = fr[xs:xe]  # slices with a 0-based loop: LLVM vectorises these counts
                tseg = thr_row[xs:xe]
                above = 0
                fast = inner_y and xs > 0 and xe < w
                if fast:
                    # above the bound and not below any of the 4 direct neighbours
                    # (ties as in the full test): the few pixels that can be maxima
                    lft = fr[xs - 1:xe - 1]
                    rgt = fr[xs + 1:xe + 1]
                    up = f[y - 1, xs:xe]
                    dn = f[y + 1, xs:xe]
                    for x in range(seg.shape[0]):
                        v = seg[x]
                        above += (v > tseg[x]) & (v > lft[x]) & (v >= rgt[x]) & (v > up[x]) & (v >= dn[x])
                else:
                    for x in range(seg.shape[0]):
                        above += seg[x] > tseg[x]
                if above == 0:
                    continue
                for x in range(xs, xe):
                    v = fr[x]
                    if not v > thr_row[x]:
                        continue
                    q0 = 0
                    if fast:
                        if not ((v > fr[x - 1]) & (v >= fr[x + 1]) & (v > f[y - 1, x]) & (v >= f[y + 1, x])):
                            continue
                        q0 = 4  # the direct neighbours are done
                    # the interpolated local threshold, then the whole disc
                    sl = _local_sigma(grid, edge, h, w, y, x)
                    if not v > max(k_sigma * sl, thr_abs):
                        continue
                    ok = True
                    for q in range(q0, m):
                        yy = y + sep_dy[q]
                        xx = x + sep_dx[q]
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
                            sig[n] = sl
                        n += 1
    return n


@njit(cache=True, nogil=True)
def _compact_candidates(keep, n, rows, cols, vals, peak, sat):
    """Move the kept candidates (``keep[:n]``) to the front of the candidate arrays, in order; returns their number."""
    j = 0
    for k in range(n):
        if keep[k]:
            rows[j] = rows[k]
            cols[j] = cols[k]
            vals[j] = vals[k]
            peak[j] = peak[k]
            sat[j] = sat[k]
            j += 1
    return j


# --------------------------------------------------------------------------- bright spots
# A tile's noise is capped at this multiple of the median of its 5×5 tile neighbourhood. A clipped 200 nm bead
# raised its tile's noise 100–360× (it fell below its own threshold); an in-focus 100 nm bead raises it ~7×, and
# that is left alone (the detections of a 100 nm video match those without a cap): with a cap of 1.5 the dim
# defocused neighbours of 100 nm beads became detectable, the linker joined them into mixed-up tracks, and the
# size distribution of simulated 100 nm beads at 37 °C got an invented 11 % peak at 47 nm (bench_accuracy
# mono100_37c). With 8 the clipped beads are still found (200 nm: 98.5 % within 10 µm of focus; 400 nm: 99.6 %
# within 12 µm; 60 simulated frames).
_NOISE_CAP = 8.0
# Candidates whose filtered peak is below 1/_HALO_RATIO of a candidate within _HALO_REACH_TILES
# noise tiles are tested against the noise around themselves (_halo_test).
_HALO_RATIO = 4.0
_HALO_REACH_TILES = 2.0
# Half-width of the window of that local noise, in noise tiles, and its excluded centre radius in PSF sigmas.
_HALO_HALF_TILES = 0.5
_HALO_HOLE_SIGMAS = 2.0
# Candidates closer than this × the PSF sigma are one spot when the filtered image has no saddle
# below _SADDLE_RATIO × the lower peak between them (_merge_no_saddle).
_SADDLE_REACH_SIGMAS = 6.5
_SADDLE_RATIO = 0.9


@njit(cache=True, nogil=True)
def _median5_lower(orig, i, j, nx):
    """Median of ``orig[i, j-2:j+3]`` (5 tiles), or the minimum of the clipped row at the border
    (both are lower bounds on the row's contribution to a 5×5 median, see :func:`_cap_noise`)."""
    j0 = max(j - 2, 0)
    j1 = min(j + 3, nx)
    if j1 - j0 < 5:
        m = orig[i, j0]
        for jj in range(j0 + 1, j1):
            m = min(m, orig[i, jj])
        return m
    a = orig[i, j - 2]
    b = orig[i, j - 1]
    c = orig[i, j]
    d = orig[i, j + 1]
    e = orig[i, j + 2]
    # order the pairs (a, b), (c, d) and make a the minimum of the four: a is then at most the 2nd
    # smallest of the five, so the median (3rd of 5) is the 2nd smallest of b, c, d, e
    if a > b:
        a, b = b, a
    if c > d:
        c, d = d, c
    if a > c:
        a, c = c, a
        b, d = d, b
    return min(max(min(b, c), min(d, e)), min(max(b, c), max(d, e)))


@njit(cache=True, nogil=True, fastmath=True)
def _tile_level(raw, edge, ny, nx, i, j):
    """Mean of ``raw`` over noise tile (i, j) (every other row, the tiles of :func:`_noise_map`)."""
    h, w = raw.shape
    y0, y1 = _tile_span(h, edge, ny, i)
    x0, x1 = _tile_span(w, edge, nx, j)
    s = 0.0
    k = 0
    for y in range(y0, y1, 2):
        row = raw[y, x0:x1]
        t = 0.0
        for x in range(row.shape[0]):  # 0-based loop over a slice: vectorised
            t += row[x]
        s += t
        k += row.shape[0]
    return s / k if k > 0 else 0.0


@njit(cache=True, nogil=True)
def _median_sorted(buf, k):
    return buf[k // 2] if k % 2 == 1 else 0.5 * (buf[k // 2 - 1] + buf[k // 2])


@njit(cache=True, nogil=True)
def _insert(buf, k, v):
    """Insert v into the sorted ``buf[:k]`` (insertion sort step)."""
    p = k
    while p > 0 and buf[p - 1] > v:
        buf[p] = buf[p - 1]
        p -= 1
    buf[p] = v


@njit(cache=True, nogil=True)
def _cap_noise(grid, ratio, raw, edge):
    """Cap each tile noise at ``ratio`` × the median of the tiles in its 5×5 neighbourhood (in place),
    allowing for a brighter tile's shot noise.

    A bright or defocused spot (a clipped 8-bit bead: tens of times the signal
    of the dimmest spots) can fill its tile, and the clipped RMS of that tile
    is then the spot's own profile: it was measured ~100× the background
    noise, so the spot fell below its own threshold. Shot noise of the
    illumination varies smoothly over many tiles, so the median of the
    neighbourhood is a robust estimate that one spot cannot raise (it would
    have to fill 13 of the 25 tiles). Shot noise does rise where the light
    is brighter (a stray-light blob a few tiles wide): the cap is raised by
    ``sqrt(L/L_med)`` (≥ 1), ``L`` the mean raw level of the tile and
    ``L_med`` the median of those of the 5×5 tiles (Poisson: variance ∝
    level; with a camera offset in ``raw`` this allows a little less). A spot
    raises ``L`` too, but far less than its tile noise (a clipped 200 nm bead:
    ~100× the noise for a few × the level). The full median (insertion sort) is only
    computed where the tile exceeds ``ratio`` × a cheap lower bound of it: the
    minimum over the 5 rows of the row medians (each row has at most 2 of its
    5 tiles below its median, so at most 10 of the 25 are below that minimum).
    Returns the number of capped tiles.
    """
    ny, nx = grid.shape
    orig = grid.copy()
    rmed = np.empty((ny, nx))
    for i in range(ny):
        for j in range(nx):
            rmed[i, j] = _median5_lower(orig, i, j, nx)
    buf = np.empty(25)
    lbuf = np.empty(25)
    lev = np.full((ny, nx), -1.0)
    n_cap = 0
    for i in range(ny):
        i0 = max(i - 2, 0)
        i1 = min(i + 3, ny)
        for j in range(nx):
            m = rmed[i0, j]
            for ii in range(i0 + 1, i1):
                m = min(m, rmed[ii, j])
            if not orig[i, j] > ratio * m:
                continue
            k = 0
            for ii in range(i0, i1):
                for jj in range(max(j - 2, 0), min(j + 3, nx)):
                    _insert(buf, k, orig[ii, jj])
                    k += 1
            lim = ratio * _median_sorted(buf, k)
            if not orig[i, j] > lim:
                continue
            # allowance for the shot noise of a brighter tile (levels computed once, on demand)
            k = 0
            for ii in range(i0, i1):
                for jj in range(max(j - 2, 0), min(j + 3, nx)):
                    if lev[ii, jj] < 0.0:
                        lev[ii, jj] = max(_tile_level(raw, edge, ny, nx, ii, jj), 0.0)
                    _insert(lbuf, k, lev[ii, jj])
                    k += 1
            l_med = _median_sorted(lbuf, k)
            if l_med > 0.0 and lev[i, j] > l_med:
                lim *= math.sqrt(lev[i, j] / l_med)
            if orig[i, j] > lim:
                grid[i, j] = lim
                n_cap += 1
    return n_cap


@njit(cache=True, nogil=True)
def _raise_to(grid, floor):
    """``grid = max(grid, floor)`` in place (nothing when ``floor`` ≤ 0)."""
    if floor > 0.0:
        ny, nx = grid.shape
        for i in range(ny):
            for j in range(nx):
                if grid[i, j] < floor:
                    grid[i, j] = floor


@njit(cache=True, nogil=True)
def _sort_candidates(rows, cols, vals, peak, sat, n):
    """Stable insertion sort of candidates ``[:n]`` (and their ``vals``, ``peak``, ``sat`` rows)
    into raster order (nearly sorted input)."""
    tmp = np.empty(sat.shape[1])
    for k in range(1, n):
        r = rows[k]
        c = cols[k]
        v = vals[k]
        p = peak[k]
        tmp[:] = sat[k]
        j = k
        while j > 0 and (rows[j - 1] > r or (rows[j - 1] == r and cols[j - 1] > c)):
            rows[j] = rows[j - 1]
            cols[j] = cols[j - 1]
            vals[j] = vals[j - 1]
            peak[j] = peak[j - 1]
            sat[j] = sat[j - 1]
            j -= 1
        rows[j] = r
        cols[j] = c
        vals[j] = v
        peak[j] = p
        sat[j] = tmp


@njit(cache=True, nogil=True)
def _border_region_centre(y_lo, y_hi, x_lo, x_hi, cy, cx, h, w):
    """Centre of a clipped region cut by the image border; (-1, -1) when it lies beyond the border.

    The centroid ``(cy, cx)`` of a clipped disc cut by the border is biased
    inward (a bead centred on the border looked a few px inside it and was
    counted). For a disc of radius ρ cut by the top border, the extent along
    the border (columns) is 2ρ when its centre is inside the frame, and the
    far edge is ``y_hi + 1/2 = y_c + ρ``; so ``y_c = y_hi + 1/2 − (x_hi − x_lo + 1)/2``.
    When the centre is beyond the border the extent is a chord 2√(ρ² − y_c²)
    and the same formula gives ``y_c + ρ − √(ρ² − y_c²) < 0``: the sign is
    right in both cases, so such a region (its centre outside the frame) is
    dropped. Likewise for the other borders; along an axis whose borders the
    region does not touch, the centroid is kept (unbiased by symmetry).
    """
    ry = 0.5 * (x_hi - x_lo + 1)  # half extent along the rows' direction: the radius seen by a top/bottom cut
    rx = 0.5 * (y_hi - y_lo + 1)
    if y_lo == 0 and y_hi < h - 1:
        cy = y_hi + 0.5 - ry
    elif y_hi == h - 1 and y_lo > 0:
        cy = y_lo - 0.5 + ry
    if x_lo == 0 and x_hi < w - 1:
        cx = x_hi + 0.5 - rx
    elif x_hi == w - 1 and x_lo > 0:
        cx = x_lo - 0.5 + rx
    if cy < 0.0 or cy > h - 1.0 or cx < 0.0 or cx > w - 1.0:
        return -1.0, -1.0
    return cy, cx


@njit(cache=True, nogil=True)
def _merge_saturated(raw, saturation, reach, rows, cols, vals, peak, sat, n):
    """One candidate per clipped (saturated) region, at the region's centroid; returns the new count.

    The band-passed image of a clipped spot's flat top is ~0 inside (the
    local-mean term equals the plateau) and has several maxima along its rim,
    and none at the centre. Every candidate with a pixel ``raw >= saturation``
    within ``reach`` px (Chebyshev) belongs to the 8-connected saturated region
    of the nearest such pixel; each region keeps one candidate — the one with
    the highest filtered ``peak`` (its ``peak`` and noise ``vals`` are kept, so
    its snr is that of its strongest rim maximum) — moved to the rounded
    centroid of the region's pixels, where the Gaussian fit (which censors the
    clipped pixels) starts. Candidates stay in raster order. ``sat[k]`` (float64
    (cap, 3)) is set to (equivalent radius √(area/π), centroid row, centroid
    column) of candidate k's region, px, or 0 for an unclipped candidate.
    """
    if not saturation < np.inf or n == 0:
        return n
    h, w = raw.shape
    label = np.zeros((0, 0), np.int32)
    stack = np.empty(0, np.int64)
    reg_r = np.empty(n)
    reg_c = np.empty(n)
    reg_a = np.empty(n)
    owner = np.full(n, -1, np.int64)  # region of each candidate
    best = np.full(n, -1, np.int64)   # kept candidate of each region
    n_reg = 0
    for k in range(n):
        r = rows[k]
        c = cols[k]
        bd = 1 << 30
        sr = -1
        sc = -1
        for y in range(max(r - reach, 0), min(r + reach + 1, h)):
            for x in range(max(c - reach, 0), min(c + reach + 1, w)):
                if raw[y, x] >= saturation:
                    d = (y - r) ** 2 + (x - c) ** 2
                    if d < bd:
                        bd = d
                        sr = y
                        sc = x
        if sr < 0:
            continue
        if label.shape[0] == 0:
            label = np.zeros((h, w), np.int32)
            stack = np.empty(256, np.int64)
        lab = label[sr, sc]
        if lab == 0:  # flood fill a new region (8-connected), centroid of its pixels
            n_reg += 1
            lab = n_reg
            label[sr, sc] = lab
            stack[0] = sr * w + sc
            top = 1
            sy = 0.0
            sx = 0.0
            cnt = 0
            y_lo = sr
            y_hi = sr
            x_lo = sc
            x_hi = sc
            while top > 0:
                top -= 1
                p = stack[top]
                py = p // w
                px = p - py * w
                sy += py
                sx += px
                cnt += 1
                y_lo = min(y_lo, py)
                y_hi = max(y_hi, py)
                x_lo = min(x_lo, px)
                x_hi = max(x_hi, px)
                for yy in range(max(py - 1, 0), min(py + 2, h)):
                    for xx in range(max(px - 1, 0), min(px + 2, w)):
                        if label[yy, xx] == 0 and raw[yy, xx] >= saturation:
                            label[yy, xx] = lab
                            if top == stack.shape[0]:
                                grown = np.empty(2 * top, np.int64)
                                grown[:top] = stack[:top]
                                stack = grown
                            stack[top] = yy * w + xx
                            top += 1
            reg_r[lab - 1] = sy / cnt
            reg_c[lab - 1] = sx / cnt
            reg_a[lab - 1] = cnt
            if y_lo == 0 or y_hi == h - 1 or x_lo == 0 or x_hi == w - 1:
                cy, cx = _border_region_centre(y_lo, y_hi, x_lo, x_hi, reg_r[lab - 1], reg_c[lab - 1], h, w)
                reg_r[lab - 1] = cy
                reg_c[lab - 1] = cx
        owner[k] = lab - 1
        b = best[lab - 1]
        if b < 0 or peak[k] > peak[b]:
            best[lab - 1] = k
    sat[:n] = 0.0
    if n_reg == 0:
        return n
    j = 0
    for k in range(n):
        g = owner[k]
        if g >= 0:
            if best[g] != k or not reg_r[g] >= 0.0:  # a duplicate, or a spot centred beyond the border
                continue
            rows[j] = int(round(reg_r[g]))
            cols[j] = int(round(reg_c[g]))
            sat[j, 0] = math.sqrt(reg_a[g] / math.pi)
            sat[j, 1] = reg_r[g]
            sat[j, 2] = reg_c[g]
        else:
            rows[j] = rows[k]
            cols[j] = cols[k]
            sat[j] = 0.0
        vals[j] = vals[k]
        peak[j] = peak[k]
        j += 1
    _sort_candidates(rows, cols, vals, peak, sat, j)
    return j


@njit(cache=True, nogil=True)
def _halo_test(f, k_sigma, ratio, reach, half, hole, rows, cols, vals, peak, sat, n):
    """Drop candidates that are noise in the halo of a much brighter spot; returns the new count.

    Shot noise is Poisson: around a spot with tens of times the signal of a
    dim particle the noise of ``f`` is raised far above the background's, in
    a halo that a tile (or a capped tile, :func:`_cap_noise`) does not
    resolve, and its fluctuations pass the tile threshold. A candidate whose
    peak is below ``1/ratio`` of a candidate within ``reach`` px, or which is
    near a clipped candidate (``sat[m, 0] > 0``: its true peak is censored,
    and its filtered peak on the plateau is low), is therefore
    compared with the noise around itself: the 3σ-clipped RMS of ``f`` in the
    ``(2·half+1)²`` window centred on it, without the disc of radius ``hole``
    px (its own spot). It is kept when ``peak > k_sigma × max(that, vals)``
    (the test can only remove). A dim particle inside the halo is lost only
    where it is not significant against the real local noise. Candidates
    without a much brighter neighbour are not touched (no cost).
    """
    if n < 2 or not k_sigma > 0.0:
        return n
    h, w = f.shape
    keep = np.ones(n, np.bool_)
    buf = np.empty((2 * half + 1) * (2 * half + 1), np.float32)
    r2 = reach * reach
    hole2 = hole * hole
    for k in range(n):
        near = False
        for direction in (-1, 1):  # raster order: scan both ways until the rows are too far
            m = k + direction
            while 0 <= m < n:
                dr = rows[m] - rows[k]
                if dr * dr > r2:
                    break
                dc = cols[m] - cols[k]
                brighter = peak[m] > ratio * peak[k] or (sat[m, 0] > 0.0 and sat[k, 0] == 0.0)
                if brighter and dr * dr + dc * dc <= r2:
                    near = True
                    break
                m += direction
            if near:
                break
        if not near:
            continue
        r = rows[k]
        c = cols[k]
        cnt = 0
        for y in range(max(r - half, 0), min(r + half + 1, h)):
            for x in range(max(c - half, 0), min(c + half + 1, w)):
                if (y - r) ** 2 + (x - c) ** 2 > hole2:
                    buf[cnt] = f[y, x]
                    cnt += 1
        sd = _clipped_sigma_buf(buf, cnt, 6) if cnt > 0 else 0.0
        if not peak[k] > k_sigma * max(sd, vals[k]):
            keep[k] = False
    return _compact_candidates(keep, n, rows, cols, vals, peak, sat)


# --------------------------------------------------------------------------- refinement
@njit(cache=True, nogil=True)
def _solve_spd(a, b, n, out):
    """Solve ``a[:n, :n] @ out = b[:n]`` for a symmetric positive-definite ``a`` (Cholesky).

    Only the lower triangle of ``a`` is read; ``a`` is overwritten by the
    factor. Returns False when ``a`` is not numerically positive definite
    (a pivot ≤ 1e-300 or not finite), e.g. a singular damped JᵀJ.
    """
    for c in range(n):
        d = a[c, c]
        for k in range(c):
            d -= a[c, k] * a[c, k]
        if not d > 1e-300:
            return False
        d = math.sqrt(d)
        a[c, c] = d
        for r in range(c + 1, n):
            v = a[r, c]
            for k in range(c):
                v -= a[r, k] * a[c, k]
            a[r, c] = v / d
    for r in range(n):  # L z = b
        v = b[r]
        for k in range(r):
            v -= a[r, k] * out[k]
        out[r] = v / a[r, r]
    for r in range(n - 1, -1, -1):  # Lᵀ x = z
        v = out[r]
        for k in range(r + 1, n):
            v -= a[k, r] * out[k]
        out[r] = v / a[r, r]
    return True


# Abramowitz & Stegun 7.1.26: erf(x) ≈ 1 − t·(a1 + t·(a2 + t·(a3 + t·(a4 + t·a5))))·exp(−x²), t = 1/(1 + p·x),
# x ≥ 0, |error| ≤ 1.5e-7 (pixel integrals of the fit model to ~1e-6 of the spot's peak pixel).
_AS_P = 0.3275911
_AS_A1 = 0.254829592
_AS_A2 = -0.284496736
_AS_A3 = 1.421413741
_AS_A4 = -1.453152027
_AS_A5 = 1.061405429


@njit(cache=True, nogil=True)
def _erf_from_exp(x, e):
    """erf(x) given ``e = exp(−x²)`` (Abramowitz & Stegun 1964, 7.1.26; |error| ≤ 1.5e-7).

    The fit needs exp(−x²) at every pixel edge anyway (for the derivatives), so
    erf costs one division and a polynomial.
    """
    t = 1.0 / (1.0 + _AS_P * abs(x))
    y = 1.0 - t * (_AS_A1 + t * (_AS_A2 + t * (_AS_A3 + t * (_AS_A4 + t * _AS_A5)))) * e
    return y if x >= 0.0 else -y


@njit(cache=True, nogil=True)
def _pixel_gauss_1d(origin, n, mu, sigma, e, de_dmu, de_ds):
    """Pixel-integrated 1-D Gaussian and its derivatives.

    ``e[j] = ½[erf((t+½)/(√2σ)) − erf((t−½)/(√2σ))]`` with ``t = origin + j − mu``
    (the fraction of a unit-mass Gaussian falling in pixel j), and its
    derivatives with respect to ``mu`` and ``sigma``. Neighbouring pixels
    share an edge, so each edge is evaluated once (n + 1); the Gaussian at
    consecutive edges (a step of 1 px, u = 1/(√2σ) in x = a·u) follows
    ``exp(−(x+u)²) = exp(−x²)·r``, ``r = exp(−2xu − u²)``, and ``r`` itself
    is multiplied by ``exp(−2u²)`` per step: three exponentials per call;
    erf from that Gaussian (:func:`_erf_from_exp`).
    """
    inv = 1.0 / (_SQRT2 * sigma)
    c1 = 1.0 / (_SQRT2PI * sigma)
    c2 = c1 / sigma
    am = origin - mu - 0.5
    xm = am * inv
    em = math.exp(-xm * xm)
    r = math.exp(-inv * (2.0 * xm + inv))
    q = math.exp(-2.0 * inv * inv)
    fm = _erf_from_exp(xm, em)
    for j in range(n):
        ap = am + 1.0
        ep = em * r
        r *= q
        fp = _erf_from_exp(ap * inv, ep)
        e[j] = 0.5 * (fp - fm)
        de_dmu[j] = c1 * (em - ep)
        de_ds[j] = c2 * (am * em - ap * ep)
        am = ap
        em = ep
        fm = fp


@njit(cache=True, nogil=True)
def _gauss_sse(img, mask, r0, r1, c0, c1, row, col, th, ex, ey, dx, dy, sx, sy):
    """Sum of squared residuals of the model ``th`` on the ROI; fills the 1-D
    pixel-integrated Gaussians and their derivatives at ``th``."""
    nr = r1 - r0
    nc = c1 - c0
    _pixel_gauss_1d(c0, nc, th[0], th[3], ex, dx, sx)
    _pixel_gauss_1d(r0, nr, th[1], th[3], ey, dy, sy)
    amp = th[2]
    sse = 0.0
    for i in range(nr):
        base = th[4] + th[6] * (r0 + i - row)
        for j in range(nc):
            if mask[i, j]:
                d = img[r0 + i, c0 + j] - (base + th[5] * (c0 + j - col) + amp * ex[j] * ey[i])
                sse += d * d
    return sse


@njit(cache=True, nogil=True)
def _roi_bounds(shape, row, col, half):
    h, w = shape
    return max(row - half, 0), min(row + half + 1, h), max(col - half, 0), min(col + half + 1, w)


@njit(cache=True, nogil=True)
def _voronoi_mask(rows, cols, n, k, half, h, w, mask):
    """Mask of the ROI of candidate k: pixels closer to k than to any other candidate.

    ``mask`` (2·half+1)² uint8 is filled for the (clipped) ROI of candidate k,
    so that a neighbouring spot does not pull the fit; returns the number of
    pixels kept.
    """
    r0, r1, c0, c1 = _roi_bounds((h, w), rows[k], cols[k], half)
    mask[:, :] = 0
    for i in range(r1 - r0):
        for j in range(c1 - c0):
            mask[i, j] = 1
    kept = (r1 - r0) * (c1 - c0)
    reach = 2 * half + 1
    # candidates come in raster order: scan both ways until the rows are too far
    for direction in (-1, 1):
        m = k + direction
        while 0 <= m < n:
            dr = rows[m] - rows[k]
            if abs(dr) > reach:
                break
            if abs(cols[m] - cols[k]) <= reach:
                for i in range(r1 - r0):
                    for j in range(c1 - c0):
                        if mask[i, j]:
                            yy = r0 + i
                            xx = c0 + j
                            d_k = (yy - rows[k]) ** 2 + (xx - cols[k]) ** 2
                            d_m = (yy - rows[m]) ** 2 + (xx - cols[m]) ** 2
                            if d_m < d_k:
                                mask[i, j] = 0
                                kept -= 1
            m += direction
    return kept


# LM stops when the position and width steps are all below this, px. Gauss–Newton converges
# quadratically near the optimum, so the point reached is ≪ 1e-3 px from it, while the localisation
# error of a spot is ≳ 0.02 px (1e-4 cost one more iteration per fit for no measurable change).
# 5e-3 saved ~6 % of the per-spot time but left a wide spot's fit (σ 2.6 px from a 1.5 px start)
# 0.3 % short of the optimum in its offset and 0.1 % in its mass (tests/detect/test_kernels.py).
# (A start from the log-parabola through the 3×3's column and row sums saved ~3 %, and stopped a
# noise-free fit's offset 0.2 % short: the stop watches position and width only.)
_FIT_TOL = 1e-3
# Iteration cap of the detector's fits (a noise maximum may never converge).
_FIT_MAX_ITER = 12
# Damping increases (×10 each) tried per LM iteration before giving up.
_FIT_MAX_TRIALS = 6
# From this iteration on, a fit whose mass N is below _FIT_MIN_SIG standard errors stops
# (noise maxima wander for the whole budget; after 3 Gauss–Newton steps from the 3×3-centroid start a
# real spot is within ~1e-3 px of its optimum, so stopping a faint real one there costs nothing).
_FIT_SIG_ITER = 3
_FIT_MIN_SIG = 4.0


@njit(cache=True, nogil=True)
def _normal_eq_5(img, mask, r0, r1, c0, c1, th, ex, ey, dxv, dyv, sxv, syv, jtj, jtr):
    """JᵀJ (lower triangle) and Jᵀr of the 5-parameter model (x, y, N, σ, b)
    at ``th``, with scalar accumulators (the fast path of :func:`_fit_gaussian`)."""
    amp = th[2]
    b = th[4]
    a00 = a10 = a11 = a20 = a21 = a22 = a30 = a31 = a32 = a33 = 0.0
    a40 = a41 = a42 = a43 = a44 = 0.0
    r_0 = r_1 = r_2 = r_3 = r_4 = 0.0
    for i in range(r1 - r0):
        eyi = ey[i]
        dyi = dyv[i]
        syi = syv[i]
        for j in range(c1 - c0):
            if not mask[i, j]:
                continue
            exy = ex[j] * eyi
            res = img[r0 + i, c0 + j] - (b + amp * exy)
            j0 = amp * dxv[j] * eyi
            j1 = amp * ex[j] * dyi
            j2 = exy
            j3 = amp * (sxv[j] * eyi + ex[j] * syi)
            a00 += j0 * j0
            a10 += j1 * j0
            a11 += j1 * j1
            a20 += j2 * j0
            a21 += j2 * j1
            a22 += j2 * j2
            a30 += j3 * j0
            a31 += j3 * j1
            a32 += j3 * j2
            a33 += j3 * j3
            a40 += j0
            a41 += j1
            a42 += j2
            a43 += j3
            a44 += 1.0
            r_0 += j0 * res
            r_1 += j1 * res
            r_2 += j2 * res
            r_3 += j3 * res
            r_4 += res
    jtj[0, 0] = a00
    jtj[1, 0] = a10
    jtj[1, 1] = a11
    jtj[2, 0] = a20
    jtj[2, 1] = a21
    jtj[2, 2] = a22
    jtj[3, 0] = a30
    jtj[3, 1] = a31
    jtj[3, 2] = a32
    jtj[3, 3] = a33
    jtj[4, 0] = a40
    jtj[4, 1] = a41
    jtj[4, 2] = a42
    jtj[4, 3] = a43
    jtj[4, 4] = a44
    jtr[0] = r_0
    jtr[1] = r_1
    jtr[2] = r_2
    jtr[3] = r_3
    jtr[4] = r_4


@njit(cache=True, nogil=True)
def _profile_sums(e, d, g, n):
    """Sums over ``[:n]`` of one axis' profile E, its derivatives E' = ∂E/∂μ and G = ∂E/∂σ, and their
    products: ``(ΣE², ΣE'², ΣE'E, ΣE'G, ΣGE, ΣG², ΣE, ΣE', ΣG)`` (:func:`_normal_eq_5_full`)."""
    ee = dd = de = dg = ge = gg = se = sd = sg = 0.0
    for j in range(n):
        a = e[j]
        b = d[j]
        c = g[j]
        ee += a * a
        dd += b * b
        de += b * a
        dg += b * c
        ge += c * a
        gg += c * c
        se += a
        sd += b
        sg += c
    return ee, dd, de, dg, ge, gg, se, sd, sg


@njit(cache=True, nogil=True)
def _normal_eq_5_full(img, r0, r1, c0, c1, th, ex, ey, dxv, dyv, sxv, syv, rowsum, jtj, jtr):
    """:func:`_normal_eq_5` when every pixel of the ROI is used, from 1-D sums.

    The model is separable, N·E(j)·E(i), so each element of JᵀJ is a product
    of sums along x and along y (e.g. Σᵢⱼ (N·E'ⱼ·Eᵢ)² = N²·Σⱼ E'ⱼ²·Σᵢ Eᵢ²),
    and Jᵀr = Jᵀ·img − b·Jᵀ1 − N·Jᵀ(E⊗E) needs only the image's row products
    with E, E' and ∂E/∂σ: about 4 operations per pixel instead of ~35.
    ``rowsum[i]`` is Σⱼ img over ROI row i.
    """
    amp = th[2]
    b = th[4]
    nr = r1 - r0
    nc = c1 - c0
    sxx, sdd, sde, sds, sse_, sss, se, sd, ss = _profile_sums(ex, dxv, sxv, nc)
    tyy, tdd, tde, tds, tse, tss, te, td, ts = _profile_sums(ey, dyv, syv, nr)
    g0 = g1 = g2 = g3 = g4 = 0.0
    for i in range(nr):
        e = ey[i]
        d = dyv[i]
        g = syv[i]
        pe = 0.0
        pd = 0.0
        ps = 0.0
        for j in range(nc):
            v = img[r0 + i, c0 + j]
            pe += v * ex[j]
            pd += v * dxv[j]
            ps += v * sxv[j]
        g0 += e * pd
        g1 += d * pe
        g2 += e * pe
        g3 += e * ps + g * pe
        g4 += rowsum[i]
    a2 = amp * amp
    jtj[0, 0] = a2 * sdd * tyy
    jtj[1, 0] = a2 * sde * tde
    jtj[1, 1] = a2 * sxx * tdd
    jtj[2, 0] = amp * sde * tyy
    jtj[2, 1] = amp * sxx * tde
    jtj[2, 2] = sxx * tyy
    jtj[3, 0] = a2 * (sds * tyy + sde * tse)
    jtj[3, 1] = a2 * (sse_ * tde + sxx * tds)
    jtj[3, 2] = amp * (sse_ * tyy + sxx * tse)
    jtj[3, 3] = a2 * (sss * tyy + 2.0 * sse_ * tse + sxx * tss)
    jtj[4, 0] = amp * sd * te
    jtj[4, 1] = amp * se * td
    jtj[4, 2] = se * te
    jtj[4, 3] = amp * (ss * te + se * ts)
    jtj[4, 4] = float(nr * nc)
    jtr[0] = amp * g0 - b * jtj[4, 0] - amp * jtj[2, 0]
    jtr[1] = amp * g1 - b * jtj[4, 1] - amp * jtj[2, 1]
    jtr[2] = g2 - b * jtj[4, 2] - amp * jtj[2, 2]
    jtr[3] = amp * g3 - b * jtj[4, 3] - amp * jtj[3, 2]
    jtr[4] = g4 - b * jtj[4, 4] - amp * jtj[4, 2]


@njit(cache=True, nogil=True)
def _normal_eq_plane(img, mask, r0, r1, c0, c1, row, col, th, ex, ey, dxv, dyv, sxv, syv, jac, jtj, jtr):
    """JᵀJ (lower triangle) and Jᵀr of the 7-parameter model with a tilted background plane."""
    jtj[:, :] = 0.0
    jtr[:] = 0.0
    amp = th[2]
    for i in range(r1 - r0):
        for j in range(c1 - c0):
            if not mask[i, j]:
                continue
            exy = ex[j] * ey[i]
            res = img[r0 + i, c0 + j] - (th[4] + th[5] * (c0 + j - col) + th[6] * (r0 + i - row) + amp * exy)
            jac[0] = amp * dxv[j] * ey[i]
            jac[1] = amp * ex[j] * dyv[i]
            jac[2] = exy
            jac[3] = amp * (sxv[j] * ey[i] + ex[j] * syv[i])
            jac[4] = 1.0
            jac[5] = c0 + j - col
            jac[6] = r0 + i - row
            for p in range(7):
                jtr[p] += jac[p] * res
                for q in range(p + 1):
                    jtj[p, q] += jac[p] * jac[q]


@njit(cache=True, nogil=True)
def _fit_gaussian(img, mask, row, col, half, sigma0, plane, max_iter, theta):
    """:func:`_fit_gaussian_ws` with its own scratch (for tests and single calls)."""
    return _fit_gaussian_ws(img, mask, row, col, half, sigma0, plane, max_iter, theta,
                            _fit_workspace(half), np.empty((2, 7, 7)))


@njit(cache=True, nogil=True)
def _fit_workspace(half):
    """Scratch vector of :func:`_fit_gaussian_ws` for ROIs of half-width ≤ ``half``."""
    return np.empty(7 * (2 * half + 1) + 7 * 6)


@njit(cache=True, nogil=True)
def _fit_gaussian_ws(img, mask, row, col, half, sigma0, plane, max_iter, theta, ws, mats):
    """Least-squares fit of a pixel-integrated 2-D Gaussian + background on a ROI.

    Model (per pixel (i, j); mass N, centre (x, y), width σ; background offset
    b, and with ``plane`` a tilt (b_x, b_y) for an illumination gradient)::

        μ(i, j) = b + b_x·(j − col) + b_y·(i − row) + N·E(j; x, σ)·E(i; y, σ)

    with E the pixel-integrated 1-D Gaussian, minimised by Levenberg–Marquardt
    over the unmasked pixels of the (2·half+1)² ROI centred on (row, col),
    clipped to the image.

    Parameters
    ----------
    img : float32 (h, w)
        Working (background-subtracted) frame.
    mask : uint8 (≥ nr, ≥ nc)
        Pixels of the clipped ROI to use (1) or ignore (0), e.g. from
        :func:`_voronoi_mask`.
    row, col : int
        Start pixel (the detected maximum).
    half : int
        ROI half-width, px.
    sigma0 : float
        Start value of σ, px.
    plane : bool
        Fit the background tilt (use when no background was subtracted).
    max_iter : int
    theta : float64 (7,)
        Output ``(x, y, N, sigma, b, b_x, b_y)`` (b_x = b_y = 0 without plane).
    ws : float64 (≥ 7·(2·half+1) + 42,)
        Scratch vectors (:func:`_fit_workspace`); ``mats`` float64 (2, 7, 7) scratch matrices.
        Allocated once per frame by the caller: a fit is a few µs, and ~17 small allocations
        per fit were a measurable part of it.

    Returns
    -------
    ok : bool
        False when the fit failed (too few pixels, non-finite, N ≤ 0);
        ``theta`` is then undefined.

    References
    ----------
    Smith, Joseph, Rieger & Lidke, Nat. Methods 7:373 (2010) (pixel-integrated
    Gaussian model); Mortensen et al., Nat. Methods 7:377 (2010).
    """
    r0, r1, c0, c1 = _roi_bounds(img.shape, row, col, half)
    nr = r1 - r0
    nc = c1 - c0
    if nr < 3 or nc < 3:
        return False
    npar = 7 if plane else 5
    # start values: offset = mean of the (unmasked) ROI border, mass from the peak
    sb = 0.0
    nbord = 0
    npx = 0
    for i in range(nr):
        for j in range(nc):
            if mask[i, j]:
                npx += 1
                if i == 0 or j == 0 or i == nr - 1 or j == nc - 1:
                    sb += img[r0 + i, c0 + j]
                    nbord += 1
    if npx < 2 * npar:
        return False
    full = npx == nr * nc and not plane  # separable normal equations (_normal_eq_5_full)
    m = (ws.shape[0] - 42) // 7  # capacity of each ROI-length vector
    rowsum = ws[0:nr]
    if full:
        for i in range(nr):
            v = 0.0
            for j in range(nc):
                v += img[r0 + i, c0 + j]
            rowsum[i] = v
    o = 7 * m
    th = ws[o:o + 7]
    tn = ws[o + 7:o + 14]
    th[:] = 0.0
    tn[:] = 0.0
    th[4] = sb / nbord if nbord > 0 else 0.0
    th[3] = sigma0
    th[2] = max(img[row, col] - th[4], 1e-6) * 2.0 * math.pi * sigma0 * sigma0
    # start position: centroid of the positive excess in the 3×3 around the
    # maximum (within ~0.1 px of the optimum, so LM needs few iterations)
    cw = 0.0
    cx = 0.0
    cy = 0.0
    for i in range(max(row - 1, r0), min(row + 2, r1)):
        for j in range(max(col - 1, c0), min(col + 2, c1)):
            if mask[i - r0, j - c0]:
                v = img[i, j] - th[4]
                if v > 0.0:
                    cw += v
                    cx += v * (j - col)
                    cy += v * (i - row)
    th[0] = float(col) + (cx / cw if cw > 0.0 else 0.0)
    th[1] = float(row) + (cy / cw if cw > 0.0 else 0.0)
    ex = ws[m:m + nc]
    dxv = ws[2 * m:2 * m + nc]
    sxv = ws[3 * m:3 * m + nc]
    ey = ws[4 * m:4 * m + nr]
    dyv = ws[5 * m:5 * m + nr]
    syv = ws[6 * m:6 * m + nr]
    jtj = mats[0, :npar, :npar]
    a = mats[1, :npar, :npar]
    jtr = ws[o + 14:o + 14 + npar]
    rhs = ws[o + 21:o + 21 + npar]
    step = ws[o + 28:o + 28 + npar]
    jac = ws[o + 35:o + 42]
    lam = 1e-3
    sse = _gauss_sse(img, mask, r0, r1, c0, c1, row, col, th, ex, ey, dxv, dyv, sxv, syv)
    for it in range(max_iter):
        # normal equations at the current point (ex.. hold the current-point values)
        if plane:
            _normal_eq_plane(img, mask, r0, r1, c0, c1, row, col, th, ex, ey, dxv, dyv, sxv, syv, jac, jtj, jtr)
        elif full:
            _normal_eq_5_full(img, r0, r1, c0, c1, th, ex, ey, dxv, dyv, sxv, syv, rowsum, jtj, jtr)
        else:
            _normal_eq_5(img, mask, r0, r1, c0, c1, th, ex, ey, dxv, dyv, sxv, syv, jtj, jtr)
        for p in range(npar):
            for q in range(p):
                jtj[q, p] = jtj[p, q]
        if it >= _FIT_SIG_ITER and npx > npar:
            # a candidate whose fitted mass is not significant (a noise maximum) wanders without
            # converging: stop refining it. Var(N) = [(JᵀJ)⁻¹]_NN · SSE/(n − p).
            for p in range(npar):
                for q in range(npar):
                    a[p, q] = jtj[p, q]
                rhs[p] = 1.0 if p == 2 else 0.0
            if _solve_spd(a, rhs, npar, step) and step[2] > 0.0:
                if th[2] * th[2] < _FIT_MIN_SIG * _FIT_MIN_SIG * step[2] * sse / (npx - npar):
                    break
        accepted = False
        converged = False
        for _t in range(_FIT_MAX_TRIALS):
            for p in range(npar):
                for q in range(npar):
                    a[p, q] = jtj[p, q]
                a[p, p] += lam * jtj[p, p] + 1e-12
                rhs[p] = jtr[p]
            if not _solve_spd(a, rhs, npar, step):
                lam *= 10.0
                continue
            for p in range(npar):
                tn[p] = th[p] + step[p]
            if (tn[2] <= 0.0 or tn[3] < 0.25 or tn[3] > 2.0 * half or abs(tn[0] - col) > half
                    or abs(tn[1] - row) > half or not math.isfinite(tn[0] + tn[1] + tn[2] + tn[3] + tn[4])):
                lam *= 10.0
                continue
            sse_n = _gauss_sse(img, mask, r0, r1, c0, c1, row, col, tn, ex, ey, dxv, dyv, sxv, syv)
            if sse_n <= sse:
                converged = abs(step[0]) < _FIT_TOL and abs(step[1]) < _FIT_TOL and abs(step[3]) < _FIT_TOL
                th[:] = tn
                sse = sse_n
                lam = max(lam * 0.1, 1e-9)
                accepted = True
                break
            lam *= 10.0
        if not accepted:
            # restore derivative arrays at the current point; nothing improves
            _gauss_sse(img, mask, r0, r1, c0, c1, row, col, th, ex, ey, dxv, dyv, sxv, syv)
            break
        if converged:
            break
    theta[:] = th
    return th[2] > 0.0 and math.isfinite(th[0] + th[1] + th[2] + th[3] + th[4])


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
def _refine(img, raw, saturation, rows, cols, n, k, mode, half, sigma0, plane, mask, out, ws, mats):
    """Sub-pixel position and photometry of candidate k of (rows, cols)[:n].

    Fills ``out[:6] = (x, y, mass, signal, size_px, local_background)`` in the
    units of ``img`` (background-subtracted working frame). ``mask`` is uint8
    (2·half+1)² scratch; ``ws``, ``mats`` the fit's scratch (:func:`_fit_gaussian_ws`,
    for ROIs of half-width ≥ ``half``). Pixels of ``raw`` at or above ``saturation`` are
    censored: left out of the Gaussian fit, whose model is wrong there (a
    clipped spot's flat top otherwise biases position and width).
    """
    row = rows[k]
    col = cols[k]
    ap = np.empty(6)
    if mode == MODE_GAUSSIAN:
        theta = np.empty(7)
        _voronoi_mask(rows, cols, n, k, half, img.shape[0], img.shape[1], mask)
        if saturation < np.inf:
            r0, r1, c0, c1 = _roi_bounds(img.shape, row, col, half)
            for i in range(r1 - r0):
                for j in range(c1 - c0):
                    if raw[r0 + i, c0 + j] >= saturation:
                        mask[i, j] = 0
        if _fit_gaussian_ws(img, mask, row, col, half, sigma0, plane, _FIT_MAX_ITER, theta, ws, mats):
            out[0] = theta[0]
            out[1] = theta[1]
            out[2] = theta[2]
            out[3] = theta[2] / (2.0 * math.pi * theta[3] * theta[3])
            out[4] = theta[3]
            out[5] = theta[4] + theta[5] * (theta[0] - col) + theta[6] * (theta[1] - row)
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
def _bright_spot_pass(raw, work, f, s, rows, cols, vals, peak, sat, n):
    """Candidates of bright spots: one per clipped region (:func:`_merge_saturated`), saddle-less
    pairs merged (:func:`_merge_no_saddle`), then halo noise dropped (:func:`_halo_test`, automatic
    threshold only); returns the new count.

    ``f`` is the filtered frame the candidates were found on. With the binned search
    (``s.search_bin == 2``) the candidates come in binned pixels: the clipped regions are found at
    full resolution (on ``raw``, around each candidate's full-res pixel, :func:`_to_full_res`), and
    the saddle merge and the halo test read ``f`` at the binned positions with the binned lengths
    (``s.sigma0_b``; the halo window of the full-resolution search, halved): the same tests in the
    same units (noise sigmas, spot sigmas, pixels of the frame). ``rows``, ``cols`` are full-res
    pixels on return.
    """
    binned = s.search_bin == 2
    sigma = s.sigma0_b if binned else s.sigma0
    tile = 0.5 * s.noise_tile if binned else 1.0 * s.noise_tile
    sat[:n] = 0.0
    if binned:
        _to_full_res(work, rows, cols, vals, peak, sat, n)
    n = _merge_saturated(raw, s.saturation, max(2, int(math.ceil(2.0 * s.sigma0))), rows, cols, vals, peak, sat, n)
    if binned:
        h2, w2 = f.shape
        for k in range(n):
            rows[k] = min(rows[k] // 2, h2 - 1)
            cols[k] = min(cols[k] // 2, w2 - 1)
    n = _merge_no_saddle(f, _SADDLE_REACH_SIGMAS * sigma, _SADDLE_RATIO, rows, cols, vals, peak, sat, n)
    if s.threshold < 0.0:
        n = _halo_test(f, s.threshold_snr, _HALO_RATIO, _HALO_REACH_TILES * tile, int(_HALO_HALF_TILES * tile),
                       _HALO_HOLE_SIGMAS * _SQRT2 * sigma, rows, cols, vals, peak, sat, n)
    if binned:
        _to_full_res(work, rows, cols, vals, peak, sat, n)
    return n


@njit(cache=True, nogil=True)
def _to_full_res(work, rows, cols, vals, peak, sat, n):
    """Binned candidates (``rows``, ``cols`` in binned pixels) to full-resolution pixels, in place.

    A candidate on a clipped region (``sat[k, 0] > 0``) goes to the region's rounded centroid
    (:func:`_merge_saturated`); any other to the largest ``work`` pixel of its 2×2 block, where its
    fit starts. The candidates are then re-sorted into raster order.
    """
    h, w = work.shape
    for k in range(n):
        if sat[k, 0] > 0.0:
            rows[k] = min(max(int(round(sat[k, 1])), 0), h - 1)
            cols[k] = min(max(int(round(sat[k, 2])), 0), w - 1)
            continue
        r = 2 * rows[k]
        c = 2 * cols[k]
        br = r
        bc = c
        best = work[r, c]
        for dr in range(2):
            for dc in range(2):
                v = work[r + dr, c + dc]
                if v > best:
                    best = v
                    br = r + dr
                    bc = c + dc
        rows[k] = br
        cols[k] = bc
    _sort_candidates(rows, cols, vals, peak, sat, n)


@njit(cache=True, nogil=True)
def _merge_no_saddle(f, reach, ratio, rows, cols, vals, peak, sat, n):
    """Merge candidates with no saddle of ``f`` between them (one spot); returns the new count.

    Two spots are resolved when the (filtered) image dips between them
    (Sparrow's criterion); a wide spot — a bright particle far out of focus,
    Gaussian σ of 5–9 px on the simulator for 400 nm beads at 8–16 µm — has a
    broad top on which shot noise makes several maxima farther apart than the
    minimum separation, too wide for its fits to find them duplicates. Of two
    candidates within ``reach`` px, the one with the lower ``peak`` is dropped
    when ``f`` along the segment between them (pixels nearest to unit steps)
    never falls below ``ratio`` × that lower peak. Two equal in-focus spots
    (filtered σ_F = √2·σ) dip to < 0.9 of their peaks from ≈ 2.6·σ_F apart.
    """
    if n < 2:
        return n
    keep = np.ones(n, np.bool_)
    r2 = reach * reach
    for k in range(n):
        for m in range(k + 1, n):
            dr = rows[m] - rows[k]
            if dr * dr > r2:
                break
            if not (keep[k] and keep[m]):
                continue
            dc = cols[m] - cols[k]
            d2 = dr * dr + dc * dc
            if d2 > r2:
                continue
            lo = min(peak[k], peak[m])
            dist = math.sqrt(d2)
            steps = int(math.ceil(dist))
            dip = False
            for t in range(1, steps):
                y = int(round(rows[k] + dr * t / steps))
                x = int(round(cols[k] + dc * t / steps))
                if f[y, x] < ratio * lo:
                    dip = True
                    break
            if not dip:
                if peak[m] > peak[k] or (peak[m] == peak[k] and sat[m, 0] > sat[k, 0]):
                    keep[k] = False
                else:
                    keep[m] = False
    return _compact_candidates(keep, n, rows, cols, vals, peak, sat)


@njit(cache=True, nogil=True)
def _refine_clipped(img, raw, s, rows, cols, n, k, sat, plane, out):
    """:func:`_refine` of a candidate on a clipped region (``sat`` = radius, centroid row, column, px).

    The ROI grows by the region's radius, so that the fit (which censors the
    clipped pixels) sees the unclipped wings; a plateau wider than the usual
    ROI otherwise leaves nothing to fit. If the result is farther than half
    the radius + 1 px from the region's centroid (a failed fit), the centroid
    is the position: a clipped top is symmetric about the spot's centre.
    """
    half = s.roi_half + int(math.ceil(sat[0]))
    mask = np.empty((2 * half + 1, 2 * half + 1), np.uint8)
    _refine(img, raw, s.saturation, rows, cols, n, k, s.mode, half, s.sigma0, plane, mask, out, _fit_workspace(half),
            np.empty((2, 7, 7)))
    dx = out[0] - sat[2]
    dy = out[1] - sat[1]
    lim = 0.5 * sat[0] + 1.0
    if not dx * dx + dy * dy <= lim * lim:
        out[0] = sat[2]
        out[1] = sat[1]


@njit(cache=True, nogil=True)
def _process_frame(raw, bg, s, floor, grid, own_grid, work, filt, rows, cols, vals, out):
    """Detect and localise the spots of one frame.

    Parameters
    ----------
    raw : (h, w) uint8 / uint16 / float32
    bg : float32 (h, w) or (0, 0)
        Background in raw units (subtracted before the sign flip).
    s : Settings
    floor : float
        Smallest threshold on the filtered frame (a rounding floor, so that a
        flat frame gives no spot; see ``locate._floor``).
    grid : float64 (ny, nx)
        Tile noise of the filtered frame (:func:`_noise_map`); filled from
        this frame when ``own_grid``, else used as given (the chunk's).
    own_grid : bool
    work, filt : float32 (h, w)
        Scratch: working frame and matched-filtered frame.
    rows, cols : int64 (cap,), vals : float64 (cap,)
        Scratch for the candidates.
    out : float64 (cap, N_FIELDS)
        Spots, columns :data:`FIELDS`.

    Returns
    -------
    n : int
        Number of spots (may exceed ``cap``: then only ``cap`` are written and
        the caller must retry with a larger capacity).
    """
    cap = rows.shape[0]
    has_bg = bg.shape[0] > 0
    if s.search_bin == 2:
        # candidates on the 2×2-binned frame (a quarter of the pixels for the filter, noise map and
        # maxima), fits at full resolution; the binned frames live in the ``filt`` scratch. (Making the
        # full-resolution working frame only in 16-px blocks around the candidates, from background
        # block sums, was tried: the scattered blocks cost +0.4 ms per 1024² frame for −0.2 ms.)
        h, w = raw.shape
        h2 = h // 2
        w2 = w // 2
        m2 = h2 * w2
        flat = filt.reshape(h * w)
        b = flat[:m2].reshape((h2, w2))
        wb = flat[m2:2 * m2].reshape((h2, w2))
        fb = flat[2 * m2:3 * m2].reshape((h2, w2))
        _working_frame_bin2(raw, bg, s.sign, work, b)
        _filter_frame(b, np.zeros((0, 0), np.float32), 1.0, s.gauss_b, s.box_half_b, wb, fb)
        if own_grid:
            _noise_map(fb, s.edge_b, grid, 6)
            _cap_noise(grid, _NOISE_CAP, raw, s.edge)  # the same tiles, their levels from the raw frame
            _raise_to(grid, s.min_sigma_f_b)
        n = _find_maxima(fb, grid, s.threshold_snr, 4.0 * floor, s.edge_b, s.sep_dy_b, s.sep_dx_b, rows, cols, vals)
        f = fb
    else:
        _filter_frame(raw, bg, s.sign, s.gauss, s.box_half, work, filt)
        if own_grid:
            _noise_map(filt, s.edge, grid, 6)
            _cap_noise(grid, _NOISE_CAP, raw, s.edge)
            _raise_to(grid, s.min_sigma_f)
        if s.threshold >= 0.0:
            n = _find_maxima(filt, grid, 0.0, max(s.threshold, floor), s.edge, s.sep_dy, s.sep_dx, rows, cols, vals)
        else:
            n = _find_maxima(filt, grid, s.threshold_snr, floor, s.edge, s.sep_dy, s.sep_dx, rows, cols, vals)
        f = filt
    nk = min(n, cap)
    peak = np.empty(nk)
    sat = np.zeros((nk, 3))
    for k in range(nk):
        peak[k] = f[rows[k], cols[k]]
    if n <= cap:
        n = _bright_spot_pass(raw, work, f, s, rows, cols, vals, peak, sat, n)
        nk = n
    elif s.search_bin == 2:  # over capacity (the caller retries): positions only need to be valid pixels
        _to_full_res(work, rows, cols, vals, peak, sat, nk)
    mask = np.empty((2 * s.roi_half + 1, 2 * s.roi_half + 1), np.uint8)
    ws = _fit_workspace(s.roi_half)
    mats = np.empty((2, 7, 7))
    for k in range(nk):
        if sat[k, 0] > 0.0:
            _refine_clipped(work, raw, s, rows, cols, nk, k, sat[k], not has_bg, out[k])
        else:
            _refine(work, raw, s.saturation, rows, cols, nk, k, s.mode, s.roi_half, s.sigma0, not has_bg, mask,
                    out[k], ws, mats)
        b0 = bg[rows[k], cols[k]] if has_bg else 0.0
        out[k, 5] = b0 + s.sign * out[k, 5]
        sl = vals[k] if vals[k] > 0.0 else floor
        out[k, 6] = peak[k] / sl
    if n > cap or s.merge_sigma <= 0.0:
        return n
    return _drop_duplicates(out, rows, nk, s.merge_sigma, s.roi_half)


@njit(cache=True, nogil=True)
def _drop_duplicates(out, rows, n, merge_sigma, half):
    """Remove spots that are another, brighter spot found twice; returns the new count.

    Two fitted spots closer than ``merge_sigma`` × the smaller of their widths
    (``size_px``, at least 1 px) cannot be two resolved particles: the sum of
    two Gaussian spots closer than 2σ has a single maximum (Sparrow's limit).
    The detector finds one spot twice when its top is clipped (a saturated
    8-bit spot has a plateau whose band-passed image can have two maxima
    farther apart than the minimum separation, and both fits converge on the
    one spot) or when a bright defocused spot has a structured halo. The
    dimmer (smaller ``signal``; the later on ties) is dropped. On simulated
    8-bit videos of 200 nm beads such pairs were about half of all detections,
    each pair making a parallel duplicate track.

    ``out[:n]`` (columns :data:`FIELDS`) is compacted in place; candidates are
    in raster order of their start pixel ``rows`` and a fit moves at most
    ``half`` (the ROI half-width) from it, which bounds the pair search.
    """
    keep = np.ones(n, np.bool_)
    smax = 1.0
    for k in range(n):
        smax = max(smax, out[k, 4])
    limit = 2.0 * half + merge_sigma * smax + 1.0  # farthest start rows of a pair that can merge
    for k in range(n):
        for m in range(k + 1, n):
            if rows[m] - rows[k] > limit:
                break
            r = merge_sigma * max(min(out[k, 4], out[m, 4]), 1.0)
            dx = out[k, 0] - out[m, 0]
            dy = out[k, 1] - out[m, 1]
            if dx * dx + dy * dy < r * r:
                if out[m, 3] > out[k, 3]:
                    keep[k] = False
                else:
                    keep[m] = False
    j = 0
    for k in range(n):
        if keep[k]:
            if j != k:
                out[j, :] = out[k, :]
            j += 1
    return j


@njit(cache=True, parallel=True, nogil=True)
def _locate_chunk(frames, bg, s, floor, scratch, out, counts):
    """Run :func:`_process_frame` on every frame of a chunk, frames in parallel.

    Parameters
    ----------
    frames : (k, h, w) uint8 / uint16 / float32
    bg : float32 (h, w) or (0, 0)
    s : Settings
    floor : float
        Rounding floor of the threshold (see :func:`_process_frame`).
    scratch : float32 (n_workers, 2, h, w)
        Per-worker image scratch; ``n_workers`` frames are processed at once.
    out : float64 (k, cap, N_FIELDS)
    counts : int64 (k,)
        Number of spots per frame (may exceed cap, see _process_frame).
    """
    k = frames.shape[0]
    h = frames.shape[1]
    w = frames.shape[2]
    nw = min(scratch.shape[0], k)
    cap = out.shape[1]
    for wi in prange(nw):
        ws = scratch[wi]
        rows = np.empty(cap, np.int64)
        cols = np.empty(cap, np.int64)
        vals = np.empty(cap, np.float64)
        grid = np.empty(_grid_shape(h, w, s))
        for i in range(wi, k, nw):
            counts[i] = _process_frame(frames[i], bg, s, floor, grid, True, ws[0], ws[1], rows, cols, vals, out[i])
