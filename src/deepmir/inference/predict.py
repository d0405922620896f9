"""``deepmir predict``: a model over a BIDS dataset, outputs per the data contract.

Per subject: load and check the model's modalities (:mod:`deepmir.io.loader`),
cropped to the brain box as each file is read, check that the values are
plausible (:mod:`deepmir.io.plausibility`), reorient the crop to RAS, resample
it to the model's working grid (its voxel size, the input's axes:
:mod:`deepmir.inference.resample`), normalize with the model's stored
parameters, sliding-window probabilities (MONAI, Gaussian blending), lesions
(one class each), then everything is written back on the input's own grid and
affine, with the working grid recorded in the dseg's JSON sidecar. Only the
crop is ever held (float32), except one full-size volume at a time while
reading and writing.

Each subject gets the best shipped model for its own files (``--model
default``): the one with the most modalities whose required modalities it
has, so that one subject missing a file changes nothing for the others; the
choice is printed, written in the dseg's JSON sidecar (``Model``) and shown
in the cohort index. Shipped models are loaded once per process.

A subject's files are rendered in memory first and then moved into place
together, so they are all there or none is. A failing subject (bad input, a
write error such as a full disk) is reported, its outputs from an earlier run
are removed, and the others go on; the cohort index is written in any case.
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import torch

from deepmir.inference.calibration import Calibration
from deepmir.inference.fromgre import gre_output_paths
from deepmir.inference.lesions import (
    Lesions,
    PostProcessing,
    counts_and_centroids,
    lesions_from_probabilities,
    voxel_spacing,
)
from deepmir.inference.orientation import Reorientation
from deepmir.inference.resample import Resampler, instances_backward
from deepmir.inference.sliding import predict_probabilities
from deepmir.io.atomic import (
    OutputError,
    json_text,
    nifti_image,
    os_reason,
    prepare_output_dir,
    remove_stale_temporaries,
    write_all,
    write_text,
)
from deepmir.io.bids import (
    ALL_MODALITIES,
    EntityFilter,
    SubjectRef,
    dataset_problem,
    find_subjects,
    parse_filters,
)
from deepmir.io.bids_meta import bids_uri
from deepmir.io.loader import Subject, SubjectDataError, load_subject
from deepmir.io.plausibility import check_images
from deepmir.labels import LABELS, LESION_CLASSES
from deepmir.model.checkpoint import ModelCard, ModelError, check_modalities, load_model
from deepmir.model.preprocess import derive_brain_mask, normalize

#: shipped models (inside the package), most modalities first
SHIPPED_MODELS = ("t2w-swi-qsm",)
LESION_COLUMNS = [
    "lesion_id",
    "label",
    "i",
    "j",
    "k",
    "x",
    "y",
    "z",
    "volume_mm3",
    "probability",
    "chi_ppm",
    "region",
    "name",
    "chi_volume_ppm_mm3",
    "score",  # the raw lesion score; probability is calibrated when the model is
    # from the registration to MNI152 (deepmir.cohort.regions); n/a without it
    "structure",
    "mni_x",
    "mni_y",
    "mni_z",
]


def shipped_model_dir(name: str) -> Path:
    return Path(str(resources.files("deepmir") / "models" / name))


@dataclass
class LoadedModel:
    net: torch.nn.Module
    card: ModelCard
    name: str


@functools.cache
def _load_shipped(folder: str, name: str) -> LoadedModel:
    net, card = load_model(folder)
    return LoadedModel(net, card, f"default ({name})")


def shipped_model(name: str) -> LoadedModel:
    """A shipped model, loaded once per process (and folder)."""
    return _load_shipped(str(shipped_model_dir(name)), name)


def available_modalities(root: Path, ref: SubjectRef) -> tuple[str, ...]:
    """The modalities a subject has files for (an ambiguous one counts: reading
    it reports the ambiguity); SWI and QSM also when usable raw GRE can give
    them (:mod:`deepmir.inference.fromgre`)."""
    gre = ref.files is not None and bool(ref.files.gre)
    return tuple(m for m in ALL_MODALITIES if ref.has(root, m) or (gre and m in ("swi", "qsm")))


def serves(card: ModelCard, available: tuple[str, ...]) -> bool:
    """Whether a model can run on a subject with ``available`` modalities."""
    return all(m in available for m in card.required_modalities)


def choose_models(
    model: str | Path, root: Path, refs: list[SubjectRef]
) -> dict[SubjectRef, LoadedModel | str]:
    """The model of each subject, or why none serves it.

    ``default``: per subject, the first of :data:`SHIPPED_MODELS` (most
    modalities first) whose required modalities the subject has (its optional
    modalities may be absent); each shipped model is loaded once. A model
    folder: every subject uses it (loaded once; a bad folder raises
    :class:`ModelError` before any subject is done).
    """
    if str(model) != "default":
        net, card = load_model(model)
        loaded = LoadedModel(net, card, str(model))
        return dict.fromkeys(refs, loaded)
    out: dict[SubjectRef, LoadedModel | str] = {}
    for ref in refs:
        available = available_modalities(root, ref)
        choice: LoadedModel | str | None = None
        for name in SHIPPED_MODELS:
            candidate = shipped_model(name)
            if serves(candidate.card, available):
                choice = candidate
                break
        if choice is None:
            smallest = shipped_model(SHIPPED_MODELS[-1]).card
            missing = [m for m in smallest.required_modalities if m not in available]
            needs = " or ".join("+".join(shipped_model(n).card.modalities) for n in SHIPPED_MODELS)
            choice = (
                f"no shipped model serves this subject (they need {needs}); "
                + ref.absent_message(root, missing)
            )
        out[ref] = choice
    return out


def choose_model(model: str | Path, root: Path, refs: list[SubjectRef]) -> LoadedModel:
    """One model for all of ``refs`` (benchmarks that run one model): ``default``
    is the shipped model with the most modalities that every subject has (else
    the smallest); otherwise a model folder. ``predict_dataset`` chooses per
    subject instead (:func:`choose_models`)."""
    if str(model) != "default":
        net, card = load_model(model)
        return LoadedModel(net, card, str(model))
    for name in SHIPPED_MODELS:
        candidate = shipped_model(name)
        if all(serves(candidate.card, available_modalities(root, ref)) for ref in refs):
            return candidate
    return shipped_model(SHIPPED_MODELS[-1])


def model_record(model: LoadedModel) -> dict[str, Any]:
    """What the dseg sidecar says about the model that made it."""
    return {
        "Name": model.name,
        "Modalities": list(model.card.modalities),
        "OptionalModalities": list(model.card.optional_modalities),
        "WeightsSha256": model.card.weights_sha256,
    }


#: voxels kept around the brain's bounding box (the crop the network sees)
CROP_MARGIN = 4


@dataclass
class SubjectPrediction:
    """One subject's results, in the input's voxel orientation.

    The arrays cover the brain crop ``subject.box`` of the input grid (see
    :attr:`deepmir.io.loader.Subject.box`), except ``dseg``, which is on the
    whole input grid, and the probabilities, kept on the working grid and
    mapped back on demand (:meth:`probability_map`). ``subject.uncrop`` puts a
    crop array back on the grid.
    """

    ref: SubjectRef
    dseg: npt.NDArray[np.uint8]  # input grid
    lesions: Lesions  # crop
    table: list[dict[str, Any]]
    subject: Subject  # images and mask: crop
    working_grid: Resampler  # RAS-reoriented crop -> the grid the network ran on
    orientation: Reorientation  # crop -> RAS
    #: (L, ...) class probabilities on the working grid (mapped back on demand)
    working_probabilities: npt.NDArray[np.float32]
    sources: list[str]  # the input files, relative to the dataset root
    warnings: list[str] = dataclasses.field(default_factory=list)
    #: the model that made it (:func:`model_record`)
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: the brain mask deepmir derived (crop) when the input had none
    derived_mask: npt.NDArray[np.bool_] | None = None
    #: "file", or how the mask was derived (:func:`derive_brain_mask`)
    mask_method: str = "file"
    #: the lesion-probability calibration applied: the model's maps for the
    #: subject's inputs (:meth:`Calibration.for_inputs`); None: raw scores
    calibration: Calibration | None = None

    @property
    def brain_mask(self) -> npt.NDArray[np.bool_]:
        """The brain mask predict used (crop): the input's, or the derived one."""
        mask = self.subject.brain_mask if self.derived_mask is None else self.derived_mask
        assert mask is not None  # predict_subject always has one
        return mask

    def probability_map(self, label: int) -> npt.NDArray[np.float32]:
        """Class ``label``'s probability on the whole input grid, linearly
        interpolated from the working grid (background: 1 outside the crop,
        lesion classes 0)."""
        on_crop = self.orientation.backward(
            self.working_grid.backward(self.working_probabilities[label], 1)
        ).astype(np.float32, copy=False)
        if label == 0 and self.subject.box is not None:
            full = np.ones(self.subject.full_shape, np.float32)
            full[self.subject.box] = on_crop
            return full
        return self.subject.uncrop(on_crop)

    def full_probabilities(self) -> npt.NDArray[np.float32]:
        """(L, ...) on the whole input grid (L full-size volumes: memory)."""
        return np.stack([self.probability_map(c) for c in range(len(LABELS))])


