"""``deepmir average``: one model whose weights are the average of several (a model soup)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from deepmir.cli.arguments import float_in


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "average",
        help="average the weights of models fine-tuned from one another into one model "
        "(a model soup: one network's predict time); keeps the first model's "
        "post-processing, drops the calibration (run deepmir calibrate next)",
    )
    p.add_argument(
        "--model",
        required=True,
        type=Path,
        action="append",
        help="model folder; repeat (2 or more). The first gives the post-processing",
    )
    p.add_argument("--out", required=True, type=Path, help="new model folder")
    p.add_argument(
        "--weight",
        type=float_in(0.0),
        action="append",
        default=None,
        help="mixing weight of each --model, in the same order (normalized to sum 1); "
        "default: uniform",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from deepmir.model.checkpoint import ModelError
    from deepmir.model.soup import average_models

    if args.out.resolve() in {m.resolve() for m in args.model}:
        print(
            f"deepmir average: error: --out {args.out} is one of the models averaged",
            file=sys.stderr,
        )
        return 2
    try:
        card = average_models(args.model, args.out, args.weight)
    except ModelError as exc:
        print(f"deepmir average: error: {exc}", file=sys.stderr)
        return 2
    for source in card.training["soup"]["sources"]:
        print(f"  {source['weight']:.3f} x {source['model']} ({source['weights_sha256'][:12]})")
    print(
        f"averaged model written to {args.out} (weights {card.weights_sha256[:12]}); "
        "its calibration is empty: fit it with deepmir calibrate"
    )
    return 0
