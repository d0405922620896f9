"""Peak memory of ``deepmir predict`` on a 512 x 512 x 400 input (issue 11: <= 3 GB).

Builds the input from one simulated 1 mm phantom (seed 4242): each image is
upsampled 2x (nearest neighbour, so 0.5 mm voxels, as a high-resolution SWI)
and padded into a 512 x 512 x 400 grid: T2w, SWI and Chimap in float32 and the
brain mask, as the data contract has them. Then ``deepmir predict
--save-probabilities`` runs in a child process, which reports its own peak
resident memory (``VmHWM`` of ``/proc/self/status``: the predict process alone,
not this one, which built the input).

    .venv/bin/python benchmarks/bench_memory.py                 # make bench-memory
    .venv/bin/python benchmarks/bench_memory.py --workdir DIR   # keep (and reuse) the input

Predict resamples the 0.5 mm brain crop to the model's 1 mm working grid and
writes every output back on the 0.5 mm grid; the lesions do not matter here.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (512, 512, 400)
UPSAMPLE = 2


def build_input(workdir: Path) -> Path:
    """The 512 x 512 x 400 BIDS dataset (one subject), built once per workdir."""
    from deepmir.io.atomic import write_json, write_nifti
    from deepmir.io.bids import SubjectRef
    from deepmir.phantom.simulate import SimulationConfig, simulate_dataset

    data = workdir / "bids"
    ref = SubjectRef("01")
    if ref.mask_path(data).exists():
        return data
    phantom = workdir / "phantom"
    if not ref.mask_path(phantom).exists():
        shutil.rmtree(phantom, ignore_errors=True)
        simulate_dataset(
            SimulationConfig(out=phantom, n_subjects=1, seed=4242, preset="narrow"),
            progress=False,
        )
    write_json(data / "dataset_description.json", {"Name": "bench-memory", "BIDSVersion": "1.9.0"})
    for modality in ("t2w", "swi", "qsm", "mask"):
        source = (
            ref.mask_path(phantom) if modality == "mask" else ref.modality_path(phantom, modality)
        )
        img = nib.load(source)
        small = np.asarray(img.dataobj)
        big = small
        for axis in range(3):
            big = np.repeat(big, UPSAMPLE, axis=axis)
        offset = [(n - b) // 2 for n, b in zip(SHAPE, big.shape, strict=True)]
        volume = np.zeros(SHAPE, small.dtype)
        volume[tuple(slice(o, o + b) for o, b in zip(offset, big.shape, strict=True))] = big
        del big
        affine = img.affine @ np.diag([1 / UPSAMPLE] * 3 + [1.0])
        affine[:3, 3] -= affine[:3, :3] @ np.asarray(offset, float)
        target = ref.mask_path(data) if modality == "mask" else ref.modality_path(data, modality)
        write_nifti(target, volume, affine)
        del volume
    return data


def child(argv: list[str]) -> int:
    """Run deepmir, then print this process's peak resident memory."""
    from deepmir.cli import main

    code = main(argv)
    status = Path("/proc/self/status").read_text().splitlines()
    hwm_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(f"PEAK_RSS_KB {hwm_kb}")
    return code


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=None, help="keep the input here (reused)")
    p.add_argument("--model", default="default")
    p.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        return child(args.child)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_memory_"))
    t0 = time.perf_counter()
    data = build_input(workdir)
    shape = "x".join(map(str, SHAPE))
    print(f"input {shape} float32 x 3 + mask in {data} ({time.perf_counter() - t0:.0f} s)")
    out = workdir / "out"
    shutil.rmtree(out, ignore_errors=True)
    argv = ["predict", "--data", str(data), "--out", str(out), "--model", args.model]
    argv.append("--save-probabilities")
    command = [sys.executable, __file__, "--child", *argv]
    print("command: " + " ".join(command))
    t0 = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    peak = [line for line in run.stdout.splitlines() if line.startswith("PEAK_RSS_KB")]
    if run.returncode != 0 or not peak:
        print(run.stdout[-4000:], run.stderr[-4000:], sep="\n")
        print(f"predict failed with exit code {run.returncode}")
        return 1
    peak_gb = int(peak[0].split()[1]) * 1024 / 1e9
    print(f"deepmir predict: {seconds:.0f} s, peak RSS {peak_gb:.2f} GB (goal <= 3 GB)")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if peak_gb <= 3.0 else 1


if __name__ == "__main__":
    sys.exit(main())
