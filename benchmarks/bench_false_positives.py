"""Where a model's false positives of one class lie: size, depth in the brain mask, QSM.

Reads a simulated BIDS dataset (its reference labels and brain masks) and a
predictions folder, matches them with the evaluation's rule
(:func:`deepmir.evaluation.matching.match_subject`) and prints every predicted
lesion of ``--label`` that matches no reference lesion of its class: voxels,
centroid (voxels), depth of its deepest voxel inside the brain mask (mm,
Euclidean) and mean chi of the QSM the prediction used (``desc-fromgre_Chimap``
in the predictions when predict computed it from raw GRE, else the dataset's
Chimap).

    .venv/bin/python benchmarks/bench_false_positives.py build/bench-gre/bids \
        build/bench-gre/pred-gre --label calcification
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from deepmir.evaluation.matching import extract_components, match_subject
from deepmir.labels import LABELS
from deepmir.phantom.simulate import REFERENCE


def _array(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def false_positives(data: Path, predictions: Path, label: int) -> pd.DataFrame:
    rows = []
    for sub in sorted(p for p in predictions.glob("sub-*") if p.is_dir()):
        name = sub.name
        ref_anat, anat = data / REFERENCE / name / "anat", sub / "anat"
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
        matched = {m.predicted for m in match.matches}
        unmatched = [
            (i, lesion)
            for i, lesion in enumerate(match.predicted_lesions)
            if lesion.label == label and i not in matched
        ]
        if not unmatched:
            continue
        fromgre = anat / f"{name}_desc-fromgre_Chimap.nii.gz"
        chi = _array(
            fromgre if fromgre.exists() else data / name / "anat" / f"{name}_Chimap.nii.gz"
        )
        mask = _array(data / name / "anat" / f"{name}_desc-brain_mask.nii.gz") > 0
        depth = ndimage.distance_transform_edt(mask, sampling=nib.affines.voxel_sizes(dseg.affine))
        # the evaluation's components of the prediction, in match_subject's order
        index_map = extract_components(predicted, dseg.affine).index_map
        for i, lesion in unmatched:
            voxels = index_map == i + 1
            assert int(voxels.sum()) == lesion.n_voxels
            rows.append(
                {
                    "subject": name,
                    "voxels": lesion.n_voxels,
                    "centroid_ijk": tuple(round(c) for c in lesion.centroid_ijk),
                    "grid": predicted.shape,
                    "depth_mm": round(float(depth[voxels].max()), 1),
                    "chi_ppm": round(float(chi[voxels].mean()), 3),
                    "qsm": "from raw GRE" if fromgre.exists() else "dataset",
                }
            )
    return pd.DataFrame(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, help="simulated BIDS dataset (reference and masks)")
    p.add_argument("predictions", type=Path, help="deepmir predict's output folder")
    names = {v: k for k, v in LABELS.items() if k > 0}
    p.add_argument("--label", default="calcification", choices=sorted(names))
    args = p.parse_args()
    df = false_positives(args.data, args.predictions, names[args.label])
    print(df.to_string() if len(df) else f"no false {args.label}")
    n = len(list(args.predictions.glob("sub-*/")))
    print(f"{len(df)} false {args.label} in {n} subjects")
    print(
        f"reproduce: python benchmarks/bench_false_positives.py {args.data} {args.predictions} "
        f"--label {args.label}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
