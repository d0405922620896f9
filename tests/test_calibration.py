"""Calibrated lesion probability: fit, ECE, storage with the model, lesion outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from deepmir.inference.calibration import (
    Calibration,
    ClassCalibration,
    LesionOutcomes,
    expected_calibration_error,
    fit_calibration,
    fit_class,
    lesion_outcomes,
    reliability_bins,
    reliability_figure,
)
from deepmir.inference.lesions import Lesions
from deepmir.model.checkpoint import ModelCard, load_model, save_model
from deepmir.model.network import TinyNetworkConfig, build_network
from deepmir.model.preprocess import Normalization


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores uniform on [0, 1]; a lesion is real with probability score^3."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0, 1, n)
    return scores, rng.uniform(0, 1, n) < scores**3


def test_ece_of_known_cases():
    assert expected_calibration_error([0.05, 0.95], [False, True]) == pytest.approx(0.05)
    assert expected_calibration_error([0.9] * 10, [True] * 9 + [False]) == pytest.approx(0.0)
    assert np.isnan(expected_calibration_error([], []))
    count, mean, observed = reliability_bins([0.05, 0.06, 1.0], [True, False, True])
    assert count[0] == 2 and count[-1] == 1 and observed[0] == 0.5
    assert mean[-1] == 1.0 and np.isnan(mean[5])


def test_isotonic_fit_lowers_the_calibration_error():
    scores, real = _synthetic(2000, 0)
    cal = fit_class(scores, real)
    assert cal.method == "isotonic" and cal.n_lesions == 2000
    assert np.all(np.diff(cal.y) >= 0) and min(cal.y) >= 0.01 and max(cal.y) <= 0.99
    assert cal.ece_before > 0.15 and cal.ece_after < 0.03
    # on new lesions too
    new_scores, new_real = _synthetic(2000, 1)
    before = expected_calibration_error(new_scores, new_real)
    after = expected_calibration_error(cal(new_scores), new_real)
    assert after < 0.3 * before
    assert cal(0.5) == pytest.approx(0.125, abs=0.05)


def test_few_lesions_fall_back_and_none_keep_the_score():
    few = fit_class([0.6, 0.7, 0.65], [False, False, False])
    assert few.method == "platt" and few.n_lesions == 3
    assert few(0.65) < 0.65  # pulled down by three false lesions, not to 0.01
    assert few(0.65) > 0.2
    outcomes = LesionOutcomes(
        labels=np.array([1] * 20, np.uint8), scores=np.linspace(0, 1, 20), real=np.arange(20) > 9
    )
    cal = fit_calibration(outcomes)
    assert cal.classes[1].method == "isotonic"
    assert cal.classes[3].method == "identity"
    np.testing.assert_allclose(cal.apply([3, 3], [0.3, 0.8]), [0.3, 0.8])
    assert reliability_figure(outcomes, cal).axes


def test_calibration_round_trips_through_the_model_folder(tmp_path):
    calibration = Calibration(
        {
            1: ClassCalibration((0.2, 0.5, 0.9), (0.1, 0.4, 0.95), "isotonic", 40, 20, 0.2, 0.05),
            3: ClassCalibration((0.0, 1.0), (0.2, 0.2), "platt", 4, 0, 0.5, 0.2),
        },
        {"data": "somewhere"},
        {"swi": {1: ClassCalibration((0.0, 1.0), (0.3, 0.6), "platt", 7, 3, 0.3, 0.1)}},
    )
    card = ModelCard(TinyNetworkConfig(), Normalization(("swi",)), (32, 32, 32), 0)
    card.calibration = calibration
    net = build_network(card.network, 1)
    save_model(tmp_path / "m", net, card)
    _, loaded = load_model(tmp_path / "m")
    assert loaded.calibration == calibration
    np.testing.assert_allclose(
        loaded.calibration.apply([1, 2, 3], [0.35, 0.35, 0.9]), [0.25, 0.35, 0.2]
    )
    # SWI alone: the subset's map (a class it lacks keeps its raw score); any
    # other inputs: the full-input maps
    swi = loaded.calibration.for_inputs(["swi"])
    np.testing.assert_allclose(swi.apply([1, 3], [0.5, 0.9]), [0.45, 0.9])
    assert loaded.calibration.for_inputs(["swi", "qsm"]) is loaded.calibration


def test_lesion_outcomes_follow_the_evaluation_matching():
    reference = np.zeros((20, 20, 20), np.uint8)
    reference[2:4, 2:4, 2:4] = 1  # found as CMB
    reference[10:12, 10:12, 10:12] = 1  # found as calcification: not real
    dseg = np.zeros_like(reference)
    instances = np.zeros(reference.shape, np.int32)
    dseg[16, 16, 16], instances[16, 16, 16] = 1, 1  # false alarm
    dseg[3:5, 3:5, 3:5], instances[3:5, 3:5, 3:5] = 1, 2
    dseg[10:12, 10:12, 11], instances[10:12, 10:12, 11] = 3, 3
    lesions = Lesions(
        dseg=dseg,
        instances=instances,
        labels=np.array([1, 1, 3], np.uint8),
        probability=np.array([0.9, 0.6, 0.7], np.float32),
    )
    out = lesion_outcomes(lesions, reference, None, np.eye(4))
    assert out.real.tolist() == [False, True, False]
    assert out.labels.tolist() == [1, 1, 3]
    np.testing.assert_allclose(out.scores, [0.9, 0.6, 0.7], rtol=1e-6)


def _subjects(n: int, per_subject: int, seed: int, power: float, label: int = 1):
    """Subjects of ``per_subject`` lesions of class ``label``: real with probability score^power."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        scores = rng.uniform(0, 1, per_subject)
        out.append(
            LesionOutcomes(
                labels=np.full(per_subject, label, np.uint8),
                scores=scores,
                real=rng.uniform(0, 1, per_subject) < scores**power,
            )
        )
    return out


