"""The network trains, saves, loads and refuses what it should (tiny network, small phantoms)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from deepmir.evaluation import match_subject
from deepmir.inference.lesions import lesions_from_probabilities
from deepmir.inference.sliding import predict_probabilities
from deepmir.io.bids import SubjectRef
from deepmir.model.checkpoint import (
    WEIGHTS,
    ModelError,
    check_modalities,
    load_model,
    save_model,
)
from deepmir.model.network import TinyNetworkConfig
from deepmir.training.data import fit, prepare, read_annotated
from deepmir.training.train import TrainConfig, train_on_subjects

TINY = TrainConfig(
    network=TinyNetworkConfig(),
    patch_size=(32, 32, 32),
    batch_size=2,
    iterations=40,
    learning_rate=5e-3,
    val_every=1000,
    seed=3,
)


@pytest.fixture(scope="module")
def prepared(simulated_dataset):
    raw = read_annotated(simulated_dataset, TINY.modalities)
    norm = fit(raw, TINY.modalities)
    return [prepare(r, norm) for r in raw], norm


def test_qsm_normalization_keeps_sign_and_scale(prepared):
    subjects, norm = prepared
    assert norm.channels == ("t2w", "swi", "qsm+", "qsm-")
    plus, minus = subjects[0].image[2], subjects[0].image[3]
    assert (plus >= 0).all() and (minus >= 0).all() and not (plus * minus).any()
    qsm = plus - minus
    assert 0.02 < norm.qsm_scale_ppm < 1.0
    assert (qsm < 0).any() and (qsm > 0).any()
    calc = subjects[0].dseg == 3
    if calc.any():
        assert qsm[calc].mean() < 0


def test_a_few_steps_lower_the_loss(prepared):
    subjects, norm = prepared
    result = train_on_subjects(subjects, [], norm, TINY, progress=False)
    assert np.mean(result.losses[-10:]) < 0.9 * np.mean(result.losses[:10])


def test_same_seed_same_weights(prepared):
    subjects, norm = prepared
    config = dataclasses.replace(TINY, iterations=4)
    a = train_on_subjects(subjects, [], norm, config, progress=False).net.state_dict()
    b = train_on_subjects(subjects, [], norm, config, progress=False).net.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    c = train_on_subjects(
        subjects, [], norm, dataclasses.replace(config, seed=4), progress=False
    ).net.state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_overfit_one_subject_finds_its_cmb(prepared):
    subjects, norm = prepared
    with_cmb = [s for s in subjects if (s.dseg == 1).any()]
    assert with_cmb, "the fixture cohort must hold a CMB"
    s = with_cmb[0]
    config = dataclasses.replace(TINY, iterations=250, learning_rate=1e-2)
    net = train_on_subjects([s], [], norm, config, progress=False).net
    pred = lesions_from_probabilities(predict_probabilities(net, s.image, config.patch_size)).dseg
    match = match_subject(s.dseg, s.instances, pred, s.affine)
    assert match.counts(1).true_positives >= 1


def test_checkpoint_round_trip_and_tampering(prepared, tmp_path):
    subjects, norm = prepared
    result = train_on_subjects(
        subjects, [], norm, dataclasses.replace(TINY, iterations=3), progress=False
    )
    save_model(tmp_path / "m", result.net, result.card)
    net, card = load_model(tmp_path / "m")
    assert card.modalities == TINY.modalities
    a = predict_probabilities(result.net, subjects[0].image, TINY.patch_size)
    b = predict_probabilities(net, subjects[0].image, TINY.patch_size)
    np.testing.assert_array_equal(a, b)
    weights = tmp_path / "m" / WEIGHTS
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="sha256"):
        load_model(tmp_path / "m")


def test_model_needing_qsm_names_the_missing_modality(prepared, simulated_dataset):
    subjects, norm = prepared
    config = dataclasses.replace(TINY, modalities=("swi", "qsm"), iterations=1)
    norm2 = dataclasses.replace(norm, modalities=("swi", "qsm"))
    two = [dataclasses.replace(s, image=s.image[1:]) for s in subjects]
    card = train_on_subjects(two, [], norm2, config, progress=False).card
    ref = SubjectRef("01")
    available = {m: ref.modality_path(simulated_dataset, m) for m in ("swi", "t2w")}
    with pytest.raises(ModelError, match=r"missing: qsm \(\*_Chimap.nii.gz\)"):
        check_modalities(card, available)


def test_train_cli_writes_a_loadable_model(simulated_dataset, tmp_path, monkeypatch):
    """The CLI path end to end with the tiny network (patched in for speed)."""
    from deepmir.cli import main

    monkeypatch.setattr("deepmir.model.network.NetworkConfig", TinyNetworkConfig)
    assert (
        main(
            [
                "train",
                "--data",
                str(simulated_dataset),
                "--data",  # two cohorts pooled (here the same one twice)
                str(simulated_dataset),
                "--mask-jitter",
                "0.5",
                "--out",
                str(tmp_path / "m"),
                "--iterations",
                "2",
                "--patch",
                "32",
                "--modalities",
                "swi,qsm",
            ]
        )
        == 0
    )
    net, card = load_model(tmp_path / "m")
    assert card.modalities == ("swi", "qsm")
    assert card.training["iterations_run"] == 2
    assert card.training["data"] == [str(simulated_dataset.resolve())] * 2
    assert card.training["config"]["mask_jitter"] == 0.5
    assert (
        main(
            [
                "train",
                "--data",
                str(simulated_dataset),
                "--out",
                str(tmp_path / "x"),
                "--modalities",
                "swi,pet",
            ]
        )
        == 2
    )


def test_patch_centres_are_brain_voxels_picked_as_argwhere_would(prepared):
    """Candidates are stored as flat int32 indices; a pick is the voxel that the
    same draw from np.argwhere's (N, 3) list gives (so seeds keep their batches)."""
    from deepmir.training.sampling import DEFAULT_MIX, candidate_centres, sample_centres

    subject = prepared[0][0]
    candidates = candidate_centres(subject, swi_channel=1)
    assert all(pool.dtype == np.int32 for pool in candidates.pools.values())
    centres = sample_centres(np.random.default_rng(7), candidates, 50)
    # the same draws against the coordinate lists
    rng = np.random.default_rng(7)
    lists = {
        "cmb": np.argwhere(subject.dseg == 1),
        "iron": np.argwhere(subject.dseg == 2),
        "calcification": np.argwhere(subject.dseg == 3),
        "brain": np.argwhere(subject.brain),
    }
    names = [k for k in DEFAULT_MIX if k in candidates.pools and len(candidates.pools[k])]
    assert "brain" in names and "mimic" in names

    p = np.array([DEFAULT_MIX[k] for k in names])
    picks = rng.choice(len(names), size=50, p=p / p.sum())
    for centre, i in zip(centres, picks, strict=True):
        name = names[i]
        position = int(rng.integers(len(candidates.pools[name])))
        if name in lists:
            assert np.array_equal(centre, lists[name][position])
        assert subject.brain[tuple(centre)] or name != "brain"


