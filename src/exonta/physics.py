"""Physical constants and relations used by the analysis and the simulator.

Everything here is pure and vectorised; units are in the argument names.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "BOLTZMANN_J_PER_K",
    "water_density_kg_m3",
    "water_viscosity_mpas",
    "diffusion_from_diameter",
    "diameter_from_diffusion",
    "rayleigh_contrast",
    "relative_scattering",
]

BOLTZMANN_J_PER_K = 1.380649e-23
ZERO_CELSIUS_K = 273.15

# IAPWS 2008 (Huber et al. 2009) reducing constants
_T_STAR_K = 647.096
_RHO_STAR_KG_M3 = 322.0
_MU_STAR_PA_S = 1.0e-6
_H0 = (1.67752, 2.20462, 0.6366564, -0.241605)
# H_ij, i = power of (1/Tbar - 1), j = power of (rhobar - 1)
_H1 = np.zeros((6, 7))
for _i, _j, _h in (
    (0, 0, 5.20094e-1), (1, 0, 8.50895e-2), (2, 0, -1.08374), (3, 0, -2.89555e-1),
    (0, 1, 2.22531e-1), (1, 1, 9.99115e-1), (2, 1, 1.88797), (3, 1, 1.26613), (5, 1, 1.20573e-1),
    (0, 2, -2.81378e-1), (1, 2, -9.06851e-1), (2, 2, -7.72479e-1), (3, 2, -4.89837e-1),
    (4, 2, -2.57040e-1), (0, 3, 1.61913e-1), (1, 3, 2.57399e-1), (0, 4, -3.25372e-2),
    (3, 4, 6.98452e-2), (4, 5, 8.72102e-3), (3, 6, -4.35673e-3), (5, 6, -5.93264e-4),
):
    _H1[_i, _j] = _h
del _i, _j, _h


def water_density_kg_m3(temperature_c):
    """Density of air-free water at 101.325 kPa.

    Parameters
    ----------
    temperature_c : float or array_like
        Temperature in degrees Celsius, valid 0--40 °C.

    Returns
    -------
    float or ndarray
        Density in kg/m³.

    References
    ----------
    Tanaka, M. et al., "Recommended table for the density of water between
    0 °C and 40 °C based on recent experimental reports", Metrologia 38:301 (2001).
    """
    t = np.asarray(temperature_c, dtype=float)
    a1, a2, a3, a4, a5 = -3.983035, 301.797, 522528.9, 69.34881, 999.974950
    rho = a5 * (1.0 - (t + a1) ** 2 * (t + a2) / (a3 * (t + a4)))
    return float(rho) if rho.ndim == 0 else rho


def water_viscosity_mpas(temperature_c):
    """Dynamic viscosity of liquid water at atmospheric pressure.

    Implements the IAPWS 2008 formulation (dilute-gas term times the residual
    term; the critical enhancement is 1 to better than 1e-6 away from the
    critical point) with the density from Tanaka et al. (2001).

    Parameters
    ----------
    temperature_c : float or array_like
        Temperature in degrees Celsius (0--100 °C supported; density
        correlation strictly valid to 40 °C, within 0.02 % to 100 °C).

    Returns
    -------
    float or ndarray
        Viscosity in mPa·s (e.g. 0.8900 at 25 °C).

    References
    ----------
    Huber, M. L. et al., "New International Formulation for the Viscosity of
    H2O", J. Phys. Chem. Ref. Data 38:101 (2009); IAPWS R12-08.
    """
    t = np.asarray(temperature_c, dtype=float)
    tbar = (t + ZERO_CELSIUS_K) / _T_STAR_K
    rhobar = np.asarray(water_density_kg_m3(t)) / _RHO_STAR_KG_M3
    mu0 = 100.0 * np.sqrt(tbar) / sum(h / tbar**i for i, h in enumerate(_H0))
    x = 1.0 / tbar - 1.0
    y = rhobar - 1.0
    acc = np.zeros_like(tbar)
    for i in range(6):
        inner = np.zeros_like(tbar)
        for j in range(7):
            if _H1[i, j] != 0.0:
                inner = inner + _H1[i, j] * y**j
        acc = acc + x**i * inner
    mu1 = np.exp(rhobar * acc)
    mu_mpas = mu0 * mu1 * _MU_STAR_PA_S * 1e3
    return float(mu_mpas) if mu_mpas.ndim == 0 else mu_mpas


def diffusion_from_diameter(diameter_nm, temperature_c, viscosity_mpas):
    """Stokes–Einstein diffusion coefficient of a sphere.

    ``D = k_B T / (3 π η d)``.

    Parameters
    ----------
    diameter_nm : float or array_like
        Hydrodynamic diameter in nm.
    temperature_c : float
        Temperature in °C.
    viscosity_mpas : float
        Dynamic viscosity of the medium in mPa·s.

    Returns
    -------
    float or ndarray
        Diffusion coefficient in µm²/s.
    """
    d_m = np.asarray(diameter_nm, dtype=float) * 1e-9
    temperature_k = float(temperature_c) + ZERO_CELSIUS_K
    eta = float(viscosity_mpas) * 1e-3
    with np.errstate(divide="ignore"):
        d_m2_s = BOLTZMANN_J_PER_K * temperature_k / (3.0 * math.pi * eta * d_m)
    out = d_m2_s * 1e12
    return float(out) if np.ndim(out) == 0 else out


def diameter_from_diffusion(d_um2_s, temperature_c, viscosity_mpas):
    """Hydrodynamic diameter from a diffusion coefficient (Stokes–Einstein).

    Parameters
    ----------
    d_um2_s : float or array_like
        Diffusion coefficient in µm²/s (non-positive values give NaN).
    temperature_c, viscosity_mpas : float
        Temperature in °C and viscosity in mPa·s.

    Returns
    -------
    float or ndarray
        Diameter in nm.
    """
    d = np.asarray(d_um2_s, dtype=float)
    temperature_k = float(temperature_c) + ZERO_CELSIUS_K
    eta = float(viscosity_mpas) * 1e-3
    with np.errstate(divide="ignore", invalid="ignore"):
        diam_m = np.where(d > 0, BOLTZMANN_J_PER_K * temperature_k / (3.0 * math.pi * eta * d * 1e-12), np.nan)
    out = diam_m * 1e9
    return float(out) if np.ndim(out) == 0 else out


def rayleigh_contrast(particle_refractive_index, medium_refractive_index=1.333):
    """Squared Clausius–Mossotti factor ``|(m²−1)/(m²+2)|²`` with ``m = n_p/n_m``."""
    m2 = (np.asarray(particle_refractive_index, dtype=float) / medium_refractive_index) ** 2
    out = ((m2 - 1.0) / (m2 + 2.0)) ** 2
    return float(out) if np.ndim(out) == 0 else out


def relative_scattering(diameter_nm, particle_refractive_index, medium_refractive_index=1.333,
                        reference_diameter_nm=100.0, reference_refractive_index=1.59):
    """Rayleigh scattering cross-section relative to a reference particle.

    ``σ ∝ d⁶ |(m²−1)/(m²+2)|²`` (Bohren & Huffman 1983, ch. 5); by default
    relative to a 100 nm polystyrene sphere (n = 1.59) in water.
    """
    d = np.asarray(diameter_nm, dtype=float) / reference_diameter_nm
    out = d**6 * rayleigh_contrast(particle_refractive_index, medium_refractive_index) / rayleigh_contrast(
        reference_refractive_index, medium_refractive_index)
    return float(out) if np.ndim(out) == 0 else out
