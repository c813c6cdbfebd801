"""Spot detection and sub-pixel localisation: the public wrappers.

:func:`locate` handles one frame (fast enough for an interactive preview),
:func:`locate_frames` streams a whole video in chunks, frames of a chunk in
parallel. Both validate their input, allocate the outputs, call the numba
kernels of :mod:`exonta.detect._kernels` and build the features table.

Algorithm (per frame)
---------------------
1. ``W = sign·(frame − background)``; background = static temporal median
   (:func:`~exonta.detect.background.estimate_background`), a rolling one, or
   none; ``sign = −1`` for dark particles (``invert``).
2. Matched filter at the PSF width: ``F = G_σ * W − box_mean(W)`` (separable
   Gaussian of σ = ``psf_sigma_px`` minus the mean over a (2⌈4σ⌉+1)² box),
   which also removes smooth illumination left in ``W``.
3. Noise ``σ_F`` = iteratively 3σ-clipped RMS of ``F`` per 16×16-px tile (sampled
   on every other row: the filter correlates neighbours)
   (robust to the sparse spots; per tile because shot noise grows with the
   illumination, e.g. under a stray-light blob), bilinearly interpolated
   between tile centres; threshold
   ``threshold_snr·σ_F(x, y)`` unless a manual ``threshold`` (F units) is given.
   Measured on every frame, so the threshold follows what changes from frame
   to frame (lamp flicker, the haze of out-of-focus particles, residuals of
   a moving background). Tiles are at least ``10·psf_sigma_px`` wide, so that
   a large spot (a micron bead) is a small part of its tile and does not
   inflate the noise it is compared with, and a tile holds enough independent
   noise samples.
4. Candidates: pixels above threshold that are the maximum of ``F`` within
   ``min_separation_px`` (ties broken in raster order), at least ``edge_px``
   from the borders.
5. Localisation on ``W`` in a (2⌈2.5σ⌉+1)² ROI (at least 7×7): ``"gaussian"`` = least-squares
   fit of a pixel-integrated 2-D Gaussian + offset (+ a tilted plane when no
   background was subtracted, for illumination gradients), Levenberg–Marquardt,
   ROI pixels closer to another candidate masked out (so a neighbour does not
   pull the fit); falls back to the centroid if the fit fails. ``"radial"`` =
   radial-symmetry centre (Parthasarathy 2012), ``"centroid"`` =
   intensity-weighted centroid; both with aperture photometry above the
   annulus-median local background.

Two spots are resolved when they are more than ≈ 2√2·σ apart (the matched
filter widens each to σ√2); a dim spot within ~8 px of a much brighter one
can be missed (the local-mean term lowers its filtered peak).

Columns of the features table
-----------------------------
``frame`` (int64, :func:`locate_frames` only), ``x``, ``y`` (px; x = column,
y = row, centre of the top-left pixel = (0, 0)), ``mass`` (integrated intensity
above the local background), ``signal`` (peak height above the local
background: N/(2πσ²) for the Gaussian fit), ``size_px`` (Gaussian σ, px),
``background`` (local background level in the raw intensity units),
``snr`` (peak of the matched-filtered frame over its local noise σ_F: every
spot has ``snr > threshold_snr`` when the threshold is automatic).

References
----------
Mortensen, Churchman, Spudich & Flyvbjerg, Nat. Methods 7:377 (2010).
Smith, Joseph, Rieger & Lidke, Nat. Methods 7:373 (2010).
Parthasarathy, Nat. Methods 9:724 (2012).
Crocker & Grier, J. Colloid Interface Sci. 179:298 (1996) (band-pass + local maxima).
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable

import numba
import numpy as np
import pandas as pd
from pydantic import ValidationError

from .._threads import prefer_passive_omp_wait
from ..config import DetectParams, format_validation_error
from ..errors import ExontaCancelled, ExontaInputError
from . import _kernels as K
from .background import background_from_indices, background_quantile, frame_source, sample_indices
from .overlay import bright_clip_level, drop_in_regions, fill_regions, noise_sigma_outside

__all__ = ["locate", "locate_frames", "COLUMNS"]

COLUMNS = ("frame",) + K.FIELDS
_NATIVE = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_MODES = {"gaussian": K.MODE_GAUSSIAN, "radial": K.MODE_RADIAL, "centroid": K.MODE_CENTROID}
_CAP0 = 4096
_NO_BG = np.zeros((0, 0), np.float32)
# Smallest side of the tiles of the local noise estimate, px (at least 10 × the PSF sigma).
NOISE_TILE_PX = 16
# A temporal background needs a few frames, or it removes the particles themselves.
MIN_BACKGROUND_FRAMES = 10


def _resolve_params(params: DetectParams | None, overrides: dict[str, Any]) -> DetectParams:
    """DetectParams from ``params`` (or defaults) updated by keyword overrides."""
    if params is not None and not isinstance(params, DetectParams):
        if isinstance(params, dict):
            overrides = {**params, **overrides}
            params = None
        else:
            raise ExontaInputError(f"params must be a DetectParams or a dict, got {type(params).__name__}")
    base = params.model_dump() if params is not None else {}
    if not overrides:
        return params if params is not None else DetectParams()
    try:
        return DetectParams(**{**base, **overrides})
    except ValidationError as exc:
        raise ExontaInputError(format_validation_error(exc, "detection parameters")) from None


def _disc_offsets(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (dy, dx) ≠ 0 with dy² + dx² ≤ radius², nearest first."""
    r = int(math.floor(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    d2 = dy * dy + dx * dx
    keep = (d2 <= radius * radius + 1e-9) & (d2 > 0)
    dy, dx, d2 = dy[keep], dx[keep], d2[keep]
    order = np.argsort(d2, kind="stable")
    return np.ascontiguousarray(dy[order], np.int64), np.ascontiguousarray(dx[order], np.int64)


def gaussian_kernel(sigma_px: float) -> np.ndarray:
    """Normalised 1-D Gaussian (float32, radius ⌈3σ⌉) of the matched filter."""
    r = max(int(math.ceil(3.0 * sigma_px)), 1)
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma_px) ** 2)
    return (g / g.sum()).astype(np.float32)


