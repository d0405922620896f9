"""``deepmir tune``: re-choose a model's post-processing on held-out annotated subjects."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "tune",
        help="choose a model's threshold and per-class minimum size / probability on "
        "annotated subjects it was not trained on (rewrites its config.json)",
    )
    p.add_argument("--model", required=True, type=Path, help="model folder")
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        action="append",
        help="BIDS folder with reference labels; repeat to pool several cohorts",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deepmir.io.loader import SubjectDataError
    from deepmir.model.checkpoint import ModelError
    from deepmir.training.train import retune_model

    console = Console()
    try:
        post, f1 = retune_model(args.model, args.data)
    except (SubjectDataError, ModelError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    console.print(
        f"post-processing {post.to_dict()} (mean lesion F1 {f1:.3f}) saved in {args.model}"
    )
    return 0
