"""Peak memory of analysing a long 1024×1024 NTA video (issue 9: bounded memory).

exonta streams videos in chunks, so the peak resident memory (RSS) of an
analysis must not grow with the length of the video. This benchmark analyses a
long simulated video and prints the peak RSS (``resource.getrusage`` →
``ru_maxrss``) next to the size of the video.

Two sources (``--source``):

``lazy`` (default)
    :class:`LazySimulatedVideo`, an object with the :class:`exonta.io.Video`
    interface that generates frames on the fly with
    :func:`exonta.simulate.iter_simulated_chunks`. Nothing is written to disk, so
    the full 20,000-frame case (a 21 GB video) can run anywhere.
``tif``
    A real OME-TIFF written chunk by chunk with
    :func:`exonta.simulate.write_simulation` (``formats=("tif",)``) and analysed
    from disk (memory-mapped reader). A 20,000-frame 1024² 8-bit TIFF is 21 GB,
    more than the disk budget of most CI machines: ``--frames 3000`` (3.1 GB) is
    the practical run there.

The peak is measured in a fresh process (this script): imports and a small
warm-up analysis (numba compilation) come first, their peak is recorded as the
baseline, then the long video is analysed; ``growth = peak_after - baseline``.
Because ``ru_maxrss`` is a high-water mark, the growth is an upper bound of the
memory the long analysis needed beyond the warm-up.

Usage::

    python benchmarks/bench_memory.py                       # 20,000 lazy frames (slow: ~hours on 2 cores)
    python benchmarks/bench_memory.py --frames 3000         # the practical run
    python benchmarks/bench_memory.py --frames 3000 --source tif --workdir /big/disk
    python benchmarks/bench_memory.py --frames 300 --size 512 --json   # the unit-test version

With ``--json`` one JSON line is printed (used by tests/test_hardening.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0 if sys.platform != "darwin" else kib / 1024.0 / 1024.0


class LazySimulatedVideo:
    """A simulated video generated on demand, with the :class:`exonta.io.Video` interface.

    Frames are produced by :func:`exonta.simulate.iter_simulated_chunks` and never
    stored: memory is bounded by one chunk, whatever ``config.n_frames`` is.
    Random access (:meth:`read`, :meth:`read_range`) regenerates the video from the
    start when asked for a frame before the current position, so forward access
    (what exonta does: sorted background samples, then chunks in order) costs
    one generation pass each.

    Parameters
    ----------
    config : exonta.simulate.SimulationConfig
        The video to generate (deterministic for a given ``seed``).
    chunk_frames : int
        Frames generated at a time.
    """

    path = None
    format = "array"

    def __init__(self, config: Any, chunk_frames: int = 64) -> None:
        self.config = config
        self.chunk_frames = int(chunk_frames)
        self.n_frames = int(config.n_frames)
        self.height = int(config.height_px)
        self.width = int(config.width_px)
        self.frame_shape = (self.height, self.width)
        self.dtype = np.dtype(np.uint8 if config.bit_depth == 8 else np.uint16)
        self.metadata = {"pixel_size_um": float(config.pixel_size_um), "fps": float(config.fps),
                         "exposure_s": float(config.exposure_s)}
        self.fps = float(config.fps)
        self._gen: Iterator[Any] | None = None
        self._buf_start = 0
        self._buf: np.ndarray | None = None

    # -- sequential generation with a one-chunk buffer -----------------------------------
    def _restart(self) -> None:
        from exonta.simulate import iter_simulated_chunks

        self._gen = iter_simulated_chunks(self.config, self.chunk_frames)
        self._buf, self._buf_start = None, 0

    def _chunk_holding(self, index: int) -> tuple[int, np.ndarray]:
        if self._gen is None or index < self._buf_start:
            self._restart()
        while self._buf is None or index >= self._buf_start + len(self._buf):
            nxt = next(self._gen)  # type: ignore[arg-type]
            self._buf, self._buf_start = nxt.frames, int(nxt.start_frame)
        return self._buf_start, self._buf

    def read(self, index: int) -> np.ndarray:
        index = int(index)
        if not 0 <= index < self.n_frames:
            raise IndexError(f"frame {index} out of range 0..{self.n_frames - 1}")
        start, buf = self._chunk_holding(index)
        return buf[index - start].copy()

    def read_range(self, start: int, stop: int) -> np.ndarray:
        return np.stack([self.read(i) for i in range(int(start), int(stop))])

    def iter_chunks(self, chunk_frames: int = 64, start: int = 0,
                    stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        stop = self.n_frames if stop is None else min(int(stop), self.n_frames)
        for a in range(int(start), stop, int(chunk_frames)):
            b = min(a + int(chunk_frames), stop)
            yield a, self.read_range(a, b)

    def sha256(self) -> str:
        """Digest of the generating configuration (the frames are a deterministic function of it)."""
        return hashlib.sha256(self.config.model_dump_json().encode()).hexdigest()

    @property
    def nbytes(self) -> int:
        return self.n_frames * self.height * self.width * self.dtype.itemsize


def _config(frames: int, size: int, seed: int = 0):
    from exonta.simulate import SimulationConfig

    # ~20 particles per frame in a 1024² field (scaled with the area for other sizes)
    return SimulationConfig(width_px=size, height_px=size, n_frames=frames, concentration_per_ml=1e8,
                            seed=seed)


def run(frames: int, size: int, source: str, workdir: str | None) -> dict[str, Any]:
    """Analyse a ``frames``-frame ``size``² video; return peak-RSS numbers (MB) and timings (s)."""
    from exonta.config import Acquisition, AnalysisConfig
    from exonta.pipeline import analyze

    acq = Acquisition(pixel_size_um=0.166, fps=30.0, exposure_s=0.02)
    cfg = AnalysisConfig(acquisition=acq)
    # warm-up: imports, numba compilation, a tiny analysis (its peak is the baseline)
    analyze(LazySimulatedVideo(_config(30, 64, seed=1)), cfg)
    baseline = peak_rss_mb()
    video_mb = frames * size * size / 2**20
    t = time.perf_counter()
    tmp = None
    if source == "lazy":
        video: Any = LazySimulatedVideo(_config(frames, size))
        write_s = 0.0
    else:
        from exonta.simulate import write_simulation

        tmp = tempfile.TemporaryDirectory(dir=workdir, prefix="exonta-bench-memory-")
        paths = write_simulation(_config(frames, size), tmp.name, "long", formats=("tif",))
        write_s = time.perf_counter() - t
        video = paths["tif"]
    after_write = peak_rss_mb()
    t = time.perf_counter()
    result = analyze(video, cfg)
    analyze_s = time.perf_counter() - t
    peak = peak_rss_mb()
    if tmp is not None:
        tmp.cleanup()
    return {
        "frames": frames, "size_px": size, "source": source, "video_mb": round(video_mb, 1),
        "baseline_rss_mb": round(baseline, 1), "peak_rss_after_write_mb": round(after_write, 1),
        "peak_rss_mb": round(peak, 1), "growth_mb": round(peak - baseline, 1),
        "growth_fraction_of_video": round((peak - baseline) / video_mb, 4) if video_mb else None,
        "n_detections": int(len(result.features)), "write_s": round(write_s, 1),
        "analyze_s": round(analyze_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=20000,
                    help="frames in the video (default 20000; --frames 3000 is the practical run on a small disk)")
    ap.add_argument("--size", type=int, default=1024, help="frame width = height, px (default 1024)")
    ap.add_argument("--source", choices=("lazy", "tif"), default="lazy",
                    help="lazy: generated on the fly, no disk; tif: written to disk first (frames×size² bytes)")
    ap.add_argument("--workdir", default=None, help="folder for the temporary TIFF (--source tif)")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args(argv)
    res = run(args.frames, args.size, args.source, args.workdir)
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:>26}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
