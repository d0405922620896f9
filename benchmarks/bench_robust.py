"""Robustness benchmark: a model on in-distribution and on held-out-shift phantoms.

The protocol of the project's robustness page (docs/robustness.md): every
randomized factor has training values and held-out values
(:data:`deepmir.phantom.params.SHIFTS`); each held-out set changes one
factor. For each set, ``--n`` subjects are simulated (``--preset
randomized``, seed ``--seed`` + the set's index, never a training seed),
predicted with the model and scored with ``deepmir evaluate``: per class
sensitivity, precision, F1 and FP per subject, and calcifications called CMB.

Resumable: a set already simulated (or predicted) is reused.

Run: ``make bench-robust`` or
``.venv/bin/python benchmarks/bench_robust.py --model default --n 6 --out build/robust``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from deepmir.phantom.params import SHIFTS

SETS = ("in-distribution", *SHIFTS)
CLASSES = ("cmb", "iron", "calcification")


def run_set(name: str, index: int, args: argparse.Namespace) -> dict[str, Any]:
    from deepmir.evaluation import evaluate_dataset
    from deepmir.inference.predict import predict_dataset
    from deepmir.phantom.simulate import REFERENCE, SimulationConfig, simulate_dataset

    root = Path(args.out) / name
    data = root / "bids"
    if not (data / "participants.tsv").exists():
        simulate_dataset(
            SimulationConfig(
                out=data,
                n_subjects=args.n,
                seed=args.seed + index,
                preset="randomized",
                shift="none" if name == "in-distribution" else name,
            ),
            progress=False,
        )
    predictions = root / f"pred-{Path(str(args.model)).name}"
    start = time.perf_counter()
    if not (predictions / "index.html").exists() or args.repredict:
        predict_dataset(data, predictions, model=args.model, progress=False, log=lambda m: None)
    seconds = (time.perf_counter() - start) / args.n
    result = evaluate_dataset(data / REFERENCE, predictions, n_bootstrap=0)
    row: dict[str, Any] = {"set": name, "n_subjects": args.n, "predict_s_per_subject": seconds}
    for c in CLASSES:
        m = result.classes[c]
        row[c] = {
            "n_ref": m.n_reference,
            "tp": m.true_positives,
            "fp": m.false_positives,
            "sensitivity": m.sensitivity,
            "precision": m.precision,
            "f1": m.f1,
            "fp_per_subject": m.fp_per_subject,
        }
    row["calcification_as_cmb"] = _calc_as_cmb(result)
    return row


def _calc_as_cmb(result: Any) -> float:
    total = result.classes["calcification"].n_reference
    return float(result.confusion.found_as(3, 1) / total) if total else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="default (shipped) or a model folder")
    parser.add_argument("--n", type=int, default=6, help="subjects per set")
    parser.add_argument("--seed", type=int, default=3100, help="seed of the first set")
    parser.add_argument("--out", type=Path, default=Path("build/robust"))
    parser.add_argument("--sets", nargs="*", default=list(SETS))
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--repredict", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for name in args.sets:
        rows.append(run_set(name, SETS.index(name), args))
        r = rows[-1]
        print(
            f"{name:16s} "
            + "  ".join(
                f"{c[:4]} {r[c]['sensitivity']:.2f}/{r[c]['precision']:.2f}/F1 {r[c]['f1']:.2f}"
                f"/FP {r[c]['fp_per_subject']:.2f}"
                for c in CLASSES
            )
            + f"  calc->cmb {r['calcification_as_cmb']:.2f}"
            + f"  {r['predict_s_per_subject']:.1f} s/subj",
            flush=True,
        )
    command = "python benchmarks/bench_robust.py " + " ".join(sys.argv[1:])
    print(f"reproduce: {command}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
