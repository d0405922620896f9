"""``deepmir predict``: a model over a BIDS dataset, outputs per the data contract.

Per subject: load and check the model's modalities (:mod:`deepmir.io.loader`),
cropped to the brain box as each file is read, check that the values are
plausible (:mod:`deepmir.io.plausibility`), reorient the crop to RAS,
normalize with the model's stored parameters, sliding-window probabilities
(MONAI, Gaussian blending), lesions (one class each), then everything is
written back on the input's own grid and affine. Only the crop is ever held
(float32), except one full-size volume at a time while reading and writing.

A subject's files are rendered in memory first and then moved into place
together, so they are all there or none is. A failing subject (bad input, a
write error such as a full disk) is reported, its outputs from an earlier run
are removed, and the others go on; the cohort index is written in any case.
"""

from __future__ import annotations

import dataclasses
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
from deepmir.inference.lesions import (
    Lesions,
    PostProcessing,
    lesions_from_probabilities,
    voxel_spacing,
)
from deepmir.inference.orientation import Reorientation
from deepmir.inference.sliding import predict_probabilities
from deepmir.io.atomic import (
    OutputError,
    atomic_group,
    json_text,
    nifti_image,
    os_reason,
    prepare_output_dir,
    remove_stale_temporaries,
    write_text,
)
from deepmir.io.bids import SubjectRef, dataset_problem, find_subjects
from deepmir.io.loader import Subject, SubjectDataError, load_subject
from deepmir.io.plausibility import check_images, check_voxel_size
from deepmir.labels import LABELS, LESION_CLASSES, dseg_tsv
from deepmir.model.checkpoint import ModelCard, ModelError, check_modalities, load_model
from deepmir.model.preprocess import brain_mask_from, normalize

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
    subject has (by file presence); otherwise a model folder."""
    if str(model) != "default":
        net, card = load_model(model)
        return LoadedModel(net, card, str(model))
    for name in SHIPPED_MODELS:
        net, card = load_model(shipped_model_dir(name))
        if all(ref.modality_path(root, m).exists() for ref in refs for m in card.modalities):
            return LoadedModel(net, card, f"default ({name})")
    # nothing fits everybody: take the smallest; subjects missing a modality get its error
    return LoadedModel(net, card, f"default ({SHIPPED_MODELS[-1]})")


#: voxels kept around the brain's bounding box (the crop the network sees)
CROP_MARGIN = 4
#: voxel size of a model whose config does not record it (the shipped models: 1 mm)
DEFAULT_MODEL_VOXEL_MM = 1.0


@dataclass
class SubjectPrediction:
    """One subject's results, in the input's voxel orientation.

    The arrays cover the brain crop ``subject.box`` of the input grid (see
    :attr:`deepmir.io.loader.Subject.box`), except ``dseg``, which is on the
    whole input grid. ``subject.uncrop`` puts a crop array back on the grid.
    """

    ref: SubjectRef
    dseg: npt.NDArray[np.uint8]  # input grid
    probabilities: npt.NDArray[np.float32]  # (L, ...) crop
    lesions: Lesions  # crop
    table: list[dict[str, Any]]
    subject: Subject  # images and mask: crop
    warnings: list[str] = dataclasses.field(default_factory=list)

    def probability_map(self, label: int) -> npt.NDArray[np.float32]:
        """Class ``label``'s probability on the whole input grid (background: 1 outside
        the crop, lesion classes 0)."""
        if label == 0 and self.subject.box is not None:
            full = np.ones(self.subject.full_shape, np.float32)
            full[self.subject.box] = self.probabilities[0]
            return full
        return self.subject.uncrop(self.probabilities[label])

    def full_probabilities(self) -> npt.NDArray[np.float32]:
        """(L, ...) on the whole input grid (L full-size volumes: memory)."""
        return np.stack([self.probability_map(c) for c in range(len(self.probabilities))])


def model_voxel_size(card: ModelCard) -> tuple[float, float, float]:
    """Voxel size (mm) of the model's training data, from its config."""
    value = card.training.get("voxel_size_mm", DEFAULT_MODEL_VOXEL_MM)
    i, j, k = (float(v) for v in np.broadcast_to(np.asarray(value, float), 3))
    return (i, j, k)


