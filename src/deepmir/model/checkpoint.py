"""Saving and loading models: safetensors weights + a JSON config with their sha256.

Loading never unpickles anything: weights are read with
``safetensors.torch.load_file`` and refused if their sha256 does not match
the config.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from deepmir import __version__
from deepmir.inference.calibration import Calibration
from deepmir.inference.lesions import PostProcessing
from deepmir.inference.resample import WORKING_SPACING_MM
from deepmir.io.atomic import atomic_path, write_json
from deepmir.io.bids import MODALITY_SUFFIX
from deepmir.labels import LABELS
from deepmir.model.network import NetworkConfig, build_network
from deepmir.model.preprocess import Normalization

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class ModelError(ValueError):
    """A model folder that cannot be used; the message names the file and the problem."""


@dataclass
class ModelCard:
    """Everything saved next to the weights."""

    network: NetworkConfig
    normalization: Normalization
    patch_size: tuple[int, int, int]
    seed: int
    post: PostProcessing = field(default_factory=PostProcessing)
    training: dict[str, Any] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=lambda: dict(LABELS))
    deepmir_version: str = __version__
    weights_sha256: str = ""
    #: voxel size (mm) of the images the network was trained on: predict resamples
    #: every input to it (:mod:`deepmir.inference.resample`); configs without it are 1 mm
    working_spacing_mm: float = WORKING_SPACING_MM
    #: modalities the model was trained to do without (modality dropout): a
    #: subject may lack them, their channels are then fed as zeros
    optional_modalities: tuple[str, ...] = ()
    #: lesion score -> probability that the lesion is real; None: the raw score
    calibration: Calibration | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.normalization.modalities

    @property
    def required_modalities(self) -> tuple[str, ...]:
        return tuple(m for m in self.modalities if m not in self.optional_modalities)

    def to_dict(self) -> dict[str, Any]:
        return {
            "network": self.network.to_dict(),
            "normalization": self.normalization.to_dict(),
            "modalities": list(self.modalities),
            "optional_modalities": list(self.optional_modalities),
            "patch_size": list(self.patch_size),
            "working_spacing_mm": self.working_spacing_mm,
            "seed": self.seed,
            "post_processing": self.post.to_dict(),
            "training": self.training,
            "labels": {str(k): v for k, v in self.labels.items()},
            "deepmir_version": self.deepmir_version,
            "weights_file": WEIGHTS,
            "weights_sha256": self.weights_sha256,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ModelCard:
        return ModelCard(
            network=NetworkConfig.from_dict(d["network"]),
            normalization=Normalization.from_dict(d["normalization"]),
            patch_size=_patch_size(d["patch_size"]),
            seed=int(d["seed"]),
            post=PostProcessing.from_dict(d.get("post_processing", {})),
            training=dict(d.get("training", {})),
            labels={int(k): v for k, v in d["labels"].items()},
            deepmir_version=d.get("deepmir_version", "unknown"),
            weights_sha256=d["weights_sha256"],
            working_spacing_mm=float(d.get("working_spacing_mm", WORKING_SPACING_MM)),
            optional_modalities=tuple(d.get("optional_modalities") or ()),
            calibration=Calibration.from_dict(d["calibration"]) if d.get("calibration") else None,
        )


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(model_dir: str | Path, net: torch.nn.Module, card: ModelCard) -> ModelCard:
    """Write ``model.safetensors`` and ``config.json`` (with the weights' sha256)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    with atomic_path(model_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    card.weights_sha256 = sha256_of(model_dir / WEIGHTS)
    write_json(model_dir / CONFIG, card.to_dict())
    return card


def load_model(model_dir: str | Path) -> tuple[torch.nn.Module, ModelCard]:
    """Load a model folder; refuse missing files, a bad config, a tampered weight file,
    a file that is not safetensors (a pickle is never unpickled), weights of
    another architecture, or a model that was never trained.

    Raises
    ------
    ModelError
        naming the file and the problem.
    """
    model_dir = Path(model_dir)
    config_path, weights_path = model_dir / CONFIG, model_dir / WEIGHTS
    if not model_dir.is_dir():
        what = "does not exist" if not model_dir.exists() else "is a file"
        raise ModelError(
            f"{model_dir}: {what}; --model takes 'default' or a model folder "
            f"({CONFIG} and {WEIGHTS}, written by deepmir train)"
        )
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ModelError(
                f"{path}: file is missing (a model folder holds {CONFIG} and {WEIGHTS})"
            )
    try:
        card = ModelCard.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{config_path}: not a deepmir model config ({exc!r})") from exc
    unknown = [m for m in card.modalities if m not in MODALITY_SUFFIX]
    if unknown or not card.modalities:
        raise ModelError(f"{config_path}: unknown modalities {unknown or '(none)'}")
    if card.training.get("iterations_run") == 0:
        raise ModelError(
            f"{config_path}: the model was never trained (0 iterations); "
            "train it with deepmir train --iterations N (N >= 1)"
        )
    actual = sha256_of(weights_path)
    if actual != card.weights_sha256:
        raise ModelError(
            f"{weights_path}: sha256 {actual[:12]}... does not match {CONFIG} "
            f"({card.weights_sha256[:12]}...); the weights were changed or corrupted"
        )
    state = _read_safetensors(weights_path)
    try:
        net = build_network(card.network, in_channels=len(card.normalization.channels))
    except (TypeError, ValueError, KeyError, AssertionError) as exc:
        raise ModelError(
            f"{config_path}: the network it describes cannot be built ({exc})"
        ) from exc
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ModelError(
            f"{weights_path}: the weights do not fit the architecture in {CONFIG} "
            f"(weights of another network?): {detail[:400]}"
        ) from exc
    net.eval()
    return net, card


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; never unpickles anything."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        kind = "a zip (torch.save)" if head.startswith(b"PK") else "a pickle"
        raise ModelError(
            f"{path}: is {kind} file, not safetensors; deepmir never unpickles weights "
            "(a pickle can run any code). Convert it where you trust it: "
            "safetensors.torch.save_file(torch.load(f).state_dict(), 'model.safetensors')"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from exc


def check_modalities(card: ModelCard, available: dict[str, Path]) -> None:
    """Clear error naming the modality (and file) a subject lacks for this model
    (its optional modalities may be missing)."""
    missing = [m for m in card.required_modalities if m not in available]
    if missing:
        names = ", ".join(f"{m} (*_{MODALITY_SUFFIX[m]}.nii.gz)" for m in missing)
        optional = (
            f" (optional: {', '.join(card.optional_modalities)})"
            if card.optional_modalities
            else ""
        )
        raise ModelError(
            f"the model needs {', '.join(card.required_modalities)}{optional}; missing: {names}"
        )


def _patch_size(values: list[int]) -> tuple[int, int, int]:
    i, j, k = (int(v) for v in values)
    return (i, j, k)
