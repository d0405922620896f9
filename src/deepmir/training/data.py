"""Training subjects: normalized modality stacks and reference labels, cropped to the brain."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt

from deepmir.inference.orientation import Reorientation
from deepmir.inference.resample import WORKING_SPACING_MM, Resampler, instances_forward
from deepmir.io.bids import SubjectRef, dataset_problem, find_subjects, simulation_record
from deepmir.io.loader import Subject, SubjectDataError, load_subject, read_nifti
from deepmir.model.preprocess import (
    Normalization,
    brain_box,
    derive_brain_mask,
    fit_normalization,
    normalize,
)

REFERENCE = Path("derivatives") / "reference"

#: brain-box margin (voxels) of the training crops
CROP_MARGIN = 4

#: the random stream of the mask jitter (apart from the training loop's)
MASK_JITTER_STREAM = 0x6D61736B


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
    data: str | Path | Sequence[str | Path],
    modalities: tuple[str, ...],
    spacing_mm: float | None = None,
    crop_margin: int | None = None,
    mask_jitter: float = 0.0,
    seed: int = 0,
    reference: str | Path | None = None,
) -> list[RawSubject]:
    """Every subject of one or more simulated BIDS datasets with its reference
    labels, on the working grid (:func:`iter_pooled`)."""
    return list(
        iter_pooled(data, modalities, spacing_mm, crop_margin, mask_jitter, seed, reference)
    )


def iter_pooled(
    data: str | Path | Sequence[str | Path],
    modalities: tuple[str, ...],
    spacing_mm: float | None = None,
    crop_margin: int | None = None,
    mask_jitter: float = 0.0,
    seed: int = 0,
    reference: str | Path | None = None,
) -> Iterator[RawSubject]:
    """The subjects of one or more simulated BIDS datasets (pooled cohorts,
    e.g. one cohort continued in a second folder), one at a time
    (:func:`iter_annotated`). A subject name found in two folders is refused:
    the pooled subjects must be distinct. ``reference``: :func:`iter_annotated`
    (one dataset only)."""
    folders = as_folders(data)
    if reference is not None and len(folders) != 1:
        raise ValueError("a reference folder goes with one dataset, not pooled ones")
    seen: dict[str, Path] = {}
    for folder in folders:
        labelled = iter_annotated(
            folder, modalities, spacing_mm, crop_margin, mask_jitter, seed, reference
        )
        for r in labelled:
            name = str(r.ref)
            if name in seen:
                raise SubjectDataError(
                    folder, f"{name} is also in {seen[name]}: pool distinct subjects"
                )
            seen[name] = folder
            yield r


def as_folders(data: str | Path | Sequence[str | Path]) -> list[Path]:
    """One dataset folder or several, as a list of paths."""
    return [Path(data)] if isinstance(data, str | Path) else [Path(d) for d in data]


def folder_record(data: str | Path | Sequence[str | Path]) -> str | list[str]:
    """The dataset folder(s) as recorded in a model's config: one absolute
    path, or a list of them for pooled cohorts."""
    paths = [str(f.resolve()) for f in as_folders(data)]
    return paths[0] if len(paths) == 1 else paths


def interrupted_cohort(data: Path, n_found: int) -> str | None:
    """Why a phantom cohort folder with ``n_found`` subjects is incomplete, or
    None: ``deepmir simulate`` describes the cohort before writing its
    subjects, so an interrupted run leaves fewer subject folders than its
    ``dataset_description.json`` records (and a Makefile target stamped on
    that file would train on them silently). Folders without a simulation
    record (user data) are not checked."""
    expected = (simulation_record(data) or {}).get("n_subjects")
    if not isinstance(expected, int) or n_found >= expected:
        return None
    return (
        f"an incomplete phantom cohort: dataset_description.json records {expected} "
        f"simulated subjects, {n_found} found (an interrupted deepmir simulate?); simulate "
        "it again with --overwrite, or continue it with its seed and --first-index"
    )


def iter_annotated(
    data: str | Path,
    modalities: tuple[str, ...],
    spacing_mm: float | None = None,
    crop_margin: int | None = None,
    mask_jitter: float = 0.0,
    seed: int = 0,
    reference: str | Path | None = None,
) -> Iterator[RawSubject]:
    """Read the subjects of a simulated BIDS dataset one at a time, with their
    reference labels, on the working grid (:func:`to_working_grid`).

    ``crop_margin``: crop each subject to its brain box plus this many voxels
    as soon as it is read (a training cohort then holds brains, not fields of
    view; :func:`prepare` gives the same arrays either way).

    ``mask_jitter``: with this probability per subject (drawn from ``seed``),
    the given brain mask is replaced by the one predict derives for data
    without a mask (:func:`derive_brain_mask`, from the QSM's support or,
    half of the time, from the magnitude alone as for SWI-only input), so
    that the network learns to work with either. Reference lesions outside
    the mask used are dropped (nothing outside a mask is ever predicted).

    ``reference``: the reference labels' folder (default ``derivatives/reference``
    in ``data``); with one given, only the subjects it has labels for are read
    (a rated subset: :func:`deepmir.evaluation.ratings.write_rated_reference`).

    A subject with raw GRE magnitude + phase and no SWI or QSM file gets them
    computed by predict's own GRE path (:func:`_load_with_gre`), so a model
    can be trained, tuned and calibrated on what it will see on raw-GRE
    cohorts.
    """
    data = Path(data)
    refs = checked_subjects(data)
    rng = np.random.default_rng([seed, MASK_JITTER_STREAM])
    label_root = data / REFERENCE if reference is None else Path(reference)
    for ref in refs:
        if reference is not None and not reference_path(label_root, ref).exists():
            continue
        subject = _load_with_gre(data, ref, modalities)
        dseg, instances = read_reference(label_root, ref)
        jitter, from_magnitude = rng.random() < mask_jitter, rng.random() < 0.5
        if jitter or subject.brain_mask is None:
            sources = subject.images
            if jitter and from_magnitude:
                sources = {m: v for m, v in subject.images.items() if m != "qsm"}
            mask = derive_brain_mask(sources, subject.affine)[0]
            dseg[~mask] = 0
            instances[~mask] = 0
        else:
            mask = subject.brain_mask
        images, mask_w, labels, affine = to_working_grid(
            subject.images, mask, (dseg, instances), subject.affine, spacing_mm
        )
        del subject
        assert mask_w is not None and labels is not None
        raw = RawSubject(ref, images, mask_w, labels[0], labels[1], affine)
        yield raw if crop_margin is None else crop(raw, crop_margin)


def _load_with_gre(data: Path, ref: SubjectRef, modalities: tuple[str, ...]) -> Subject:
    """:func:`load_subject`, with the SWI and QSM a subject lacks computed from
    its raw GRE exactly as ``deepmir predict`` does
    (:func:`deepmir.inference.fromgre.derive_from_gre`, phase sign detected),
    written to a temporary folder that is gone once they are read."""
    with gre_derived(data, ref, modalities) as derived:
        return load_subject(data, derived, modalities)


@contextlib.contextmanager
def gre_derived(data: Path, ref: SubjectRef, modalities: tuple[str, ...]) -> Iterator[SubjectRef]:
    """The ref to read the subject's ``modalities`` with from ``data``: the
    subject itself, or, when it lacks SWI or QSM but has raw GRE, a ref whose
    SWI and QSM are computed by predict's GRE path into a temporary folder,
    gone on leaving the block."""
    from deepmir.inference.fromgre import derive_from_gre, needs_gre

    lacking = [m for m in modalities if m in ("swi", "qsm") and not ref.has(data, m)]
    if not lacking or not needs_gre(data, ref):
        yield ref
        return
    with tempfile.TemporaryDirectory(prefix="deepmir-fromgre-") as tmp:
        yield derive_from_gre(data, Path(tmp), ref)[0]


def checked_subjects(data: Path) -> list[SubjectRef]:
    """The subjects of a BIDS dataset; a clear error for a folder that is not
    one, or a simulated cohort whose writing was interrupted."""
    problem = dataset_problem(data)
    refs = [] if problem else find_subjects(data)
    problem = problem or interrupted_cohort(data, len(refs))
    if problem:
        raise SubjectDataError(data, problem)
    return refs


def reference_path(label_root: Path, ref: SubjectRef) -> Path:
    """The subject's reference dseg in the labels' folder."""
    return ref.anat_dir(label_root) / f"{ref.prefix}_dseg.nii.gz"


def read_reference(
    label_root: Path, ref: SubjectRef
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int16]]:
    """The subject's reference labels on its own grid: the dseg and the lesion
    instances (zeros when the reference has no instance map)."""
    dseg_path = reference_path(label_root, ref)
    if not dseg_path.exists():
        raise SubjectDataError(dseg_path, "reference labels are missing")
    dseg = np.asarray(read_nifti(dseg_path)[1]).astype(np.uint8)
    inst_path = dseg_path.with_name(f"{ref.prefix}_desc-instances_dseg.nii.gz")
    instances = (
        np.asarray(read_nifti(inst_path)[1]).astype(np.int16)
        if inst_path.exists()
        else np.zeros_like(dseg, np.int16)
    )
    return dseg, instances


def iter_references(
    data: str | Path | Sequence[str | Path],
) -> Iterator[tuple[Path, SubjectRef]]:
    """(dataset, subject) of one or more simulated BIDS datasets with reference
    labels, checked as :func:`iter_annotated` checks them; a subject name found
    in two pooled folders is refused."""
    seen: dict[str, Path] = {}
    for folder in as_folders(data):
        for ref in checked_subjects(folder):
            name = str(ref)
            if name in seen:
                raise SubjectDataError(
                    folder, f"{name} is also in {seen[name]}: pool distinct subjects"
                )
            seen[name] = folder
            yield folder, ref


def crop(raw: RawSubject, margin: int) -> RawSubject:
    """``raw`` cut to its brain box plus ``margin`` voxels (affine shifted)."""
    box = brain_box(raw.mask, margin)
    return RawSubject(
        raw.ref,
        {m: np.ascontiguousarray(v[box]) for m, v in raw.images.items()},
        np.ascontiguousarray(raw.mask[box]),
        np.ascontiguousarray(raw.dseg[box]),
        np.ascontiguousarray(raw.instances[box]),
        _shifted(raw.affine, box),
    )


def _shifted(affine: npt.NDArray[np.float64], box: tuple[slice, ...]) -> npt.NDArray[np.float64]:
    out = affine.copy()
    out[:3, 3] = affine[:3, :3] @ np.array([b.start for b in box]) + affine[:3, 3]
    return out


def fit(raw: list[RawSubject], modalities: tuple[str, ...]) -> Normalization:
    return fit_normalization(
        modalities,
        [r.images["qsm"] for r in raw if "qsm" in r.images],
        [r.mask for r in raw if "qsm" in r.images],
    )


def prepare(raw: RawSubject, norm: Normalization, margin: int = CROP_MARGIN) -> TrainingSubject:
    box = brain_box(raw.mask, margin)
    image = normalize(raw.images, raw.mask, norm)[(slice(None), *box)]
    affine = _shifted(raw.affine, box)
    return TrainingSubject(
        name=str(raw.ref),
        image=np.ascontiguousarray(image),
        dseg=raw.dseg[box],
        instances=raw.instances[box],
        brain=raw.mask[box],
        affine=affine,
    )
