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

Even so, a voxel loss normalized over a whole batch (half a million voxels)
barely moves a lesion the network has already dismissed: a 1-voxel CMB
scored 1e-6 adds about 0.002 to the cross-entropy, and the Dice gradient
vanishes through the saturated softmax. With ``lesion_weight`` > 0 a
lesion-level term is added, the mean over the reference lesions in the batch
of ``-log`` of the lesion's best score (its class probability, maximized over
the lesion and its 26 neighbours so that a one-voxel shift is not punished):
every lesion, whatever its size, must be found somewhere, which is what
lesion-level sensitivity counts (after blob loss, Kofler et al., IPMI 2023,
which adds one loss term per lesion instance). False positives stay with the
voxel terms.
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


def lesion_components(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """Per voxel of ``labels`` (batch, *patch): the id of its lesion (26-connected
    component of one class), unique over the batch, 0 in the background."""
    out = np.zeros(labels.shape, np.int64)
    offset = 0
    for b in range(labels.shape[0]):
        components = cc3d.connected_components(
            np.ascontiguousarray(labels[b]), connectivity=26, out_dtype=np.uint32
        ).astype(np.int64)
        n = int(components.max())
        out[b] = np.where(components > 0, components + offset, 0)
        offset += n
    return out


def lesion_detection_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over the reference lesions of ``labels`` (batch, *patch) of ``-log`` of
    the lesion's best class probability in ``logits`` (batch, classes, *patch),
    taken over the lesion and its 26 neighbours; 0 when the batch has none."""
    components = torch.from_numpy(lesion_components(labels.numpy()))
    n = int(components.max())
    if n == 0:
        return logits.sum() * 0.0
    # each class's probability maximized over the 26 neighbours (a one-voxel shift),
    # read at each voxel for the class of its label
    # (in log space: the gradient does not vanish however sure the miss)
    near = torch.nn.functional.max_pool3d(torch.log_softmax(logits, dim=1), 3, 1, 1)
    own = near.gather(1, labels[:, None]).squeeze(1)
    best = torch.full((n + 1,), -torch.inf, dtype=own.dtype).scatter_reduce(
        0, components.reshape(-1), own.reshape(-1), "amax"
    )
    return -best[1:].mean()


def segmentation_loss(
    n_classes: int, lesion_ce_weight: float, size_floor: int = 0, lesion_weight: float = 0.0
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(logits, target)``: batch Dice of the lesion classes + weighted
    cross-entropy (class weights, times :func:`lesion_size_weights` when
    ``size_floor`` > 1), + ``lesion_weight`` times :func:`lesion_detection_loss`;
    ``target`` is (batch, 1, *patch) int64."""
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
        total = dice(logits, target) + ce
        if lesion_weight > 0:
            total = total + lesion_weight * lesion_detection_loss(logits, labels)
        return total

    return loss
