"""One task per subject, run serially or on Dask.

A :class:`SubjectTask` holds everything one subject needs (picklable: it goes
to Dask workers); :func:`run_task` does the subject and never raises: a
failure is a :class:`SubjectResult` with its message, and the subject's
outputs of an earlier run are removed. Models are loaded once per process
(:func:`resolve_model`), so a Dask worker loads each model once whatever the
number of its subjects.

:func:`execute` runs the tasks: serially in this process (``n_workers=0``), on
a ``distributed.LocalCluster`` of ``n_workers`` processes (each runs one
subject at a time with ``threads_per_worker`` torch threads), or on an
existing Dask scheduler (``scheduler``: its address, e.g. a dask-jobqueue
``SLURMCluster``'s). A worker that dies (killed, out of memory) fails its
subject alone.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from deepmir.cohort import provenance
from deepmir.io.bids import SubjectRef


@dataclass(frozen=True)
class ModelSpec:
    """How a worker finds a model: a shipped one by name, or a folder."""

    kind: str  # "shipped" or "folder"
    location: str  # the shipped name, or the folder's path
    name: str  # as predict names it (LoadedModel.name)
    #: the weights' sha256 (part of the cache key: a folder retrained in place,
    #: or another model under a shipped name, is loaded afresh)
    weights_sha256: str = ""


@dataclass
class SubjectTask:
    root: Path
    out: Path
    ref: SubjectRef
    #: the model, or why none serves the subject
    model: ModelSpec | str
    #: the identity part of its provenance record (:func:`provenance.expected_record`)
    expected: dict[str, Any]
    threshold: float | None = None
    save_probabilities: bool = False
    report: bool = True
    #: MARS regions and MNI coordinates of the lesions (a registration to MNI152)
    regions: bool = False
    #: raw GRE input: the phase's sign convention (auto, +1, -1; :mod:`deepmir.qsm.gre`)
    phase_sign: str = "auto"
    #: the command line that started the run (shown in the report)
    command: str = ""
    #: torch threads in the worker (None: leave the process's setting)
    torch_threads: int | None = None
    #: do nothing but the bookkeeping (the scheduling benchmark)
    dry_run: bool = False


@dataclass
class SubjectResult:
    name: str
    status: str  # "done", "skipped" or "failed"
    model: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    message: str | None = None
    outputs: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    worker: str = ""


_MODELS: dict[ModelSpec, Any] = {}


def resolve_model(spec: ModelSpec) -> Any:
    """The :class:`deepmir.inference.predict.LoadedModel` of ``spec``, loaded once
    per process."""
    from deepmir.inference.predict import LoadedModel, shipped_model
    from deepmir.model.checkpoint import load_model

    loaded = _MODELS.get(spec)
    if loaded is None:
        if spec.kind == "shipped":
            loaded = shipped_model(spec.location)
        else:
            net, card = load_model(spec.location)
            loaded = LoadedModel(net, card, spec.name)
        _MODELS[spec] = loaded
    return loaded


def remember_model(spec: ModelSpec, loaded: Any) -> None:
    """Reuse the model this process has just loaded (the serial path)."""
    _MODELS[spec] = loaded


def run_task(task: SubjectTask) -> SubjectResult:
    """One subject: predict, write its outputs, then its provenance record.
    Never raises for a subject's problem: returns a failed result instead."""

    if task.dry_run:
        return SubjectResult(str(task.ref), "skipped", worker=f"pid {os.getpid()}")
    from deepmir.inference.fromgre import derive_from_gre, gre_output_paths, needs_gre
    from deepmir.inference.predict import discard_outputs, predict_subject, write_subject
    from deepmir.io.atomic import OutputError, os_reason
    from deepmir.io.loader import SubjectDataError
    from deepmir.labels import LESION_CLASSES
    from deepmir.model.checkpoint import ModelError

    start = time.perf_counter()
    name = str(task.ref)
    result = SubjectResult(name, "failed", worker=f"pid {os.getpid()}")
    if task.torch_threads:
        import torch

        torch.set_num_threads(task.torch_threads)
    root, out, ref = task.root, task.out, task.ref
    try:
        provenance.remove_record(out, ref)  # a run killed from here on leaves no record
        if isinstance(task.model, str):
            raise SubjectDataError(ref.anat_dir(root), task.model)
        loaded = resolve_model(task.model)
        result.model = loaded.name
        post = loaded.card.post
        if task.threshold is not None:
            post = dataclasses.replace(post, threshold=task.threshold)
        from_gre: list[Path] = []
        notes: list[str] = []
        if needs_gre(root, ref):  # SWI / QSM computed from raw GRE, written first
            ref, from_gre, notes = derive_from_gre(root, out, ref, task.phase_sign)
        prediction = predict_subject(root, ref, loaded, post)
        result.warnings = [*notes, *prediction.warnings]
        registration = _regions(task, prediction, result.warnings) if task.regions else None
        html = None
        if task.report:
            from deepmir.inference.reporting import report_data
            from deepmir.report.html import subject_report

            html = subject_report(report_data(prediction, loaded.card, post, task.command))
        result.outputs = [*from_gre, *write_subject(out, prediction, html, task.save_probabilities)]
        if not from_gre:  # derivatives of an earlier run on raw GRE are not this run's
            for old_path in gre_output_paths(out, ref).values():
                old_path.unlink(missing_ok=True)
        result.counts = {
            label_name: int((prediction.lesions.labels == label).sum())
            for label, label_name in LESION_CLASSES.items()
        }
        del prediction
        result.seconds = time.perf_counter() - start
        record = provenance.write_record(
            out,
            ref,
            task.expected,
            result.outputs,
            {
                "Subject": name,
                "ModelRecord": loaded.name,
                "Counts": result.counts,
                "Warnings": result.warnings,
                "Seconds": round(result.seconds, 2),
                "Registration": registration,
                "Finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        result.outputs.append(record)
        result.status = "done"
    except (SubjectDataError, ModelError, OutputError) as exc:
        result.message = str(exc) + _discard(out, ref, discard_outputs)
    except OSError as exc:  # a write outside write_subject, say
        where = exc.filename or out
        result.message = f"{where}: {os_reason(exc)}" + _discard(out, ref, discard_outputs)
    except MemoryError as exc:
        result.message = f"{ref.anat_dir(root)}: not enough memory for this subject ({exc})"
        result.message += _discard(out, ref, discard_outputs)
    except Exception as exc:  # a bug must not stop the cohort: report it for this subject
        result.message = (
            f"{ref.anat_dir(root)}: unexpected error ({type(exc).__name__}: {exc}); "
            "please report it" + _discard(out, ref, discard_outputs)
        )
    result.seconds = time.perf_counter() - start
    return result


def _regions(task: SubjectTask, prediction: Any, warnings: list[str]) -> dict[str, Any] | None:
    """Register to MNI152 and fill the lesion table's regions (a subject without
    lesions is not registered). A failed registration is a warning, not a
    failure: the regions stay n/a."""
    if not prediction.table:
        return None
    import torch

    from deepmir.cohort import regions

    try:
        image = regions.registration_image(prediction.subject.images)
        registration = regions.register_to_mni(
            image,
            prediction.brain_mask,
            prediction.subject.crop_affine,
            task.torch_threads or torch.get_num_threads(),
        )
    except Exception as exc:  # ITK's errors are RuntimeErrors with long messages
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        warnings.append(
            f"{task.ref.anat_dir(task.root)}: registration to MNI152 failed "
            f"({first}); lesion regions are n/a"
        )
        return None
    regions.annotate(prediction.table, registration)
    return registration.to_dict()


def _discard(out: Path, ref: SubjectRef, discard: Callable[[Path, SubjectRef], str]) -> str:
    provenance.remove_record(out, ref)
    return discard(out, ref)


def default_workers() -> tuple[int, int]:
    """(workers, torch threads each) for this machine: one worker per 4 cores
    (a subject at full resolution needs a few GB), at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    workers = max(1, cores // 4)
    return workers, max(1, cores // workers)


def execute(
    tasks: list[SubjectTask],
    n_workers: int = 0,
    threads_per_worker: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    on_result: Callable[[SubjectResult], None] | None = None,
) -> list[SubjectResult]:
    """Run ``tasks``; results in completion order (``on_result`` gets each as it
    comes). ``n_workers=0`` and no ``scheduler``: serially in this process."""
    results: list[SubjectResult] = []
    bar = tqdm(total=len(tasks), desc="predict", unit="subject", disable=None if progress else True)

    def done(result: SubjectResult) -> None:
        results.append(result)
        bar.update(1)
        if on_result is not None:
            with tqdm.external_write_mode():
                on_result(result)

    try:
        if not tasks:
            return results
        if n_workers <= 0 and scheduler is None:
            for task in tasks:
                done(run_task(task))
            return results
        _execute_dask(tasks, n_workers, threads_per_worker, scheduler, done)
    finally:
        bar.close()
    return results


def _execute_dask(
    tasks: list[SubjectTask],
    n_workers: int,
    threads_per_worker: int | None,
    scheduler: str | None,
    done: Callable[[SubjectResult], None],
) -> None:
    from distributed import Client, LocalCluster, as_completed

    threads = threads_per_worker or (1 if scheduler else default_workers()[1])
    for task in tasks:
        task.torch_threads = threads
    cluster = None
    if scheduler is None:
        # one subject at a time per worker process; its torch uses `threads` threads
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=0,
        )
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = client.map(run_task, tasks, pure=False, key=[f"deepmir-{t.ref}" for t in tasks])
        of = {f.key: t for f, t in zip(futures, tasks, strict=True)}
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as exc:  # the worker died (killed, out of memory)
                task = of[future.key]
                result = SubjectResult(
                    str(task.ref),
                    "failed",
                    message=f"{task.ref.anat_dir(task.root)}: the Dask worker failed on this "
                    f"subject ({type(exc).__name__}: {exc})",
                )
                from deepmir.inference.predict import discard_outputs

                result.message = (result.message or "") + _discard(
                    task.out, task.ref, discard_outputs
                )
            done(result)
            future.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def skipped_result(out: Path, ref: SubjectRef) -> SubjectResult:
    """A subject whose outputs are current: its counts and warnings from its record."""
    record = provenance.read_record(provenance.provenance_path(out, ref)) or {}
    anat = ref.anat_dir(out)
    return SubjectResult(
        str(ref),
        "skipped",
        model=record.get("ModelRecord"),
        counts=dict(record.get("Counts", {})),
        warnings=list(record.get("Warnings", [])),
        outputs=[anat / n for n in record.get("Outputs", [])],
    )


def pending(
    tasks: Iterable[SubjectTask], force: bool
) -> tuple[list[SubjectTask], list[SubjectResult]]:
    """The tasks to run and the results of the subjects skipped (current outputs)."""
    todo: list[SubjectTask] = []
    skipped: list[SubjectResult] = []
    for task in tasks:
        if not force and provenance.is_current(task.out, task.ref, task.expected):
            skipped.append(skipped_result(task.out, task.ref))
        else:
            todo.append(task)
    return todo, skipped
