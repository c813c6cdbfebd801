"""Write test videos with FFmpeg's encoders (imageio-ffmpeg's static binary, a test dependency).

OpenCV's wheels decode H.264 but cannot encode it, and H.264 is what phones, many microscope cameras and
screen recorders write.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np


def encode(path, frames: np.ndarray, codec_args: tuple[str, ...], fps: float = 30.0) -> Path:
    """Encode 8-bit grey ``(n, h, w)`` or RGB ``(n, h, w, 3)`` frames (even h and w) with FFmpeg's
    ``codec_args`` (e.g. ``("-c:v", "libvpx-vp9")``); the container follows the suffix of ``path``."""
    import imageio_ffmpeg

    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    n, h, w = frames.shape[:3]
    pix = "rgb24" if frames.ndim == 4 else "gray"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", pix,
           "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "-", *codec_args, str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)
    return Path(path)


def write_h264(path, frames: np.ndarray, fps: float = 30.0, crf: int = 23, extra: tuple[str, ...] = ()) -> Path:
    """Encode frames as H.264 (libx264, yuv420p) at quality ``crf`` (see :func:`encode`)."""
    return encode(path, frames, ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(int(crf)), *extra), fps)


def transcode_h264(src, path, crf: int = 23) -> Path:
    """Re-encode the movie ``src`` as H.264 (libx264, yuv420p) at quality ``crf`` (a recording converted to
    share it)."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-crf", str(int(crf)), str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    return Path(path)


def encode_dropping(path, frames: np.ndarray, drop, codec_args: tuple[str, ...] = ("-c:v", "ffv1"),
                    fps: float = 30.0) -> Path:
    """Encode ``frames`` at ``fps`` but leave out the frames whose indices are in ``drop``, keeping every other
    frame's timestamp (a camera or capture program that dropped them: a variable-frame-rate movie with gaps in
    its timestamps; use a container with per-frame times, .mkv or .mp4)."""
    drop = sorted(int(i) for i in drop)
    keep = "not(" + "+".join(f"eq(n\\,{i})" for i in drop) + ")" if drop else "1"
    return encode(path, frames, ("-vf", f"select='{keep}'", "-fps_mode", "passthrough", *codec_args), fps)


def encode16(path, frames: np.ndarray, codec_args: tuple[str, ...], fps: float = 25.0) -> Path:
    """Encode 16-bit grey ``(n, h, w)`` frames with FFmpeg's ``codec_args`` (e.g. ``("-c:v", "ffv1")``)."""
    import imageio_ffmpeg

    frames = np.ascontiguousarray(frames, dtype="<u2")
    n, h, w = frames.shape
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "gray16le",
           "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "-", *codec_args, str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)
    return Path(path)
