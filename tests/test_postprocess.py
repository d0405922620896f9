"""Post-processing: one class per lesion, per-class minimum size and probability,
per-class maximum elongation (the vein filter)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from deepmir.inference.lesions import PostProcessing, elongation, lesions_from_probabilities
from deepmir.model.checkpoint import ModelCard
from deepmir.model.network import TinyNetworkConfig
from deepmir.model.preprocess import Normalization


def _probabilities(shape=(20, 20, 20)) -> np.ndarray:
    p = np.zeros((4, *shape), np.float32)
    p[0] = 1.0
    return p


def _put(p: np.ndarray, sl: tuple[slice, ...], label: int, value: float) -> None:
    p[(0, *sl)] = 1.0 - value
    p[(label, *sl)] = value


def test_one_class_per_lesion():
    p = _probabilities()
    _put(p, (slice(2, 5), slice(2, 5), slice(2, 5)), 1, 0.9)  # 27 voxels of CMB
    _put(p, (slice(5, 6), slice(2, 5), slice(2, 5)), 3, 0.8)  # 9 touching voxels of calc
    lesions = lesions_from_probabilities(p)
    assert list(lesions.labels) == [1]
    assert set(np.unique(lesions.dseg)) == {0, 1}
    assert (lesions.dseg == 1).sum() == 36


def test_per_class_minimum_size_and_probability():
    p = _probabilities()
    _put(p, (slice(2, 4), slice(2, 3), slice(2, 3)), 1, 0.9)  # CMB, 2 voxels
    _put(p, (slice(10, 14), slice(10, 12), slice(10, 11)), 2, 0.6)  # iron, 8 voxels, p 0.6
    _put(p, (slice(15, 17), slice(15, 16), slice(15, 16)), 3, 0.95)  # calc, 2 voxels
    assert sorted(lesions_from_probabilities(p).labels) == [1, 2, 3]
    post = PostProcessing(min_size_voxels=(3, 1, 1))
    assert sorted(lesions_from_probabilities(p, post).labels) == [2, 3]
    post = PostProcessing(min_probability=(0.0, 0.7, 0.0))
    kept = lesions_from_probabilities(p, post)
    assert sorted(kept.labels) == [1, 3]
    assert kept.instances.max() == 2 and set(np.unique(kept.instances)) == {0, 1, 2}
    assert not lesions_from_probabilities(p, PostProcessing(threshold=0.97)).labels.size


def test_elongation_of_balls_and_tubes():
    ids = np.zeros((40, 40, 40), np.int32)
    i, j, k = np.ogrid[:40, :40, :40]
    ids[(i - 10) ** 2 + (j - 10) ** 2 + (k - 10) ** 2 <= 16] = 1  # ball, radius 4
    ids[25, 25, 25] = 2  # one voxel
    ids[30:32, 5, 5] = 3  # two voxels in a row
    ids[5:35, 30:32, 30:32] = 4  # tube 30 x 2 x 2 voxels
    e = elongation(ids, 4)
    assert abs(e[1] - 1.0) < 0.05 and abs(e[2] - 1.0) < 1e-6
    assert abs(e[3] - 2.0) < 1e-6
    assert 12 < e[4] < 18  # length / width = 15
    # in mm: on 2 mm x 0.5 mm x 0.5 mm voxels the tube is 60 mm long, 1 mm wide
    assert np.isclose(elongation(ids, 4, (2.0, 0.5, 0.5))[4], 4 * e[4])  # 60 mm / 1 mm
    # an oblique tube (a vein crossing slices) is as elongated as an axis-aligned one
    oblique = np.zeros((40, 40, 40), np.int32)
    for t in range(25):
        oblique[5 + t, 5 + t, 10:12] = 1
        oblique[5 + t, 6 + t, 10:12] = 1
    assert elongation(oblique, 1)[1] > 8


def test_maximum_elongation_drops_vein_like_lesions():
    p = _probabilities((40, 40, 40))
    _put(p, (slice(4, 8), slice(4, 8), slice(4, 8)), 2, 0.8)  # iron blob
    _put(p, (slice(10, 30), slice(20, 22), slice(20, 22)), 2, 0.8)  # iron along a vein
    _put(p, (slice(10, 30), slice(30, 32), slice(30, 32)), 1, 0.8)  # CMB along a vein
    assert sorted(lesions_from_probabilities(p).labels) == [1, 2, 2]
    kept = lesions_from_probabilities(p, PostProcessing(max_elongation=(np.inf, 3.0, np.inf)))
    assert sorted(kept.labels) == [1, 2]
    assert (kept.dseg == 2).sum() == 64
    assert lesions_from_probabilities(p, PostProcessing(max_elongation=3.0)).labels.tolist() == [2]


def test_post_processing_survives_the_model_config():
    post = PostProcessing(
        threshold=0.7,
        min_size_voxels=(3, 8, 2),
        min_probability=(0, 0.6, 0),
        max_elongation=(np.inf, 2.5, 3.0),
    )
    card = ModelCard(TinyNetworkConfig(), Normalization(("swi", "qsm")), (32, 32, 32), 0, post)
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))).post == post
    # an older config with one integer minimum size still loads
    old = PostProcessing.from_dict({"threshold": 0.5, "min_size_voxels": 2})
    assert old.min_size_voxels == (2, 2, 2)
    assert old.max_elongation == (np.inf, np.inf, np.inf)
    assert old.min_depth_mm == (0.0, 0.0, 0.0)  # no rim rule for a model saved without one


def test_rim_rule_drops_only_the_classes_asked_and_only_lesions_wholly_in_the_rim():
    p = _probabilities((30, 30, 30))
    mask = np.zeros((30, 30, 30), bool)
    mask[3:27, 3:27, 3:27] = True
    _put(p, (slice(3, 5), slice(10, 12), slice(10, 12)), 3, 0.9)  # calc, depth 1 voxel
    _put(p, (slice(3, 5), slice(18, 20), slice(18, 20)), 1, 0.9)  # CMB, same depth
    _put(p, (slice(3, 9), slice(20, 22), slice(12, 14)), 3, 0.9)  # calc reaching 5 deep
    _put(p, (slice(14, 16), slice(14, 16), slice(14, 16)), 3, 0.9)  # calc, deep
    post = PostProcessing(min_size_voxels=1, min_depth_mm=(0.0, 0.0, 3.0))
    kept = lesions_from_probabilities(p, post, (1.0, 1.0, 1.0), mask)
    assert sorted(kept.labels.tolist()) == [1, 3, 3]
    assert kept.dseg[3, 10, 10] == 0 and kept.dseg[3, 20, 12] == 3
    # the depth is in mm: with 0.5 mm voxels the same lesions lie shallower
    half = lesions_from_probabilities(p, post, (0.5, 0.5, 0.5), mask)
    assert half.dseg[3, 20, 12] == 0 and half.dseg[14, 14, 14] == 3
    # without a mask, or with depth 0, nothing is dropped for its place
    assert len(lesions_from_probabilities(p, post).labels) == 4
    none = PostProcessing(min_size_voxels=1, min_depth_mm=0.0)
    assert len(lesions_from_probabilities(p, none, (1.0, 1.0, 1.0), mask).labels) == 4


def test_kept_lesions_take_their_extent_above_the_extent_threshold_only():
    p = _probabilities((30, 30, 30))
    # a CMB: one certain voxel in a 3x3x3 shell at 0.6 (below detection, above extent)
    _put(p, (slice(4, 7), slice(4, 7), slice(4, 7)), 1, 0.6)
    _put(p, (slice(5, 6), slice(5, 6), slice(5, 6)), 1, 0.9)
    # a calcification core too small to keep, in its own shell: nothing of it comes back
    _put(p, (slice(14, 17), slice(4, 7), slice(4, 7)), 3, 0.6)
    _put(p, (slice(15, 16), slice(5, 6), slice(5, 6)), 3, 0.9)
    # two CMB cores joined by a 0.6 bridge: the shared region goes to neither
    _put(p, (slice(20, 21), slice(20, 27), slice(20, 21)), 1, 0.6)
    _put(p, (slice(20, 21), slice(20, 21), slice(20, 21)), 1, 0.9)
    _put(p, (slice(20, 21), slice(26, 27), slice(20, 21)), 1, 0.9)
    # a region at 0.6 holding no core is not a lesion
    _put(p, (slice(10, 12), slice(20, 22), slice(20, 22)), 2, 0.6)
    post = PostProcessing(threshold=0.7, min_size_voxels=(1, 1, 2))
    lesions = lesions_from_probabilities(p, post)
    assert sorted(lesions.labels.tolist()) == [1, 1, 1]
    first = lesions.instances[5, 5, 5]
    assert (lesions.instances == first).sum() == 27  # grown over the shell
    assert np.isclose(lesions.probability[first - 1], 0.9)  # the core's probability
    assert (lesions.dseg[14:17, 4:7, 4:7] == 0).all()  # dropped candidates stay out
    assert (lesions.dseg[20, 21:26, 20] == 0).all() and lesions.dseg[20, 20, 20] == 1
    assert (lesions.dseg[10:12, 20:22, 20:22] == 0).all()
    assert (lesions.dseg > 0).sum() == 27 + 2
    # extent at the detection threshold: the cores alone, as before the extent rule
    cores = lesions_from_probabilities(p, dataclasses.replace(post, extent_threshold=0.7))
    assert (cores.dseg > 0).sum() == 3
    assert PostProcessing.from_dict(post.to_dict()) == post
    assert PostProcessing.from_dict({"threshold": 0.7}).extent_threshold == 0.5


def test_a_cmb_on_a_dark_swi_tube_is_dropped_and_one_on_a_blob_kept():
    p = _probabilities((40, 40, 40))
    rng = np.random.default_rng(0)
    swi = (100.0 + rng.normal(0.0, 1.0, (40, 40, 40))).astype(np.float32)
    swi[5:35, 10, 10] = 40.0  # a vein: a dark tube, 30 voxels long
    swi[18:23, 28:33, 28:33] = 40.0  # a CMB's bloom: a dark 5^3 blob
    _put(p, (slice(20, 21), slice(10, 11), slice(10, 11)), 1, 0.9)  # 1-voxel CMB on the vein
    _put(p, (slice(20, 21), slice(30, 31), slice(30, 31)), 1, 0.9)  # 1-voxel CMB in the blob
    post = PostProcessing(min_size_voxels=1, max_elongation=3.0)
    # the predicted components are single voxels: the elongation limit keeps both
    assert lesions_from_probabilities(p, post, swi=swi).labels.tolist() == [1, 1]
    vein_filter = dataclasses.replace(post, max_swi_elongation=(3.0, np.inf, np.inf))
    kept = lesions_from_probabilities(p, vein_filter, swi=swi)
    assert kept.labels.tolist() == [1]
    assert kept.dseg[20, 30, 30] == 1 and kept.dseg[20, 10, 10] == 0
    assert set(np.unique(kept.instances)) == {0, 1}
    # without the SWI, or for another class's limit, nothing is dropped
    assert len(lesions_from_probabilities(p, vein_filter).labels) == 2
    iron_only = dataclasses.replace(post, max_swi_elongation=(np.inf, 3.0, 3.0))
    assert len(lesions_from_probabilities(p, iron_only, swi=swi).labels) == 2
    assert PostProcessing.from_dict(vein_filter.to_dict()) == vein_filter
    assert PostProcessing.from_dict({"threshold": 0.5}).max_swi_elongation == (np.inf,) * 3


def _depth_by_eroding_everything(components, n, mask, max_depth_mm, step=1.0):
    """The definition: erode the whole mask, note which components each erosion reaches."""
    from scipy import ndimage

    depth = np.zeros(n + 1)
    inside = mask.copy()
    for k in range(int(np.ceil(max_depth_mm / step - 1e-9)) + 1):
        reached = np.bincount(components[inside], minlength=n + 1) > 0
        depth[reached] = min(k * step, max_depth_mm)
        inside = ndimage.binary_erosion(inside)
    return depth


def test_component_depth_on_lesion_boxes_equals_eroding_the_whole_mask():
    import cc3d
    from scipy import ndimage

    from deepmir.inference.lesions import component_depth

    rng = np.random.default_rng(7)
    for trial in range(6):
        shape = (30, 26, 22)
        mask = ndimage.binary_opening(ndimage.gaussian_filter(rng.random(shape), 2) > 0.48)
        mask[:, :, -2:] |= trial % 2 == 0  # a mask that runs into the array edge
        blobs = ndimage.gaussian_filter(rng.random(shape), 1) > 0.62
        components = cc3d.connected_components(blobs, connectivity=26).astype(np.int32)
        n = int(components.max())
        assert n > 5
        for max_depth in (1.0, 2.5, 3.0, 5.0):
            expected = _depth_by_eroding_everything(components, n, mask, max_depth)
            got = component_depth(components, n, mask, max_depth)
            np.testing.assert_array_equal(got[1:], expected[1:])  # index 0 is unused
        assert len(set(expected[1:])) > 2  # the trial spans several depths
