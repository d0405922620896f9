"""The datasets deepmir writes pass the BIDS validator (``bids-validator-deno``,
in the dev extra; it runs offline): the simulated raw dataset, its reference
annotations and a predictions folder (predict, then the group level), with 0
errors. Predictions use the stand-in network (``stand_in_shipped``) on the small
phantoms (``simulated_dataset``), one subject with its brain mask and one
without (deepmir derives it), with probabilities and reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import bids_errors, stand_in_models, validate

from deepmir.cli import main
from deepmir.inference.predict import output_paths, predict_dataset
from deepmir.io.bids import SubjectRef

REFERENCE = Path("derivatives") / "reference"


@pytest.fixture(scope="module")
def datasets(simulated_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """(raw dataset, predictions in its derivatives/deepmir): sub-02 has no brain mask."""
    data = tmp_path_factory.mktemp("valid") / "bids"
    shutil.copytree(simulated_dataset, data)
    SubjectRef("02").mask_path(data).unlink()
    out = data / "derivatives" / "deepmir"
    with pytest.MonkeyPatch.context() as mp:
        stand_in_models(mp)
        outcome = predict_dataset(data, out, save_probabilities=True, progress=False, log=str)
        assert sorted(outcome.written) == ["sub-01", "sub-02"], outcome.failed
        assert main([str(data), str(out), "group", "--participant-label", "01", "02"]) == 0
    return data, out


def test_the_simulated_dataset_is_valid_bids(datasets):
    data, _ = datasets
    report = validate(data)
    assert bids_errors(report) == []
    assert sorted(report["summary"]["subjects"]) == ["01", "02"]
    # the validator does check these files: without .bidsignore the SWI and the
    # raw brain mask (no BIDS names yet) are errors
    bare = data.parent / "bare"
    shutil.copytree(data, bare, ignore=shutil.ignore_patterns("derivatives"))
    (bare / ".bidsignore").unlink()
    flagged = bids_errors(validate(bare))
    assert any("NOT_INCLUDED" in e and e.endswith("_swi.nii.gz") for e in flagged), flagged
    participants = json.loads((data / "participants.json").read_text())
    header = (data / "participants.tsv").read_text().splitlines()[0].split("\t")
    assert list(participants) == header
    assert (data / "README.md").is_file()


def test_the_reference_annotations_are_valid_bids_derivatives(datasets):
    data, _ = datasets
    reference = data / REFERENCE
    report = validate(reference)
    assert bids_errors(report) == []
    assert report["summary"]["dataProcessed"] or report["summary"]["totalFiles"] > 0
    description = json.loads((reference / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert (reference / description["DatasetLinks"]["raw"]).resolve() == data.resolve()
    # the instance segmentation has its own lookup (lesion id -> class), which
    # overrides the class table dseg.tsv at the top
    ref = SubjectRef("01")
    anat = ref.anat_dir(reference)
    table = pd.read_csv(anat / "sub-01_lesions.tsv", sep="\t")
    lookup = pd.read_csv(anat / "sub-01_desc-instances_dseg.tsv", sep="\t").set_index("index")
    assert list(lookup.index) == [0, *table.lesion_id]
    assert list(lookup.name[table.lesion_id]) == list(table.name)
    sidecar = json.loads((anat / "sub-01_desc-instances_dseg.json").read_text())
    assert "lesion_id" in sidecar["Description"]
    assert set(sidecar) == set(json.loads((anat / "sub-01_dseg.json").read_text()))
    dictionary = json.loads((reference / "lesions.json").read_text())
    assert list(dictionary) == list(table.columns)


def test_the_predictions_are_valid_bids_derivatives(datasets):
    data, out = datasets
    report = validate(out)
    assert bids_errors(report) == []
    description = json.loads((out / "dataset_description.json").read_text())
    assert (out / description["DatasetLinks"]["raw"]).resolve() == data.resolve()
    assert all(not s["URL"].startswith(("/", "file:")) for s in description["SourceDatasets"])
    paths = output_paths(out, SubjectRef("02"))
    for name in ("dseg-json", "mask-json", "prob-json-1", "report"):
        assert paths[name].is_file(), name
    dseg = json.loads(paths["dseg-json"].read_text())
    assert all(s.startswith("bids:raw:sub-02/anat/") for s in dseg["Sources"])
    assert dseg["SpatialReference"] == "bids:raw:sub-02/anat/sub-02_swi.nii.gz"
    columns = pd.read_csv(output_paths(out, SubjectRef("01"))["lesions"], sep="\t").columns
    assert list(json.loads((out / "lesions.json").read_text())) == list(columns)
    for name in ("index.html", "group_census.tsv", "README.md", ".bidsignore"):
        assert (out / name).is_file(), name
