"""Atomic writes: an output file is either complete or absent.

Every writer in deepmir goes through these helpers: data are written to a
temporary name in the destination folder and renamed into place, so an
interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt


def _temporary_next_to(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes)  # keep .nii.gz so nibabel compresses
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent
    )
    os.close(fd)
    return Path(tmp_name)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success."""
    final = Path(path)
    tmp = _temporary_next_to(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_group() -> Iterator[Callable[[str | os.PathLike[str]], Path]]:
    """All or nothing for a set of files: yields ``stage(final) -> temporary path``;
    when the block succeeds every temporary file is renamed into place, when it
    fails they are all deleted (a subject's outputs are all there or none is)."""
    staged: list[tuple[Path, Path]] = []

    def stage(path: str | os.PathLike[str]) -> Path:
        tmp = _temporary_next_to(Path(path))
        staged.append((tmp, Path(path)))
        return tmp

    try:
        yield stage
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON (indented, sorted keys kept in insertion order) atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_nifti(
    path: str | os.PathLike[str],
    data: npt.NDArray[Any],
    affine: npt.NDArray[np.floating[Any]],
    dtype: npt.DTypeLike | None = None,
) -> None:
    """Write a NIfTI-1 image atomically with an exact on-disk dtype.

    Parameters
    ----------
    path : path ending in ``.nii`` or ``.nii.gz``
    data : 3D array in voxel order (i, j, k)
    affine : 4x4 voxel-to-scanner (mm) matrix
    dtype : on-disk data type; defaults to ``data.dtype``
    """
    with atomic_path(path) as tmp:
        nib.save(nifti_image(data, affine, dtype), tmp)


def nifti_image(
    data: npt.NDArray[Any],
    affine: npt.NDArray[np.floating[Any]],
    dtype: npt.DTypeLike | None = None,
) -> nib.Nifti1Image:
    """A NIfTI-1 image with an exact on-disk dtype, mm units, qform = sform = affine."""
    arr = np.asarray(data if dtype is None else data.astype(dtype, copy=False))
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.header.set_data_dtype(arr.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    return img
