"""Numba kernels for :mod:`exonta.track.link` (private).

Arrays and scalars in, preallocated arrays out. Slow twins: the brute-force
matching and the previous scipy-based linker in ``tests/reference/link_ref.py``.

The frame-to-frame problem of :func:`exonta.track.link.link_features` is the
augmented linear assignment problem of Jaqaman et al. (2008): linking source
``i`` to detection ``j`` costs ``c_ij`` (< 1, in units of the squared physics
radius) and leaving a source or a detection unlinked costs ``1/2`` each. Since
``Σ_links c_ij + ½ (unlinked sources + unlinked detections) = Σ_links (c_ij − 1)
+ const``, it is the minimum-cost *partial* matching with edge costs
``c_ij − 1``, i.e. a rectangular assignment in which every source may also take
its own private "unlinked" column at cost 0. :func:`assignment_kernel` solves it
exactly with the shortest-augmenting-path method of Jonker & Volgenant
(Computing 38:325, 1987) on the sparse candidate graph (Dijkstra with a binary
heap and column prices): each augmentation only explores the connected
subnetwork of its source, so isolated pairs cost O(1) and a crowded field
stays polynomial.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["assignment_kernel", "frame_edges_kernel", "gate2_kernel", "link_frames_kernel"]


@njit(cache=True, nogil=True)
def gate2_kernel(sum_sq_px2, n_steps, count, rho2_px2, neg_log_p, floor2_px2, adaptive, out):  # pragma: no cover
    """Squared gate of the first ``count`` active tracks (see :func:`exonta.track.link.adaptive_radius2`).

    ``out[i] = clip(c_n · sum_sq / n, floor2, rho2)`` with ``c_n = n·expm1(ln(1/p)/n)`` for a track with
    ``n > 0`` steps when ``adaptive``; ``rho2`` otherwise. ``neg_log_p`` is ``ln(1/p)``.
    """
    for i in range(count):
        n = n_steps[i]
        if adaptive and n > 0:
            nh = float(n)
            c = nh * math.expm1(neg_log_p / nh)
            v = c * sum_sq_px2[i] / nh
            out[i] = min(max(v, floor2_px2), rho2_px2)
        else:
            out[i] = rho2_px2


@njit(cache=True, nogil=True)
def frame_edges_kernel(src_x, src_y, src_gap, src_gate2, n_src, dst_x, dst_y, reach_px, cost_unit2,
                       src_lb, dst_lb, beta, dmax2):  # pragma: no cover
    """Candidate links of one frame in CSR form (rows = sources in order).

    Source ``i`` and detection ``j`` are candidates when ``r² / (gap_i + 1) < gate2_i`` (``r`` the
    distance, px); the cost is ``(r² / (gap_i + 1) / cost_unit2 + beta·min(Δ², dmax2)) / (1 + beta·dmax2)``
    with ``Δ = dst_lb[j] − src_lb[i]`` (log brightness; ``beta = dmax2 = 0``: distance only, exactly
    ``r² / (gap_i + 1) / cost_unit2``). The brightness term is capped and the sum rescaled so that every
    candidate keeps a cost below 1 (linkable, :func:`assignment_kernel`). Detections are binned on a square
    grid (cells of about ``reach_px / 2``, and no more cells than about twice the detections); each
    source scans the cells within its own radius ``sqrt(gate2_i (gap_i + 1))``.

    Returns
    -------
    row_ptr : int64[n_src + 1]
    edge_col : int64[n_edges]
        Detection index (into ``dst_x``).
    edge_cost : float64[n_edges]
    """
    m = dst_x.shape[0]
    row_ptr = np.zeros(n_src + 1, dtype=np.int64)
    if m == 0:
        return row_ptr, np.empty(0, dtype=np.int64), np.empty(0)
    x0 = dst_x.min()
    y0 = dst_y.min()
    wx = dst_x.max() - x0
    wy = dst_y.max() - y0
    cs = max(0.5 * reach_px, math.sqrt(max(wx * wy, 1.0) / (0.5 * m)), 1e-6)
    ncx = int(wx / cs) + 1
    ncy = int(wy / cs) + 1
    # counting sort of the detections by cell
    cell = np.empty(m, dtype=np.int64)
    first = np.zeros(ncx * ncy + 1, dtype=np.int64)
    for j in range(m):
        cx = min(int((dst_x[j] - x0) / cs), ncx - 1)
        cy = min(int((dst_y[j] - y0) / cs), ncy - 1)
        cell[j] = cy * ncx + cx
        first[cell[j] + 1] += 1
    for c in range(ncx * ncy):
        first[c + 1] += first[c]
    fill = first[:-1].copy()
    members = np.empty(m, dtype=np.int64)
    for j in range(m):
        members[fill[cell[j]]] = j
        fill[cell[j]] += 1
    cap = 4 * (n_src + m) + 16
    edge_col = np.empty(cap, dtype=np.int64)
    edge_cost = np.empty(cap)
    ne = 0
    for i in range(n_src):
        sx = src_x[i]
        sy = src_y[i]
        span = src_gap[i] + 1.0
        g2 = src_gate2[i]
        r = math.sqrt(g2 * span) * (1.0 + 1e-9) + 1e-9
        cx0 = max(int(math.floor((sx - r - x0) / cs)), 0)
        cx1 = min(int(math.floor((sx + r - x0) / cs)), ncx - 1)
        cy0 = max(int(math.floor((sy - r - y0) / cs)), 0)
        cy1 = min(int(math.floor((sy + r - y0) / cs)), ncy - 1)
        for cy in range(cy0, cy1 + 1):
            for cx in range(cx0, cx1 + 1):
                c = cy * ncx + cx
                for t in range(first[c], first[c + 1]):
                    j = members[t]
                    dx = dst_x[j] - sx
                    dy = dst_y[j] - sy
                    r2 = (dx * dx + dy * dy) / span
                    if r2 < g2:
                        if ne == cap:
                            cap *= 2
                            nc = np.empty(cap, dtype=np.int64)
                            nw = np.empty(cap)
                            nc[:ne] = edge_col[:ne]
                            nw[:ne] = edge_cost[:ne]
                            edge_col = nc
                            edge_cost = nw
                        edge_col[ne] = j
                        db = min((dst_lb[j] - src_lb[i]) ** 2, dmax2)
                        edge_cost[ne] = (r2 / cost_unit2 + beta * db) / (1.0 + beta * dmax2)
                        ne += 1
        row_ptr[i + 1] = ne
    return row_ptr, edge_col[:ne], edge_cost[:ne]


@njit(cache=True, nogil=True)
def _heap_push(keys, vals, size, key, val):  # pragma: no cover
    i = size
    keys[i] = key
    vals[i] = val
    while i > 0:
        p = (i - 1) >> 1
        if keys[p] <= keys[i]:
            break
        keys[p], keys[i] = keys[i], keys[p]
        vals[p], vals[i] = vals[i], vals[p]
        i = p
    return size + 1


@njit(cache=True, nogil=True)
def _heap_pop(keys, vals, size):  # pragma: no cover
    """Remove the root (its key/value must be read first); return the new size."""
    size -= 1
    keys[0] = keys[size]
    vals[0] = vals[size]
    i = 0
    while True:
        a = 2 * i + 1
        if a >= size:
            break
        b = a + 1
        c = b if (b < size and keys[b] < keys[a]) else a
        if keys[i] <= keys[c]:
            break
        keys[c], keys[i] = keys[i], keys[c]
        vals[c], vals[i] = vals[i], vals[c]
        i = c
    return size


@njit(cache=True, nogil=True)
def _relax_row(i, h, n_cols, row_ptr, edge_col, edge_cost, v, d, pred, pcost, settled, touched, nt, hk, hv, hs):
    """Relax the edges of row ``i`` (its candidate columns and its private "unlinked" column
    ``n_cols + i``, cost 0) in the shortest-path search of :func:`assignment_kernel`.

    ``h`` is the reduced distance offset of the row (0 for the source row). Unsettled columns
    whose reduced distance ``c − 1 − v − h`` improves get it, with the row as predecessor, and
    are pushed on the heap; first-touched columns are recorded in ``touched``. Returns the new
    ``(nt, hs)`` (touched count, heap size).
    """
    for e in range(row_ptr[i], row_ptr[i + 1] + 1):
        if e < row_ptr[i + 1]:
            k = edge_col[e]
            a = edge_cost[e] - 1.0
        else:
            k = n_cols + i
            a = 0.0
        if settled[k]:
            continue
        nd = a - v[k] - h
        if nd < d[k]:
            if d[k] == np.inf:
                touched[nt] = k
                nt += 1
            d[k] = nd
            pred[k] = i
            pcost[k] = a
            hs = _heap_push(hk, hv, hs, nd, k)
    return nt, hs


@njit(cache=True, nogil=True)
def assignment_kernel(n_rows, n_cols, row_ptr, edge_col, edge_cost, row_to_col):  # pragma: no cover
    """Minimum-cost partial matching with edge costs ``edge_cost − 1`` (unmatched: cost 0).

    Equivalent to the augmented LAP with ``1/2`` per unlinked row and column (module docstring).
    Sparse Jonker–Volgenant shortest augmenting paths; row ``i``'s private column ``n_cols + i``
    stands for "unlinked".

    Parameters
    ----------
    n_rows, n_cols : int
    row_ptr : int64[n_rows + 1]
    edge_col : int64[n_edges]
    edge_cost : float64[n_edges]
        ``c_ij``; only ``c_ij < 1`` can ever be linked.
    row_to_col : int64[n_rows]
        Overwritten: the linked column of each row, −1 when unlinked.
    """
    n_all = n_cols + n_rows
    v = np.zeros(n_all)  # column prices
    y_col = np.full(n_all, -1, dtype=np.int64)  # row assigned to each column
    x_row = np.full(n_rows, -1, dtype=np.int64)  # column assigned to each row
    a_match = np.zeros(n_rows)  # cost (c − 1, or 0 for the private column) of each row's assignment
    d = np.full(n_all, np.inf)
    pred = np.empty(n_all, dtype=np.int64)
    pcost = np.empty(n_all)
    settled = np.zeros(n_all, dtype=np.bool_)
    touched = np.empty(n_all, dtype=np.int64)
    n_edges = edge_col.shape[0]
    cap = n_edges + n_rows + 1
    hk = np.empty(cap)
    hv = np.empty(cap, dtype=np.int64)
    for f in range(n_rows):
        row_to_col[f] = -1
        if row_ptr[f + 1] == row_ptr[f]:
            continue  # no candidate: stays unlinked, interacts with nothing
        nt, hs = _relax_row(f, 0.0, n_cols, row_ptr, edge_col, edge_cost, v, d, pred, pcost, settled, touched, 0,
                            hk, hv, 0)
        end = -1
        big_l = 0.0
        while hs > 0:
            key = hk[0]
            j = hv[0]
            hs = _heap_pop(hk, hv, hs)
            if settled[j] or key > d[j]:
                continue
            settled[j] = True
            i = y_col[j]
            if i < 0:
                end = j
                big_l = key
                break
            nt, hs = _relax_row(i, a_match[i] - v[j] - key, n_cols, row_ptr, edge_col, edge_cost, v, d, pred, pcost,
                                settled, touched, nt, hk, hv, hs)
        # column prices of the settled columns (keeps every reduced cost ≥ 0), then reset the labels
        for t in range(nt):
            j = touched[t]
            if settled[j]:
                v[j] += d[j] - big_l
            d[j] = np.inf
            settled[j] = False
        # augment along the predecessors
        j = end
        while True:
            i = pred[j]
            y_col[j] = i
            prev = x_row[i]
            x_row[i] = j
            a_match[i] = pcost[j]
            j = prev
            if i == f:
                break
    for i in range(n_rows):
        row_to_col[i] = x_row[i] if 0 <= x_row[i] < n_cols else -1


@njit(cache=True, nogil=True)
def link_frames_kernel(x, y, frame_of, starts, ends, fi0, fi1, memory, rho2_px2, reach_px, adaptive, neg_log_p,
                       floor2_px2, act_x, act_y, act_last, act_id, act_sq, act_n, counters, track_of,
                       lb, beta, dmax2, act_lb):  # pragma: no cover
    """Link the frames ``fi0 .. fi1 − 1`` (indices into ``starts``/``ends``), carrying the active tracks.

    Parameters
    ----------
    x, y : float64[n_feat]
        Positions sorted by frame, px.
    frame_of : int64[n_frames_present]
        Frame number of each group of detections.
    starts, ends : int64[n_frames_present]
        Row ranges of each frame in ``x``/``y``.
    memory : int
        Largest gap (missing frames) a track may bridge.
    rho2_px2 : float
        Squared physics radius: largest gate and the cost unit.
    reach_px : float
        Bound on every gap-widened radius (``ρ sqrt(memory + 1)``).
    adaptive : bool
    neg_log_p, floor2_px2 : float
        ``ln(1/p)`` and the squared floor of the per-track gate.
    act_x, act_y, act_last, act_id, act_sq, act_n : arrays of capacity ``n_feat``
        State of the active tracks (position, last frame, id, sum of gap-normalised squared steps,
        number of steps); the first ``counters[0]`` entries are in use.
    counters : int64[2]
        Number of active tracks, next free track id (updated).
    track_of : int64[n_feat]
        Track id of each detection (filled for the frames processed).
    lb : float64[n_feat]
        Log peak brightness of each detection (zeros when ``beta`` is 0).
    beta, dmax2 : float
        Brightness term of the link cost (:func:`frame_edges_kernel`); 0, 0: distance only.
    act_lb : float64[n_feat]
        Log brightness of each active track's last detection (state, like ``act_x``).
    """
    n_act = counters[0]
    next_id = counters[1]
    for fi in range(fi0, fi1):
        f = frame_of[fi]
        s = starts[fi]
        e = ends[fi]
        m = e - s
        # forget tracks unseen for more than `memory` frames (order kept)
        k = 0
        for i in range(n_act):
            if f - act_last[i] - 1 <= memory:
                act_x[k] = act_x[i]
                act_y[k] = act_y[i]
                act_last[k] = act_last[i]
                act_id[k] = act_id[i]
                act_sq[k] = act_sq[i]
                act_n[k] = act_n[i]
                act_lb[k] = act_lb[i]
                k += 1
        n_act = k
        ids = np.full(m, -1, dtype=np.int64)
        if n_act > 0 and m > 0:
            gap = np.empty(n_act)
            for i in range(n_act):
                gap[i] = f - act_last[i] - 1
            gate2 = np.empty(n_act)
            gate2_kernel(act_sq, act_n, n_act, rho2_px2, neg_log_p, floor2_px2, adaptive, gate2)
            row_ptr, edge_col, edge_cost = frame_edges_kernel(act_x, act_y, gap, gate2, n_act, x[s:e], y[s:e],
                                                              reach_px, rho2_px2, act_lb, lb[s:e], beta, dmax2)
            match = np.empty(n_act, dtype=np.int64)
            assignment_kernel(n_act, m, row_ptr, edge_col, edge_cost, match)
            for i in range(n_act):
                j = match[i]
                if j >= 0:
                    ids[j] = act_id[i]
                    dx = x[s + j] - act_x[i]
                    dy = y[s + j] - act_y[i]
                    act_sq[i] += (dx * dx + dy * dy) / (gap[i] + 1.0)
                    act_n[i] += 1
                    act_x[i] = x[s + j]
                    act_y[i] = y[s + j]
                    act_lb[i] = lb[s + j]
                    act_last[i] = f
        for j in range(m):
            if ids[j] < 0:
                ids[j] = next_id
                act_x[n_act] = x[s + j]
                act_y[n_act] = y[s + j]
                act_last[n_act] = f
                act_id[n_act] = next_id
                act_sq[n_act] = 0.0
                act_n[n_act] = 0
                act_lb[n_act] = lb[s + j]
                n_act += 1
                next_id += 1
            track_of[s + j] = ids[j]
    counters[0] = n_act
    counters[1] = next_id
