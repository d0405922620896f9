"""Laplacian phase unwrapping (Schofield & Zhu, Optics Letters 2003).

The Laplacian of the true (unwrapped) phase follows from the wrapped phase
without knowing the wraps, ``lap(phi) = cos(phi) lap(sin phi) - sin(phi)
lap(cos phi)``, and the inverse Laplacian is a division in k-space. The result
is the true phase up to a harmonic function (zero Laplacian), which
background-field removal (SHARP / V-SHARP) removes anyway; it is fast (six
FFTs) and never fails on noise, but it does not keep the phase's absolute
value (not for phase-offset fits that need it). The discrete 7-point
Laplacian with the voxel sizes is used both ways, periodic boundaries.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft

from deepmir.qsm.dipole import WORKERS

FloatArray = npt.NDArray[np.float32]


def laplacian_kernel(
    shape: tuple[int, int, int], voxel_mm: tuple[float, float, float]
) -> FloatArray:
    """The discrete Laplacian's eigenvalues on an rFFT grid (1/mm^2, <= 0)."""
    parts = []
    for axis, (n, v) in enumerate(zip(shape, voxel_mm, strict=True)):
        k = np.arange(n // 2 + 1) if axis == 2 else np.arange(n)
        term = (2.0 * (np.cos(2.0 * np.pi * k / n) - 1.0) / v**2).astype(np.float32)
        s = [1, 1, 1]
        s[axis] = term.size
        parts.append(term.reshape(s))
    return (parts[0] + parts[1] + parts[2]).astype(np.float32)


def laplacian_unwrap(
    wrapped: FloatArray, voxel_mm: tuple[float, float, float], corrections: int = 0
) -> FloatArray:
    """Unwrapped phase (rad) of a wrapped phase map, up to a harmonic function.

    The discrete Laplacian of the wrapped phase sees ``sin`` of the phase
    step between neighbours, not the step: where the phase is steep (near air
    cavities, strong lesions, at long TE) the estimate falls short.
    ``corrections`` times, the wrapped residual ``angle(exp(i (phi - est)))``,
    whose steps are small, is unwrapped the same way and added.
    """
    est = _laplacian_unwrap_once(wrapped, voxel_mm)
    for _ in range(corrections):
        residual = np.angle(np.exp(1j * (wrapped - est))).astype(np.float32)
        est += _laplacian_unwrap_once(residual, voxel_mm)
    return est


def _laplacian_unwrap_once(wrapped: FloatArray, voxel_mm: tuple[float, float, float]) -> FloatArray:
    shape: tuple[int, int, int] = wrapped.shape  # type: ignore[assignment]
    lap = laplacian_kernel(shape, voxel_mm)
    s = np.sin(wrapped).astype(np.float32)
    c = np.cos(wrapped).astype(np.float32)
    lap_s = sfft.irfftn(sfft.rfftn(s, workers=WORKERS) * lap, s=shape, workers=WORKERS)
    lap_c = sfft.irfftn(sfft.rfftn(c, workers=WORKERS) * lap, s=shape, workers=WORKERS)
    lap_phi = (c * lap_s - s * lap_c).astype(np.float32)
    del lap_s, lap_c, s, c
    inv = np.zeros_like(lap)
    np.divide(1.0, lap, out=inv, where=lap != 0)
    out = sfft.irfftn(sfft.rfftn(lap_phi, workers=WORKERS) * inv, s=shape, workers=WORKERS)
    return np.asarray(out, np.float32)
