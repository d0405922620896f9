"""Score a simulated reference against itself and against a degraded copy.

Shows what ``deepmir evaluate`` reports for a perfect detector and for one that
misses every third CMB, adds false CMBs, and calls one calcification a CMB.

Run: ``.venv/bin/python benchmarks/evaluate_degraded.py --data demo_output/bids --out /tmp/ev``
(``make demo`` makes ``demo_output/bids``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from deepmir.cli import main as cli
from deepmir.io.atomic import write_nifti, write_text
from deepmir.io.bids import find_subjects
from deepmir.labels import CALCIFICATION, CMB, dseg_tsv

REF = Path("derivatives") / "reference"


def make_predictions(data: Path, out: Path, degrade: bool, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    if out.exists():
        shutil.rmtree(out)
    write_text(out / "dseg.tsv", dseg_tsv())
    cmb_seen = 0
    calc_swapped = False
    for ref in find_subjects(data):
        anat = data / REF / f"sub-{ref.subject}" / "anat"
        img = nib.load(anat / f"sub-{ref.subject}_dseg.nii.gz")
        dseg = np.asarray(img.dataobj).copy()
        inst = np.asarray(nib.load(anat / f"sub-{ref.subject}_desc-instances_dseg.nii.gz").dataobj)
        if degrade:
            for lesion_id in np.unique(inst[inst > 0]):
                m = inst == lesion_id
                label = int(dseg[m][0])
                if label == CMB:
                    cmb_seen += 1
                    if cmb_seen % 3 == 0:
                        dseg[m] = 0  # missed
                elif label == CALCIFICATION and not calc_swapped:
                    dseg[m] = CMB  # the mimic error
                    calc_swapped = True
            brain = (
                np.asarray(
                    nib.load(
                        data
                        / f"sub-{ref.subject}"
                        / "anat"
                        / f"sub-{ref.subject}_desc-brain_mask.nii.gz"
                    ).dataobj
                )
                > 0
            )
            candidates = np.argwhere(brain & (dseg == 0))
            for c in candidates[rng.choice(len(candidates), 2, replace=False)]:
                dseg[tuple(slice(v - 1, v + 1) for v in c)] = CMB  # false alarms, 2x2x2 mm
        write_nifti(
            out / f"sub-{ref.subject}" / "anat" / f"sub-{ref.subject}_desc-deepmir_dseg.nii.gz",
            dseg,
            img.affine,
            np.uint8,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("demo_output/bids"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/deepmir_eval_degraded"))
    args = parser.parse_args()
    for name, degrade in (("self", False), ("degraded", True)):
        pred = args.out / f"predictions_{name}"
        make_predictions(args.data, pred, degrade)
        print(f"\n=== reference scored against {name} copy ===")
        cli(
            [
                "evaluate",
                "--reference",
                str(args.data / REF),
                "--predictions",
                str(pred),
                "--out",
                str(args.out / f"evaluation_{name}"),
            ]
        )
    print(
        f"\nreproduce: .venv/bin/python benchmarks/evaluate_degraded.py --data {args.data} "
        f"--out {args.out}"
    )


if __name__ == "__main__":
    main()
