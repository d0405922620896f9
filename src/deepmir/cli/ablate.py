"""``deepmir ablate``: cross-validation of each modality set of the paper, and
single-class vs multi-class (Rashid et al. 2021, Table 2)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.markup import escape

from deepmir.cli.cv import _config, _training_arguments, results_table


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "ablate",
        help="cross-validate each modality set of the paper and single- vs multi-class",
    )
    _training_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    from deepmir.io.atomic import prepare_output_dir
    from deepmir.io.loader import SubjectDataError
    from deepmir.training.crossval import ablate

    console = Console()
    try:
        prepare_output_dir(args.out)
        rows = ablate(
            args.data, args.out, _config(args, ("t2w", "swi", "qsm")), args.folds, log=console.print
        )
    except (SubjectDataError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    console.print(results_table(f"Modality ablation, {args.folds}-fold CV", rows))
    console.print(f"saved: {args.out / 'ablation.tsv'}, {args.out / 'ablation.json'}")
    return 0
