"""Lesions and their one-to-one matching (``docs/metrics.md``).

A *lesion* is a set of voxels with one class label (see :mod:`deepmir.labels`).
Reference lesions come from the instance map (``desc-instances_dseg``) where
one is given, else from the 26-connected components of each class of the
reference ``dseg``; predicted lesions are always the 26-connected components of
each class of the predicted ``dseg``.

Matching, per class and per subject, follows the DEEPMIR/VALDO rule of
``metrics.md``: one-to-one, greedy by centroid distance in mm (nearest pairs
first). A reference lesion and a predicted lesion may match when they overlap
by at least one voxel, or when their centroids lie within (<=)
``max(3 mm, equivalent-sphere radius of the reference lesion)``. A predicted
lesion that matches nothing is a false positive, a reference lesion that
matches nothing a false negative, and a second prediction on an already
matched lesion a false positive.

Class confusion comes from a second run of the same rule *across* classes,
made after the per-class run and on what it left over: every reference lesion
left unmatched in its own class may match one predicted lesion of another
class left unmatched in its own class (again greedy, nearest pairs first). A
calcification found only as a CMB is therefore both a false negative of
``calcification`` and a false positive of ``cmb``, and is counted once in the
confusion table at (calcification, cmb). A correct-class match always wins
over a wrong-class one.

Conventions: voxel coordinates are (i, j, k) array indices; scanner
coordinates are (x, y, z) in mm, obtained with the image's 4x4 voxel-to-scanner
``affine``. Volumes are in mm^3 (voxel volume ``|det(affine[:3, :3])|``, so
anisotropic and oblique grids are handled). Label indices are those of
:data:`deepmir.labels.LABELS`.

Everything here works on numpy arrays and does no I/O, so training and
cross-validation code can call :func:`match_subject` directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import cc3d
import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from deepmir.labels import BACKGROUND, LABELS, LESION_CLASSES

#: Smallest centroid distance (mm) within which a pair may always match.
MIN_MATCH_DISTANCE_MM = 3.0

#: Voxel connectivity of lesions extracted as connected components.
CONNECTIVITY: Final = 26

#: Slack (mm) on the distance test, so that a centroid exactly 3 mm away is
#: not rejected by floating-point rounding.
_DISTANCE_SLACK_MM = 1e-6

IntArray = npt.NDArray[np.integer[Any]]
FloatArray = npt.NDArray[np.floating[Any]]


@dataclass(frozen=True)
class Lesion:
    """One lesion: a class label and where it sits.

    Attributes
    ----------
    label : int
        Class index (1 cmb, 2 iron, 3 calcification).
    source_id : int
        Its id in the source: the instance id of the reference instance map,
        or the connected-component number (1-based, in cc3d order).
    n_voxels : int
        Number of voxels.
    volume_mm3 : float
        ``n_voxels`` times the voxel volume.
    centroid_ijk : tuple of float
        Centroid in voxel coordinates (i, j, k).
    centroid_xyz : tuple of float
        Centroid in scanner coordinates (x, y, z), mm.
    equivalent_radius_mm : float
        Radius of the sphere of the same volume, ``(3 V / 4 pi) ** (1/3)``.
    """

    label: int
    source_id: int
    n_voxels: int
    volume_mm3: float
    centroid_ijk: tuple[float, float, float]
    centroid_xyz: tuple[float, float, float]
    equivalent_radius_mm: float

    @property
    def name(self) -> str:
        """Class name of :attr:`label`."""
        return LABELS[self.label]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.source_id,
            "label": self.label,
            "class": self.name,
            "n_voxels": self.n_voxels,
            "volume_mm3": self.volume_mm3,
            "centroid_ijk": list(self.centroid_ijk),
            "centroid_xyz": list(self.centroid_xyz),
            "equivalent_radius_mm": self.equivalent_radius_mm,
        }


@dataclass(frozen=True)
class LesionMap:
    """Lesions of one volume and the map of which voxel belongs to which.

    Attributes
    ----------
    lesions : tuple of Lesion
    index_map : ndarray of int32, shape (I, J, K)
        ``index_map[i, j, k] == n + 1`` where the voxel belongs to
        ``lesions[n]``, 0 elsewhere.
    """

    lesions: tuple[Lesion, ...]
    index_map: npt.NDArray[np.int32]


@dataclass(frozen=True)
class MatchedPair:
    """A reference lesion matched to a predicted lesion.

    Attributes
    ----------
    reference : int
        Index into :attr:`SubjectMatch.reference_lesions`.
    predicted : int
        Index into :attr:`SubjectMatch.predicted_lesions`.
    distance_mm : float
        Distance between the two centroids, mm.
    overlap_voxels : int
        Voxels the two share.
    dice : float
        Voxel Dice of the pair, ``2 |R & P| / (|R| + |P|)``; 0 for a pair
        matched by distance alone.
    """

    reference: int
    predicted: int
    distance_mm: float
    overlap_voxels: int
    dice: float


@dataclass(frozen=True)
class ClassCounts:
    """Lesion counts of one class in one subject."""

    label: int
    n_reference: int
    n_predicted: int
    true_positives: int
    false_positives: int
    false_negatives: int
    pair_dice: tuple[float, ...]


@dataclass(frozen=True)
class SubjectMatch:
    """The outcome of matching one subject's prediction against its reference.

    Attributes
    ----------
    reference_lesions, predicted_lesions : tuple of Lesion
    matches : tuple of MatchedPair
        Same-class matches: the true positives.
    cross_class_matches : tuple of MatchedPair
        Matches of the second, cross-class run (class confusion). These are
        not true positives: both lesions remain a false negative and a false
        positive of their own classes.
    """

    reference_lesions: tuple[Lesion, ...]
    predicted_lesions: tuple[Lesion, ...]
    matches: tuple[MatchedPair, ...]
    cross_class_matches: tuple[MatchedPair, ...]

    def counts(self, label: int) -> ClassCounts:
        """TP, FP and FN of one class (label index)."""
        n_reference = sum(1 for lesion in self.reference_lesions if lesion.label == label)
        n_predicted = sum(1 for lesion in self.predicted_lesions if lesion.label == label)
        pairs = [p for p in self.matches if self.reference_lesions[p.reference].label == label]
        true_positives = len(pairs)
        return ClassCounts(
            label=label,
            n_reference=n_reference,
            n_predicted=n_predicted,
            true_positives=true_positives,
            false_positives=n_predicted - true_positives,
            false_negatives=n_reference - true_positives,
            pair_dice=tuple(p.dice for p in pairs),
        )

    def confusion(self) -> npt.NDArray[np.int64]:
        """Lesion confusion matrix indexed by label: ``[reference, predicted]``.

        Row and column 0 (background) hold the lesions matched by nothing:
        ``[c, 0]`` reference lesions of class ``c`` found by no prediction of
        any class, ``[0, c]`` predicted lesions of class ``c`` that match no
        reference lesion of any class. The diagonal holds the true positives.
        """
        size = max(LABELS) + 1
        table = np.zeros((size, size), dtype=np.int64)
        ref_used = np.zeros(len(self.reference_lesions), dtype=bool)
        pred_used = np.zeros(len(self.predicted_lesions), dtype=bool)
        for pair in (*self.matches, *self.cross_class_matches):
            reference = self.reference_lesions[pair.reference]
            predicted = self.predicted_lesions[pair.predicted]
            table[reference.label, predicted.label] += 1
            ref_used[pair.reference] = True
            pred_used[pair.predicted] = True
        for lesion, used in zip(self.reference_lesions, ref_used, strict=True):
            if not used:
                table[lesion.label, BACKGROUND] += 1
        for lesion, used in zip(self.predicted_lesions, pred_used, strict=True):
            if not used:
                table[BACKGROUND, lesion.label] += 1
        return table

    def to_dict(self) -> dict[str, Any]:
        def pair_dict(pair: MatchedPair) -> dict[str, Any]:
            return {
                "reference_id": self.reference_lesions[pair.reference].source_id,
                "predicted_id": self.predicted_lesions[pair.predicted].source_id,
                "reference_class": self.reference_lesions[pair.reference].name,
                "predicted_class": self.predicted_lesions[pair.predicted].name,
                "distance_mm": pair.distance_mm,
                "overlap_voxels": pair.overlap_voxels,
                "dice": pair.dice,
            }

        return {
            "reference_lesions": [lesion.to_dict() for lesion in self.reference_lesions],
            "predicted_lesions": [lesion.to_dict() for lesion in self.predicted_lesions],
            "matches": [pair_dict(p) for p in self.matches],
            "cross_class_matches": [pair_dict(p) for p in self.cross_class_matches],
        }


# --------------------------------------------------------------------------
# Lesion extraction


def voxel_volume_mm3(affine: FloatArray) -> float:
    """Volume of one voxel in mm^3: ``|det(affine[:3, :3])|``."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))


