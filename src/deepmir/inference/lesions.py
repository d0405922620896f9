"""Post-processing: class probabilities into lesions, one class per lesion.

A candidate lesion is a 26-connected component of voxels whose lesion
probability (1 - p(background)) reaches ``threshold``; it takes the class
with the largest summed probability inside it (so a lesion never comes out
half CMB, half calcification); candidates smaller than their class's minimum
size, or whose mean class probability is below their class's minimum, or
which are more elongated than their class's maximum, are dropped.

Elongation is the classic vein filter of microbleed detectors (veins are
tubes, CMBs and iron deposits blobs): sqrt(l1 / l2) of the component's second
moments in mm, l1 >= l2 >= l3, each voxel counted as a uniform box (its own
variance, spacing^2 / 12 per axis, is added), so 1 for a ball or a single
voxel, 2 for two voxels in a row, about the length-to-width ratio for a tube.

Extent (hysteresis): detection and extent use two thresholds. A kept lesion
takes in the voxels whose lesion probability reaches ``extent_threshold``
(0.5: lesion more likely than background, a design value, not tuned) and
that are 26-connected to it, as in hysteresis thresholding. A tuned
detection threshold above 0.5 (v0.8's is 0.7) would otherwise keep only each
lesion's most certain voxels and underestimate its volume. Detection is
unchanged: the size, probability, elongation and depth filters and the
lesion's probability are those of the core above ``threshold``; a region
reached from two kept lesions stays with neither (each keeps its core), and
dropped candidates are never taken in.

The dark SWI structure (the vein filter without QSM): elongation above
tells a vein from a blob only when the predicted component shows the vein's
length, and a 1-2 voxel false CMB on a vein does not. A lesion of a class
with a finite ``max_swi_elongation`` is therefore also measured on the SWI:
in a box of ``SWI_BOX`` voxels around its centroid, the voxels more than
``SWI_DARK_SD`` robust standard deviations (1.4826 x the MAD over the box's
brain voxels) below the local median (a 5^3 median filter) form, with the
lesion's own voxels, a 26-connected structure; the lesion is dropped when
that structure's elongation exceeds the limit. A CMB's bloom is a blob
(elongated along B0 by the dipole, about 2), a vein a tube. Computed only
around kept lesions, so it costs milliseconds per lesion.

The brain-mask rim: lesions of a class with ``min_depth_mm`` > 0 that lie
entirely within that distance of the brain-mask edge are dropped. There QSM
carries the residue of background-field removal and the skull's edge, and a
derived mask can take in a little bone: without a given mask, the
calcifications predicted on the robustness phantoms all sat in its outer
2 mm. Depth is counted in erosions of the mask (6-connected, so a city-block
distance, a slight overestimate along diagonals) on the grid of the
probabilities. The depth is a design value, not tuned: the phantoms put no
lesion within 3 mm of the edge, so tuning would always push it up.

The other per-class limits are chosen on validation subjects after training
(:func:`deepmir.training.train.tune_post_processing`) and stored with the
model. Components come from cc3d; the rest is a few lines of numpy written
here because no library assigns one class per component.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cc3d
import nibabel as nib
import numpy as np
import numpy.typing as npt

N_LESION_CLASSES = 3
#: the rim rule's design value: calcifications only (QSM's rim residue and the
#: skull's edge are diamagnetic); CMBs and iron are kept up to the mask edge
DEFAULT_MIN_DEPTH_MM = (0.0, 0.0, 3.0)
#: lesion more likely than background: the extent of a kept lesion (hysteresis)
DEFAULT_EXTENT_THRESHOLD = 0.5
#: the dark SWI structure's box (voxels) and darkness (robust SDs below the local median)
SWI_BOX = 15
SWI_DARK_SD = 4.0


@dataclass(frozen=True)
class PostProcessing:
    """Saved with every model (config.json); the threshold can be overridden at predict time."""

    threshold: float = 0.5
    #: per lesion class (cmb, iron, calcification)
    min_size_voxels: tuple[int, ...] = field(default=(2, 2, 2))
    min_probability: tuple[float, ...] = field(default=(0.0, 0.0, 0.0))
    #: per lesion class; inf keeps every shape
    max_elongation: tuple[float, ...] = field(default=(np.inf, np.inf, np.inf))
    #: per lesion class: a lesion with no voxel this deep (mm) inside the brain
    #: mask is dropped (0: kept wherever it is; a saved config without it: 0)
    min_depth_mm: tuple[float, ...] = field(default=DEFAULT_MIN_DEPTH_MM)
    #: kept lesions grow into 26-connected voxels whose lesion probability
    #: reaches this (capped at ``threshold``; a saved config without it: 0.5)
    extent_threshold: float = DEFAULT_EXTENT_THRESHOLD
    #: per lesion class: a lesion whose dark SWI structure (see the module
    #: docstring) is more elongated than this is dropped (inf: no limit; a
    #: saved config without it: no limit)
    max_swi_elongation: tuple[float, ...] = field(default=(np.inf, np.inf, np.inf))

    def __post_init__(self) -> None:
        # one number for every class is accepted too
        for name in (
            "min_size_voxels",
            "min_probability",
            "max_elongation",
            "min_depth_mm",
            "max_swi_elongation",
        ):
            value = np.broadcast_to(np.asarray(getattr(self, name)), N_LESION_CLASSES)
            cast = int if name == "min_size_voxels" else float
            object.__setattr__(self, name, tuple(cast(x) for x in value))

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "min_size_voxels": list(self.min_size_voxels),
            "min_probability": list(self.min_probability),
            # JSON has no infinity: null means no limit
            "max_elongation": [None if np.isinf(x) else x for x in self.max_elongation],
            "min_depth_mm": list(self.min_depth_mm),
            "extent_threshold": self.extent_threshold,
            "max_swi_elongation": [None if np.isinf(x) else x for x in self.max_swi_elongation],
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> PostProcessing:
        # None (JSON null) means no limit; one number applies to every class
        limits = d.get("max_elongation")
        if not isinstance(limits, list):
            limits = [limits] * N_LESION_CLASSES
        swi_limits = d.get("max_swi_elongation")
        if not isinstance(swi_limits, list):
            swi_limits = [swi_limits] * N_LESION_CLASSES
        return PostProcessing(
            threshold=float(d.get("threshold", 0.5)),
            min_size_voxels=d.get("min_size_voxels", 2),
            min_probability=d.get("min_probability", 0.0),
            max_elongation=tuple(np.inf if x is None else float(x) for x in limits),
            min_depth_mm=d.get("min_depth_mm", 0.0),
            extent_threshold=float(d.get("extent_threshold", DEFAULT_EXTENT_THRESHOLD)),
            max_swi_elongation=tuple(np.inf if x is None else float(x) for x in swi_limits),
        )


@dataclass
class Candidates:
    """Every component above the threshold, before the per-class minima."""

    components: npt.NDArray[np.int32]  # component id per voxel, 0 outside
    classes: npt.NDArray[np.uint8]  # class of component k at index k (index 0 unused)
    sizes: npt.NDArray[np.int64]
    mean_probability: npt.NDArray[np.float32]
    elongation: npt.NDArray[np.float64]
    #: deepest voxel of each component inside the brain mask, in mm (erosions
    #: times the voxel size), counted up to the depth asked for; inf without a mask
    depth_mm: npt.NDArray[np.float64] | None = None


@dataclass
class Lesions:
    """Labelled lesions of one subject."""

    dseg: npt.NDArray[np.uint8]  # class per voxel
    instances: npt.NDArray[np.int32]  # lesion id per voxel (1..n), 0 outside
    labels: npt.NDArray[np.uint8]  # class of lesion id k at index k-1
    probability: npt.NDArray[np.float32]  # mean class probability of each lesion


def voxel_spacing(affine: npt.NDArray[np.float64]) -> tuple[float, ...]:
    """Voxel size in mm along each array axis (what :func:`elongation` needs)."""
    return tuple(float(h) for h in nib.affines.voxel_sizes(affine))


def elongation(
    components: npt.NDArray[np.int32],
    n: int,
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0),
) -> npt.NDArray[np.float64]:
    """sqrt(l1 / l2) of each component's second moments in mm (index 0 unused)."""
    coords = np.nonzero(components)
    ids = components[coords]
    sizes = np.maximum(np.bincount(ids, minlength=n + 1), 1)
    mm = [c * float(h) for c, h in zip(coords, spacing, strict=True)]
    means = [np.bincount(ids, weights=x, minlength=n + 1) / sizes for x in mm]
    cov = np.zeros((n + 1, 3, 3))
    for a in range(3):
        for b in range(a, 3):
            centred = (mm[a] - means[a][ids]) * (mm[b] - means[b][ids])
            cov[:, a, b] = cov[:, b, a] = np.bincount(ids, weights=centred, minlength=n + 1) / sizes
    cov += np.diag(np.square(np.asarray(spacing, float)) / 12.0)
    eig = np.linalg.eigvalsh(cov)  # ascending
    return np.asarray(np.sqrt(eig[:, 2] / eig[:, 1]), np.float64)


