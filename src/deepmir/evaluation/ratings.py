"""A rater's verdicts from the QC report, turned into a reference to score against.

The report's rater mode downloads ``<scan>_desc-rater_lesions.tsv`` (columns
:data:`deepmir.report.data.RATINGS_COLUMNS`): every predicted lesion confirmed,
rejected or unrated, its class as the rater gives it, and the lesions the
rater added at a clicked voxel. :func:`write_rated_reference` makes of a
folder of such files, and the predictions they rate, a reference folder in
the layout :func:`deepmir.evaluation.evaluate_dataset` and ``deepmir tune``
read:

* a **confirmed** lesion is in the reference with its predicted voxels (the
  connected component of the predicted dseg that holds it) and the rater's
  class: it scores as a true positive, or as a class confusion when the
  rater changed its class;
* a **rejected** lesion is not in the reference: a false positive;
* an **added** lesion is a ball of :data:`ADDED_RADIUS_MM` around the clicked
  voxel (at least that voxel), with the rater's class: a false negative
  (unless a predicted lesion lies within the matching distance of the click,
  :mod:`deepmir.evaluation.matching`).

Every predicted lesion must be rated: an unrated or missing one is an error
that names the file, as is a rating of a lesion the predictions do not have.
Ratings files are found anywhere under the ratings folder (a BIDS tree, or
the flat folder a browser downloads into).
"""

from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from deepmir.evaluation.evaluate import (
    INSTANCES_SUFFIX,
    LESIONS_SUFFIX,
    PREDICTION_SUFFIX,
    REFERENCE_SUFFIX,
    EvaluationInputError,
    _integer,
    _load_integer_volume,
    _prediction_path,
    evaluate_dataset,
    parse_label,
)
from deepmir.evaluation.matching import extract_components
from deepmir.evaluation.metrics import EvaluationResult
from deepmir.io.atomic import write_nifti, write_text
from deepmir.report.data import RATINGS_SUFFIX, STATUSES

#: radius of the ball that stands for an added lesion
ADDED_RADIUS_MM = 1.0
#: the predictions' lesion table
PREDICTED_LESIONS_SUFFIX = "_desc-deepmir_lesions.tsv"


@dataclass(frozen=True)
class Rating:
    lesion_id: int | None  # None: added by the rater
    status: str
    label: int
    ijk: tuple[float, float, float]
    rater: str


def read_ratings(path: str | os.PathLike[str]) -> list[Rating]:
    """The rows of a ratings TSV, checked (the message names the file and line)."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationInputError(f"{path}: cannot read as TSV ({exc})") from exc
    needed = ("lesion_id", "status", "label", "i", "j", "k")
    missing = [c for c in needed if rows and c not in rows[0]]
    if not rows:
        with path.open(encoding="utf-8") as f:
            header = f.readline().rstrip("\n").split("\t")
        missing = [c for c in needed if c not in header]
    if missing:
        raise EvaluationInputError(f"{path}: missing column(s) {', '.join(missing)}")
    out = []
    seen: set[int] = set()
    for line, row in enumerate(rows, start=2):
        status = (row["status"] or "").strip().lower()
        if status not in STATUSES:
            raise EvaluationInputError(
                f"{path}, line {line}: status {row['status']!r} is not one of {', '.join(STATUSES)}"
            )
        lesion_id = None if status == "added" else _integer(row["lesion_id"] or "")
        if status != "added" and lesion_id is None:
            raise EvaluationInputError(
                f"{path}, line {line}: lesion_id {row['lesion_id']!r} is not an integer"
            )
        if lesion_id is not None:
            if lesion_id in seen:
                raise EvaluationInputError(f"{path}: lesion_id {lesion_id} is rated twice")
            seen.add(lesion_id)
        try:
            ijk = (float(row["i"]), float(row["j"]), float(row["k"]))
        except (TypeError, ValueError) as exc:
            raise EvaluationInputError(
                f"{path}, line {line}: voxel i, j, k must be numbers"
            ) from exc
        out.append(
            Rating(
                lesion_id,
                status,
                parse_label(path, line, row["label"] or ""),
                ijk,
                (row.get("rater") or "n/a").strip(),
            )
        )
    return out


def find_ratings(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """``scan key (sub-<id>[_ses-<label>]) -> ratings file`` anywhere under ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        raise EvaluationInputError(f"{root}: ratings folder does not exist")
    found: dict[str, Path] = {}
    for path in sorted(root.rglob(f"sub-*{RATINGS_SUFFIX}")):
        key = path.name.removesuffix(RATINGS_SUFFIX)
        if key in found:
            raise EvaluationInputError(
                f"{root}: two ratings files for {key}: {found[key]} and {path}"
            )
        found[key] = path
    if not found:
        raise EvaluationInputError(
            f"{root}: no ratings file sub-<id>[_ses-<label>]{RATINGS_SUFFIX} found "
            "(download them from the QC reports' rater mode)"
        )
    return found


