"""Speed of the working-grid resampling: deepmir's separable float32 linear
interpolation against scipy's 3D spline code (``affine_transform``, order 1)
on one volume of a 0.7 x 0.68 x 1 mm input (the in-plane voxels of the
randomized phantoms), to 1 mm and back; also their largest difference.

    .venv/bin/python benchmarks/bench_resample.py [--shape 210 281 157] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from scipy import ndimage

from deepmir.inference.resample import Resampler


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[210, 281, 157])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    shape = tuple(args.shape)
    volume = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    grid = Resampler.of(np.diag([0.7, 0.68, 1.0, 1.0]), shape)

    def best(f: object) -> tuple[float, np.ndarray]:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = f()  # type: ignore[operator]
            times.append(time.perf_counter() - t0)
        return min(times), out

    ours, forward = best(lambda: grid.forward(volume, 1))
    theirs, reference = best(
        lambda: ndimage.affine_transform(
            volume, grid.zoom, offset=grid.shift, output_shape=grid.target_shape,
            output=np.float32, order=1, mode="nearest",
        )
    )  # fmt: skip
    back, _ = best(lambda: grid.backward(forward, 1))
    print(f"volume {shape} -> working grid {grid.target_shape}, best of {args.repeats}")
    print(f"deepmir forward {ours:.3f} s, scipy affine_transform {theirs:.3f} s "
          f"({theirs / ours:.1f}x); deepmir backward {back:.3f} s")  # fmt: skip
    print(f"largest difference {float(np.abs(forward - reference).max()):.2e}")
    print("reproduce: " + " ".join(["python", *sys.argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
