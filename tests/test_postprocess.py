"""Post-processing: one class per lesion, per-class minimum size and probability."""

from __future__ import annotations

import json

import numpy as np

from deepmir.inference.lesions import PostProcessing, lesions_from_probabilities
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


def test_post_processing_survives_the_model_config():
    post = PostProcessing(threshold=0.7, min_size_voxels=(3, 8, 2), min_probability=(0, 0.6, 0))
    card = ModelCard(TinyNetworkConfig(), Normalization(("swi", "qsm")), (32, 32, 32), 0, post)
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))).post == post
    # an older config with one integer minimum size still loads
    old = PostProcessing.from_dict({"threshold": 0.5, "min_size_voxels": 2})
    assert old.min_size_voxels == (2, 2, 2)
