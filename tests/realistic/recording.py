"""Realistic recordings of micron-sized beads on an ordinary microscope, with known diffusion.

What users film first is not a light-sheet NTA video: it is polystyrene or latex beads
(0.5–3 µm) in water on a bright-field or fluorescence microscope, 10–30 fps, saved as a
folder of RGB JPEG images or an MJPEG/XVID AVI. This module renders such recordings with the
physics that matters for sizing kept exact and the look made realistic:

* **Motion** (exact): 3-D Brownian motion of each bead with the Stokes–Einstein coefficient
  ``D = k_B T / (3 π η d)`` (η of water at T, IAPWS 2008, unless given), the z position confined
  to a slab with reflecting walls (the chamber), x/y periodic in a box larger than the field so
  beads enter and leave; a uniform stage drift (constant velocity plus a slow wobble) added to
  every bead; motion blur by averaging ``n_substeps`` positions over the exposure; optionally a
  fraction of beads stuck to the glass (D = 0).
* **Image of a bead**: an object function (bright-field: a dark disc of the bead's radius with a
  bright refraction ring at its edge and, optionally, a bright "ball-lens" spot in the centre;
  fluorescence: the projected chord length of a uniformly dyed sphere) convolved with an Airy
  PSF of the objective's NA, widened by defocus ``|z|`` (a Gaussian of σ = ``defocus_blur`` ·
  |z|) and losing contrast as ``1/(1 + (z/z_dof)²)``. The blurred radial profile is tabulated
  once per z level (FFT) and sampled on a 3×3 sub-pixel grid (pixel integration).
* **Illumination and camera**: vignetting (quadratic fall-off) and a linear gradient, lamp
  flicker, static dust specks (bright-field) or debris (fluorescence), Poisson shot noise at a
  given gain (e⁻/ADU), Gaussian read noise, 8-bit rounding and clipping, RGB with a colour
  tint and independent noise per channel, JPEG (4:2:0) or MJPEG/XVID compression on writing.

Nothing here imports the pipeline under test except :func:`exonta.physics.water_viscosity_mpas`
(the IAPWS viscosity, itself tested against tabulated values).

Example
-------
>>> cfg = BeadConfig(diameter_um=1.0, pixel_size_um=0.1, mode="brightfield", rgb=True)
>>> rec = render(cfg)                                      # doctest: +SKIP
>>> write_image_folder(rec, "beads_1um", quality=85)        # doctest: +SKIP
>>> write_avi(rec, "beads_1um.avi", fourcc="MJPG")          # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import special

K_B = 1.380649e-23  # J/K (exact, SI 2019)

__all__ = ["BeadConfig", "Recording", "render", "write_image_folder", "write_avi", "write_truth",
           "diffusion_um2_s", "CASES"]


def diffusion_um2_s(diameter_um: float, temperature_c: float, viscosity_mpas: float | None = None) -> float:
    """Stokes–Einstein diffusion coefficient of a sphere, µm²/s (η: water at T when None)."""
    if viscosity_mpas is None:
        from exonta.physics import water_viscosity_mpas

        viscosity_mpas = float(water_viscosity_mpas(temperature_c))
    eta = viscosity_mpas * 1e-3
    d = diameter_um * 1e-6
    return K_B * (temperature_c + 273.15) / (3 * math.pi * eta * d) * 1e12


@dataclass(frozen=True)
class BeadConfig:
    """Everything a realistic bead recording depends on (units in the names)."""

    diameter_um: float = 1.0
    n_particles: int = 25                # in the field on average
    width_px: int = 320
    height_px: int = 240
    n_frames: int = 300
    pixel_size_um: float = 0.1
    fps: float = 25.0
    exposure_s: float = 0.005
    temperature_c: float = 22.0
    viscosity_mpas: float | None = None
    mode: Literal["brightfield", "fluorescence"] = "brightfield"
    # optics
    na: float = 0.75                     # objective NA (Airy PSF)
    wavelength_um: float = 0.55
    slab_half_um: float = 2.0            # beads move in z within ±slab_half_um of the focal plane
    depth_of_field_um: float = 1.5       # contrast 1/(1 + (z/dof)²)
    defocus_blur: float = 0.25           # extra Gaussian σ per µm of defocus, µm/µm
    # bright-field object
    contrast: float = 0.45               # depth of the dark disc, fraction of the illumination
    halo: float = 0.35                   # brightness of the refraction ring
    lens_spot: float = 0.0               # bright central spot (ball lens), fraction of illumination
    background_level: float = 0.62       # illumination at the centre, fraction of 255 (bright-field)
    # fluorescence
    photons_per_bead_adu: float = 6000.0  # integrated signal of one in-focus bead, ADU
    fluo_background_adu: float = 18.0
    bleach_tau_s: float | None = None
    # illumination, camera
    vignetting: float = 0.3              # relative fall-off at the corners
    gradient: float = 0.12               # relative linear gradient across the field
    flicker: float = 0.01                # relative rms lamp flicker per frame
    gain_e_per_adu: float = 6.0
    read_noise_adu: float = 1.0
    rgb: bool = True
    tint: tuple[float, float, float] = (1.0, 0.93, 0.72)  # R, G, B gain (halogen lamp, or the dye)
    n_dust: int = 6
    # motion
    drift_um_per_s: tuple[float, float] = (2.0, -1.0)
    drift_wobble_um: float = 0.5         # amplitude of a slow sinusoidal stage wobble
    drift_wobble_period_s: float = 7.0
    stuck_fraction: float = 0.0
    n_substeps: int = 3
    seed: int = 0

    @property
    def diffusion_um2_s(self) -> float:
        return diffusion_um2_s(self.diameter_um, self.temperature_c, self.viscosity_mpas)


@dataclass
class Recording:
    """Rendered frames (uint8, (n, h, w) or (n, h, w, 3) RGB) with their ground truth."""

    config: BeadConfig
    frames: np.ndarray
    truth: pd.DataFrame = field(repr=False)   # particle, frame, x, y (px, exposure mid-point), z_um, visible
    particles: pd.DataFrame = field(repr=False)  # particle, diameter_um, D_um2_s, stuck

    @property
    def truth_summary(self) -> dict:
        c = self.config
        return {"diameter_nm": 1000 * c.diameter_um, "D_um2_s": c.diffusion_um2_s,
                "pixel_size_um": c.pixel_size_um, "fps": c.fps, "exposure_s": c.exposure_s,
                "temperature_c": c.temperature_c, "mode": c.mode, "drift_um_per_s": list(c.drift_um_per_s),
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(c).items()}}


# ----------------------------------------------------------------------------------------------
# optics: tabulated radial profiles of one bead image per defocus level
# ----------------------------------------------------------------------------------------------

def _airy_psf(r_um: np.ndarray, na: float, wavelength_um: float) -> np.ndarray:
    v = 2 * math.pi * na * np.maximum(r_um, 1e-9) / wavelength_um
    return (2 * special.j1(v) / v) ** 2


def _profile_table(cfg: BeadConfig, z_levels_um: np.ndarray, step_um: float):
    """Radial profiles (n_z, n_r) of a bead image (relative units) on r = 0, step, 2 step, ..."""
    R = cfg.diameter_um / 2
    extent = R + 2.5 + 4 * cfg.defocus_blur * float(np.max(np.abs(z_levels_um)))
    n = int(math.ceil(extent / step_um))
    ax = np.arange(-n, n + 1) * step_um
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    rr = np.hypot(yy, xx)
    edge = 0.5 * special.erfc((rr - R) / (math.sqrt(2) * 0.03))  # disc with a 30 nm soft edge
    if cfg.mode == "brightfield":
        obj = -cfg.contrast * edge
        obj += cfg.halo * np.exp(-0.5 * ((rr - R - 0.12) / 0.08) ** 2)
        if cfg.lens_spot:
            obj += cfg.lens_spot * np.exp(-0.5 * (rr / (0.3 * R)) ** 2)
    else:
        obj = np.sqrt(np.clip(R * R - rr * rr, 0, None))
        obj /= obj.sum() * step_um * step_um  # unit flux per µm²
    psf = _airy_psf(rr, cfg.na, cfg.wavelength_um)
    psf /= psf.sum()
    fo = np.fft.rfft2(np.fft.ifftshift(obj))
    fp = np.fft.rfft2(np.fft.ifftshift(psf))
    ky = np.fft.fftfreq(ax.size, d=step_um)[:, None]
    kx = np.fft.rfftfreq(ax.size, d=step_um)[None, :]
    k2 = ky * ky + kx * kx
    rows = []
    for z in z_levels_um:
        s = cfg.defocus_blur * abs(z)
        img = np.fft.fftshift(np.fft.irfft2(fo * fp * np.exp(-2 * math.pi ** 2 * s * s * k2), s=obj.shape))
        prof = img[n, n:]
        if cfg.mode == "brightfield":
            prof = prof / (1.0 + (z / cfg.depth_of_field_um) ** 2)
        rows.append(prof)
    tab = np.asarray(rows)
    big = np.nonzero(np.abs(tab).max(axis=0) > 2e-3 * np.abs(tab).max())[0]
    keep = min(tab.shape[1], int(big[-1]) + 2)  # drop the negligible tail (speed)
    return np.arange(keep) * step_um, tab[:, :keep]


# ----------------------------------------------------------------------------------------------
# motion
# ----------------------------------------------------------------------------------------------

def _trajectories(cfg: BeadConfig, rng: np.random.Generator):
    """Positions (n_p, n_t, 3) in µm at every sub-step time, the times, D per bead, stuck flags."""
    px = cfg.pixel_size_um
    margin = 3.0 + cfg.diameter_um  # µm around the field
    box_w = cfg.width_px * px + 2 * margin
    box_h = cfg.height_px * px + 2 * margin
    n_p = max(1, int(round(cfg.n_particles * box_w * box_h / (cfg.width_px * cfg.height_px * px * px))))
    dt = 1.0 / cfg.fps
    sub = cfg.n_substeps
    t_sub = (np.arange(sub) + 0.5) / sub * cfg.exposure_s
    times = (np.arange(cfg.n_frames)[:, None] * dt + t_sub[None, :]).ravel()
    D = np.full(n_p, cfg.diffusion_um2_s)
    stuck = rng.random(n_p) < cfg.stuck_fraction
    D[stuck] = 0.0
    dts = np.diff(times, prepend=times[0])
    steps = rng.standard_normal((n_p, times.size, 3)) * np.sqrt(2 * D[:, None, None] * dts[None, :, None])
    pos = np.cumsum(steps, axis=1)
    pos[:, :, 0] += rng.uniform(0, box_w, n_p)[:, None]
    pos[:, :, 1] += rng.uniform(0, box_h, n_p)[:, None]
    # z: reflecting walls at ±slab_half_um (fold the free walk)
    L = cfg.slab_half_um
    zf = pos[:, :, 2] + rng.uniform(-L, L, n_p)[:, None]
    zf = np.mod(zf + L, 4 * L)
    pos[:, :, 2] = np.where(zf > 2 * L, 4 * L - zf, zf) - L
    # drift of the stage, the same for every bead
    vx, vy = cfg.drift_um_per_s
    wob = cfg.drift_wobble_um * np.sin(2 * math.pi * times / cfg.drift_wobble_period_s)
    pos[:, :, 0] += vx * times + wob * (0.6 if vx or vy else 0.0)
    pos[:, :, 1] += vy * times + wob * (0.8 if vx or vy else 0.0)
    # periodic box (wraps happen outside the field: margin > spot + step)
    pos[:, :, 0] = np.mod(pos[:, :, 0], box_w) - margin
    pos[:, :, 1] = np.mod(pos[:, :, 1], box_h) - margin
    return pos, times, D, stuck


# ----------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------

def _illumination(cfg: BeadConfig, rng: np.random.Generator) -> np.ndarray:
    h, w = cfg.height_px, cfg.width_px
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    u = (xx - (w - 1) / 2) / (w / 2)
    v = (yy - (h - 1) / 2) / (h / 2)
    cx, cy = rng.uniform(-0.3, 0.3, 2)
    ill = 1.0 - cfg.vignetting * ((u - cx) ** 2 + (v - cy) ** 2) / 2.0
    ang = rng.uniform(0, 2 * math.pi)
    ill *= 1.0 + cfg.gradient * 0.5 * (math.cos(ang) * u + math.sin(ang) * v)
    return ill


def _dust(cfg: BeadConfig, rng: np.random.Generator) -> np.ndarray:
    """Static specks (multiplicative in bright-field, additive ADU in fluorescence)."""
    h, w = cfg.height_px, cfg.width_px
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    out = np.zeros((h, w))
    for _ in range(cfg.n_dust):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        s = rng.uniform(1.0, 6.0)
        a = rng.uniform(0.03, 0.2)
        out += a * np.exp(-0.5 * ((xx - x0) ** 2 + (yy - y0) ** 2) / s ** 2)
    return out


def render(cfg: BeadConfig) -> Recording:
    """Render the recording of ``cfg`` (uint8 frames) and its ground truth."""
    rng = np.random.default_rng(cfg.seed)
    px = cfg.pixel_size_um
    h, w = cfg.height_px, cfg.width_px
    pos, times, D, stuck = _trajectories(cfg, rng)
    n_p = pos.shape[0]
    sub = cfg.n_substeps
    z_levels = np.linspace(-cfg.slab_half_um, cfg.slab_half_um, 41)
    r_tab, table = _profile_table(cfg, z_levels, step_um=min(0.02, px / 5))
    r_max_um = r_tab[-1]
    rad = int(math.ceil(r_max_um / px)) + 1
    ss = 3  # sub-pixel samples per axis
    off = (np.arange(ss) + 0.5) / ss - 0.5
    illum = _illumination(cfg, rng)
    dust = _dust(cfg, rng)
    flick = 1.0 + cfg.flicker * rng.standard_normal(cfg.n_frames)
    frames = np.empty((cfg.n_frames, h, w, 3) if cfg.rgb else (cfg.n_frames, h, w), np.uint8)
    tint = np.asarray(cfg.tint if cfg.rgb else (1.0,), float)
    ax_off = np.arange(-rad, rad + 1)
    rows = []
    for f in range(cfg.n_frames):
        rel = np.zeros((h, w))  # sum of bead profiles (relative units: BF fraction / fluo flux per µm²)
        mid = pos[:, f * sub:(f + 1) * sub, :].mean(axis=1)
        for p in range(n_p):
            xm, ym = mid[p, 0] / px, mid[p, 1] / px  # px, pixel-centre origin
            if xm < -rad or ym < -rad or xm > w + rad or ym > h + rad:
                continue
            ic, jc = int(round(ym)), int(round(xm))
            ys = ic + ax_off
            xs = jc + ax_off
            ky = (ys >= 0) & (ys < h)
            kx = (xs >= 0) & (xs < w)
            if not ky.any() or not kx.any():
                continue
            ys, xs = ys[ky], xs[kx]
            patch = np.zeros((ys.size, xs.size))
            for s in range(sub):
                x_um, y_um, z_um = pos[p, f * sub + s]
                zi = int(np.clip(np.rint((z_um + cfg.slab_half_um) / (2 * cfg.slab_half_um) * 40), 0, 40))
                dy = (ys[:, None, None, None] + off[None, None, :, None]) * px - y_um
                dx = (xs[None, :, None, None] + off[None, None, None, :]) * px - x_um
                r = np.sqrt(dy * dy + dx * dx)
                patch += np.interp(r, r_tab, table[zi], right=0.0).mean(axis=(2, 3))
            rel[np.ix_(ys, xs)] += patch / sub
            rows.append((p, f, xm, ym, mid[p, 2]))
        if cfg.mode == "brightfield":
            expect = 255 * cfg.background_level * illum * flick[f] * (1.0 - dust) * (1.0 + rel)
        else:
            amp = cfg.photons_per_bead_adu * px * px
            if cfg.bleach_tau_s:
                amp *= math.exp(-f / cfg.fps / cfg.bleach_tau_s)
            expect = cfg.fluo_background_adu * illum * flick[f] + 40 * dust + amp * illum * rel
        g = cfg.gain_e_per_adu
        chans = []
        for c in range(tint.size):
            lam = np.clip(expect * tint[c], 0, None) * g
            val = rng.poisson(lam) / g + cfg.read_noise_adu * rng.standard_normal((h, w))
            chans.append(np.clip(np.rint(val), 0, 255).astype(np.uint8))
        frames[f] = np.stack(chans, axis=-1) if cfg.rgb else chans[0]
    truth = pd.DataFrame(rows, columns=["particle", "frame", "x", "y", "z_um"])
    truth["visible"] = (truth.x >= 0) & (truth.x <= w - 1) & (truth.y >= 0) & (truth.y <= h - 1)
    particles = pd.DataFrame({"particle": np.arange(n_p), "diameter_um": cfg.diameter_um, "D_um2_s": D,
                              "stuck": stuck})
    return Recording(cfg, frames, truth, particles)


# ----------------------------------------------------------------------------------------------
# writers
# ----------------------------------------------------------------------------------------------

def _bgr(frame: np.ndarray) -> np.ndarray:
    return frame[..., ::-1] if frame.ndim == 3 else frame


def write_image_folder(rec: Recording, folder: str | Path, ext: str = "jpg", quality: int = 85) -> Path:
    """One image per frame (``frame_00000.jpg`` ...) with OpenCV; JPEG at ``quality`` (4:2:0)."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext.lower() in ("jpg", "jpeg") else []
    for i, fr in enumerate(rec.frames):
        if not cv2.imwrite(str(folder / f"frame_{i:05d}.{ext}"), _bgr(fr), params):
            raise OSError(f"could not write {folder}")
    return folder


