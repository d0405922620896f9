"""``deepmir demo``: the main job on a small embedded default.

Simulates 3 phantom subjects (1 mm) with a seed the shipped models were never
trained on, predicts them with the shipped default model, evaluates the
predictions against the phantom reference and points at the QC report.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from deepmir.cli.arguments import int_at_least

DEMO_SEED = 20211  # never used for training (the shipped models use seed 1000)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo", help="simulate, predict with the shipped model, evaluate, report"
    )
    p.add_argument("--out", type=Path, default=Path("demo_output"))
    p.add_argument("--n", type=int_at_least(1), default=3)
    p.add_argument("--seed", type=int_at_least(0), default=DEMO_SEED)
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deepmir.cli.evaluate import confusion_table, metrics_table
    from deepmir.cli.simulate import print_cohort
    from deepmir.evaluation import evaluate_dataset, write_evaluation
    from deepmir.inference.predict import predict_dataset
    from deepmir.phantom.simulate import REFERENCE, SimulationConfig, simulate_dataset

    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)
    data = args.out / "bids"
    predictions = data / "derivatives" / "deepmir"
    evaluation = args.out / "evaluation"
    console.print(f"[bold]1/3 simulate[/bold] {args.n} subjects, 1 mm, seed {args.seed}")
    counts = simulate_dataset(
        # the demo's own folder: a rerun replaces it
        SimulationConfig(
            out=data,
            n_subjects=args.n,
            seed=args.seed,
            grid_size="full",
            preset="narrow",
            overwrite=True,
        )
    )
    print_cohort(console, counts, data, REFERENCE, preview=False)
    console.print("[bold]2/3 predict[/bold] with the shipped model")
    outcome = predict_dataset(
        data,
        predictions,
        log=lambda m: console.print(m, highlight=False, markup=False, soft_wrap=True),
    )
    console.print("[bold]3/3 evaluate[/bold] against the phantom reference")
    result = evaluate_dataset(data / REFERENCE, predictions, seed=args.seed, n_bootstrap=1000)
    write_evaluation(result, evaluation)
    console.print(metrics_table(result))
    console.print(confusion_table(result))
    console.print(f"QC report: {predictions / 'index.html'}", highlight=False)
    console.print(f"evaluation files: {evaluation}", highlight=False)
    return 1 if outcome.failed or outcome.index_error else 0
