"""What the vein filter (maximum elongation per class) does to a shipped model.

Simulates new phantoms (a seed never used for training or tuning), predicts
them once with a shipped model, then scores the model's stored
post-processing with and without its elongation limits, lesion by lesion
(``shared/docs/metrics.md``).

Run: ``.venv/bin/python benchmarks/bench_vein_filter.py --out /tmp/vein`` (8 subjects,
seed 3000: about 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np

from deepmir.cli import main as cli
from deepmir.evaluation import compute_metrics, match_subject
from deepmir.inference.lesions import PostProcessing, lesions_from_probabilities
from deepmir.inference.predict import choose_model, predict_subject
from deepmir.io.bids import find_subjects


def reference(root: Path, subject: str) -> tuple[np.ndarray, np.ndarray]:
    anat = root / "derivatives" / "reference" / f"sub-{subject}" / "anat"
    dseg = np.asarray(nib.load(anat / f"sub-{subject}_dseg.nii.gz").dataobj).astype(np.uint8)
    inst = nib.load(anat / f"sub-{subject}_desc-instances_dseg.nii.gz")
    return dseg, np.asarray(inst.dataobj).astype(np.int32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="scratch folder")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=3000)
    ap.add_argument("--model", default="t2w-swi-qsm", help="a shipped model name or folder")
    args = ap.parse_args()

    data = args.out / "bids"
    if not (data / "dataset_description.json").exists():
        cli(["simulate", "--out", str(data), "--n", str(args.n), "--seed", str(args.seed)])
    refs = find_subjects(data)
    model_dir = Path(args.model)
    if not model_dir.exists():
        from deepmir.inference.predict import shipped_model_dir

        model_dir = shipped_model_dir(args.model)
    model = choose_model(model_dir, data, refs)
    stored = model.card.post
    variants = {
        "stored post-processing": stored,
        "same, no elongation limit": dataclasses.replace(stored, max_elongation=(np.inf,) * 3),
    }
    matches: dict[str, dict[str, object]] = {name: {} for name in variants}
    for ref in refs:
        prediction = predict_subject(data, ref, model, PostProcessing())
        affine = prediction.subject.affine
        spacing = tuple(float(h) for h in nib.affines.voxel_sizes(affine))
        dseg, inst = reference(data, ref.subject)
        for name, post in variants.items():
            lesions = lesions_from_probabilities(prediction.probabilities, post, spacing)
            matches[name][str(ref)] = match_subject(dseg, inst, lesions.dseg, affine)

    print(f"model {model.name}; {len(refs)} phantoms, seed {args.seed}; stored {stored}")
    print(f"{'':28s} {'class':14s} {'TP':>4s} {'FP':>4s} {'FN':>4s} {'sens':>5s} {'prec':>5s}")
    for name, by_subject in matches.items():
        result = compute_metrics(by_subject, n_bootstrap=0)  # type: ignore[arg-type]
        for cls, c in result.classes.items():
            print(
                f"{name:28s} {cls:14s} {c.true_positives:4d} {c.false_positives:4d} "
                f"{c.false_negatives:4d} {c.sensitivity:5.2f} {c.precision:5.2f}"
            )
    print(
        f"reproduce: .venv/bin/python benchmarks/bench_vein_filter.py --out {args.out} "
        f"--n {args.n} --seed {args.seed} --model {args.model}"
    )


if __name__ == "__main__":
    main()
