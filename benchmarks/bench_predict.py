"""Speed and memory of ``deepmir predict`` on 1 mm subjects (issue 5 goal: <= 30 s,
<= 4 GB peak per subject on 2 cores), with the model's FLOPs per subject.

    .venv/bin/python benchmarks/bench_predict.py            # simulates 2 subjects (seed 4242)
    .venv/bin/python benchmarks/bench_predict.py --data DIR # an existing BIDS folder
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from deepmir.inference.predict import choose_model, predict_subject, write_subject
from deepmir.inference.reporting import report_data
from deepmir.io.bids import find_subjects
from deepmir.report.html import subject_report


class Counting(torch.nn.Module):
    """Counts the patches the sliding window sends through the network."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.patches = 0
        self.seconds = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.patches += x.shape[0]
        t0 = time.perf_counter()
        out = self.net(x)
        self.seconds += time.perf_counter() - t0
        return out


def main() -> int:
    p = argparse.ArgumentParser(description="deepmir predict speed benchmark")
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--model", default="default")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    data = args.data
    if data is None:
        from deepmir.phantom.simulate import SimulationConfig, simulate_dataset

        data = tmp / "bids"
        simulate_dataset(SimulationConfig(out=data, n_subjects=args.n, seed=4242, preset="narrow"))
    refs = find_subjects(data)[: args.n]
    model = choose_model(args.model, data, refs)
    patch = tuple(model.card.patch_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.net(torch.zeros(1, len(model.card.normalization.channels), *patch))
    flops_per_patch = counter.get_total_flops()
    counting = Counting(model.net)
    model.net = counting
    print(f"model {model.name}; torch threads {torch.get_num_threads()}")
    columns = (
        "total s",
        "predict s",
        "report s",
        "report MB",
        "network s",
        "patches",
        "GFLOP",
        "GFLOP/s",
    )
    print(f"{'subject':10} " + " ".join(f"{c:>9}" for c in columns))
    for ref in refs:
        counting.patches, counting.seconds = 0, 0.0
        t0 = time.perf_counter()
        prediction = predict_subject(data, ref, model, model.card.post)
        t1 = time.perf_counter()
        html = subject_report(report_data(prediction, model.card, model.card.post))
        t2 = time.perf_counter()
        write_subject(tmp / "out", prediction, html, save_probabilities=False)
        total = time.perf_counter() - t0
        gflop = counting.patches * flops_per_patch / 1e9
        print(
            f"{ref.prefix:10} {total:9.1f} {t1 - t0:9.1f} {t2 - t1:9.2f} "
            f"{len(html.encode()) / 1e6:9.2f} {counting.seconds:9.1f} "
            f"{counting.patches:9d} {gflop:9.0f} {gflop / counting.seconds:9.1f}"
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:.0f} MB. predict s: load, reorient, crop, network, lesions;")
    print("total s adds the QC report (report s: building it; report MB: its size) and the")
    print("outputs; GFLOP/s: network FLOPs / network s")
    print("reproduce: " + " ".join(["python", *sys.argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
