"""Calibrated lesion probability: per class, raw lesion score -> P(lesion is real).

A lesion's raw score is the mean class probability inside it
(:attr:`deepmir.inference.lesions.Lesions.probability`). It is not a
probability that the lesion is real: on the phantoms, calcifications scored
0.5-0.7 are real about 5 % of the time, CMBs scored 0.5-0.7 about 96 %.

The map is fitted at **lesion level** on annotated subjects the model was not
trained on: every predicted lesion (after post-processing) is matched to the
reference with :func:`deepmir.evaluation.match_subject` (the evaluation's
rule), and a predicted lesion of class c is *real* when it is a true
positive of class c (:func:`lesion_outcomes`). Per class
(:func:`fit_class`):

* **isotonic** (10 lesions or more): isotonic regression of "real" on the
  score (``scipy.optimize.isotonic_regression``, tied scores pooled with
  their count as weight), stored as knots (x, y) of a piecewise-linear map:
  one knot per constant block at its mean score, plus the two ends
  (centred isotonic regression, Oron & Flournoy 2017: a smooth map rather
  than a staircase), y clipped to [0.01, 0.99] (a few dozen lesions never
  justify 0 or 1);
* **platt** (1 to 9 lesions): ``sigmoid(a logit(score) + b)`` fitted by
  maximum likelihood with a ridge penalty pulling (a, b) towards (1, 0),
  i.e. towards the raw score, so that a handful of lesions moves the map
  only a little (``scipy.optimize.minimize``; the objective is written here
  because scipy has no penalized logistic fit and scikit-learn's shrinks
  towards a = 0, not towards the identity); stored as knots too;
* **identity** (no lesion): the raw score.

With the subjects known (:func:`fit_selected`, what ``deepmir calibrate``
uses), the method of each class is instead **chosen by cross-validation by
subject**: identity, Platt and (10 lesions or more) isotonic are each fitted
on all folds but one and applied to the lesions of the remaining fold; the
method with the lowest pooled out-of-fold log loss is refitted on every
lesion, a more flexible one winning only by more than
:data:`SELECTION_MARGIN`. On a few dozen lesions an isotonic map can fit
noise: on the robustness phantoms, one fitted on 72 subjects' 50 iron
deposits made the held-out ECE 0.14 against 0.07 for the raw score. The
log loss (a proper scoring rule) selects, because binned ECE of a few
hundred lesions is too noisy to: a fitted map can beat a perfectly
calibrated raw score on it by chance. Both are stored, per method.

Outside its knots a map is constant (``np.interp``). The stored record per
class holds the knots, the method, the number of lesions and of real ones,
and the expected calibration error before and after (on the fitting lesions:
optimistic; ``deepmir calibrate`` also reports it on held-out subjects).

A model with optional modalities also stores one set of maps per served
input subset (:attr:`Calibration.subsets`), fitted the same way on the same
subjects predicted with the absent modalities' channels zeroed, as predict
feeds them; predict applies the maps of the subject's inputs
(:meth:`Calibration.for_inputs`).

Also here: the expected calibration error (:func:`expected_calibration_error`,
10 equal-width bins weighted by count) and the reliability diagram
(:func:`reliability_figure`); both are a few lines of numpy (scikit-learn,
whose ``calibration_curve`` bins the same way, is not a dependency).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from deepmir.labels import LESION_CLASSES, NAME_TO_INDEX

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from deepmir.inference.lesions import Lesions

FloatArray = npt.NDArray[np.float64]

#: fewer lesions of a class than this: the shrunk Platt fit instead of isotonic
MIN_ISOTONIC = 10
#: calibrated probabilities stay within these bounds
CLIP = (0.01, 0.99)
N_BINS = 10
#: strength of the pull of the Platt fit towards the identity (in lesions' worth)
PLATT_RIDGE = 2.0
#: method selection: folds (by subject), and the out-of-fold log loss (nats per
#: lesion) a more flexible method must gain over a simpler one (design choice)
SELECTION_FOLDS = 5
SELECTION_MARGIN = 0.002
#: candidate methods, simplest first
METHODS = ("identity", "platt", "isotonic")
_EPS = 1e-4


@dataclass(frozen=True)
class ClassCalibration:
    """The map of one lesion class, and how it was obtained."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    method: str  # "isotonic", "platt" or "identity"
    n_lesions: int = 0
    n_real: int = 0
    ece_before: float | None = None
    ece_after: float | None = None
    #: method -> out-of-fold log loss and ECE, when chosen by cross-validation
    selection: dict[str, dict[str, float]] | None = None

    def __post_init__(self) -> None:
        if not self.x or len(self.x) != len(self.y) or np.any(np.diff(self.x) < 0):
            raise ValueError("calibration knots: need as many y as x, x non-decreasing")

    def __call__(self, scores: npt.ArrayLike) -> FloatArray:
        return np.interp(np.asarray(scores, np.float64), self.x, self.y)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "x": [round(v, 6) for v in self.x],
            "y": [round(v, 6) for v in self.y],
            "n_lesions": self.n_lesions,
            "n_real": self.n_real,
            "ece_before": self.ece_before,
            "ece_after": self.ece_after,
            **({} if self.selection is None else {"selection_cv": self.selection}),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ClassCalibration:
        return ClassCalibration(
            x=tuple(float(v) for v in d["x"]),
            y=tuple(float(v) for v in d["y"]),
            method=str(d.get("method", "isotonic")),
            n_lesions=int(d.get("n_lesions", 0)),
            n_real=int(d.get("n_real", 0)),
            ece_before=d.get("ece_before"),
            ece_after=d.get("ece_after"),
            selection=d.get("selection_cv"),
        )


