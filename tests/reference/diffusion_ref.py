"""Slow, obviously-correct references for exonta.analysis.diffusion (plain Python loops)."""

from __future__ import annotations

import math

import numpy as np


def track_moments_ref(particle, frame, x, y, max_lag):
    """Dict particle -> (sq_sum[max_lag], pair_cnt[max_lag], cov_sum, cov_cnt), by brute force."""
    by_track: dict[int, dict[int, tuple[float, float]]] = {}
    for p, f, xi, yi in zip(particle, frame, x, y):
        by_track.setdefault(int(p), {})[int(f)] = (float(xi), float(yi))
    out = {}
    for p, pos in by_track.items():
        sq = [0.0] * max_lag
        cnt = [0] * max_lag
        for f1 in pos:
            for f2 in pos:
                lag = f2 - f1
                if 1 <= lag <= max_lag:
                    dx = pos[f2][0] - pos[f1][0]
                    dy = pos[f2][1] - pos[f1][1]
                    sq[lag - 1] += dx * dx + dy * dy
                    cnt[lag - 1] += 1
        cs = 0.0
        cc = 0
        for f in pos:
            if f + 1 in pos and f + 2 in pos:
                for a in (0, 1):
                    cs += (pos[f + 1][a] - pos[f][a]) * (pos[f + 2][a] - pos[f + 1][a])
                cc += 1
        out[p] = (sq, cnt, cs, cc)
    return out


def cve_ref(xy, dt, r):
    """CVE (Vestergaard 2014) of one contiguous track, both axes pooled: (D, sigma2).

    ``xy`` is a list of (x, y) positions, one per consecutive frame.
    """
    n = len(xy) - 1
    s_sq = 0.0
    s_cov = 0.0
    for a in (0, 1):
        steps = [xy[i + 1][a] - xy[i][a] for i in range(n)]
        s_sq += sum(s * s for s in steps) / n
        s_cov += sum(steps[i] * steps[i + 1] for i in range(n - 1)) / (n - 1)
    msd1 = s_sq / 2.0
    cov1 = s_cov / 2.0
    d = msd1 / (2.0 * dt) + cov1 / dt
    s2 = r * msd1 + (2.0 * r - 1.0) * cov1
    return d, s2


def msd_fit_ref(xy, dt, n_points):
    """Unweighted least-squares slope/4 of the 2-D MSD of a contiguous track over lags 1..n_points."""
    ts, ms = [], []
    for lag in range(1, n_points + 1):
        vals = [(xy[i + lag][0] - xy[i][0]) ** 2 + (xy[i + lag][1] - xy[i][1]) ** 2 for i in range(len(xy) - lag)]
        ts.append(lag * dt)
        ms.append(sum(vals) / len(vals))
    tm = sum(ts) / len(ts)
    mm = sum(ms) / len(ms)
    slope = sum((t - tm) * (m - mm) for t, m in zip(ts, ms)) / sum((t - tm) ** 2 for t in ts)
    return slope / 4.0


def cramer_rao_ref(n, d, sigma, r, dt, n_dims=2, sigma_known=False):
    """CRB of D from the dense covariance matrix: I_ij = ½ tr(Σ⁻¹ ∂iΣ Σ⁻¹ ∂jΣ), relative SE."""
    a = 2 * d * dt * (1 - 2 * r) + 2 * sigma**2
    b = 2 * r * d * dt - sigma**2
    cov = np.diag(np.full(n, a)) + np.diag(np.full(n - 1, b), 1) + np.diag(np.full(n - 1, b), -1)
    d_cov_d = (np.diag(np.full(n, 2 * dt * (1 - 2 * r))) + np.diag(np.full(n - 1, 2 * r * dt), 1)
               + np.diag(np.full(n - 1, 2 * r * dt), -1))
    d_cov_s = np.diag(np.full(n, 2.0)) + np.diag(np.full(n - 1, -1.0), 1) + np.diag(np.full(n - 1, -1.0), -1)
    inv = np.linalg.inv(cov)
    derivs = [d_cov_d, d_cov_s]
    fim = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            fim[i, j] = 0.5 * np.trace(inv @ derivs[i] @ inv @ derivs[j]) * n_dims
    crb = 1 / fim[0, 0] if sigma_known else np.linalg.inv(fim)[0, 0]
    return math.sqrt(crb) / d
