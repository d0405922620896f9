"""Resumable training: a run stopped and resumed ends where an uninterrupted one does."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from deepmir.model.checkpoint import load_model
from deepmir.model.network import TinyNetworkConfig
from deepmir.training.data import fit, prepare, read_annotated
from deepmir.training.provider import SubjectPatches
from deepmir.training.resume import STATE_JSON, ResumeError
from deepmir.training.train import TrainConfig, train_on_subjects

CONFIG = TrainConfig(
    network=TinyNetworkConfig(),
    patch_size=(32, 32, 32),
    batch_size=2,
    iterations=6,
    learning_rate=5e-3,
    val_every=2,
    checkpoint_every=3,
    seed=3,
    tune_post=False,
)


@pytest.fixture(scope="module")
def prepared(simulated_dataset):
    raw = read_annotated(simulated_dataset, CONFIG.modalities)
    norm = fit(raw, CONFIG.modalities)
    return [prepare(r, norm) for r in raw], norm


class Crash(Exception):
    pass


class CrashingPatches(SubjectPatches):
    """The default provider, killed when it is asked for batch ``n + 1``."""

    def __init__(self, *args, n: int) -> None:
        super().__init__(*args)
        self.n, self.calls = n, 0

    def batch(self, rng, size):
        if self.calls == self.n:
            raise Crash
        self.calls += 1
        return super().batch(rng, size)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_resumed_training_equals_uninterrupted_training(prepared, tmp_path):
    subjects, norm = prepared
    train, val = subjects, subjects[1:]
    whole = train_on_subjects(train, val, norm, CONFIG, progress=False, resume_dir=tmp_path / "a")
    assert whole.complete and len(whole.losses) == 6
    assert [i for i, _ in whole.val_f1] == [2, 4, 6]

    crashing = CrashingPatches(train, norm.channels, CONFIG.patch_size, n=3)
    with pytest.raises(Crash):  # killed during iteration 4: the state of iteration 3 is saved
        train_on_subjects(
            train, val, norm, CONFIG, progress=False, provider=crashing, resume_dir=tmp_path / "b"
        )
    saved = json.loads((tmp_path / "b" / STATE_JSON).read_text())
    assert saved["iteration"] == 3 and not saved["complete"]
    resumed = train_on_subjects(
        train, val, norm, CONFIG, progress=False, resume_dir=tmp_path / "b", resume=True
    )
    assert resumed.losses == whole.losses
    assert resumed.val_f1 == whole.val_f1
    assert resumed.card.training["runs"] == 2 and resumed.card.training["complete"]
    _assert_same_weights(resumed.net, whole.net)


def test_resume_folder_holds_no_pickle_and_refuses_another_recipe(prepared, tmp_path):
    subjects, norm = prepared
    config = dataclasses.replace(CONFIG, iterations=2, val_every=1000)
    train_on_subjects(subjects, [], norm, config, progress=False, resume_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert {p.rsplit(".", 1)[1] for p in files} == {"json", "safetensors"}, files
    meta = json.loads((tmp_path / STATE_JSON).read_text())
    tensors = load_file(str(tmp_path / meta["tensors_file"]))
    assert tensors["torch_rng"].dtype == torch.uint8
    assert any(k.startswith("optim.state.0.") for k in tensors)
    assert isinstance(meta["numpy_rng"]["state"]["state"], int)

    other = dataclasses.replace(config, learning_rate=1e-3, time_budget_s=99.0)
    with pytest.raises(ResumeError, match=r"learning_rate: 0\.005 -> 0\.001"):
        train_on_subjects(
            subjects, [], norm, other, progress=False, resume_dir=tmp_path, resume=True
        )
    # only the time budget may change
    same = dataclasses.replace(config, time_budget_s=99.0, checkpoint_every=7)
    result = train_on_subjects(
        subjects, [], norm, same, progress=False, resume_dir=tmp_path, resume=True
    )
    assert len(result.losses) == 2 and result.complete


def test_time_budget_stops_and_train_resume_continues(simulated_dataset, tmp_path, monkeypatch):
    """CLI: a zero time budget stops after one iteration with a model and a resume
    state; --resume runs finish the recipe with the weights of one uninterrupted run."""
    from deepmir.cli import main

    monkeypatch.setattr("deepmir.model.network.NetworkConfig", TinyNetworkConfig)
    base = ["train", "--data", str(simulated_dataset), "--patch", "32", "--modalities", "swi,qsm"]
    base += ["--iterations", "3"]
    assert main([*base, "--out", str(tmp_path / "whole")]) == 0

    out = ["--out", str(tmp_path / "parts")]
    assert main([*base, *out, "--time-budget", "0"]) == 0
    _, card = load_model(tmp_path / "parts")
    assert card.training["iterations_run"] == 1 and card.training["complete"] is False
    assert (tmp_path / "parts" / "resume" / STATE_JSON).exists()
    assert main([*base, *out]) == 2, "an unfinished run is not overwritten without --resume"
    assert main([*base[:-1], "4", *out, "--resume"]) == 2, "another iteration count is refused"
    assert main([*base, *out, "--time-budget", "0", "--resume"]) == 0
    assert main([*base, *out, "--resume"]) == 0
    _, card = load_model(tmp_path / "parts")
    assert card.training["iterations_run"] == 3 and card.training["complete"] is True
    assert card.training["runs"] == 3
    _, whole = load_model(tmp_path / "whole")
    assert card.weights_sha256 == whole.weights_sha256
    np.testing.assert_equal(card.training["best_validation_lesion_f1"], None)


def test_a_state_saved_before_a_new_config_field_still_resumes():
    from deepmir.training.resume import ADDED_FIELDS, config_differences

    requested = CONFIG.to_dict()
    older = {k: v for k, v in json.loads(json.dumps(requested)).items() if k not in ADDED_FIELDS}
    assert config_differences(older, requested) == []
    changed = {**requested, "lesion_size_floor": 8}
    assert config_differences(older, changed) == ["lesion_size_floor: 0 -> 8"]
    # a network field added since (the full-resolution head): absent means 0
    older["network"] = {
        k: v for k, v in older["network"].items() if k != "full_resolution_channels"
    }
    assert config_differences(older, requested) == []
    headed = {**requested, "network": {**requested["network"], "full_resolution_channels": 8}}
    assert len(config_differences(older, headed)) == 1