def test_lesion_sampling_draws_every_lesion_alike_whatever_its_size():
    """``lesion`` sampling: a 1-voxel CMB gets about as many patch centres as a
    125-voxel one (``voxel`` sampling: about 1 in 126), and each centre is a
    voxel of the lesion drawn."""
    from deepmir.training.data import TrainingSubject
    from deepmir.training.sampling import candidate_centres, sample_centres

    dseg = np.zeros((30, 30, 30), np.uint8)
    instances = np.zeros(dseg.shape, np.int16)
    dseg[5:10, 5:10, 5:10], instances[5:10, 5:10, 5:10] = 1, 1  # 125 voxels
    dseg[20, 20, 20], instances[20, 20, 20] = 1, 2  # 1 voxel
    subject = TrainingSubject(
        name="sub-x",
        image=np.zeros((1, *dseg.shape), np.float32),
        dseg=dseg,
        instances=instances,
        brain=np.ones(dseg.shape, bool),
        affine=np.eye(4),
    )
    mix = {"cmb": 1.0}
    shares = {}
    for mode in ("voxel", "lesion"):
        candidates = candidate_centres(subject, None, mode)
        centres = sample_centres(np.random.default_rng(3), candidates, 2000, mix)
        assert (dseg[tuple(centres.T)] == 1).all()
        shares[mode] = float((instances[tuple(centres.T)] == 2).mean())
    assert shares["voxel"] < 0.03
    assert 0.45 < shares["lesion"] < 0.55
    with pytest.raises(ValueError, match="lesion sampling"):
        candidate_centres(subject, None, "size")


