"""Slow reference for exonta.track.link: brute-force optimal frame-to-frame linking.

Same cost model as the fast linker: a source (active track last seen ``g``
frames ago, ``g ≤ memory``) and a detection may be linked when the normalised
squared displacement ``r²/(g+1)`` is below ``ρ²``; the chosen links minimise
``Σ r²/(g+1) + (ρ²/2)·(unlinked sources + unlinked detections)``. Every partial
matching is enumerated (tiny frames only).
"""

from __future__ import annotations

import math


def _best_matching(cands, n_src, n_dst, half):
    """Exhaustive search over partial matchings; cands[i] = list of (j, cost)."""
    best = [math.inf, []]

    def rec(i, used, cost, links):
        if i == n_src:
            total = cost + half * (n_src - len(links)) + half * (n_dst - len(links))
            if total < best[0]:
                best[0] = total
                best[1] = list(links)
            return
        rec(i + 1, used, cost, links)  # source i unlinked
        for j, c in cands[i]:
            if j not in used:
                used.add(j)
                links.append((i, j))
                rec(i + 1, used, cost + c, links)
                links.pop()
                used.discard(j)

    rec(0, set(), 0.0, [])
    return best[1]


def link_ref(frames, xs, ys, rho, memory):
    """Track label per detection (list), by brute force; labels in order of first appearance."""
    order = sorted(range(len(frames)), key=lambda k: (frames[k], k))
    label = [-1] * len(frames)
    active = []  # [track_id, x, y, last_frame]
    next_id = 0
    by_frame = {}
    for k in order:
        by_frame.setdefault(frames[k], []).append(k)
    for f in sorted(by_frame):
        dets = by_frame[f]
        active = [a for a in active if f - a[3] - 1 <= memory]
        cands = []
        for a in active:
            g = f - a[3] - 1
            row = []
            for j, k in enumerate(dets):
                c = ((xs[k] - a[1]) ** 2 + (ys[k] - a[2]) ** 2) / (g + 1)
                if c < rho * rho:
                    row.append((j, c))
            cands.append(row)
        links = _best_matching(cands, len(active), len(dets), 0.5 * rho * rho)
        linked = set()
        for i, j in links:
            k = dets[j]
            label[k] = active[i][0]
            active[i][1], active[i][2], active[i][3] = xs[k], ys[k], f
            linked.add(j)
        for j, k in enumerate(dets):
            if j not in linked:
                label[k] = next_id
                active.append([next_id, xs[k], ys[k], f])
                next_id += 1
    return label


# --------------------------------------------------------------------------- scipy reference of the fast linker
# The linker as it was before its numba kernels (exonta 0.1, commit a727d2a): per frame, k-d tree candidate
# pairs, the adaptive per-track gate, and the augmented LAP solved by scipy (dense Hungarian for small
# problems, sparse LAPJVsp otherwise). Same cost model; used to check that the kernels give the same links
# on seeded synthetic data that the brute force above cannot handle (hundreds of detections per frame).


def _match_frame_scipy(src_pos, src_gap, dst_pos, rho2_src, cost_unit2, src_tree_r, dense_max, src_lb=None,
                       dst_lb=None, beta=0.0, dmax2=0.0):
    import numpy as np
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching
    from scipy.spatial import cKDTree

    empty = np.empty(0, dtype=np.int64)
    sdm = cKDTree(src_pos).sparse_distance_matrix(cKDTree(dst_pos), src_tree_r, output_type="ndarray")
    if sdm.size == 0:
        return empty, empty
    i = sdm["i"].astype(np.int64)
    j = sdm["j"].astype(np.int64)
    r2 = sdm["v"] ** 2 / (src_gap[i] + 1.0)
    keep = r2 < rho2_src[i]
    i, j, cost = i[keep], j[keep], (r2 / cost_unit2)[keep]
    if beta > 0:  # brightness term (exonta.track.link, item 5b), written out from its definition
        cost = (cost + beta * np.minimum((dst_lb[j] - src_lb[i]) ** 2, dmax2)) / (1.0 + beta * dmax2)
    if i.size == 0:
        return empty, empty
    k, m = src_pos.shape[0], dst_pos.shape[0]
    trivial = (np.bincount(i, minlength=k)[i] == 1) & (np.bincount(j, minlength=m)[j] == 1)
    out_i, out_j = [i[trivial]], [j[trivial]]
    rest = ~trivial
    if np.any(rest):
        rows, li = np.unique(i[rest], return_inverse=True)
        cols, lj = np.unique(j[rest], return_inverse=True)
        rc = cost[rest]
        nr, nc = rows.size, cols.size
        n = nr + nc
        if n <= dense_max:
            c = np.full((n, n), (n + 1) * 4.0)
            c[li, lj] = rc
            c[np.arange(nr), nc + np.arange(nr)] = 0.5
            c[nr + np.arange(nc), np.arange(nc)] = 0.5
            c[nr:, nc:] = 0.0
            r_ind, c_ind = linear_sum_assignment(c)
        else:
            ar = np.concatenate([li, np.arange(nr), nr + np.arange(nc), nr + lj])
            ac = np.concatenate([lj, nc + np.arange(nr), np.arange(nc), nc + li])
            aw = np.concatenate([rc + 1.0, np.full(nr, 1.5), np.full(nc, 1.5), np.full(lj.size, 1.0)])
            r_ind, c_ind = min_weight_full_bipartite_matching(coo_array((aw, (ar, ac)), shape=(n, n)).tocsr())
        sel = (r_ind < nr) & (c_ind < nc)
        out_i.append(rows[r_ind[sel]])
        out_j.append(cols[c_ind[sel]])
    return np.concatenate(out_i), np.concatenate(out_j)


