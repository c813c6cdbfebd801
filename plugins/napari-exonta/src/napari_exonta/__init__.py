"""napari plugin for exonta (Nanoparticle Tracking Analysis).

Contributions (see ``napari.yaml``): a reader for NTA videos (lazy frames,
acquisition metadata in the layer), sample videos, and the
:class:`~napari_exonta._widget.ExontaWidget` dock widget. Nothing is imported
from napari, Qt or exonta at import time.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
