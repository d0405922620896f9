"""Lesion extent: matched-lesion Dice and lesion F1 over the extent threshold.

Post-processing finds lesions above the model's detection ``threshold`` and
gives each kept lesion the 26-connected voxels whose lesion probability
reaches ``extent_threshold`` (hysteresis, :mod:`deepmir.inference.lesions`).
This benchmark re-runs that post-processing on saved probabilities
(``deepmir predict --save-probabilities``) for several extent thresholds and
prints, per class, the evaluation's pooled matched-lesion Dice, F1 and the
ratio of predicted to reference volume over matched pairs, so that the
extent threshold can be chosen on tuning subjects, never on a benchmark set.

The probabilities are read on the input grid (1 mm phantoms: the working
grid), the brain mask from the dataset, the model's stored post-processing
otherwise unchanged.

    .venv/bin/deepmir predict --data DATA --out PRED --save-probabilities --no-report
    .venv/bin/python benchmarks/bench_extent.py --data DATA --predictions PRED
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from deepmir.evaluation.matching import match_subject
from deepmir.inference.lesions import lesions_from_probabilities, voxel_spacing
from deepmir.inference.predict import shipped_model_dir
from deepmir.labels import LESION_CLASSES
from deepmir.model.checkpoint import load_model

GRID = (1.0, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="simulated BIDS dataset")
    parser.add_argument("--predictions", type=Path, required=True, help="predict's output")
    parser.add_argument("--model", default="default", help="default (shipped) or a model folder")
    args = parser.parse_args(argv)
    folder = shipped_model_dir("t2w-swi-qsm") if args.model == "default" else Path(args.model)
    _, card = load_model(folder)
    reference = args.data / "derivatives" / "reference"
    rows = []
    subjects = sorted(p.name for p in args.predictions.glob("sub-*/"))
    if not subjects:
        sys.exit(f"{args.predictions}: no sub-* folders")
    for name in subjects:
        ref = reference / name / "anat"
        dseg = nib.load(ref / f"{name}_dseg.nii.gz")
        instances = np.asarray(nib.load(ref / f"{name}_desc-instances_dseg.nii.gz").dataobj)
        table = pd.read_csv(ref / f"{name}_lesions.tsv", sep="\t")
        anat = args.predictions / name / "anat"
        maps = [
            np.asarray(nib.load(anat / f"{name}_label-{c}_desc-deepmir_probseg.nii.gz").dataobj)
            for c in LESION_CLASSES.values()
        ]
        probabilities = np.stack([1.0 - np.sum(maps, axis=0), *maps]).astype(np.float32)
        mask_path = args.data / name / "anat" / f"{name}_desc-brain_mask.nii.gz"
        mask = np.asarray(nib.load(mask_path).dataobj) > 0 if mask_path.exists() else None
        for extent in GRID:
            post = dataclasses.replace(card.post, extent_threshold=extent)
            lesions = lesions_from_probabilities(
                probabilities, post, voxel_spacing(dseg.affine), mask
            )
            match = match_subject(
                np.asarray(dseg.dataobj),
                instances,
                lesions.dseg,
                dseg.affine,
                instance_labels=dict(zip(table.lesion_id, table.label, strict=True)),
            )
            for label, cname in LESION_CLASSES.items():
                counts = match.counts(label)
                pairs = [
                    p for p in match.matches if match.reference_lesions[p.reference].label == label
                ]
                ratio = [
                    match.predicted_lesions[p.predicted].n_voxels
                    / match.reference_lesions[p.reference].n_voxels
                    for p in pairs
                ]
                rows.append(
                    {
                        "extent": extent,
                        "class": cname,
                        "tp": counts.true_positives,
                        "fp": counts.false_positives,
                        "fn": counts.false_negatives,
                        "dice_sum": float(np.sum(counts.pair_dice)),
                        "log_ratio_sum": float(np.sum(np.log(ratio))) if ratio else 0.0,
                    }
                )
    frame = pd.DataFrame(rows).groupby(["class", "extent"], sort=False).sum().reset_index()
    frame["f1"] = 2 * frame.tp / (2 * frame.tp + frame.fp + frame.fn)
    frame["dice"] = frame.dice_sum / frame.tp.clip(lower=1)
    frame["volume_ratio"] = np.exp(frame.log_ratio_sum / frame.tp.clip(lower=1))
    print(
        f"{len(subjects)} subjects, detection threshold {card.post.threshold}; extent >= "
        "threshold: the cores alone. dice: pooled matched-lesion Dice; volume_ratio: "
        "geometric mean of predicted / reference voxels over matched pairs"
    )
    columns = ["class", "extent", "tp", "fp", "fn", "f1", "dice", "volume_ratio"]
    print(frame[columns].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print("reproduce: python benchmarks/bench_extent.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
