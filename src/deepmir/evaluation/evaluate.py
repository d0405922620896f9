"""Evaluate a predictions folder against a reference folder, and write the result.

Layout (``docs/data-contract.md``), with an optional session level
``ses-<label>/`` between subject and ``anat/`` in both trees::

    reference/sub-<id>/anat/sub-<id>_dseg.nii.gz                   uint8 labels
    reference/sub-<id>/anat/sub-<id>_desc-instances_dseg.nii.gz    int16 ids, optional
    reference/sub-<id>/anat/sub-<id>_lesions.tsv                   lesion_id, label, ...
    predictions/sub-<id>/anat/sub-<id>_desc-deepmir_dseg.nii.gz     uint8 labels

Scans are enumerated from the reference folder; a scan is named
``sub-<id>`` or ``sub-<id>_ses-<label>`` and is one "subject" of the figures.

Every input is read and checked before anything is written: a grid mismatch,
a label outside the table or an unreadable file raises
:class:`EvaluationInputError` naming the file, and :func:`write_evaluation`
renders all outputs in memory before it writes them, each atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from deepmir.evaluation.matching import SubjectMatch, match_subject, unknown_labels
from deepmir.evaluation.metrics import FIGURES, EvaluationResult, compute_metrics
from deepmir.evaluation.plots import render_plots
from deepmir.io.atomic import atomic_path, write_text
from deepmir.io.loader import SubjectDataError, read_nifti
from deepmir.labels import LABELS, LESION_CLASSES, NAME_TO_INDEX

#: Largest difference (mm) between two affines still taken as one grid.
AFFINE_TOLERANCE_MM = 1e-3

REFERENCE_SUFFIX = "_dseg.nii.gz"
INSTANCES_SUFFIX = "_desc-instances_dseg.nii.gz"
LESIONS_SUFFIX = "_lesions.tsv"
PREDICTION_SUFFIX = "_desc-deepmir_dseg.nii.gz"

#: Files :func:`write_evaluation` writes into the output folder.
OUTPUT_FILES = (
    "metrics.json",
    "per_subject.tsv",
    "summary.tsv",
    "confusion.tsv",
    "bland_altman.png",
    "counts.png",
)


class EvaluationInputError(ValueError):
    """Input an evaluation cannot use; the message names the file and the problem."""


@dataclass(frozen=True)
class ScanFiles:
    """The files of one scan (subject, or subject and session)."""

    key: str
    reference_dseg: Path
    reference_instances: Path | None
    reference_lesions: Path | None
    prediction: Path


def _anat_dirs(root: Path) -> list[tuple[str, Path]]:
    """``(scan key, anat folder)`` of every ``sub-*/anat`` and ``sub-*/ses-*/anat``."""
    found: list[tuple[str, Path]] = []
    for subject_dir in sorted(p for p in root.glob("sub-*") if p.is_dir()):
        if (subject_dir / "anat").is_dir():
            found.append((subject_dir.name, subject_dir / "anat"))
        for session_dir in sorted(p for p in subject_dir.glob("ses-*") if p.is_dir()):
            if (session_dir / "anat").is_dir():
                found.append((f"{subject_dir.name}_{session_dir.name}", session_dir / "anat"))
    return found


def _prediction_path(predictions_dir: Path, key: str) -> Path:
    parts = key.split("_")
    return predictions_dir.joinpath(*parts, "anat", f"{key}{PREDICTION_SUFFIX}")


def find_scans(
    reference_dir: str | os.PathLike[str], predictions_dir: str | os.PathLike[str]
) -> tuple[list[ScanFiles], list[str]]:
    """Scans of the reference folder, and predicted scans absent from it.

    Raises
    ------
    EvaluationInputError
        When a folder does not exist, the reference holds no scan, or the
        predictions folder holds no prediction at all.
    """
    reference_root, predictions_root = Path(reference_dir), Path(predictions_dir)
    for what, root in (("reference", reference_root), ("predictions", predictions_root)):
        if not root.is_dir():
            raise EvaluationInputError(f"{root}: {what} folder does not exist")
    scans: list[ScanFiles] = []
    for key, anat in _anat_dirs(reference_root):
        dseg = anat / f"{key}{REFERENCE_SUFFIX}"
        if not dseg.is_file():
            continue
        instances = anat / f"{key}{INSTANCES_SUFFIX}"
        lesions = anat / f"{key}{LESIONS_SUFFIX}"
        scans.append(
            ScanFiles(
                key=key,
                reference_dseg=dseg,
                reference_instances=instances if instances.is_file() else None,
                reference_lesions=lesions if lesions.is_file() else None,
                prediction=_prediction_path(predictions_root, key),
            )
        )
    if not scans:
        hint = ""
        if (reference_root / "derivatives" / "reference").is_dir():
            hint = f"; did you mean {reference_root / 'derivatives' / 'reference'}?"
        raise EvaluationInputError(
            f"{reference_root}: no reference segmentation "
            f"sub-<id>/[ses-<label>/]anat/sub-<id>[_ses-<label>]{REFERENCE_SUFFIX} found{hint}"
        )
    predicted = [
        key
        for key, anat in _anat_dirs(predictions_root)
        if (anat / f"{key}{PREDICTION_SUFFIX}").is_file()
    ]
    if not predicted:
        raise EvaluationInputError(
            f"{predictions_root}: no prediction "
            f"sub-<id>/[ses-<label>/]anat/sub-<id>[_ses-<label>]{PREDICTION_SUFFIX} found"
        )
    reference_keys = {scan.key for scan in scans}
    extra = [key for key in predicted if key not in reference_keys]
    return scans, extra


# --------------------------------------------------------------------------
# Reading and checking


def _load_integer_volume(
    path: Path, what: str
) -> tuple[npt.NDArray[np.integer[Any]], npt.NDArray[np.float64]]:
    """A 3D integer volume and its affine, or a clear error naming ``path``."""
    try:
        image, data = read_nifti(path)  # a gzip stream's CRC is verified
        affine = np.asarray(image.affine, dtype=np.float64)
    except SubjectDataError as error:
        raise EvaluationInputError(f"{path}: cannot read {what}: {error.problem}") from error
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise EvaluationInputError(f"{path}: {what} must be 3D, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            raise EvaluationInputError(
                f"{path}: {what} must hold integer labels, got non-integer {data.dtype} values"
            )
        data = data.astype(np.int64)
    return data, affine


def _check_label_values(path: Path, data: npt.NDArray[np.integer[Any]]) -> None:
    unknown = unknown_labels(data)
    if unknown:
        table = ", ".join(f"{k} {v}" for k, v in LABELS.items())
        raise EvaluationInputError(
            f"{path}: label values {unknown} are outside the label table ({table})"
        )


def _check_same_grid(
    reference_path: Path,
    reference: tuple[tuple[int, ...], npt.NDArray[np.float64]],
    other_path: Path,
    other: tuple[tuple[int, ...], npt.NDArray[np.float64]],
) -> None:
    (ref_shape, ref_affine), (shape, affine) = reference, other
    if shape != ref_shape:
        raise EvaluationInputError(
            f"grid mismatch: {other_path} has shape {shape} but {reference_path} "
            f"has shape {ref_shape}"
        )
    difference = float(np.max(np.abs(affine - ref_affine)))
    if difference > AFFINE_TOLERANCE_MM:
        raise EvaluationInputError(
            f"grid mismatch: the affine of {other_path} differs from that of "
            f"{reference_path} by up to {difference:.4g} mm"
        )


def parse_label(path: Path, line: int, text: str) -> int:
    """A lesion table's ``label`` cell (``"1"``, ``"1.0"`` or a class name such
    as ``"cmb"``) as a lesion class; an error naming the file and line otherwise."""
    label = _integer(text)
    if label is None:
        label = NAME_TO_INDEX.get(text.strip().lower())
    if label not in LESION_CLASSES:
        raise EvaluationInputError(
            f"{path}, line {line}: label {text!r} is not a lesion class "
            f"({', '.join(f'{k} {v}' for k, v in LESION_CLASSES.items())})"
        )
    return label


def _integer(text: str) -> int | None:
    """``"3"`` or ``"3.0"`` as 3; ``None`` for anything else."""
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def read_lesion_labels(path: Path) -> dict[int, int]:
    """``lesion_id -> label`` from a reference ``lesions.tsv``.

    ``label`` is the class index; a class name (``cmb``) is accepted too.
    """
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as error:
        raise EvaluationInputError(f"{path}: cannot read as TSV ({error})") from error
    missing = [c for c in ("lesion_id", "label") if c not in table.columns]
    if missing:
        raise EvaluationInputError(f"{path}: missing column(s) {', '.join(missing)}")
    labels: dict[int, int] = {}
    for row, (raw_id, raw_label) in enumerate(
        zip(table["lesion_id"], table["label"], strict=True), start=2
    ):
        lesion_id = _integer(raw_id)
        if lesion_id is None:
            raise EvaluationInputError(
                f"{path}, line {row}: lesion_id {raw_id!r} is not an integer"
            )
        label = parse_label(path, row, raw_label)
        if labels.get(lesion_id, label) != label:
            raise EvaluationInputError(f"{path}: lesion_id {lesion_id} has two labels")
        labels[lesion_id] = label
    return labels


def score_scan(scan: ScanFiles) -> tuple[SubjectMatch, bool]:
    """Read, check and match one scan; ``(match, prediction_missing)``."""
    reference, affine = _load_integer_volume(scan.reference_dseg, "reference dseg")
    _check_label_values(scan.reference_dseg, reference)
    grid = (reference.shape, affine)

    instances = None
    if scan.reference_instances is not None:
        instances, instances_affine = _load_integer_volume(
            scan.reference_instances, "reference instance map"
        )
        _check_same_grid(
            scan.reference_dseg,
            grid,
            scan.reference_instances,
            (instances.shape, instances_affine),
        )
        if instances.size and instances.min() < 0:
            raise EvaluationInputError(
                f"{scan.reference_instances}: negative lesion ids in the instance map"
            )
    instance_labels = None
    if instances is not None and scan.reference_lesions is not None:
        instance_labels = read_lesion_labels(scan.reference_lesions)

    missing = not scan.prediction.is_file()
    if missing:
        predicted = np.zeros_like(reference)
    else:
        predicted, predicted_affine = _load_integer_volume(scan.prediction, "prediction")
        _check_label_values(scan.prediction, predicted)
        _check_same_grid(
            scan.reference_dseg, grid, scan.prediction, (predicted.shape, predicted_affine)
        )

    try:
        match = match_subject(
            reference, instances, predicted, affine, instance_labels=instance_labels
        )
    except ValueError as error:
        # Only the reference can be inconsistent here: the prediction is checked.
        sources = [p for p in (scan.reference_instances, scan.reference_lesions) if p]
        named = " and ".join(str(p) for p in sources) or str(scan.reference_dseg)
        raise EvaluationInputError(
            f"{named}: inconsistent with {scan.reference_dseg}: {error}"
        ) from error
    return match, missing


def evaluate_dataset(
    reference_dir: str | os.PathLike[str],
    predictions_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_bootstrap: int = 2000,
) -> EvaluationResult:
    """Score a predictions folder against a reference folder.

    Parameters
    ----------
    reference_dir : path
        Reference derivatives folder (``derivatives/reference``).
    predictions_dir : path
        Predictions folder (``sub-<id>/anat/sub-<id>_desc-deepmir_dseg.nii.gz``).
    seed : int
        Seed of the bootstrap CIs, recorded in the result.
    n_bootstrap : int
        Bootstrap resamples (0: no CI).

    Returns
    -------
    EvaluationResult
        A scan without prediction is scored as an empty prediction and
        listed in ``missing_subjects``.

    Raises
    ------
    EvaluationInputError
        Grids that do not match (naming both files), labels outside the
        table (naming the file), unreadable or inconsistent files.
    """
    if n_bootstrap < 0:
        raise EvaluationInputError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    scans, extra = find_scans(reference_dir, predictions_dir)
    matches: dict[str, SubjectMatch] = {}
    missing: list[str] = []
    for scan in scans:
        matches[scan.key], is_missing = score_scan(scan)
        if is_missing:
            missing.append(scan.key)
    result = compute_metrics(matches, seed=seed, n_bootstrap=n_bootstrap, missing_subjects=missing)
    return replace(
        result,
        reference_dir=str(Path(reference_dir)),
        predictions_dir=str(Path(predictions_dir)),
        extra_prediction_subjects=tuple(extra),
    )


# --------------------------------------------------------------------------
# Writing


def _cell(value: Any) -> str:
    """One TSV cell: ``n/a`` for missing values (BIDS), lower-case booleans."""
    if value is None:
        return "n/a"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.10g}" if math.isfinite(value) else "n/a"
    return str(value)


def _tsv(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["\t".join(header)] + ["\t".join(_cell(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def per_subject_tsv(result: EvaluationResult) -> str:
    """One row per subject and class."""
    header = [
        "subject",
        "class",
        "label",
        "n_reference",
        "n_predicted",
        "true_positives",
        "false_positives",
        "false_negatives",
        "sensitivity",
        "precision",
        "f1",
        "count_ratio",
        "abs_count_difference",
        "dice",
        "prediction_missing",
    ]
    rows = [
        [
            r.subject,
            r.name,
            r.label,
            r.n_reference,
            r.n_predicted,
            r.true_positives,
            r.false_positives,
            r.false_negatives,
            r.sensitivity,
            r.precision,
            r.f1,
            r.count_ratio,
            r.abs_count_difference,
            r.dice,
            r.prediction_missing,
        ]
        for r in result.per_subject
    ]
    return _tsv(header, rows)


def summary_tsv(result: EvaluationResult) -> str:
    """One row per class and figure: pooled, mean, SEM, 95 % CI, subjects used."""
    header = ["class", "figure", "pooled", "mean", "sem", "ci95_low", "ci95_high", "n_subjects"]
    rows: list[list[Any]] = []
    for name, metrics in result.classes.items():
        for count_name, count in (
            ("n_reference", metrics.n_reference),
            ("n_predicted", metrics.n_predicted),
            ("true_positives", metrics.true_positives),
            ("false_positives", metrics.false_positives),
            ("false_negatives", metrics.false_negatives),
        ):
            rows.append([name, count_name, count, None, None, None, None, metrics.n_subjects])
        for figure in FIGURES:
            s = metrics.figures[figure]
            rows.append([name, figure, s.pooled, s.mean, s.sem, s.ci_low, s.ci_high, s.n_subjects])
        agreement = metrics.count_agreement
        for figure, value in (
            ("pearson_r", agreement.pearson_r),
            ("bland_altman_mean_difference", agreement.mean_difference),
            ("bland_altman_limit_low", agreement.limit_low),
            ("bland_altman_limit_high", agreement.limit_high),
        ):
            rows.append([name, figure, value, None, None, None, None, agreement.n_subjects])
    return _tsv(header, rows)


def confusion_tsv(result: EvaluationResult) -> str:
    """Rows: reference class; columns: predicted class (background: unmatched)."""
    header = ["reference"] + [f"predicted_{name}" for name in LABELS.values()]
    counts = result.confusion.counts
    rows = [[LABELS[r]] + [int(counts[r, p]) for p in LABELS] for r in LABELS]
    return _tsv(header, rows)


def render_outputs(result: EvaluationResult) -> Mapping[str, str | bytes]:
    """Every output file's content, by file name, built in memory."""
    outputs: dict[str, str | bytes] = {
        "metrics.json": json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n",
        "per_subject.tsv": per_subject_tsv(result),
        "summary.tsv": summary_tsv(result),
        "confusion.tsv": confusion_tsv(result),
    }
    outputs.update(render_plots(result))
    return outputs


def write_evaluation(result: EvaluationResult, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write metrics.json, per_subject.tsv, summary.tsv, confusion.tsv and plots.

    Everything is rendered first; each file is then written atomically.

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EvaluationInputError(f"{out}: output path exists and is not a folder")
    outputs = render_outputs(result)
    written = []
    for name, content in outputs.items():
        path = out / name
        if isinstance(content, bytes):
            with atomic_path(path) as tmp:
                tmp.write_bytes(content)
        else:
            write_text(path, content)
        written.append(path)
    return written
