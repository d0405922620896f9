"""Do the SWI structures under predicted CMBs tell veins from CMBs? A feasibility check.

Without QSM the shipped model calls vein sections CMBs
(``benchmarks/results/false_cmbs_in-distribution_v0.8.txt``). The
post-processing's vein filter measures the elongation of the *predicted*
component, and a 1-2 voxel false CMB on a vein is not elongated. This
benchmark measures instead the dark SWI structure each predicted CMB sits on,
with the post-processing's own function
(:func:`deepmir.inference.lesions.swi_structure_elongation`: voxels more than
4 robust SDs below the local SWI median in a 15^3 box, the 26-connected part
touching the lesion, its elongation in mm). A CMB's bloom is a blob, a vein a
tube.

For every predicted CMB of a predictions folder: true or false (the
evaluation's matching), the simulator's vein occupancy within one voxel
(re-rendered from the parameter record), the structure's voxels and
elongation. It prints them, then, for a few elongation limits, how many true
and false CMBs each would drop. Run it on tuning subjects, not on a
benchmark set. Written by hand: no library measures this.

    .venv/bin/python benchmarks/bench_vein_shape.py DATA PREDICTIONS
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from bench_false_positives import _vein_occupancy
from scipy import ndimage

from deepmir.evaluation.matching import extract_components, match_subject
from deepmir.inference.lesions import swi_structure_elongation, voxel_spacing
from deepmir.phantom.simulate import REFERENCE

LIMITS = (2.0, 2.5, 3.0, 4.0, 5.0)


def _array(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def subject_rows(
    data: Path, predictions: Path, name: str, veins: bool = True
) -> list[dict[str, object]]:
    ref_anat, anat = data / REFERENCE / name / "anat", predictions / name / "anat"
    dseg = nib.load(ref_anat / f"{name}_dseg.nii.gz")
    predicted = _array(anat / f"{name}_desc-deepmir_dseg.nii.gz")
    table = pd.read_csv(ref_anat / f"{name}_lesions.tsv", sep="\t")
    match = match_subject(
        np.asarray(dseg.dataobj),
        _array(ref_anat / f"{name}_desc-instances_dseg.nii.gz"),
        predicted,
        dseg.affine,
        instance_labels=dict(zip(table.lesion_id, table.label, strict=True)),
    )
    cmbs = [i for i, lesion in enumerate(match.predicted_lesions) if lesion.label == 1]
    if not cmbs:
        return []
    matched = {m.predicted for m in match.matches}
    swi = _array(data / name / "anat" / f"{name}_swi.nii.gz").astype(np.float32)
    mask = _array(data / name / "anat" / f"{name}_desc-brain_mask.nii.gz") > 0
    index_map = extract_components(predicted, dseg.affine).index_map
    occupancy = _vein_occupancy(data, name) if veins else None
    spacing = voxel_spacing(dseg.affine)
    rows = []
    for i in cmbs:
        voxels = index_map == i + 1
        near = ndimage.binary_dilation(voxels, structure=np.ones((3, 3, 3), bool))
        value = swi_structure_elongation(index_map, i + 1, swi, mask, spacing)
        rows.append(
            {
                "subject": name,
                "voxels": int(voxels.sum()),
                "real": i in matched,
                "vein_occupancy": None
                if occupancy is None
                else round(float(occupancy[near].max()), 2),
                "swi_elongation": round(value, 2),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="simulated BIDS dataset (reference, SWI, mask)")
    parser.add_argument("predictions", type=Path, help="deepmir predict's output folder")
    parser.add_argument(
        "--no-veins", action="store_true", help="skip the vein occupancy (re-rendering)"
    )
    args = parser.parse_args(argv)
    subjects = sorted(p.name for p in args.predictions.glob("sub-*/") if p.is_dir())
    if not subjects:
        sys.exit(f"{args.predictions}: no sub-* folders")
    rows = []
    for name in subjects:
        rows += subject_rows(args.data, args.predictions, name, not args.no_veins)
    frame = pd.DataFrame(rows)
    print(frame.to_string())
    real = frame[frame.real]
    false = frame[~frame.real]
    on_vein = false[false.vein_occupancy.fillna(0) >= 0.25]
    print(
        f"\n{len(frame)} predicted CMBs in {len(subjects)} subjects: {len(real)} real, "
        f"{len(false)} false"
        + ("" if args.no_veins else f" ({len(on_vein)} on a vein, occupancy >= 0.25)")
    )
    print("structure elongation limit: real dropped / false dropped / false on veins dropped")
    for limit in LIMITS:
        print(
            f"  > {limit:3.1f}: {int((real.swi_elongation > limit).sum())} / "
            f"{int((false.swi_elongation > limit).sum())} / "
            f"{int((on_vein.swi_elongation > limit).sum())}"
        )
    print("reproduce: python benchmarks/bench_vein_shape.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