def _check_volume(name: str, volume: npt.NDArray[Any]) -> None:
    if volume.ndim != 3:
        raise ValueError(f"{name} must be a 3D array, got shape {volume.shape}")


def _check_affine(affine: FloatArray) -> npt.NDArray[np.float64]:
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"affine must be a finite 4x4 matrix, got shape {matrix.shape}")
    if voxel_volume_mm3(matrix) == 0.0:
        raise ValueError("affine is singular (zero voxel volume)")
    return matrix


def unknown_labels(dseg: npt.NDArray[Any]) -> list[int]:
    """Values of a label volume that are not in the label table, sorted."""
    if dseg.size == 0:
        return []
    low, high = int(dseg.min()), int(dseg.max())
    if low >= 0 and all(v in LABELS for v in range(low, high + 1)):
        return []  # the common case, without sorting the volume
    return [int(v) for v in np.unique(dseg) if int(v) not in LABELS]


def _check_labels(name: str, dseg: npt.NDArray[Any]) -> None:
    unknown = unknown_labels(dseg)
    if unknown:
        raise ValueError(
            f"{name} holds label values {unknown} outside the label table "
            f"{sorted(LABELS)} ({', '.join(f'{k} {v}' for k, v in LABELS.items())})"
        )


def _lesions_from_index_map(
    index_map: npt.NDArray[np.int32],
    labels: npt.NDArray[np.int64],
    source_ids: npt.NDArray[np.int64],
    affine: npt.NDArray[np.float64],
) -> tuple[Lesion, ...]:
    """Size and centroid of every lesion of ``index_map`` (1..n)."""
    n = len(labels)
    if n == 0:
        return ()
    flat = index_map.ravel()
    voxels = np.flatnonzero(flat)
    owner = flat[voxels]
    n_voxels = np.bincount(owner, minlength=n + 1)[1:]
    coords = np.unravel_index(voxels, index_map.shape)
    centroid_ijk = (
        np.stack([np.bincount(owner, weights=c, minlength=n + 1)[1:] for c in coords], axis=1)
        / np.maximum(n_voxels, 1)[:, None]
    )
    centroid_xyz = centroid_ijk @ affine[:3, :3].T + affine[:3, 3]
    volume = n_voxels * voxel_volume_mm3(affine)
    radius = np.cbrt(3.0 * volume / (4.0 * np.pi))
    return tuple(
        Lesion(
            label=int(labels[m]),
            source_id=int(source_ids[m]),
            n_voxels=int(n_voxels[m]),
            volume_mm3=float(volume[m]),
            centroid_ijk=(
                float(centroid_ijk[m, 0]),
                float(centroid_ijk[m, 1]),
                float(centroid_ijk[m, 2]),
            ),
            centroid_xyz=(
                float(centroid_xyz[m, 0]),
                float(centroid_xyz[m, 1]),
                float(centroid_xyz[m, 2]),
            ),
            equivalent_radius_mm=float(radius[m]),
        )
        for m in range(n)
    )


