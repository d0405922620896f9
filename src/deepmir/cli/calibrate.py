"""``deepmir calibrate``: calibrate a model's lesion probability on held-out annotated subjects."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from deepmir.cli.arguments import add_pooled_data, int_at_least


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "calibrate",
        help="fit, per class, the map from a lesion's score to the probability that it is "
        "real, on annotated subjects the model was not trained on (rewrites its config.json)",
    )
    p.add_argument("--model", required=True, type=Path, help="model folder")
    add_pooled_data(p, "BIDS folder with reference labels")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report folder: calibration.json, reliability.png (default MODEL/calibration)",
    )
    p.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.5,
        help="share of subjects held out to measure the calibration error honestly "
        "(the stored map is then fitted on all); 0: none",
    )
    p.add_argument(
        "--seed",
        type=int_at_least(0),
        default=0,
        help="seed of the hold-out split and of the perturbations",
    )
    p.add_argument(
        "--perturb",
        type=int_at_least(0),
        default=0,
        help="perturbed copies of each subject (blur, noise, QSM scale error, random "
        "strengths) added to the fit, so that the probabilities hold better on images "
        "unlike the calibration subjects (calibration under drift); 0: none",
    )
    p.add_argument(
        "--grid",
        choices=("input", "working"),
        default="input",
        help="where each lesion is judged: input (default), as predict outputs it, on the "
        "input grid; working: on the network's working grid, as calibrate did before "
        "0.10.2 (to reproduce those models' calibrations)",
    )
    p.add_argument(
        "--no-subsets",
        dest="subsets",
        action="store_false",
        help="fit the full-input maps only (default: also one set of maps per input subset "
        "the model serves, e.g. SWI alone, each subject predicted once per subset)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from deepmir.io.loader import SubjectDataError
    from deepmir.labels import LABELS
    from deepmir.model.checkpoint import ModelError
    from deepmir.training.calibrate import calibrate_model

    console = Console()
    out = args.out if args.out is not None else args.model / "calibration"
    try:
        report = calibrate_model(
            args.model,
            args.data,
            out,
            args.holdout_fraction,
            args.seed,
            args.subsets,
            args.perturb,
            args.grid,
        )
    except (SubjectDataError, ModelError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    table = Table(title="lesion probability calibration (ECE: 10 bins, weighted by count)")
    for column in ("class", "method", "n", "real", "ECE raw", "ECE cal.*"):
        table.add_column(column)
    if report.held_out is not None:
        for column in ("held-out n", "ECE raw", "ECE cal."):
            table.add_column(column)

    def cell(x: Any) -> str:
        return "n/a" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))

    for label, cal in sorted(report.calibration.classes.items()):
        name = LABELS[label]
        row = report.in_sample[name]
        cells = [name, cal.method, row["n_lesions"], row["n_real"], row["ece_before"]]
        cells.append(row["ece_after"])
        if report.held_out is not None:
            held = report.held_out[name]
            cells += [held["n_lesions"], held["ece_before"], held["ece_after"]]
        table.add_row(*(cell(c) for c in cells))
    console.print(table)
    for key, classes in sorted(report.calibration.subsets.items()):
        figures = report.subsets[key]
        rows = []
        for label, cal in sorted(classes.items()):
            name = LABELS[label]
            held = (figures["held_out"] or {}).get(name, {})
            rows.append(
                f"{name} {cal.method} (n {cal.n_lesions}, held-out ECE raw "
                f"{cell(held.get('ece_before'))} -> {cell(held.get('ece_after'))})"
            )
        console.print(f"inputs {key}: " + "; ".join(rows), highlight=False)
    for label, cal in sorted(report.calibration.classes.items()):
        if cal.selection:
            scores = ", ".join(
                f"{m} {e['log_loss']:.3f} (ECE {e['ece']:.3f})" for m, e in cal.selection.items()
            )
            console.print(f"{LABELS[label]}: out-of-fold log loss {scores}", highlight=False)
    console.print(
        "n: lesions predicted; real: true positives of their class; * on the lesions the "
        "map was fitted on (optimistic); the method has the lowest out-of-fold log "
        "loss (5-fold cross-validation by subject)"
        + ("; held-out: map fitted on the other subjects" if report.held_out else ""),
        highlight=False,
    )
    console.print(f"calibration saved in {args.model / 'config.json'}; report in {out}")
    return 0
