"""ECE of a recalibrated model on the lesions of an earlier robustness run.

A model whose weights and post-processing are another's (only its
calibration refitted) outputs the same lesions with the same raw scores, so
its calibration can be judged without predicting again: each lesion of the
earlier run's predictions (``bench_robust.py``'s folders) gets the new model's
map for that set's inputs (:meth:`Calibration.for_inputs`) applied to its raw
``score``, and the ECE is computed per set and pooled as ``bench_robust.py``
pools it (the held-out shifts; the fewer-modality rows). The weights and
post-processing must match the earlier run's model, or it refuses.

Run: ``.venv/bin/python benchmarks/recalibrated_ece.py --model build/models/v0.10.2
--predictions-of build/models/v0.10 --out build/robust-final --n 48``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from bench_robust import (
    FEWER_MODALITIES,
    SETS,
    SUBSETS,
    _eces,
    _pooled,
    lesion_outcomes_from_files,
    model_key,
    predictions_folder,
    view_suffix,
)

from deepmir.inference.calibration import LesionOutcomes, ece_spread, expected_calibration_error
from deepmir.inference.predict import SHIPPED_MODELS, shipped_model_dir
from deepmir.labels import LESION_CLASSES
from deepmir.model.checkpoint import CONFIG, load_model
from deepmir.phantom.params import SHIFTS

MODALITIES = ("t2w", "swi", "qsm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the recalibrated model")
    parser.add_argument(
        "--predictions-of",
        required=True,
        help="the model of the earlier run: a folder, or default (the shipped one)",
    )
    parser.add_argument("--out", type=Path, default=Path("build/robust"))
    parser.add_argument("--n", type=int, default=48, help="subjects per set of that run")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another calibration of the same weights: per pooled class, the ECE "
        "difference and its paired bootstrap spread",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    new = json.loads((args.model / CONFIG).read_text())
    earlier = (
        shipped_model_dir(SHIPPED_MODELS[0])
        if args.predictions_of == "default"
        else Path(args.predictions_of)
    )
    old = json.loads((earlier / CONFIG).read_text())
    for key in ("weights_sha256", "post_processing"):
        if new[key] != old[key]:
            parser.error(f"{key} differs between {args.model} and {args.predictions_of}")
    calibration = load_model(args.model)[1].calibration
    if calibration is None:
        parser.error(f"{args.model} has no calibration")
    baseline = None
    if args.baseline is not None:
        base = json.loads((args.baseline / CONFIG).read_text())
        if base["weights_sha256"] != new["weights_sha256"]:
            parser.error(f"{args.baseline} has other weights than {args.model}")
        baseline = load_model(args.baseline)[1].calibration
    key = model_key(args.predictions_of)
    rows: dict[str, tuple[LesionOutcomes, np.ndarray, np.ndarray]] = {}
    baselines: dict[str, np.ndarray] = {}
    for name in [*SETS, *(f"in-distribution:{k}" for k in SUBSETS)]:
        base, _, subset = name.partition(":")
        root = args.out / base
        view = view_suffix(root / "bids", args.n)
        data = root / (f"bids-{subset}{view}" if subset else f"bids{view}")
        predictions = predictions_folder(root, key, view, subset)
        if not (predictions / "index.html").exists():
            parser.error(f"{predictions}: no predictions of {args.predictions_of} for {name}")
        lesions, _, subjects = lesion_outcomes_from_files(data, predictions)
        present = [m for m in MODALITIES if m in SUBSETS.get(subset, MODALITIES)]
        # rounded as the lesion table rounds them (binned ECE moves with a bin edge)
        probabilities = np.round(
            calibration.for_inputs(present).apply(lesions.labels, lesions.scores), 3
        )
        rows[name] = (lesions, probabilities, subjects)
        if baseline is not None:
            mapped = baseline.for_inputs(present).apply(lesions.labels, lesions.scores)
            baselines[name] = np.round(mapped, 3)

    def pooled(names: list[str]) -> dict[str, dict[str, object]]:
        lesions, probabilities, subjects = _pooled([{"_outcomes": rows[n]} for n in names])
        out = _eces((lesions, probabilities, subjects))
        if baselines:
            reference = np.concatenate([baselines[n] for n in names])
            for label, name in LESION_CLASSES.items():
                inside = lesions.labels == label
                real = lesions.real[inside]
                base = expected_calibration_error(reference[inside], real)
                out[name]["ece_baseline"] = round(base, 4)
                out[name]["difference_paired_sd"] = round(
                    ece_spread(
                        probabilities[inside], real, subjects[inside], baseline=reference[inside]
                    ),
                    4,
                )
        return out

    result = {
        "command": "python benchmarks/recalibrated_ece.py " + " ".join(sys.argv[1:]),
        "sets": {n: _eces(rows[n]) for n in rows},
        "held_out_calibration": pooled([n for n in rows if n in SHIFTS]),
        "fewer_modalities_calibration": pooled(
            [n for n in rows if n.partition(":")[2] in FEWER_MODALITIES]
        ),
    }
    for what in ("held_out_calibration", "fewer_modalities_calibration"):
        print(
            what,
            {
                c: {k: v for k, v in e.items() if "ece" in k or "sd" in k}
                for c, e in result[what].items()
            },
        )
    print("in distribution", {c: e["ece"] for c, e in result["sets"]["in-distribution"].items()})
    print(f"reproduce: {result['command']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