def link_lap_ref(frames, xs, ys, rho2_px2, memory, adaptive=True, miss_probability=1e-6, floor2_px2=1.0,
                 dense_max=160, log_brightness=None, beta=0.0, dmax2=0.0):
    """Track id per detection (ids in order of creation), frame-by-frame scipy LAP; arrays in any order."""
    import numpy as np

    frames = np.asarray(frames, dtype=np.int64)
    order = np.argsort(frames, kind="stable")
    fr = frames[order]
    xy = np.column_stack([np.asarray(xs, float)[order], np.asarray(ys, float)[order]])
    lb = np.zeros(fr.size) if log_brightness is None else np.asarray(log_brightness, float)[order]
    act_lb = np.empty(0)
    track_of = np.full(fr.size, -1, dtype=np.int64)
    uframes, starts = np.unique(fr, return_index=True)
    ends = np.append(starts[1:], fr.size)
    r_query = math.sqrt(rho2_px2) * math.sqrt(memory + 1.0) * (1.0 + 1e-9)
    act_pos = np.empty((0, 2))
    act_last = np.empty(0, dtype=np.int64)
    act_id = np.empty(0, dtype=np.int64)
    act_sq = np.empty(0)
    act_n = np.empty(0, dtype=np.int64)
    next_id = 0
    for f, s, e in zip(uframes, starts, ends):
        alive = (f - act_last - 1) <= memory
        act_pos, act_last, act_id, act_sq, act_n = (act_pos[alive], act_last[alive], act_id[alive], act_sq[alive],
                                                   act_n[alive])
        act_lb = act_lb[alive]
        dst = xy[s:e]
        ids = np.full(e - s, -1, dtype=np.int64)
        if act_id.size:
            gap = f - act_last - 1
            gate2 = np.full(act_id.size, float(rho2_px2))
            if adaptive:
                has = act_n > 0
                nh = act_n[has].astype(float)
                c = nh * np.expm1(-np.log(miss_probability) / nh)
                gate2[has] = np.clip(c * act_sq[has] / nh, floor2_px2, rho2_px2)
            si, dj = _match_frame_scipy(act_pos, gap, dst, gate2, rho2_px2, r_query, dense_max, act_lb, lb[s:e],
                                        beta, dmax2)
            ids[dj] = act_id[si]
            d = dst[dj] - act_pos[si]
            act_sq[si] += (d[:, 0] ** 2 + d[:, 1] ** 2) / (gap[si] + 1.0)
            act_n[si] += 1
            act_pos[si] = dst[dj]
            act_lb[si] = lb[s:e][dj]
            act_last[si] = f
        new = ids < 0
        n_new = int(new.sum())
        ids[new] = np.arange(next_id, next_id + n_new)
        next_id += n_new
        act_pos = np.concatenate([act_pos, dst[new]])
        act_lb = np.concatenate([act_lb, lb[s:e][new]])
        act_last = np.concatenate([act_last, np.full(n_new, f, dtype=np.int64)])
        act_id = np.concatenate([act_id, ids[new]])
        act_sq = np.concatenate([act_sq, np.zeros(n_new)])
        act_n = np.concatenate([act_n, np.zeros(n_new, dtype=np.int64)])
        track_of[s:e] = ids
    out = np.empty_like(track_of)
    out[order] = track_of
    return out
