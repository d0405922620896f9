"""The unit dipole kernel and the closed-form dipole inversions.

Units: susceptibility and field in ppm, B0 in tesla, times in seconds,
lengths in mm. Phase sign convention of deepmir (``docs/physics.md``):
``phase = +2 pi * GAMMA_MHZ_PER_T * B0 * TE * field_ppm``, so a paramagnetic
source gives positive phase.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft

GAMMA_MHZ_PER_T = 42.577478  # proton gyromagnetic ratio / 2 pi
FloatArray = npt.NDArray[np.float32]
WORKERS = -1  # scipy.fft: all cores


def radians_per_ppm(b0_tesla: float, te_s: float) -> float:
    """Phase accrued per ppm of field: 2 pi gamma B0 TE (about 16 rad at 3 T, 20 ms)."""
    return float(2.0 * np.pi * GAMMA_MHZ_PER_T * b0_tesla * te_s)


@lru_cache(maxsize=32)
def dipole_kernel(
    shape: tuple[int, int, int],
    voxel_mm: float | tuple[float, float, float],
    b0_dir: tuple[float, float, float],
) -> FloatArray:
    """Dipole kernel ``D(k) = 1/3 - (k.b)^2 / |k|^2`` on an rFFT grid, ``D(0) = 0``.

    The 1/3 term is the Lorentz-sphere correction: the field inside a uniform
    sphere is zero (Salomir et al. 2003; Marques & Bowtell 2005).
    """
    vox = (voxel_mm,) * 3 if isinstance(voxel_mm, int | float) else tuple(voxel_mm)
    k = [np.fft.fftfreq(n, d=v).astype(np.float32) for n, v in zip(shape[:2], vox[:2], strict=True)]
    k.append(np.fft.rfftfreq(shape[2], d=vox[2]).astype(np.float32))
    ki, kj, kk = np.meshgrid(*k, indexing="ij", sparse=True)
    k2 = ki**2 + kj**2 + kk**2
    kb = ki * b0_dir[0] + kj * b0_dir[1] + kk * b0_dir[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.float32(1.0 / 3.0) - kb**2 / k2
    d = d.astype(np.float32)
    d[0, 0, 0] = 0.0
    d.setflags(write=False)  # cached and shared: never modified in place
    return d


def padded_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int, int]:
    """``shape`` times ``factor``, each axis rounded up to a fast rFFT length."""
    return tuple(sfft.next_fast_len(int(np.ceil(n * factor)), real=True) for n in shape)  # type: ignore[return-value]


def qsm_inversion(
    field: FloatArray,
    mask: npt.NDArray[np.bool_],
    voxel_mm: float | tuple[float, float, float],
    b0_dir: tuple[float, float, float],
    method: str,
    parameter: float,
    pad_factor: float = 1.5,
) -> FloatArray:
    """A real single-step dipole inversion of a local field map (ppm -> ppm).

    ``method="tkd"``: truncated k-space division, ``1/D`` with ``|D|`` clipped
    from below at ``parameter`` (0.15-0.2; Shmueli et al., MRM 2009).
    ``method="tikhonov"``: closed-form ``D / (D^2 + parameter)``
    (Bilgic et al., MRM 2014). Both under-estimate small strong sources and
    streak around them, as real QSM does. The result is masked.
    """
    shape = padded_shape(field.shape, pad_factor)
    d = dipole_kernel(shape, voxel_mm, b0_dir)
    if method == "tkd":
        mag = np.maximum(np.abs(d), parameter)
        inv = np.where(d >= 0, 1.0, -1.0).astype(np.float32) / mag
    elif method == "tikhonov":
        inv = d / (d * d + np.float32(parameter))
    else:
        raise ValueError(f"unknown QSM inversion {method!r}; use 'tkd' or 'tikhonov'")
    inv = inv.astype(np.float32)
    inv[0, 0, 0] = 0.0
    spec = sfft.rfftn(np.where(mask, field, 0.0).astype(np.float32), s=shape, workers=WORKERS)
    spec *= inv
    chi = sfft.irfftn(spec, s=shape, workers=WORKERS)[
        : field.shape[0], : field.shape[1], : field.shape[2]
    ]
    return np.where(mask, chi, 0.0).astype(np.float32)
