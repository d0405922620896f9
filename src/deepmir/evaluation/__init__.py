"""Lesion-level evaluation (``docs/metrics.md``): match, count, report.

The pipeline, one module per step:

- :mod:`~deepmir.evaluation.matching`: lesions from label volumes and their
  one-to-one greedy matching (arrays in, :class:`SubjectMatch` out);
- :mod:`~deepmir.evaluation.metrics`: figures per class, pooled and over
  subjects (:class:`EvaluationResult`);
- :mod:`~deepmir.evaluation.evaluate`: the BIDS folders in, files out;
- :mod:`~deepmir.evaluation.plots`: Bland-Altman and count plots.

From training code, without files::

    match = match_subject(reference_dseg, None, predicted_dseg, affine)
    result = compute_metrics({"sub-01": match}, seed=0)
    result.classes["cmb"].sensitivity
"""

from deepmir.evaluation.evaluate import (
    EvaluationInputError,
    evaluate_dataset,
    write_evaluation,
)
from deepmir.evaluation.matching import (
    Lesion,
    LesionMap,
    MatchedPair,
    SubjectMatch,
    extract_components,
    extract_instances,
    extract_reference_lesions,
    greedy_match,
    match_lesions,
    match_subject,
)
from deepmir.evaluation.metrics import (
    FIGURES,
    ClassMetrics,
    ConfusionTable,
    CountAgreement,
    EvaluationResult,
    SubjectClassFigures,
    SummaryStatistic,
    compute_metrics,
    pearson_r,
)

__all__ = [
    "FIGURES",
    "ClassMetrics",
    "ConfusionTable",
    "CountAgreement",
    "EvaluationInputError",
    "EvaluationResult",
    "Lesion",
    "LesionMap",
    "MatchedPair",
    "SubjectClassFigures",
    "SubjectMatch",
    "SummaryStatistic",
    "compute_metrics",
    "evaluate_dataset",
    "extract_components",
    "extract_instances",
    "extract_reference_lesions",
    "greedy_match",
    "match_lesions",
    "match_subject",
    "pearson_r",
    "write_evaluation",
]