def test_pooled_cohorts_are_read_together_and_a_repeated_subject_is_refused(simulated_dataset):
    """tune and calibrate take --data more than once (read_annotated pools the
    folders); the same subject twice is refused with the folder named."""
    from deepmir.io.loader import SubjectDataError
    from deepmir.training.data import folder_record, read_annotated

    one = read_annotated(simulated_dataset, ("swi",), spacing_mm=2.0)
    assert len(one) == 2
    with pytest.raises(SubjectDataError, match="also in"):
        read_annotated([simulated_dataset, simulated_dataset], ("swi",), spacing_mm=2.0)
    assert folder_record([simulated_dataset]) == str(simulated_dataset.resolve())
    assert folder_record([simulated_dataset, simulated_dataset.parent]) == [
        str(simulated_dataset.resolve()),
        str(simulated_dataset.parent.resolve()),
    ]


def test_an_interrupted_simulation_is_refused_not_trained_on(simulated_dataset, tmp_path):
    """simulate describes the cohort first: a run stopped half-way leaves fewer
    subjects than dataset_description.json records; reading it says so."""
    import shutil

    from deepmir.cli import main
    from deepmir.io.loader import SubjectDataError
    from deepmir.training.data import read_annotated

    data = tmp_path / "cut"
    shutil.copytree(simulated_dataset, data)
    shutil.rmtree(data / "sub-02")
    with pytest.raises(SubjectDataError, match="records 2 simulated subjects, 1 found") as info:
        read_annotated(data, ("swi",), spacing_mm=2.0)
    assert str(data) in str(info.value)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "m")]) == 2
    assert not list((tmp_path / "m").glob("*"))  # checked writable, nothing written


def test_lesion_size_weights_lift_small_lesions_to_the_floor():
    from deepmir.training.loss import lesion_size_weights

    labels = np.zeros((2, 12, 12, 12), np.uint8)
    labels[0, 1, 1, 1] = 1  # a 1-voxel CMB
    labels[0, 5:9, 5:9, 5:9] = 1  # a 64-voxel CMB
    labels[1, 2:4, 2, 2] = 3  # a 2-voxel calcification
    labels[1, 4, 2, 2] = 1  # a 1-voxel CMB touching it: another class, another lesion
    w = lesion_size_weights(labels, 8)
    assert w[0, 1, 1, 1] == 8.0
    assert (w[0, 5:9, 5:9, 5:9] == 1.0).all()
    assert w[1, 2, 2, 2] == 4.0 and w[1, 4, 2, 2] == 8.0
    assert w[labels == 0].min() == w[labels == 0].max() == 1.0
    assert (lesion_size_weights(labels, 0) == 1.0).all()


