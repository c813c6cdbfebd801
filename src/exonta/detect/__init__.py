"""Spot detection and sub-pixel localisation (numba).

Public API: :func:`locate` (one frame), :func:`locate_frames` (a stack or a
video, streamed in chunks, frames in parallel) and
:func:`estimate_background` (static temporal-median background). See
:mod:`exonta.detect.locate` for the algorithm and the columns.
"""

from .background import estimate_background
from .locate import COLUMNS, locate, locate_frames

__all__ = ["locate", "locate_frames", "estimate_background", "COLUMNS"]
