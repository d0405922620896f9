"""Modality dropout: one model serves subjects that lack its optional modalities."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from deepmir.inference.predict import output_paths, predict_dataset
from deepmir.io.bids import SubjectRef
from deepmir.model.checkpoint import CONFIG, save_model
from deepmir.model.network import TinyNetworkConfig
from deepmir.model.preprocess import Normalization
from deepmir.training.data import fit, prepare, read_annotated
from deepmir.training.provider import drop_modalities
from deepmir.training.train import TrainConfig, train_on_subjects

TINY = TrainConfig(
    network=TinyNetworkConfig(),
    patch_size=(32, 32, 32),
    batch_size=2,
    iterations=3,
    val_every=1000,
    seed=3,
)


def test_dropout_zeroes_whole_modalities_and_draws_nothing_when_off():
    norm = Normalization(("t2w", "swi", "qsm"))
    channels = {m: norm.channel_indices(m) for m in norm.modalities}
    assert channels == {"t2w": (0,), "swi": (1,), "qsm": (2, 3)}
    images = np.ones((4, 4, 2, 2, 2), np.float32)
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    drop_modalities(rng, images, channels, {})
    assert rng.bit_generator.state == before and images.all()
    drop_modalities(rng, images, channels, {"qsm": 1.0, "t2w": 0.0})
    assert not images[:, 2:].any() and images[:, :2].all()
    with pytest.raises(ValueError, match="SWI is never dropped"):
        TrainConfig(modality_dropout={"swi": 0.5})
    with pytest.raises(ValueError, match="pet is not one of"):
        TrainConfig(modality_dropout={"pet": 0.5})


def test_swi_only_subject_needs_a_model_trained_with_dropout(simulated_dataset, tmp_path):
    raw = read_annotated(simulated_dataset, TINY.modalities)
    norm = fit(raw, TINY.modalities)
    subjects = [prepare(r, norm) for r in raw]
    models = {}
    for name, dropout in (("dropout", {"t2w": 0.5, "qsm": 0.5}), ("plain", {})):
        config = dataclasses.replace(TINY, modality_dropout=dropout)
        result = train_on_subjects(subjects, [], norm, config, progress=False)
        models[name] = tmp_path / name
        save_model(models[name], result.net, result.card)
    saved = json.loads((models["dropout"] / CONFIG).read_text())
    assert saved["optional_modalities"] == ["t2w", "qsm"]
    assert saved["training"]["config"]["modality_dropout"] == {"t2w": 0.5, "qsm": 0.5}

    data = tmp_path / "swi-only"
    shutil.copytree(simulated_dataset, data)
    ref = SubjectRef("01")
    for m in ("t2w", "qsm"):
        ref.modality_path(data, m).unlink()
    outcome = predict_dataset(
        data, tmp_path / "out", model=models["dropout"], participants=["01"], progress=False
    )
    assert not outcome.failed, outcome.failed
    rows = output_paths(tmp_path / "out", ref)["lesions"].read_text().splitlines()
    assert "score" in rows[0].split("\t")
    refused = predict_dataset(
        data, tmp_path / "out2", model=models["plain"], participants=["01"], progress=False
    )
    assert "missing: t2w (*_T2w.nii[.gz]), qsm (*_Chimap.nii[.gz])" in refused.failed["sub-01"]


def test_old_configs_load_with_no_optional_modality_and_no_calibration(tmp_path):
    """A v0.1 config (no optional_modalities, no calibration keys) still loads."""
    import shutil

    from deepmir.inference.predict import shipped_model_dir
    from deepmir.model.checkpoint import WEIGHTS, load_model

    shipped = shipped_model_dir("t2w-swi-qsm")
    config = json.loads((shipped / CONFIG).read_text())
    assert config["optional_modalities"] and config["calibration"]
    del config["optional_modalities"], config["calibration"]
    old = tmp_path / "v0.1"
    old.mkdir()
    shutil.copy(shipped / WEIGHTS, old / WEIGHTS)
    (old / CONFIG).write_text(json.dumps(config))
    _, card = load_model(old)
    assert card.optional_modalities == () and card.calibration is None
    assert card.required_modalities == ("t2w", "swi", "qsm")


def test_cli_parses_modality_dropout():
    from deepmir.cli.train import parse_dropout

    assert parse_dropout("t2w=0.5, QSM=0.3") == {"t2w": 0.5, "qsm": 0.3}
    assert parse_dropout("") == {}
    with pytest.raises(ValueError, match="MODALITY=PROBABILITY"):
        parse_dropout("t2w")