IDENTITY = ClassCalibration(x=(0.0, 1.0), y=(0.0, 1.0), method="identity")


def inputs_key(modalities: Iterable[str]) -> str:
    """The name of an input subset: its modalities, sorted, joined by ``+``."""
    return "+".join(sorted(set(modalities)))


@dataclass(frozen=True)
class Calibration:
    """Per lesion class (label index) its map; a class without one keeps its raw score.

    ``classes`` are the maps of full inputs (every modality of the model);
    ``subsets`` (optional) the maps of inputs lacking some optional
    modalities, keyed by :func:`inputs_key` of the modalities present: a
    model that serves SWI alone is less often right about an SWI-only lesion
    than about one seen on T2w + SWI + QSM, and one map cannot say both.
    """

    classes: dict[int, ClassCalibration]
    #: where it was fitted (data, subjects) and held-out figures
    info: dict[str, Any] = field(default_factory=dict)
    subsets: dict[str, dict[int, ClassCalibration]] = field(default_factory=dict)

    def for_inputs(self, present: Iterable[str]) -> Calibration:
        """The calibration of a subject whose model inputs are ``present``: the
        subset's maps when fitted, else the full-input maps."""
        classes = self.subsets.get(inputs_key(present))
        return self if classes is None else Calibration(classes, self.info)

    def apply(self, labels: npt.ArrayLike, scores: npt.ArrayLike) -> FloatArray:
        """Calibrated probability of lesions of classes ``labels`` with raw ``scores``."""
        labels = np.asarray(labels)
        scores = np.asarray(scores, np.float64)
        out = scores.copy()
        for label, cal in self.classes.items():
            inside = labels == label
            out[inside] = cal(scores[inside])
        return out

    def to_dict(self) -> dict[str, Any]:
        def named(classes: dict[int, ClassCalibration]) -> dict[str, Any]:
            return {LESION_CLASSES[k]: c.to_dict() for k, c in sorted(classes.items())}

        return {
            "classes": named(self.classes),
            **(
                {"subsets": {k: named(v) for k, v in sorted(self.subsets.items())}}
                if self.subsets
                else {}
            ),
            **self.info,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Calibration:
        def parsed(classes: dict[str, Any]) -> dict[int, ClassCalibration]:
            return {NAME_TO_INDEX[n]: ClassCalibration.from_dict(c) for n, c in classes.items()}

        return Calibration(
            parsed(d["classes"]),
            {k: v for k, v in d.items() if k not in ("classes", "subsets")},
            {k: parsed(v) for k, v in (d.get("subsets") or {}).items()},
        )


def expected_calibration_error(
    probabilities: npt.ArrayLike, real: npt.ArrayLike, n_bins: int = N_BINS
) -> float:
    """ECE: over ``n_bins`` equal-width bins of [0, 1], |mean predicted - observed
    frequency| weighted by the bin's share of lesions (NaN without lesions)."""
    p = np.asarray(probabilities, np.float64)
    y = np.asarray(real, np.float64)
    if p.size == 0:
        return math.nan
    bins = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    gap = np.bincount(bins, weights=p, minlength=n_bins) - np.bincount(
        bins, weights=y, minlength=n_bins
    )
    return float(np.abs(gap).sum() / p.size)


def ece_spread(
    probabilities: npt.ArrayLike,
    real: npt.ArrayLike,
    groups: npt.ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    baseline: npt.ArrayLike | None = None,
) -> float:
    """Standard deviation of :func:`expected_calibration_error` over bootstrap
    resamples of ``groups`` (the lesions' subjects, drawn with replacement:
    a subject's lesions are not independent); NaN without lesions. Binned ECE
    on a few dozen lesions moves by hundredths when a few lesions cross a bin
    edge, so two calibrations closer than about twice this spread cannot be
    told apart on those lesions. (A spread, not an interval: binned ECE is
    biased upwards, and more so on resamples, so percentiles would not be
    centred on it.) With ``baseline`` (another calibration's probabilities of
    the same lesions): the spread of the difference ECE - baseline ECE, both
    on the same resamples (paired)."""
    p = np.asarray(probabilities, np.float64)
    y = np.asarray(real, bool)
    if p.size == 0:
        return math.nan
    _, index = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(index == g) for g in range(int(index.max()) + 1)]
    q = None if baseline is None else np.asarray(baseline, np.float64)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        drawn = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        value = expected_calibration_error(p[drawn], y[drawn])
        if q is not None:
            value -= expected_calibration_error(q[drawn], y[drawn])
        values.append(value)
    return float(np.std(values))


