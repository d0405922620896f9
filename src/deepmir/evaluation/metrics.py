"""Lesion-level figures per class, pooled and over subjects (``metrics.md``).

From the TP, FP and FN of every subject and class (see
:mod:`deepmir.evaluation.matching`) this module computes, per class:

============================ ==================================================
figure                        per subject (``nan`` where undefined)
============================ ==================================================
``sensitivity``               TP / reference lesions
``precision``                 TP / predicted lesions
``f1``                        2TP / (2TP + FP + FN)
``fp_per_subject``            FP
``count_ratio``               predicted count / reference count
``abs_count_difference``      abs(predicted count - reference count)
``dice``                      mean voxel Dice of the subject's matched pairs
============================ ==================================================

Each figure is given *pooled* (lesions summed over subjects: sum TP / sum
reference lesions, ...; FP per subject and absolute count difference are the
mean over all subjects; Dice the mean over all matched pairs) and as the
*mean over subjects* with its SEM and a percentile bootstrap 95 % CI
(subjects resampled with replacement, seeded).

Which subjects a mean is taken over: those where the subject's figure is
defined. So sensitivity and count ratio use the subjects that have the class
in the reference; precision uses the subjects with at least one predicted
lesion of the class, including those without any reference lesion; F1 uses
the subjects with the class in the reference or the prediction; FP per
subject and absolute count difference use all subjects; Dice the subjects
with at least one matched pair. Subjects with no reference lesion of a class
thus count towards FP per subject and precision, not towards sensitivity, as
``metrics.md`` asks. Every summary records how many subjects it used.

Count agreement (Pearson r of per-subject counts, Bland-Altman mean
difference ``predicted - reference`` and limits ``mean +- 1.96 SD``) is
computed over all subjects; an undefined r (fewer than two subjects, or a
constant count) is ``nan``, never an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from deepmir import __version__
from deepmir.evaluation.matching import (
    CONNECTIVITY,
    MIN_MATCH_DISTANCE_MM,
    SubjectMatch,
)
from deepmir.labels import BACKGROUND, LABELS, LESION_CLASSES

#: Names of the per-class figures, in report order.
FIGURES: tuple[str, ...] = (
    "sensitivity",
    "precision",
    "f1",
    "fp_per_subject",
    "count_ratio",
    "abs_count_difference",
    "dice",
)

#: Confidence level of the bootstrap intervals.
CONFIDENCE_LEVEL = 0.95

#: Bland-Altman limits of agreement: mean difference +- this many SD.
LIMITS_OF_AGREEMENT_SD = 1.96

#: The matching rule in words, recorded with every result.
MATCHING_RULE = (
    "one-to-one, greedy by centroid distance in mm (nearest pairs first), per class "
    "and per subject; a pair may match when the lesions overlap by >= 1 voxel or their "
    "centroids lie within max(3 mm, reference equivalent-sphere radius); a second "
    "prediction on a matched lesion is a false positive"
)
CROSS_CLASS_RULE = (
    "after the per-class run, reference lesions left unmatched are matched with the "
    "same rule to predicted lesions of another class left unmatched; such pairs stay "
    "FN and FP of their own classes and fill the off-diagonal of the confusion table"
)


def _clean(value: float) -> float | None:
    """A float for JSON: ``nan`` and infinities become ``None``."""
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class SummaryStatistic:
    """One figure of one class: pooled, and mean over subjects.

    Attributes
    ----------
    pooled : float
        Over lesions of all subjects (see the module docstring).
    mean, sem : float
        Mean over subjects and its standard error (SD with ``ddof=1`` over
        sqrt(n)); ``nan`` with no subject (SEM also with one).
    ci_low, ci_high : float
        Percentile bootstrap 95 % CI of the mean over subjects.
    n_subjects : int
        Subjects the mean is taken over.
    """

    pooled: float
    mean: float
    sem: float
    ci_low: float
    ci_high: float
    n_subjects: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "pooled": _clean(self.pooled),
            "mean": _clean(self.mean),
            "sem": _clean(self.sem),
            "ci95_low": _clean(self.ci_low),
            "ci95_high": _clean(self.ci_high),
            "n_subjects": self.n_subjects,
        }


@dataclass(frozen=True)
class CountAgreement:
    """Agreement of per-subject lesion counts (predicted against reference).

    Attributes
    ----------
    pearson_r : float
        ``nan`` when undefined.
    mean_difference : float
        Bland-Altman bias, mean of ``predicted - reference`` counts.
    sd_difference : float
        SD (``ddof=1``) of the differences.
    limit_low, limit_high : float
        ``mean_difference -+ 1.96 sd_difference``.
    n_subjects : int
    """

    pearson_r: float
    mean_difference: float
    sd_difference: float
    limit_low: float
    limit_high: float
    n_subjects: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "pearson_r": _clean(self.pearson_r),
            "bland_altman_mean_difference": _clean(self.mean_difference),
            "bland_altman_sd_difference": _clean(self.sd_difference),
            "bland_altman_limit_low": _clean(self.limit_low),
            "bland_altman_limit_high": _clean(self.limit_high),
            "n_subjects": self.n_subjects,
        }


@dataclass(frozen=True)
class SubjectClassFigures:
    """Counts and figures of one class in one subject."""

    subject: str
    label: int
    n_reference: int
    n_predicted: int
    true_positives: int
    false_positives: int
    false_negatives: int
    sensitivity: float
    precision: float
    f1: float
    count_ratio: float
    abs_count_difference: int
    dice: float
    prediction_missing: bool = False

    @property
    def name(self) -> str:
        return LABELS[self.label]

    def figure(self, name: str) -> float:
        """The per-subject value of one of :data:`FIGURES`."""
        if name == "fp_per_subject":
            return float(self.false_positives)
        return float(getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "label": self.label,
            "class": self.name,
            "n_reference": self.n_reference,
            "n_predicted": self.n_predicted,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
            "sensitivity": _clean(self.sensitivity),
            "precision": _clean(self.precision),
            "f1": _clean(self.f1),
            "count_ratio": _clean(self.count_ratio),
            "abs_count_difference": self.abs_count_difference,
            "dice": _clean(self.dice),
            "prediction_missing": self.prediction_missing,
        }


@dataclass(frozen=True)
class ClassMetrics:
    """Every figure of one lesion class.

    Attributes
    ----------
    label : int
    n_subjects : int
        All subjects scored.
    n_subjects_with_class : int
        Subjects with at least one reference lesion of the class.
    n_reference, n_predicted, true_positives, false_positives, false_negatives : int
        Lesion counts summed over subjects.
    figures : dict of str to SummaryStatistic
        Keyed by the names of :data:`FIGURES`.
    count_agreement : CountAgreement
    """

    label: int
    n_subjects: int
    n_subjects_with_class: int
    n_reference: int
    n_predicted: int
    true_positives: int
    false_positives: int
    false_negatives: int
    figures: dict[str, SummaryStatistic]
    count_agreement: CountAgreement

    @property
    def name(self) -> str:
        return LABELS[self.label]

    @property
    def sensitivity(self) -> float:
        """Pooled sensitivity."""
        return self.figures["sensitivity"].pooled

    @property
    def precision(self) -> float:
        """Pooled precision."""
        return self.figures["precision"].pooled

    @property
    def f1(self) -> float:
        """Pooled F1."""
        return self.figures["f1"].pooled

    @property
    def fp_per_subject(self) -> float:
        """Mean false positives per subject (all subjects)."""
        return self.figures["fp_per_subject"].pooled

    @property
    def dice(self) -> float:
        """Mean voxel Dice over all matched pairs."""
        return self.figures["dice"].pooled

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "n_subjects": self.n_subjects,
            "n_subjects_with_class": self.n_subjects_with_class,
            "n_reference": self.n_reference,
            "n_predicted": self.n_predicted,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
            "figures": {name: stat.to_dict() for name, stat in self.figures.items()},
            "count_agreement": self.count_agreement.to_dict(),
        }


@dataclass(frozen=True)
class ConfusionTable:
    """Lesion confusion, summed over subjects.

    ``counts[reference_label, predicted_label]`` with label indices of
    :data:`deepmir.labels.LABELS`; the diagonal holds the true positives,
    ``counts[c, 0]`` reference lesions of class ``c`` found by nothing,
    ``counts[0, c]`` predicted lesions of class ``c`` matching no reference
    lesion of any class (``counts[0, 0]`` is always 0). For instance
    ``counts[3, 1]`` counts calcifications predicted as CMB.
    """

    counts: npt.NDArray[np.int64]

    def found_as(self, reference: int, predicted: int) -> int:
        """Reference lesions of class ``reference`` found as ``predicted``."""
        return int(self.counts[reference, predicted])

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": "reference class (background: predicted lesion matching no reference)",
            "columns": "predicted class (background: reference lesion found by nothing)",
            "counts": {
                LABELS[r]: {LABELS[p]: int(self.counts[r, p]) for p in LABELS} for r in LABELS
            },
        }


@dataclass(frozen=True)
class EvaluationResult:
    """The whole evaluation: per class, per subject, confusion, provenance.

    Attributes
    ----------
    classes : dict of str to ClassMetrics
        Keyed by class name (``cmb``, ``iron``, ``calcification``).
    per_subject : tuple of SubjectClassFigures
        One row per subject and class, subjects in order.
    confusion : ConfusionTable
    subjects : tuple of str
        Subjects scored (``sub-<id>`` or ``sub-<id>_ses-<label>``).
    missing_subjects : tuple of str
        Subjects without a prediction, scored as an empty prediction.
    matches : dict of str to SubjectMatch
        Lesion-level matching of each subject.
    seed, n_bootstrap : int
        Of the bootstrap CIs.
    reference_dir, predictions_dir : str or None
        Where the data came from, when read from files.
    extra_prediction_subjects : tuple of str
        Predicted subjects absent from the reference (not scored).
    """

    classes: dict[str, ClassMetrics]
    per_subject: tuple[SubjectClassFigures, ...]
    confusion: ConfusionTable
    subjects: tuple[str, ...]
    missing_subjects: tuple[str, ...]
    matches: dict[str, SubjectMatch]
    seed: int
    n_bootstrap: int
    reference_dir: str | None = None
    predictions_dir: str | None = None
    extra_prediction_subjects: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (``nan`` written as ``null``)."""
        return {
            "deepmir_version": __version__,
            "reference_dir": self.reference_dir,
            "predictions_dir": self.predictions_dir,
            "matching": {
                "rule": MATCHING_RULE,
                "cross_class": CROSS_CLASS_RULE,
                "min_distance_mm": MIN_MATCH_DISTANCE_MM,
                "connectivity": CONNECTIVITY,
            },
            "bootstrap": {
                "seed": self.seed,
                "n_bootstrap": self.n_bootstrap,
                "confidence_level": CONFIDENCE_LEVEL,
                "method": "percentile bootstrap of the mean over subjects",
            },
            "n_subjects": len(self.subjects),
            "subjects": list(self.subjects),
            "missing_subjects": list(self.missing_subjects),
            "extra_prediction_subjects": list(self.extra_prediction_subjects),
            "classes": {name: metrics.to_dict() for name, metrics in self.classes.items()},
            "confusion": self.confusion.to_dict(),
            "per_subject": [row.to_dict() for row in self.per_subject],
            "lesions": {
                subject: {
                    **match.to_dict(),
                    "confusion": ConfusionTable(match.confusion()).to_dict()["counts"],
                }
                for subject, match in self.matches.items()
            },
        }