def counts_and_centroids(
    instances: npt.NDArray[np.integer[Any]], n: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Voxel count and centroid (voxel coordinates, (n + 1, 3)) of lesions
    1..n of an instance map (index 0 unused), from the lesion voxels only."""
    coords = np.nonzero(instances)  # C order, as a ravel: the same sums as over every voxel
    ids = instances[coords]
    counts = np.bincount(ids, minlength=n + 1)
    sums = np.stack([np.bincount(ids, weights=c, minlength=n + 1) for c in coords])
    return counts, (sums / np.maximum(counts, 1)).T


def component_depth(
    components: npt.NDArray[np.int32],
    n: int,
    mask: npt.NDArray[np.bool_],
    max_depth_mm: float,
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0),
) -> npt.NDArray[np.float64]:
    """Per component (index 0 unused): how many 6-connected erosions of ``mask``
    its deepest voxel survives, times the voxel size, up to ``max_depth_mm``
    (deeper ones get that value).

    The erosions run on each component's bounding box grown by one voxel more
    than the erosions counted: what the box edge erodes inwards (one voxel per
    erosion) never reaches the component, and outside the array is outside
    the mask, as for the whole volume, so the depths are those of eroding the
    whole mask (tests/test_postprocess.py checks it), at the cost of the
    lesions' boxes rather than of the brain."""
    from scipy import ndimage

    step = float(min(spacing))
    erosions = int(np.ceil(max_depth_mm / step - 1e-9))
    depth = np.zeros(n + 1)
    for label, box in enumerate(ndimage.find_objects(components, max_label=n), start=1):
        if box is None:
            continue
        outer = tuple(
            slice(max(s.start - erosions - 1, 0), min(s.stop + erosions + 1, size))
            for s, size in zip(box, components.shape, strict=True)
        )
        own = components[outer] == label
        inside = mask[outer].astype(bool)
        for k in range(erosions + 1):
            if not (inside & own).any():
                break
            depth[label] = min(k * step, max_depth_mm)
            if k < erosions:
                inside = ndimage.binary_erosion(inside)
    return depth


def candidate_lesions(
    probabilities: npt.NDArray[np.float32],
    threshold: float,
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0),
    mask: npt.NDArray[np.bool_] | None = None,
    max_depth_mm: float = 0.0,
) -> Candidates:
    """Components of ``1 - p(background) >= threshold``, one class each; with a
    brain ``mask`` and ``max_depth_mm`` > 0 also their depth in it
    (:func:`component_depth`)."""
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
    depth = None
    if mask is not None and max_depth_mm > 0:
        depth = component_depth(components, n, mask, max_depth_mm, spacing)
    return Candidates(components, classes, sizes, mean, elongation(components, n, spacing), depth)