def extract_components(dseg: IntArray, affine: FloatArray) -> LesionMap:
    """Lesions as the 26-connected components of each class of a label volume.

    Components of different classes are kept apart even where they touch.

    Parameters
    ----------
    dseg : ndarray of int, shape (I, J, K)
        Class labels (0 background, 1 cmb, 2 iron, 3 calcification).
    affine : ndarray, shape (4, 4)
        Voxel (i, j, k) to scanner (x, y, z, mm) matrix.

    Returns
    -------
    LesionMap

    Examples
    --------
    >>> dseg = np.zeros((8, 8, 8), np.uint8)
    >>> dseg[1, 1, 1] = dseg[2, 2, 2] = 1  # corner neighbours: one lesion
    >>> dseg[5, 5, 5] = 3
    >>> [lesion.name for lesion in extract_components(dseg, np.eye(4)).lesions]
    ['cmb', 'calcification']
    """
    dseg = np.asarray(dseg)
    _check_volume("dseg", dseg)
    _check_labels("dseg", dseg)
    matrix = _check_affine(affine)
    components, n = cc3d.connected_components(
        np.ascontiguousarray(dseg, dtype=np.uint8), connectivity=CONNECTIVITY, return_N=True
    )
    index_map = components.astype(np.int32, copy=False)
    labels = np.zeros(n + 1, dtype=np.int64)
    labels[index_map.ravel()] = dseg.ravel()
    source_ids = np.arange(1, n + 1, dtype=np.int64)
    return LesionMap(_lesions_from_index_map(index_map, labels[1:], source_ids, matrix), index_map)


