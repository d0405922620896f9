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
lesion-level cross-entropy is added, over the objects of the batch: each
reference lesion scores ``-log`` of its best class probability (maximized
over the lesion and its 26 neighbours so that a one-voxel shift is not
punished), each false-positive component ``-log`` of its least background
probability, and the term is their mean. Every lesion must be found
somewhere and every false dot rejected, whatever their size, which is what
lesion-level sensitivity and precision count (after blob loss, Kofler et
al., IPMI 2023, which adds one loss term per lesion instance). With the
lesion half alone, 12 training subjects gave 544 CMBs for 36
(``benchmarks/results/misses_overfit12_*.txt``).
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
    """Lesion-level cross-entropy over the objects of a batch: each reference
    lesion of ``labels`` (batch, *patch) scores ``-log`` of its best class
    probability in ``logits`` (batch, classes, *patch) over the lesion and its 26
    neighbours (missed), each false-positive component (26-connected voxels
    predicted as a lesion class, none within one voxel of a reference lesion)
    ``-log`` of its least background probability (found where nothing is);
    the mean over both, so a missed 1-voxel CMB and a false dot weigh as much
    as a missed or invented large lesion; 0 when the batch has neither."""
    device = logits.device
    log_p = torch.log_softmax(logits, dim=1)
    lesions = torch.from_numpy(lesion_components(labels.cpu().numpy())).to(device)
    n = int(lesions.max())
    terms = []
    if n:
        # each class's log-probability maximized over the 26 neighbours (a one-voxel
        # shift), read at each voxel for the class of its label (log space: the
        # gradient does not vanish however sure the miss)
        near = torch.nn.functional.max_pool3d(log_p, 3, 1, 1).gather(1, labels[:, None])[:, 0]
        best = torch.full((n + 1,), -torch.inf, dtype=near.dtype, device=device).scatter_reduce(
            0, lesions.reshape(-1), near.reshape(-1), "amax"
        )
        terms.append(-best[1:])
    with torch.no_grad():
        called = (logits.argmax(1) > 0).cpu().numpy()
        near_lesion = torch.nn.functional.max_pool3d((labels > 0).float()[:, None], 3, 1, 1)
    far = near_lesion[:, 0].cpu().numpy() == 0
    false = lesion_components((called & far).astype(np.uint8))
    m = int(false.max())
    if m:
        worst = torch.full((m + 1,), torch.inf, dtype=log_p.dtype, device=device).scatter_reduce(
            0, torch.from_numpy(false).to(device).reshape(-1), log_p[:, 0].reshape(-1), "amin"
        )
        terms.append(-worst[1:])
    if not terms:
        return logits.sum() * 0.0
    return torch.cat(terms).mean()


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
        weights = class_weight.to(logits.device)
        if size_floor <= 1:
            ce = torch.nn.functional.cross_entropy(logits, labels, weight=weights)
        else:
            voxel = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
            size = lesion_size_weights(labels.cpu().numpy(), size_floor)
            weight = weights[labels] * torch.from_numpy(size).to(logits.device)
            ce = (weight * voxel).sum() / weight.sum()
        total = dice(logits, target) + ce
        if lesion_weight > 0:
            total = total + lesion_weight * lesion_detection_loss(logits, labels)
        return total

    return loss
