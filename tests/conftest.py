"""Shared fixtures: small (2 mm) phantom subjects, rendered once per test session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

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