def extract_instances(
    dseg: IntArray,
    instances: IntArray,
    affine: FloatArray,
    instance_labels: Mapping[int, int] | None = None,
) -> LesionMap:
    """Lesions as the instances of a reference instance map.

    Parameters
    ----------
    dseg : ndarray of int, shape (I, J, K)
        Class labels of the reference.
    instances : ndarray of int, shape (I, J, K)
        Lesion ids (0 background); each id is one lesion.
    affine : ndarray, shape (4, 4)
        Voxel (i, j, k) to scanner (x, y, z, mm) matrix.
    instance_labels : mapping of int to int, optional
        Lesion id -> class index, e.g. the ``lesion_id`` and ``label`` columns
        of the reference ``lesions.tsv``. Without it, a lesion's class is the
        most frequent non-background label of ``dseg`` inside it.

    Returns
    -------
    LesionMap

    Raises
    ------
    ValueError
        When an id has no class (absent from ``instance_labels``, or no
        labelled voxel in ``dseg``), a class is outside the label table, ids
        are negative, or ``dseg`` labels voxels that no instance covers.
    """
    dseg = np.asarray(dseg)
    instances = np.asarray(instances)
    _check_volume("dseg", dseg)
    _check_volume("instance map", instances)
    if dseg.shape != instances.shape:
        raise ValueError(
            f"instance map shape {instances.shape} differs from dseg shape {dseg.shape}"
        )
    _check_labels("dseg", dseg)
    matrix = _check_affine(affine)
    if instances.size and instances.min() < 0:
        raise ValueError("instance map holds negative lesion ids")
    uncovered = int(np.count_nonzero((dseg != BACKGROUND) & (instances == 0)))
    if uncovered:
        raise ValueError(
            f"dseg labels {uncovered} lesion voxel(s) that no lesion of the instance map covers"
        )
    flat_ids = instances.ravel().astype(np.int64, copy=False)
    if flat_ids.size and flat_ids.max() < 2**24:
        # Renumber ids 1..n through a look-up table: ids are int16 in the
        # contract, so the table is small and no sort of the volume is needed.
        present = np.bincount(flat_ids)
        present[0] = 0
        source_ids = np.flatnonzero(present).astype(np.int64)
        lookup = np.zeros(present.size, dtype=np.int32)
        lookup[source_ids] = np.arange(1, source_ids.size + 1, dtype=np.int32)
        index_map = lookup[flat_ids].reshape(instances.shape)
    else:
        ids, inverse = np.unique(flat_ids, return_inverse=True)
        has_background = bool(ids.size) and ids[0] == 0
        source_ids = ids[1:] if has_background else ids
        index_map = (inverse + (0 if has_background else 1)).astype(np.int32)
        index_map = index_map.reshape(instances.shape)
    n = len(source_ids)
    if instance_labels is not None:
        missing = [int(i) for i in source_ids if int(i) not in instance_labels]
        if missing:
            raise ValueError(f"lesion ids {missing[:10]} of the instance map have no label")
        labels = np.array([int(instance_labels[int(i)]) for i in source_ids], dtype=np.int64)
        bad = sorted({int(v) for v in labels if int(v) not in LESION_CLASSES})
        if bad:
            raise ValueError(f"lesion labels {bad} are not lesion classes {sorted(LESION_CLASSES)}")
    else:
        n_labels = max(LABELS) + 1
        joint = np.bincount(
            index_map.ravel().astype(np.int64) * n_labels + dseg.ravel().astype(np.int64),
            minlength=(n + 1) * n_labels,
        ).reshape(n + 1, n_labels)[1:]
        joint[:, BACKGROUND] = 0
        unlabelled = [int(source_ids[m]) for m in np.flatnonzero(joint.sum(axis=1) == 0)]
        if unlabelled:
            raise ValueError(f"lesion ids {unlabelled[:10]} cover no labelled voxel of dseg")
        labels = joint.argmax(axis=1).astype(np.int64)
    return LesionMap(_lesions_from_index_map(index_map, labels, source_ids, matrix), index_map)


