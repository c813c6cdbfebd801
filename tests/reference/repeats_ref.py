"""Slow, obviously-correct reference for exonta.detect.repeats (plain Python over the pixels)."""

from __future__ import annotations

import math


def frame_changes(frames, previous=None, row_step=4, exclude_regions=()):
    """Mean |frame − frame before| over rows 0, row_step, … outside the rectangles ``exclude_regions``
    ((x0, y0, x1, y1), half-open); NaN for the first frame without ``previous``."""

    def excluded(x, y):
        return any(x0 <= x < x1 and y0 <= y < y1 for x0, y0, x1, y1 in exclude_regions)

    out = []
    for i in range(len(frames)):
        before = frames[i - 1] if i > 0 else previous
        if before is None:
            out.append(math.nan)
            continue
        total, count = 0.0, 0
        for y in range(0, len(frames[i]), row_step):
            for x, (a, b) in enumerate(zip(frames[i][y], before[y])):
                if excluded(x, y):
                    continue
                total += abs(float(a) - float(b))
                count += 1
        out.append(total / count)
    return out
