"""Sliding-window inference (MONAI, Gaussian blending) and post-processing."""

from __future__ import annotations

import cc3d
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


def labels_from_probabilities(
    probabilities: npt.NDArray[np.float32],
    min_size_voxels: int = 1,
) -> npt.NDArray[np.uint8]:
    """Argmax labels; 26-connected components smaller than ``min_size_voxels`` removed."""
    labels = np.argmax(probabilities, axis=0).astype(np.uint8)
    if min_size_voxels > 1:
        for label in np.unique(labels[labels > 0]):
            kept = cc3d.dust(labels == label, threshold=min_size_voxels, connectivity=26)
            labels[(labels == label) & ~kept] = 0
    return labels
