"""Sliding-window inference (MONAI, Gaussian blending) into class probabilities."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from monai.inferers import sliding_window_inference


def predict_probabilities(
    net: torch.nn.Module,
    image: npt.NDArray[np.float32],
    patch_size: tuple[int, ...],
    overlap: float = 0.25,
    batch_size: int = 2,
) -> npt.NDArray[np.float32]:
    """Class probabilities (L, I, J, K) of a normalized (C, I, J, K) image."""
    net.eval()
    with torch.no_grad():
        logits = sliding_window_inference(
            torch.from_numpy(image)[None],
            roi_size=patch_size,
            sw_batch_size=batch_size,
            predictor=net,
            overlap=overlap,
            mode="gaussian",
            padding_mode="constant",
        )
        assert isinstance(logits, torch.Tensor)
        return torch.softmax(logits[0], dim=0).numpy().astype(np.float32)
