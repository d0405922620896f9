"""``deepmir average``: a model whose weights are the weighted mean of others'."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deepmir.cli import main
from deepmir.inference.calibration import Calibration, ClassCalibration
from deepmir.inference.lesions import PostProcessing
from deepmir.model.checkpoint import ModelCard, ModelError, load_model, save_model
from deepmir.model.network import TinyNetworkConfig, build_network
from deepmir.model.preprocess import Normalization
from deepmir.model.soup import average_models


def _model(path: Path, seed: int, threshold: float = 0.5, qsm_scale: float = 0.1) -> Path:
    torch.manual_seed(seed)
    card = ModelCard(
        network=TinyNetworkConfig(),
        normalization=Normalization(("t2w", "swi", "qsm"), qsm_scale_ppm=qsm_scale),
        patch_size=(32, 32, 32),
        seed=seed,
        post=PostProcessing(threshold=threshold),
        optional_modalities=("t2w", "qsm"),
        calibration=Calibration({1: ClassCalibration((0.0, 1.0), (0.2, 0.8), "platt", 10, 5)}),
    )
    net = build_network(card.network, in_channels=len(card.normalization.channels))
    save_model(path, net, card)
    return path


def test_the_average_is_the_weighted_mean_of_the_weights_and_keeps_the_first_post_processing(
    tmp_path: Path,
) -> None:
    a = _model(tmp_path / "a", seed=1, threshold=0.7)
    b = _model(tmp_path / "b", seed=2, threshold=0.3)
    card = average_models([a, b], tmp_path / "ab", weights=[3.0, 1.0])

    wa = load_file(str(a / "model.safetensors"))
    wb = load_file(str(b / "model.safetensors"))
    wab = load_file(str(tmp_path / "ab" / "model.safetensors"))
    assert set(wab) == set(wa)
    differing = 0
    for name, tensor in wab.items():
        if torch.is_floating_point(tensor):
            torch.testing.assert_close(tensor, 0.75 * wa[name] + 0.25 * wb[name])
            differing += int(not torch.equal(wa[name], wb[name]))
    assert differing > 0  # the two inputs did differ: the mean is not a copy

    net, loaded = load_model(tmp_path / "ab")  # a complete, loadable model (sha checked)
    assert loaded.weights_sha256 == card.weights_sha256
    assert loaded.post.threshold == 0.7  # the first model's post-processing
    assert loaded.calibration is None  # the sources' calibration does not fit the mean
    soup = json.loads((tmp_path / "ab" / "config.json").read_text())["training"]["soup"]
    assert [s["weight"] for s in soup["sources"]] == [0.75, 0.25]
    assert soup["sources"][1]["weights_sha256"] == load_model(b)[1].weights_sha256
    with torch.no_grad():
        channels = len(loaded.normalization.channels)
        assert torch.isfinite(net(torch.randn(1, channels, 32, 32, 32))).all()


def test_the_cli_averages_uniformly_and_refuses_models_that_differ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _model(tmp_path / "a", seed=1)
    b = _model(tmp_path / "b", seed=2)
    assert (
        main(["average", "--model", str(a), "--model", str(b), "--out", str(tmp_path / "u")]) == 0
    )
    wa, wb = (load_file(str(m / "model.safetensors")) for m in (a, b))
    wu = load_file(str(tmp_path / "u" / "model.safetensors"))
    name = next(k for k, v in wu.items() if torch.is_floating_point(v))
    torch.testing.assert_close(wu[name], (wa[name] + wb[name]) / 2)

    other = _model(tmp_path / "other", seed=3, qsm_scale=0.2)
    out = tmp_path / "bad"
    assert main(["average", "--model", str(a), "--model", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "normalization" in err and str(other) in err
    assert not out.exists()  # nothing half-written
    assert main(["average", "--model", str(a), "--out", str(tmp_path / "one")]) == 2
    assert "two models or more" in capsys.readouterr().err
    with pytest.raises(ModelError, match="positive"):
        average_models([a, b], tmp_path / "neg", weights=[1.0, 0.0])
