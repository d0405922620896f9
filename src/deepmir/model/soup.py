"""Weight averaging ("model soup") of models fine-tuned from one another.

Wortsman et al., "Model soups: averaging weights of multiple fine-tuned models
improves accuracy without increasing inference time" (ICML 2022): models
fine-tuned from the same starting weights usually lie in one basin of the
loss, and the average of their weights often generalizes better under
distribution shift than either, at the cost of one network at predict. The
network here has instance norm only (no running statistics), so the average
of the weights is a complete model.

Only the weights are averaged. The result keeps the first model's
preprocessing and post-processing; its calibration is dropped, because the
averaged network's scores are not the first model's: fit it again with
``deepmir calibrate``. The averaging itself is a weighted sum of tensors
(no library does this for a safetensors pair with a config), written here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from deepmir.model.checkpoint import ModelCard, ModelError, load_model, save_model

#: fields of the model config that must agree for an average to mean anything
MUST_AGREE = (
    "network",
    "normalization",
    "modalities",
    "optional_modalities",
    "patch_size",
    "working_spacing_mm",
)


def average_models(
    model_dirs: Sequence[str | Path],
    out: str | Path,
    weights: Sequence[float] | None = None,
) -> ModelCard:
    """Average the weights of ``model_dirs`` (uniformly, or by ``weights``, which
    are normalized to sum 1) into a new model folder ``out``.

    The models must share the network, preprocessing, modalities (and the
    optional ones), patch size and working grid (a clear :class:`ModelError`
    names the first that differs). The new config keeps the first model's
    post-processing, records the sources, their weights' sha256 and the mixing
    weights under ``training["soup"]``, and has no calibration.

    Raises
    ------
    ModelError
        a model folder that cannot be loaded, models that do not agree, or
        mixing weights that are not positive and finite.
    """
    if len(model_dirs) < 2:
        raise ModelError(f"averaging needs two models or more, got {len(model_dirs)}")
    mix = [1.0] * len(model_dirs) if weights is None else [float(w) for w in weights]
    if len(mix) != len(model_dirs):
        raise ModelError(f"{len(mix)} mixing weights for {len(model_dirs)} models")
    if not all(math.isfinite(w) and w > 0 for w in mix):
        raise ModelError(f"mixing weights must be positive and finite, got {mix}")
    total = sum(mix)
    mix = [w / total for w in mix]

    loaded = [load_model(d) for d in model_dirs]
    first_net, first_card = loaded[0]
    reference = first_card.to_dict()
    for directory, (_, card) in zip(model_dirs[1:], loaded[1:], strict=True):
        other = card.to_dict()
        for key in MUST_AGREE:
            if other[key] != reference[key]:
                raise ModelError(
                    f"{directory}: its {key} ({other[key]}) differs from {model_dirs[0]}'s "
                    f"({reference[key]}); only models of one architecture and preprocessing "
                    "can be averaged"
                )

    states = [net.state_dict() for net, _ in loaded]
    averaged: dict[str, torch.Tensor] = {}
    for name, tensor in states[0].items():
        if not torch.is_floating_point(tensor):
            averaged[name] = tensor.clone()  # counters and the like: the first model's
            continue
        acc = torch.zeros_like(tensor, dtype=torch.float64)
        for w, state in zip(mix, states, strict=True):
            acc += w * state[name].to(torch.float64)
        averaged[name] = acc.to(tensor.dtype)
    first_net.load_state_dict(averaged)

    sources: list[dict[str, Any]] = [
        {"model": str(d), "weights_sha256": card.weights_sha256, "weight": w}
        for d, (_, card), w in zip(model_dirs, loaded, mix, strict=True)
    ]
    card = ModelCard(
        network=first_card.network,
        normalization=first_card.normalization,
        patch_size=first_card.patch_size,
        seed=first_card.seed,
        post=first_card.post,
        training={
            "soup": {
                "method": "weighted average of the weights (Wortsman et al. 2022)",
                "sources": sources,
                "post_processing_from": str(model_dirs[0]),
                "calibration": "none: fit with deepmir calibrate",
            },
            "complete": True,
        },
        labels=first_card.labels,
        working_spacing_mm=first_card.working_spacing_mm,
        optional_modalities=first_card.optional_modalities,
        calibration=None,
    )
    return save_model(out, first_net, card)
