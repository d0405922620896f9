"""CMB mimics in the phantoms: small unlabelled dark dots on SWI, and what a model calls them.

A detector learns to tell a 1-2 voxel CMB from what looks like one only if its
training phantoms hold both. This benchmark counts, per subject of a simulated
dataset, the small dark dots of the SWI and sorts them by what the
simulator put there:

* a **dot** is a compact dark blob: a 26-connected component of voxels at
  least 3 voxels inside the brain mask where SWI lies more than ``--sd``
  robust standard deviations (1.4826 x the MAD over the brain) below its
  local median (a 5^3 median filter), of at most ``--max-voxels`` voxels and
  elongation <= 3 (the shipped CMB vein filter). A CMB of 1-8 voxels blooms
  into such a blob of a few hundred voxels: the contrast a reader first sees;
* it is a **CMB** (or **iron** / **calcification**) when it touches, within
  one voxel, a reference lesion of that class; a **vein** when the
  simulator's vein occupancy (re-rendered from the subject's parameter
  record) reaches 0.1 within one voxel; else **other** (noise, Gibbs
  ringing, air-tissue field, tissue texture);
* with ``--predictions``, a dot is **called** when it touches a predicted
  lesion of any class (within one voxel), and the class called is counted.

It prints per subject and pooled: reference CMBs and those of at most
``--small-cmb`` voxels, how many of those the dot rule sees, and the dots
per category with their mean QSM (ppm) and the share the model called a
lesion. Written by hand: no library sorts phantom structures.

    .venv/bin/python benchmarks/bench_mimics.py build/robust-final/in-distribution/bids \\
        --predictions build/robust-final/in-distribution/pred-t2w-swi-qsm-a1d88b8861f5-...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cc3d
import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from deepmir.inference.lesions import elongation, voxel_spacing
from deepmir.labels import LABELS

CATEGORIES = ("cmb", "iron", "calcification", "vein", "other")


def dark_dots(
    swi: np.ndarray, mask: np.ndarray, sd: float, max_voxels: int, spacing: tuple[float, ...]
) -> tuple[np.ndarray, int]:
    """Compact dark blobs (ids 1..n): components of SWI more than ``sd`` robust SDs
    below its local median, at least 3 voxels inside the mask, of at most
    ``max_voxels`` voxels and elongation <= 3 (the shipped CMB vein filter)."""
    filled = np.where(mask, swi, np.median(swi[mask]))
    residual = filled - ndimage.median_filter(filled, size=5)
    inside = residual[mask]
    mad = 1.4826 * np.median(np.abs(inside - np.median(inside)))
    deep = ndimage.binary_erosion(mask, iterations=3)
    dark = (residual < -sd * mad) & deep
    components = cc3d.connected_components(dark, connectivity=26).astype(np.int32)
    n = int(components.max())
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    compact = elongation(components, n, spacing) <= 3.0
    chosen = np.flatnonzero((sizes <= max_voxels) & compact & (np.arange(n + 1) > 0))
    keep = np.zeros(n + 1, np.int32)
    keep[chosen] = np.arange(1, chosen.size + 1)
    return keep[components], int(chosen.size)


def _touching(ids: np.ndarray, n: int, target: np.ndarray) -> np.ndarray:
    """Per component (index 0 unused): does it lie within one voxel of ``target``."""
    near = ndimage.binary_dilation(target, structure=np.ones((3, 3, 3), bool))
    return np.bincount(ids[near & (ids > 0)], minlength=n + 1) > 0


def subject_rows(
    bids: Path,
    name: str,
    predictions: Path | None,
    sd: float,
    max_voxels: int,
    small_cmb: int,
) -> tuple[list[dict[str, object]], dict[str, object]]:
    from deepmir.phantom.render import render_subject
    from deepmir.phantom.simulate import REFERENCE, load_params

    anat = bids / name / "anat"
    swi_image = nib.load(anat / f"{name}_swi.nii.gz")
    swi = np.asarray(swi_image.dataobj, np.float32)
    qsm = np.asarray(nib.load(anat / f"{name}_Chimap.nii.gz").dataobj, np.float32)
    mask = np.asarray(nib.load(anat / f"{name}_desc-brain_mask.nii.gz").dataobj) > 0
    ref = bids / REFERENCE / name / "anat"
    dseg = np.asarray(nib.load(ref / f"{name}_dseg.nii.gz").dataobj)
    instances = np.asarray(nib.load(ref / f"{name}_desc-instances_dseg.nii.gz").dataobj)
    veins = render_subject(load_params(bids, name.removeprefix("sub-"))).vein_occupancy
    ids, n = dark_dots(swi, mask, sd, max_voxels, voxel_spacing(swi_image.affine))
    category = np.full(n + 1, "other", object)
    for test, label in (
        (_touching(ids, n, veins >= 0.1), "vein"),
        *((_touching(ids, n, dseg == k), LABELS[k]) for k in (3, 2, 1)),
    ):
        category[test] = label  # later tests win: lesions over veins, CMB first
    qsm_mean = ndimage.mean(qsm, ids, np.arange(1, n + 1)) if n else np.zeros(0)
    called = np.full(n + 1, "", object)
    if predictions is not None:
        pred = nib.load(predictions / name / "anat" / f"{name}_desc-deepmir_dseg.nii.gz")
        predicted = np.asarray(pred.dataobj)
        for k in (3, 2, 1):
            called[_touching(ids, n, predicted == k) & (called == "")] = LABELS[k]
    rows = [
        {
            "subject": name,
            "category": category[i],
            "qsm_ppm": float(qsm_mean[i - 1]),
            "called": called[i],
        }
        for i in range(1, n + 1)
    ]
    # reference CMBs, and the small ones the dot rule sees
    cmb_ids = np.unique(instances[dseg == 1])
    sizes = ndimage.sum(np.ones_like(instances), instances, cmb_ids) if cmb_ids.size else []
    small = [c for c, s in zip(cmb_ids, sizes, strict=True) if s <= small_cmb]
    seen = sum(bool(np.any(ids[ndimage.binary_dilation(instances == c)] > 0)) for c in small)
    summary = {
        "subject": name,
        "cmbs": int(cmb_ids.size),
        "small_cmbs": len(small),
        "small_cmbs_seen_as_dots": int(seen),
    }
    return rows, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a simulated BIDS dataset")
    parser.add_argument("--predictions", type=Path, default=None, help="predict's output")
    parser.add_argument("--sd", type=float, default=10.0, help="dot contrast, robust SDs")
    parser.add_argument("--max-voxels", type=int, default=300, help="largest dot, voxels")
    parser.add_argument("--small-cmb", type=int, default=8, help="a small CMB, voxels")
    args = parser.parse_args(argv)
    subjects = sorted(p.name for p in args.data.glob("sub-*/") if p.is_dir())
    if not subjects:
        sys.exit(f"{args.data}: no sub-* folders")
    rows: list[dict[str, object]] = []
    summaries = []
    for name in subjects:
        r, s = subject_rows(
            args.data, name, args.predictions, args.sd, args.max_voxels, args.small_cmb
        )
        rows += r
        summaries.append(s)
        print(
            f"{name}: {len(r)} dots, {s['small_cmbs']} CMBs <= {args.small_cmb} voxels", flush=True
        )
    dots = pd.DataFrame(rows, columns=["subject", "category", "qsm_ppm", "called"])
    per_subject = pd.crosstab(dots.subject, dots.category).reindex(
        columns=list(CATEGORIES), fill_value=0
    )
    table = pd.DataFrame(summaries).set_index("subject").join(per_subject).fillna(0).astype(int)
    print(
        f"\nper subject: compact dark blobs (<= {args.max_voxels} voxels, elongation <= 3, "
        f"> {args.sd} robust SD below the local SWI median), by what lies there"
    )
    print(table.to_string())
    print(
        "\npooled, per category: dots, dots per subject, mean QSM (ppm), called a lesion "
        "(of which CMB)"
    )
    for c in CATEGORIES:
        d = dots[dots.category == c]
        if d.empty:
            print(f"{c:14s} 0")
            continue
        called = (d.called != "").mean() if args.predictions else float("nan")
        as_cmb = (d.called == "cmb").mean() if args.predictions else float("nan")
        print(
            f"{c:14s} {len(d):5d}  {len(d) / len(subjects):6.1f}/subject  QSM "
            f"{d.qsm_ppm.mean():+.3f}  called {called:.2f} (CMB {as_cmb:.2f})"
        )
    total = table[["small_cmbs", "small_cmbs_seen_as_dots"]].sum()
    print(
        f"\nsmall CMBs (<= {args.small_cmb} voxels): {total.small_cmbs}, of which "
        f"{total.small_cmbs_seen_as_dots} seen as dots"
    )
    print("reproduce: python benchmarks/bench_mimics.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