def test_size_floor_changes_the_loss_only_where_small_lesions_are():
    from deepmir.training.loss import segmentation_loss

    torch.manual_seed(0)
    logits = torch.randn(1, 4, 10, 10, 10)
    target = torch.zeros(1, 1, 10, 10, 10, dtype=torch.int64)
    target[0, 0, 2:6, 2:6, 2:6] = 1  # 64 voxels: above the floor
    plain, floored = segmentation_loss(4, 10.0, 0), segmentation_loss(4, 10.0, 8)
    torch.testing.assert_close(plain(logits, target), floored(logits, target))
    target[0, 0, 8, 8, 8] = 1  # a 1-voxel CMB the logits miss
    logits[0, 0, 8, 8, 8], logits[0, 1, 8, 8, 8] = 5.0, -5.0
    assert floored(logits, target) > plain(logits, target)


def test_size_floor_trains_and_is_part_of_the_recipe(prepared):
    subjects, norm = prepared
    config = dataclasses.replace(TINY, iterations=3, lesion_size_floor=8)
    result = train_on_subjects(subjects, [], norm, config, progress=False)
    assert all(np.isfinite(result.losses))
    with pytest.raises(ValueError, match="size floor"):
        dataclasses.replace(TINY, lesion_size_floor=-1)


def test_lesion_loss_scores_each_lesion_and_each_false_positive_once():
    from deepmir.training.loss import lesion_detection_loss, segmentation_loss

    labels = torch.zeros(2, 12, 12, 12, dtype=torch.int64)
    labels[0, 3, 3, 3] = 1  # a 1-voxel CMB
    labels[1, 5:9, 5:9, 5:9] = 2  # a 64-voxel iron deposit
    logits = torch.zeros(2, 4, 12, 12, 12)
    logits[:, 0] = 30.0  # sure background everywhere: both missed
    logits[0, 1, 3, 3, 3] = 1.0  # the CMB's own voxel is its best one
    logits.requires_grad_(True)
    missed = lesion_detection_loss(logits, labels)
    missed.backward()
    assert float(missed.detach()) == pytest.approx((29.0 + 30.0) / 2, abs=1e-3)  # not clipped
    assert logits.grad is not None
    # however sure the miss, the 1-voxel lesion gets a full share of the gradient
    assert float(logits.grad[0, 1, 3, 3, 3]) == pytest.approx(-0.5, abs=1e-3)
    found = logits.detach().clone()
    found[0, 1, 3, 4, 3] = 60.0  # found one voxel off: counts
    found[1, 2, 6, 6, 6] = 60.0  # one voxel of the large lesion suffices
    assert float(lesion_detection_loss(found, labels)) == pytest.approx(0.0, abs=1e-3)
    # two voxels off: the CMB is missed (-log p = 29) and the dot is a false
    # positive (-log of its background probability, 30): each object counts once
    found[0, 1, 3, 5, 3], found[0, 1, 3, 4, 3] = 60.0, 0.0
    assert float(lesion_detection_loss(found, labels)) == pytest.approx(59.0 / 3, abs=1e-3)
    found[0, 1, 3, 5, 3] = 0.0
    found[1, 3, 0:2, 0, 0] = 40.0  # a 2-voxel false calcification: its worst voxel, once
    assert float(lesion_detection_loss(found, labels)) == pytest.approx((29.0 + 10.0) / 3, 1e-3)
    assert float(lesion_detection_loss(logits.detach(), torch.zeros_like(labels))) == 0.0
    target = labels[:, None]
    with_term, without = segmentation_loss(4, 10.0, 8, 1.0), segmentation_loss(4, 10.0, 8)
    gap = with_term(logits.detach(), target) - without(logits.detach(), target)
    assert float(gap) == pytest.approx(29.5, abs=1e-3)


def test_lesion_loss_trains_and_is_recorded_for_resume(prepared):
    from deepmir.training.resume import ADDED_FIELDS

    subjects, norm = prepared
    config = dataclasses.replace(TINY, iterations=3, lesion_loss_weight=1.0)
    result = train_on_subjects(subjects, [], norm, config, progress=False)
    assert all(np.isfinite(result.losses))
    assert ADDED_FIELDS["lesion_loss_weight"] == 0.0  # older states ran without it
    with pytest.raises(ValueError, match="lesion loss"):
        dataclasses.replace(TINY, lesion_loss_weight=-1.0)