def select_lesions(candidates: Candidates, post: PostProcessing) -> Lesions:
    """Apply the per-class minimum size and probability and maximum elongation;
    renumber the survivors."""
    c = candidates
    index = c.classes.astype(np.int64) - 1
    keep = (
        (c.sizes >= np.asarray(post.min_size_voxels)[index])
        & (c.mean_probability >= np.asarray(post.min_probability)[index])
        & (c.elongation <= np.asarray(post.max_elongation)[index] + 1e-9)
    )
    if c.depth_mm is not None:
        keep &= c.depth_mm >= np.asarray(post.min_depth_mm)[index] - 1e-9
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
    probabilities: npt.NDArray[np.float32],
    post: PostProcessing | None = None,
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0),
    mask: npt.NDArray[np.bool_] | None = None,
    swi: npt.NDArray[np.float32] | None = None,
) -> Lesions:
    """Lesions from class probabilities (L, I, J, K); label 0 is background;
    ``spacing``: voxel size in mm along I, J, K (for the elongation and the
    depth); ``mask``: the brain mask on the same grid (None: no rim rule);
    ``swi``: the SWI on the same grid (None: no SWI-structure limit)."""
    post = post or PostProcessing()
    candidates = candidate_lesions(
        probabilities, post.threshold, spacing, mask, max(post.min_depth_mm)
    )
    lesions = select_lesions(candidates, post)
    if swi is not None and np.isfinite(post.max_swi_elongation).any():
        lesions = drop_swi_tubes(lesions, swi, mask, spacing, post)
    return grow_lesions(lesions, candidates, probabilities, post)