def extract_reference_lesions(
    dseg: IntArray,
    instances: IntArray | None,
    affine: FloatArray,
    instance_labels: Mapping[int, int] | None = None,
) -> LesionMap:
    """Reference lesions: the instance map where present, else components."""
    if instances is None:
        return extract_components(dseg, affine)
    return extract_instances(dseg, instances, affine, instance_labels)


# --------------------------------------------------------------------------
# Matching


@dataclass(frozen=True)
class CandidatePairs:
    """Reference/prediction pairs allowed to match, as parallel arrays."""

    reference: npt.NDArray[np.int64]
    predicted: npt.NDArray[np.int64]
    distance_mm: npt.NDArray[np.float64]
    overlap_voxels: npt.NDArray[np.int64]


def _centroids(lesions: tuple[Lesion, ...]) -> npt.NDArray[np.float64]:
    return np.array([lesion.centroid_xyz for lesion in lesions], dtype=np.float64).reshape(-1, 3)


def candidate_pairs(reference: LesionMap, predicted: LesionMap) -> CandidatePairs:
    """All pairs that may match under the rule, whatever their classes.

    A pair may match when the two lesions share at least one voxel, or when
    their centroids lie within ``max(3 mm, reference equivalent radius)``.
    """
    if reference.index_map.shape != predicted.index_map.shape:
        raise ValueError(
            f"reference grid {reference.index_map.shape} differs from "
            f"prediction grid {predicted.index_map.shape}"
        )
    n_ref, n_pred = len(reference.lesions), len(predicted.lesions)
    if n_ref == 0 or n_pred == 0:
        empty = np.zeros(0, dtype=np.int64)
        return CandidatePairs(empty, empty, np.zeros(0), empty)

    # Overlap of every touching pair, from the voxels both maps label.
    ref_flat = reference.index_map.ravel()
    pred_flat = predicted.index_map.ravel()
    both = (ref_flat > 0) & (pred_flat > 0)
    codes = (ref_flat[both].astype(np.int64) - 1) * n_pred + (pred_flat[both] - 1)
    overlap_codes, overlap_counts = np.unique(codes, return_counts=True)

    # Pairs within the distance of the rule; a k-d tree avoids a dense
    # n_ref x n_pred matrix when a noisy prediction has many components.
    ref_xyz, pred_xyz = _centroids(reference.lesions), _centroids(predicted.lesions)
    radius = np.maximum(
        MIN_MATCH_DISTANCE_MM,
        np.array([lesion.equivalent_radius_mm for lesion in reference.lesions]),
    )
    near = cKDTree(pred_xyz).query_ball_point(ref_xyz, r=radius + _DISTANCE_SLACK_MM)
    near_codes = np.array(
        [r * n_pred + p for r, hits in enumerate(near) for p in hits], dtype=np.int64
    )

    all_codes = np.union1d(overlap_codes, near_codes)
    ref_idx, pred_idx = np.divmod(all_codes, n_pred)
    distance = np.linalg.norm(ref_xyz[ref_idx] - pred_xyz[pred_idx], axis=1)
    overlap = np.zeros(all_codes.shape, dtype=np.int64)
    overlap[np.searchsorted(all_codes, overlap_codes)] = overlap_counts
    return CandidatePairs(ref_idx, pred_idx, distance, overlap)


