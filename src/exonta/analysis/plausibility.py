"""Plausibility of the acquisition parameters, judged from the video itself.

A wrong pixel size is the commonest input error of a sizing run (the camera's pixel instead of
the pixel at the sample, or a slipped decimal) and the costliest: a diffusion coefficient scales
with the square of the pixel size, so a pixel size 10× too small reads sizes 100× too large, and
nothing else in the result looks wrong. The video itself gives it away:

* **Spots narrower than optics allow, or far wider than optics and particles explain**
  (:func:`spot_width_warnings`). A point source imaged by a
  light microscope is a spot of Gaussian standard deviation ``σ ≈ 0.21·λ/NA`` at best (Zhang,
  Zerubia & Olivo-Marin, Appl. Opt. 46:1819, 2007), at least 0.057 µm for 405 nm light through an
  oil objective of NA 1.49. A video whose spots measure less than :data:`MIN_SPOT_SIGMA_UM` at its
  pixel size has a pixel size that is too small (nanometres per pixel given as micrometres, or
  the camera's pixel divided twice by the magnification). Conversely, a focused spot is at most
  ~1.4 µm wide (σ; NA 0.1 in red light) or about the particle's own size: a spot far wider around
  particles that read far smaller means a pixel size too large.
* **Links that cannot form** (:func:`linking_radius_warnings`). The linker's search radius comes
  from physics (the smallest diameter of interest at the frame interval; ``exonta.track.link``)
  in µm, and reaches the frame in pixels through the pixel size. When the pixel size is too large
  (or the frame rate given too high), the radius shrinks below the spots' real motion between
  frames, the tracks break after a position or two and no track reaches the minimum length. The
  nearest spot of the frame before is then, for most spots, farther than the radius.

And checks of the sample and its tracks rather than the parameters:

* **Tracks made of noise** (:func:`noise_track_warnings`). At the automatic threshold (3.5 noise
  sigmas) a video of noise alone has noise maxima in every frame, and the linker's radius, set for
  the fastest particle of interest, chains some of them into tracks of the minimum length: a
  generated bright-field blank (no particle) gave 47 such tracks and "D50 28 nm". Their spots are
  a sample of the noise maxima, whose signal-to-noise ratio falls off steeply above the threshold:
  the median over the tracks of each track's median SNR was 3.7 at a threshold of 3.5 σ (1.06×).
  Real particles are tracked because they are seen: 1.30× for simulated 60 nm beads, the dimmest
  population simulated, 2.3–3.6× for the bundled NTA samples and the generated micron beads. Below
  :data:`NOISE_TRACK_SNR_RATIO` × the threshold the sizes are said to describe noise.
* **Sizes at the linking limit, ambiguous links** (:func:`linking_limit_warnings`). The search radius
  follows particles down to a diameter (:func:`exonta.track.link.followed_diameter_nm`); a D50 at that diameter is
  set by the linker, not the sample: smaller particles' tracks break there, and tracks that join noise
  or another particle read just as small. Independently, when more than :data:`CLUTTER_INDEX`
  detections lie on average within the radius (:func:`clutter_index`), a particle missed for a frame
  is likely to be continued with another spot and the sizes read too small.

They return warnings (strings) for :mod:`exonta.pipeline`; they change no number.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .distribution import MIN_TRACKS_FOR_STATISTICS

__all__ = ["CLUTTER_INDEX", "LINKING_LIMIT_RATIO", "MAX_FOCUSED_SIGMA_UM", "MIN_SPOT_SIGMA_UM", "NOISE_TRACK_SNR_RATIO",
           "PERSISTENCE_RATIO", "SPOT_SIZE_RATIO", "clutter_index", "frame_to_frame_distances_px",
           "linking_limit_warnings", "linking_radius_warnings", "median_track_snr", "noise_track_warnings",
           "spot_width_warnings"]

#: Smallest plausible Gaussian σ of a spot, µm: 0.21·λ/NA for λ = 405 nm and NA = 1.49 is 0.057 µm.
MIN_SPOT_SIGMA_UM = 0.05
#: Largest plausible Gaussian σ of a focused spot of a sub-resolution particle, µm: 0.21·λ/NA for λ = 0.65 µm
#: and NA = 0.1 is 1.37 µm.
MAX_FOCUSED_SIGMA_UM = 1.4
#: A spot wider than the optics allow is implausible only when it is also this many times the median diameter
#: (the image of a particle larger than the resolution is about its own size: σ = d/4 for a uniform disc).
SPOT_SIZE_RATIO = 2.0
#: Frame pairs sampled for the frame-to-frame distances, at most.
MAX_FRAME_PAIRS = 50
#: Fewest frame-to-frame distances for a judgement.
MIN_DISTANCES = 50
#: The spots persist when their frame-to-frame distance is below this fraction of that of unrelated positions.
PERSISTENCE_RATIO = 0.5

#: Tracks whose spots' median SNR (median over the tracks of each track's median) is below this multiple of the
#: detection threshold (in noise sigmas) are taken for chains of noise maxima (module docstring).
NOISE_TRACK_SNR_RATIO = 1.15

#: A D50 at most this multiple of the smallest diameter the search radius follows
#: (:func:`exonta.track.link.followed_diameter_nm`) sits at the linking limit (:func:`linking_limit_warnings`). The simulated
#: 60 nm beads, the smallest simulated sample, read D50 1.2–1.3× the default 50 nm.
LINKING_LIMIT_RATIO = 1.1
#: More detections than this, on average, within the search radius of a detection (:func:`clutter_index`) make
#: the links ambiguous (:func:`linking_limit_warnings`). The simulated NTA cases read 0.08–0.57 (100 nm at 37 °C
#: the most), the 20 generated microscope recordings 0.01–0.24; the dim 100× fluorescence videos of 200 nm beads
#: whose sizes collapsed to 50–62 nm 0.75–3.4.
CLUTTER_INDEX = 1.5

_PIXEL_HINT = ("µm per pixel at the sample: the camera's pixel over the total magnification, e.g. 6.5 µm / 40 = "
               "0.1625")


def spot_width_warnings(spot_sigma_px: float | None, pixel_size_um: float, d50_nm: float | None = None) -> list[str]:
    """A warning when the spots' width contradicts the pixel size (see the module docstring).

    * narrower than :data:`MIN_SPOT_SIGMA_UM`: no light microscope images a point that sharply, the
      pixel size is too small;
    * wider than :data:`MAX_FOCUSED_SIGMA_UM` and more than :data:`SPOT_SIZE_RATIO` × the particles'
      median diameter ``d50_nm``: the in-focus image of a particle smaller than the optics resolve is
      the optics' spot (σ ≈ 0.21·λ/NA ≤ 1.4 µm for any objective of NA ≥ 0.1 in visible light), and
      that of a larger one is about its own size (a disc of diameter d has σ = d/4); a spot this wide
      around particles this small means the pixel size is too large (the sizes then read too small by
      its square).

    Parameters
    ----------
    spot_sigma_px : float or None
        Gaussian σ of the video's in-focus spots, px (the measured spot width); None: not judged.
    pixel_size_um : float
    d50_nm : float, optional
        Median diameter of the size distribution; None or NaN: the upper bound is not judged.

    Returns
    -------
    list of str
        Empty, or one warning naming the spot width in µm and the pixel size.
    """
    if spot_sigma_px is None or not math.isfinite(spot_sigma_px) or spot_sigma_px <= 0:
        return []
    sigma_um = float(spot_sigma_px) * float(pixel_size_um)
    if sigma_um < MIN_SPOT_SIGMA_UM:
        return [f"the spots are narrower than a light microscope can make them: σ {sigma_um * 1000:.0f} nm "
                f"({spot_sigma_px:.2g} px at {pixel_size_um:g} µm/px), against at least ~57 nm (405 nm light at NA "
                f"1.49; σ ≈ 0.21·λ/NA). The pixel size is probably too small, and the sizes scale with its square "
                f"(they read too large): check --pixel-size-um ({_PIXEL_HINT})"]
    d50_um = None if d50_nm is None or not math.isfinite(d50_nm) or d50_nm <= 0 else 1e-3 * float(d50_nm)
    if d50_um is not None and sigma_um > MAX_FOCUSED_SIGMA_UM and sigma_um > SPOT_SIZE_RATIO * d50_um:
        return [f"the spots are far wider than the particles and the optics explain: σ {sigma_um:.2g} µm "
                f"({spot_sigma_px:.2g} px at {pixel_size_um:g} µm/px) around particles of median diameter "
                f"{d50_nm:.0f} nm, where a focused spot is at most ~{MAX_FOCUSED_SIGMA_UM:g} µm (NA 0.1) or about the "
                f"particle's own size. "
                f"The pixel size is probably too large, and the sizes scale with its square (they read too small): "
                f"check --pixel-size-um ({_PIXEL_HINT})"]
    return []


def frame_to_frame_distances_px(features: pd.DataFrame, max_pairs: int = MAX_FRAME_PAIRS) -> np.ndarray:
    """Distance from each spot to the nearest spot of the frame before, px, over up to ``max_pairs`` pairs of
    consecutive frames spread over the video (frames with spots in both;
    :func:`exonta.detect.repeats.nearest_previous_distances_px`)."""
    from ..detect.repeats import nearest_previous_distances_px

    if len(features) == 0:
        return np.zeros(0)
    frames = np.unique(features["frame"].to_numpy(np.int64))
    seconds = frames[np.isin(frames - 1, frames)]
    if seconds.size == 0:
        return np.zeros(0)
    pick = seconds[np.unique(np.linspace(0, seconds.size - 1, min(int(max_pairs), seconds.size)).round().astype(int))]
    return np.concatenate(nearest_previous_distances_px(features, pick))


def linking_radius_warnings(features: pd.DataFrame, search_radius_px: float, pixel_size_um: float,
                            fps: float, n_valid_tracks: int, min_track_length: int,
                            frame_shape: tuple[int, int], enough_tracks: bool | None = None) -> list[str]:
    """A warning when the linking radius is shorter than the spots' motion between frames (see the module docstring).

    Judged only when the tracks that reached the minimum length are too few for size statistics
    (:func:`exonta.analysis.distribution.enough_for_statistics`): then the median distance from
    a spot to the nearest spot of the frame before is compared with the search radius. The spots must
    also persist from frame to frame: that median must be below :data:`PERSISTENCE_RATIO` × the one
    of unrelated positions, ``0.5·sqrt(area / spots per frame)`` (nearest neighbour of a uniform
    random field; Clark & Evans, Ecology 35:445, 1954). Noise maxima (a buffer blank) are
    unrelated from frame to frame and are not judged: no pixel size links them.

    Parameters
    ----------
    features : DataFrame
        Detections with ``frame, x, y``.
    search_radius_px : float
        The linker's one-frame search radius, px.
    pixel_size_um, fps : float
        As used (named in the warning).
    n_valid_tracks, min_track_length : int
    frame_shape : (int, int)
        Height and width of the frames, px.
    enough_tracks : bool, optional
        Whether the valid tracks suffice for size statistics; by default whether there are
        :data:`exonta.analysis.distribution.MIN_TRACKS_FOR_STATISTICS` of them (a few long tracks suffice
        too: pass :func:`exonta.analysis.distribution.enough_for_statistics` of them).

    Returns
    -------
    list of str
    """
    if enough_tracks is None:
        enough_tracks = n_valid_tracks >= MIN_TRACKS_FOR_STATISTICS
    if enough_tracks:
        return []
    d = frame_to_frame_distances_px(features)
    if d.size < MIN_DISTANCES:
        return []
    median = float(np.median(d))
    per_frame = len(features) / max(int(features["frame"].nunique()), 1)
    unrelated = 0.5 * math.sqrt(float(frame_shape[0]) * float(frame_shape[1]) / max(per_frame, 1e-9))
    if not (median > search_radius_px and median < PERSISTENCE_RATIO * unrelated):
        return []
    share = float(np.mean(d > search_radius_px))
    return [f"the tracks break: {100 * share:.0f} % of the spots have no spot of the frame before within the linking "
            f"radius of {search_radius_px:.1f} px ({search_radius_px * pixel_size_um:.2g} µm at {pixel_size_um:g} "
            f"µm/px and {fps:g} frames/s; the nearest one is a median {median:.1f} px away), so {n_valid_tracks} "
            f"track(s) reached {min_track_length} positions. The pixel size is probably too large or the frame rate "
            f"too high: check --pixel-size-um ({_PIXEL_HINT}) and --fps; to link faster motion on purpose, set "
            "[link] search_range_um"]


def median_track_snr(tracks: pd.DataFrame, particles: pd.DataFrame) -> float:
    """Median over the valid tracks of each track's median spot SNR (``snr`` of the detector, noise sigmas).

    NaN without an ``snr`` column or without valid tracks (``particles["valid"]``).
    """
    from .diffusion import valid_track_rows

    if "snr" not in tracks:
        return math.nan
    sub = tracks.loc[valid_track_rows(tracks, particles), ["particle", "snr"]]
    if not len(sub):
        return math.nan
    return float(sub.groupby("particle")["snr"].median().median())


def noise_track_warnings(track_snr: float, threshold_snr: float | None, n_valid_tracks: int,
                         d50_nm: float | None) -> list[str]:
    """A warning when the sized tracks are made of spots barely above the detection threshold (noise maxima).

    Parameters
    ----------
    track_snr : float
        :func:`median_track_snr` of the video.
    threshold_snr : float or None
        The automatic detection threshold used, noise sigmas; None for a threshold given in filtered
        intensity (not judged).
    n_valid_tracks : int
    d50_nm : float or None
        The reported D50 (named in the warning); NaN/None when there are no size statistics (not judged:
        the distribution's note then says that a buffer blank has none).

    Returns
    -------
    list of str
    """
    if threshold_snr is None or not (threshold_snr > 0) or not math.isfinite(track_snr) or n_valid_tracks <= 0:
        return []
    if d50_nm is None or not math.isfinite(d50_nm):  # no sizes: the no-statistics note names a blank already
        return []
    if track_snr >= NOISE_TRACK_SNR_RATIO * threshold_snr:
        return []
    sizes = f"; the sizes (D50 {d50_nm:.3g} nm) describe noise, not particles"
    return [f"the {n_valid_tracks} sized tracks are made of spots barely above the detection threshold (median "
            f"{track_snr:.2g} noise sigmas at a threshold of {threshold_snr:g}): such tracks are chains of noise "
            f"maxima, as in a buffer blank{sizes}. If the sample has particles, they are too dim for this video: "
            "raise the laser power or camera gain"]


def clutter_index(detections_per_frame: float, frame_area_px: float, search_radius_px: float) -> float:
    """Mean number of detections within the linking radius of a point of the frame: detections per frame per
    pixel × π·radius². Above about 1 a particle missed for a frame (or gone) is likely to be continued with
    another spot or a noise maximum (Crocker & Grier, J. Colloid Interface Sci. 179:298, 1996: linking needs
    steps well below the spacing of the particles)."""
    if not (frame_area_px > 0) or not (search_radius_px > 0):
        return math.nan
    return float(detections_per_frame) / float(frame_area_px) * math.pi * float(search_radius_px) ** 2


def linking_limit_warnings(d50_nm: float | None, limit_nm: float, noise_tracks: bool = False,
                           clutter: float = math.nan, search_radius_um: float = math.nan) -> list[str]:
    """A warning when the size distribution sits at the smallest diameter the linking radius can follow, or when
    the detections are so dense for the radius that the links are ambiguous.

    Smaller particles step farther between frames than the radius allows, so their tracks break: the sizes
    there are cut off. Tracks that link noise maxima or compression artefacts instead of one particle (a
    particle missed in some frames, a dim video with many noise detections) take steps as long as the radius
    allows and read just as small. Either way a D50 within :data:`LINKING_LIMIT_RATIO` of the limit is not a
    measurement of the sample. On a generated 100× fluorescence MJPEG video of 200 nm beads (dim, 47 detections
    per frame for ~25 beads in view) exonta read D50 52 nm with the 50 nm default; the bundled and simulated
    samples, 60 nm beads included, stay above 1.2× the limit. Smaller scenes of that video read 50–62 nm: those
    above the limit had a :func:`clutter_index` of 2.9–3.4, which is warned about on its own when above
    :data:`CLUTTER_INDEX`.

    Parameters
    ----------
    d50_nm : float or None
        The reported D50; None/NaN when there are no size statistics (not judged).
    limit_nm : float
        :func:`exonta.track.link.followed_diameter_nm` of the radius used.
    noise_tracks : bool
        The noise-track warning (:func:`noise_track_warnings`) was given: this one is then left out.
    clutter : float
        :func:`clutter_index` with the radius used (NaN: not judged).
    search_radius_um : float
        The radius used, named in the clutter warning.

    Returns
    -------
    list of str
    """
    if noise_tracks or d50_nm is None or not math.isfinite(d50_nm) or not (limit_nm > 0):
        return []
    if d50_nm > LINKING_LIMIT_RATIO * limit_nm:
        if not clutter > CLUTTER_INDEX:
            return []
        return [f"the links are ambiguous: on average {clutter:.1f} detections lie within the search radius "
                f"({search_radius_um:.2g} µm) of each one, so a track whose particle is missed for a frame or two is "
                f"continued with another spot or a noise maximum, and such tracks read too small (D50 "
                f"{d50_nm:.3g} nm). Raise --threshold-snr if many detections are noise, set [link] memory_frames = "
                "0 (no gap closing), raise [link] min_diameter_nm if the particles are larger (a smaller radius), "
                "or dilute a crowded sample"]
    return [f"the sizes sit at the smallest diameter the linking follows (D50 {d50_nm:.3g} nm; the search radius "
            f"follows particles down to {limit_nm:.3g} nm): smaller particles move farther between frames than the "
            "radius allows, and tracks that join noise or compression artefacts (particles missed in some frames, "
            "a dim or heavily compressed video) look just as small. If the sample holds particles that small, lower "
            "[link] min_diameter_nm; otherwise check the tracks (napari) and raise --threshold-snr, or record a "
            "brighter, less compressed video"]
