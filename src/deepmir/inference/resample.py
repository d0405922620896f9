"""The working grid: the input's voxel axes at the model's voxel size, and back.

The network is trained and tuned (lesion minimum sizes, elongation) on
images of one voxel size (1 mm isotropic for the shipped models), so an
input at another voxel size is resampled onto a *working grid* before
inference and the results are put back on the input's own grid afterwards.

The working grid keeps the source's voxel axes (the B0 direction relative to
the axes and any obliquity are unchanged): only the spacing changes, one
zoom per axis. Its field of view is the source's: along an axis with ``n``
source voxels of size ``s`` the working grid has ``m = round(n s / t)``
voxels of size ``t`` whose box is centred on the source's box
``[-0.5, n - 0.5]`` (voxel coordinates); the two boxes coincide exactly when
``n s / t`` is an integer and differ by less than half a working voxel at
each edge otherwise. An axis whose spacing is already within ``tolerance``
of ``t`` is left as it is (no interpolation along it); when every axis is,
the resampler is the identity and returns its input unchanged.

Interpolation is linear for images and probabilities (separable, one axis
at a time: :func:`_linear`, the values of :func:`scipy.ndimage.affine_transform`
with a diagonal matrix up to float32 rounding) and nearest neighbour for
labels (:func:`scipy.ndimage.affine_transform`), edge values repeated outside
the source box. Nearest neighbour can drop a lesion smaller than a voxel of
the target grid: :func:`instances_backward` (and :func:`instances_forward`)
give every such lesion the target voxel containing its centroid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nibabel as nib
import numpy as np
import numpy.typing as npt
from scipy import ndimage

#: voxel size (mm, isotropic) of the working grid of the shipped models
WORKING_SPACING_MM = 1.0
#: input voxel sizes outside this range (mm) are far from any working grid: predict warns
USUAL_VOXEL_RANGE_MM = (0.4, 3.0)

ArrayT = TypeVar("ArrayT", bound=np.generic)
IntT = TypeVar("IntT", bound=np.integer[Any])

# zooms and shifts read back from the affines are rounded so that exact ties of
# nearest-neighbour sampling (a source voxel centre on the face between two
# working voxels) break the same way on every voxel, whatever the
# floating-point noise of the matrix inverse
_DECIMALS = 12


@dataclass(frozen=True)
class Resampler:
    """From a (RAS-reoriented) source grid to the working grid, and back.

    ``target_affine = source_affine @ [[diag(zoom), shift], [0, 1]]``: working
    voxel ``w`` sits at source voxel coordinates ``zoom * w + shift``.
    """

    source_affine: npt.NDArray[np.float64]
    source_shape: tuple[int, int, int]
    target_affine: npt.NDArray[np.float64]
    target_shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        m = np.linalg.inv(self.source_affine) @ self.target_affine
        if not np.allclose(m[:3, :3], np.diag(np.diag(m[:3, :3])), atol=1e-6):
            raise ValueError("the working grid must keep the source's voxel axes")

    @staticmethod
    def of(
        affine: npt.NDArray[np.float64],
        shape: tuple[int, ...],
        spacing_mm: float = WORKING_SPACING_MM,
        tolerance: float = 0.1,
    ) -> Resampler:
        """The working grid of a source grid (``shape``'s last three axes)."""
        affine = np.asarray(affine, np.float64)
        n = np.asarray(shape[-3:], np.int64)
        spacing = np.asarray(nib.affines.voxel_sizes(affine), np.float64)
        keep = np.abs(spacing - spacing_mm) <= tolerance * spacing_mm
        zoom = np.where(keep, 1.0, spacing_mm / spacing)
        m = np.where(keep, n, np.maximum(1, np.floor(n * spacing / spacing_mm + 0.5)))
        m = m.astype(np.int64)
        # centre the working box (m voxels of `zoom`) on the source box [-0.5, n - 0.5]
        shift = -0.5 + (n - m * zoom) / 2.0 + zoom / 2.0
        step = np.eye(4)
        step[:3, :3] = np.diag(zoom)
        step[:3, 3] = shift
        source_shape = (int(n[0]), int(n[1]), int(n[2]))
        return Resampler(
            source_affine=affine,
            source_shape=source_shape,
            target_affine=affine @ step,
            target_shape=(int(m[0]), int(m[1]), int(m[2])),
        )

    @property
    def zoom(self) -> npt.NDArray[np.float64]:
        """Working voxel size in source voxels, per axis."""
        m = np.linalg.inv(self.source_affine) @ self.target_affine
        return np.asarray(np.round(np.diag(m)[:3], _DECIMALS), np.float64)

    @property
    def shift(self) -> npt.NDArray[np.float64]:
        """Source voxel coordinates of working voxel (0, 0, 0)."""
        m = np.linalg.inv(self.source_affine) @ self.target_affine
        return np.asarray(np.round(m[:3, 3], _DECIMALS), np.float64)

    @property
    def identity(self) -> bool:
        """The working grid is the source grid (every spacing within tolerance):
        :meth:`forward` and :meth:`backward` return their input unchanged."""
        return self.source_shape == self.target_shape and bool(
            np.all(self.zoom == 1.0) and np.all(self.shift == 0.0)
        )

    def to_source_voxels(self, coords: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Continuous working-grid voxel coordinates (..., 3) -> source voxel coordinates."""
        return np.asarray(coords, np.float64) * self.zoom + self.shift

    def to_working_voxels(self, coords: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Continuous source voxel coordinates (..., 3) -> working-grid voxel coordinates."""
        return (np.asarray(coords, np.float64) - self.shift) / self.zoom

    def forward(self, volume: npt.NDArray[Any], order: int) -> npt.NDArray[Any]:
        """Source grid -> working grid; a 3D volume or a (C, I, J, K) stack.

        ``order`` 1 (linear) for images and probabilities (float32 out), 0
        (nearest) for labels (dtype kept); a boolean mask with ``order`` 1 is
        interpolated linearly and thresholded at 0.5.
        """
        if self.identity:
            return volume
        return _resample(volume, self.zoom, self.shift, self.target_shape, order)

    def backward(self, volume: npt.NDArray[Any], order: int) -> npt.NDArray[Any]:
        """Working grid -> source grid (same conventions as :meth:`forward`)."""
        if self.identity:
            return volume
        zoom = self.zoom
        return _resample(volume, 1.0 / zoom, -self.shift / zoom, self.source_shape, order)

    def to_dict(self) -> dict[str, Any]:
        """For the outputs' sidecars (sizes along the RAS-reoriented input's voxel axes)."""

        def sizes(affine: npt.NDArray[np.float64]) -> list[float]:
            return [round(float(h), 6) for h in nib.affines.voxel_sizes(affine)]

        return {
            "voxel_axes": "RAS",
            "source_voxel_size_mm": sizes(self.source_affine),
            "source_shape": list(self.source_shape),
            "working_voxel_size_mm": sizes(self.target_affine),
            "working_shape": list(self.target_shape),
            "identity": self.identity,
        }

    def voxel_size_warning(self) -> str | None:
        """A sentence when a source voxel size is outside :data:`USUAL_VOXEL_RANGE_MM`."""
        sizes = nib.affines.voxel_sizes(self.source_affine)
        low, high = USUAL_VOXEL_RANGE_MM
        if np.all((sizes >= low) & (sizes <= high)):
            return None
        text = " x ".join(f"{h:.2g}" for h in sizes)
        working = " x ".join(f"{h:.2g}" for h in nib.affines.voxel_sizes(self.target_affine))
        return (
            f"voxel size {text} mm is far from the model's working grid ({working} mm, "
            f"usual inputs {low}-{high} mm): resampled, but results may be less reliable"
        )


def _resample(
    volume: npt.NDArray[Any],
    zoom: npt.NDArray[np.float64],
    shift: npt.NDArray[np.float64],
    shape: tuple[int, int, int],
    order: int,
) -> npt.NDArray[Any]:
    """``out[w] = volume[zoom * w + shift]``: linear (:func:`_linear`) or nearest
    neighbour (scipy.ndimage.affine_transform with a diagonal matrix)."""
    if volume.ndim == 4:
        return np.stack([_resample(v, zoom, shift, shape, order) for v in volume])
    if volume.dtype == np.bool_:
        if order == 0:
            return _resample(volume.view(np.uint8), zoom, shift, shape, 0).astype(bool)
        return _resample(volume.astype(np.float32), zoom, shift, shape, order) >= 0.5
    if order == 1:
        return _linear(volume, zoom, shift, shape)
    return ndimage.affine_transform(
        volume,
        zoom,
        offset=shift,
        output_shape=shape,
        output=volume.dtype,
        order=order,
        mode="nearest",
    )


def _linear(
    volume: npt.NDArray[Any],
    zoom: npt.NDArray[np.float64],
    shift: npt.NDArray[np.float64],
    shape: tuple[int, int, int],
) -> npt.NDArray[np.float32]:
    """Linear ``out[w] = volume[zoom * w + shift]``, edge values repeated outside.

    What ``scipy.ndimage.affine_transform(order=1, mode="nearest")`` computes
    with a diagonal matrix, one axis at a time (trilinear interpolation is
    separable), in float32: the same values up to float32 rounding (tests),
    about five times faster than scipy's general 3D spline code
    (benchmarks/bench_resample.py). The axes that
    shrink most go first, so the later passes run on less data; an axis the
    working grid keeps (zoom 1, shift 0, same length) is not touched."""
    out = np.asarray(volume, np.float32)
    for axis in np.argsort(np.asarray(shape) / np.asarray(volume.shape), kind="stable"):
        n = volume.shape[axis]
        if zoom[axis] == 1.0 and shift[axis] == 0.0 and shape[axis] == n:
            continue
        x = np.clip(zoom[axis] * np.arange(shape[axis]) + shift[axis], 0.0, n - 1.0)
        low = np.floor(x).astype(np.int64)
        high = np.minimum(low + 1, n - 1)
        weight = (x - low).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        below = out.take(low, axis=axis)
        out = below + (out.take(high, axis=axis) - below) * weight
    return out


def instances_backward(instances_w: npt.NDArray[IntT], resampler: Resampler) -> npt.NDArray[IntT]:
    """Lesion instances (0 background, 1..n) from the working grid to the source grid.

    Nearest neighbour, and every lesion present on the working grid keeps at
    least one source voxel: a lesion that nearest neighbour drops (smaller
    than a source voxel) gets the source voxel containing its working-grid
    centroid; when another lesion holds that one, the free source voxel that
    contains most of its working voxels, else the free neighbour of the
    centroid's voxel nearest (in mm) to the centroid. Only a lesion surrounded
    by other lesions can still be lost.
    """
    if resampler.identity:
        return instances_w
    out = resampler.backward(instances_w, 0)
    spacing = nib.affines.voxel_sizes(resampler.source_affine)
    _keep_every_instance(instances_w, out, resampler.to_source_voxels, spacing)
    return out


def instances_forward(instances: npt.NDArray[IntT], resampler: Resampler) -> npt.NDArray[IntT]:
    """Lesion instances from the source grid to the working grid, every lesion kept
    the same way (the counterpart of :func:`instances_backward`, e.g. for
    reference labels)."""
    if resampler.identity:
        return instances
    out = resampler.forward(instances, 0)
    spacing = nib.affines.voxel_sizes(resampler.target_affine)
    _keep_every_instance(instances, out, resampler.to_working_voxels, spacing)
    return out


_NEIGHBOURS = np.array([d for d in np.ndindex(3, 3, 3) if d != (1, 1, 1)]) - 1


def _keep_every_instance(
    before: npt.NDArray[np.integer[Any]],
    after: npt.NDArray[np.integer[Any]],
    to_after: Callable[[npt.ArrayLike], npt.NDArray[np.float64]],
    spacing: npt.NDArray[np.float64],
) -> None:
    """Give every instance of ``before`` missing from ``after`` one voxel of ``after``
    (in place); ``to_after`` maps voxel coordinates (..., 3) of one grid to the
    other, ``spacing`` is the voxel size (mm) of ``after``."""
    n = int(before.max(initial=0))
    if n == 0:
        return
    present = np.bincount(before.ravel(), minlength=n + 1) > 0
    kept = np.bincount(after.ravel(), minlength=n + 1) > 0
    missing = np.flatnonzero(present & ~kept)
    missing = missing[missing > 0]
    if missing.size == 0:
        return
    boxes = ndimage.find_objects(before, max_label=n)
    upper = np.asarray(after.shape) - 1
    for lesion in missing:
        box = boxes[lesion - 1]
        assert box is not None
        local = np.argwhere(before[box] == lesion) + [s.start for s in box]
        centroid = to_after(local.mean(axis=0))
        home = np.clip(np.rint(centroid), 0, upper).astype(np.int64)
        # the target voxels containing the lesion's voxel centres, most-covered first
        hit = np.clip(np.rint(to_after(local)), 0, upper).astype(np.int64)
        voxels, counts = np.unique(hit, axis=0, return_counts=True)
        covered = voxels[np.argsort(-counts, kind="stable")]
        around = np.clip(home + _NEIGHBOURS, 0, upper)
        around = around[np.argsort(np.linalg.norm((around - centroid) * spacing, axis=1))]
        for v in (home, *covered, *around):
            if after[tuple(v)] == 0:
                after[tuple(v)] = lesion
                break