@dataclass
class WorkingInput:
    """A subject on its way through the network (:func:`working_input`): the
    input-grid crop, its RAS reorientation and working grid, and on that grid
    the brain mask and the SWI the post-processing measures (the normalized
    network input is returned beside it, so that it can be freed once the
    network has run)."""

    subject: Subject  # images and mask: the input-grid crop
    orientation: Reorientation  # crop -> RAS
    grid: Resampler  # RAS crop -> working grid
    mask: npt.NDArray[np.bool_]  # working grid
    swi: npt.NDArray[np.float32] | None  # resampled SWI (the SWI-structure limit)
    present: tuple[str, ...]  # the model's modalities the subject has
    warnings: list[str] = dataclasses.field(default_factory=list)
    derived_mask: npt.NDArray[np.bool_] | None = None  # crop; None: the file's
    mask_method: str = "file"


def working_input(
    root: Path, ref: SubjectRef, card: ModelCard
) -> tuple[WorkingInput, npt.NDArray[np.float32]]:
    """Load, check, crop, reorient, resample and normalize one subject for the
    model (raises SubjectDataError / ModelError): :func:`predict_subject`'s
    steps before the network, shared with ``deepmir calibrate`` so that the
    calibration is fitted on the lesions predict outputs. Returns the subject
    and the (C, ...) normalized network input on the working grid (a missing
    optional modality's channels zero)."""
    available = {m: ref.modality_path(root, m) for m in available_modalities(root, ref)}
    try:
        check_modalities(card, available)
    except ModelError as exc:
        missing = [m for m in card.required_modalities if m not in available]
        needs = str(exc).split("; missing:")[0]
        raise SubjectDataError(
            ref.modality_path(root, missing[0]),
            f"{needs}; {ref.absent_message(root, missing)}",
        ) from exc
    # the model's modalities, plus QSM when present for the lesion table's chi
    wanted = tuple(m for m in available if m in card.modalities or m == "qsm")
    subject = load_subject(root, ref, wanted, crop_margin=CROP_MARGIN)
    warnings = list(ref.files.warnings) if ref.files is not None else []
    derived: npt.NDArray[np.bool_] | None = None
    mask_method = "file"
    if subject.brain_mask is not None:
        file_mask = subject.brain_mask
    else:
        derived, mask_method = derive_brain_mask(subject.images, subject.crop_affine)
        file_mask = derived
        warnings.append(
            f"{ref.mask_path(root)}: no brain mask; derived one ({mask_method}), written as "
            f"{ref.prefix}_desc-brain_mask.nii.gz with the outputs: check it"
        )
    warnings += check_images(subject.images, file_mask, subject.paths)
    orient = Reorientation.of(subject.crop_affine, subject.shape)
    ras_mask = orient.forward(file_mask).astype(bool)
    del file_mask
    grid = Resampler.of(orient.ras_affine, ras_mask.shape, card.working_spacing_mm)
    warning = grid.voxel_size_warning()
    if warning is not None:
        warnings.append(f"{subject.paths[wanted[0]]}: {warning}")
    images = {m: grid.forward(orient.forward(v), 1) for m, v in subject.images.items()}
    present = {m: images[m] for m in card.modalities if m in images}
    mask = grid.forward(ras_mask, 1)
    del ras_mask
    # a missing optional modality (modality dropout) enters as zeros after normalization
    absent = [m for m in card.modalities if m not in present]
    # the crop is the brain box plus the margin: the network sees all of it
    image = normalize(present, mask, card.normalization, absent=absent)
    inp = WorkingInput(
        subject=subject,
        orientation=orient,
        grid=grid,
        mask=mask,
        swi=images.get("swi"),
        present=tuple(present),
        warnings=warnings,
        derived_mask=derived,
        mask_method=mask_method,
    )
    return inp, image


