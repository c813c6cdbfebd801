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
