"""``deepmir tune``: re-choose a model's post-processing on held-out annotated subjects."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from rich.markup import escape

from deepmir.cli.arguments import add_pooled_data


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "tune",
        help="choose a model's threshold and per-class minimum size / probability on "
        "annotated subjects it was not trained on (rewrites its config.json)",
    )
    p.add_argument("--model", required=True, type=Path, help="model folder")
    add_pooled_data(p, "BIDS folder with reference labels")
    p.add_argument(
        "--min-depth-mm",
        type=_depths,
        default=None,
        metavar="CMB,IRON,CALC",
        help="drop lesions of a class that lie entirely within this distance (mm) of the "
        "brain-mask edge, where QSM is least reliable; a design value, kept as given, not "
        "searched (default: the model's; e.g. 0,0,3: calcifications only)",
    )
    p.add_argument(
        "--ratings",
        type=Path,
        metavar="DIR",
        help="tune on rated subjects instead: the ratings downloaded from the QC reports of "
        "--predictions (the reference is then the confirmed lesions' voxels, with the "
        "rater's class, and a 1 mm ball at each added lesion; rejected lesions are not in it)",
    )
    p.add_argument(
        "--predictions",
        type=Path,
        metavar="DIR",
        help="the predictions folder the ratings rate (with --ratings)",
    )
    return p


def _depths(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 3) or any(not v >= 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected one or three depths in mm >= 0 (cmb,iron,calcification), got {text!r}"
        )
    return values * 3 if len(values) == 1 else values


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deepmir.evaluation.evaluate import EvaluationInputError
    from deepmir.evaluation.ratings import write_rated_reference
    from deepmir.io.loader import SubjectDataError
    from deepmir.model.checkpoint import ModelError
    from deepmir.training.train import retune_model

    console = Console()
    if (args.ratings is None) != (args.predictions is None):
        console.print("[red]error:[/red] --ratings and --predictions go together")
        return 2
    if args.ratings is not None and len(args.data) != 1:
        console.print("[red]error:[/red] --ratings rate one dataset: give --data once")
        return 2
    try:
        if args.ratings is not None:
            with tempfile.TemporaryDirectory(prefix="deepmir-ratings-") as reference:
                write_rated_reference(args.ratings, args.predictions, reference)
                post, f1 = retune_model(args.model, args.data, reference, args.min_depth_mm)
        else:
            post, f1 = retune_model(args.model, args.data, min_depth_mm=args.min_depth_mm)
    except (SubjectDataError, ModelError, EvaluationInputError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    console.print(
        f"post-processing {post.to_dict()} (mean lesion F1 {f1:.3f}) saved in {args.model}"
    )
    return 0