def write_avi(rec: Recording, path: str | Path, fourcc: str = "MJPG", quality: int = 85) -> Path:
    """AVI movie with OpenCV (``MJPG`` or ``XVID``), at the recording's frame rate."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = rec.frames.shape[1:3]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(rec.config.fps), (w, h), True)
    if not wr.isOpened():
        raise OSError(f"OpenCV cannot write {fourcc} to {path}")
    wr.set(cv2.VIDEOWRITER_PROP_QUALITY, float(quality))
    for fr in rec.frames:
        wr.write(_bgr(fr) if fr.ndim == 3 else np.repeat(fr[..., None], 3, axis=2))
    wr.release()
    return path


def write_truth(rec: Recording, path: str | Path) -> Path:
    """The ground truth as JSON (diameter, D, acquisition, generator settings) and the positions
    of every bead in every frame as ``<stem>.csv`` next to it (frame, particle, x, y px, z_um)."""
    path = Path(path)
    path.write_text(json.dumps(rec.truth_summary, indent=1))
    rec.truth.to_csv(path.with_suffix(".csv"), index=False, float_format="%.4f")
    return path


# ----------------------------------------------------------------------------------------------
# the cases of the report
# ----------------------------------------------------------------------------------------------

_BF = BeadConfig()
CASES: dict[str, BeadConfig] = {
    # 1 µm beads, bright-field, RGB JPEG, drift — the headline case
    "bf_1um_0.1px": _BF,
    "bf_1um_0.2px": replace(_BF, pixel_size_um=0.2, n_particles=30, seed=1),
    "bf_0.5um_0.1px": replace(_BF, diameter_um=0.5, contrast=0.35, halo=0.25, seed=2),
    "bf_2um_0.3px": replace(_BF, diameter_um=2.0, pixel_size_um=0.3, n_particles=30, fps=15.0,
                            n_frames=300, seed=3),
    "bf_2um_0.1px": replace(_BF, diameter_um=2.0, pixel_size_um=0.1, n_particles=10, width_px=400,
                            height_px=300, seed=4),
    "bf_3um_0.2px": replace(_BF, diameter_um=3.0, pixel_size_um=0.2, n_particles=20, fps=10.0,
                            seed=5),
    "bf_1um_lens": replace(_BF, lens_spot=1.2, contrast=0.6, na=1.2, seed=6),
    "bf_1um_stuck": replace(_BF, stuck_fraction=0.15, seed=7),
    "fl_1um_0.1px": replace(_BF, mode="fluorescence", tint=(0.2, 1.0, 0.3), n_dust=4, seed=8),
    "fl_0.5um_0.2px": replace(_BF, mode="fluorescence", diameter_um=0.5, pixel_size_um=0.2,
                              photons_per_bead_adu=2500.0, tint=(1.0, 0.35, 0.2), seed=9),
}


def main(argv: list[str] | None = None) -> None:
    """``python tests/realistic/recording.py OUT [case ...]``: write the cases (JPEG folder, MJPEG/XVID AVI)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out")
    ap.add_argument("cases", nargs="*", default=list(CASES))
    ap.add_argument("--formats", default="jpg,mjpg", help="comma list of jpg, png, mjpg, xvid")
    ap.add_argument("--quality", type=int, default=85)
    a = ap.parse_args(argv)
    out = Path(a.out)
    for name in a.cases:
        rec = render(CASES[name])
        fmts = a.formats.split(",")
        if "jpg" in fmts:
            write_image_folder(rec, out / name, "jpg", a.quality)
        if "png" in fmts:
            write_image_folder(rec, out / f"{name}_png", "png")
        if "mjpg" in fmts:
            write_avi(rec, out / f"{name}.avi", "MJPG", a.quality)
        if "xvid" in fmts:
            write_avi(rec, out / f"{name}_xvid.avi", "XVID", a.quality)
        write_truth(rec, out / f"{name}.truth.json")
        print(name, f"D={rec.config.diffusion_um2_s:.4g} µm²/s", rec.frames.shape, flush=True)


if __name__ == "__main__":
    main()
