"""``deepmir train``: train the DEEPMIR network on an annotated BIDS dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape

from deepmir.cli.arguments import float_in, int_at_least


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "train", help="train the network on a BIDS dataset with derivatives/reference labels"
    )
    p.add_argument("--data", required=True, type=Path, help="BIDS folder (e.g. from simulate)")
    p.add_argument("--out", required=True, type=Path, help="model folder to write")
    p.add_argument("--modalities", default="t2w,swi,qsm", help="subset of t2w,swi,qsm")
    p.add_argument("--iterations", type=int_at_least(1), default=2000)
    p.add_argument(
        "--time-budget",
        type=float_in(0.0),
        default=None,
        metavar="MINUTES",
        help="stop after this many minutes (best checkpoint kept)",
    )
    p.add_argument(
        "--patch", type=int_at_least(32), default=64, help="cubic patch size (multiple of 32)"
    )
    p.add_argument("--batch-size", type=int_at_least(1), default=2)
    p.add_argument("--val-every", type=int_at_least(1), default=200)
    p.add_argument("--val-fraction", type=float_in(0.0, 1.0, low_open=False), default=0.2)
    p.add_argument("--seed", type=int_at_least(0), default=0)
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deepmir.io.atomic import OutputError, prepare_output_dir
    from deepmir.io.bids import dataset_problem, parse_modalities
    from deepmir.io.loader import SubjectDataError
    from deepmir.model.network import NetworkConfig
    from deepmir.training.train import TrainConfig, train_model

    console = Console()
    try:
        modalities = parse_modalities(args.modalities)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    network = NetworkConfig()
    if args.patch % network.divisor:
        console.print(f"[red]error:[/red] --patch must be a multiple of {network.divisor}")
        return 2
    config = TrainConfig(
        modalities=modalities,
        network=network,
        patch_size=(args.patch,) * 3,
        batch_size=args.batch_size,
        iterations=args.iterations,
        time_budget_s=None if args.time_budget is None else args.time_budget * 60,
        val_every=args.val_every,
        seed=args.seed,
    )
    try:
        problem = dataset_problem(args.data)
        if problem:
            raise SubjectDataError(args.data, problem)
        prepare_output_dir(args.out)  # before hours of training, not after
        result = train_model(args.data, args.out, config, val_fraction=args.val_fraction)
    except (SubjectDataError, OutputError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    console.print(f"model written to {args.out} (sha256 {result.card.weights_sha256[:12]}...)")
    if result.val_f1:
        best = max(result.val_f1, key=lambda t: t[1])
        console.print(f"best validation lesion F1 {best[1]:.3f} at iteration {best[0]}")
    return 0
