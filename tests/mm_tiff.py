"""Write TIFF stacks with Micro-Manager's per-image metadata (private tag 51123, JSON), as the
Micro-Manager acquisition software stores each image's ``ElapsedTime-ms``, ``Exposure-ms`` and
``PixelSizeUm``. (Micro-Manager's own file header and index map are not written: exonta does not need them.)"""

from __future__ import annotations

import json

import numpy as np
import tifffile


def write_mm_tiff(path, frames: np.ndarray, times_ms=None, exposure_ms: float | None = None,
                  pixel_size_um: float | None = None, extra: dict | None = None) -> None:
    """One page per frame, each with its own tag 51123; ``times_ms[i]`` (or None: no time) its ``ElapsedTime-ms``."""
    with tifffile.TiffWriter(path) as w:
        for i, frame in enumerate(frames):
            md = {"Frame": i, "FrameIndex": i, "ChannelIndex": 0, "SliceIndex": 0, "Camera": "Sim"}
            if times_ms is not None and times_ms[i] is not None:
                md["ElapsedTime-ms"] = float(times_ms[i])
            if exposure_ms is not None:
                md["Exposure-ms"] = float(exposure_ms)
            if pixel_size_um is not None:
                md["PixelSizeUm"] = float(pixel_size_um)
            md.update(extra or {})
            w.write(frame, contiguous=False, metadata=None, photometric="minisblack",
                    extratags=[(51123, "s", 0, json.dumps(md), True)])
