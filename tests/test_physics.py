"""The forward model against closed-form physics."""

from __future__ import annotations

import numpy as np
import pytest

from deepmir.phantom import physics as phy
from deepmir.phantom.geometry import Ellipsoid, ellipsoid_occupancy


def _sphere(shape: int, radius_mm: float, dchi: float) -> np.ndarray:
    c = (shape - 1) / 2
    box, occ = ellipsoid_occupancy(
        [Ellipsoid((c, c, c), (radius_mm,) * 3, (0, 0, 0))], 1.0, (shape,) * 3, supersample=4
    )
    chi = np.zeros((shape,) * 3, np.float32)
    chi[box] = dchi * occ
    return chi


@pytest.mark.parametrize("tilt", [0.0, 12.0])
def test_uniform_sphere_field_matches_the_analytic_dipole(tilt):
    """Outside: (dchi/3)(a/r)^3 (3cos^2 theta - 1) within 5 %; inside: ~0."""
    n, a, dchi = 64, 6.0, 1.0
    b0 = phy.b0_direction(tilt, 30.0)
    field = phy.dipole_field(_sphere(n, a, dchi), 1.0, b0)
    c = (n - 1) / 2
    idx = np.indices((n,) * 3).astype(np.float64) - c
    r = np.sqrt((idx**2).sum(0))
    cos = (idx[0] * b0[0] + idx[1] * b0[1] + idx[2] * b0[2]) / np.maximum(r, 1e-9)
    analytic = dchi / 3 * (a / np.maximum(r, 1e-9)) ** 3 * (3 * cos**2 - 1)
    outside = (r > 1.5 * a) & (r < 4 * a)
    rel = np.linalg.norm(field[outside] - analytic[outside]) / np.linalg.norm(analytic[outside])
    assert rel < 0.05
    inside = r < 0.6 * a
    assert np.abs(field[inside]).max() < 0.02 * dchi


def test_dipole_kernel_has_no_dc_and_lorentz_third():
    d = phy.dipole_kernel((8, 8, 8), 1.0, (0.0, 0.0, 1.0))
    assert d[0, 0, 0] == 0
    assert d[1, 0, 0] == pytest.approx(1 / 3)  # k perpendicular to B0
    assert d[0, 0, 1] == pytest.approx(-2 / 3)  # k along B0


@pytest.mark.parametrize("method,param", [("tkd", 0.18), ("tikhonov", 0.02)])
def test_dipole_inversion_recovers_the_sign_and_underestimates(method, param):
    for dchi in (0.5, -0.5):
        chi = _sphere(48, 3.0, dchi)
        field = phy.dipole_field(chi, 1.0, (0.0, 0.0, 1.0))
        mask = np.ones_like(chi, dtype=bool)
        qsm = phy.qsm_inversion(field, mask, 1.0, (0.0, 0.0, 1.0), method, param)
        centre = qsm[22:26, 22:26, 22:26].mean()
        assert np.sign(centre) == np.sign(dchi)
        assert abs(centre) <= abs(dchi) * 1.1


def test_swi_mask_darkens_positive_phase_only():
    mag = np.ones((32, 32, 32), np.float32)
    phase = np.zeros_like(mag)
    phase[10:13, 10:13, 10:13] = 2.0  # paramagnetic side in deepmir's convention
    phase[20:23, 20:23, 20:23] = -2.0
    img = phy.swi((mag * np.exp(1j * phase)).astype(np.complex64))
    background = np.median(img)
    assert img[11, 11, 11] < 0.2 * background
    assert img[21, 21, 21] > 0.9 * background