def working_lesions(
    probabilities: npt.NDArray[np.float32],
    inp: WorkingInput,
    post: PostProcessing,
    swi: npt.NDArray[np.float32] | None = None,
) -> tuple[Lesions, Lesions]:
    """The lesion post-processing of the network's ``probabilities`` on the
    working grid, and the lesions brought back to the input-grid crop by
    nearest neighbour with every lesion kept (:func:`instances_backward`):
    (on the crop, on the working grid). ``swi``: the SWI the SWI-structure
    limit measures (default ``inp.swi``, predict's)."""
    spacing = voxel_spacing(inp.grid.target_affine)
    swi = inp.swi if swi is None else swi
    lesions = lesions_from_probabilities(probabilities, post, spacing, inp.mask, swi)
    grid, orient = inp.grid, inp.orientation
    instances = orient.backward(instances_backward(lesions.instances, grid))
    classes = np.concatenate([[0], lesions.labels]).astype(np.uint8)
    back = Lesions(
        dseg=orient.backward(lesions.dseg) if grid.identity else classes[instances],
        instances=instances,
        labels=lesions.labels,
        probability=lesions.probability,
    )
    return back, lesions


def predict_subject(
    root: Path,
    ref: SubjectRef,
    model: LoadedModel,
    post: PostProcessing,
    log: Callable[[str], None] | None = None,
) -> SubjectPrediction:
    """Everything for one subject, in memory (raises SubjectDataError / ModelError).

    The network runs on the working grid (:mod:`deepmir.inference.resample`):
    the RAS-reoriented input at the model's voxel size; the brain crop,
    normalization, sliding window and lesion post-processing (minimum sizes in
    voxels, elongation) happen there, as in training. Lesions come back to the
    input grid by nearest neighbour with every lesion kept
    (:func:`instances_backward`), probabilities linearly. An input already at
    the model's voxel size (within 10%) is not resampled at all. ``log``
    receives a warning when the input voxel size is far from the working grid.
    """
    card = model.card
    inp, image = working_input(root, ref, card)
    calibration = None if card.calibration is None else card.calibration.for_inputs(inp.present)
    probabilities = predict_probabilities(model.net, image, card.patch_size)
    del image
    back, lesions = working_lesions(probabilities, inp, post)
    subject, grid = inp.subject, inp.grid
    working = None if grid.identity else (lesions.instances, grid.target_affine)
    return SubjectPrediction(
        ref=ref,
        dseg=subject.uncrop(back.dseg),
        lesions=back,
        table=lesion_table(
            back,
            subject.crop_affine,
            subject.images.get("qsm"),
            working,
            calibration,
            subject.origin,
        ),
        subject=subject,
        working_grid=grid,
        orientation=inp.orientation,
        working_probabilities=probabilities,
        sources=sorted(_relative(p, root) for p in subject.paths.values()),
        warnings=inp.warnings,
        model=model_record(model),
        derived_mask=inp.derived_mask,
        mask_method=inp.mask_method,
        calibration=calibration,
    )


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def lesion_table(
    lesions: Lesions,
    affine: npt.NDArray[np.float64],
    qsm: npt.NDArray[np.float32] | None,
    working: tuple[npt.NDArray[np.int32], npt.NDArray[np.float64]] | None = None,
    calibration: Calibration | None = None,
    origin: tuple[int, int, int] = (0, 0, 0),
) -> list[dict[str, Any]]:
    """One row per lesion, the contract's columns; ``lesions``, ``affine`` and
    ``qsm`` on the input grid, or on a crop of it whose voxel (0, 0, 0) is the
    input grid's voxel ``origin`` (``affine`` is then the crop's): the (i, j, k)
    centroids are given on the whole input grid.

    ``working``: the lesion instances on the working grid the network ran on
    and that grid's affine, when it is not the input grid. Centroids and
    volumes are then measured there (a lesion of a few working voxels may
    cover one coarse input voxel: counting input voxels would misstate its
    volume by up to the input voxel's size) and the centroid is given in the
    input's continuous voxel coordinates (mapped through the two affines) and
    in scanner mm. ``chi_ppm`` is always the mean of the **measured** input QSM
    over the lesion's voxels of the input grid (the voxels written in the
    dseg), not of an interpolated QSM; ``chi_volume_ppm_mm3`` is that mean
    times ``volume_mm3``. ``probability`` is the calibrated one when a
    calibration is given, ``score`` the raw mean class probability.
    """
    rows: list[dict[str, Any]] = []
    n = len(lesions.labels)
    if n == 0:
        return rows
    measured_on, measured_affine = working if working is not None else (lesions.instances, affine)
    counts, centroids = counts_and_centroids(measured_on, n)
    voxel_mm3 = float(abs(np.linalg.det(measured_affine[:3, :3])))
    chi: list[float | None] = [None] * (n + 1)
    if qsm is not None:
        ids = lesions.instances.ravel()
        inside = ids > 0
        n_input = np.bincount(ids[inside], minlength=n + 1)
        chi_sum = np.bincount(ids[inside], weights=qsm.ravel()[inside], minlength=n + 1)
        chi = [float(c / k) if k > 0 else None for c, k in zip(chi_sum, n_input, strict=True)]
    probability = (
        calibration.apply(lesions.labels, lesions.probability)
        if calibration is not None
        else lesions.probability
    )
    for k in range(1, n + 1):
        xyz = measured_affine[:3, :3] @ centroids[k] + measured_affine[:3, 3]
        centroid = (
            np.linalg.solve(affine[:3, :3], xyz - affine[:3, 3])
            if working is not None
            else centroids[k]
        )
        volume = counts[k] * voxel_mm3
        mean_chi = chi[k]
        rows.append(
            {
                "lesion_id": k,
                "label": int(lesions.labels[k - 1]),
                "name": LABELS[int(lesions.labels[k - 1])],
                "i": round(float(centroid[0] + origin[0]), 2),
                "j": round(float(centroid[1] + origin[1]), 2),
                "k": round(float(centroid[2] + origin[2]), 2),
                "x": round(float(xyz[0]), 2),
                "y": round(float(xyz[1]), 2),
                "z": round(float(xyz[2]), 2),
                "volume_mm3": round(volume, 2),
                "probability": round(float(probability[k - 1]), 3),
                "score": round(float(lesions.probability[k - 1]), 3),
                "chi_ppm": None if mean_chi is None else round(mean_chi, 4),
                "chi_volume_ppm_mm3": None if mean_chi is None else round(mean_chi * volume, 3),
                "region": "n/a",  # needs a registration to an atlas: not done
            }
        )
    return rows


