"""``deepmir simulate``: a physics-based phantom cohort in BIDS."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deepmir.cli.arguments import int_at_least
from deepmir.phantom.presets import PRESETS, SHIFTS


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "simulate",
        help="simulate a BIDS cohort of phantom subjects with reference annotations",
        description="Simulate T2w, SWI and QSM phantoms with CMBs, iron deposits, "
        "calcifications (labelled) and veins (unlabelled), following docs/physics.md.",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output BIDS folder (new or empty, or the cohort that --first-index extends)",
    )
    p.add_argument("--n", type=int_at_least(1), default=3, help="number of subjects (default 3)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="cohort seed (default 0)")
    p.add_argument(
        "--size",
        choices=["full", "small"],
        default="full",
        help="full: 1 mm 160x192x160; small: 2 mm 80x96x80 (tests)",
    )
    p.add_argument(
        "--first-index",
        type=int_at_least(0),
        default=0,
        help="index of the first subject (default 0); subject i of a seed is the same in "
        "any run, so further subjects of a cohort can be drawn into a new folder, or into "
        "the cohort's own folder when --first-index is where it ends (same --seed, "
        "--preset, --shift, --size)",
    )
    p.add_argument("--preview", action="store_true", help="write a preview PNG per subject")
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="randomized",
        help="randomized (default): domain randomization of field strength, echoes, voxel "
        "size, SWI and QSM processing, artifacts, anatomy and lesion sizes; narrow: the "
        "v0.1 phantom (3 T, 1 mm, TKD/Tikhonov; demo and tests)",
    )
    p.add_argument(
        "--shift",
        choices=["none", *SHIFTS],
        default="none",
        help="with --preset randomized: draw one factor from its held-out values "
        "(robustness benchmark); none: the training distribution",
    )
    p.add_argument(
        "--raw-gre",
        action="store_true",
        help="also write the raw GRE per echo (sub-*_echo-<n>_part-mag|phase_MEGRE.nii.gz "
        "with sidecars): wrapped phase in radians with the background field and a receive-"
        "phase offset; deepmir predict computes SWI and QSM from it when they are absent",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the dataset in a non-empty --out (only one written by deepmir "
        "simulate); without it a non-empty --out is refused",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from deepmir.phantom.simulate import (
        REFERENCE,
        SimulationConfig,
        prepare_folder,
        simulate_dataset,
    )

    console = Console()
    config = SimulationConfig(
        out=args.out,
        n_subjects=args.n,
        seed=args.seed,
        grid_size=args.size,
        preview=args.preview,
        first_index=args.first_index,
        preset=args.preset,
        shift=args.shift,
        overwrite=args.overwrite,
        raw_gre=args.raw_gre,
    )
    if args.shift != "none" and args.preset != "randomized":
        console.print("[red]error:[/red] --shift needs --preset randomized")
        return 2
    try:
        prepare_folder(config)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    counts = simulate_dataset(config)
    print_cohort(console, counts, args.out, REFERENCE, args.preview, args.raw_gre)
    return 0


def print_cohort(
    console: Console,
    counts: Any,
    out: Path,
    reference: Path,
    preview: bool,
    raw_gre: bool = False,
) -> None:
    table = Table(title=f"simulated cohort in {out}")
    for col in counts.columns:
        table.add_column(col, justify="right" if col != "participant_id" else "left")
    for _, row in counts.iterrows():
        table.add_row(*(str(v) for v in row.values))
    console.print(table)
    console.print(f"raw BIDS images: {out}/sub-*/anat/ (T2w, swi, Chimap, desc-brain_mask)")
    if raw_gre:
        console.print(f"raw GRE: {out}/sub-*/anat/*_echo-*_part-mag|phase_MEGRE.nii.gz")
    console.print(f"reference labels and lesion tables: {out / reference}/")
    if preview:
        console.print(f"previews: {out / reference}/sub-*/figures/*_desc-preview.png")
