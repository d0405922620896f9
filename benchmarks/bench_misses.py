"""Which reference CMBs a model misses: size and susceptibility of found and missed ones.

Reads a set of ``make bench-robust`` (its phantoms and one model's predictions;
or a simulated dataset, e.g. training subjects, with a predictions folder inside),
matches them with the evaluation's rule (:func:`deepmir.evaluation.matching.match_subject`)
and prints every reference CMB (voxels, volume, delta chi, region, found or not)
and the medians of found and missed ones, then the sensitivity per size
(voxels on the reference grid). When the predictions hold the CMB
probability map (``predict --save-probabilities``), each CMB also gets the
largest CMB probability within 2 voxels of it (``max_p_cmb``): a missed CMB
scored near 0 was never a candidate, one scored high was removed by
post-processing.

    .venv/bin/python benchmarks/bench_misses.py build/robust/in-distribution pred-v0.3-2a4326af594c
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from deepmir.evaluation.matching import match_subject


def missed_cmbs(set_dir: Path, predictions: str) -> pd.DataFrame:
    bids = set_dir / "bids" if (set_dir / "bids").is_dir() else set_dir
    reference = bids / "derivatives" / "reference"
    rows = []
    for sub in sorted((set_dir / predictions).glob("sub-*/")):
        name, ref = sub.name, reference / sub.name / "anat"
        dseg = nib.load(ref / f"{name}_dseg.nii.gz")
        instances = np.asarray(nib.load(ref / f"{name}_desc-instances_dseg.nii.gz").dataobj)
        predicted = nib.load(sub / "anat" / f"{name}_desc-deepmir_dseg.nii.gz")
        table = pd.read_csv(ref / f"{name}_lesions.tsv", sep="\t")
        match = match_subject(
            np.asarray(dseg.dataobj),
            instances,
            np.asarray(predicted.dataobj),
            dseg.affine,
            instance_labels=dict(zip(table.lesion_id, table.label, strict=True)),
        )
        found = {p.reference for p in match.matches}
        probseg = sub / "anat" / f"{name}_label-cmb_desc-deepmir_probseg.nii.gz"
        p_cmb = np.asarray(nib.load(probseg).dataobj) if probseg.exists() else None
        for i, lesion in enumerate(match.reference_lesions):
            if lesion.label != 1:
                continue
            row = table[table.lesion_id == lesion.source_id].iloc[0]
            rows.append(
                {
                    "subject": name,
                    "found": i in found,
                    "voxels": lesion.n_voxels,
                    "volume_mm3": row.volume_mm3,
                    "delta_chi_ppm": row.delta_chi_ppm,
                    "region": row.region,
                    "max_p_cmb": np.nan
                    if p_cmb is None
                    else float(
                        p_cmb[
                            ndimage.binary_dilation(instances == lesion.source_id, iterations=2)
                        ].max()
                    ),
                }
            )
    return pd.DataFrame(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "set_dir", type=Path, help="a set folder of bench-robust (bids/ inside) or a dataset"
    )
    p.add_argument("predictions", help="its predictions folder name (pred-...)")
    args = p.parse_args()
    df = missed_cmbs(args.set_dir, args.predictions)
    print(df.to_string())
    medians = df.groupby("found")[["voxels", "volume_mm3", "delta_chi_ppm"]].median()
    print(medians)
    size = pd.cut(df.voxels, [0, 1, 2, 5, 10, np.inf], labels=["1", "2", "3-5", "6-10", ">10"])
    print("sensitivity per size (voxels):")
    print(df.groupby(size, observed=False).found.agg(n="size", sensitivity="mean").to_string())
    print(json.dumps({"missed": int((~df.found).sum()), "found": int(df.found.sum())}))
    print(f"reproduce: python benchmarks/bench_misses.py {args.set_dir} {args.predictions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
