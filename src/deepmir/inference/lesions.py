"""Post-processing: class probabilities into lesions, one class per lesion.

A candidate lesion is a 26-connected component of voxels whose lesion
probability (1 - p(background)) reaches ``threshold``; it takes the class
with the largest summed probability inside it (so a lesion never comes out
half CMB, half calcification); candidates smaller than their class's minimum
size, or whose mean class probability is below their class's minimum, are
dropped. The per-class minima are chosen on validation subjects after
training (:func:`deepmir.training.train.tune_post_processing`) and stored
with the model. Components come from cc3d; the rest is a few lines of numpy
written here because no library assigns one class per component.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cc3d
import numpy as np
import numpy.typing as npt

N_LESION_CLASSES = 3


@dataclass(frozen=True)
class PostProcessing:
    """Saved with every model (config.json); the threshold can be overridden at predict time."""

    threshold: float = 0.5
    #: per lesion class (cmb, iron, calcification)
    min_size_voxels: tuple[int, ...] = field(default=(2, 2, 2))
    min_probability: tuple[float, ...] = field(default=(0.0, 0.0, 0.0))

    def __post_init__(self) -> None:
        # one number for every class is accepted too
        for name in ("min_size_voxels", "min_probability"):
            value = np.broadcast_to(np.asarray(getattr(self, name)), N_LESION_CLASSES)
            cast = int if name == "min_size_voxels" else float
            object.__setattr__(self, name, tuple(cast(x) for x in value))

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "min_size_voxels": list(self.min_size_voxels),
            "min_probability": list(self.min_probability),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> PostProcessing:
        return PostProcessing(
            threshold=float(d.get("threshold", 0.5)),
            min_size_voxels=d.get("min_size_voxels", 2),
            min_probability=d.get("min_probability", 0.0),
        )


@dataclass
class Candidates:
    """Every component above the threshold, before the per-class minima."""

    components: npt.NDArray[np.int32]  # component id per voxel, 0 outside
    classes: npt.NDArray[np.uint8]  # class of component k at index k (index 0 unused)
    sizes: npt.NDArray[np.int64]
    mean_probability: npt.NDArray[np.float32]


@dataclass
class Lesions:
    """Labelled lesions of one subject."""

    dseg: npt.NDArray[np.uint8]  # class per voxel
    instances: npt.NDArray[np.int32]  # lesion id per voxel (1..n), 0 outside
    labels: npt.NDArray[np.uint8]  # class of lesion id k at index k-1
    probability: npt.NDArray[np.float32]  # mean class probability of each lesion


def candidate_lesions(probabilities: npt.NDArray[np.float32], threshold: float) -> Candidates:
    """Components of ``1 - p(background) >= threshold``, one class each."""
    foreground = (1.0 - probabilities[0]) >= threshold
    components = cc3d.connected_components(foreground, connectivity=26).astype(np.int32)
    n = int(components.max())
    flat = components.ravel()
    inside = flat > 0
    ids = flat[inside]
    sizes = np.bincount(ids, minlength=n + 1)
    sums = np.stack(
        [
            np.bincount(ids, weights=probabilities[c].ravel()[inside], minlength=n + 1)
            for c in range(1, probabilities.shape[0])
        ]
    )  # (L-1, n+1)
    classes = (np.argmax(sums, axis=0) + 1).astype(np.uint8)
    mean = (sums[classes - 1, np.arange(n + 1)] / np.maximum(sizes, 1)).astype(np.float32)
    return Candidates(components, classes, sizes, mean)


def select_lesions(candidates: Candidates, post: PostProcessing) -> Lesions:
    """Apply the per-class minimum size and probability; renumber the survivors."""
    c = candidates
    index = c.classes.astype(np.int64) - 1
    keep = (c.sizes >= np.asarray(post.min_size_voxels)[index]) & (
        c.mean_probability >= np.asarray(post.min_probability)[index]
    )
    keep[0] = False
    kept = np.flatnonzero(keep)
    new_id = np.zeros(len(keep), np.int32)
    new_id[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
    class_of = np.where(keep, c.classes, 0).astype(np.uint8)
    return Lesions(
        dseg=class_of[c.components],
        instances=new_id[c.components],
        labels=c.classes[kept],
        probability=c.mean_probability[kept],
    )


def lesions_from_probabilities(
    probabilities: npt.NDArray[np.float32], post: PostProcessing | None = None
) -> Lesions:
    """Lesions from class probabilities (L, I, J, K); label 0 is background."""
    post = post or PostProcessing()
    return select_lesions(candidate_lesions(probabilities, post.threshold), post)
