"""napari reader: NTA videos (TIFF/OME-TIFF, the movies exonta decodes, image folders) as lazy image layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exonta.io.readers import MOVIE_EXTENSIONS

from ._lazy import LazyVideoArray, display_contrast_limits

__all__ = ["napari_get_reader", "read_videos", "video_layer_data", "acquisition_metadata", "VIDEO_SUFFIXES"]

VIDEO_SUFFIXES = (".tif", ".tiff") + MOVIE_EXTENSIONS  # napari.yaml's filename_patterns list the same
_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def _accepts(path: str | Path) -> bool:
    p = Path(path)
    if p.is_dir():
        try:
            return any(c.suffix.lower() in _IMAGE_SUFFIXES for c in p.iterdir() if c.is_file())
        except OSError:
            return False
    return p.suffix.lower() in VIDEO_SUFFIXES


def napari_get_reader(path: str | Path | list) -> Any:
    """npe2 reader hook: return :func:`read_videos` if exonta can open ``path``, else ``None``."""
    paths = path if isinstance(path, (list, tuple)) else [path]
    if not paths or not all(_accepts(p) for p in paths):
        return None
    return read_videos


def read_videos(path: str | Path | list) -> list[tuple]:
    """Open one or several videos as napari layer-data tuples (frames read lazily)."""
    paths = path if isinstance(path, (list, tuple)) else [path]
    return [video_layer_data(p) for p in paths]


def _name_of(path: Path) -> str:
    return path.stem if path.suffix else path.name


def video_layer_data(path: str | Path, name: str | None = None) -> tuple:
    """``(data, kwargs, "image")`` for one video.

    ``data`` is a :class:`~napari_exonta._lazy.LazyVideoArray` (no frame is read
    beyond the few used for the contrast limits); ``kwargs["metadata"]["exonta"]``
    holds the path, the file's own metadata and the resolved acquisition (see
    :func:`acquisition_metadata`).

    Raises
    ------
    exonta.errors.ExontaInputError
        When the file cannot be opened as a video.
    """
    from exonta.io import open_video

    p = Path(path)
    video = open_video(p)
    data = LazyVideoArray(video)
    kwargs = {
        "name": name or _name_of(p),
        "metadata": {"exonta": acquisition_metadata(video, p)},
        "contrast_limits": display_contrast_limits(data),
        "colormap": "gray",
    }
    return (data, kwargs, "image")


def _partial_acquisition(path: Path, file_metadata: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """What is known of the acquisition when it cannot be fully resolved (never raises)."""
    from exonta.config import ACQUISITION_FIELDS, load_toml, sidecar_paths

    acq: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for k, v in file_metadata.items():
        if k in ACQUISITION_FIELDS and v is not None:
            acq[k], sources[k] = v, "file"
    try:
        for sc in reversed(sidecar_paths(path)):
            for k, v in dict(load_toml(sc).get("acquisition", {}) or {}).items():
                if k in ACQUISITION_FIELDS and v is not None:
                    acq[k], sources[k] = v, "sidecar"
    except Exception:  # a broken sidecar must not stop the viewer from showing the video
        pass
    return acq, sources


def acquisition_metadata(video: Any, path: str | Path) -> dict[str, Any]:
    """Metadata stored in the image layer: path, file metadata, resolved acquisition.

    Returns
    -------
    dict
        ``path``, ``n_frames``, ``frame_shape``, ``video_metadata`` (the Video's
        own ``metadata``), ``fps`` (frames/s or None), ``acquisition`` (dict of
        the known :class:`exonta.config.Acquisition` fields — complete when the
        file/sidecars define pixel size and frame rate, partial otherwise),
        ``acquisition_complete`` (bool), ``acquisition_sources``, ``detect``
        (sidecar detection parameters when the config resolved), ``invert_measured``
        (True / False: the particles look dark / bright, :func:`exonta.pipeline.measure_polarity`;
        None when undecided or when a sidecar sets ``invert``), ``warnings``.
    """
    from exonta.config import ACQUISITION_FIELDS, load_config
    from exonta.errors import ExontaInputError

    p = Path(path)
    video_md = dict(getattr(video, "metadata", {}) or {})
    file_acq = {k: v for k, v in video_md.items() if k in ACQUISITION_FIELDS}
    out: dict[str, Any] = {
        "path": str(p),
        "n_frames": int(video.shape[0]),
        "frame_shape": [int(video.shape[1]), int(video.shape[2])],
        "video_metadata": video_md,
        "acquisition": {},
        "acquisition_complete": False,
        "acquisition_sources": {},
        "detect": None,
        "warnings": [],
    }
    try:
        cfg, warnings, sources = load_config(video_path=p, file_metadata=file_acq)
    except ExontaInputError as exc:
        acq, sources = _partial_acquisition(p, file_acq)
        out.update(acquisition=acq, acquisition_sources=sources, warnings=[str(exc)])
    else:
        out.update(acquisition=cfg.acquisition.model_dump(mode="json"), acquisition_complete=True,
                   acquisition_sources=dict(sources), warnings=list(warnings),
                   detect=cfg.detect.model_dump(mode="json"))
    out["fps"] = out["acquisition"].get("fps", video_md.get("fps"))
    out["invert_measured"] = None
    if not (out["detect"] is not None and "invert" in cfg.detect.model_fields_set):
        from exonta.pipeline import measure_polarity

        try:
            est = measure_polarity(video)
        except Exception:  # noqa: BLE001 - a frame that cannot be read shows up when the video is analysed
            est = None
        out["invert_measured"] = None if est is None else est.dark
    return out
