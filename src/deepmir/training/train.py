"""``deepmir train``: the DEEPMIR network on an annotated BIDS dataset (CPU,
the tested path; ``--device cuda`` trains on a GPU, in bf16, seeded but not
bit-reproducible).

Patches oversample every lesion class and SWI mimics; the loss is MONAI's
Dice (lesion classes, batch Dice: robust to a class that is 1e-5 of the
voxels) + cross-entropy over all classes including background (lesion
classes weighted 10x), as in nnU-Net, optionally with small lesions
weighted up (:mod:`deepmir.training.loss`).
(A focal term restricted to the lesion classes, tried first, let the
background logit run away: calcification probabilities of 1e-9 that no
gradient could lift.) The best
checkpoint is chosen on validation **lesion** F1, computed with
:mod:`deepmir.evaluation` (not voxel Dice).

Patches come from a provider (:mod:`deepmir.training.provider`; default: the
prepared subjects); optional modality dropout zeroes whole modalities per
patch. A run into a folder writes a resume state (:mod:`deepmir.training.resume`)
so that one recipe can run as several shorter runs with the same result.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import multiprocessing
import os
import platform
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from deepmir.evaluation import compute_metrics, match_subject
from deepmir.inference.lesions import (
    N_LESION_CLASSES,
    Candidates,
    PostProcessing,
    candidate_lesions,
    lesions_from_probabilities,
    select_lesions,
    voxel_spacing,
)
from deepmir.inference.sliding import predict_probabilities
from deepmir.labels import LABELS
from deepmir.model.checkpoint import ModelCard, save_model
from deepmir.model.network import NetworkConfig, build_network, unet_of
from deepmir.model.preprocess import Normalization
from deepmir.training.data import (
    CROP_MARGIN,
    RawSubject,
    TrainingSubject,
    as_folders,
    fit,
    folder_record,
    iter_annotated,
    iter_pooled,
    prepare,
)
from deepmir.training.loss import segmentation_loss
from deepmir.training.provider import PatchProvider, SubjectPatches, drop_modalities
from deepmir.training.resume import (
    RESUME_DIR,
    ResumeError,
    ResumeState,
    clear_resume,
    config_differences,
    load_resume,
    read_resume_json,
    resume_exists,
    save_resume,
)
from deepmir.training.sampling import LESION_SAMPLING


@dataclass(frozen=True)
class TrainConfig:
    """The one config object of ``deepmir train`` (saved in the model's config.json)."""

    modalities: tuple[str, ...] = ("t2w", "swi", "qsm")
    network: NetworkConfig = field(default_factory=NetworkConfig)
    patch_size: tuple[int, int, int] = (64, 64, 64)
    batch_size: int = 2
    iterations: int = 2000
    time_budget_s: float | None = None
    learning_rate: float = 2e-3
    val_every: int = 200
    seed: int = 0
    post: PostProcessing = field(default_factory=PostProcessing)
    #: lesion classes the network learns; the others count as background
    #: (``(1,)``: the paper's single-class CMB model; default multi-class)
    target_labels: tuple[int, ...] = (1, 2, 3)
    #: cross-entropy weight of each lesion class (background 1)
    lesion_ce_weight: float = 10.0
    #: choose threshold and minimum lesion size on the validation subjects after training
    tune_post: bool = True
    #: write the resume state every this many iterations (when training into a folder)
    checkpoint_every: int = 250
    #: modality -> probability that a training patch has it replaced by zeros
    #: (all its channels), so that one model serves subjects without it; never SWI
    modality_dropout: dict[str, float] = field(default_factory=dict)
    #: probability per training subject that its brain mask is replaced by the
    #: one predict derives without a mask (:func:`deepmir.training.data.iter_annotated`)
    mask_jitter: float = 0.0
    #: how a lesion patch centre is drawn: ``voxel`` (in proportion to lesion
    #: size) or ``lesion`` (every lesion as likely; :mod:`deepmir.training.sampling`)
    lesion_sampling: str = "voxel"
    #: > 1: the cross-entropy of a lesion smaller than this many voxels is weighted
    #: up to that of a lesion of this size (:mod:`deepmir.training.loss`); 0: off
    lesion_size_floor: int = 0
    #: > 0: weight of the lesion-level detection term (every reference lesion in the
    #: batch scored by its best class probability; :mod:`deepmir.training.loss`); 0: off
    lesion_loss_weight: float = 0.0
    #: start from the weights of this model folder (same architecture and input
    #: channels; fine-tuning), None: random initialization
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        if not 0.0 <= self.mask_jitter <= 1.0:
            raise ValueError("mask jitter: the probability must be in [0, 1]")
        if self.lesion_size_floor < 0:
            raise ValueError("lesion size floor: need 0 (off) or a number of voxels")
        if not self.lesion_loss_weight >= 0.0:
            raise ValueError("lesion loss weight: need 0 (off) or a positive weight")
        if self.lesion_sampling not in LESION_SAMPLING:
            raise ValueError(
                f"lesion sampling must be one of {', '.join(LESION_SAMPLING)}, "
                f"got {self.lesion_sampling!r}"
            )
        for modality, p in self.modality_dropout.items():
            if modality == "swi":
                raise ValueError("modality dropout: SWI is never dropped")
            if modality not in self.modalities:
                raise ValueError(
                    f"modality dropout: {modality} is not one of the modalities "
                    f"({', '.join(self.modalities)})"
                )
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"modality dropout: probability of {modality} must be in [0, 1]")

    @property
    def optional_modalities(self) -> tuple[str, ...]:
        """Modalities the model learns to do without (dropped with probability > 0)."""
        return tuple(m for m in self.modalities if self.modality_dropout.get(m, 0.0) > 0.0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["network"] = self.network.to_dict()
        d["post"] = self.post.to_dict()
        d["modality_dropout"] = dict(self.modality_dropout)
        return d

    def targets(self, dseg: np.ndarray) -> np.ndarray:
        """Reference labels restricted to the learned classes."""
        if self.target_labels == (1, 2, 3):
            return dseg
        return np.where(np.isin(dseg, self.target_labels), dseg, 0).astype(dseg.dtype)


@dataclass
class TrainResult:
    net: torch.nn.Module
    card: ModelCard
    losses: list[float]
    val_f1: list[tuple[int, float]]
    #: False when the time budget stopped training before ``config.iterations``
    complete: bool = True


def set_deterministic(seed: int) -> None:
    """Seed everything and ask PyTorch for deterministic CPU kernels."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _match(s: TrainingSubject, prob: np.ndarray, config: TrainConfig, post: PostProcessing) -> Any:
    lesions = lesions_from_probabilities(prob, post, voxel_spacing(s.affine), s.brain)
    return _match_dseg(s, lesions.dseg, config)


def _match_dseg(s: TrainingSubject, pred: np.ndarray, config: TrainConfig) -> Any:
    """Lesion matching against the reference restricted to the learned classes."""
    target = config.targets(s.dseg)
    instances = np.where(target > 0, s.instances, 0) if s.instances.any() else None
    return match_subject(target, instances, pred, s.affine)


def match_predictions(
    net: torch.nn.Module,
    subjects: list[TrainingSubject],
    config: TrainConfig,
    post: PostProcessing | None = None,
) -> dict[str, Any]:
    """Predict prepared subjects and match them to their reference (lesion level)."""
    return {
        s.name: _match(
            s, predict_probabilities(net, s.image, config.patch_size), config, post or config.post
        )
        for s in subjects
    }


def mean_f1(matches: dict[str, Any]) -> float:
    """Mean over classes of pooled lesion F1 (classes present in reference or
    prediction), from :func:`deepmir.evaluation.compute_metrics`."""
    result = compute_metrics(matches, n_bootstrap=0)
    f1s = [c.f1 for c in result.classes.values() if c.n_reference + c.n_predicted > 0]
    f1s = [f for f in f1s if not math.isnan(f)]
    return float(np.mean(f1s)) if f1s else 0.0


def validation_f1(
    net: torch.nn.Module, subjects: list[TrainingSubject], config: TrainConfig
) -> float:
    """Validation lesion F1 with the configured post-processing."""
    return mean_f1(match_predictions(net, subjects, config))


THRESHOLDS = (0.3, 0.5, 0.7)
MIN_SIZES = (1, 2, 3, 4, 6, 10)
MIN_PROBABILITIES = (0.0, 0.6, 0.8)
MAX_ELONGATIONS = (np.inf, 3.0, 2.5, 2.0)


def tune_post_processing(
    net: torch.nn.Module,
    subjects: list[TrainingSubject],
    config: TrainConfig,
    progress: bool = False,
) -> tuple[PostProcessing, float]:
    """Foreground threshold, then per class the minimum lesion size and mean
    probability, then per class the maximum elongation, that maximize
    validation lesion F1 (grid search on the validation subjects'
    probabilities, computed once; one class at a time). ``progress``: bars
    (on a terminal) for the predictions and the thresholds searched."""
    bar = not progress or None
    probs = [
        predict_probabilities(net, s.image, config.patch_size)
        for s in tqdm(subjects, desc="tune: predict", unit="subject", disable=bar)
    ]
    best, best_f1 = config.post, -1.0
    for threshold in tqdm(THRESHOLDS, desc="tune: search", unit="threshold", disable=bar):
        pairs = zip(probs, subjects, strict=True)
        depth = max(best.min_depth_mm)
        candidates = [
            candidate_lesions(p, threshold, voxel_spacing(s.affine), s.brain, depth)
            for p, s in pairs
        ]

        def score(post: PostProcessing, cands: list[Candidates] = candidates) -> float:
            return mean_f1(
                {
                    s.name: _match_dseg(s, select_lesions(c, post).dseg, config)
                    for s, c in zip(subjects, cands, strict=True)
                }
            )

        post = dataclasses.replace(best, threshold=threshold)
        f1 = score(post)
        for c in range(N_LESION_CLASSES):
            if c + 1 not in config.target_labels:
                continue
            for size in MIN_SIZES:
                for prob in MIN_PROBABILITIES:
                    trial = dataclasses.replace(
                        post,
                        min_size_voxels=_set(post.min_size_voxels, c, size),
                        min_probability=_set(post.min_probability, c, prob),
                    )
                    trial_f1 = score(trial)
                    if trial_f1 > f1 + 1e-9:
                        post, f1 = trial, trial_f1
        for c in range(N_LESION_CLASSES):
            if c + 1 not in config.target_labels:
                continue
            for limit in MAX_ELONGATIONS:
                limits = _set(post.max_elongation, c, limit)
                trial = dataclasses.replace(post, max_elongation=limits)
                trial_f1 = score(trial)
                if trial_f1 > f1 + 1e-9:
                    post, f1 = trial, trial_f1
        if f1 > best_f1 + 1e-9:
            best, best_f1 = post, f1
        # one threshold's components at a time (a pooled cohort of 96 is near 20 GB)
        del candidates, score
    return best, best_f1


def train_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
) -> torch.Tensor:
    """One optimizer step on a batch already on the network's device: bf16
    autocast on a GPU (the losses run in fp32 on its logits), fp32 on the
    CPU. Returns the loss (also what scripts/train-v0.9.sh's speed probe times)."""
    optimizer.zero_grad()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
        logits = net(x)
    loss = loss_fn(logits.float(), y)
    loss.backward()
    optimizer.step()
    return loss


def _set(values: tuple[Any, ...], index: int, value: Any) -> tuple[Any, ...]:
    out = list(values)
    out[index] = value
    return tuple(out)


def train_on_subjects(
    train: list[TrainingSubject],
    val: list[TrainingSubject],
    norm: Normalization,
    config: TrainConfig,
    progress: bool = True,
    provider: PatchProvider | None = None,
    resume_dir: str | Path | None = None,
    resume: bool = False,
    device: str = "cpu",
) -> TrainResult:
    """Train from prepared subjects (used by ``train`` and ``cv``).

    ``device``: where the network trains (``cpu``, the tested path, or
    ``cuda``); patches are drawn on the CPU either way, the model is returned
    on the CPU, and the device is recorded with it. Not part of the recipe: a
    run may resume on another device (GPU kernels are not bit-identical to
    CPU ones).

    ``provider``: where the training patches come from (default: patches of
    ``train``, :class:`~deepmir.training.provider.SubjectPatches`).
    ``resume_dir``: write the resume state there every
    ``config.checkpoint_every`` iterations and when the run ends (complete or
    out of time); with ``resume``, continue from the state found there (a
    missing state starts afresh; a state of another config is refused).
    """
    if config.iterations < 1:
        raise ValueError(f"training needs at least 1 iteration, got {config.iterations}")
    set_deterministic(config.seed)
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        # seeded, but GPU kernels are chosen for speed, not bit-reproducibility
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
    rng = np.random.default_rng(config.seed)
    net = build_network(config.network, in_channels=len(norm.channels))
    if config.init_from is not None:
        from deepmir.model.checkpoint import ModelError, load_model

        start_net, start_card = load_model(config.init_from)
        if start_card.normalization.channels != norm.channels:
            raise ModelError(
                f"{config.init_from}: its input channels {start_card.normalization.channels} "
                f"are not {norm.channels}"
            )
        start_head = start_card.network.full_resolution_channels
        if start_head and not config.network.full_resolution_channels:
            raise ModelError(
                f"{config.init_from}: it has a full-resolution head; train with one too"
            )
        # a model without the full-resolution head starts the U-Net of one with it
        (net if start_head else unet_of(net)).load_state_dict(start_net.state_dict())
    net.to(torch_device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=max(config.iterations, 2), pct_start=0.1
    )
    loss_fn = segmentation_loss(
        len(LABELS), config.lesion_ce_weight, config.lesion_size_floor, config.lesion_loss_weight
    )

    if provider is None:
        provider = SubjectPatches(train, norm.channels, config.patch_size, config.lesion_sampling)
    dropout_channels = {m: norm.channel_indices(m) for m in norm.modalities}
    losses: list[float] = []
    val_f1: list[tuple[int, float]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best = -1.0
    done, runs, seconds_before = 0, 1, 0.0
    names = [s.name for s in train]
    if resume and resume_dir is not None and resume_exists(resume_dir):
        state = load_resume(resume_dir)
        _check_resumable(state, config, norm, names, Path(resume_dir))
        net.load_state_dict(state.net)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        rng.bit_generator.state = state.numpy_rng
        torch.set_rng_state(state.torch_rng)
        if state.provider is not None and hasattr(provider, "load_state_dict"):
            provider.load_state_dict(state.provider)
        losses, val_f1, best_state = state.losses, state.val_f1, state.best_state
        best = state.best_f1
        done, runs, seconds_before = state.iteration, state.runs + 1, state.seconds
    elif resume_dir is not None:
        clear_resume(resume_dir)  # a fresh start: no stale state to resume by mistake
    start = time.perf_counter()

    def checkpoint() -> None:
        if resume_dir is None:
            return
        save_resume(
            resume_dir,
            ResumeState(
                iteration=len(losses),
                losses=losses,
                val_f1=val_f1,
                best_f1=best,
                seconds=seconds_before + time.perf_counter() - start,
                runs=runs,
                config=config.to_dict(),
                normalization=norm.to_dict(),
                subjects=names,
                numpy_rng=dict(rng.bit_generator.state),
                scheduler=scheduler.state_dict(),
                optimizer=optimizer.state_dict(),
                net=net.state_dict(),
                best_state=best_state,
                torch_rng=torch.get_rng_state(),
                provider=provider.state_dict() if hasattr(provider, "state_dict") else None,
                complete=len(losses) >= config.iterations,
            ),
        )

    stopped_early = False
    bar = tqdm(
        range(done, config.iterations),
        desc="train",
        unit="it",
        disable=not progress,
        initial=done,
        total=config.iterations,
    )
    for it in bar:
        net.train()
        images, labels = provider.batch(rng, config.batch_size)
        if images.shape[1] != len(norm.channels):
            raise ValueError(
                f"patch provider gave {images.shape[1]} channels, the model takes "
                f"{len(norm.channels)} ({', '.join(norm.channels)})"
            )
        drop_modalities(rng, images, dropout_channels, config.modality_dropout)
        x = torch.from_numpy(np.ascontiguousarray(images)).to(torch_device)
        y = torch.from_numpy(config.targets(labels)[:, None].astype(np.int64)).to(torch_device)
        loss = train_step(net, optimizer, loss_fn, x, y)
        scheduler.step()
        losses.append(loss.item())
        last = it == config.iterations - 1
        out_of_time = (
            config.time_budget_s is not None and time.perf_counter() - start > config.time_budget_s
        )
        if val and ((it + 1) % config.val_every == 0 or last):
            f1 = validation_f1(net, val, config)
            val_f1.append((it + 1, f1))
            if f1 > best:
                best = f1
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
        bar.set_postfix(
            loss=f"{np.mean(losses[-20:]):.3f}", val_f1=f"{val_f1[-1][1]:.2f}" if val_f1 else "-"
        )
        if (it + 1) % config.checkpoint_every == 0 or last or out_of_time:
            checkpoint()
        if out_of_time and not last:
            stopped_early = True
            break
    if done >= config.iterations and resume_dir is not None:
        checkpoint()  # nothing left to run: refresh the state (run count, time)
    if stopped_early and val and (not val_f1 or val_f1[-1][0] != len(losses)):
        # the model written now gets a say on where training stopped; this
        # validation is not in the resume state, so resuming is unaffected
        f1 = validation_f1(net, val, config)
        val_f1 = [*val_f1, (len(losses), f1)]
        if f1 > best:
            best = f1
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
    if best_state is not None:
        net.load_state_dict(best_state)
    net.cpu()
    post, tuned_f1 = config.post, None
    if val and config.tune_post:
        post, tuned_f1 = tune_post_processing(net, val, config)
    complete = len(losses) >= config.iterations
    card = ModelCard(
        network=config.network,
        normalization=norm,
        patch_size=config.patch_size,
        seed=config.seed,
        post=post,
        # the voxel size the network saw, the working grid predict resamples to
        working_spacing_mm=float(np.median([voxel_spacing(s.affine) for s in train + val])),
        optional_modalities=config.optional_modalities,
        training={
            "config": config.to_dict(),
            "subjects": names,
            "validation_subjects": [s.name for s in val],
            "iterations_run": len(losses),
            "complete": complete,
            "runs": runs,
            "patch_provider": type(provider).__name__,
            "best_validation_lesion_f1": best if val else None,
            "tuned_post_processing": post.to_dict() if tuned_f1 is not None else None,
            "validation_lesion_f1_after_tuning": tuned_f1,
            "seconds": round(seconds_before + time.perf_counter() - start, 1),
            "ran_on": machine(device),
        },
    )
    return TrainResult(net=net, card=card, losses=losses, val_f1=val_f1, complete=complete)


def machine(device: str = "cpu") -> dict[str, Any]:
    """Where this (last) run of the recipe ran: recorded with the model."""
    accelerator = None
    if torch.device(device).type == "cuda":
        accelerator = torch.cuda.get_device_name(torch.device(device))
    return {
        "device": device,
        "accelerator": accelerator,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _check_resumable(
    state: ResumeState,
    config: TrainConfig,
    norm: Normalization,
    subjects: list[str],
    directory: Path,
) -> None:
    """Refuse a resume state written for another recipe or other data."""
    problems = config_differences(state.config, config.to_dict())
    if state.normalization != json.loads(json.dumps(norm.to_dict())):
        problems.append(f"normalization: {state.normalization} -> {norm.to_dict()}")
    if state.subjects != subjects:
        problems.append(f"training subjects: {state.subjects} -> {subjects}")
    if problems:
        raise ResumeError(
            f"{directory}: the resume state was written by another training recipe; "
            f"it differs in {'; '.join(problems)}. Use the same options (only the time "
            "budget may change), or delete the folder to start over."
        )


def _read_folder(
    folder: Path, modalities: tuple[str, ...], mask_jitter: float, seed: int
) -> list[RawSubject]:
    """One dataset's annotated subjects, cropped to the brain (a worker's share)."""
    return list(
        iter_annotated(
            folder, modalities, crop_margin=CROP_MARGIN, mask_jitter=mask_jitter, seed=seed
        )
    )


def train_model(
    data: str | Path | Sequence[str | Path],
    out: str | Path,
    config: TrainConfig,
    val_fraction: float = 0.2,
    progress: bool = True,
    resume: bool = False,
    device: str = "cpu",
    workers: int = 1,
) -> TrainResult:
    """Train on one or more BIDS datasets with reference labels (their subjects
    pooled); save safetensors + config.json.

    ``device``: see :func:`train_on_subjects`. ``workers`` > 1: the datasets
    are read by that many processes, one dataset each (a large cohort
    simulated in several folders loads in minutes, not an hour; the subjects
    and their order are those of a serial read).

    The resume state goes to ``<out>/resume/`` (:mod:`deepmir.training.resume`);
    ``resume=True`` continues from it when it is there. Without ``resume``, an
    unfinished state there is refused rather than overwritten. The model is
    written when the iterations are complete, or when the time budget stops
    training (``training.complete`` false; the resume state stays for the next run).
    """
    resume_dir = Path(out) / RESUME_DIR
    if not resume and resume_exists(resume_dir):
        if not read_resume_json(resume_dir).get("complete", False):
            raise ResumeError(
                f"{resume_dir}: an unfinished training run is there; continue it with "
                "--resume, or delete the folder to start over"
            )
    if config.iterations < 1:
        raise ValueError(f"training needs at least 1 iteration, got {config.iterations}")
    folders = as_folders(data)
    read = functools.partial(
        _read_folder,
        modalities=config.modalities,
        mask_jitter=config.mask_jitter,
        seed=config.seed,
    )
    if workers > 1 and len(folders) > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(folders)), mp_context=context) as pool:
            raw = [r for part in pool.map(read, folders) for r in part]
    else:
        raw = [r for folder in folders for r in read(folder)]
    norm = fit(raw, config.modalities)
    if config.init_from is not None:
        # fine-tuning keeps the scale the starting weights were trained on
        from deepmir.model.checkpoint import load_model

        start_norm = load_model(config.init_from)[1].normalization
        if start_norm.modalities == norm.modalities:
            norm = start_norm
    subjects = []
    while raw:  # each subject's raw arrays go as soon as it is prepared
        subjects.append(prepare(raw.pop(0), norm, CROP_MARGIN))
    order = np.random.default_rng(config.seed).permutation(len(subjects))
    n_val = int(round(val_fraction * len(subjects))) if len(subjects) > 2 else 0
    val = [subjects[i] for i in order[:n_val]]
    train = [subjects[i] for i in order[n_val:]]
    result = train_on_subjects(
        train, val, norm, config, progress, resume_dir=resume_dir, resume=resume, device=device
    )
    result.card.training["data"] = folder_record(folders)
    save_model(out, result.net, result.card)
    return result


def retune_model(
    model_dir: str | Path,
    data: str | Path | Sequence[str | Path],
    reference: str | Path | None = None,
    min_depth_mm: tuple[float, ...] | None = None,
) -> tuple[PostProcessing, float]:
    """Re-choose a saved model's post-processing on other annotated datasets
    (one or several pooled; subjects it was never trained on) and rewrite its
    config.json; the weights, and so their sha256, are unchanged.
    ``reference``: the labels' folder when not ``data``'s
    ``derivatives/reference`` (:func:`read_annotated`; one dataset).
    ``min_depth_mm``: the rim rule to tune under and store (None: the model's;
    it is a design value, not searched)."""
    from deepmir.io.loader import SubjectDataError
    from deepmir.model.checkpoint import load_model

    net, card = load_model(model_dir)
    if min_depth_mm is not None:
        card.post = dataclasses.replace(card.post, min_depth_mm=min_depth_mm)
    # cropped to the brain as read, as in training (a pooled tuning cohort of
    # 72 full fields of view and their probabilities took 18 GB)
    subjects = [
        prepare(r, card.normalization, CROP_MARGIN)
        for r in iter_pooled(
            data, card.modalities, card.working_spacing_mm, CROP_MARGIN, reference=reference
        )
    ]
    if not subjects:
        raise SubjectDataError(
            Path(reference) if reference else as_folders(data)[0],
            "no subject with reference labels",
        )
    config = TrainConfig(
        modalities=card.modalities,
        patch_size=card.patch_size,
        post=card.post,
    )
    post, f1 = tune_post_processing(net, subjects, config, progress=True)
    card.post = post
    card.training["post_processing_tuned_on"] = {
        "data": folder_record(data),
        "subjects": [s.name for s in subjects],
        "lesion_f1": f1,
    }
    save_model(model_dir, net, card)
    return post, f1
