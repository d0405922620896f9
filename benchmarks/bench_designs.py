"""Compare network designs on lesion-level F1 and CPU time (issue 4).

Every design is trained with the same recipe, seed and iteration count on the
same subjects, and scored on the same held-out subjects with
:mod:`deepmir.evaluation`. Prints one table and the command that reproduces it;
``--json`` keeps the figures (the README's design table comes from it).

    .venv/bin/deepmir simulate --out /work/data/cohort24 --n 24 --seed 1000
    .venv/bin/python benchmarks/bench_designs.py --data /work/data/cohort24 \
        --iterations 1200 --json benchmarks/results/designs.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from deepmir.evaluation import compute_metrics
from deepmir.model.network import NetworkConfig, build_network
from deepmir.training.data import fit, prepare, read_annotated
from deepmir.training.train import TrainConfig, match_predictions, train_on_subjects

DESIGNS = {
    # the DEEPMIR idea: six resolution levels (five poolings)
    "3d-6level": NetworkConfig(),  # the default: (16, 32, 48, 64, 96, 128)
    # the usual U-Net depth: four levels
    "3d-4level": NetworkConfig(channels=(16, 32, 64, 128), strides=(2, 2, 2)),
}


def patch_gflops(network: NetworkConfig, channels: int, patch: int) -> float:
    net = build_network(network, channels).eval()
    x = torch.zeros(1, channels, patch, patch, patch)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    return counter.get_total_flops() / 1e9


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--designs", default=",".join(DESIGNS))
    p.add_argument("--iterations", type=int, default=1200)
    p.add_argument("--n-test", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="merge figures into this file")
    args = p.parse_args()

    base = TrainConfig(iterations=args.iterations, seed=args.seed, val_every=400)
    raw = read_annotated(args.data, base.modalities)
    test_raw, train_raw = raw[-args.n_test :], raw[: -args.n_test]
    norm = fit(train_raw, base.modalities)
    prepared = [prepare(r, norm) for r in train_raw]
    val, train = prepared[:2], prepared[2:]
    test = [prepare(r, norm) for r in test_raw]
    rows = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    for name in args.designs.split(","):
        config = dataclasses.replace(base, network=DESIGNS[name])
        t0 = time.perf_counter()
        result = train_on_subjects(train, val, norm, config)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        matches = match_predictions(result.net, test, config, result.card.post)
        infer_s = (time.perf_counter() - t0) / len(test)
        metrics = compute_metrics(matches, n_bootstrap=0)
        rows[name] = {
            "channels": list(config.network.channels),
            "parameters_M": round(sum(q.numel() for q in result.net.parameters()) / 1e6, 2),
            "gflops_per_patch": round(
                patch_gflops(config.network, len(norm.channels), config.patch_size[0]), 1
            ),
            "iterations": len(result.losses),
            "train_s": round(train_s, 1),
            "predict_s_per_subject": round(infer_s, 1),
            "best_val_f1": result.card.training["best_validation_lesion_f1"],
            **{
                c: {
                    "sensitivity": round(m.sensitivity, 3),
                    "precision": round(m.precision, 3),
                    "f1": round(m.f1, 3),
                }
                for c, m in metrics.classes.items()
            },
        }
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n{len(train)} train, {len(val)} validation, {len(test)} held-out subjects")
    head = f"{'design':12} {'params':>7} {'GF/patch':>8} {'train s':>8} {'pred s':>7}"
    print(head + "  CMB s/p/F1        iron s/p/F1       calc s/p/F1       mean F1")
    for name, r in rows.items():
        f1s = [r[c]["f1"] for c in ("cmb", "iron", "calcification")]
        cells = "  ".join(
            f"{r[c]['sensitivity']:.2f}/{r[c]['precision']:.2f}/{r[c]['f1']:.2f}"
            for c in ("cmb", "iron", "calcification")
        )
        print(
            f"{name:12} {r['parameters_M']:>6}M {r['gflops_per_patch']:>8} "
            f"{r['train_s']:>8} {r['predict_s_per_subject']:>7}  {cells}   {np.nanmean(f1s):.3f}"
        )
    print("reproduce: " + " ".join(["python", *sys.argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