def swi_structure_elongation(
    instances: npt.NDArray[np.integer[Any]],
    lesion_id: int,
    swi: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_] | None,
    spacing: tuple[float, ...],
    box: tuple[slice, ...] | None = None,
) -> float:
    """Elongation of the dark SWI structure that lesion ``lesion_id`` of
    ``instances`` sits on (module docstring); ``box``: its bounding box, if known."""
    from scipy import ndimage

    if box is None:
        box = ndimage.find_objects((instances == lesion_id).astype(np.int8))[0]
    coords = np.argwhere(instances[box] == lesion_id) + [s.start for s in box]
    centre = np.round(coords.mean(axis=0)).astype(int)
    half = SWI_BOX // 2
    # the median filter needs 2 voxels beyond the box
    outer = tuple(
        slice(max(c - half - 2, 0), min(c + half + 3, n))
        for c, n in zip(centre, instances.shape, strict=True)
    )
    local = swi[outer].astype(np.float32)
    brain = mask[outer] > 0.5 if mask is not None else np.ones(local.shape, bool)
    if brain.sum() < 27:
        brain = np.ones(local.shape, bool)
    filled = np.where(brain, local, np.median(local[brain]))
    residual = filled - ndimage.median_filter(filled, size=5)
    inside = residual[brain]
    mad = 1.4826 * float(np.median(np.abs(inside - np.median(inside))))
    inner = tuple(
        slice(max(c - half, 0) - o.start, min(c + half + 1, n) - o.start)
        for c, n, o in zip(centre, instances.shape, outer, strict=True)
    )
    own = instances[outer][inner] == lesion_id
    dark = (residual[inner] < -SWI_DARK_SD * mad) | own
    parts = cc3d.connected_components(dark, connectivity=26)
    ids = np.unique(parts[own])
    structure = np.isin(parts, ids[ids > 0]).astype(np.int32)
    return float(elongation(structure, 1, spacing)[1])


def drop_swi_tubes(
    lesions: Lesions,
    swi: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_] | None,
    spacing: tuple[float, ...],
    post: PostProcessing,
) -> Lesions:
    """Drop the lesions whose dark SWI structure is more elongated than their
    class's ``max_swi_elongation``; renumber the others."""
    from scipy import ndimage

    limits = np.asarray(post.max_swi_elongation)[lesions.labels.astype(np.int64) - 1]
    keep = np.ones(lesions.labels.size, bool)
    objects = ndimage.find_objects(lesions.instances)
    for k in np.flatnonzero(np.isfinite(limits)):
        value = swi_structure_elongation(
            lesions.instances, int(k) + 1, swi, mask, spacing, objects[k]
        )
        keep[k] = value <= limits[k] + 1e-9
    if keep.all():
        return lesions
    new_id = np.zeros(keep.size + 1, np.int32)
    new_id[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    instances = new_id[lesions.instances]
    classes = np.concatenate([[0], lesions.labels[keep]]).astype(np.uint8)
    return Lesions(
        dseg=classes[instances],
        instances=instances,
        labels=lesions.labels[keep],
        probability=lesions.probability[keep],
    )


def grow_lesions(
    lesions: Lesions,
    candidates: Candidates,
    probabilities: npt.NDArray[np.float32],
    post: PostProcessing,
) -> Lesions:
    """The extent of the kept lesions (hysteresis, see the module docstring):
    each takes the region of ``1 - p(background) >= extent_threshold`` that
    holds it and no other kept lesion; dropped candidates stay out. Counts,
    classes and probabilities are unchanged."""
    extent = min(post.extent_threshold, post.threshold)
    if extent >= post.threshold or lesions.labels.size == 0:
        return lesions
    low = (1.0 - probabilities[0]) >= extent
    low &= (candidates.components == 0) | (lesions.instances > 0)
    regions = cc3d.connected_components(low, connectivity=26)
    core = lesions.instances > 0
    # (region, lesion) pairs: a region holding one kept lesion goes to it
    pairs = np.unique(np.stack([regions[core].astype(np.int64), lesions.instances[core]]), axis=1)
    region_ids, counts = np.unique(pairs[0], return_counts=True)
    alone = np.isin(pairs[0], region_ids[counts == 1])
    owner = np.zeros(int(regions.max()) + 1, np.int32)
    owner[pairs[0][alone]] = pairs[1][alone]
    instances = np.where(core, lesions.instances, owner[regions]).astype(np.int32)
    classes = np.concatenate([[0], lesions.labels]).astype(np.uint8)
    return Lesions(
        dseg=classes[instances],
        instances=instances,
        labels=lesions.labels,
        probability=lesions.probability,
    )
