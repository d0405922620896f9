"""MARS regions: agreement with the phantoms' reference and registration time.

Issue 13 goals: >= 95 % region agreement on phantoms, registration <= 20 s
per subject on 2 cores. Each phantom's T2w (brain-masked) is registered to
MNI152 (:mod:`deepmir.cohort.regions`), its reference lesions
(``derivatives/reference/sub-*/anat/*_lesions.tsv``) are mapped to MNI and
classified; a CMB agrees when its MARS region (lobar, deep, infratentorial)
is the reference ``region``, an iron deposit or calcification when its
structure is the reference ``host``.

    .venv/bin/python benchmarks/bench_regions.py                 # make bench-regions
    .venv/bin/python benchmarks/bench_regions.py --n 6 --size small --threads 2
    .venv/bin/python benchmarks/bench_regions.py --data DIR --result regions_dev.json

Writes benchmarks/results/regions.json (regions_<size>.json for another size,
or ``--result``). Registration time: wall-clock and CPU seconds (all
threads; the wall-clock time depends on what else runs on the machine).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np

from deepmir.cohort import regions

RESULTS = Path(__file__).parent / "results"


def _simulation(data: Path) -> object:
    """How ``deepmir simulate`` made the cohort (its dataset description)."""
    try:
        return json.loads((data / "dataset_description.json").read_text())["deepmir_simulation"]
    except (OSError, ValueError, KeyError):
        return "not a deepmir simulate cohort"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=6, help="phantoms")
    p.add_argument("--seed", type=int, default=4545)
    p.add_argument("--size", default="small", choices=["small", "full"])
    p.add_argument("--threads", type=int, default=2, help="registration threads")
    p.add_argument("--data", type=Path, default=None, help="an existing phantom cohort")
    p.add_argument("--result", default=None, help="file name in benchmarks/results/")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_regions_"))
    try:
        data = args.data
        if data is None:
            from deepmir.phantom.simulate import SimulationConfig, simulate_dataset

            data = tmp / "bids"
            simulate_dataset(
                SimulationConfig(out=data, n_subjects=args.n, seed=args.seed, grid_size=args.size)
            )
        start = time.perf_counter()
        regions.atlas()
        atlas_s = time.perf_counter() - start
        per_class: Counter[str] = Counter()
        agree_class: Counter[str] = Counter()
        confusions: Counter[str] = Counter()
        seconds, cpu_seconds, method = [], [], ""
        for anat in sorted(data.glob("sub-*/anat")):
            sub = anat.parent.name
            t2w = nib.load(anat / f"{sub}_T2w.nii.gz")
            mask = np.asarray(nib.load(anat / f"{sub}_desc-brain_mask.nii.gz").dataobj) > 0
            image = t2w.get_fdata(dtype=np.float32)
            reg = regions.register_to_mni(image, mask, t2w.affine, args.threads)
            seconds.append(round(reg.seconds, 2))
            cpu_seconds.append(round(reg.cpu_seconds, 2))
            method = reg.to_dict()["Method"]
            table = data / "derivatives" / "reference" / sub / "anat" / f"{sub}_lesions.tsv"
            with table.open() as f:
                for row in csv.DictReader(f, delimiter="\t"):
                    xyz = np.array([float(row[c]) for c in "xyz"])
                    region, structure = regions.classify(int(row["label"]), reg.to_mni(xyz)[0])
                    cmb = row["label"] == "1"
                    truth, got = (row["region"], region) if cmb else (row["host"], structure)
                    per_class[row["name"]] += 1
                    agree_class[row["name"]] += truth == got
                    if truth != got:
                        confusions[f"{row['name']}: {truth} -> {got}"] += 1
            print(f"{sub}: registration {reg.seconds:.1f} s (CPU {reg.cpu_seconds:.1f} s)")
        total, agree = sum(per_class.values()), sum(agree_class.values())
        result = {
            "command": "python benchmarks/bench_regions.py "
            + f"--data {args.data} --threads {args.threads}"
            + (f" --result {args.result}" if args.result else "")
            if args.data
            else f"python benchmarks/bench_regions.py --n {args.n} --size {args.size} "
            f"--seed {args.seed} --threads {args.threads}",
            "phantoms": f"the cohort in {args.data}: {_simulation(args.data)}"
            if args.data
            else f"{args.n} {args.size} phantoms (seed {args.seed})",
            "lesions": total,
            "agreement": round(agree / max(total, 1), 4),
            "agreement_per_class": {
                k: round(agree_class[k] / per_class[k], 4) for k in sorted(per_class)
            },
            "lesions_per_class": dict(sorted(per_class.items())),
            "disagreements": dict(confusions.most_common()),
            "method": method,
            "registration_s": seconds,
            "registration_s_max": max(seconds),
            "registration_cpu_s": cpu_seconds,
            "atlas_build_s_once_per_process": round(atlas_s, 2),
            "goals": ">= 0.95 agreement; <= 20 s registration per subject on 2 cores",
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        }
        print(
            f"agreement {agree}/{total} = {100 * result['agreement']:.1f} % (goal >= 95 %); "
            f"registration max {max(seconds):.1f} s, mean {np.mean(seconds):.1f} s (goal <= 20 s)"
        )
        name = args.result or (
            "regions.json" if args.size == "small" else f"regions_{args.size}.json"
        )
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written {RESULTS / name}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
