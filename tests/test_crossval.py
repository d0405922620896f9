"""Cross-validation by subject and the ablation table (tiny network, small phantoms)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from deepmir.model.network import TinyNetworkConfig
from deepmir.training.crossval import ablate, cross_validate, split_folds, write_cv
from deepmir.training.train import TrainConfig

TINY = TrainConfig(
    network=TinyNetworkConfig(),
    patch_size=(32, 32, 32),
    iterations=3,
    val_every=1000,
    seed=1,
    tune_post=False,
)


def test_folds_split_subjects_once():
    folds = split_folds(10, 4, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(10))
    assert {len(f) for f in folds} == {2, 3}
    assert [f.tolist() for f in split_folds(10, 4, seed=0)] == [f.tolist() for f in folds]
    loo = split_folds(5, 5, seed=0)
    assert all(len(f) == 1 for f in loo)
    with pytest.raises(ValueError, match="folds"):
        split_folds(3, 4, seed=0)


def test_cross_validation_holds_every_subject_out_once(simulated_dataset, tmp_path):
    result = cross_validate(simulated_dataset, TINY, folds=2, progress=False, log=lambda m: None)
    held = [s for fold in result.fold_subjects for s in fold]
    assert sorted(held) == ["sub-01", "sub-02"]
    assert sorted(result.overall.subjects) == ["sub-01", "sub-02"]
    write_cv(result, tmp_path)
    table = (tmp_path / "table2.tsv").read_text().splitlines()
    assert table[0].startswith("model\tcmb_sensitivity")
    assert [r.split("\t")[0] for r in table[1:]] == ["fold 1", "fold 2", "overall (pooled)"]
    for name in ("fold-1", "fold-2", "overall"):
        assert (tmp_path / name / "metrics.json").exists()
    cv = json.loads((tmp_path / "cv.json").read_text())
    assert len(cv["folds"]) == 2 and cv["config"]["iterations"] == 3
    assert cv["n_validation"] == 2


def test_ablation_table_has_one_row_per_variant(simulated_dataset, tmp_path):
    variants = {
        "SWI": (("swi",), (1, 2, 3)),
        "SWI+QSM single-class (CMB)": (("swi", "qsm"), (1,)),
    }
    config = dataclasses.replace(TINY, iterations=2)
    rows = ablate(simulated_dataset, tmp_path, config, 2, variants, progress=False, log=print)
    assert list(rows) == list(variants)
    # the single-class model gets CMB figures only, but is scored against the whole
    # reference, so that calcifications it calls CMB are counted
    single = rows["SWI+QSM single-class (CMB)"]
    assert single["iron"]["sensitivity"] is None and single["calcification"]["f1"] is None
    assert single["iron"]["n_reference"] == rows["SWI"]["iron"]["n_reference"] > 0
    assert single["calcification_as_cmb"] is not None
    assert rows["SWI"]["cmb"]["n_reference"] > 0
    lines = (tmp_path / "ablation.tsv").read_text().splitlines()
    assert len(lines) == 3