def derived_sizes(p: DetectParams) -> dict[str, float | int]:
    """The pixel sizes derived from the PSF width (filter box, ROI, separation, edge)."""
    s = p.psf_sigma_px
    return {
        "box_half": max(int(math.ceil(4.0 * s)), 2),
        "roi_half": max(int(math.ceil(2.5 * s)), 3),
        "min_separation_px": float(p.min_separation_px) if p.min_separation_px is not None else 2.5 * s,
        "edge_px": int(p.edge_px) if p.edge_px is not None else int(math.ceil(2.5 * s)),
    }


def search_binning(p: DetectParams) -> int:
    """The binning (1 or 2) of the candidate search for these parameters (``DetectParams.search_binning``).

    An absolute ``threshold`` is a level of the full-resolution filtered frame, so it always searches at
    full resolution.
    """
    return 1 if p.threshold is not None else int(p.search_binning)


def filter_noise_gain(gauss: np.ndarray, box_half: int) -> float:
    """Noise sigma of the matched-filtered frame (Gaussian − box mean, :func:`_kernels._filter_frame`) for
    independent pixel noise of sigma 1: the root sum of squares of the 2-D kernel."""
    g = np.asarray(gauss, float)
    r = g.size // 2
    half = max(r, int(box_half))
    k = np.zeros((2 * half + 1, 2 * half + 1))
    k[half - r:half + r + 1, half - r:half + r + 1] = np.outer(g, g)
    nb = 2 * int(box_half) + 1
    k[half - box_half:half + box_half + 1, half - box_half:half + box_half + 1] -= 1.0 / nb ** 2
    return float(np.sqrt(np.sum(k * k)))


