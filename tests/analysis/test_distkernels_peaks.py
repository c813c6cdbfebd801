"""exonta.analysis._distkernels.find_peaks against scipy.signal.find_peaks (its reference)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import find_peaks as scipy_find_peaks

from exonta.analysis._distkernels import find_peaks


@pytest.mark.parametrize("seed", range(30))
def test_find_peaks_matches_scipy_with_plateaus_and_edges(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 60))
    x = rng.integers(0, 6, n).astype(float) if seed % 2 else rng.random(n)  # integers: many plateaus/ties
    for prom in (0.0, 0.3, 1.0, 2.5):
        ref, props = scipy_find_peaks(x, prominence=prom)
        got, gp = find_peaks(x, prom)
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_allclose(gp["prominences"], props["prominences"], rtol=0, atol=0)


def test_find_peaks_on_a_padded_density():
    d = np.r_[0.0, np.exp(-0.5 * ((np.arange(100) - 30) / 4.0) ** 2) + 0.4 * np.exp(-0.5 * ((np.arange(100) - 70) / 5.0) ** 2), 0.0]
    got, _ = find_peaks(d, 0.05)
    np.testing.assert_array_equal(got, [31, 71])
