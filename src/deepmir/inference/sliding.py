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
    """Class probabilities (L, I, J, K) of a normalized (C, I, J, K) image.

    The windows run on the network's device (a GPU when training runs on
    one); the stitched volume stays in CPU memory."""
    net.eval()
    weight = next(net.parameters(), None)
    window_device = weight.device if weight is not None else torch.device("cpu")
    with torch.no_grad():
        logits = sliding_window_inference(
            torch.from_numpy(image)[None],
            roi_size=patch_size,
            sw_batch_size=batch_size,
            predictor=net,
            overlap=overlap,
            mode="gaussian",
            padding_mode="constant",
            sw_device=window_device,
            device=torch.device("cpu"),
        )
        assert isinstance(logits, torch.Tensor)
        scores = logits[0]
        del logits
        # softmax in place, a slab at a time: no second (L, I, J, K) array
        step = max(1, (1 << 22) // max(1, scores[0, 0].numel()))
        for i in range(0, scores.shape[1], step):
            scores[:, i : i + step] = torch.softmax(scores[:, i : i + step], dim=0)
        return np.asarray(scores.numpy(), dtype=np.float32)
