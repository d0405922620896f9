"""``deepmir demo``: the main job on a small embedded default.

Until prediction lands, the demo simulates a small cohort (3 subjects, 1 mm,
held-out seed) with previews and prints where it went and what is in it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEMO_SEED = 20211  # never used for training


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo", help="run the main job on a small embedded default"
    )
    p.add_argument("--out", type=Path, default=Path("demo_output"))
    p.add_argument("--n", type=int, default=3)
    p.add_argument("--size", choices=["full", "small"], default="full")
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deepmir.cli.simulate import print_cohort
    from deepmir.phantom.simulate import REFERENCE, SimulationConfig, simulate_dataset

    console = Console()
    data = args.out / "bids"
    console.print(f"[bold]deepmir demo[/bold]: simulating {args.n} subjects (seed {DEMO_SEED})")
    counts = simulate_dataset(
        SimulationConfig(
            out=data, n_subjects=args.n, seed=DEMO_SEED, grid_size=args.size, preview=True
        )
    )
    print_cohort(console, counts, data, REFERENCE, preview=True)
    return 0
