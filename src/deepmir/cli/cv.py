"""``deepmir cv`` and ``deepmir ablate``: cross-validation by subject."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deepmir.cli.arguments import int_at_least


def _training_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="BIDS folder with reference labels")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--folds", type=int_at_least(2), default=4, help="K (K = subjects: leave-one-out)"
    )
    p.add_argument(
        "--iterations", type=int_at_least(1), default=1500, help="training iterations per fold"
    )
    p.add_argument("--val-every", type=int_at_least(1), default=500)
    p.add_argument(
        "--seed", type=int_at_least(0), default=0, help="seed of folds, patches and weights"
    )


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "cv",
        help="K-fold cross-validation by subject, per-fold and pooled lesion-level figures",
    )
    _training_arguments(p)
    p.add_argument("--modalities", default="t2w,swi,qsm", help="subset of t2w,swi,qsm")
    p.add_argument(
        "--n-validation",
        type=int_at_least(1),
        default=2,
        help="training subjects per fold kept for checkpoint selection and post-processing tuning",
    )
    return p


def results_table(title: str, rows: dict[str, dict[str, Any]]) -> Table:
    table = Table(title=title)
    table.add_column("model")
    for c in ("CMB sens", "CMB prec", "CMB F1", "iron sens", "iron prec", "calc F1", "calc->CMB"):
        table.add_column(c, justify="right")

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    for name, r in rows.items():
        table.add_row(
            name,
            f(r["cmb"]["sensitivity"]),
            f(r["cmb"]["precision"]),
            f(r["cmb"]["f1"]),
            f(r["iron"]["sensitivity"]),
            f(r["iron"]["precision"]),
            f(r["calcification"]["f1"]),
            f(r["calcification_as_cmb"]),
        )
    return table


def _config(args: argparse.Namespace, modalities: tuple[str, ...]) -> Any:
    from deepmir.training.train import TrainConfig

    return TrainConfig(
        modalities=modalities, iterations=args.iterations, val_every=args.val_every, seed=args.seed
    )


def run(args: argparse.Namespace) -> int:
    from deepmir.io.atomic import prepare_output_dir
    from deepmir.io.bids import parse_modalities
    from deepmir.io.loader import SubjectDataError
    from deepmir.training.crossval import cross_validate, write_cv

    console = Console()
    try:
        prepare_output_dir(args.out)
        config = _config(args, parse_modalities(args.modalities))
        result = cross_validate(
            args.data, config, args.folds, n_validation=args.n_validation, log=console.print
        )
    except (SubjectDataError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    write_cv(result, args.out)
    title = f"{args.folds}-fold CV, {', '.join(config.modalities)}"
    console.print(results_table(title, result.rows(pooled="pooled")))
    console.print(f"{result.seconds / 60:.1f} min; figures in {args.out} (table2.tsv, overall/)")
    return 0