def _settings(p: DetectParams) -> K.Settings:
    d = derived_sizes(p)
    dy, dx = _disc_offsets(d["min_separation_px"])
    # the binned search: the spot summed over 2×2 blocks has (in binned px) σ_b² = (σ² + 1/3)/4 (a 2-px box
    # adds 4/12 px² of variance); every other length is halved, except the side of the noise tiles: the same in
    # binned pixels (twice as wide in the frame) keeps the number of samples per tile, so the clipped noise
    # estimate is as precise (half-size tiles of a dense field were mostly spot, and their noise came out high)
    sigma_b = math.sqrt((p.psf_sigma_px ** 2 + 1.0 / 3.0) / 4.0)
    dy_b, dx_b = _disc_offsets(d["min_separation_px"] / 2.0)
    gauss, gauss_b = gaussian_kernel(p.psf_sigma_px), gaussian_kernel(sigma_b)
    box_half_b = max(int(round(d["box_half"] / 2.0)), 2)
    floor = float(p.noise_floor or 0.0)  # per pixel; a 2×2 sum has twice its sigma
    return K.Settings(
        sign=-1.0 if p.invert else 1.0,
        gauss=gauss,
        box_half=int(d["box_half"]),
        threshold=float(p.threshold) if p.threshold is not None else -1.0,
        threshold_snr=float(p.threshold_snr),
        edge=int(d["edge_px"]),
        sep_dy=dy,
        sep_dx=dx,
        mode=int(_MODES[p.localisation]),
        roi_half=int(d["roi_half"]),
        sigma0=float(p.psf_sigma_px),
        noise_tile=max(int(NOISE_TILE_PX), int(math.ceil(10.0 * p.psf_sigma_px))),
        saturation=float(p.saturation_level) if p.saturation_level is not None else math.inf,
        merge_sigma=float(p.merge_within_sigma),
        search_bin=search_binning(p),
        gauss_b=gauss_b,
        box_half_b=box_half_b,
        edge_b=int(math.ceil(d["edge_px"] / 2.0)),
        sep_dy_b=dy_b,
        sep_dx_b=dx_b,
        sigma0_b=float(sigma_b),
        min_sigma_f=floor * filter_noise_gain(gauss, int(d["box_half"])) if floor > 0 else 0.0,
        min_sigma_f_b=2.0 * floor * filter_noise_gain(gauss_b, box_half_b) if floor > 0 else 0.0,
    )


def _kernel_frames(chunk: Any) -> np.ndarray:
    """A C-contiguous (k, h, w) array of a dtype the kernels are compiled for."""
    a = np.asarray(chunk)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ExontaInputError(f"frames must be 2-D images, got an array of shape {a.shape}")
    if a.dtype.kind == "c" or a.dtype.kind not in "biuf":
        raise ExontaInputError(f"pixel type {a.dtype} is not supported; give uint8, uint16 or float32 images")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ExontaInputError("the frames contain NaN or infinite pixel values; replace them before detection")
    if a.dtype not in _NATIVE:
        a = a.astype(np.float32)
    return np.ascontiguousarray(a)


def _check_background(background: Any, shape: tuple[int, int]) -> np.ndarray:
    bg = np.asarray(background, dtype=np.float32)
    if bg.shape != tuple(shape):
        raise ExontaInputError(
            f"background has shape {bg.shape} but the frames are {tuple(shape)}; "
            "estimate it from the same video with estimate_background()")
    if not np.all(np.isfinite(bg)):
        raise ExontaInputError("background contains NaN or infinite values")
    return np.ascontiguousarray(bg)


