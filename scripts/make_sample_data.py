"""Regenerate the bundled sample videos in sample_data/ (deterministic: fixed seeds).

Run: ``python scripts/make_sample_data.py`` (takes a few seconds).
"""

from __future__ import annotations

import sys
from pathlib import Path

from exonta.simulate import preset_config, write_simulation

OUT = Path(__file__).resolve().parents[1] / "sample_data"

# name: (preset, overrides) — small frames keep the repository light; concentrations are chosen so a
# 150-frame clip still gives a few hundred tracks.
SAMPLES = {
    "beads100": ("beads100", {"concentration_per_ml": 2.0e9, "seed": 11}),
    "ev": ("ev", {"concentration_per_ml": 2.5e9, "seed": 12}),
    # a lower camera level so that the 200 nm beads (64x brighter than 100 nm) clip less in 8 bit
    "bimodal": ("bimodal", {"concentration_per_ml": 1.5e9, "photons_ref": 2500.0, "seed": 13}),
}
# a dark camera background (as on NTA instruments) keeps the compressed files small
COMMON = {"width_px": 256, "height_px": 192, "n_frames": 200, "background_photons": 6.0, "read_noise_e": 1.5}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, (preset, overrides) in SAMPLES.items():
        cfg = preset_config(preset, **COMMON, **overrides)
        paths = write_simulation(cfg, OUT, name, formats=("tif",), compression="zlib")
        print(f"{name}: {paths['tif'].stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