def greedy_match(
    reference: npt.NDArray[np.integer[Any]],
    predicted: npt.NDArray[np.integer[Any]],
    distance_mm: npt.NDArray[np.floating[Any]],
) -> list[int]:
    """One-to-one greedy matching of candidate pairs, nearest pairs first.

    Written by hand: no well-kept library implements this VALDO/DEEPMIR rule
    (scipy's ``linear_sum_assignment`` solves the optimal assignment, which
    can differ from the greedy one the challenge and the paper use).

    Parameters
    ----------
    reference, predicted : ndarray of int, shape (n,)
        Lesion indices of each candidate pair.
    distance_mm : ndarray of float, shape (n,)
        Centroid distance of each candidate pair, mm.

    Returns
    -------
    list of int
        Positions (into the candidate arrays) of the accepted pairs, in the
        order they were accepted. Ties in distance go to the lower reference
        index, then the lower prediction index.

    Examples
    --------
    Two predictions on one lesion: the nearer one matches.

    >>> greedy_match(np.array([0, 0]), np.array([0, 1]), np.array([2.0, 1.0]))
    [1]
    """
    order = np.lexsort((predicted, reference, distance_mm))
    ref_taken: set[int] = set()
    pred_taken: set[int] = set()
    accepted: list[int] = []
    for position in order:
        r, p = int(reference[position]), int(predicted[position])
        if r in ref_taken or p in pred_taken:
            continue
        ref_taken.add(r)
        pred_taken.add(p)
        accepted.append(int(position))
    return accepted


