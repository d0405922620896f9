"""What the vein filter (maximum elongation per class) does to a shipped model.

Simulates new phantoms (a seed never used for training or tuning), predicts
them once with a shipped model, then scores the model's stored
post-processing with and without its elongation limits, lesion by lesion
(``shared/docs/metrics.md``). Then lists every reference iron deposit with its
designed susceptibility step, its contrast on QSM (mean inside minus mean of
a 1-4 voxel shell of lesion-free tissue, over the shell's standard
deviation) and whether the stored post-processing found it.

Run: ``.venv/bin/python benchmarks/bench_vein_filter.py --out /tmp/vein`` (8 subjects,
seed 3000: about 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from deepmir.cli import main as cli
from deepmir.evaluation import SubjectMatch, compute_metrics, match_subject
from deepmir.inference.lesions import PostProcessing, lesions_from_probabilities, voxel_spacing
from deepmir.inference.predict import choose_model, predict_subject, shipped_model_dir
from deepmir.io.bids import find_subjects
from deepmir.labels import IRON


def reference(root: Path, subject: str) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    anat = root / "derivatives" / "reference" / f"sub-{subject}" / "anat"
    dseg = np.asarray(nib.load(anat / f"sub-{subject}_dseg.nii.gz").dataobj).astype(np.uint8)
    inst = nib.load(anat / f"sub-{subject}_desc-instances_dseg.nii.gz")
    with open(anat / f"sub-{subject}_lesions.tsv") as f:
        table = list(csv.DictReader(f, delimiter="\t"))
    return dseg, np.asarray(inst.dataobj).astype(np.int32), table


def iron_rows(
    subject: str,
    dseg: np.ndarray,
    inst: np.ndarray,
    table: list[dict[str, str]],
    qsm: np.ndarray,
    found: np.ndarray,
) -> list[tuple[str, float, float, float, float]]:
    """(subject, volume mm3, designed delta chi, QSM contrast / shell SD, fraction found)."""
    rows = []
    for lesion in table:
        if int(lesion["label"]) != IRON:
            continue
        inside = inst == int(lesion["lesion_id"])
        near = ndimage.binary_dilation(inside, iterations=4)
        shell = near & ~ndimage.binary_dilation(inside) & (dseg == 0)
        cnr = (qsm[inside].mean() - qsm[shell].mean()) / qsm[shell].std()
        rows.append(
            (
                subject,
                float(lesion["volume_mm3"]),
                float(lesion["delta_chi_ppm"]),
                float(cnr),
                float((found[inside] == IRON).mean()),
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="scratch folder")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=3000)
    ap.add_argument("--model", default="t2w-swi-qsm", help="a shipped model name or folder")
    args = ap.parse_args()

    data = args.out / "bids"
    if not (data / "dataset_description.json").exists():
        cli(
            [
                "simulate",
                "--out",
                str(data),
                "--n",
                str(args.n),
                "--seed",
                str(args.seed),
                "--preset",
                "narrow",
            ]
        )
    refs = find_subjects(data)
    model_dir = Path(args.model)
    if not model_dir.exists():
        model_dir = shipped_model_dir(args.model)
    model = choose_model(model_dir, data, refs)
    stored = model.card.post
    variants = {
        "stored post-processing": stored,
        "same, no elongation limit": dataclasses.replace(stored, max_elongation=(np.inf,) * 3),
    }
    matches: dict[str, dict[str, SubjectMatch]] = {name: {} for name in variants}
    iron: list[tuple[str, float, float, float, float]] = []
    for ref in refs:
        prediction = predict_subject(data, ref, model, PostProcessing())
        affine = prediction.subject.affine
        probabilities = prediction.full_probabilities()  # the input grid, as the reference
        dseg, inst, table = reference(data, ref.subject)
        for name, post in variants.items():
            lesions = lesions_from_probabilities(probabilities, post, voxel_spacing(affine))
            matches[name][str(ref)] = match_subject(dseg, inst, lesions.dseg, affine)
            if post is stored:
                qsm = prediction.subject.uncrop(prediction.subject.images["qsm"])
                iron += iron_rows(str(ref), dseg, inst, table, qsm, lesions.dseg)

    print(f"model {model.name}; {len(refs)} phantoms, seed {args.seed}; stored {stored}")
    print(f"{'':28s} {'class':14s} {'TP':>4s} {'FP':>4s} {'FN':>4s} {'sens':>5s} {'prec':>5s}")
    for name, by_subject in matches.items():
        result = compute_metrics(by_subject, n_bootstrap=0)
        for cls, c in result.classes.items():
            print(
                f"{name:28s} {cls:14s} {c.true_positives:4d} {c.false_positives:4d} "
                f"{c.false_negatives:4d} {c.sensitivity:5.2f} {c.precision:5.2f}"
            )
    print("reference iron deposits, stored post-processing (found: fraction of voxels called iron)")
    print(f"{'subject':8s} {'mm3':>5s} {'dchi ppm':>8s} {'QSM CNR':>7s} {'found':>5s}")
    for subject, volume, dchi, cnr, found in sorted(iron, key=lambda r: r[2]):
        print(f"{subject:8s} {volume:5.0f} {dchi:8.3f} {cnr:7.2f} {found:5.2f}")
    print(
        f"reproduce: .venv/bin/python benchmarks/bench_vein_filter.py --out {args.out} "
        f"--n {args.n} --seed {args.seed} --model {args.model}"
    )


if __name__ == "__main__":
    main()
