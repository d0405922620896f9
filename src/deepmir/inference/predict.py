"""``deepmir predict``: a model over a BIDS dataset, outputs per the data contract.

Per subject: load and check the model's modalities (:mod:`deepmir.io.loader`),
reorient to RAS, resample to the model's working grid (its voxel size, the
input's axes: :mod:`deepmir.inference.resample`), crop to the brain,
normalize with the model's stored parameters, sliding-window probabilities
(MONAI, Gaussian blending), lesions (one class each), then everything is
written back on the input's own grid and affine, with the working grid
recorded in the dseg's JSON sidecar. A subject's files are rendered in
memory first and then moved into place together, so they are all there or
none is; a failing subject is reported and the others go on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm

from deepmir import __version__
from deepmir.inference.calibration import Calibration
from deepmir.inference.lesions import (
    Lesions,
    PostProcessing,
    lesions_from_probabilities,
    voxel_spacing,
)
from deepmir.inference.orientation import Reorientation
from deepmir.inference.resample import Resampler, instances_backward
from deepmir.inference.sliding import predict_probabilities
from deepmir.io.atomic import atomic_group, nifti_image, write_json, write_text
from deepmir.io.bids import SubjectRef, find_subjects
from deepmir.io.loader import Subject, SubjectDataError, load_subject
from deepmir.labels import LABELS, LESION_CLASSES, dseg_tsv
from deepmir.model.checkpoint import ModelCard, ModelError, check_modalities, load_model
from deepmir.model.preprocess import brain_box, brain_mask_from, normalize

#: shipped models (inside the package), most modalities first
SHIPPED_MODELS = ("t2w-swi-qsm", "swi-qsm")
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
]


def shipped_model_dir(name: str) -> Path:
    return Path(str(resources.files("deepmir") / "models" / name))


@dataclass
class LoadedModel:
    net: torch.nn.Module
    card: ModelCard
    name: str


def choose_model(model: str | Path, root: Path, refs: list[SubjectRef]) -> LoadedModel:
    """``default``: the shipped model with the most modalities that every selected
    subject has (by file presence; a model's optional modalities may be absent);
    otherwise a model folder."""
    if str(model) != "default":
        net, card = load_model(model)
        return LoadedModel(net, card, str(model))
    for name in SHIPPED_MODELS:
        net, card = load_model(shipped_model_dir(name))
        needed = card.required_modalities
        if all(ref.modality_path(root, m).exists() for ref in refs for m in needed):
            return LoadedModel(net, card, f"default ({name})")
    # nothing fits everybody: take the smallest; subjects missing a modality get its error
    return LoadedModel(net, card, f"default ({SHIPPED_MODELS[-1]})")


@dataclass
class SubjectPrediction:
    ref: SubjectRef
    dseg: npt.NDArray[np.uint8]  # input grid
    probabilities: npt.NDArray[np.float32]  # (L, ...) input grid
    lesions: Lesions  # input grid
    table: list[dict[str, Any]]
    subject: Subject
    working_grid: Resampler  # RAS-reoriented input grid -> the grid the network ran on
    sources: list[str]  # the input files, relative to the dataset root


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
    available = {
        m: ref.modality_path(root, m)
        for m in ("t2w", "swi", "qsm")
        if ref.modality_path(root, m).exists()
    }
    try:
        check_modalities(card, available)
    except ModelError as exc:
        missing = [m for m in card.required_modalities if m not in available]
        raise SubjectDataError(ref.modality_path(root, missing[0]), str(exc)) from exc
    # the model's modalities, plus QSM when present for the lesion table's chi
    wanted = tuple(m for m in available if m in card.modalities or m == "qsm")
    subject = load_subject(root, ref, wanted)
    shape = subject.shape
    orient = Reorientation.of(subject.affine, shape)
    ras = {m: orient.forward(v) for m, v in subject.images.items()}
    grid = Resampler.of(orient.ras_affine, next(iter(ras.values())).shape, card.working_spacing_mm)
    warning = grid.voxel_size_warning()
    if warning is not None and log is not None:
        log(f"{ref}: {warning}")
    images = {m: grid.forward(v, 1) for m, v in ras.items()}
    present = {m: images[m] for m in card.modalities if m in images}
    mask = (
        grid.forward(orient.forward(subject.brain_mask).astype(bool), 1)
        if subject.brain_mask is not None
        else brain_mask_from(present)
    )
    box = brain_box(mask, 4)
    # a missing optional modality (modality dropout) enters as zeros after normalization
    absent = [m for m in card.modalities if m not in present]
    image = normalize(present, mask, card.normalization, absent=absent)
    crop = np.ascontiguousarray(image[(slice(None), *box)])
    prob_crop = predict_probabilities(model.net, crop, card.patch_size)
    probabilities = np.zeros((len(LABELS), *mask.shape), np.float32)
    probabilities[0] = 1.0
    probabilities[(slice(None), *box)] = prob_crop
    lesions = lesions_from_probabilities(probabilities, post, voxel_spacing(grid.target_affine))
    instances = orient.backward(instances_backward(lesions.instances, grid))
    classes = np.concatenate([[0], lesions.labels]).astype(np.uint8)
    back = Lesions(
        dseg=orient.backward(lesions.dseg) if grid.identity else classes[instances],
        instances=instances,
        labels=lesions.labels,
        probability=lesions.probability,
    )
    working = None if grid.identity else (lesions.instances, grid.target_affine)
    return SubjectPrediction(
        ref=ref,
        dseg=back.dseg,
        probabilities=orient.backward(grid.backward(probabilities, 1)),
        lesions=back,
        table=lesion_table(
            back, subject.affine, subject.images.get("qsm"), working, card.calibration
        ),
        subject=subject,
        working_grid=grid,
        sources=sorted(_relative(p, root) for p in subject.paths.values()),
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
) -> list[dict[str, Any]]:
    """One row per lesion, the contract's columns; ``lesions``, ``affine`` and
    ``qsm`` on the input grid.

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
    counts, centroids = _counts_and_centroids(measured_on, n)
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
                "i": round(float(centroid[0]), 2),
                "j": round(float(centroid[1]), 2),
                "k": round(float(centroid[2]), 2),
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


def _counts_and_centroids(
    instances: npt.NDArray[np.int32], n: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Voxel count and centroid (voxel coordinates) of lesions 1..n (index 0 unused)."""
    ids = instances.ravel()
    inside = ids > 0
    counts = np.bincount(ids[inside], minlength=n + 1)
    coords = np.indices(instances.shape).reshape(3, -1)[:, inside]
    sums = np.stack([np.bincount(ids[inside], weights=c, minlength=n + 1) for c in coords])
    return counts, (sums / np.maximum(counts, 1)).T


def lesions_tsv(rows: list[dict[str, Any]]) -> str:
    lines = ["\t".join(LESION_COLUMNS)]
    for r in rows:
        lines.append("\t".join("n/a" if r[c] is None else str(r[c]) for c in LESION_COLUMNS))
    return "\n".join(lines) + "\n"


def output_paths(out: Path, ref: SubjectRef) -> dict[str, Path]:
    anat = ref.anat_dir(out)
    p = ref.prefix
    paths = {
        "dseg": anat / f"{p}_desc-deepmir_dseg.nii.gz",
        "dseg-json": anat / f"{p}_desc-deepmir_dseg.json",
        "lesions": anat / f"{p}_desc-deepmir_lesions.tsv",
        "report": anat / f"{p}_desc-deepmir_report.html",
    }
    for label, name in LESION_CLASSES.items():
        paths[f"prob-{label}"] = anat / f"{p}_label-{name}_desc-deepmir_probseg.nii.gz"
    return paths


def write_subject(
    out: Path,
    prediction: SubjectPrediction,
    report_html: str | None,
    save_probabilities: bool,
) -> list[Path]:
    """Every file of the subject staged under temporary names, then renamed together.

    ``report_html=None`` (``--no-report``) writes no report file.
    """
    paths = output_paths(out, prediction.ref)
    affine = prediction.subject.affine
    names = ["dseg", "dseg-json", "lesions"] + (["report"] if report_html is not None else [])
    if save_probabilities:
        names += [f"prob-{label}" for label in LESION_CLASSES]
    with atomic_group() as stage:
        nib.save(nifti_image(prediction.dseg, affine, np.uint8), stage(paths["dseg"]))
        sidecar = json.dumps(dseg_sidecar(prediction), indent=2) + "\n"
        stage(paths["dseg-json"]).write_text(sidecar)
        if save_probabilities:
            for label in LESION_CLASSES:
                image = nifti_image(prediction.probabilities[label], affine, np.float32)
                nib.save(image, stage(paths[f"prob-{label}"]))
        stage(paths["lesions"]).write_text(lesions_tsv(prediction.table))
        if report_html is not None:
            stage(paths["report"]).write_text(report_html)
    return [paths[n] for n in names]


def dseg_sidecar(prediction: SubjectPrediction) -> dict[str, Any]:
    """The dseg's BIDS JSON sidecar: what it is, from which files, and the working
    grid the network ran on (:meth:`Resampler.to_dict`)."""
    return {
        "Description": "deepmir lesion segmentation (labels in dseg.tsv) on the input's own "
        "grid and affine; the network ran on WorkingGrid (the RAS-reoriented input "
        "resampled to the model's voxel size) and the lesions were put back on the input grid",
        "Sources": prediction.sources,
        "WorkingGrid": prediction.working_grid.to_dict(),
    }


@dataclass
class PredictOutcome:
    written: dict[str, list[Path]]
    failed: dict[str, str]
    counts: dict[str, dict[str, int]]
    model: str


def select_subjects(root: Path, labels: Iterable[str] | None) -> list[SubjectRef]:
    refs = find_subjects(root)
    if not refs:
        raise SubjectDataError(root, "no sub-* folders: not a BIDS dataset")
    if labels:
        wanted = {label.removeprefix("sub-") for label in labels}
        unknown = wanted - {r.subject for r in refs}
        if unknown:
            raise SubjectDataError(root, f"no such participant(s): {', '.join(sorted(unknown))}")
        refs = [r for r in refs if r.subject in wanted]
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
) -> PredictOutcome:
    """Predict every (selected) subject; a failing subject is reported and skipped."""
    from deepmir.report.html import cohort_index, subject_report

    root, out = Path(data), Path(out)
    refs = select_subjects(root, participants)
    loaded = choose_model(model, root, refs)
    post = loaded.card.post
    if threshold is not None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"--threshold must be between 0 and 1, got {threshold}")
        post = dataclasses.replace(post, threshold=threshold)
    log(f"model: {loaded.name}, modalities {'+'.join(loaded.card.modalities)}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "dataset_description.json", _description(loaded, root))
    write_text(out / "dseg.tsv", dseg_tsv())
    written: dict[str, list[Path]] = {}
    failed: dict[str, str] = {}
    counts: dict[str, dict[str, int]] = {}
    for ref in tqdm(refs, desc="predict", unit="subject", disable=not progress):
        try:
            prediction = predict_subject(root, ref, loaded, post, log)
            html = subject_report(prediction, loaded.name) if report else None
            written[str(ref)] = write_subject(out, prediction, html, save_probabilities)
            counts[str(ref)] = {
                name: int((prediction.lesions.labels == label).sum())
                for label, name in LESION_CLASSES.items()
            }
        except (SubjectDataError, ModelError) as exc:
            failed[str(ref)] = str(exc)
            log(f"{ref}: FAILED: {exc}")
    if report:
        write_text(out / "index.html", cohort_index(counts, failed, loaded.name, out))
    return PredictOutcome(written, failed, counts, loaded.name)


def _description(model: LoadedModel, root: Path) -> dict[str, Any]:
    return {
        "Name": "deepmir predictions",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "deepmir",
                "Version": __version__,
                "Description": f"model {model.name}, weights sha256 {model.card.weights_sha256}",
            }
        ],
        "SourceDatasets": [{"URL": root.resolve().as_uri()}],
    }
