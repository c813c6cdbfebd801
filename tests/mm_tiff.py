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


def write_multifile_ome(folder, frames: np.ndarray, names=("a.ome.tif", "b.ome.tif"), binary_only: bool = False,
                        time_increment_s: float = 0.04, pixel_size_um: float = 0.2) -> None:
    """One T×Y×X series split over several OME-TIFF files (as Micro-Manager splits at 4 GB): each file holds
    its share of the frames; the first carries the whole OME-XML, each TiffData naming its file by UUID. The
    others carry the same XML, or with ``binary_only`` Micro-Manager's stub pointing at the first."""
    import uuid
    from pathlib import Path

    folder = Path(folder)
    n, h, w = frames.shape
    bounds = np.linspace(0, n, len(names) + 1).astype(int)
    uuids = [f"urn:uuid:{uuid.uuid4()}" for _ in names]
    tiffdata = "".join(
        f'<TiffData FirstT="{b0}" IFD="0" PlaneCount="{b1 - b0}"><UUID FileName="{name}">{u}</UUID></TiffData>'
        for name, u, b0, b1 in zip(names, uuids, bounds[:-1], bounds[1:]))
    dtype = {np.dtype(np.uint8): "uint8", np.dtype(np.uint16): "uint16"}[frames.dtype]

    def full(own):
        return ('<?xml version="1.0" encoding="UTF-8"?>'
                f'<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" UUID="{own}">'
                f'<Image ID="Image:0" Name="mm"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="{dtype}" '
                f'SizeX="{w}" SizeY="{h}" SizeC="1" SizeZ="1" SizeT="{n}" PhysicalSizeX="{pixel_size_um}" '
                f'PhysicalSizeY="{pixel_size_um}" TimeIncrement="{time_increment_s}">'
                f'<Channel ID="Channel:0:0" SamplesPerPixel="1"/>{tiffdata}</Pixels></Image></OME>')

    def stub(own):
        return ('<?xml version="1.0" encoding="UTF-8"?>'
                f'<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" UUID="{own}">'
                f'<BinaryOnly MetadataFile="{names[0]}" UUID="{uuids[0]}"/></OME>')

    for i, (name, u, b0, b1) in enumerate(zip(names, uuids, bounds[:-1], bounds[1:])):
        desc = full(u) if i == 0 or not binary_only else stub(u)
        tifffile.imwrite(folder / name, frames[b0:b1], description=desc, metadata=None)
