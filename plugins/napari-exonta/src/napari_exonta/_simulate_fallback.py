"""Simulate a small sample video when the repository's sample_data/ is not available."""

from __future__ import annotations

from pathlib import Path

__all__ = ["simulate_sample", "SAMPLE_SIZE"]

#: frames, width, height of a fallback sample (small: a few MB, seconds to simulate)
SAMPLE_SIZE = (120, 320, 240)


def simulate_sample(key: str, path: Path) -> Path:
    """Write ``<key>.tif`` + ``<key>.exonta.toml`` (+ truth) into ``path.parent``; return the TIFF path."""
    from exonta.simulate import preset_config, write_simulation

    n, w, h = SAMPLE_SIZE
    cfg = preset_config(key, n_frames=n, width_px=w, height_px=h, seed=1)
    written = write_simulation(cfg, path.parent, key, formats=("tif",))
    return Path(written["tif"])