class _Workspace:
    """Reusable per-worker float32 scratch images (allocation + page faults of
    fresh (h, w) images cost as much as filtering a frame)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf: np.ndarray | None = None

    def get(self, n_workers: int, shape: tuple[int, int]) -> tuple[np.ndarray, bool]:
        """Scratch (n_workers, 2, h, w); the flag says whether it must be released."""
        if not self._lock.acquire(blocking=False):  # in use by another thread: private copy
            return np.empty((n_workers, 2) + tuple(shape), np.float32), False
        b = self._buf
        if b is None or b.shape[0] < n_workers or b.shape[2:] != tuple(shape):
            b = self._buf = np.empty((n_workers, 2) + tuple(shape), np.float32)
        return b[:n_workers], True

    def release(self) -> None:
        self._lock.release()

    def clear(self) -> None:
        self._buf = None


_WORKSPACE = _Workspace()


def _frames_max(frames: np.ndarray) -> float:
    """Largest absolute pixel value of a stack."""
    return float(np.abs(frames).max()) if frames.dtype.kind == "f" else float(frames.max())


def _floor(frames: np.ndarray, bg: np.ndarray, frames_max: float | None = None) -> float:
    """Rounding floor of the threshold on the filtered frame: 1e-5 of the
    largest working-frame value, so that a flat frame (filtered to float32
    rounding noise) gives no spot. ``frames_max`` = :func:`_frames_max` of
    ``frames`` when the caller has it."""
    fmax = _frames_max(frames) if frames_max is None else frames_max
    bmax = float(np.abs(bg).max()) if bg.size else 0.0
    return max(1e-5 * (fmax + bmax), 1e-30)


def _run_chunk(frames: np.ndarray, bg: np.ndarray, s: K.Settings,
               frames_max: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Kernel call with a capacity retry; returns the spots (m, N_FIELDS) and the counts per frame."""
    clip = None
    if frames.dtype.kind == "u" and s.sign > 0:  # censor clipped pixels of bright spots in the fits
        clip = bright_clip_level(frames.dtype, s.saturation if math.isfinite(s.saturation) else None)
    s = s._replace(saturation=math.inf if clip is None else clip)
    k = frames.shape[0]
    if k == 0:
        return np.empty((0, K.N_FIELDS)), np.zeros(0, np.int64)
    floor = _floor(frames, bg, frames_max)
    cap = _CAP0
    prefer_passive_omp_wait()  # before numba's thread pool starts (get_num_threads starts it)
    nw = max(1, min(numba.get_num_threads(), k))
    h, w = frames.shape[1:]
    scratch, owned = _WORKSPACE.get(nw, (h, w))
    try:
        while True:
            out = np.empty((k, cap, K.N_FIELDS), np.float64)
            counts = np.zeros(k, np.int64)
            if k == 1:  # one frame (live preview): no thread-pool launch
                grid = np.empty(K._grid_shape(h, w, s))
                counts[0] = K._process_frame(frames[0], bg, s, floor, grid, True, scratch[0, 0], scratch[0, 1],
                                             np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap), out[0])
            else:
                K._locate_chunk(frames, bg, s, floor, scratch, out, counts)
            need = int(counts.max())
            if need <= cap:
                break
            cap = need
    finally:
        if owned:
            _WORKSPACE.release()
    data = np.concatenate([out[i, :counts[i]] for i in range(k)])
    return data, counts


def _table(per_chunk: list[np.ndarray], frame_idx: list[np.ndarray], with_frame: bool) -> pd.DataFrame:
    data = np.concatenate(per_chunk) if per_chunk else np.empty((0, K.N_FIELDS))
    cols: dict[str, np.ndarray] = {}
    if with_frame:
        cols["frame"] = (np.concatenate(frame_idx) if frame_idx else np.empty(0)).astype(np.int64)
    for j, name in enumerate(K.FIELDS):
        cols[name] = np.ascontiguousarray(data[:, j], dtype=np.float64)
    return pd.DataFrame(cols)


def _prefetched(chunks: Any, changes: Any = None):
    """Yield ``(first, kernel-ready frames, their largest absolute value)`` from a chunk iterator,
    reading (and scanning) the next chunk in a background thread while the caller processes the
    current one.

    Reading and converting a chunk (file I/O, decoding) then overlaps the detection kernels, whose
    threads release the GIL. At most one chunk is read ahead; the iterator is only ever advanced by
    one thread at a time and is closed (after any read in flight has finished) when the consumer
    stops early, e.g. on cancellation or an error. ``changes`` (a
    :class:`~exonta.detect.repeats.FrameChanges`) gets every chunk as it is read.
    """
    from concurrent.futures import ThreadPoolExecutor

    def fetch():
        try:
            first, chunk = next(chunks)
        except StopIteration:
            return None
        frames = _kernel_frames(chunk)
        if changes is not None:
            changes.add(first, frames)
        return first, frames, _frames_max(frames) if frames.size else 0.0

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="exonta-read") as pool:
        pending = pool.submit(fetch)
        try:
            while True:
                item = pending.result()
                if item is None:
                    return
                pending = pool.submit(fetch)
                yield item
        finally:
            try:
                pending.result()  # let a read in flight finish before the iterator is closed
            except BaseException:
                pass
            close = getattr(chunks, "close", None)
            if close is not None:
                close()


