"""Where a model's lesion detection can go with post-processing alone.

Predicts the tuning cohort once with a model (as ``deepmir tune`` does: the
brain crop on the working grid), then prints, for each foreground threshold,
minimum size and minimum mean probability of one class (the other classes
keep the model's own post-processing), that class's pooled lesion
sensitivity, precision and F1 and the mean F1 over classes (what ``tune``
maximizes). The sensitivity at threshold 0.2 and minimum size 1 is the
ceiling that no post-processing reaches past: what is missed there, the
network never scored.

    .venv/bin/python benchmarks/bench_operating_points.py --model build/models/v0.5-t72 \\
        --data build/robust-tune --data build/robust-tune-b
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np
from tqdm import tqdm

from deepmir.evaluation import compute_metrics
from deepmir.inference.lesions import candidate_lesions, select_lesions, voxel_spacing
from deepmir.inference.sliding import predict_probabilities
from deepmir.labels import LESION_CLASSES
from deepmir.model.checkpoint import load_model
from deepmir.training.data import CROP_MARGIN, iter_pooled, prepare
from deepmir.training.train import TrainConfig, _match_dseg, _set

THRESHOLDS = (0.2, 0.3, 0.5)
MIN_SIZES = (1, 2, 3, 4)
MIN_PROBABILITIES = (0.0, 0.3, 0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--data", action="append", required=True, help="annotated dataset(s)")
    parser.add_argument(
        "--cls", default="cmb", choices=list(LESION_CLASSES.values()), help="class to vary"
    )
    args = parser.parse_args(argv)
    print("command:", " ".join(["python", *sys.argv]))

    net, card = load_model(args.model)
    subjects = [
        prepare(r, card.normalization, CROP_MARGIN)
        for r in iter_pooled(args.data, card.modalities, card.working_spacing_mm, CROP_MARGIN)
    ]
    config = TrainConfig(modalities=card.modalities, patch_size=card.patch_size, post=card.post)
    depth = max(card.post.min_depth_mm)
    start = time.perf_counter()
    candidates: dict[float, list] = {t: [] for t in THRESHOLDS}
    for s in tqdm(subjects, desc="predict", unit="subject"):
        p = predict_probabilities(net, s.image, config.patch_size)
        for t in THRESHOLDS:
            candidates[t].append(candidate_lesions(p, t, voxel_spacing(s.affine), s.brain, depth))
    print(f"{len(subjects)} subjects predicted in {time.perf_counter() - start:.0f} s")

    c = list(LESION_CLASSES.values()).index(args.cls)
    print(f"{args.cls}: threshold, min size, min probability -> sens / prec / F1 (n ref); mean F1")
    for t, cands in candidates.items():
        for size in MIN_SIZES:
            for prob in MIN_PROBABILITIES:
                post = dataclasses.replace(
                    card.post,
                    threshold=t,
                    min_size_voxels=_set(card.post.min_size_voxels, c, size),
                    min_probability=_set(card.post.min_probability, c, prob),
                )
                matches = {
                    s.name: _match_dseg(s, select_lesions(k, post).dseg, config)
                    for s, k in zip(subjects, cands, strict=True)
                }
                result = compute_metrics(matches, n_bootstrap=0)
                figures = result.classes[args.cls]
                mean_f1 = np.nanmean([x.f1 for x in result.classes.values()])
                print(
                    f"{t:.1f} {size} {prob:.1f} -> {figures.sensitivity:.3f} / "
                    f"{figures.precision:.3f} / {figures.f1:.3f} ({figures.n_reference}); "
                    f"{mean_f1:.3f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
