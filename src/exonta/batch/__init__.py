"""Batch analysis of acquisition folders: discovery, Dask scheduling, SQLite catalog, resume.

``exonta batch ROOT --out OUT`` (or :func:`run_batch`) analyses every video
under ROOT — grouped into lots and samples by a ``samples.csv`` manifest or by
folder — one Dask task per video, pools the replicate videos of each sample,
and records everything in ``OUT/catalog.sqlite`` (exported to ``results.csv``
and ``results.parquet``). Re-running the same command skips what is up to date.

Submodules: :mod:`~exonta.batch.discover` (what to analyse),
:mod:`~exonta.batch.run` (the task and the orchestration),
:mod:`~exonta.batch.pool` (per-sample pooling), :mod:`~exonta.batch.catalog`
(the database schema). Dask is imported only when a batch runs.
"""

from __future__ import annotations

from .catalog import Catalog
from .discover import VideoEntry, discover, find_videos, parse_manifest, read_manifest
from .pool import between_video_stats, pool_sample
from .run import BatchReport, VideoOutcome, run_batch, run_video

__all__ = [
    "run_batch",
    "run_video",
    "pool_sample",
    "BatchReport",
    "VideoOutcome",
    "Catalog",
    "VideoEntry",
    "discover",
    "find_videos",
    "parse_manifest",
    "read_manifest",
    "between_video_stats",
]
