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


def test_likelihood_kernels_do_not_depend_on_component_order():
    """Components sorted by track (one run per track) and shuffled (one run per component) give
    the same log-likelihood and σ² derivatives."""
    from exonta.analysis._distkernels import dst_loglik_kernel, dst_loglik_sigma_derivs_kernel

    rng = np.random.default_rng(3)
    n_tracks, n_bins = 7, 12
    track = np.sort(rng.integers(0, n_tracks, 60)).astype(np.int64)
    omc = rng.uniform(0.05, 2.0, track.size)
    power = rng.exponential(0.3, track.size)
    scale = rng.uniform(0.5, 1.5, track.size)
    sigma2 = rng.uniform(1e-4, 1e-3, n_tracks)
    alpha = np.geomspace(1e-3, 1.0, n_bins)
    perm = rng.permutation(track.size)

    def run(kernel, idx, n_out):
        outs = [np.zeros((n_tracks, n_bins)) for _ in range(n_out)]
        kernel(track[idx], omc[idx], power[idx], scale[idx], sigma2, alpha, 0.1, *outs)
        return outs

    for kernel, n_out in ((dst_loglik_kernel, 1), (dst_loglik_sigma_derivs_kernel, 2)):
        for a, b in zip(run(kernel, np.arange(track.size), n_out), run(kernel, perm, n_out)):
            assert np.all(a != 0.0)
            np.testing.assert_allclose(b, a, rtol=1e-9)