def lesions_tsv(rows: list[dict[str, Any]]) -> str:
    lines = ["\t".join(LESION_COLUMNS)]
    for r in rows:
        lines.append("\t".join("n/a" if r.get(c) is None else str(r[c]) for c in LESION_COLUMNS))
    return "\n".join(lines) + "\n"


def output_paths(out: Path, ref: SubjectRef) -> dict[str, Path]:
    anat = ref.anat_dir(out)
    p = ref.prefix
    paths = {
        "dseg": anat / f"{p}_desc-deepmir_dseg.nii.gz",
        "dseg-json": anat / f"{p}_desc-deepmir_dseg.json",
        "lesions": anat / f"{p}_desc-deepmir_lesions.tsv",
        "report": anat / f"{p}_desc-deepmir_report.html",
        "mask": anat / f"{p}_desc-brain_mask.nii.gz",
        "mask-json": anat / f"{p}_desc-brain_mask.json",
    }
    for label, name in LESION_CLASSES.items():
        paths[f"prob-{label}"] = anat / f"{p}_label-{name}_desc-deepmir_probseg.nii.gz"
        paths[f"prob-json-{label}"] = anat / f"{p}_label-{name}_desc-deepmir_probseg.json"
    return paths


def write_subject(
    out: Path,
    prediction: SubjectPrediction,
    report_html: str | None,
    save_probabilities: bool,
) -> list[Path]:
    """Every file of the subject staged under temporary names, then renamed together;
    the subject's outputs of an earlier run that this one does not write (say, its
    probabilities) are removed, so that the folder never mixes two runs.

    ``report_html=None`` (``--no-report``) writes no report file.

    Raises
    ------
    OutputError
        naming the file and the problem (a full disk, a folder that cannot be
        written); nothing of the subject is left then.
    """
    paths = output_paths(out, prediction.ref)
    affine = prediction.subject.affine

    def dseg(tmp: Path) -> None:
        nib.save(nifti_image(prediction.dseg, affine, np.uint8), tmp)

    def mask(tmp: Path) -> None:
        assert prediction.derived_mask is not None
        full = prediction.subject.uncrop(prediction.derived_mask.astype(np.uint8))
        nib.save(nifti_image(full, affine, np.uint8), tmp)

    def probability(label: int) -> Callable[[Path], None]:
        def write(tmp: Path) -> None:  # one full-size volume at a time
            nib.save(nifti_image(prediction.probability_map(label), affine, np.float32), tmp)

        return write

    def text(content: str) -> Callable[[Path], None]:
        def write(tmp: Path) -> None:
            tmp.write_text(content, encoding="utf-8")

        return write

    sidecars = output_sidecars(out, prediction)
    writers: dict[str, Callable[[Path], None]] = {
        "dseg": dseg,
        "dseg-json": text(json_text(sidecars["dseg-json"])),
        "lesions": text(lesions_tsv(prediction.table)),
    }
    if report_html is not None:
        writers["report"] = text(report_html)
    if prediction.derived_mask is not None:
        writers["mask"] = mask
        writers["mask-json"] = text(json_text(sidecars["mask-json"]))
    if save_probabilities:
        for label in LESION_CLASSES:
            writers[f"prob-{label}"] = probability(label)
            writers[f"prob-json-{label}"] = text(json_text(sidecars[f"prob-json-{label}"]))
    write_all({paths[name]: write for name, write in writers.items()})
    current = paths["dseg"]
    try:
        for name, path in paths.items():
            if name not in writers:
                current = path
                path.unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(current, f"cannot be written: {os_reason(exc)}") from exc
    return [paths[name] for name in writers]