def test_selection_keeps_the_raw_score_when_it_is_calibrated_and_maps_it_when_not():
    from deepmir.inference.calibration import fit_selected, select_method

    calibrated = _subjects(40, 25, 0, power=1.0)  # P(real) = score: nothing to fix
    method, scores = select_method(calibrated, 1)
    assert set(scores) == {"identity", "platt", "isotonic"}
    assert method == "identity"
    miscalibrated = _subjects(20, 20, 1, power=4.0)  # raw score far too high
    method, scores = select_method(miscalibrated, 1)
    assert method != "identity"
    assert scores[method]["ece"] < scores["identity"]["ece"] - 0.05
    cal = fit_selected(miscalibrated + _subjects(3, 2, 2, 1.0, label=3))
    assert cal.classes[1].method == method and cal.classes[1].selection == scores
    assert cal.classes[2].method == "identity"  # no iron lesion at all
    # the stored map is the chosen method refitted on every lesion
    new = _subjects(10, 50, 3, power=4.0)
    pooled = LesionOutcomes.concatenate(new)
    after = expected_calibration_error(cal.apply(pooled.labels, pooled.scores), pooled.real)
    assert after < 0.5 * expected_calibration_error(pooled.scores, pooled.real)
    restored = Calibration.from_dict(cal.to_dict())
    assert restored.classes[1].selection == scores


def test_selection_is_seeded_and_rejects_an_unknown_method():
    from deepmir.inference.calibration import select_method

    subjects = _subjects(12, 6, 4, power=2.0)
    assert select_method(subjects, 1, seed=5) == select_method(subjects, 1, seed=5)
    with pytest.raises(ValueError, match="method"):
        fit_class([0.5, 0.6], [True, False], "beta")


