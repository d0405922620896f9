"""The shipped default models, and the demo's figures on its held-out seed."""

from __future__ import annotations

import json
import shutil

import pytest

from deepmir.cli.demo import DEMO_SEED
from deepmir.inference.predict import SHIPPED_MODELS, choose_model, shipped_model_dir
from deepmir.io.bids import find_subjects
from deepmir.model.checkpoint import CONFIG, WEIGHTS, load_model, sha256_of

#: measured on the demo seed (see README / MODEL_CARD.md); the floors sit below
#: the measured figures so that a regression, not noise, makes the test fail
CMB_SENSITIVITY_FLOOR = 0.6
CMB_PRECISION_FLOOR = 0.5


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_model_matches_its_config(name):
    folder = shipped_model_dir(name)
    config = json.loads((folder / CONFIG).read_text())
    assert sha256_of(folder / WEIGHTS) == config["weights_sha256"]
    assert "-".join(config["modalities"]) == name
    assert config["training"]["config"]["seed"] is not None
    assert (folder / WEIGHTS).stat().st_size < 20e6
    _, card = load_model(folder)
    assert card.modalities == tuple(name.split("-"))
    assert (shipped_model_dir(name).parent / "MODEL_CARD.md").exists()


def test_default_model_is_chosen_by_the_modalities_present(simulated_dataset, tmp_path):
    refs = find_subjects(simulated_dataset)
    assert choose_model("default", simulated_dataset, refs).name == "default (t2w-swi-qsm)"
    no_t2w = tmp_path / "no_t2w"
    shutil.copytree(simulated_dataset, no_t2w)
    for ref in refs:
        ref.modality_path(no_t2w, "t2w").unlink()
    assert choose_model("default", no_t2w, refs).name == "default (swi-qsm)"


def test_demo_on_the_held_out_seed_is_above_its_floor(tmp_path):
    """One 1 mm subject of the demo seed through simulate, predict, evaluate."""
    from deepmir.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n", "2", "--seed", str(DEMO_SEED)]) == 0
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    cmb = metrics["classes"]["cmb"]
    sensitivity = cmb["true_positives"] / cmb["n_reference"]
    precision = cmb["true_positives"] / max(cmb["n_predicted"], 1)
    assert sensitivity >= CMB_SENSITIVITY_FLOOR, cmb
    assert precision >= CMB_PRECISION_FLOOR, cmb
    assert (out / "bids" / "derivatives" / "deepmir" / "index.html").exists()
