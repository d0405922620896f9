"""The subject loader every deepmir command uses.

Reads the modalities of one subject as laid out in the data contract, checks
them, and raises :class:`SubjectDataError` (one clear error type that names the
file and the problem) on bad input: missing, empty or corrupt file (a gzip
stream's CRC32 and length are verified before the data are used), 4D or
non-float data, NaN/Inf, grids that do not match, an empty brain mask.

With ``crop_margin`` the images are cropped to the brain box as each file is
read, so that only one full-size volume is in memory at a time (the memory
of a 512 x 512 x 400 input stays well below 3 GB).
"""

from __future__ import annotations

import gzip
import types
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import nibabel as nib
import numpy as np
import numpy.typing as npt

from deepmir.io.bids import ALL_MODALITIES, MODALITY_SUFFIX, SubjectRef

#: tolerance on affines when checking that modalities share one grid (mm)
AFFINE_TOLERANCE_MM = 1e-3
#: ``brain_mask_from``'s threshold: voxels with signal
SIGNAL_THRESHOLD = 1e-6

Box = tuple[slice, slice, slice]

# .nii.gz is read with ISA-L's gzip (python-isal) where it is installed: the
# same format and checks (CRC32, length) as the standard library's, faster to
# decompress (make bench-predict times the whole step); the standard library's otherwise
_gzip: types.ModuleType = gzip
_GZIP_ERRORS: tuple[type[Exception], ...] = (gzip.BadGzipFile, zlib.error, EOFError)
try:
    from isal import igzip, isal_zlib

    _gzip = igzip
    _GZIP_ERRORS += (cast(type[Exception], isal_zlib.error),)
