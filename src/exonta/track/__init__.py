"""Linking detections into trajectories and removing drift/flow.

:func:`link_features` turns a features table into a tracks table;
:func:`estimate_drift` and :func:`subtract_drift` remove the common motion
of the sample (drift, flow) before per-track diffusion analysis.
"""

from .drift import DriftResult, estimate_drift, subtract_drift
from .link import link_features, search_range_px, search_range_um

__all__ = ["link_features", "search_range_px", "search_range_um", "DriftResult", "estimate_drift",
           "subtract_drift"]