def test_calibration_sees_the_lesions_predict_keeps_the_swi_structure_limit_included():
    """calibrate scores the lesions predict would keep: the SWI-structure limit
    is applied to the same resampled SWI as predict's, so a CMB on a dark SWI
    tube is not among the outcomes the calibration is fitted on."""
    import dataclasses

    from conftest import QsmThreshold

    from deepmir.inference.lesions import PostProcessing
    from deepmir.inference.orientation import Reorientation
    from deepmir.inference.predict import WorkingInput
    from deepmir.inference.resample import Resampler
    from deepmir.io.bids import SubjectRef
    from deepmir.io.loader import Subject
    from deepmir.training.calibrate import input_outcomes

    shape = (40, 40, 40)
    norm = Normalization(("swi", "qsm"), qsm_scale_ppm=0.1)
    rng = np.random.default_rng(0)
    swi = (100.0 + rng.normal(0.0, 1.0, shape)).astype(np.float32)
    swi[5:35, 10, 10] = 40.0  # a vein: a dark tube
    swi[18:23, 28:33, 28:33] = 40.0  # a CMB's bloom: a dark blob
    image = np.zeros((len(norm.channels), *shape), np.float32)
    image[norm.channel_indices("swi")[0]] = (swi - 100.0) / 3.0  # as normalize would
    qsm = norm.channel_indices("qsm")[0]
    image[qsm, 20, 10, 10] = image[qsm, 20, 30, 30] = 10.0  # 1 ppm: called CMB
    dseg = np.zeros(shape, np.uint8)
    dseg[20, 30, 30] = 1  # the blob's is real, the tube's is not
    brain = np.ones(shape, bool)
    subject = Subject(SubjectRef("1"), {"swi": swi}, np.eye(4), brain, {})
    orientation = Reorientation.of(np.eye(4), shape)
    grid = Resampler.of(orientation.ras_affine, shape, 1.0)
    assert grid.identity
    inp = WorkingInput(subject, orientation, grid, brain, swi, ("swi", "qsm"))
    card = ModelCard(
        network=TinyNetworkConfig(),
        normalization=norm,
        patch_size=(32, 32, 32),
        seed=0,
        post=PostProcessing(min_size_voxels=(1, 1, 1)),
        working_spacing_mm=1.0,
    )
    net = QsmThreshold(qsm)
    reference = (dseg, np.zeros(shape, np.int16))
    both = input_outcomes(net, image, inp=inp, card=card, reference=reference)
    assert both.labels.tolist() == [1, 1] and sorted(both.real.tolist()) == [False, True]
    card.post = dataclasses.replace(card.post, max_swi_elongation=(3.0, np.inf, np.inf))
    kept = input_outcomes(net, image, inp=inp, card=card, reference=reference)
    # a perturbed copy's own (normalized) SWI channel gives the same limit
    own = input_outcomes(net, image, True, inp=inp, card=card, reference=reference)
    assert own.labels.tolist() == [1] and own.real.tolist() == [True]
    assert kept.labels.tolist() == [1] and kept.real.tolist() == [True]


def test_ece_spread_is_seeded_and_shrinks_with_more_subjects():
    """The subject bootstrap's spread of the ECE is seeded, and smaller on 200
    subjects than on 10 of the same kind."""
    from deepmir.inference.calibration import ece_spread

    rng = np.random.default_rng(1)

    def lesions(n_subjects: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        groups = np.repeat(np.arange(n_subjects), 5)
        p = rng.uniform(0.0, 1.0, groups.size)
        return p, rng.random(groups.size) < p, groups

    few, many = lesions(10), lesions(200)
    assert ece_spread(*few) == ece_spread(*few) > 0  # seeded
    assert ece_spread(*many) < ece_spread(*few) / 2
    assert np.isnan(ece_spread([], [], []))
    # paired: the difference to a baseline on the same resamples (none to itself)
    p, real, groups = many
    assert ece_spread(p, real, groups, baseline=p) == 0.0
    assert ece_spread(np.clip(p + 0.1, 0.0, 1.0), real, groups, baseline=p) > 0
