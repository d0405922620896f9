"""Training subjects: normalized modality stacks and reference labels, cropped to the brain."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

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


def read_annotated(data: str | Path, modalities: tuple[str, ...]) -> list[RawSubject]:
    """Read every subject of a simulated BIDS dataset with its reference labels."""
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
        out.append(RawSubject(ref, subject.images, mask, dseg, instances, subject.affine))
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
