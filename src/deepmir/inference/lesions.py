"""Post-processing: class probabilities into lesions, one class per lesion.

A lesion is a 26-connected component of voxels whose lesion probability
(1 - p(background)) reaches ``threshold``; components smaller than
``min_size_voxels`` are dropped; each component takes the class with the
largest summed probability inside it (so a lesion never comes out half CMB,
half calcification). Components come from cc3d; the rest is a few lines of
numpy written here because no library assigns one class per component.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class PostProcessing:
    """Saved with every model (config.json) and overridable at predict time."""

    threshold: float = 0.5
    min_size_voxels: int = 2

    def to_dict(self) -> dict[str, float | int]:
        return {"threshold": self.threshold, "min_size_voxels": self.min_size_voxels}


@dataclass
class Lesions:
    """Labelled lesions of one subject."""

    dseg: npt.NDArray[np.uint8]  # class per voxel
    instances: npt.NDArray[np.int32]  # lesion id per voxel (1..n), 0 outside
    labels: npt.NDArray[np.uint8]  # class of lesion id k at index k-1
    probability: npt.NDArray[np.float32]  # mean class probability of each lesion


def lesions_from_probabilities(
    probabilities: npt.NDArray[np.float32], post: PostProcessing | None = None
) -> Lesions:
    """Lesions from class probabilities (L, I, J, K); label 0 is background."""
    post = post or PostProcessing()
    foreground = (1.0 - probabilities[0]) >= post.threshold
    components = cc3d.connected_components(foreground, connectivity=26).astype(np.int32)
    n = int(components.max())
    if n == 0:
        empty = np.zeros(0)
        return Lesions(
            np.zeros(foreground.shape, np.uint8),
            components,
            empty.astype(np.uint8),
            empty.astype(np.float32),
        )
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
    keep = sizes >= post.min_size_voxels
    keep[0] = False
    new_id = np.zeros(n + 1, np.int32)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    instances = new_id[components]
    kept = np.flatnonzero(keep)
    lesion_classes = classes[kept]
    mean_prob = (sums[lesion_classes - 1, kept] / sizes[kept]).astype(np.float32)
    class_of = np.zeros(n + 1, np.uint8)
    class_of[keep] = lesion_classes
    return Lesions(class_of[components], instances, lesion_classes, mean_prob)