# --------------------------------------------------------------------------
# Statistics


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def pearson_r(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Pearson correlation coefficient; ``nan`` when undefined.

    Undefined with fewer than two pairs, or when either variable is constant.

    Examples
    --------
    >>> pearson_r([1, 2, 3], [2, 4, 6])
    1.0
    >>> pearson_r([1, 1, 1], [2, 4, 6])
    nan
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"x and y must be 1D arrays of one length, got {a.shape}, {b.shape}")
    if a.size < 2:
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(np.dot(da, da)) * float(np.dot(db, db)))
    if denominator == 0.0:
        return math.nan
    return float(np.clip(np.dot(da, db) / denominator, -1.0, 1.0))


def bland_altman(reference: npt.ArrayLike, predicted: npt.ArrayLike) -> CountAgreement:
    """Pearson r and Bland-Altman agreement of ``predicted`` with ``reference``.

    Differences are ``predicted - reference``; limits are the mean difference
    +- 1.96 SD (``ddof=1``; ``nan`` with fewer than two subjects).
    """
    ref = np.asarray(reference, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    difference = pred - ref
    n = int(difference.size)
    mean = float(difference.mean()) if n else math.nan
    sd = float(difference.std(ddof=1)) if n >= 2 else math.nan
    return CountAgreement(
        pearson_r=pearson_r(ref, pred),
        mean_difference=mean,
        sd_difference=sd,
        limit_low=mean - LIMITS_OF_AGREEMENT_SD * sd,
        limit_high=mean + LIMITS_OF_AGREEMENT_SD * sd,
        n_subjects=n,
    )


def bootstrap_mean_ci(
    values: npt.ArrayLike,
    rng: np.random.Generator,
    n_bootstrap: int,
    confidence_level: float = CONFIDENCE_LEVEL,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (values resampled with replacement).

    Returns ``(nan, nan)`` for no value or ``n_bootstrap == 0``.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0 or n_bootstrap == 0:
        return math.nan, math.nan
    means = np.empty(n_bootstrap, dtype=np.float64)
    chunk = max(1, 2_000_000 // data.size)  # bound memory for large cohorts
    for start in range(0, n_bootstrap, chunk):
        stop = min(n_bootstrap, start + chunk)
        draws = rng.integers(0, data.size, size=(stop - start, data.size))
        means[start:stop] = data[draws].mean(axis=1)
    tail = 100.0 * (1.0 - confidence_level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def summarize(
    pooled: float, per_subject: npt.ArrayLike, rng: np.random.Generator, n_bootstrap: int
) -> SummaryStatistic:
    """Pooled value plus mean, SEM and bootstrap CI of the finite per-subject values."""
    values = np.asarray(per_subject, dtype=np.float64)
    values = values[np.isfinite(values)]
    n = int(values.size)
    mean = float(values.mean()) if n else math.nan
    sem = float(values.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
    low, high = bootstrap_mean_ci(values, rng, n_bootstrap)
    return SummaryStatistic(pooled, mean, sem, low, high, n)


# --------------------------------------------------------------------------
# Figures


def subject_figures(
    subject: str, match: SubjectMatch, label: int, *, prediction_missing: bool = False
) -> SubjectClassFigures:
    """Counts and per-subject figures of one class."""
    counts = match.counts(label)
    tp, fp, fn = counts.true_positives, counts.false_positives, counts.false_negatives
    return SubjectClassFigures(
        subject=subject,
        label=label,
        n_reference=counts.n_reference,
        n_predicted=counts.n_predicted,
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        sensitivity=_ratio(tp, counts.n_reference),
        precision=_ratio(tp, counts.n_predicted),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        count_ratio=_ratio(counts.n_predicted, counts.n_reference),
        abs_count_difference=abs(counts.n_predicted - counts.n_reference),
        dice=float(np.mean(counts.pair_dice)) if counts.pair_dice else math.nan,
        prediction_missing=prediction_missing,
    )


def _class_metrics(
    label: int,
    rows: list[SubjectClassFigures],
    pair_dice: list[float],
    rng_for: Callable[[int, int], np.random.Generator],
    n_bootstrap: int,
) -> ClassMetrics:
    """Pool and summarize one class from its per-subject rows."""
    n_ref = sum(r.n_reference for r in rows)
    n_pred = sum(r.n_predicted for r in rows)
    tp = sum(r.true_positives for r in rows)
    fp = sum(r.false_positives for r in rows)
    fn = sum(r.false_negatives for r in rows)
    n_subjects = len(rows)
    pooled = {
        "sensitivity": _ratio(tp, n_ref),
        "precision": _ratio(tp, n_pred),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "fp_per_subject": _ratio(fp, n_subjects),
        "count_ratio": _ratio(n_pred, n_ref),
        "abs_count_difference": _ratio(sum(r.abs_count_difference for r in rows), n_subjects),
        "dice": float(np.mean(pair_dice)) if pair_dice else math.nan,
    }
    figures = {
        name: summarize(
            pooled[name], [r.figure(name) for r in rows], rng_for(label, index), n_bootstrap
        )
        for index, name in enumerate(FIGURES)
    }
    return ClassMetrics(
        label=label,
        n_subjects=n_subjects,
        n_subjects_with_class=sum(1 for r in rows if r.n_reference > 0),
        n_reference=n_ref,
        n_predicted=n_pred,
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        figures=figures,
        count_agreement=bland_altman([r.n_reference for r in rows], [r.n_predicted for r in rows]),
    )


def compute_metrics(
    matches: Mapping[str, SubjectMatch],
    *,
    seed: int = 0,
    n_bootstrap: int = 2000,
    missing_subjects: Iterable[str] = (),
) -> EvaluationResult:
    """All lesion-level figures from matched subjects; no file is read.

    Parameters
    ----------
    matches : mapping of str to SubjectMatch
        Subject id -> its matching (from
        :func:`deepmir.evaluation.matching.match_subject`), in report order.
    seed : int
        Seed of the bootstrap. Each (class, figure) draws from its own
        generator ``numpy.random.default_rng([seed, label, figure index])``,
        so a figure's CI does not depend on which others are computed.
    n_bootstrap : int
        Bootstrap resamples; 0 skips the CIs (``nan``).
    missing_subjects : iterable of str
        Subjects whose prediction was missing (scored as empty); flagged in
        the per-subject rows and listed in the result.

    Returns
    -------
    EvaluationResult

    Examples
    --------
    >>> from deepmir.evaluation.matching import match_subject
    >>> reference = np.zeros((8, 8, 8), np.uint8)
    >>> reference[2, 2, 2] = 1
    >>> result = compute_metrics({"sub-01": match_subject(reference, None, reference, np.eye(4))})
    >>> result.classes["cmb"].sensitivity
    1.0
    """
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    missing = tuple(missing_subjects)
    unknown = [s for s in missing if s not in matches]
    if unknown:
        raise ValueError(f"missing subjects {unknown} are not among the matched subjects")

    def rng_for(label: int, figure_index: int) -> np.random.Generator:
        return np.random.default_rng([int(seed), label, figure_index])

    per_subject: list[SubjectClassFigures] = []
    classes: dict[str, ClassMetrics] = {}
    size = max(LABELS) + 1
    confusion = np.zeros((size, size), dtype=np.int64)
    for match in matches.values():
        confusion += match.confusion()
    confusion[BACKGROUND, BACKGROUND] = 0

    rows_by_class: dict[int, list[SubjectClassFigures]] = {label: [] for label in LESION_CLASSES}
    for subject, match in matches.items():
        for label in LESION_CLASSES:
            row = subject_figures(subject, match, label, prediction_missing=subject in missing)
            rows_by_class[label].append(row)
            per_subject.append(row)
    for label, name in LESION_CLASSES.items():
        pair_dice = [
            pair.dice
            for match in matches.values()
            for pair in match.matches
            if match.reference_lesions[pair.reference].label == label
        ]
        classes[name] = _class_metrics(label, rows_by_class[label], pair_dice, rng_for, n_bootstrap)

    return EvaluationResult(
        classes=classes,
        per_subject=tuple(per_subject),
        confusion=ConfusionTable(confusion),
        subjects=tuple(matches),
        missing_subjects=missing,
        matches=dict(matches),
        seed=int(seed),
        n_bootstrap=int(n_bootstrap),
    )