def load_kernels(dtype: Any) -> None:
    """Load the compiled detection kernels for frames of ``dtype`` without running them.

    The first detection in a process otherwise spends ~0.5 s loading the kernels from numba's
    on-disk cache (or compiling them once after an install). :func:`exonta.pipeline.prepare` calls
    this in a background thread, so that the loading overlaps the reading of the configuration and
    the spot-width measurement. The signatures are those :func:`locate_frames` and the background
    estimate use (C-contiguous arrays of the native frame type).
    """
    from . import background as B

    prefer_passive_omp_wait()  # loading a parallel kernel starts numba's thread pool
    dt = np.dtype(dtype)
    if dt not in _NATIVE:
        dt = np.dtype(np.float32)
    typeof = numba.typeof
    s = _settings(DetectParams())
    frames = np.zeros((2, 8, 8), dt)
    scratch = np.zeros((1, 2, 8, 8), np.float32)
    out = np.zeros((2, 4, K.N_FIELDS))
    if dt.kind == "u":  # the static background (temporal quantile) comes first in a run
        B._order_stat_int_kernel.compile((typeof(frames), typeof(8), typeof(8), typeof(8), typeof(scratch[0, 0])))
    K._locate_chunk.compile(tuple(typeof(a) for a in (frames, _NO_BG, s, 1.0, scratch, out,
                                                      np.zeros(2, np.int64))))


def _blank_regions(frames: np.ndarray, bg: np.ndarray, boxes, first: int,
                   sigma: float | None = None) -> tuple[np.ndarray, float]:
    """``frames`` with ``boxes`` filled with the background (``bg``, or the first frame's median without
    one) plus noise of ``sigma`` (measured outside the boxes on the first frame when None); returns the
    frames and the sigma used (:func:`exonta.detect.overlay.fill_regions`)."""
    level = bg if bg.size else float(np.median(frames[0]))
    if sigma is None:
        sigma = noise_sigma_outside(frames[0], level, boxes)
    return fill_regions(frames, boxes, level, sigma, first), sigma


def locate(frame: Any, params: DetectParams | None = None, *, background: Any = None,
           **kwargs: Any) -> pd.DataFrame:
    """Detect and localise the spots of one frame.

    Parameters
    ----------
    frame : ndarray (h, w)
        uint8, uint16 or float image (other integer types are converted to
        float32).
    params : DetectParams, optional
        Detection parameters (defaults if omitted).
    background : ndarray (h, w), optional
        Background in raw intensity units, e.g. from
        :func:`~exonta.detect.estimate_background`. Without it no background
        is subtracted (one frame has no temporal background); the band-pass
        and the per-spot offset still handle a smooth one.
    **kwargs
        Overrides of :class:`~exonta.config.DetectParams` fields
        (``psf_sigma_px=2, threshold_snr=6, localisation="radial"`` ...).

    Returns
    -------
    pandas.DataFrame
        Columns ``x, y, mass, signal, size_px, background, snr`` (see module
        docstring), one row per spot.

    Raises
    ------
    ExontaInputError
        Bad parameters, frame or background.
    """
    p = _resolve_params(params, kwargs)
    a = np.asarray(frame)
    if a.ndim != 2:
        raise ExontaInputError(f"locate() takes one 2-D frame, got an array of shape {a.shape}; "
                               "use locate_frames() for a stack")
    if a.size == 0:
        raise ExontaInputError("the frame is empty")
    frames = _kernel_frames(a)
    bg = _NO_BG if background is None else _check_background(background, a.shape)
    if p.exclude_regions:
        frames, _ = _blank_regions(frames, bg, p.exclude_regions, 0)
    data, _ = _run_chunk(frames, bg, _settings(p))
    return drop_in_regions(_table([data], [], with_frame=False), p.exclude_regions)