def _predicted_lesions(path: Path) -> dict[int, tuple[int, tuple[float, float, float]]]:
    """``lesion_id -> (label, centroid i, j, k)`` from the predictions' lesions.tsv."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        return {
            int(r["lesion_id"]): (int(r["label"]), (float(r["i"]), float(r["j"]), float(r["k"])))
            for r in rows
        }
    except (OSError, KeyError, ValueError, TypeError, csv.Error) as exc:
        raise EvaluationInputError(f"{path}: cannot read the predicted lesions ({exc})") from exc


def rated_reference(
    dseg: npt.NDArray[np.integer],
    affine: npt.NDArray[np.float64],
    predicted: dict[int, tuple[int, tuple[float, float, float]]],
    ratings: list[Rating],
    source: Path,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int16], dict[int, int]]:
    """The reference (dseg, instance map, instance -> label) the ratings of
    ``source`` make of a prediction (``dseg`` and its lesion table ``predicted``)."""
    by_id = {r.lesion_id: r for r in ratings if r.lesion_id is not None}
    unknown = sorted(set(by_id) - set(predicted))
    if unknown:
        raise EvaluationInputError(
            f"{source}: lesion_id(s) {unknown} are not in the predictions' lesion table"
        )
    unrated = sorted(i for i in predicted if i not in by_id or by_id[i].status == "unrated")
    if unrated:
        raise EvaluationInputError(
            f"{source}: {len(unrated)} predicted lesion(s) not rated (lesion_id "
            f"{', '.join(map(str, unrated[:10]))}{', ...' if len(unrated) > 10 else ''}): rate "
            "every lesion (confirm or reject) before scoring"
        )
    components = extract_components(dseg, affine)
    centroids = np.array([c.centroid_ijk for c in components.lesions]).reshape(-1, 3)
    labels = np.array([c.label for c in components.lesions], np.int64)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    reference = np.zeros(dseg.shape, np.uint8)
    instances = np.zeros(dseg.shape, np.int16)
    instance_labels: dict[int, int] = {}
    for lesion_id, (label, ijk) in sorted(predicted.items()):
        rating = by_id[lesion_id]
        if rating.status != "confirmed" or not len(centroids):
            continue
        distance = np.linalg.norm((centroids - np.array(ijk)) * spacing, axis=1)
        distance[labels != label] = np.inf
        nearest = int(np.argmin(distance))
        radius = components.lesions[nearest].equivalent_radius_mm
        if distance[nearest] > max(3.0, 2 * radius):  # no voxel of its own in the dseg
            continue
        voxels = components.index_map == nearest + 1
        n = len(instance_labels) + 1
        reference[voxels], instances[voxels] = rating.label, n
        instance_labels[n] = rating.label
    reach = np.ceil(ADDED_RADIUS_MM / spacing).astype(int)
    for rating in ratings:
        if rating.status != "added":
            continue
        centre = np.round(rating.ijk).astype(int)
        if np.any(centre < 0) or np.any(centre >= dseg.shape):
            raise EvaluationInputError(
                f"{source}: added lesion at voxel {rating.ijk} is outside the image {dseg.shape}"
            )
        box = tuple(
            slice(max(c - r, 0), min(c + r + 1, n))
            for c, r, n in zip(centre, reach, dseg.shape, strict=True)
        )
        near = np.ogrid[box]
        squared = sum(((o - c) * s) ** 2 for o, c, s in zip(near, centre, spacing, strict=True))
        ball = np.zeros(dseg.shape, bool)
        ball[box] = squared <= ADDED_RADIUS_MM**2
        ball[tuple(centre)] = True
        ball &= instances == 0
        n = len(instance_labels) + 1
        reference[ball], instances[ball] = rating.label, n
        instance_labels[n] = rating.label
    return reference, instances, instance_labels


def write_rated_reference(
    ratings_dir: str | os.PathLike[str],
    predictions_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
) -> list[str]:
    """A reference folder (``sub-*/anat/*_dseg.nii.gz``, instance map and
    lesions.tsv) in ``out_dir`` from every ratings file and the predictions
    it rates; returns the scans written. Everything is checked before
    anything is written."""
    predictions, out = Path(predictions_dir), Path(out_dir)
    found = find_ratings(ratings_dir)
    made = {}
    for key, path in found.items():
        dseg_path = _prediction_path(predictions, key)
        table = dseg_path.with_name(f"{key}{PREDICTED_LESIONS_SUFFIX}")
        if not dseg_path.is_file():
            raise EvaluationInputError(
                f"{path}: no prediction {dseg_path.name} in {predictions} to go with it"
            )
        dseg, affine = _load_integer_volume(dseg_path, "prediction")
        made[key] = (
            rated_reference(dseg, affine, _predicted_lesions(table), read_ratings(path), path),
            affine,
        )
    for key, ((reference, instances, labels), affine) in made.items():
        anat = out.joinpath(*key.split("_"), "anat")
        anat.mkdir(parents=True, exist_ok=True)
        write_nifti(anat / f"{key}{REFERENCE_SUFFIX}", reference, affine)
        write_nifti(anat / f"{key}{INSTANCES_SUFFIX}", instances, affine)
        rows = "".join(f"{n}\t{label}\n" for n, label in sorted(labels.items()))
        write_text(anat / f"{key}{LESIONS_SUFFIX}", "lesion_id\tlabel\n" + rows)
    return sorted(made)


def evaluate_ratings(
    ratings_dir: str | os.PathLike[str],
    predictions_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_bootstrap: int = 2000,
) -> EvaluationResult:
    """:func:`deepmir.evaluation.evaluate_dataset` with the rated scans'
    reference made from their ratings (:func:`write_rated_reference`, in a
    temporary folder); the result names the ratings folder as its reference."""
    with tempfile.TemporaryDirectory(prefix="deepmir-ratings-") as tmp:
        write_rated_reference(ratings_dir, predictions_dir, tmp)
        result = evaluate_dataset(tmp, predictions_dir, seed=seed, n_bootstrap=n_bootstrap)
    return replace(result, reference_dir=str(Path(ratings_dir)))


__all__ = [
    "evaluate_ratings",
    "ADDED_RADIUS_MM",
    "PREDICTION_SUFFIX",
    "Rating",
    "find_ratings",
    "rated_reference",
    "read_ratings",
    "write_rated_reference",
]
