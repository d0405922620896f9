"""Background-field removal by spherical mean value filtering.

* :func:`sharp`: SHARP (Schweser et al., NeuroImage 2011);
* :func:`vsharp`: V-SHARP, variable kernel radius (Wu et al., MRM 2012);

both with truncated deconvolution of the largest kernel.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft
from scipy import ndimage

from deepmir.qsm.dipole import WORKERS

FloatArray = npt.NDArray[np.float32]


def _smv_kernel(
    shape: tuple[int, int, int], voxel_mm: tuple[float, float, float], radius_mm: float
) -> FloatArray:
    """rFFT of the normalized sphere (spherical mean value) kernel, centred at the
    origin: real, the sphere being symmetric."""
    grids = [np.fft.fftfreq(n, 1.0 / n) * v for n, v in zip(shape, voxel_mm, strict=True)]
    x, y, z = np.meshgrid(*grids, indexing="ij", sparse=True)
    ball = ((x**2 + y**2 + z**2) <= radius_mm**2).astype(np.float32)
    ball /= ball.sum()
    return np.asarray(sfft.rfftn(ball, workers=WORKERS).real, np.float32)


def sphere_erode(
    mask: npt.NDArray[np.bool_], voxel_mm: tuple[float, float, float], radius_mm: float
) -> npt.NDArray[np.bool_]:
    dist = ndimage.distance_transform_edt(mask, sampling=voxel_mm)
    return np.asarray(dist > radius_mm)


def sharp(
    field: FloatArray,
    mask: npt.NDArray[np.bool_],
    voxel_mm: tuple[float, float, float],
    radius_mm: float,
    threshold: float = 0.05,
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """SHARP background removal: ``local = F^-1[ F[mask (f - SMV f)] / (1 - S) ]``.

    The deconvolution is truncated where ``|1 - S(k)| < threshold``. Returns
    the local field and the mask eroded by the kernel radius.
    """
    return vsharp(field, mask, voxel_mm, (radius_mm,), threshold)


def vsharp(
    field: FloatArray,
    mask: npt.NDArray[np.bool_],
    voxel_mm: tuple[float, float, float],
    radii_mm: tuple[float, ...],
    threshold: float = 0.05,
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """V-SHARP: the largest sphere that fits inside the mask at each voxel,
    radii from ``max(radii_mm)`` down; deconvolution with the largest kernel."""
    shape: tuple[int, int, int] = field.shape  # type: ignore[assignment]
    f = np.where(mask, field, 0.0).astype(np.float32)
    spec = sfft.rfftn(f, workers=WORKERS)
    radii = sorted(radii_mm, reverse=True)
    hp = np.zeros(shape, np.float32)
    done = np.zeros(shape, bool)
    final_mask = np.zeros(shape, bool)
    s_big = None
    dist = ndimage.distance_transform_edt(mask, sampling=voxel_mm)  # once for all radii
    for r in radii:
        s = _smv_kernel(shape, voxel_mm, r)
        if s_big is None:
            s_big = s
        valid = (dist > r) & ~done
        filtered = f - sfft.irfftn(spec * s, s=shape, workers=WORKERS).astype(np.float32)
        hp[valid] = filtered[valid]
        done |= valid
        final_mask |= valid
    assert s_big is not None
    one_minus = (1.0 - s_big).astype(np.float32)
    ok = np.abs(one_minus) >= threshold
    inv = np.where(ok, 1.0 / np.where(ok, one_minus, 1.0), 0.0).astype(np.float32)
    local = sfft.irfftn(sfft.rfftn(hp, workers=WORKERS) * inv, s=shape, workers=WORKERS)
    return np.where(final_mask, local, 0.0).astype(np.float32), final_mask
