"""``deepmir predict``: lesion maps, lesion tables and QC reports for a BIDS dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape

from deepmir.cli.arguments import float_in, int_at_least


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "predict",
        help="find CMBs, iron deposits and calcifications with a (shipped) model",
        description="Writes, per subject, desc-deepmir_dseg, lesions.tsv and a QC report "
        "(BIDS derivatives, on each input's own grid) plus an index.html of the run's "
        "subjects.",
    )
    p.add_argument("--data", required=True, type=Path, help="raw BIDS folder")
    p.add_argument("--out", required=True, type=Path, help="derivatives folder to write")
    add_predict_options(p)
    add_execution_options(p, default_workers=0)
    return p


def add_predict_options(p: argparse.ArgumentParser, regions: bool = False) -> None:
    """The options of ``deepmir predict`` that the BIDS-App form shares;
    ``regions``: whether lesion regions are on by default (the BIDS-App form,
    whose census counts CMBs per region; ``deepmir predict`` keeps its seconds
    per subject without a registration unless asked)."""
    p.add_argument(
        "--model",
        default="default",
        help="'default' (a shipped model per subject, chosen by its files) or a model folder "
        "(every subject)",
    )
    p.add_argument(
        "--participant-label",
        nargs="+",
        default=None,
        metavar="LABEL",
        help="only these subjects (with or without 'sub-')",
    )
    p.add_argument(
        "--session-id",
        nargs="+",
        default=None,
        metavar="LABEL",
        help="only these sessions (with or without 'ses-'); subjects without sessions are left out",
    )
    p.add_argument(
        "--bids-filter-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON (fMRIPrep's format): modality (t2w, swi, qsm, mask) -> entity filters, "
        'e.g. {"swi": {"acquisition": "swi", "run": 2}, "t2w": {"session": "1"}}',
    )
    p.add_argument(
        "--qsm-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="take the QSM from the *_Chimap.nii[.gz] files in this folder (any depth, "
        "e.g. QSMxT output) before the dataset's own",
    )
    p.add_argument(
        "--phase-sign",
        choices=["auto", "+1", "-1"],
        default="auto",
        help="raw GRE input (no SWI/QSM; both computed and written as desc-fromgre "
        "derivatives): the phase's sign convention; +1: paramagnetic sources (veins, CMBs) "
        "have positive phase; auto (default): decided from the data (dark-on-magnitude "
        "voxels must come out paramagnetic)",
    )
    p.add_argument("--save-probabilities", action="store_true", help="write label-*_probseg")
    p.add_argument(
        "--threshold",
        type=float_in(0.0, 1.0),
        default=None,
        help="lesion probability threshold (default: the model's)",
    )
    p.add_argument("--no-report", action="store_true", help="skip the HTML reports")
    p.add_argument(
        "--regions",
        action=argparse.BooleanOptionalAction,
        default=regions,
        help="register each subject with lesions to MNI152 (SimpleITK, about 5 s) and give "
        "each lesion its MARS region, structure and MNI coordinates in lesions.tsv; without "
        f"it they are n/a (default: {'on' if regions else 'off'})",
    )


def add_execution_options(p: argparse.ArgumentParser, default_workers: int | None) -> None:
    """Execution (Dask) and resume options."""
    workers = (
        "serial, in this process"
        if default_workers == 0
        else "one per 4 CPU cores; 0: serial, in this process"
    )
    p.add_argument(
        "--n-workers",
        type=int_at_least(0),
        default=default_workers,
        metavar="N",
        help=f"Dask worker processes on this machine, one subject at a time each (default: "
        f"{workers})",
    )
    p.add_argument(
        "--threads-per-worker",
        type=int_at_least(1),
        default=None,
        metavar="N",
        help="torch threads of each worker (default: the CPU cores shared among the local "
        "workers; 1 with --scheduler)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run on the Dask cluster of this scheduler (e.g. tcp://host:8786, a "
        "dask-jobqueue SLURMCluster's) instead of local workers",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="redo every subject (default: skip subjects whose outputs are current: same "
        "model, options, deepmir version and input files)",
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deepmir.inference.predict import predict_dataset
    from deepmir.io.loader import SubjectDataError
    from deepmir.model.checkpoint import ModelError

    console = Console()
    try:
        outcome = predict_dataset(
            args.data,
            args.out,
            model=args.model,
            participants=args.participant_label,
            sessions=args.session_id,
            filters=args.bids_filter_file,
            qsm_dir=args.qsm_dir,
            n_workers=args.n_workers,
            threads_per_worker=args.threads_per_worker,
            scheduler=args.scheduler,
            force=args.force,
            regions=args.regions,
            phase_sign=args.phase_sign,
            cohort_files=getattr(args, "cohort_files", True),
            threshold=args.threshold,
            save_probabilities=args.save_probabilities,
            report=not args.no_report,
            log=lambda m: console.print(m, highlight=False, markup=False, soft_wrap=True),
        )
    except (SubjectDataError, ModelError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    n_ok, n_bad = len(outcome.written), len(outcome.failed)
    skipped = f", {len(outcome.skipped)} skipped (current)" if outcome.skipped else ""
    console.print(
        f"{n_ok} subject(s) predicted, {n_bad} failed{skipped}; outputs in {args.out}",
        highlight=False,
    )
    if not getattr(args, "cohort_files", True):
        console.print("cohort census and index.html: the group level builds them", highlight=False)
    elif not args.no_report:
        index = args.out / "index.html"
        console.print(f"cohort report (this run's subjects): {index}", highlight=False)
    return 1 if n_bad or outcome.index_error else 0
