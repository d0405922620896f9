"""Training subjects: normalized modality stacks and reference labels, cropped to the brain."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt

from deepmir.inference.orientation import Reorientation
from deepmir.inference.resample import WORKING_SPACING_MM, Resampler, instances_forward
from deepmir.io.bids import SubjectRef, dataset_problem, find_subjects
from deepmir.io.loader import SubjectDataError, load_subject, read_nifti
from deepmir.model.preprocess import (
    Normalization,
    brain_box,
    brain_mask_from,
    fit_normalization,
    normalize,
)

REFERENCE = Path("derivatives") / "reference"


@dataclass
class TrainingSubject:
    name: str
    image: npt.NDArray[np.float32]  # (C, I, J, K), normalized, brain crop
    dseg: npt.NDArray[np.uint8]  # (I, J, K)
    instances: npt.NDArray[np.int16]
    brain: npt.NDArray[np.bool_]
    affine: npt.NDArray[np.float64]  # of the crop


@dataclass
class RawSubject:
    ref: SubjectRef
    images: dict[str, npt.NDArray[np.float32]]
    mask: npt.NDArray[np.bool_]
    dseg: npt.NDArray[np.uint8]
    instances: npt.NDArray[np.int16]
    affine: npt.NDArray[np.float64]


def to_working_grid(
    images: dict[str, npt.NDArray[np.float32]],
    mask: npt.NDArray[np.bool_] | None,
    labels: tuple[npt.NDArray[np.uint8], npt.NDArray[np.int16]] | None,
    affine: npt.NDArray[np.float64],
    spacing_mm: float | None = None,
) -> tuple[
    dict[str, npt.NDArray[np.float32]],
    npt.NDArray[np.bool_] | None,
    tuple[npt.NDArray[np.uint8], npt.NDArray[np.int16]] | None,
    npt.NDArray[np.float64],
]:
    """Images, mask and reference labels reoriented to RAS and resampled to the
    working grid, the same way predict does (:mod:`deepmir.inference.resample`).

    ``spacing_mm=None``: 1 mm (:data:`WORKING_SPACING_MM`), except for data
    whose voxels are all 1.5 mm or coarser (the 2 mm test phantoms), which
    keep their own voxel size. Labels go through :func:`instances_forward`
    (every lesion keeps a voxel) and each instance keeps its class.
    """
    shape = next(iter(images.values())).shape
    orient = Reorientation.of(affine, shape)
    ras = {m: orient.forward(v) for m, v in images.items()}
    sizes = nib.affines.voxel_sizes(orient.ras_affine)
    if spacing_mm is None:
        spacing_mm = WORKING_SPACING_MM if sizes.min() < 1.5 else float(np.median(sizes))
    grid = Resampler.of(orient.ras_affine, ras[next(iter(ras))].shape, spacing_mm)
    out = {m: grid.forward(v, 1).astype(np.float32) for m, v in ras.items()}
    mask_w = None if mask is None else grid.forward(orient.forward(mask), 1).astype(bool)
    labels_w = None
    if labels is not None:
        dseg = orient.forward(labels[0])
        instances = orient.forward(labels[1])
        if instances.any():
            inst_w = instances_forward(instances, grid)
            lut = np.zeros(int(instances.max()) + 1, np.uint8)
            lut[instances[instances > 0]] = dseg[instances > 0]
            labels_w = (lut[inst_w], inst_w.astype(np.int16))
        else:
            labels_w = (grid.forward(dseg, 0), grid.forward(instances, 0))
    return out, mask_w, labels_w, grid.target_affine


def read_annotated(
    data: str | Path, modalities: tuple[str, ...], spacing_mm: float | None = None
) -> list[RawSubject]:
    """Read every subject of a simulated BIDS dataset with its reference labels,
    on the working grid (:func:`to_working_grid`)."""
    data = Path(data)
    out = []
    problem = dataset_problem(data)
    if problem:
        raise SubjectDataError(data, problem)
    refs = find_subjects(data)
    for ref in refs:
        subject = load_subject(data, ref, modalities)
        anat = ref.anat_dir(data / REFERENCE)
        dseg_path = anat / f"{ref.prefix}_dseg.nii.gz"
        if not dseg_path.exists():
            raise SubjectDataError(dseg_path, "reference labels are missing")
        dseg = np.asarray(read_nifti(dseg_path)[1]).astype(np.uint8)
        inst_path = anat / f"{ref.prefix}_desc-instances_dseg.nii.gz"
        instances = (
            np.asarray(read_nifti(inst_path)[1]).astype(np.int16)
            if inst_path.exists()
            else np.zeros_like(dseg, np.int16)
        )
        mask = (
            subject.brain_mask
            if subject.brain_mask is not None
            else brain_mask_from(subject.images)
        )
        images, mask_w, labels, affine = to_working_grid(
            subject.images, mask, (dseg, instances), subject.affine, spacing_mm
        )
        assert mask_w is not None and labels is not None
        out.append(RawSubject(ref, images, mask_w, labels[0], labels[1], affine))
    return out


def fit(raw: list[RawSubject], modalities: tuple[str, ...]) -> Normalization:
    return fit_normalization(
        modalities,
        [r.images["qsm"] for r in raw if "qsm" in r.images],
        [r.mask for r in raw if "qsm" in r.images],
    )


def prepare(raw: RawSubject, norm: Normalization, margin: int = 4) -> TrainingSubject:
    box = brain_box(raw.mask, margin)
    image = normalize(raw.images, raw.mask, norm)[(slice(None), *box)]
    affine = raw.affine.copy()
    affine[:3, 3] = raw.affine[:3, :3] @ np.array([b.start for b in box]) + raw.affine[:3, 3]
    return TrainingSubject(
        name=str(raw.ref),
        image=np.ascontiguousarray(image),
        dseg=raw.dseg[box],
        instances=raw.instances[box],
        brain=raw.mask[box],
        affine=affine,
    )
