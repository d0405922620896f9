"""Shared fixtures: small (2 mm) phantom subjects, rendered once per test session."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import deepmir.inference.predict as predict_module
from deepmir.inference.predict import LoadedModel
from deepmir.model.checkpoint import ModelCard
from deepmir.model.network import TinyNetworkConfig
from deepmir.model.preprocess import Normalization
from deepmir.phantom.anatomy import Grid, SubjectAnatomy
from deepmir.phantom.params import SubjectParams, draw_subject_params
from deepmir.phantom.render import SubjectImages, render_subject, subject_anatomy

COHORT_SEED = 5
N_SMALL = 4


@dataclass
class Rendered:
    params: SubjectParams
    images: SubjectImages
    anatomy: SubjectAnatomy


@pytest.fixture(scope="session")
def small_cohort() -> list[Rendered]:
    out = []
    for index in range(N_SMALL):
        params = draw_subject_params(COHORT_SEED, index, subject_anatomy, "small")
        anatomy = subject_anatomy(Grid.make("small"), params.deformation)
        out.append(Rendered(params, render_subject(params, anatomy), anatomy))
    return out


@pytest.fixture(scope="session")
def simulated_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-subject small cohort written by the CLI, as a user would."""
    from deepmir.cli import main

    root = tmp_path_factory.mktemp("sim") / "bids"
    assert (
        main(
            [
                "simulate",
                "--out",
                str(root),
                "--n",
                "2",
                "--seed",
                "11",
                "--size",
                "small",
                "--preset",
                "narrow",
                "--preview",
            ]
        )
        == 0
    )
    return root


class QsmThreshold(torch.nn.Module):
    """A stand-in network: CMB wherever the paramagnetic QSM channel exceeds 5
    (0.5 ppm at the scale below), background elsewhere."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.channel = channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x[:, self.channel]
        zeros = torch.zeros_like(q)
        return torch.stack([zeros, 4.0 * (q - 5.0), zeros - 20.0, zeros - 20.0], 1)


@pytest.fixture
def stand_in_shipped(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Two shipped models (t2w-swi-qsm, swi-qsm: the per-subject choice between
    models of different needs) replaced by stand-ins (2 mm working grid);
    returns how often each was built."""
    return stand_in_models(monkeypatch)


def stand_in_models(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """:func:`stand_in_shipped` for any scope (a ``MonkeyPatch.context()``)."""
    monkeypatch.setattr(predict_module, "SHIPPED_MODELS", ("t2w-swi-qsm", "swi-qsm"))
    built: dict[str, int] = {}
    cache: dict[str, LoadedModel] = {}

    def shipped(name: str) -> LoadedModel:
        if name not in cache:
            modalities = tuple(name.split("-"))
            card = ModelCard(
                network=TinyNetworkConfig(),
                normalization=Normalization(modalities, qsm_scale_ppm=0.1),
                patch_size=(32, 32, 32),
                seed=0,
                working_spacing_mm=2.0,
                weights_sha256=f"stand-in-{name}",
            )
            net = QsmThreshold(card.normalization.channel_indices("qsm")[0])
            cache[name] = LoadedModel(net, card, f"default ({name})")
            built[name] = built.get(name, 0) + 1
        return cache[name]

    monkeypatch.setattr(predict_module, "shipped_model", shipped)
    return built


def _validator() -> str:
    found = shutil.which("bids-validator-deno") or shutil.which(
        "bids-validator-deno", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.fail("bids-validator-deno is not installed: pip install -e '.[dev]'")
    return found


def validate(root: Path) -> dict[str, Any]:
    """The validator's JSON report of the dataset ``root``."""
    done = subprocess.run(
        [_validator(), "--format", "json", "--no-color", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"bids-validator-deno failed on {root}: {done.stderr[-2000:]}")
    return report


def bids_errors(report: dict[str, Any]) -> list[str]:
    """The errors of a validator report (code, file, detail), for asserts."""
    return [
        f"{i['code']} {i.get('location', '')} {i.get('subCode', '')}".strip()
        for i in report["issues"]["issues"]
        if i["severity"] == "error"
    ]