def locate_frames(frames_or_video: Any, params: DetectParams | None = None,
                  progress: Callable[[int, int, str], Any] | None = None, background: Any = None,
                  frame_changes: Any = None, info: dict | None = None, **kwargs: Any) -> pd.DataFrame:
    """Detect and localise the spots of every frame of a stack or video.

    Frames are streamed in chunks of ``chunk_frames`` (never the whole video
    in memory); the frames of a chunk are processed in parallel (numba
    ``prange``, all configured numba threads).

    Parameters
    ----------
    frames_or_video : ndarray (n, h, w) or Video
        A frame stack, or any object with ``iter_chunks(chunk_frames, start,
        stop)`` yielding ``(first_index, ndarray (k, h, w))``, ``n_frames``,
        ``frame_shape`` and ``read(i)`` (:class:`exonta.io` Video).
    params : DetectParams, optional
    progress : callable, optional
        ``progress(done_frames, total_frames, "detect")`` after every chunk;
        returning ``False`` cancels (:class:`~exonta.errors.ExontaCancelled`).
    background : ndarray (h, w), optional
        Background in raw units; overrides ``params.background``. Otherwise
        ``"static"`` = temporal quantile (``background_quantile``) of
        ``background_frames`` frames sampled over the video, ``"rolling"`` =
        the same of up to
        ``background_frames`` frames sampled within ±``background_frames`` of
        each chunk (follows slow illumination changes), ``"none"``. With fewer
        than 10 frames no temporal background is used.
    frame_changes : FrameChanges, optional
        Filled with each frame's change from the frame before, as the frames
        are read (:mod:`exonta.detect.repeats`: repeated frames).
    info : dict, optional
        Receives ``"background"``: the background subtracted from every frame (None for
        ``"none"`` and ``"rolling"``), so that another detection can use the same one.
    **kwargs
        Overrides of :class:`~exonta.config.DetectParams` fields.

    Returns
    -------
    pandas.DataFrame
        Columns ``frame, x, y, mass, signal, size_px, background, snr``,
        sorted by frame. Spots inside ``params.exclude_regions`` are left
        out (:func:`exonta.detect.overlay.drop_in_regions`); finding burned-in
        overlays (``exclude_overlays``) is a step of :mod:`exonta.pipeline`.

    Raises
    ------
    ExontaInputError
        Bad parameters, frames or background.
    ExontaCancelled
        The progress callback returned False.
    """
    p = _resolve_params(params, kwargs)
    src = frame_source(frames_or_video)
    n = int(src.n_frames)
    h, w = (int(v) for v in src.frame_shape)
    s = _settings(p)
    mode = p.background
    if background is not None:
        bg = _check_background(background, (h, w))
        mode = "given"
    elif mode == "none" or n < MIN_BACKGROUND_FRAMES:
        bg = _NO_BG
        mode = "none"
    elif mode == "static":
        bg = background_from_indices(src, sample_indices(0, n, p.background_frames), background_quantile(p))
    else:
        bg = _NO_BG  # rolling: per chunk
    if info is not None:
        info["background"] = bg if mode in ("static", "given") else None

    def report(done: int) -> None:
        if progress is not None and progress(done, n, "detect") is False:
            raise ExontaCancelled("spot detection cancelled")

    report(0)
    per_chunk: list[np.ndarray] = []
    frame_idx: list[np.ndarray] = []
    done = 0
    fill_sigma = None
    for first, frames, frames_max in _prefetched(src.iter_chunks(p.chunk_frames), frame_changes):
        if frames.shape[1:] != (h, w):
            raise ExontaInputError(f"frame shape changed inside the video: {frames.shape[1:]} vs {(h, w)}")
        k = frames.shape[0]
        if mode == "rolling":
            mid = first + k // 2
            lo = max(0, mid - p.background_frames)
            hi = min(n, mid + p.background_frames)
            bg = background_from_indices(src, sample_indices(lo, hi, p.background_frames), background_quantile(p))
        if p.exclude_regions:  # overlays: replaced by background + noise before detection
            frames, fill_sigma = _blank_regions(frames, bg, p.exclude_regions, first, fill_sigma)
            frames_max = _frames_max(frames)
        data, counts = _run_chunk(frames, bg, s, frames_max)
        per_chunk.append(data)
        frame_idx.append(np.repeat(np.arange(first, first + k, dtype=np.int64), counts))
        done += k
        report(done)
    return drop_in_regions(_table(per_chunk, frame_idx, with_frame=True), p.exclude_regions)