def discard_outputs(out: Path, ref: SubjectRef) -> str:
    """Remove a failed subject's outputs of an earlier run (they would be taken for
    this run's), SWI and QSM derived from raw GRE included; returns what was
    done, for the error message."""
    paths = [*output_paths(out, ref).values(), *gre_output_paths(out, ref).values()]
    existing = [p for p in paths if p.exists()]
    problems = []
    for path in existing:
        try:
            path.unlink()
        except OSError as exc:
            problems.append(f"{path.name} ({os_reason(exc)})")
    if problems:
        return (
            f" [its outputs from an earlier run could not be removed: {', '.join(problems)}; "
            "do not use them]"
        )
    if existing:
        return f" [its {len(existing)} output file(s) from an earlier run were removed]"
    return ""


def output_sidecars(out: Path, prediction: SubjectPrediction) -> dict[str, dict[str, Any]]:
    """The BIDS JSON sidecars of a subject's outputs (keys of :func:`output_paths`):
    the dseg's (what it is, its input files as BIDS URIs, the working grid the
    network ran on, :meth:`Resampler.to_dict`, and the model), each probseg's and
    the derived brain mask's."""
    qsm_dir = prediction.ref.files.qsm_dir if prediction.ref.files is not None else None
    links = {"qsm": Path(qsm_dir)} if qsm_dir else {}
    sources = [bids_uri(s, out, links) for s in prediction.sources]
    # the grid of the outputs: the SWI's (every input shares it)
    grid = prediction.subject.paths.get("swi", next(iter(prediction.subject.paths.values())))
    on_grid = [u for u in sources if u.endswith("/" + grid.name)]
    common = {"Sources": sources, "SpatialReference": (on_grid or sources)[0]}
    sidecars: dict[str, dict[str, Any]] = {
        "dseg-json": {
            "Description": "deepmir lesion segmentation (labels in dseg.tsv) on the input's "
            "own grid and affine; the network ran on WorkingGrid (the RAS-reoriented input "
            "resampled to the model's voxel size) and the lesions were put back on the input "
            "grid",
            **common,
            "WorkingGrid": prediction.working_grid.to_dict(),
            "Model": prediction.model,
            "BrainMask": "the input's desc-brain_mask"
            if prediction.mask_method == "file"
            else f"derived by deepmir ({prediction.mask_method}): desc-brain_mask next to "
            "this file",
        },
        "mask-json": {
            "Description": f"brain mask derived by deepmir ({prediction.mask_method}), "
            "used by the lesion detection",
            **common,
            "Type": "Brain",
        },
    }
    for label, name in LESION_CLASSES.items():
        sidecars[f"prob-json-{label}"] = {
            "Description": f"deepmir probability (0-1) of {name} per voxel, on the input's "
            "grid (computed on the working grid, linearly resampled back)",
            **common,
            "Model": prediction.model,
        }
    return sidecars


