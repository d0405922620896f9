"""Lesion outcomes on the input grid (what predict outputs) against the working grid.

Until 0.10.2, ``deepmir calibrate`` scored its lesions on the working grid:
each subject resampled whole, cropped, predicted, post-processed, and matched
to the reference resampled to that grid (every lesion kept); that path is
``deepmir calibrate --grid working``. ``deepmir predict`` crops the input
grid first, resamples the crop, and writes the lesions back on the input
grid, where ``deepmir evaluate`` matches them (``--grid input``, the default
since). This counts, per class, the lesions and the false ones both ways on
the same subjects: the calibration must be fitted on the first. It also
judges predict's own lesions on both grids (the reference resampled to the
working grid with every lesion kept): equal counts there mean the two ways
differ by the network's input (crop then resample, or resample then crop),
not by the matching.

Run: ``.venv/bin/python benchmarks/bench_calibration_grid.py --data build/robust-tune-b
--model build/models/v0.10``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from deepmir.inference.calibration import LesionOutcomes, lesion_outcomes
from deepmir.inference.predict import working_input, working_lesions
from deepmir.inference.resample import instances_forward
from deepmir.inference.sliding import predict_probabilities
from deepmir.labels import LESION_CLASSES
from deepmir.model.checkpoint import load_model
from deepmir.training.calibrate import outcomes_on_input_grid, scored_subjects
from deepmir.training.data import REFERENCE, iter_references, read_reference


def _counts(outcomes: LesionOutcomes, label: int) -> tuple[int, int]:
    inside = outcomes.labels == label
    return int(inside.sum()), int((~outcomes.real[inside]).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="an annotated cohort")
    parser.add_argument("--model", type=Path, required=True)
    args = parser.parse_args(argv)
    net, card = load_model(args.model)
    working = LesionOutcomes.concatenate(
        [
            score(image, False)
            for _, image, score in scored_subjects(net, card, args.data, "working")
        ]
    )
    on_input, on_working = [], []  # predict's lesions, judged on either grid
    for folder, ref in iter_references(args.data):
        dseg, instances = read_reference(folder / REFERENCE, ref)
        inp, image = working_input(folder, ref, card)
        probabilities = predict_probabilities(net, image, card.patch_size)
        back, lesions = working_lesions(probabilities, inp, card.post)
        on_input.append(outcomes_on_input_grid(back, inp, (dseg, instances)))
        box = inp.subject.box if inp.subject.box is not None else (slice(None),) * 3
        inst_w = instances_forward(inp.orientation.forward(instances[box]), inp.grid)
        classes = np.zeros(int(instances.max()) + 1, np.uint8)
        classes[instances[instances > 0]] = dseg[instances > 0]
        on_working.append(lesion_outcomes(lesions, classes[inst_w], inst_w, inp.grid.target_affine))
    native = LesionOutcomes.concatenate(on_input)
    same = LesionOutcomes.concatenate(on_working)
    for label, name in LESION_CLASSES.items():
        (n_in, false_in), (n_w, false_w) = _counts(native, label), _counts(working, label)
        print(
            f"{name:14s} input grid: {n_in} lesions, {false_in} false; working grid: "
            f"{n_w} lesions, {false_w} false; predict's lesions real on the input grid "
            f"{n_in - false_in}, on the working grid {n_in - _counts(same, label)[1]}"
        )
    print("reproduce: python benchmarks/bench_calibration_grid.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
