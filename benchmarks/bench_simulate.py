"""Benchmark: seconds per simulated subject and peak memory.

Run: ``make bench-simulate`` or
``.venv/bin/python benchmarks/bench_simulate.py --n 3 --size full``.
Goal (issue 2): one 1 mm subject (160x192x160) in <= 20 s on 2 cores.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--size", choices=["full", "small"], default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", choices=["narrow", "randomized"], default="narrow")
    parser.add_argument("--shift", default="none", help="with --preset randomized")
    args = parser.parse_args()

    import torch

    from deepmir.phantom.anatomy import load_template
    from deepmir.phantom.render import render_subject
    from deepmir.phantom.simulate import draw_with_anatomy, write_subject

    t0 = time.perf_counter()
    load_template()
    load_s = time.perf_counter() - t0
    per_subject = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.n):
            t = time.perf_counter()
            params, anatomy = draw_with_anatomy(
                args.seed, index, args.size, preset=args.preset, shift=args.shift
            )
            images = render_subject(params, anatomy)
            write_subject(Path(tmp), params, images)
            per_subject.append(time.perf_counter() - t)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shape = images.t2w.shape
    print(
        f"deepmir simulate benchmark: size={args.size} preset={args.preset} shift={args.shift} "
        f"grid={shape} "
        f"threads={torch.get_num_threads()}"
    )
    print(f"template load (once per process): {load_s:.1f} s")
    for i, s in enumerate(per_subject):
        print(f"  subject {i + 1}: {s:.1f} s (draw + render + write)")
    mean = sum(per_subject) / len(per_subject)
    print(f"mean seconds per subject: {mean:.1f} s   goal <= 20 s (full)")
    print(f"peak memory (max RSS): {peak_mb:.0f} MB")
    print(
        "reproduce: .venv/bin/python benchmarks/bench_simulate.py "
        f"--n {args.n} --size {args.size} --seed {args.seed} --preset {args.preset} "
        f"--shift {args.shift}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