@dataclass
class PredictOutcome:
    written: dict[str, list[Path]]
    failed: dict[str, str]
    counts: dict[str, dict[str, int]]
    #: the models used, comma-separated
    model: str
    warnings: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: subject -> the name of its model (absent: no model served it)
    models: dict[str, str] = dataclasses.field(default_factory=dict)
    #: the cohort index could not be written (the message says why)
    index_error: str | None = None
    #: subjects whose outputs were current (not redone) -> their outputs
    skipped: dict[str, list[Path]] = dataclasses.field(default_factory=dict)


def select_subjects(
    root: Path,
    labels: Iterable[str] | None,
    sessions: Iterable[str] | None = None,
    filters: str | Path | dict[str, Any] | None = None,
    qsm_dir: str | Path | None = None,
) -> list[SubjectRef]:
    """The subjects (and sessions) to predict, each with its discovered files
    (:func:`deepmir.io.bids.find_subjects`). ``filters``: a
    ``--bids-filter-file`` path or its content. Unknown participants or
    sessions, a bad filter file or ``qsm_dir`` raise a clear error."""
    problem = dataset_problem(root)
    if problem:
        raise SubjectDataError(root, problem)
    if qsm_dir is not None and not Path(qsm_dir).is_dir():
        what = "is a file" if Path(qsm_dir).exists() else "does not exist"
        raise SubjectDataError(
            qsm_dir,
            f"{what}; --qsm-dir takes a folder holding *_Chimap.nii[.gz] files "
            "(a BIDS-derivatives-like tree such as QSMxT's output)",
        )
    parsed: dict[str, EntityFilter] | None = None if filters is None else parse_filters(filters)
    wanted = {label.removeprefix("sub-") for label in labels} if labels else None
    refs = find_subjects(root, wanted, None, parsed, qsm_dir)
    if wanted:
        unknown = wanted - {r.subject for r in refs}
        if unknown:
            raise SubjectDataError(root, f"no such participant(s): {', '.join(sorted(unknown))}")
    if sessions:
        wanted_ses = {s.removeprefix("ses-") for s in sessions}
        unknown = wanted_ses - {r.session for r in refs if r.session}
        if unknown:
            raise SubjectDataError(root, f"no such session(s): {', '.join(sorted(unknown))}")
        refs = [r for r in refs if r.session in wanted_ses]
    return refs


