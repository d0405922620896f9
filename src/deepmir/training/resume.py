"""The resume state of a training run, in ``<model_dir>/resume/``.

Training on 2 CPU cores runs one recipe over several runs of a few hours:
``deepmir train --resume`` continues where the last run stopped and, for the
same seed, ends with the weights an uninterrupted run would have.

Two kinds of files, nothing pickled, nothing read with ``torch.load``:

* ``state-<iteration>.safetensors``: every tensor: ``net.<name>`` (current
  weights), ``best.<name>`` (best-validation weights, when there are any),
  ``optim.state.<param_idx>.<name>`` (the optimizer's per-parameter tensors:
  AdamW's ``step``, ``exp_avg``, ``exp_avg_sq``) and ``torch_rng`` (PyTorch's
  CPU generator state, uint8);
* ``state.json``: the rest: iterations done, losses, validation F1 history,
  best F1, the scheduler's state dict, the optimizer's non-tensor state and
  param groups, numpy's ``Generator.bit_generator.state`` (Python ints of any
  size are valid JSON), the TrainConfig dict, the normalization, the training
  subjects, the patch provider's own state, and the tensor file's name and
  sha256.

The flattening of the optimizer state (:func:`flatten_optimizer`) is written
here: PyTorch serializes optimizer state only with pickle (``torch.save``),
and safetensors holds a flat dict of tensors.

Each file is written under a temporary name and renamed (:mod:`deepmir.io.atomic`);
the tensors first, then the JSON that names them: the JSON is the commit
point, so a run killed while writing leaves the previous state usable. Tensor
files the JSON no longer names are deleted afterwards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from deepmir.io.atomic import atomic_path, write_json
from deepmir.model.checkpoint import sha256_of

RESUME_DIR = "resume"
STATE_JSON = "state.json"
FORMAT = 1
#: TrainConfig fields that may differ between the runs of one recipe
#: (neither changes what is computed)
MAY_DIFFER = ("time_budget_s", "checkpoint_every")
#: TrainConfig fields added after states were saved: a state without one ran
#: with this value (the field's default, which computes what the older code did)
ADDED_FIELDS: dict[str, Any] = {"lesion_size_floor": 0, "lesion_loss_weight": 0.0}
#: the same for the fields of TrainConfig.network
ADDED_NETWORK_FIELDS: dict[str, Any] = {"full_resolution_channels": 0}

_NET, _BEST, _OPTIM, _TORCH_RNG = "net.", "best.", "optim.state.", "torch_rng"


class ResumeError(ValueError):
    """A resume state that cannot be used; the message says why and what to do."""


@dataclass
class ResumeState:
    """Everything needed to continue a training run exactly."""

    iteration: int  # iterations done
    losses: list[float]
    val_f1: list[tuple[int, float]]
    best_f1: float
    seconds: float  # training time of every run so far
    runs: int  # runs so far, this one included
    config: dict[str, Any]
    normalization: dict[str, Any]
    subjects: list[str]
    numpy_rng: dict[str, Any]
    scheduler: dict[str, Any]
    optimizer: dict[str, Any]  # a torch optimizer state dict
    net: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor] | None
    torch_rng: torch.Tensor
    provider: dict[str, Any] | None = None
    complete: bool = False


def flatten_optimizer(
    state_dict: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state dict as tensors ``optim.state.<param_idx>.<name>``
    and a JSON-serializable rest (non-tensor per-parameter entries and
    ``param_groups``)."""
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPTIM}{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                rest.setdefault(str(index), {})[name] = value
    return tensors, {"state": rest, "param_groups": state_dict["param_groups"]}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer` (JSON lists back to tuples for ``betas``)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(_OPTIM):
            index, name = key[len(_OPTIM) :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for index, entries in rest["state"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in group.items()}
        for group in rest["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def resume_exists(directory: str | Path) -> bool:
    return (Path(directory) / STATE_JSON).exists()


def clear_resume(directory: str | Path) -> None:
    """Delete a resume state (its JSON first, so that no half state is left)."""
    directory = Path(directory)
    (directory / STATE_JSON).unlink(missing_ok=True)
    for path in directory.glob("state-*.safetensors"):
        path.unlink()


def read_resume_json(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / STATE_JSON
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResumeError(f"{path}: not a readable resume state ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise ResumeError(f"{path}: unknown resume state format {meta.get('format')!r}")
    return meta


def save_resume(directory: str | Path, state: ResumeState) -> None:
    """Write the state (tensors, then the JSON that commits them); drop older tensor files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {_NET + k: v.detach().contiguous().cpu() for k, v in state.net.items()}
    if state.best_state is not None:
        tensors |= {_BEST + k: v.detach().contiguous().cpu() for k, v in state.best_state.items()}
    optim_tensors, optim_rest = flatten_optimizer(state.optimizer)
    tensors |= optim_tensors
    tensors[_TORCH_RNG] = state.torch_rng.contiguous()
    name = f"state-{state.iteration:07d}.safetensors"
    with atomic_path(directory / name) as tmp:
        save_file(tensors, str(tmp))
    meta = {
        "format": FORMAT,
        "iteration": state.iteration,
        "complete": state.complete,
        "runs": state.runs,
        "seconds": round(state.seconds, 3),
        "best_f1": state.best_f1,
        "has_best_state": state.best_state is not None,
        "losses": state.losses,
        "val_f1": [list(v) for v in state.val_f1],
        "config": state.config,
        "normalization": state.normalization,
        "subjects": state.subjects,
        "numpy_rng": state.numpy_rng,
        "scheduler": state.scheduler,
        "optimizer": optim_rest,
        "provider": state.provider,
        "tensors_file": name,
        "tensors_sha256": sha256_of(directory / name),
    }
    write_json(directory / STATE_JSON, meta)
    for old in directory.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_resume(directory: str | Path) -> ResumeState:
    """Read a state written by :func:`save_resume` (refuses a tensor file whose
    sha256 differs from the one the JSON recorded)."""
    directory = Path(directory)
    meta = read_resume_json(directory)
    path = directory / meta["tensors_file"]
    if not path.exists():
        raise ResumeError(f"{path}: file is missing (named by {directory / STATE_JSON})")
    if sha256_of(path) != meta["tensors_sha256"]:
        raise ResumeError(
            f"{path}: sha256 does not match {STATE_JSON}; the resume state is corrupted "
            "(delete the folder to start over)"
        )
    tensors = load_file(str(path))

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    return ResumeState(
        iteration=int(meta["iteration"]),
        losses=[float(x) for x in meta["losses"]],
        val_f1=[(int(i), float(f)) for i, f in meta["val_f1"]],
        best_f1=float(meta["best_f1"]),
        seconds=float(meta["seconds"]),
        runs=int(meta["runs"]),
        config=meta["config"],
        normalization=meta["normalization"],
        subjects=list(meta["subjects"]),
        numpy_rng=meta["numpy_rng"],
        scheduler=meta["scheduler"],
        optimizer=unflatten_optimizer(tensors, meta["optimizer"]),
        net=part(_NET),
        best_state=part(_BEST) if meta["has_best_state"] else None,
        torch_rng=tensors[_TORCH_RNG],
        provider=meta.get("provider"),
        complete=bool(meta["complete"]),
    )


def config_differences(saved: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """``field: saved -> requested`` for every TrainConfig field that differs
    (after a JSON round trip of ``requested``), except :data:`MAY_DIFFER`."""
    requested = json.loads(json.dumps(requested))
    saved = {**ADDED_FIELDS, **saved}
    if isinstance(saved.get("network"), dict):  # network fields added since
        saved["network"] = {**ADDED_NETWORK_FIELDS, **saved["network"]}
    keys = (set(saved) | set(requested)) - set(MAY_DIFFER)
    return [
        f"{k}: {saved.get(k)!r} -> {requested.get(k)!r}"
        for k in sorted(keys)
        if saved.get(k) != requested.get(k)
    ]
