import math

import numpy as np
import pytest

from exonta import physics


@pytest.mark.parametrize(
    "temperature_c, expected_mpas",
    [(20.0, 1.0016), (22.0, 0.9544), (25.0, 0.8900), (37.0, 0.6913)],
)
def test_water_viscosity_matches_iapws_2008_values(temperature_c, expected_mpas):
    assert physics.water_viscosity_mpas(temperature_c) == pytest.approx(expected_mpas, abs=6e-5)


def test_water_viscosity_is_vectorised_and_decreasing():
    t = np.linspace(0, 90, 31)
    eta = physics.water_viscosity_mpas(t)
    assert eta.shape == t.shape
    assert np.all(np.diff(eta) < 0)
    # IAPWS 2008 at 0 °C and 80 °C (Huber 2009 table values at 0.1 MPa: 1791.1 and 354.0 µPa·s)
    assert eta[0] == pytest.approx(1.7911, rel=1e-3)
    assert physics.water_viscosity_mpas(80.0) == pytest.approx(0.3540, rel=2e-3)


def test_water_density_tanaka():
    assert physics.water_density_kg_m3(4.0) == pytest.approx(999.975, abs=2e-3)
    assert physics.water_density_kg_m3(25.0) == pytest.approx(997.047, abs=2e-3)


def test_stokes_einstein_round_trip_and_value():
    eta = physics.water_viscosity_mpas(25.0)
    d = physics.diffusion_from_diameter(100.0, 25.0, eta)
    # kT/(3 pi eta d) by hand
    expected = 1.380649e-23 * 298.15 / (3 * math.pi * eta * 1e-3 * 100e-9) * 1e12
    assert d == pytest.approx(expected, rel=1e-12)
    assert d == pytest.approx(4.906, rel=1e-3)
    diam = physics.diameter_from_diffusion(np.array([d, 0.0, -1.0]), 25.0, eta)
    assert diam[0] == pytest.approx(100.0, rel=1e-12)
    assert np.isnan(diam[1]) and np.isnan(diam[2])


def test_rayleigh_scattering_scales_with_d6_and_contrast():
    assert physics.relative_scattering(100.0, 1.59) == pytest.approx(1.0)
    assert physics.relative_scattering(200.0, 1.59) == pytest.approx(64.0)
    # an EV (n = 1.39) scatters ~19x less than polystyrene of the same size
    ratio = physics.relative_scattering(100.0, 1.39)
    assert 0.04 < ratio < 0.07
    assert physics.rayleigh_contrast(1.333) == pytest.approx(0.0, abs=1e-15)
