"""Where a model's false positives of one class lie: size, depth in the brain mask, QSM.

Reads a simulated BIDS dataset (its reference labels and brain masks) and a
predictions folder, matches them with the evaluation's rule
(:func:`deepmir.evaluation.matching.match_subject`) and prints every predicted
lesion of ``--label`` that matches no reference lesion of its class: voxels,
centroid (voxels), depth of its deepest voxel inside the brain mask (mm,
Euclidean) and mean chi of the QSM the prediction used (``desc-fromgre_Chimap``
in the predictions when predict computed it from raw GRE, else the dataset's
Chimap), and the nearest reference lesion of any class (centroid distance in
mm and class: a false positive a few mm from a real lesion is a displaced or
second detection of it, not a mimic). With ``--veins`` each also gets the simulator's vein occupancy
(the largest partial-volume fraction within one voxel, re-rendered from the
subject's parameter record): near 0 off the veins, up to 1 on one.

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


def false_positives(data: Path, predictions: Path, label: int, veins: bool = False) -> pd.DataFrame:
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
        occupancy = _vein_occupancy(data, name) if veins else None
        references = np.array([r.centroid_xyz for r in match.reference_lesions]).reshape(-1, 3)
        for i, lesion in unmatched:
            voxels = index_map == i + 1
            distances = np.linalg.norm(references - lesion.centroid_xyz, axis=1)
            nearest = int(np.argmin(distances)) if distances.size else None
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
                    "nearest_ref_mm": None
                    if nearest is None
                    else round(float(distances[nearest]), 1),
                    "nearest_ref": None
                    if nearest is None
                    else LABELS[match.reference_lesions[nearest].label],
                }
            )
            if occupancy is not None:
                near = ndimage.binary_dilation(voxels, structure=np.ones((3, 3, 3), bool))
                rows[-1]["vein_occupancy"] = round(float(occupancy[near].max()), 2)
    return pd.DataFrame(rows)


def _vein_occupancy(data: Path, name: str) -> np.ndarray:
    from deepmir.phantom.render import render_subject
    from deepmir.phantom.simulate import load_params

    return render_subject(load_params(data, name.removeprefix("sub-"))).vein_occupancy


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, help="simulated BIDS dataset (reference and masks)")
    p.add_argument("predictions", type=Path, help="deepmir predict's output folder")
    names = {v: k for k, v in LABELS.items() if k > 0}
    p.add_argument("--label", default="calcification", choices=sorted(names))
    p.add_argument(
        "--veins", action="store_true", help="also the simulator's vein occupancy (re-rendered)"
    )
    args = p.parse_args()
    df = false_positives(args.data, args.predictions, names[args.label], args.veins)
    print(df.to_string() if len(df) else f"no false {args.label}")
    n = len(list(args.predictions.glob("sub-*/")))
    print(f"{len(df)} false {args.label} in {n} subjects")
    print(
        f"reproduce: python benchmarks/bench_false_positives.py {args.data} {args.predictions} "
        f"--label {args.label}" + (" --veins" if args.veins else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