def predict_dataset(
    data: str | Path,
    out: str | Path,
    model: str | Path = "default",
    participants: Iterable[str] | None = None,
    threshold: float | None = None,
    save_probabilities: bool = False,
    report: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
    sessions: Iterable[str] | None = None,
    filters: str | Path | dict[str, Any] | None = None,
    qsm_dir: str | Path | None = None,
    n_workers: int = 0,
    threads_per_worker: int | None = None,
    scheduler: str | None = None,
    force: bool = False,
    regions: bool = False,
    phase_sign: str = "auto",
    cohort_files: bool = True,
) -> PredictOutcome:
    """Predict every (selected) subject; a failing subject is reported and skipped.

    ``sessions``, ``filters`` (a ``--bids-filter-file``) and ``qsm_dir`` select
    the inputs (:func:`select_subjects`). Each subject gets its own model
    (:func:`choose_models`); a subject that no model serves fails alone. A
    subject without SWI or QSM but with raw GRE gets them computed and written
    first (:mod:`deepmir.inference.fromgre`; ``phase_sign``: ``auto``, ``+1``
    or ``-1``, :mod:`deepmir.qsm.gre`).

    Resume: a subject whose outputs are current (its provenance record matches
    this run's model, options, deepmir version and input files:
    :mod:`deepmir.cohort.provenance`) is skipped (``outcome.skipped``) unless
    ``force``. Execution (:func:`deepmir.cohort.execute.execute`): serially
    (``n_workers=0``), on a local Dask cluster of ``n_workers`` processes with
    ``threads_per_worker`` torch threads each, or on the Dask ``scheduler`` at
    that address. ``regions``: register each subject with lesions to MNI152 and
    give each lesion its MARS region or structure and MNI coordinates
    (:mod:`deepmir.cohort.regions`).

    Usage errors are raised before any subject is processed: a bad ``data``
    folder, participant, session, filter file or ``qsm_dir``
    (:class:`SubjectDataError`, :class:`deepmir.io.bids.DiscoveryError`), a bad model folder
    (:class:`ModelError`), an output folder that cannot be written
    (:class:`OutputError`), a threshold outside (0, 1) (``ValueError``).
    Then every subject is done or fails alone: bad or implausible input, or a
    write error (a full disk), is recorded in ``failed`` with its message, and
    the subject's outputs of an earlier run are removed.

    ``cohort_files``: at the end, write the cohort ``index.html`` and
    ``dataset_description.json`` for this run's subjects (read from their own
    records: ``out`` is not scanned). ``False`` (the BIDS-App participant
    level, e.g. one SLURM array job per subject): the run writes and reads
    nothing of the other subjects in ``out`` (a placeholder
    ``dataset_description.json`` when there is none); the group level
    (:func:`deepmir.cohort.group.run_group`) builds the cohort files from
    every subject on disk."""
    from deepmir.cohort import provenance
    from deepmir.cohort.execute import ModelSpec, SubjectTask, execute, pending, remember_model
    from deepmir.cohort.group import (
        dataset_description,
        derivative_description,
        read_subjects,
        source_datasets,
        write_dataset_files,
    )
    from deepmir.report.html import cohort_index

    root, out = Path(data), Path(out)
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ValueError(f"--threshold must be between 0 and 1, got {threshold}")
    if phase_sign not in ("auto", "+1", "-1"):
        raise ValueError(f"--phase-sign must be auto, +1 or -1, got {phase_sign!r}")
    refs = select_subjects(root, participants, sessions, filters, qsm_dir)
    choices = choose_models(model, root, refs)
    used = _distinct(c for c in choices.values() if isinstance(c, LoadedModel))
    prepare_output_dir(out)
    # only this run's files: other runs (array jobs, on other machines, whose
    # process ids say nothing here) may be writing into the rest of `out`
    stale = [p for ref in refs for p in remove_stale_temporaries(ref.anat_dir(out))]
    if cohort_files:
        stale += remove_stale_temporaries(out, recursive=False)
    if stale:
        log(f"removed {len(stale)} temporary file(s) left in {out} by an interrupted run")
    for loaded in used:
        n = sum(c is loaded for c in choices.values())
        log(f"model: {loaded.name}, modalities {'+'.join(loaded.card.modalities)}: {n} subject(s)")
    description = out / "dataset_description.json"
    links = source_datasets(root, qsm_dir)
    if not description.exists():
        try:
            described = (
                "; ".join(f"model {m.name}, weights sha256 {m.card.weights_sha256}" for m in used)
                if cohort_files
                else "the models are named in the subjects' provenance records; the group "
                "level lists them here"
            )
            write_text(description, json_text(derivative_description(described, links, out)))
        except OSError as exc:
            raise OutputError(description, f"cannot be written: {os_reason(exc)}") from exc
    try:
        write_dataset_files(out)
    except OSError as exc:
        raise OutputError(
            out,
            "its dataset files (dseg.tsv, lesions.json, README.md, .bidsignore) cannot be "
            f"written: {os_reason(exc)}",
        ) from exc
    options = {
        "Threshold": threshold,
        "SaveProbabilities": save_probabilities,
        "Report": report,
        "Regions": regions,
        "PhaseSign": phase_sign,
    }
    specs: dict[int, ModelSpec] = {}
    for loaded in used:
        shipped = [
            n for n in SHIPPED_MODELS if str(model) == "default" and shipped_model(n) is loaded
        ]
        spec = (
            ModelSpec("shipped", shipped[0], loaded.name, loaded.card.weights_sha256)
            if shipped
            else ModelSpec(
                "folder", str(Path(model).resolve()), loaded.name, loaded.card.weights_sha256
            )
        )
        remember_model(spec, loaded)
        specs[id(loaded)] = spec
    tasks = []
    for ref in refs:
        choice = choices[ref]
        identity = (
            provenance.model_identity(choice.name, choice.card)
            if isinstance(choice, LoadedModel)
            else {}
        )
        tasks.append(
            SubjectTask(
                root,
                out,
                ref,
                specs[id(choice)] if isinstance(choice, LoadedModel) else choice,
                provenance.expected_record(root, ref, identity, options),
                threshold,
                save_probabilities,
                report,
                regions=regions,
                phase_sign=phase_sign,
                command=shlex.join(sys.argv),
            )
        )
    todo, skipped = pending(tasks, force)
    if skipped:
        log(f"{len(skipped)} subject(s) skipped: their outputs are current (--force redoes them)")
    outcome = PredictOutcome({}, {}, {}, ", ".join(m.name for m in used))
    for result in skipped:
        outcome.skipped[result.name] = result.outputs

    inputs = {m.name: "+".join(m.card.modalities) for m in used}

    def collect(result: Any) -> None:
        name = result.name
        if result.model is not None:
            outcome.models[name] = result.model
            log(f"{name}: model {result.model} ({inputs.get(result.model, '?')})")
        if result.status == "failed":
            outcome.failed[name] = result.message or "failed"
            log(f"{name}: FAILED: {outcome.failed[name]}")
            return
        outcome.written[name] = result.outputs
        outcome.counts[name] = result.counts
        outcome.warnings[name] = result.warnings
        for warning in result.warnings:
            log(f"{name}: WARNING: {warning}")
        if progress and not sys.stderr.isatty():  # no bar (a log file): one line per subject
            counted = ", ".join(f"{v} {k}" for k, v in result.counts.items())
            log(f"{name}: done with model {result.model} ({counted})")

    execute(todo, n_workers, threads_per_worker, scheduler, progress, collect)
    if not cohort_files:
        return outcome
    # this run's subjects as they are on disk (done now or skipped as current)
    cohort = read_subjects(out, refs)
    try:
        write_text(description, json_text(dataset_description(cohort, links, out)))
    except OSError as exc:
        outcome.index_error = f"{description}: cannot be written: {os_reason(exc)}"
        log(f"FAILED: {outcome.index_error}")
    if report:
        index = out / "index.html"
        on_disk = {s.name: s for s in cohort.subjects if s.name not in outcome.failed}
        try:
            write_text(
                index,
                cohort_index(
                    {n: s.counts for n, s in on_disk.items()},
                    outcome.failed,
                    ", ".join(cohort.model_names()) or outcome.model,
                    out,
                    {n: s.warnings for n, s in on_disk.items()},
                    {**{n: s.model_name for n, s in on_disk.items()}, **outcome.models},
                ),
            )
        except OSError as exc:
            outcome.index_error = f"{index}: cannot be written: {os_reason(exc)}"
            log(f"FAILED: {outcome.index_error}")
    return outcome


def _distinct(models: Iterable[LoadedModel]) -> list[LoadedModel]:
    out: list[LoadedModel] = []
    for m in models:
        if not any(m is o for o in out):
            out.append(m)
    return out