def reliability_bins(
    probabilities: npt.ArrayLike, real: npt.ArrayLike, n_bins: int = N_BINS
) -> tuple[npt.NDArray[np.int64], FloatArray, FloatArray]:
    """Per equal-width bin: lesion count, mean predicted probability and observed
    frequency of real lesions (NaN in empty bins)."""
    p = np.asarray(probabilities, np.float64)
    y = np.asarray(real, np.float64)
    bins = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(bins, weights=p, minlength=n_bins) / count
        observed = np.bincount(bins, weights=y, minlength=n_bins) / count
    return count, mean, observed


def _knots_isotonic(scores: FloatArray, real: FloatArray) -> tuple[FloatArray, FloatArray]:
    from scipy.optimize import isotonic_regression

    xs, inverse = np.unique(scores, return_inverse=True)
    weights = np.bincount(inverse).astype(np.float64)
    means = np.bincount(inverse, weights=real) / weights
    result = isotonic_regression(means, weights=weights, increasing=True)
    # centred isotonic regression (Oron & Flournoy 2017): one knot per constant
    # block at its weighted mean score, plus the two ends, linear in between
    starts = np.asarray(result.blocks[:-1])
    block_weight = np.add.reduceat(weights, starts)
    centre = np.add.reduceat(weights * xs, starts) / block_weight
    x = np.concatenate([[xs[0]], centre, [xs[-1]]])
    y = np.concatenate([[result.x[0]], result.x[starts], [result.x[-1]]])
    x, first = np.unique(x, return_index=True)
    return x, np.clip(y[first], *CLIP)


def _logit(p: FloatArray) -> FloatArray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.asarray(np.log(p / (1.0 - p)))


def _knots_platt(scores: FloatArray, real: FloatArray) -> tuple[FloatArray, FloatArray]:
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    z = _logit(scores)

    def objective(ab: FloatArray) -> float:
        t = ab[0] * z + ab[1]
        nll = -(real * log_expit(t) + (1.0 - real) * log_expit(-t)).sum()
        return float(nll + 0.5 * PLATT_RIDGE * ((ab[0] - 1.0) ** 2 + ab[1] ** 2))

    a, b = minimize(objective, np.array([1.0, 0.0]), method="Nelder-Mead").x
    x = np.linspace(0.0, 1.0, 21)
    return x, np.clip(expit(a * _logit(x) + b), *CLIP)


