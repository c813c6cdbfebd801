"""Slow, obviously-correct reference for exonta.detect.repeats (plain Python over the pixels)."""

from __future__ import annotations

import math


def frame_changes(frames, previous=None, row_step=4):
    """Mean |frame − frame before| over rows 0, row_step, …; NaN for the first frame without ``previous``."""
    out = []
    for i in range(len(frames)):
        before = frames[i - 1] if i > 0 else previous
        if before is None:
            out.append(math.nan)
            continue
        total, count = 0.0, 0
        for y in range(0, len(frames[i]), row_step):
            for a, b in zip(frames[i][y], before[y]):
                total += abs(float(a) - float(b))
                count += 1
        out.append(total / count)
    return out
