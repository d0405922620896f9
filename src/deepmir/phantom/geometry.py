"""Lesion and vein geometry: partial-volume occupancy on a voxel grid.

Hand-written (no library rasterises rotated ellipsoid unions and tubes with
sub-voxel partial volume). Positions are voxel coordinates (i, j, k) of the
subject grid as floats; sizes are millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Box = tuple[slice, slice, slice]
ScalarT = TypeVar("ScalarT", bound=np.generic)


@dataclass(frozen=True)
class Ellipsoid:
    """A rotated ellipsoid: centre (voxel i, j, k), semi-axes (mm), Euler angles (deg)."""

    center_vox: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    angles_deg: tuple[float, float, float]

    def rotation(self) -> npt.NDArray[np.float64]:
        return euler_rotation(self.angles_deg)


def euler_rotation(angles_deg: tuple[float, float, float]) -> npt.NDArray[np.float64]:
    """Rotation matrix ``Rz Ry Rx`` of Euler angles (degrees) about i, j, k."""
    a, b, c = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx  # type: ignore[no-any-return]


def bounding_box(
    ellipsoids: list[Ellipsoid], voxel_mm: float, shape: tuple[int, ...], margin_mm: float = 0.0
) -> Box:
    """Voxel box (slices) holding all ellipsoids plus ``margin_mm``, clipped to ``shape``."""
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for e in ellipsoids:
        reach = (max(e.semi_axes_mm) + margin_mm) / voxel_mm
        c = np.asarray(e.center_vox)
        lo = np.minimum(lo, c - reach)
        hi = np.maximum(hi, c + reach)
    start = np.clip(np.floor(lo).astype(int) - 1, 0, np.asarray(shape))
    stop = np.clip(np.ceil(hi).astype(int) + 2, 0, np.asarray(shape))
    return (slice(start[0], stop[0]), slice(start[1], stop[1]), slice(start[2], stop[2]))


def fine_inside(
    ellipsoids: list[Ellipsoid], box: Box, voxel_mm: float, supersample: int
) -> npt.NDArray[np.bool_]:
    """Inside-test of a union of ellipsoids on a grid ``supersample`` times finer.

    The fine grid covers the voxels of ``box``: fine sample ``q`` of voxel ``v``
    sits at ``v + (q + 0.5) / s - 0.5``. Returns a boolean array of shape
    ``box_shape * s``.
    """
    s = supersample
    axes = [(np.arange(sl.start * s, sl.stop * s, dtype=np.float32) + 0.5) / s - 0.5 for sl in box]
    gi, gj, gk = np.meshgrid(*axes, indexing="ij", sparse=True)
    inside = np.zeros((gi.shape[0], gj.shape[1], gk.shape[2]), dtype=bool)
    for e in ellipsoids:
        rot = e.rotation().T  # scanner-aligned offsets -> ellipsoid frame
        di = (gi - e.center_vox[0]) * voxel_mm
        dj = (gj - e.center_vox[1]) * voxel_mm
        dk = (gk - e.center_vox[2]) * voxel_mm
        acc = np.zeros(inside.shape, dtype=np.float32)
        for r in range(3):
            u = rot[r, 0] * di + rot[r, 1] * dj + rot[r, 2] * dk
            acc += (u / e.semi_axes_mm[r]) ** 2
        inside |= acc <= 1.0
    return inside


def block_mean(fine: npt.NDArray[ScalarT], s: int) -> npt.NDArray[ScalarT]:
    """Average a fine grid down by ``s`` along each axis (complex-safe)."""
    a, b, c = (n // s for n in fine.shape)
    return fine.reshape(a, s, b, s, c, s).mean(axis=(1, 3, 5))  # type: ignore[no-any-return]


def upsample_nearest(coarse: npt.NDArray[ScalarT], s: int) -> npt.NDArray[ScalarT]:
    """Repeat each voxel ``s`` times along each axis."""
    out = coarse
    for axis in range(3):
        out = np.repeat(out, s, axis=axis)
    return out


def ellipsoid_occupancy(
    ellipsoids: list[Ellipsoid], voxel_mm: float, shape: tuple[int, ...], supersample: int = 4
) -> tuple[Box, FloatArray]:
    """Partial-volume fraction (0..1) of a union of ellipsoids in each voxel of its box."""
    box = bounding_box(ellipsoids, voxel_mm, shape)
    inside = fine_inside(ellipsoids, box, voxel_mm, supersample)
    return box, block_mean(inside.astype(np.float32), supersample).astype(np.float32)


def tube_occupancy(
    points_vox: list[tuple[float, float, float]],
    radius_mm: float,
    voxel_mm: float,
    shape: tuple[int, ...],
) -> tuple[Box, FloatArray]:
    """Approximate partial-volume fraction of a tube along a polyline.

    Uses the distance ``d`` from each voxel centre to the polyline:
    ``occupancy = clip((radius + voxel/2 - d) / voxel, 0, 1)`` scaled so that a
    tube thinner than a voxel keeps its cross-section area.
    """
    pts = np.asarray(points_vox, dtype=np.float32)
    reach = radius_mm / voxel_mm + 2
    start = np.clip(np.floor(pts.min(0) - reach).astype(int), 0, np.asarray(shape))
    stop = np.clip(np.ceil(pts.max(0) + reach).astype(int) + 1, 0, np.asarray(shape))
    box = (slice(start[0], stop[0]), slice(start[1], stop[1]), slice(start[2], stop[2]))
    gi, gj, gk = np.meshgrid(
        *[np.arange(sl.start, sl.stop, dtype=np.float32) for sl in box], indexing="ij"
    )
    grid = np.stack([gi, gj, gk], axis=-1)
    dist = np.full(gi.shape, np.inf, dtype=np.float32)
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        ab = b - a
        t = np.clip(((grid - a) @ ab) / max(float(ab @ ab), 1e-6), 0.0, 1.0)
        closest = a + t[..., None] * ab
        dist = np.minimum(dist, np.linalg.norm(grid - closest, axis=-1) * voxel_mm)
    occ = np.clip((radius_mm + voxel_mm / 2 - dist) / voxel_mm, 0.0, 1.0)
    # A tube thinner than a voxel: keep its cross-section area, not its width.
    area_ratio = min(1.0, np.pi * radius_mm**2 / voxel_mm**2)
    return box, (occ * area_ratio).astype(np.float32)