def predict_subject(
    root: Path, ref: SubjectRef, model: LoadedModel, post: PostProcessing
) -> SubjectPrediction:
    """Everything for one subject, in memory (raises SubjectDataError / ModelError)."""
    card = model.card
    available = {
        m: ref.modality_path(root, m)
        for m in ("t2w", "swi", "qsm")
        if ref.modality_path(root, m).exists()
    }
    try:
        check_modalities(card, available)
    except ModelError as exc:
        missing = [m for m in card.modalities if m not in available]
        raise SubjectDataError(ref.modality_path(root, missing[0]), str(exc)) from exc
    # the model's modalities, plus QSM when present for the lesion table's chi
    wanted = tuple(m for m in available if m in card.modalities or m == "qsm")
    subject = load_subject(root, ref, wanted, crop_margin=CROP_MARGIN)
    file_mask = (
        subject.brain_mask
        if subject.brain_mask is not None
        else brain_mask_from({m: subject.images[m] for m in card.modalities})
    )
    warnings = check_images(subject.images, file_mask, subject.paths)
    orient = Reorientation.of(subject.crop_affine, subject.shape)
    spacing = voxel_spacing(orient.ras_affine)  # along the model's axes
    warnings += check_voxel_size(subject.paths[card.modalities[0]], spacing, model_voxel_size(card))
    mask = orient.forward(file_mask).astype(bool)
    del file_mask
    # the crop is the brain box plus the margin: the network sees all of it
    image = normalize(
        {m: orient.forward(subject.images[m]) for m in card.modalities}, mask, card.normalization
    )
    probabilities = predict_probabilities(model.net, image, card.patch_size)
    del image
    lesions = lesions_from_probabilities(probabilities, post, spacing)
    back = Lesions(
        dseg=orient.backward(lesions.dseg),
        instances=orient.backward(lesions.instances),
        labels=lesions.labels,
        probability=lesions.probability,
    )
    del lesions
    probabilities = orient.backward(probabilities)
    return SubjectPrediction(
        ref=ref,
        dseg=subject.uncrop(back.dseg),
        probabilities=probabilities,
        lesions=back,
        table=lesion_table(back, subject.affine, subject.images.get("qsm"), subject.origin),
        subject=subject,
        warnings=warnings,
    )


def lesion_table(
    lesions: Lesions,
    affine: npt.NDArray[np.float64],
    qsm: npt.NDArray[np.float32] | None,
    origin: tuple[int, int, int] = (0, 0, 0),
) -> list[dict[str, Any]]:
    """One row per lesion, the contract's columns (centroids on the input grid).

    ``lesions`` and ``qsm`` may be a crop of the input grid whose voxel (0, 0, 0)
    is the grid's voxel ``origin``; ``affine`` is the input grid's."""
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    rows: list[dict[str, Any]] = []
    n = len(lesions.labels)
    if n == 0:
        return rows
    where = np.nonzero(lesions.instances)
    ids = lesions.instances[where]
    counts = np.bincount(ids, minlength=n + 1)
    sums = np.stack(
        [
            np.bincount(ids, weights=c + o, minlength=n + 1)
            for c, o in zip(where, origin, strict=True)
        ]
    )
    chi_sum = np.bincount(ids, weights=qsm[where], minlength=n + 1) if qsm is not None else None
    for k in range(1, n + 1):
        centroid = sums[:, k] / counts[k]
        xyz = affine[:3, :3] @ centroid + affine[:3, 3]
        volume = counts[k] * voxel_mm3
        chi = float(chi_sum[k] / counts[k]) if chi_sum is not None else None
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
                "probability": round(float(lesions.probability[k - 1]), 3),
                "chi_ppm": None if chi is None else round(chi, 4),
                "chi_volume_ppm_mm3": None if chi is None else round(chi * volume, 3),
                "region": "n/a",  # needs a registration to an atlas: not done
            }
        )
    return rows


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

    def probability(label: int) -> Callable[[Path], None]:
        def write(tmp: Path) -> None:  # one full-size volume at a time
            nib.save(nifti_image(prediction.probability_map(label), affine, np.float32), tmp)

        return write

    def text(content: str) -> Callable[[Path], None]:
        def write(tmp: Path) -> None:
            tmp.write_text(content, encoding="utf-8")

        return write

    writers: dict[str, Callable[[Path], None]] = {
        "dseg": dseg,
        "lesions": text(lesions_tsv(prediction.table)),
    }
    if report_html is not None:
        writers["report"] = text(report_html)
    if save_probabilities:
        writers.update({f"prob-{label}": probability(label) for label in LESION_CLASSES})
    current = paths["dseg"]
    try:
        with atomic_group() as stage:
            for name, write in writers.items():
                current = paths[name]
                write(stage(current))
        for name, path in paths.items():
            if name not in writers:
                current = path
                path.unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(current, f"cannot be written: {os_reason(exc)}") from exc
    return [paths[name] for name in writers]


