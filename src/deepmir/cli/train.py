"""``deepmir train``: train the DEEPMIR network on an annotated BIDS dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape

from deepmir.cli.arguments import add_pooled_data, float_in, int_at_least


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "train", help="train the network on a BIDS dataset with derivatives/reference labels"
    )
    add_pooled_data(p, "BIDS folder with reference labels (e.g. from simulate)")
    p.add_argument("--out", required=True, type=Path, help="model folder to write")
    p.add_argument("--modalities", default="t2w,swi,qsm", help="subset of t2w,swi,qsm")
    p.add_argument("--iterations", type=int_at_least(1), default=2000)
    p.add_argument(
        "--time-budget",
        type=float_in(0.0, low_open=False),
        default=None,
        metavar="MINUTES",
        help="stop after this many minutes of training: the model (best checkpoint) and "
        "the resume state are written, --resume continues",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run whose state is in OUT/resume/ (same options; starts afresh "
        "when there is none)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int_at_least(1),
        default=250,
        metavar="N",
        help="write the resume state every N iterations",
    )
    p.add_argument(
        "--modality-dropout",
        default="",
        metavar="M=P,...",
        help="per training patch, replace modality M by zeros with probability P "
        "(e.g. t2w=0.5,qsm=0.3; never swi): the model then serves subjects without M",
    )
    p.add_argument(
        "--mask-jitter",
        type=float_in(0.0, 1.0, low_open=False, high_open=False),
        default=0.0,
        metavar="P",
        help="per training subject, with probability P replace the given brain mask by "
        "the one predict derives when a dataset has none: the model then works with either",
    )
    p.add_argument(
        "--lesion-sampling",
        choices=("voxel", "lesion"),
        default="voxel",
        help="how a lesion-centred patch is drawn: any voxel of the class (large lesions "
        "drawn in proportion to their size) or a lesion first, every lesion as likely "
        "(the smallest CMBs get as many patches as the largest)",
    )
    p.add_argument(
        "--lesion-size-floor",
        type=int_at_least(0),
        default=0,
        metavar="VOXELS",
        help="weight the cross-entropy of every lesion smaller than this many voxels up "
        "to that of a lesion of this size, so that 1-2 voxel CMBs are not drowned by "
        "large ones (default 0: off)",
    )
    p.add_argument(
        "--lesion-loss",
        type=float_in(0.0, low_open=False),
        default=0.0,
        metavar="WEIGHT",
        help="add a lesion-level term of this weight: every reference lesion in a batch "
        "is scored by its best class probability (-log, so a lesion the network "
        "dismisses weighs as much as a large one; default 0: off)",
    )
    p.add_argument(
        "--full-resolution-head",
        type=int_at_least(0),
        default=0,
        metavar="CHANNELS",
        help="add a full-resolution head of this many channels to the U-Net, whose "
        "first layer is strided: 1-voxel lesions are seen at full resolution (with 8, "
        "about 65%% more time per step on a CPU; default 0: none; with --init from a "
        "model without one, the head starts at zero)",
    )
    p.add_argument(
        "--patch", type=int_at_least(32), default=64, help="cubic patch size (multiple of 32)"
    )
    p.add_argument("--batch-size", type=int_at_least(1), default=2)
    p.add_argument("--val-every", type=int_at_least(1), default=200)
    p.add_argument("--val-fraction", type=float_in(0.0, 1.0, low_open=False), default=0.2)
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument(
        "--learning-rate", type=float_in(0.0), default=2e-3, help="peak of the one-cycle schedule"
    )
    p.add_argument(
        "--init",
        default=None,
        help="start from this model folder's weights (fine-tuning; 'default' = the shipped "
        "t2w-swi-qsm model)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="where the network trains: cpu (default, the tested path) or cuda[:N] "
        "(bf16, seeded but not bit-reproducible; recorded with the model)",
    )
    p.add_argument(
        "--workers",
        type=int_at_least(1),
        default=1,
        help="processes reading the --data folders, one folder each (default 1)",
    )
    p.add_argument(
        "--no-post-tuning",
        dest="tune_post",
        action="store_false",
        help="keep the default post-processing instead of grid-searching it on the "
        "validation subjects at the end (tune it on a separate cohort with deepmir tune)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from deepmir.io.atomic import OutputError, prepare_output_dir
    from deepmir.io.bids import dataset_problem, parse_modalities
    from deepmir.io.loader import SubjectDataError
    from deepmir.model.network import NetworkConfig
    from deepmir.training.resume import ResumeError
    from deepmir.training.train import TrainConfig, train_model

    console = Console()
    try:
        modalities = parse_modalities(args.modalities)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    network = NetworkConfig(full_resolution_channels=args.full_resolution_head)
    if args.patch % network.divisor:
        console.print(f"[red]error:[/red] --patch must be a multiple of {network.divisor}")
        return 2
    try:
        config = TrainConfig(
            modalities=modalities,
            network=network,
            patch_size=(args.patch,) * 3,
            batch_size=args.batch_size,
            iterations=args.iterations,
            init_from=_init_path(args.init),
            learning_rate=args.learning_rate,
            time_budget_s=None if args.time_budget is None else args.time_budget * 60,
            val_every=args.val_every,
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
            modality_dropout=parse_dropout(args.modality_dropout),
            mask_jitter=args.mask_jitter,
            lesion_sampling=args.lesion_sampling,
            lesion_size_floor=args.lesion_size_floor,
            lesion_loss_weight=args.lesion_loss,
            tune_post=args.tune_post,
        )
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    if args.device != "cpu":
        import torch

        try:
            device = torch.device(args.device)
        except RuntimeError:
            console.print(f"[red]error:[/red] --device: unknown device {args.device!r}")
            return 2
        if device.type == "cuda" and not torch.cuda.is_available():
            console.print("[red]error:[/red] --device cuda: no CUDA GPU is available here")
            return 2
    try:
        for folder in args.data:
            problem = dataset_problem(folder)
            if problem:
                raise SubjectDataError(folder, problem)
        prepare_output_dir(args.out)  # before hours of training, not after
        result = train_model(
            args.data,
            args.out,
            config,
            val_fraction=args.val_fraction,
            resume=args.resume,
            device=args.device,
            workers=args.workers,
        )
    except (SubjectDataError, OutputError, ResumeError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    console.print(f"model written to {args.out} (sha256 {result.card.weights_sha256[:12]}...)")
    if not result.complete:
        console.print(
            f"stopped by the time budget after {len(result.losses)} of {config.iterations} "
            f"iterations; continue with the same command and --resume"
        )
    if result.val_f1:
        best = max(result.val_f1, key=lambda t: t[1])
        console.print(f"best validation lesion F1 {best[1]:.3f} at iteration {best[0]}")
    return 0


def parse_dropout(text: str) -> dict[str, float]:
    """``t2w=0.5,qsm=0.3`` -> ``{"t2w": 0.5, "qsm": 0.3}`` (empty text: no dropout)."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip().lower()] = float(value)
        except ValueError:
            raise ValueError(
                f"--modality-dropout: expected MODALITY=PROBABILITY, got {item!r}"
            ) from None
    return out


def _init_path(init: str | None) -> str | None:
    if init != "default":
        return init
    from deepmir.inference.predict import shipped_model_dir

    return str(shipped_model_dir("t2w-swi-qsm"))
