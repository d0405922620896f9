"""The BIDS-App form: ``deepmir BIDS_DIR OUTPUT_DIR participant|group``.

The fMRIPrep / MRIQC convention: ``participant`` predicts the (selected)
subjects on Dask (a local cluster sized to the machine, or ``--scheduler``),
skipping those whose outputs are current; it writes their outputs, dseg.tsv
and (when absent) a placeholder dataset description, no cohort file, and
reads no other subject's (array jobs neither race nor rescan the folder);
``group`` builds the cohort census, index and dataset description from
what is on disk in OUTPUT_DIR (and any ``--derivatives`` folders), so array
jobs of one subject each compose.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from deepmir.cli.arguments import EXIT_CODES, HelpFormatter
from deepmir.cli.predict import add_execution_options, add_predict_options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepmir",
        usage="deepmir BIDS_DIR OUTPUT_DIR {participant,group} [options]",
        description="BIDS-App form. participant: predict each subject (Dask; finished subjects "
        "are skipped). group: cohort census (group_census.tsv), index.html and "
        "dataset_description.json from the outputs on disk.",
        epilog=EXIT_CODES,
        formatter_class=HelpFormatter,
    )
    p.add_argument("bids_dir", type=Path, metavar="BIDS_DIR", help="raw BIDS folder")
    p.add_argument("output_dir", type=Path, metavar="OUTPUT_DIR", help="derivatives folder")
    p.add_argument("analysis_level", choices=["participant", "group"], help="what to run")
    add_predict_options(p, regions=True)
    add_execution_options(p, default_workers=None)
    p.add_argument(
        "--derivatives",
        nargs="+",
        type=Path,
        default=[],
        metavar="DIR",
        help="group: more output folders whose subjects join the census (e.g. other runs)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deepmir.io.atomic import OutputError
    from deepmir.io.loader import SubjectDataError
    from deepmir.model.checkpoint import ModelError

    console = Console()
    try:
        if args.analysis_level == "participant":
            return _participant(args, console)
        return _group(args, console)
    except (SubjectDataError, ModelError, OutputError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2


def _participant(args: argparse.Namespace, console: object) -> int:
    from deepmir.cli.predict import run as predict_run
    from deepmir.cohort.execute import default_workers

    if args.n_workers is None:
        args.n_workers = default_workers()[0]
    args.data, args.out = args.bids_dir, args.output_dir
    args.cohort_files = False  # each job writes its own subjects only; group builds the rest
    return predict_run(args)


def _group(args: argparse.Namespace, console: object) -> int:
    from rich.console import Console

    from deepmir.cohort.group import run_group, source_datasets
    from deepmir.inference.predict import select_subjects
    from deepmir.io.atomic import OutputError, prepare_output_dir

    assert isinstance(console, Console)
    refs = select_subjects(
        args.bids_dir,
        args.participant_label,
        args.session_id,
        args.bids_filter_file,
        args.qsm_dir,
    )
    for folder in [args.output_dir, *args.derivatives]:
        if not Path(folder).is_dir():
            raise OutputError(folder, "no such folder of deepmir outputs (run participant first)")
    prepare_output_dir(args.output_dir)
    outcome = run_group(
        source_datasets(args.bids_dir, args.qsm_dir),
        [args.output_dir, *args.derivatives],
        args.output_dir,
        expected=[str(r) for r in refs],
    )
    console.print(
        f"group: {outcome.n_subjects} subject(s) with outputs, {len(outcome.missing)} without; "
        f"census {outcome.census}, cohort page {outcome.index}",
        highlight=False,
        soft_wrap=True,
    )
    for name, folders in outcome.duplicates.items():
        console.print(
            f"WARNING: {name} has outputs in {', '.join(map(str, folders))}; the first is used",
            highlight=False,
            soft_wrap=True,
        )
    if outcome.missing:
        console.print(
            f"without outputs (not run yet, or failed): {', '.join(outcome.missing)}",
            highlight=False,
            soft_wrap=True,
        )
    return 1 if outcome.missing else 0