except ImportError:  # pragma: no cover - isal is a dependency; src/ may run without it
    pass


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
    else ``None``. ``affine`` is the file's. When the subject was loaded with a
    crop, ``box`` is the crop (file voxel slices) of the images and mask, and
    ``grid_shape`` the file's full shape; otherwise ``box`` is ``None``.
    """

    ref: SubjectRef
    images: dict[str, npt.NDArray[np.float32]]
    affine: npt.NDArray[np.float64]
    brain_mask: npt.NDArray[np.bool_] | None
    paths: dict[str, Path]
    box: Box | None = None
    grid_shape: tuple[int, int, int] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the arrays held (the crop's when cropped)."""
        return next(iter(self.images.values())).shape  # type: ignore[return-value]

    @property
    def full_shape(self) -> tuple[int, int, int]:
        """Shape of the input grid."""
        return self.grid_shape if self.grid_shape is not None else self.shape

    @property
    def origin(self) -> tuple[int, int, int]:
        """Input-grid voxel index of the arrays' voxel (0, 0, 0)."""
        if self.box is None:
            return (0, 0, 0)
        i, j, k = (int(s.start) for s in self.box)
        return (i, j, k)

    @property
    def crop_affine(self) -> npt.NDArray[np.float64]:
        """Voxel-to-scanner matrix of the arrays held."""
        affine = self.affine.copy()
        affine[:3, 3] = self.affine[:3, :3] @ np.asarray(self.origin, float) + self.affine[:3, 3]
        return affine

    def uncrop(self, volume: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """A volume on the arrays' grid put back on the input grid (zeros around)."""
        if self.box is None:
            return volume
        full = np.zeros(self.full_shape, volume.dtype)
        full[self.box] = volume
        return full


def _drain(stream: IO[bytes]) -> None:
    """Read a gzip stream to its end: gzip checks the CRC32 and length there."""
    while stream.read(1 << 20):
        pass


def read_nifti(path: Path) -> tuple[Any, npt.NDArray[Any]]:
    """A NIfTI file's image (header, affine) and data array, or a clear error.

    A ``.gz`` file is read as one stream, header and data, then to its end,
    where gzip verifies the CRC32 and length of everything decompressed (what
    ``gzip -t`` does): a flipped byte cannot go through as changed voxels.
    """
    if not path.exists():
        raise SubjectDataError(path, "file is missing")
    if path.is_dir():
        raise SubjectDataError(path, "is a folder, not a NIfTI file")
    if path.stat().st_size == 0:
        raise SubjectDataError(path, "file is empty (0 bytes)")
    if not path.name.endswith(".gz"):
        return _read_plain(path)
    with open(path, "rb") as raw:
        if raw.read(2) != b"\x1f\x8b":
            raise SubjectDataError(
                path, "is not a gzip file although its name ends in .gz (not a .nii.gz image)"
            )
    try:
        with _gzip.open(path, "rb") as stream:
            try:
                img = nib.Nifti1Image.from_stream(stream)
                data = np.asanyarray(img.dataobj)
            except _GZIP_ERRORS:
                raise
            except Exception as exc:  # nibabel raises several types for a bad header
                _drain(stream)  # a corrupt stream is the better explanation
                raise SubjectDataError(path, f"is not a readable NIfTI image ({exc})") from exc
            _drain(stream)
    except _GZIP_ERRORS as exc:
        raise SubjectDataError(
            path, f"is corrupt or truncated (gzip integrity check failed: {exc})"
        ) from exc
    except OSError as exc:
        raise SubjectDataError(path, f"cannot be read ({exc})") from exc
    return img, data


def _read_plain(path: Path) -> tuple[Any, npt.NDArray[Any]]:
    try:
        img = cast(nib.Nifti1Image, nib.load(str(path)))
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError) as exc:
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
    crop_margin: int | None = None,
) -> Subject:
    """Read and check the ``modalities`` of one subject of a raw BIDS dataset.

    Parameters
    ----------
    root : BIDS dataset folder
    ref : the subject (and session)
    modalities : keys among ``t2w``, ``swi``, ``qsm``
    require_mask : if True, a missing ``desc-brain_mask`` is an error
    crop_margin : if given, crop the images (and mask) to the brain's bounding
        box plus this many voxels as each file is read: the brain mask's box,
        or without a mask the box of the voxels with signal in any modality
        (:func:`deepmir.model.preprocess.brain_mask_from`'s brain). Every check
        still looks at the whole file.

    Raises
    ------
    SubjectDataError
        naming the file and the problem.
    """
    from deepmir.model.preprocess import brain_box

    for modality in modalities:
        if modality not in MODALITY_SUFFIX:
            raise ValueError(f"unknown modality {modality!r}")
    if not modalities:
        raise ValueError("no modality requested")
    check_discovered(root, ref, modalities)
    mask_path = ref.mask_path(root)
    _check_grids([ref.modality_path(root, m) for m in modalities] + [mask_path])
    full_mask: npt.NDArray[np.bool_] | None = None
    mask_affine: npt.NDArray[np.float64] | None = None
    if ref.has_mask(root):
        img, data = read_nifti(mask_path)
        _check_volume(mask_path, img, data, is_mask=True)
        m = np.asarray(data).reshape(data.shape[:3])
        if not np.all(np.isfinite(m)):
            raise SubjectDataError(mask_path, "contains NaN or infinite voxels")
        full_mask = m > 0.5
        mask_affine = np.asarray(img.affine, dtype=np.float64)
        del img, data, m
    elif require_mask:
        raise SubjectDataError(mask_path, "file is missing")

    images: dict[str, npt.NDArray[np.float32]] = {}
    paths: dict[str, Path] = {}
    affine: npt.NDArray[np.float64] | None = None
    shape: tuple[int, int, int] | None = None
    first: Path | None = None
    box: Box | None = None
    # without a mask: each modality cropped to its own voxels with signal, for now
    parts: dict[str, tuple[npt.NDArray[np.float32], Box] | None] = {}
    for modality in modalities:
        path = ref.modality_path(root, modality)
        img, data = read_nifti(path)
        _check_volume(path, img, data, is_mask=False)
        arr: npt.NDArray[Any] = data.reshape(data.shape[:3])
        n_bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if n_bad:
            raise SubjectDataError(path, f"contains {n_bad} NaN or infinite voxels")
        aff = np.asarray(img.affine, dtype=np.float64)
        if affine is None or shape is None or first is None:
            affine, shape, first = aff, (arr.shape[0], arr.shape[1], arr.shape[2]), path
            if full_mask is not None and mask_affine is not None:
                _check_grid(mask_path, full_mask.shape, mask_affine, first, shape, affine)
                if not full_mask.any():
                    raise SubjectDataError(mask_path, "brain mask is empty (no voxel > 0.5)")
                if crop_margin is not None:
                    box = _box3(brain_box(full_mask, crop_margin))
        else:
            _check_grid(path, arr.shape, aff, first, shape, affine)
        if crop_margin is None:
            images[modality] = np.asarray(arr, dtype=np.float32)
        elif box is not None:
            images[modality] = np.ascontiguousarray(arr[box], dtype=np.float32)
        else:
            signal = np.abs(arr) > SIGNAL_THRESHOLD
            own = _box3(brain_box(signal, 0)) if signal.any() else None
            del signal
            parts[modality] = (
                None if own is None else (np.ascontiguousarray(arr[own], np.float32), own)
            )
        paths[modality] = path
        del img, data, arr

    if affine is None or shape is None:  # pragma: no cover - modalities is not empty
        raise ValueError("no modality requested")
    if crop_margin is not None and box is None:
        box = _union_box(parts, shape, crop_margin)
        for modality, part in parts.items():
            volume = np.zeros(tuple(s.stop - s.start for s in box), np.float32)
            if part is not None:
                values, own = part
                volume[
                    tuple(
                        slice(o.start - b.start, o.stop - b.start)
                        for o, b in zip(own, box, strict=True)
                    )
                ] = values
            images[modality] = volume
    mask: npt.NDArray[np.bool_] | None = None
    if full_mask is not None:
        mask = np.ascontiguousarray(full_mask[box]) if box is not None else full_mask
        paths["mask"] = mask_path
    return Subject(
        ref=ref,
        images=images,
        affine=affine,
        brain_mask=mask,
        paths=paths,
        box=box,
        grid_shape=shape if box is not None else None,
    )


