"""Input/output: video readers (:mod:`exonta.io.readers`) and result files."""

from .readers import ArrayVideo, Video, frames_from_array, open_video

__all__ = ["open_video", "frames_from_array", "Video", "ArrayVideo"]
