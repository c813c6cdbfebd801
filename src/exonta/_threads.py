"""Threading defaults of exonta's parallel numba kernels.

numba's default threading layer on Linux is GNU OpenMP, whose worker threads busy-wait (spin) after
every parallel region before they sleep. Detection launches one parallel region per chunk of frames
(:func:`exonta.detect._kernels._locate_chunk`) and, between two of them, the calling thread builds
the chunk's table while a reader thread decodes the next chunk; on a two-core machine the spinning
workers can take the cores those threads need. Measured on the 2-core CI machine (``bench_detect``
frames, 1024², 8-bit, ``--fast-search``, 192 frames, three interleaved rounds of three runs):
spinning 1.21–1.79 ms of wall time per frame (2.3–3.5 ms of CPU time), sleeping 1.23–1.41 ms
(2.4–2.6 ms): the same best case, without the slow runs.
"""

from __future__ import annotations

import os

__all__ = ["prefer_passive_omp_wait"]

_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def prefer_passive_omp_wait() -> None:
    """Make idle OpenMP workers sleep instead of spinning (``OMP_WAIT_POLICY=passive``).

    Acts only before numba has started its thread pool (GNU OpenMP reads the variable when it is
    loaded, at numba's first parallel launch) and only when the user has set neither
    ``OMP_WAIT_POLICY`` nor ``GOMP_SPINCOUNT``; a user's choice and a pool already running are left
    alone. The variable is also inherited by child processes (batch workers), which is intended.
    Call it before the first parallel kernel runs; it costs a dictionary lookup afterwards.
    """
    if any(v in os.environ for v in _WAIT_VARIABLES):
        return
    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", True):
        return
    os.environ["OMP_WAIT_POLICY"] = "passive"