def check_discovered(root: str | Path, ref: SubjectRef, modalities: tuple[str, ...]) -> None:
    """For a discovered subject (:func:`deepmir.io.bids.find_subjects`): a
    modality with several candidate files, or none, is an error that lists them
    (or the files that were found)."""
    if ref.files is None:
        return
    for modality in modalities:
        problem = ref.problem(modality)
        if problem is not None:
            raise SubjectDataError(ref.anat_dir(root), problem)
    missing = [m for m in modalities if m not in ref.files.modalities]
    if missing:
        raise SubjectDataError(
            ref.modality_path(root, missing[0]), ref.absent_message(root, missing)
        )


def _box3(box: tuple[slice, ...]) -> Box:
    return (box[0], box[1], box[2])


def _union_box(
    parts: dict[str, tuple[npt.NDArray[np.float32], Box] | None],
    shape: tuple[int, int, int],
    margin: int,
) -> Box:
    """The box of the voxels with signal in any modality, plus ``margin``."""
    boxes = [own for part in parts.values() if part is not None for _, own in [part]]
    if not boxes:
        return (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    lo = [max(0, min(b[a].start for b in boxes) - margin) for a in range(3)]
    hi = [min(shape[a], max(b[a].stop for b in boxes) + margin) for a in range(3)]
    return (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))


def _grid(path: Path) -> tuple[tuple[int, ...], npt.NDArray[np.float64]] | None:
    """A file's grid from its header alone, or None (missing or unreadable: the
    full read reports that)."""
    try:
        img = cast(nib.Nifti1Image, nib.load(str(path)))
        return tuple(int(n) for n in img.shape[:3]), np.asarray(img.affine, dtype=np.float64)
    except Exception:  # nibabel raises several types for a bad header
        return None


def _check_grids(paths: list[Path]) -> None:
    """All files on one grid; the odd one out is named, against the grid most files
    share (the first file's on a tie). Only headers are read."""
    grids = [(p, g) for p in paths if p.is_file() and (g := _grid(p)) is not None]

    def same(a: tuple[tuple[int, ...], Any], b: tuple[tuple[int, ...], Any]) -> bool:
        return a[0] == b[0] and bool(np.allclose(a[1], b[1], atol=AFFINE_TOLERANCE_MM))

    if not grids:
        return
    votes = [sum(same(g, h) for _, h in grids) for _, g in grids]
    reference_path, reference = grids[votes.index(max(votes))]
    for path, grid in grids:
        if not same(grid, reference):
            _check_grid(path, grid[0], grid[1], reference_path, reference[0], reference[1])


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