def test_full_resolution_head_starts_as_its_init_model_then_trains_saves_and_loads(
    prepared, tmp_path
):
    from deepmir.model.network import HeadedUNet, build_network, unet_of

    subjects, norm = prepared
    plain = train_on_subjects(
        subjects, [], norm, dataclasses.replace(TINY, iterations=3), progress=False
    )
    save_model(tmp_path / "plain", plain.net, plain.card)
    headed_network = dataclasses.replace(TinyNetworkConfig(), full_resolution_channels=2)
    # before any step the head adds exactly zero: the headed model is the one it starts from
    fresh = build_network(headed_network, in_channels=len(norm.channels))
    assert isinstance(fresh, HeadedUNet)
    unet_of(fresh).load_state_dict(plain.net.state_dict())
    image = subjects[0].image
    np.testing.assert_array_equal(
        predict_probabilities(fresh, image, TINY.patch_size),
        predict_probabilities(plain.net, image, TINY.patch_size),
    )
    config = dataclasses.replace(
        TINY, network=headed_network, iterations=3, init_from=str(tmp_path / "plain")
    )
    headed = train_on_subjects(subjects, [], norm, config, progress=False)
    assert headed.net.head.conv.weight.abs().sum() > 0  # the head learned
    save_model(tmp_path / "headed", headed.net, headed.card)
    net, card = load_model(tmp_path / "headed")
    assert card.network.full_resolution_channels == 2
    np.testing.assert_array_equal(
        predict_probabilities(headed.net, image, TINY.patch_size),
        predict_probabilities(net, image, TINY.patch_size),
    )
    # a headed model cannot start a model without the head
    with pytest.raises(ModelError, match="full-resolution head"):
        train_on_subjects(
            subjects,
            [],
            norm,
            dataclasses.replace(TINY, iterations=1, init_from=str(tmp_path / "headed")),
            progress=False,
        )
    with pytest.raises(ValueError, match="full_resolution_channels"):
        build_network(dataclasses.replace(headed_network, full_resolution_channels=-1), 4)


def test_parallel_reading_trains_as_a_serial_read_and_fine_tuning_keeps_the_scale(
    simulated_dataset, tmp_path
):
    """``workers`` > 1 reads the --data folders in processes: same subjects, same
    order, same weights as a serial read; a model fine-tuned from another keeps
    the starting model's QSM scale (the weights were trained on it); the device
    trained on is recorded."""
    import json

    from deepmir.training.train import train_model

    config = dataclasses.replace(TINY, iterations=2, tune_post=False)
    data = [simulated_dataset, simulated_dataset]
    serial = train_model(data, tmp_path / "serial", config, val_fraction=0.0, progress=False)
    pooled = train_model(
        data, tmp_path / "pooled", config, val_fraction=0.0, progress=False, workers=2
    )
    assert pooled.card.training["subjects"] == serial.card.training["subjects"]
    assert len(serial.card.training["subjects"]) == 4
    assert pooled.card.weights_sha256 == serial.card.weights_sha256
    assert serial.card.training["ran_on"]["device"] == "cpu"

    start = tmp_path / "serial" / "config.json"
    record = json.loads(start.read_text())
    record["normalization"]["qsm_scale_ppm"] = 0.5
    start.write_text(json.dumps(record))
    tuned = train_model(
        simulated_dataset,
        tmp_path / "tuned",
        dataclasses.replace(config, init_from=str(tmp_path / "serial")),
        val_fraction=0.0,
        progress=False,
    )
    assert tuned.card.normalization.qsm_scale_ppm == 0.5
    assert serial.card.normalization.qsm_scale_ppm != 0.5
