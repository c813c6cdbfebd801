"""exonta — Nanoparticle Tracking Analysis: hydrodynamic sizes and concentrations from light-sheet video.

The public API is listed in ``__all__``; importing the package has no side
effects (no logging handlers, no heavy imports: submodules load lazily).

Quick start::

    import exonta
    video, config, warnings, _ = exonta.prepare("sample.tif", acquisition={"pixel_size_um": 0.166, "fps": 30})
    result = exonta.analyze(video, config)
    print(result.summary()["size_nm"]["mode"])
    result.write("results/")
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "ExontaInputError",
    "ExontaCancelled",
    "AnalysisConfig",
    "Acquisition",
    "DetectParams",
    "LinkParams",
    "SizingParams",
    "ConcentrationParams",
    "open_video",
    "locate",
    "locate_frames",
    "analyze",
    "prepare",
    "Result",
    "simulate",
]

_LAZY = {
    "ExontaInputError": "exonta.errors",
    "ExontaCancelled": "exonta.errors",
    "AnalysisConfig": "exonta.config",
    "Acquisition": "exonta.config",
    "DetectParams": "exonta.config",
    "LinkParams": "exonta.config",
    "SizingParams": "exonta.config",
    "ConcentrationParams": "exonta.config",
    "open_video": "exonta.io",
    "locate": "exonta.detect",
    "locate_frames": "exonta.detect",
    "analyze": "exonta.pipeline",
    "prepare": "exonta.pipeline",
    "Result": "exonta.pipeline",
}


def __getattr__(name: str) -> Any:
    if name == "simulate":
        return import_module("exonta.simulate")
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'exonta' has no attribute {name!r}")
    value = getattr(import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