def discard_outputs(out: Path, ref: SubjectRef) -> str:
    """Remove a failed subject's outputs of an earlier run (they would be taken for
    this run's); returns what was done, for the error message."""
    existing = [p for p in output_paths(out, ref).values() if p.exists()]
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


@dataclass
class PredictOutcome:
    written: dict[str, list[Path]]
    failed: dict[str, str]
    counts: dict[str, dict[str, int]]
    model: str
    warnings: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: the cohort index could not be written (the message says why)
    index_error: str | None = None


def select_subjects(root: Path, labels: Iterable[str] | None) -> list[SubjectRef]:
    problem = dataset_problem(root)
    if problem:
        raise SubjectDataError(root, problem)
    refs = find_subjects(root)
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
    """Predict every (selected) subject; a failing subject is reported and skipped.

    Usage errors are raised before any subject is processed: a bad ``data``
    folder or participant (:class:`SubjectDataError`), a bad model folder
    (:class:`ModelError`), an output folder that cannot be written
    (:class:`OutputError`), a threshold outside (0, 1) (``ValueError``).
    Then every subject is done or fails alone: bad or implausible input, or a
    write error (a full disk), is recorded in ``failed`` with its message, and
    the subject's outputs of an earlier run are removed."""
    from deepmir.report.html import cohort_index, subject_report

    root, out = Path(data), Path(out)
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ValueError(f"--threshold must be between 0 and 1, got {threshold}")
    refs = select_subjects(root, participants)
    loaded = choose_model(model, root, refs)
    post = loaded.card.post
    if threshold is not None:
        post = dataclasses.replace(post, threshold=threshold)
    prepare_output_dir(out)
    stale = remove_stale_temporaries(out)
    if stale:
        log(f"removed {len(stale)} temporary file(s) left in {out} by an interrupted run")
    log(f"model: {loaded.name}, modalities {'+'.join(loaded.card.modalities)}")
    for path, content in (
        (out / "dataset_description.json", json_text(_description(loaded, root))),
        (out / "dseg.tsv", dseg_tsv()),
    ):
        try:
            write_text(path, content)
        except OSError as exc:
            raise OutputError(path, f"cannot be written: {os_reason(exc)}") from exc
    outcome = PredictOutcome({}, {}, {}, loaded.name)
    bar = tqdm(refs, desc="predict", unit="subject", disable=None if progress else True)

    def say(message: str) -> None:  # on its own line, never glued to the progress bar
        with tqdm.external_write_mode():
            log(message)

    for ref in bar:
        name = str(ref)
        try:
            prediction = predict_subject(root, ref, loaded, post)
            for warning in prediction.warnings:
                say(f"{name}: WARNING: {warning}")
            html = subject_report(prediction, loaded.name) if report else None
            outcome.written[name] = write_subject(out, prediction, html, save_probabilities)
            outcome.counts[name] = {
                label_name: int((prediction.lesions.labels == label).sum())
                for label, label_name in LESION_CLASSES.items()
            }
            outcome.warnings[name] = prediction.warnings
            del prediction
            if progress and bar.disable:  # no bar (a log file): one line per subject
                counted = ", ".join(f"{v} {k}" for k, v in outcome.counts[name].items())
                say(f"{name}: done ({counted})")
        except (SubjectDataError, ModelError, OutputError) as exc:
            outcome.failed[name] = str(exc) + discard_outputs(out, ref)
        except OSError as exc:  # a write outside write_subject, say
            where = exc.filename or out
            outcome.failed[name] = f"{where}: {os_reason(exc)}" + discard_outputs(out, ref)
        except MemoryError as exc:
            outcome.failed[name] = (
                f"{ref.anat_dir(root)}: not enough memory for this subject ({exc})"
                + discard_outputs(out, ref)
            )
        if name in outcome.failed:
            say(f"{name}: FAILED: {outcome.failed[name]}")
    if report:
        index = out / "index.html"
        try:
            write_text(
                index,
                cohort_index(outcome.counts, outcome.failed, loaded.name, out, outcome.warnings),
            )
        except OSError as exc:
            outcome.index_error = f"{index}: cannot be written: {os_reason(exc)}"
            say(f"FAILED: {outcome.index_error}")
    return outcome


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
