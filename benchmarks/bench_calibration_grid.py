"""Lesion outcomes on the input grid (what predict outputs) against the working grid.

Until 0.10.2, ``deepmir calibrate`` scored its lesions on the working grid:
each subject resampled whole, cropped, predicted, post-processed, and matched
to the reference resampled to that grid (every lesion kept). ``deepmir
predict`` crops the input grid first, resamples the crop, and writes the
lesions back on the input grid, where ``deepmir evaluate`` matches them. This
counts, per class, the lesions and the false ones both ways on the same
subjects: the calibration must be fitted on the first (it now is,
:mod:`deepmir.training.calibrate`). It also judges predict's own lesions on
both grids (the reference resampled to the working grid with every lesion
kept): equal counts there mean the two ways differ by the network's input
(crop then resample, or resample then crop), not by the matching.

Run: ``.venv/bin/python benchmarks/bench_calibration_grid.py --data build/robust-tune-b
--model build/models/v0.10 --out build/diag/pred-tune-b-v0.10``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from bench_robust import lesion_outcomes_from_files

from deepmir.inference.calibration import lesion_outcomes
from deepmir.inference.lesions import lesions_from_probabilities, voxel_spacing
from deepmir.inference.predict import predict_dataset, working_input, working_lesions
from deepmir.inference.resample import instances_forward
from deepmir.inference.sliding import predict_probabilities
from deepmir.labels import LESION_CLASSES
from deepmir.model.checkpoint import load_model
from deepmir.training.data import (
    CROP_MARGIN,
    REFERENCE,
    iter_pooled,
    iter_references,
    prepare,
    read_reference,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="an annotated cohort")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="predict's outputs")
    args = parser.parse_args(argv)
    if not (args.out / "index.html").exists():
        predict_dataset(args.data, args.out, model=args.model, progress=False, log=print)
    native = lesion_outcomes_from_files(args.data, args.out)[0]
    net, card = load_model(args.model)
    counts = {label: [0, 0] for label in LESION_CLASSES}
    for raw in iter_pooled(args.data, card.modalities, card.working_spacing_mm, CROP_MARGIN):
        s = prepare(raw, card.normalization, CROP_MARGIN)  # the pre-0.10.2 calibration path
        probabilities = predict_probabilities(net, s.image, card.patch_size)
        swi = s.image[card.normalization.channel_indices("swi")[0]]
        lesions = lesions_from_probabilities(
            probabilities, card.post, voxel_spacing(s.affine), s.brain, swi
        )
        o = lesion_outcomes(lesions, s.dseg, s.instances if s.instances.any() else None, s.affine)
        for label in LESION_CLASSES:
            inside = o.labels == label
            counts[label][0] += int(inside.sum())
            counts[label][1] += int((~o.real[inside]).sum())
    same = {label: 0 for label in LESION_CLASSES}  # predict's lesions real on the working grid
    for folder, ref in iter_references(args.data):
        dseg, instances = read_reference(folder / REFERENCE, ref)
        inp, image = working_input(folder, ref, card)
        probabilities = predict_probabilities(net, image, card.patch_size)
        working = working_lesions(probabilities, inp, card.post)[1]
        box = inp.subject.box if inp.subject.box is not None else (slice(None),) * 3
        inst_w = instances_forward(inp.orientation.forward(instances[box]), inp.grid)
        classes = np.zeros(int(instances.max()) + 1, np.uint8)
        classes[instances[instances > 0]] = dseg[instances > 0]
        o = lesion_outcomes(working, classes[inst_w], inst_w, inp.grid.target_affine)
        for label in LESION_CLASSES:
            same[label] += int(o.real[o.labels == label].sum())
    for label, name in LESION_CLASSES.items():
        inside = native.labels == label
        print(
            f"{name:14s} input grid: {int(inside.sum())} lesions, "
            f"{int((~native.real[inside]).sum())} false; working grid: "
            f"{counts[label][0]} lesions, {counts[label][1]} false; predict's lesions real "
            f"on the input grid {int(native.real[inside].sum())}, on the working grid "
            f"{same[label]}"
        )
    print("reproduce: python benchmarks/bench_calibration_grid.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
