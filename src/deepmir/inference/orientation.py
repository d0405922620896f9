"""Reorientation to the model's frame (RAS, nearest axis permutation/flip) and back.

Uses nibabel's orientation utilities; no resampling, so writing back is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import nibabel as nib
import numpy as np
import numpy.typing as npt
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

ScalarT = TypeVar("ScalarT", bound=np.generic)


@dataclass(frozen=True)
class Reorientation:
    """From a file's voxel axes to RAS voxel axes, and back."""

    to_ras: npt.NDArray[np.float64]
    from_ras: npt.NDArray[np.float64]
    ras_affine: npt.NDArray[np.float64]

    @staticmethod
    def of(affine: npt.NDArray[np.float64], shape: tuple[int, ...]) -> Reorientation:
        ornt = io_orientation(affine)
        ras = axcodes2ornt(("R", "A", "S"))
        to_ras = ornt_transform(ornt, ras)
        ras_affine = affine @ nib.orientations.inv_ornt_aff(to_ras, shape[-3:])
        return Reorientation(to_ras, ornt_transform(ras, ornt), ras_affine)

    def forward(self, volume: npt.NDArray[ScalarT]) -> npt.NDArray[ScalarT]:
        """A 3D volume or a (C, I, J, K) stack, in RAS voxel order."""
        return _apply(volume, self.to_ras)

    def backward(self, volume: npt.NDArray[ScalarT]) -> npt.NDArray[ScalarT]:
        """Back onto the file's own voxel grid."""
        return _apply(volume, self.from_ras)


def _apply(volume: npt.NDArray[ScalarT], ornt: npt.NDArray[np.float64]) -> npt.NDArray[ScalarT]:
    """Contiguous, filled channel by channel for a stack (no temporaries); a
    contiguous input already in place (RAS files) is returned as it is, as
    ``np.ascontiguousarray`` does for a 3D volume."""
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return np.ascontiguousarray(volume)
    if volume.ndim == 4:
        first = apply_orientation(volume[0], ornt)
        out = np.empty((volume.shape[0], *first.shape), volume.dtype)
        for c in range(volume.shape[0]):
            out[c] = apply_orientation(volume[c], ornt)
        return out
    return np.ascontiguousarray(apply_orientation(volume, ornt))
