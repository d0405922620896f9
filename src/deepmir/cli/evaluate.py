"""``deepmir evaluate``: lesion-level evaluation of predictions against a reference.

Calls :func:`deepmir.evaluation.evaluate_dataset` and
:func:`deepmir.evaluation.write_evaluation`, then prints a compact table.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING, Any

from deepmir.cli.arguments import int_at_least
from deepmir.labels import LABELS, LESION_CLASSES

if TYPE_CHECKING:  # the evaluation (pandas) and rich load when the command runs
    from rich.table import Table

    from deepmir.evaluation.metrics import EvaluationResult


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate",
        help="lesion-level evaluation of predictions against a reference",
        description="Match predicted lesions to reference lesions per class (one-to-one, "
        "greedy by centroid distance; overlap or centroids within max(3 mm, equivalent "
        "radius)) and report sensitivity, precision, F1, FP per subject, count agreement "
        "and Dice, pooled and over subjects, with class confusion.",
    )
    truth = p.add_mutually_exclusive_group(required=True)
    truth.add_argument(
        "--reference",
        metavar="DIR",
        help="reference derivatives folder (sub-<id>/anat/sub-<id>_dseg.nii.gz, ...)",
    )
    truth.add_argument(
        "--ratings",
        metavar="DIR",
        help="instead of a reference: a folder of ratings downloaded from the QC reports "
        "(sub-<id>[_ses-<label>]_desc-rater_lesions.tsv): confirmed lesions are true "
        "positives, rejected ones false positives, added ones false negatives, a changed "
        "class a class confusion",
    )
    p.add_argument(
        "--predictions",
        required=True,
        metavar="DIR",
        help="predictions folder (sub-<id>/anat/sub-<id>_desc-deepmir_dseg.nii.gz)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="bootstrap seed (default: 0)")
    p.add_argument(
        "--n-bootstrap",
        type=int_at_least(0),
        default=2000,
        metavar="N",
        help="bootstrap resamples for the 95%% CIs (default: 2000; 0: none)",
    )
    return p


def _number(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def metrics_table(result: EvaluationResult) -> Table:
    """Per class: counts and pooled figures."""
    from rich.table import Table

    table = Table(title=f"Lesion-level evaluation, {len(result.subjects)} subject(s)")
    for column in (
        "class",
        "n_ref",
        "n_pred",
        "TP",
        "FP",
        "FN",
        "sens",
        "prec",
        "F1",
        "FP/subj",
        "r",
        "Dice",
    ):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, m in result.classes.items():
        table.add_row(
            name,
            str(m.n_reference),
            str(m.n_predicted),
            str(m.true_positives),
            str(m.false_positives),
            str(m.false_negatives),
            _number(m.sensitivity),
            _number(m.precision),
            _number(m.f1),
            _number(m.fp_per_subject),
            _number(m.count_agreement.pearson_r),
            _number(m.dice),
        )
    return table


def confusion_table(result: EvaluationResult) -> Table:
    """Reference class (rows) found as predicted class (columns)."""
    from rich.table import Table

    table = Table(
        title="Class confusion (lesions)",
        caption="none: reference lesion found by nothing / prediction matching nothing",
    )
    table.add_column("reference \\ predicted")
    columns = [*LESION_CLASSES, 0]
    for label in columns:
        table.add_column(LESION_CLASSES.get(label, "none"), justify="right")
    counts = result.confusion.counts
    for row in columns:
        table.add_row(
            LABELS[row] if row else "none",
            *("-" if row == col == 0 else str(int(counts[row, col])) for col in columns),
        )
    return table


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deepmir.evaluation import EvaluationInputError, evaluate_dataset, write_evaluation
    from deepmir.evaluation.ratings import evaluate_ratings
    from deepmir.io.atomic import OutputError, prepare_output_dir

    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table to 80
        console.width = max(console.width, 120)
    try:
        prepare_output_dir(args.out, create=False)  # input errors leave no folder
        if args.ratings is not None:
            result = evaluate_ratings(
                args.ratings, args.predictions, seed=args.seed, n_bootstrap=args.n_bootstrap
            )
        else:
            result = evaluate_dataset(
                args.reference, args.predictions, seed=args.seed, n_bootstrap=args.n_bootstrap
            )
        written = write_evaluation(result, args.out)
    except (EvaluationInputError, OutputError) as error:
        print(f"deepmir evaluate: error: {error}", file=sys.stderr)
        return 2
    console.print(metrics_table(result))
    console.print(confusion_table(result))
    if result.missing_subjects:
        console.print(
            f"[yellow]No prediction for {len(result.missing_subjects)} subject(s), "
            f"scored as empty:[/] {', '.join(result.missing_subjects)}"
        )
    if result.extra_prediction_subjects:
        console.print(
            "Predictions without reference (not scored): "
            + ", ".join(result.extra_prediction_subjects)
        )
    console.print(f"Wrote {len(written)} files to {args.out}", highlight=False)
    return 0
