"""Cohort execution: throughput with Dask workers, scheduling overhead, rerun cost.

Issue 13 goals: a rerun of a finished 100-subject cohort takes < 5 % of the
first run's time; Dask adds little per subject. Three measurements:

1. throughput (subjects per minute) of the shipped model on ``--n`` small
   (2 mm) phantoms: serially, and on a local Dask cluster of 1 worker (all the
   cores as torch threads) and of 2 workers (the cores split); the cluster's
   start-up is timed apart;
2. scheduling overhead per subject: ``--tasks`` dry-run tasks (the
   bookkeeping only) on a running 2-worker cluster;
3. rerun fraction: a 100-subject cohort of cheap subjects (the phantoms
   repeated under new names, symbolic links; a tiny network; no
   registration) predicted, then
   predicted again (every subject current: skipped): time of the second run /
   the first.

    .venv/bin/python benchmarks/bench_cohort.py            # make bench-cohort
    .venv/bin/python benchmarks/bench_cohort.py --n 4 --tasks 1000 --cohort 100

Writes benchmarks/results/cohort.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "cohort.json"


def _simulate(out: Path, n: int, seed: int) -> Path:
    from deepmir.phantom.simulate import SimulationConfig, simulate_dataset

    simulate_dataset(SimulationConfig(out=out, n_subjects=n, seed=seed, grid_size="small"))
    return out


def _throughput(data: Path, tmp: Path, n_workers: int, threads: int | None) -> dict[str, Any]:
    from deepmir.inference.predict import predict_dataset

    out = tmp / f"out-{n_workers}"
    start = time.perf_counter()
    outcome = predict_dataset(
        data,
        out,
        progress=False,
        log=lambda m: None,
        n_workers=n_workers,
        threads_per_worker=threads,
        report=False,
    )
    wall = time.perf_counter() - start
    n = len(outcome.written)
    assert not outcome.failed, outcome.failed
    records = [json.loads(p.read_text()) for p in out.glob("sub-*/anat/*_provenance.json")]
    registration = [r["Registration"]["Seconds"] for r in records if r.get("Registration")]
    return {
        "registration_s_per_subject": registration,
        "predict_s_per_subject": [r["Seconds"] for r in records],
        "workers": n_workers,
        "torch_threads_per_worker": threads,
        "subjects": n,
        "wall_s": round(wall, 2),
        "subjects_per_min": round(60 * n / wall, 2),
    }


def _cluster_overhead(data: Path, n_tasks: int) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    from deepmir.cohort.execute import SubjectTask, execute
    from deepmir.io.bids import find_subjects

    ref = find_subjects(data)[0]
    start = time.perf_counter()
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        startup = time.perf_counter() - start
        with Client(cluster) as client:  # workers up, deepmir imported
            client.run(importlib.import_module, "deepmir.cohort.execute")
        tasks = [
            SubjectTask(data, data / "unused", ref, "n/a", {}, dry_run=True) for _ in range(n_tasks)
        ]
        for i, task in enumerate(tasks):  # distinct keys: distinct subjects
            task.ref = type(ref)(f"{i:05d}")
        t0 = time.perf_counter()
        results = execute(tasks, scheduler=cluster.scheduler_address, progress=False)
        wall = time.perf_counter() - t0
    assert len(results) == n_tasks
    return {
        "cluster_start_s": round(startup, 2),
        "tasks": n_tasks,
        "wall_s": round(wall, 2),
        "overhead_per_task_ms": round(1000 * wall / n_tasks, 2),
    }


def _tiny_model(data: Path, out: Path) -> Path:
    from deepmir.model.checkpoint import save_model
    from deepmir.model.network import TinyNetworkConfig
    from deepmir.training.data import fit, prepare, read_annotated
    from deepmir.training.train import TrainConfig, train_on_subjects

    cfg = TrainConfig(
        network=TinyNetworkConfig(),
        patch_size=(32, 32, 32),
        batch_size=2,
        iterations=5,
        val_every=10_000,
        seed=3,
    )
    raw = read_annotated(data, cfg.modalities)
    norm = fit(raw, cfg.modalities)
    result = train_on_subjects([prepare(r, norm) for r in raw], [], norm, cfg, progress=False)
    save_model(out, result.net, result.card)
    return out


def _cohort_of(data: Path, dst: Path, n: int) -> Path:
    """``n`` subjects: the phantoms of ``data`` repeated under new names (links)."""
    from deepmir.io.bids import find_subjects

    refs = find_subjects(data)
    dst.mkdir(parents=True)
    shutil.copy(data / "dataset_description.json", dst)
    for i in range(n):
        src = refs[i % len(refs)]
        anat = dst / f"sub-{i:03d}" / "anat"
        anat.mkdir(parents=True)
        for f in src.anat_dir(data).iterdir():
            (anat / f.name.replace(f"sub-{src.subject}", f"sub-{i:03d}")).symlink_to(f)
    return dst


def _rerun(data: Path, tmp: Path, n: int) -> dict[str, Any]:
    from deepmir.inference.predict import predict_dataset

    model = _tiny_model(data, tmp / "tiny")
    cohort = _cohort_of(data, tmp / "cohort", n)
    out = tmp / "cohort-out"
    times = []
    for _ in range(2):
        start = time.perf_counter()
        outcome = predict_dataset(
            cohort, out, model=model, progress=False, log=lambda m: None, regions=False
        )
        times.append(time.perf_counter() - start)
        assert not outcome.failed
    assert len(outcome.skipped) == n and not outcome.written
    return {
        "subjects": n,
        "first_run_s": round(times[0], 2),
        "rerun_s": round(times[1], 2),
        "rerun_fraction": round(times[1] / times[0], 4),
        "goal": "< 0.05",
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3, help="phantoms for the throughput runs")
    p.add_argument("--tasks", type=int, default=1000, help="dry-run tasks (overhead)")
    p.add_argument("--cohort", type=int, default=100, help="subjects of the rerun cohort")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_cohort_"))
    try:
        data = _simulate(tmp / "bids", args.n, seed=4343)
        cores = len(os.sched_getaffinity(0))
        runs = [
            _throughput(data, tmp, 0, None),
            _throughput(data, tmp, 1, cores),
            _throughput(data, tmp, 2, max(1, cores // 2)),
        ]
        for r in runs:
            print(
                f"throughput, {r['workers']} worker(s) x {r['torch_threads_per_worker']} "
                f"torch threads: {r['subjects_per_min']} subjects/min ({r['wall_s']} s for "
                f"{r['subjects']}, cluster start-up included)"
            )
        overhead = _cluster_overhead(data, args.tasks)
        print(
            f"scheduling: {overhead['overhead_per_task_ms']} ms per task over "
            f"{overhead['tasks']} dry-run tasks (cluster start {overhead['cluster_start_s']} s)"
        )
        rerun = _rerun(data, tmp, args.cohort)
        print(
            f"rerun of a finished {rerun['subjects']}-subject cohort: {rerun['rerun_s']} s vs "
            f"{rerun['first_run_s']} s = {100 * rerun['rerun_fraction']:.1f} % (goal < 5 %)"
        )
        result = {
            "command": "make bench-cohort  (python benchmarks/bench_cohort.py "
            f"--n {args.n} --tasks {args.tasks} --cohort {args.cohort})",
            "machine": f"{platform.processor() or platform.machine()}, {cores} cores "
            "(shared with other work: figures are noisy)",
            "model": "shipped default (throughput); tiny network, 5 iterations (rerun)",
            "phantoms": f"{args.n} small (2 mm) phantoms, seed 4343",
            "throughput": runs,
            "scheduling": overhead,
            "rerun": rerun,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
