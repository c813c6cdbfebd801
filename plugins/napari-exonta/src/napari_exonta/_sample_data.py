"""File ▸ Open Sample: the sample NTA videos of the exonta repository.

The videos are looked up, in order, in the folder named by the environment
variable ``EXONTA_SAMPLE_DATA``, in ``sample_data/`` of the exonta source tree
(next to ``src/exonta``) and in ``sample_data/`` of the repository holding this
plugin (``plugins/napari-exonta``). A video that cannot be found is simulated
with :mod:`exonta.simulate` into a per-user cache folder (small: 120 frames).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ._reader import video_layer_data

__all__ = ["SAMPLES", "sample_folders", "sample_path", "beads100", "ev", "bimodal"]

SAMPLES = {
    "beads100": "100 nm beads",
    "ev": "extracellular vesicles",
    "bimodal": "bimodal mixture",
}


def sample_folders() -> list[Path]:
    """Folders searched for sample videos, highest precedence first."""
    out: list[Path] = []
    env = os.environ.get("EXONTA_SAMPLE_DATA")
    if env:
        out.append(Path(env))
    try:
        import exonta

        out.append(Path(exonta.__file__).resolve().parents[2] / "sample_data")
    except (ImportError, IndexError):
        pass
    here = Path(__file__).resolve()
    if len(here.parents) > 4:
        out.append(here.parents[4] / "sample_data")
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def _cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    folder = Path(base) / "exonta" / "sample_data"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir()) / "exonta_sample_data"
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def sample_path(key: str, generate: bool = True) -> Path:
    """Path of the sample video ``key`` (``beads100``, ``ev``, ``bimodal``).

    Raises
    ------
    exonta.errors.ExontaInputError
        When the sample is unknown, or missing and cannot be simulated.
    """
    from exonta.errors import ExontaInputError

    if key not in SAMPLES:
        raise ExontaInputError(f"unknown sample {key!r}; choose one of {', '.join(SAMPLES)}")
    for folder in sample_folders():
        p = folder / f"{key}.tif"
        if p.is_file():
            return p
    cached = _cache_folder() / f"{key}.tif"
    if cached.is_file():
        return cached
    if not generate:
        raise ExontaInputError(f"sample video {key}.tif not found in {', '.join(map(str, sample_folders()))}; "
                               "set EXONTA_SAMPLE_DATA to the folder holding it")
    return _simulate_sample(key, cached)


def _simulate_sample(key: str, path: Path) -> Path:
    """Simulate a small sample video with its sidecar into ``path``."""
    from ._simulate_fallback import simulate_sample

    return simulate_sample(key, path)


def _open(key: str) -> list[tuple]:
    data, kwargs, kind = video_layer_data(sample_path(key), name=key)
    return [(data, kwargs, kind)]


def beads100() -> list[tuple]:
    """100 nm polystyrene beads (simulated)."""
    return _open("beads100")


def ev() -> list[tuple]:
    """Extracellular vesicles, broad size distribution (simulated)."""
    return _open("ev")


def bimodal() -> list[tuple]:
    """Mixture of two bead sizes (simulated)."""
    return _open("bimodal")