def fit_class(
    scores: npt.ArrayLike, real: npt.ArrayLike, method: str | None = None
) -> ClassCalibration:
    """The map of one class from its lesions' raw scores and outcomes (real or
    not); ``method`` None: isotonic with 10 lesions or more, else Platt."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(real, np.float64)
    if s.size == 0:
        return IDENTITY
    if method is None:
        method = "isotonic" if s.size >= MIN_ISOTONIC else "platt"
    if method == "isotonic":
        x, fitted = _knots_isotonic(s, y)
    elif method == "platt":
        x, fitted = _knots_platt(s, y)
    elif method == "identity":
        x, fitted = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    else:
        raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    cal = ClassCalibration(
        x=tuple(float(v) for v in x), y=tuple(float(v) for v in fitted), method=method
    )
    return ClassCalibration(
        x=cal.x,
        y=cal.y,
        method=method,
        n_lesions=int(s.size),
        n_real=int(y.sum()),
        ece_before=round(expected_calibration_error(s, y), 4),
        ece_after=round(expected_calibration_error(cal(s), y), 4),
    )


@dataclass
class LesionOutcomes:
    """Predicted lesions of one or more subjects: class, raw score, real or not."""

    labels: npt.NDArray[np.uint8]
    scores: FloatArray
    real: npt.NDArray[np.bool_]

    @staticmethod
    def concatenate(parts: list[LesionOutcomes]) -> LesionOutcomes:
        return LesionOutcomes(
            labels=np.concatenate([p.labels for p in parts]).astype(np.uint8)
            if parts
            else np.zeros(0, np.uint8),
            scores=np.concatenate([p.scores for p in parts]) if parts else np.zeros(0),
            real=np.concatenate([p.real for p in parts]) if parts else np.zeros(0, bool),
        )

    def of_class(self, label: int) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        inside = self.labels == label
        return self.scores[inside], self.real[inside]


def lesion_outcomes(
    lesions: Lesions,
    reference_dseg: npt.NDArray[np.integer[Any]],
    reference_instances: npt.NDArray[np.integer[Any]] | None,
    affine: npt.NDArray[np.float64],
) -> LesionOutcomes:
    """Each predicted lesion's class, raw score and whether it is a true
    positive of its class under the evaluation's matching rule.

    The evaluation extracts the 26-connected components of the predicted
    ``dseg`` (:func:`~deepmir.evaluation.extract_components`); on the grid
    the lesions were found on, those are the lesions themselves. Brought
    back to an input grid, two lesions may touch, or one may come apart, so
    that every lesion of predict's table has an outcome: a lesion is real
    when a component holding any of its voxels is a true positive (two
    touching lesions of one class whose merged component matched are then
    both real, where the evaluation counts one true positive).
    """
    from deepmir.evaluation import extract_components, match_subject

    match = match_subject(reference_dseg, reference_instances, lesions.dseg, affine)
    n = len(lesions.labels)
    index_map = extract_components(lesions.dseg, affine).index_map.ravel()
    ids = lesions.instances.ravel()
    inside = np.flatnonzero(ids)
    true_positives = np.zeros(len(match.predicted_lesions), bool)
    for pair in match.matches:  # same-class matches only
        true_positives[pair.predicted] = True
    real = np.zeros(n + 1, bool)
    np.logical_or.at(real, ids[inside], true_positives[index_map[inside] - 1])
    return LesionOutcomes(
        labels=np.asarray(lesions.labels, np.uint8),
        scores=np.asarray(lesions.probability, np.float64),
        real=real[1:],
    )


def fit_calibration(outcomes: LesionOutcomes, info: dict[str, Any] | None = None) -> Calibration:
    """One map per lesion class (:func:`fit_class`)."""
    return Calibration(
        {label: fit_class(*outcomes.of_class(label)) for label in LESION_CLASSES},
        dict(info or {}),
    )


def log_loss(probabilities: npt.ArrayLike, real: npt.ArrayLike) -> float:
    """Mean negative log-likelihood of the outcomes, probabilities clipped to
    :data:`CLIP` (the bounds every fitted map keeps)."""
    p = np.clip(np.asarray(probabilities, np.float64), *CLIP)
    y = np.asarray(real, np.float64)
    return float(-(y * np.log(p) + (1.0 - y) * np.log1p(-p)).mean())


def select_method(
    per_subject: list[LesionOutcomes],
    label: int,
    folds: int = SELECTION_FOLDS,
    seed: int = 0,
) -> tuple[str, dict[str, dict[str, float]]]:
    """The method for class ``label`` with the lowest out-of-fold log loss
    (cross-validation by subject; a more flexible method must gain more than
    :data:`SELECTION_MARGIN`), and each candidate's out-of-fold log loss and
    ECE; identity when fewer than two subjects have lesions of the class."""
    parts = [p.of_class(label) for p in per_subject]
    with_lesions = [i for i, (s, _) in enumerate(parts) if len(s)]
    n = sum(len(parts[i][0]) for i in with_lesions)
    if len(with_lesions) < 2:
        return "identity", {}
    k = min(folds, len(with_lesions))
    fold = np.full(len(parts), -1, np.int64)
    order = np.random.default_rng(seed).permutation(with_lesions)
    fold[order] = np.arange(len(order)) % k
    candidates = [m for m in METHODS if m != "isotonic" or n >= MIN_ISOTONIC]
    scores: dict[str, dict[str, float]] = {}
    for method in candidates:
        predicted, outcome = [], []
        for f in range(k):
            train = [parts[i] for i in np.flatnonzero((fold != f) & (fold >= 0))]
            fitted = fit_class(
                np.concatenate([s for s, _ in train]),
                np.concatenate([r for _, r in train]),
                method,
            )
            for i in np.flatnonzero(fold == f):
                predicted.append(fitted(parts[i][0]))
                outcome.append(parts[i][1])
        p, y = np.concatenate(predicted), np.concatenate(outcome)
        scores[method] = {
            "log_loss": round(log_loss(p, y), 4),
            "ece": round(expected_calibration_error(p, y), 4),
        }
    chosen = candidates[0]
    for method in candidates[1:]:
        if scores[method]["log_loss"] < scores[chosen]["log_loss"] - SELECTION_MARGIN:
            chosen = method
    return chosen, scores


def fit_selected(
    per_subject: list[LesionOutcomes],
    info: dict[str, Any] | None = None,
    folds: int = SELECTION_FOLDS,
    seed: int = 0,
) -> Calibration:
    """Per class, the method :func:`select_method` chooses, refitted on every lesion."""
    everything = LesionOutcomes.concatenate(per_subject)
    classes = {}
    for label in LESION_CLASSES:
        method, errors = select_method(per_subject, label, folds, seed)
        cal = fit_class(*everything.of_class(label), method)
        classes[label] = dataclasses.replace(cal, selection=errors or None)
    return Calibration(classes, dict(info or {}))


def calibration_errors(
    outcomes: LesionOutcomes, calibration: Calibration | None
) -> dict[str, dict[str, Any]]:
    """Per class: lesions, real ones, ECE of the raw scores and of the calibrated ones."""
    out: dict[str, dict[str, Any]] = {}
    for label, name in LESION_CLASSES.items():
        scores, real = outcomes.of_class(label)
        after = calibration.apply(np.full(len(scores), label), scores) if calibration else scores

        def rounded(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 4)

        out[name] = {
            "n_lesions": int(len(scores)),
            "n_real": int(real.sum()),
            "ece_before": rounded(expected_calibration_error(scores, real)),
            "ece_after": rounded(expected_calibration_error(after, real)),
        }
    return out


def reliability_figure(
    outcomes: LesionOutcomes, calibration: Calibration | None, title: str = ""
) -> Figure:
    """Per class: observed frequency of real lesions against mean predicted
    probability in 10 equal-width bins, raw score and calibrated, each point
    labelled with its lesion count."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from deepmir.evaluation.plots import CLASS_COLOURS, DPI, PANEL_SIZE_INCHES

    n = len(LESION_CLASSES)
    figure = Figure(figsize=(PANEL_SIZE_INCHES * n, PANEL_SIZE_INCHES + 0.4), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, n, squeeze=False)[0]
    figure.suptitle(title or "Reliability of the lesion probability (numbers: lesions per bin)")
    for ax, (label, name) in zip(axes, LESION_CLASSES.items(), strict=True):
        scores, real = outcomes.of_class(label)
        ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1)
        curves = [("raw score", scores, "0.4", "o")]
        if calibration is not None:
            calibrated = calibration.apply(np.full(len(scores), label), scores)
            curves.append(("calibrated", calibrated, CLASS_COLOURS.get(name, "k"), "s"))
        for legend, p, colour, marker in curves:
            count, mean, observed = reliability_bins(p, real)
            used = count > 0
            ece = expected_calibration_error(p, real)
            ax.plot(
                mean[used],
                observed[used],
                marker=marker,
                color=colour,
                lw=1,
                label=f"{legend} (ECE {ece:.3f})" if not math.isnan(ece) else legend,
            )
            for xm, yo, c in zip(mean[used], observed[used], count[used], strict=True):
                ax.annotate(str(c), (xm, yo), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_title(f"{name} ({len(scores)} lesions, {int(real.sum())} real)")
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed frequency of real lesions")
        ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    figure.tight_layout()
    return figure
