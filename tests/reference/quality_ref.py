"""Slow, obviously-correct reference for exonta.track.quality (plain Python loops)."""

from __future__ import annotations

import math
import statistics


def _score(pos, k):
    """Normalised squared bridge residual (interior) or end step of position k; pos = [(frame, x, y), ...]."""
    m = len(pos)
    if k in (0, m - 1):
        j = 1 if k == 0 else m - 2
        t = abs(pos[j][0] - pos[k][0])
        return ((pos[j][1] - pos[k][1]) ** 2 + (pos[j][2] - pos[k][2]) ** 2) / (2.0 * t)
    (fa, xa, ya), (fi, xi, yi), (fb, xb, yb) = pos[k - 1][:3], pos[k][:3], pos[k + 1][:3]
    t1, t2 = fi - fa, fb - fi
    f = t1 / (t1 + t2)
    r2 = (xi - xa - f * (xb - xa)) ** 2 + (yi - ya - f * (yb - ya)) ** 2
    return r2 * (t1 + t2) / (2.0 * t1 * t2)


def _log_p(q, excluded, min_others):
    out = []
    for k in range(len(q)):
        others = [q[j] for j in range(len(q)) if abs(j - k) > 1 and j not in excluded]
        if len(others) < min_others or sum(others) <= 0:
            out.append(0.0)
            continue
        n_o = len(others)
        out.append(-n_o * math.log1p(q[k] / (sum(others) / n_o) / n_o))
    return out


def prune_track_ref(frames, x, y, alpha, min_others=3, max_removed_fraction=0.34):
    """Indices (into the track) of the positions kept, by repeated F(2, 2n) tests (see exonta.track.quality)."""
    pos = [(int(f), float(a), float(b), i) for i, (f, a, b) in enumerate(zip(frames, x, y))]
    max_remove = int(max_removed_fraction * len(pos))
    removed = 0
    while removed < max_remove and len(pos) >= min_others + 3:
        q = [_score(pos, k) for k in range(len(pos))]
        scale = statistics.median(q) / math.log(2.0)  # robust mean of an exponential
        suspects = [k for k in range(len(pos)) if q[k] > scale * 0.5 * math.log(1.0 / alpha)]
        if not suspects:
            break
        excluded = {j for k in suspects for j in (k - 1, k, k + 1)}
        lp = _log_p(q, excluded, min_others)
        best = min(range(len(pos)), key=lambda k: lp[k])
        if lp[best] >= math.log(alpha):
            break
        del pos[best]
        removed += 1
    return [p[3] for p in pos]
