"""The training loss: MONAI's batch Dice over the lesion classes + cross-entropy.

Cross-entropy covers every class, background included, with each lesion class
weighted ``lesion_ce_weight`` (nnU-Net's Dice + CE). Voxel losses are blind to
lesion size: a 1-voxel CMB weighs 1/300 of a 300-voxel one in the batch Dice
and in the cross-entropy, and the 1-2 voxel CMBs are the ones a model misses
(clearly visible ones scored below 0.01). With ``size_floor`` > 1 each voxel
of a lesion smaller than ``size_floor`` voxels gets its cross-entropy weight
multiplied by ``size_floor / size``, so that every lesion counts at least as
much as one of ``size_floor`` voxels (the idea of lesion-wise losses such as
blob loss, Kofler et al., IPMI 2023, reduced to a voxel weight map; no
maintained library offers it, so it is written here). Lesions are the
26-connected components of each class within the patch (``cc3d``); a lesion
cut by the patch border counts with its part inside.
"""

from __future__ import annotations

from collections.abc import Callable

import cc3d
import numpy as np
import numpy.typing as npt
import torch
from monai.losses import DiceLoss


def lesion_size_weights(
    labels: npt.NDArray[np.integer], size_floor: int
) -> npt.NDArray[np.float32]:
    """Per voxel of ``labels`` (batch, *patch): ``max(1, size_floor / size)`` inside
    a lesion of ``size`` voxels (26-connected, per class), 1 elsewhere."""
    weights = np.ones(labels.shape, np.float32)
    if size_floor <= 1:
        return weights
    for b in range(labels.shape[0]):
        components = cc3d.connected_components(
            np.ascontiguousarray(labels[b]), connectivity=26, out_dtype=np.uint32
        )
        sizes = np.bincount(components.ravel()).astype(np.float32)
        factor = np.maximum(1.0, size_floor / np.maximum(sizes, 1.0))
        factor[0] = 1.0  # background
        weights[b] = factor[components]
    return weights


def segmentation_loss(
    n_classes: int, lesion_ce_weight: float, size_floor: int = 0
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(logits, target)``: batch Dice of the lesion classes + weighted
    cross-entropy (class weights, times :func:`lesion_size_weights` when
    ``size_floor`` > 1); ``target`` is (batch, 1, *patch) int64."""
    dice = DiceLoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    class_weight = torch.tensor([1.0] + [lesion_ce_weight] * (n_classes - 1))

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels = target[:, 0]
        if size_floor <= 1:
            ce = torch.nn.functional.cross_entropy(logits, labels, weight=class_weight)
        else:
            voxel = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
            size = torch.from_numpy(lesion_size_weights(labels.numpy(), size_floor))
            weight = class_weight[labels] * size
            ce = (weight * voxel).sum() / weight.sum()
        return dice(logits, target) + ce

    return loss
