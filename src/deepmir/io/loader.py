"""The subject loader every deepmir command uses.

Reads the modalities of one subject as laid out in the data contract, checks
them, and raises :class:`SubjectDataError` (one clear error type that names the
file and the problem) on bad input: missing file, unreadable or corrupt file,
4D or non-float data, NaN/Inf, grids that do not match, an empty brain mask.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import numpy.typing as npt

from deepmir.io.bids import ALL_MODALITIES, MODALITY_SUFFIX, SubjectRef

#: tolerance on affines when checking that modalities share one grid (mm)
AFFINE_TOLERANCE_MM = 1e-3


class SubjectDataError(ValueError):
    """Bad input for one subject. The message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class Subject:
    """One subject's images on their common grid, in file orientation.

    ``images`` maps modality key (``t2w``, ``swi``, ``qsm``) to a float32 3D
    array; ``qsm`` is in ppm. ``brain_mask`` is the contract's mask when present,
    else ``None``.
    """

    ref: SubjectRef
    images: dict[str, npt.NDArray[np.float32]]
    affine: npt.NDArray[np.float64]
    brain_mask: npt.NDArray[np.bool_] | None
    paths: dict[str, Path]

    @property
    def shape(self) -> tuple[int, int, int]:
        return next(iter(self.images.values())).shape


def _read(path: Path) -> tuple[Any, npt.NDArray[Any]]:
    if not path.exists():
        raise SubjectDataError(path, "file is missing")
    try:
        img = cast(nib.Nifti1Image, nib.load(str(path)))
        data = np.asanyarray(img.dataobj)
    except (gzip.BadGzipFile, zlib.error, EOFError, OSError) as exc:
        raise SubjectDataError(path, f"cannot be read (corrupt or truncated file: {exc})") from exc
    except Exception as exc:  # nibabel raises several types for a bad header
        raise SubjectDataError(path, f"is not a readable NIfTI image ({exc})") from exc
    return img, data


def _check_volume(path: Path, img: Any, data: npt.NDArray[Any], *, is_mask: bool) -> None:
    if data.ndim != 3 and not (data.ndim == 4 and data.shape[3] == 1):
        raise SubjectDataError(
            path, f"expected a 3D volume, got {data.ndim}D data of shape {tuple(data.shape)}"
        )
    if not is_mask:
        on_disk = np.dtype(img.get_data_dtype())
        scaled = img.dataobj.slope != 1 or img.dataobj.inter != 0
        if not np.issubdtype(on_disk, np.floating) and not scaled:
            raise SubjectDataError(
                path,
                f"holds {on_disk} data; expected floating point "
                "(convert to float32, e.g. with fslmaths -odt float)",
            )


def load_subject(
    root: str | Path,
    ref: SubjectRef,
    modalities: tuple[str, ...] = ALL_MODALITIES,
    require_mask: bool = False,
) -> Subject:
    """Read and check the ``modalities`` of one subject of a raw BIDS dataset.

    Parameters
    ----------
    root : BIDS dataset folder
    ref : the subject (and session)
    modalities : keys among ``t2w``, ``swi``, ``qsm``
    require_mask : if True, a missing ``desc-brain_mask`` is an error

    Raises
    ------
    SubjectDataError
        naming the file and the problem.
    """
    images: dict[str, npt.NDArray[np.float32]] = {}
    paths: dict[str, Path] = {}
    affine: npt.NDArray[np.float64] | None = None
    shape: tuple[int, ...] | None = None
    first: Path | None = None
    for modality in modalities:
        if modality not in MODALITY_SUFFIX:
            raise ValueError(f"unknown modality {modality!r}")
        path = ref.modality_path(root, modality)
        img, data = _read(path)
        _check_volume(path, img, data, is_mask=False)
        arr = np.asarray(data, dtype=np.float32).reshape(data.shape[:3])
        bad = ~np.isfinite(arr)
        if bad.any():
            raise SubjectDataError(path, f"contains {int(bad.sum())} NaN or infinite voxels")
        aff = np.asarray(img.affine, dtype=np.float64)
        if affine is None:
            affine, shape, first = aff, arr.shape, path
        else:
            _check_grid(path, arr.shape, aff, first, shape, affine)  # type: ignore[arg-type]
        images[modality] = arr
        paths[modality] = path

    mask: npt.NDArray[np.bool_] | None = None
    mask_path = ref.mask_path(root)
    if mask_path.exists():
        img, data = _read(mask_path)
        _check_volume(mask_path, img, data, is_mask=True)
        m = np.asarray(data).reshape(data.shape[:3])
        if not np.all(np.isfinite(m)):
            raise SubjectDataError(mask_path, "contains NaN or infinite voxels")
        if affine is not None:
            _check_grid(mask_path, m.shape, np.asarray(img.affine), first, shape, affine)  # type: ignore[arg-type]
        mask = m > 0.5
        if not mask.any():
            raise SubjectDataError(mask_path, "brain mask is empty (no voxel > 0.5)")
        paths["mask"] = mask_path
    elif require_mask:
        raise SubjectDataError(mask_path, "file is missing")
    if affine is None:
        raise ValueError("no modality requested")
    return Subject(ref=ref, images=images, affine=affine, brain_mask=mask, paths=paths)


def _check_grid(
    path: Path,
    shape: tuple[int, ...],
    affine: npt.NDArray[np.float64],
    first: Path,
    first_shape: tuple[int, ...],
    first_affine: npt.NDArray[np.float64],
) -> None:
    if tuple(shape) != tuple(first_shape):
        raise SubjectDataError(
            path,
            f"grid does not match {first.name}: shape {tuple(shape)} vs "
            f"{tuple(first_shape)}; co-register and resample the modalities to one grid",
        )
    if not np.allclose(affine, first_affine, atol=AFFINE_TOLERANCE_MM):
        raise SubjectDataError(
            path,
            f"grid does not match {first.name}: the affines differ by up to "
            f"{float(np.abs(affine - first_affine).max()):.4g} mm; "
            "co-register and resample the modalities to one grid",
        )