def match_lesions(reference: LesionMap, predicted: LesionMap) -> SubjectMatch:
    """Match extracted lesions: per class first, then across classes.

    See the module docstring for the rule and the cross-class run.
    """
    candidates = candidate_pairs(reference, predicted)
    ref_label = np.array([lesion.label for lesion in reference.lesions], dtype=np.int64)
    pred_label = np.array([lesion.label for lesion in predicted.lesions], dtype=np.int64)
    ref_size = np.array([lesion.n_voxels for lesion in reference.lesions], dtype=np.int64)
    pred_size = np.array([lesion.n_voxels for lesion in predicted.lesions], dtype=np.int64)

    def pairs_of(positions: list[int]) -> tuple[MatchedPair, ...]:
        pairs = []
        for position in positions:
            r = int(candidates.reference[position])
            p = int(candidates.predicted[position])
            overlap = int(candidates.overlap_voxels[position])
            pairs.append(
                MatchedPair(
                    reference=r,
                    predicted=p,
                    distance_mm=float(candidates.distance_mm[position]),
                    overlap_voxels=overlap,
                    dice=2.0 * overlap / float(ref_size[r] + pred_size[p]),
                )
            )
        return tuple(pairs)

    if candidates.reference.size:
        same = ref_label[candidates.reference] == pred_label[candidates.predicted]
    else:
        same = np.zeros(0, dtype=bool)

    # Per class: classes never compete, so one run restricted to same-class
    # pairs equals one run per class.
    same_positions = np.flatnonzero(same)
    accepted = same_positions[
        greedy_match(
            candidates.reference[same_positions],
            candidates.predicted[same_positions],
            candidates.distance_mm[same_positions],
        )
    ].tolist()
    matches = pairs_of(accepted)

    # Across classes, on the lesions the per-class run left unmatched.
    ref_free = np.ones(len(reference.lesions), dtype=bool)
    pred_free = np.ones(len(predicted.lesions), dtype=bool)
    for pair in matches:
        ref_free[pair.reference] = False
        pred_free[pair.predicted] = False
    cross = (
        ~same & ref_free[candidates.reference] & pred_free[candidates.predicted]
        if candidates.reference.size
        else np.zeros(0, dtype=bool)
    )
    cross_positions = np.flatnonzero(cross)
    cross_accepted = cross_positions[
        greedy_match(
            candidates.reference[cross_positions],
            candidates.predicted[cross_positions],
            candidates.distance_mm[cross_positions],
        )
    ].tolist()

    return SubjectMatch(
        reference_lesions=reference.lesions,
        predicted_lesions=predicted.lesions,
        matches=tuple(sorted(matches, key=lambda pair: pair.reference)),
        cross_class_matches=tuple(
            sorted(pairs_of(cross_accepted), key=lambda pair: pair.reference)
        ),
    )


def match_subject(
    reference_dseg: IntArray,
    reference_instances: IntArray | None,
    predicted_dseg: IntArray,
    affine: FloatArray,
    *,
    instance_labels: Mapping[int, int] | None = None,
) -> SubjectMatch:
    """Match one subject's predicted lesions against its reference lesions.

    Parameters
    ----------
    reference_dseg : ndarray of int, shape (I, J, K)
        Reference class labels (0..3).
    reference_instances : ndarray of int, shape (I, J, K), or None
        Reference instance map (lesion ids). ``None``: reference lesions are
        the 26-connected components of each class of ``reference_dseg``.
    predicted_dseg : ndarray of int, shape (I, J, K)
        Predicted class labels (0..3), on the reference grid.
    affine : ndarray, shape (4, 4)
        Voxel (i, j, k) to scanner (x, y, z, mm) matrix shared by all volumes.
    instance_labels : mapping of int to int, optional
        Instance id -> class index (``lesion_id`` and ``label`` of the
        reference ``lesions.tsv``); see :func:`extract_instances`.

    Returns
    -------
    SubjectMatch

    Examples
    --------
    >>> reference = np.zeros((16, 16, 16), np.uint8)
    >>> reference[4:6, 4:6, 4:6] = 1
    >>> predicted = np.zeros_like(reference)
    >>> predicted[5:7, 5:7, 5:7] = 1  # overlaps the CMB
    >>> predicted[12, 12, 12] = 1  # a false alarm
    >>> counts = match_subject(reference, None, predicted, np.eye(4)).counts(1)
    >>> counts.true_positives, counts.false_positives, counts.false_negatives
    (1, 1, 0)
    """
    reference_dseg = np.asarray(reference_dseg)
    predicted_dseg = np.asarray(predicted_dseg)
    if reference_dseg.shape != predicted_dseg.shape:
        raise ValueError(
            f"predicted dseg shape {predicted_dseg.shape} differs from "
            f"reference dseg shape {reference_dseg.shape}"
        )
    reference = extract_reference_lesions(
        reference_dseg, reference_instances, affine, instance_labels
    )
    predicted = extract_components(predicted_dseg, affine)
    return match_lesions(reference, predicted)
