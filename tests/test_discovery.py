"""Discovery of the inputs users have (BIDS names, entities, filters, a QSM folder)
and the model chosen per subject.

Datasets are copies of the small phantoms (``simulated_dataset``) with renamed
files. Predictions use stand-in networks (CMB where QSM > 0.5 ppm) in place of
the shipped models, on the phantoms' own 2 mm grid, so that they are quick
and find lesions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import deepmir.inference.predict as predict_module
from deepmir.cli import main
from deepmir.inference.predict import (
    LoadedModel,
    choose_models,
    output_paths,
    predict_dataset,
)
from deepmir.io.bids import DiscoveryError, SubjectRef, find_subjects, parse_filters
from deepmir.io.loader import SubjectDataError, load_subject

#: the phantom files of one subject: contract suffix -> file name ending
FILES = ("T2w", "swi", "Chimap", "desc-brain_mask")


def _subject(
    src: Path,
    dst: Path,
    label: str,
    names: dict[str, str | None],
    *,
    session: str | None = None,
    source: str = "01",
) -> Path:
    """Copy phantom subject ``source`` into ``dst`` as ``label`` (and ``session``):
    ``names`` maps a contract suffix (``T2w``, ``swi``, ``Chimap``,
    ``desc-brain_mask``) to the new name's ending after the prefix
    (``acq-swi_T2starw.nii``), or None to leave it out; a ``.nii`` ending is
    written uncompressed."""
    prefix = f"sub-{label}" + (f"_ses-{session}" if session else "")
    anat = SubjectRef(label, session).anat_dir(dst)
    anat.mkdir(parents=True, exist_ok=True)
    if not (dst / "dataset_description.json").exists():
        shutil.copy(src / "dataset_description.json", dst / "dataset_description.json")
    for suffix in FILES:
        ending = names.get(suffix, f"{suffix}.nii.gz")
        if ending is None:
            continue
        original = SubjectRef(source).anat_dir(src) / f"sub-{source}_{suffix}.nii.gz"
        target = anat / f"{prefix}_{ending}"
        if ending.endswith(".nii"):
            img = nib.load(original)
            nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), target)
        else:
            shutil.copy(original, target)
    return anat


def _chosen(root: Path, **kw) -> dict[str, dict[str, str]]:
    return {
        str(r): {m: Path(p).name for m, p in r.files.modalities.items()}
        for r in find_subjects(root, **kw)
    }


# --- naming variants -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ({"T2w": "T2w.nii", "Chimap": "Chimap.nii"}, {"t2w": "T2w.nii", "qsm": "Chimap.nii"}),
        ({"swi": "T2starw.nii.gz"}, {"swi": "T2starw.nii.gz"}),
        ({"swi": "acq-swi_T2starw.nii.gz"}, {"swi": "acq-swi_T2starw.nii.gz"}),
        ({"swi": "acq-SWI_run-1_T2starw.nii"}, {"swi": "acq-SWI_run-1_T2starw.nii"}),
        ({"swi": "acq-highres_swi.nii.gz"}, {"swi": "acq-highres_swi.nii.gz"}),
        ({"T2w": "run-3_T2w.nii.gz"}, {"t2w": "run-3_T2w.nii.gz"}),
        ({"swi": "echo-1_part-mag_swi.nii.gz"}, {"swi": "echo-1_part-mag_swi.nii.gz"}),
    ],
)
def test_naming_variants_are_found(simulated_dataset, tmp_path, names, expected):
    data = tmp_path / "bids"
    _subject(simulated_dataset, data, "01", names)
    chosen = _chosen(data)["sub-01"]
    assert set(chosen) == {"t2w", "swi", "qsm"}
    for modality, ending in expected.items():
        assert chosen[modality] == f"sub-01_{ending}"


def test_an_uncompressed_file_is_read_like_the_original(simulated_dataset, tmp_path):
    data = tmp_path / "bids"
    _subject(simulated_dataset, data, "01", {"swi": "acq-swi_T2starw.nii", "Chimap": "Chimap.nii"})
    [ref] = find_subjects(data)
    subject = load_subject(data, ref)
    original = load_subject(simulated_dataset, SubjectRef("01"))
    assert subject.paths["swi"].name == "sub-01_acq-swi_T2starw.nii"
    for m in ("t2w", "swi", "qsm"):
        np.testing.assert_array_equal(subject.images[m], original.images[m])
    assert subject.brain_mask is not None and subject.paths["mask"].name.endswith("mask.nii.gz")


def test_swi_is_preferred_to_acq_swi_t2starw_to_other_t2starw(simulated_dataset, tmp_path):
    data = tmp_path / "bids"
    anat = _subject(simulated_dataset, data, "01", {"swi": "acq-gre_T2starw.nii.gz"})
    assert _chosen(data)["sub-01"]["swi"] == "sub-01_acq-gre_T2starw.nii.gz"
    shutil.copy(anat / "sub-01_acq-gre_T2starw.nii.gz", anat / "sub-01_acq-swi_T2starw.nii.gz")
    assert _chosen(data)["sub-01"]["swi"] == "sub-01_acq-swi_T2starw.nii.gz"
    shutil.copy(anat / "sub-01_acq-gre_T2starw.nii.gz", anat / "sub-01_swi.nii.gz")
    assert _chosen(data)["sub-01"]["swi"] == "sub-01_swi.nii.gz"
    # a phase image is never the SWI
    for f in anat.glob("*T2starw*"):
        f.unlink()
    (anat / "sub-01_swi.nii.gz").rename(anat / "sub-01_part-phase_swi.nii.gz")
    [ref] = find_subjects(data)
    assert "swi" not in ref.files.modalities


def test_two_runs_take_the_last_with_a_warning(simulated_dataset, tmp_path):
    data = tmp_path / "bids"
    anat = _subject(simulated_dataset, data, "01", {"swi": "run-2_swi.nii.gz"})
    shutil.copy(anat / "sub-01_run-2_swi.nii.gz", anat / "sub-01_run-10_swi.nii.gz")
    [ref] = find_subjects(data)
    assert Path(ref.files.modalities["swi"]).name == "sub-01_run-10_swi.nii.gz"  # 10 > 2
    [warning] = ref.files.warnings
    assert "took the last run" in warning and "sub-01_run-2_swi.nii.gz" in warning


def test_files_that_differ_in_acq_are_an_error_that_lists_them(simulated_dataset, tmp_path):
    data = tmp_path / "bids"
    anat = _subject(simulated_dataset, data, "01", {"swi": "acq-a_swi.nii.gz"})
    shutil.copy(anat / "sub-01_acq-a_swi.nii.gz", anat / "sub-01_acq-b_swi.nii.gz")
    [ref] = find_subjects(data)
    with pytest.raises(SubjectDataError) as err:
        load_subject(data, ref)
    message = str(err.value)
    assert "sub-01_acq-a_swi.nii.gz" in message and "sub-01_acq-b_swi.nii.gz" in message
    assert "differ in acq" in message and "--bids-filter-file" in message
    # a filter file chooses
    for value, expected in (("b", "sub-01_acq-b_swi.nii.gz"), (["a"], "sub-01_acq-a_swi.nii.gz")):
        filters = parse_filters({"swi": {"acquisition": value}})
        [ref] = find_subjects(data, filters=filters)
        assert Path(ref.files.modalities["swi"]).name == expected
        assert load_subject(data, ref).paths["swi"].name == expected


def test_a_run_and_a_file_without_run_are_an_error(simulated_dataset, tmp_path):
    data = tmp_path / "bids"
    anat = _subject(simulated_dataset, data, "01", {})
    shutil.copy(anat / "sub-01_swi.nii.gz", anat / "sub-01_run-2_swi.nii.gz")
    [ref] = find_subjects(data)
    assert "swi" not in ref.files.modalities
    assert "differ in run" in (ref.problem("swi") or "")


def test_a_folder_with_a_nifti_name_is_named_as_such(simulated_dataset, tmp_path):
    data = tmp_path / "bids"
    anat = _subject(simulated_dataset, data, "01", {"swi": None})
    (anat / "sub-01_swi.nii.gz").mkdir()
    [ref] = find_subjects(data)
    with pytest.raises(SubjectDataError, match="sub-01_swi.nii.gz: is a folder, not a NIfTI"):
        load_subject(data, ref)


def test_the_same_name_as_nii_and_nii_gz_is_an_error(simulated_dataset, tmp_path):
    data = tmp_path / "bids"
    _subject(simulated_dataset, data, "01", {})
    _subject(simulated_dataset, data, "01", {"swi": "swi.nii", "T2w": None, "Chimap": None})
    [ref] = find_subjects(data)
    assert "extension" in (ref.problem("swi") or "")


def test_sessions_are_read_and_selected(simulated_dataset, tmp_path):
    data = tmp_path / "bids"
    _subject(simulated_dataset, data, "01", {}, session="pre")
    _subject(simulated_dataset, data, "01", {"swi": "acq-swi_T2starw.nii"}, session="post")
    _subject(simulated_dataset, data, "02", {}, source="02")  # no session
    assert set(_chosen(data)) == {"sub-01_ses-pre", "sub-01_ses-post", "sub-02"}
    post = _chosen(data, sessions=["ses-post"])
    assert post == {
        "sub-01_ses-post": {
            "t2w": "sub-01_ses-post_T2w.nii.gz",
            "swi": "sub-01_ses-post_acq-swi_T2starw.nii",
            "qsm": "sub-01_ses-post_Chimap.nii.gz",
        }
    }


def test_qsm_dir_gives_the_qsm(simulated_dataset, tmp_path):
    """A QSMxT-like derivatives tree (nested, .nii, run entity) holds the QSM."""
    data = tmp_path / "bids"
    _subject(simulated_dataset, data, "01", {"Chimap": None})
    _subject(simulated_dataset, data, "02", {}, source="02")
    qsm = tmp_path / "qsmxt-2024"
    anat = _subject(
        simulated_dataset, qsm / "derivatives", "01", {"T2w": None, "swi": None, "Chimap": None}
    )
    img = nib.load(SubjectRef("01").modality_path(simulated_dataset, "qsm"))
    nib.save(img, anat / "sub-01_run-1_Chimap.nii")
    [sub01] = find_subjects(data, participants=["01"])
    assert "qsm" not in sub01.files.modalities
    with pytest.raises(SubjectDataError, match=r"missing: qsm \(\*_Chimap.nii\[.gz\]\)"):
        load_subject(data, sub01)
    refs = find_subjects(data, qsm_dir=qsm)
    assert refs[0].modality_path(data, "qsm") == anat / "sub-01_run-1_Chimap.nii"
    assert Path(refs[1].files.modalities["qsm"]) == Path("sub-02/anat/sub-02_Chimap.nii.gz")
    assert load_subject(data, refs[0]).paths["qsm"] == anat / "sub-01_run-1_Chimap.nii"


def test_raw_gre_is_named_not_just_missing(simulated_dataset, tmp_path):
    """The loader reads SWI and QSM files only; raw GRE is named in its error
    (predict computes SWI and QSM from it: tests/test_gre.py), and an incomplete
    raw GRE says what is missing."""
    data = tmp_path / "bids"
    anat = _subject(simulated_dataset, data, "01", {"swi": None, "Chimap": None})
    for part in ("mag", "phase"):
        shutil.copy(anat / "sub-01_T2w.nii.gz", anat / f"sub-01_echo-1_part-{part}_MEGRE.nii.gz")
    [ref] = find_subjects(data)
    assert [(e.echo, Path(e.phase).name) for e in ref.files.gre] == [
        (1, "sub-01_echo-1_part-phase_MEGRE.nii.gz")
    ]
    with pytest.raises(SubjectDataError) as err:
        load_subject(data, ref)
    message = str(err.value)
    assert "raw GRE found" in message and "predict computes SWI and QSM" in message
    assert "sub-01_echo-1_part-phase_MEGRE.nii.gz" in message
    (anat / "sub-01_echo-1_part-phase_MEGRE.nii.gz").unlink()
    [ref] = find_subjects(data)
    assert ref.files.gre == () and "no part-phase" in (ref.files.gre_problem or "")
    with pytest.raises(SubjectDataError, match="not usable: echo 1 has no part-phase"):
        load_subject(data, ref)


def test_a_missing_modality_lists_the_files_found(simulated_dataset, tmp_path):
    data = tmp_path / "bids"
    _subject(simulated_dataset, data, "01", {"swi": "acq-x_run-1_swi.nii", "Chimap": None})
    [ref] = find_subjects(data)
    with pytest.raises(SubjectDataError) as err:
        load_subject(data, ref)
    message = str(err.value)
    assert "sub-01_Chimap.nii.gz: missing: qsm" in message  # names the file it wanted
    for name in ("sub-01_T2w.nii.gz", "sub-01_acq-x_run-1_swi.nii", "sub-01_desc-brain_mask"):
        assert name in message


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ({"pet": {"run": 1}}, "unknown modality 'pet'"),
        ({"swi": {"subject": "01"}}, "unknown entity 'subject'"),
        ({"swi": {"acq": {"a": 1}}}, "expected a string, number, null"),
        ({"swi": {"suffix": "MEGRE"}}, "'MEGRE' is not read as swi"),
        (["swi"], "expected a JSON object"),
    ],
)
def test_bad_filter_files_are_refused(tmp_path, content, words):
    path = tmp_path / "filter.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DiscoveryError) as err:
        parse_filters(path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_filter_null_run_and_suffix(simulated_dataset, tmp_path):
    data = tmp_path / "bids"
    anat = _subject(simulated_dataset, data, "01", {"T2w": "run-01_T2w.nii.gz"})
    shutil.copy(anat / "sub-01_run-01_T2w.nii.gz", anat / "sub-01_run-02_T2w.nii.gz")
    shutil.copy(anat / "sub-01_swi.nii.gz", anat / "sub-01_acq-swi_T2starw.nii.gz")
    filters = parse_filters(
        {"t2w": {"run": 1}, "swi": {"suffix": "T2starw", "acquisition": [None, "swi"]}}
    )
    chosen = _chosen(data, filters=filters)["sub-01"]
    assert chosen["t2w"] == "sub-01_run-01_T2w.nii.gz"  # run 1, not the last
    assert chosen["swi"] == "sub-01_acq-swi_T2starw.nii.gz"
    chosen = _chosen(data, filters=parse_filters({"swi": {"acq": None}}))["sub-01"]
    assert chosen["swi"] == "sub-01_swi.nii.gz"


# --- a model per subject -------------------------------------------------------------


def _sidecar(out: Path, ref: SubjectRef) -> dict:
    return json.loads(output_paths(out, ref)["dseg-json"].read_text())


def test_a_missing_file_changes_nothing_for_the_other_subjects(
    simulated_dataset, tmp_path, stand_in_shipped, capsys
):
    data = tmp_path / "bids"
    shutil.copytree(simulated_dataset, data)
    first = predict_dataset(data, tmp_path / "a", progress=False)
    assert first.models == {"sub-01": "default (t2w-swi-qsm)", "sub-02": "default (t2w-swi-qsm)"}
    SubjectRef("02").modality_path(data, "t2w").unlink()
    second = predict_dataset(data, tmp_path / "b", progress=False)
    assert not second.failed, second.failed
    assert second.models == {"sub-01": "default (t2w-swi-qsm)", "sub-02": "default (swi-qsm)"}
    one = SubjectRef("01")
    a, b = (output_paths(tmp_path / o, one)["dseg"] for o in ("a", "b"))
    assert np.asarray(nib.load(a).dataobj).any(), "the stand-in finds lesions"
    assert a.read_bytes() == b.read_bytes()
    assert _sidecar(tmp_path / "a", one) == _sidecar(tmp_path / "b", one)
    model = _sidecar(tmp_path / "b", SubjectRef("02"))["Model"]
    assert model["Name"] == "default (swi-qsm)" and model["WeightsSha256"] == "stand-in-swi-qsm"
    assert model["Modalities"] == ["swi", "qsm"]
    index = (tmp_path / "b" / "index.html").read_text()
    assert all(f'<td class="text">default ({m})</td>' in index for m in ("swi-qsm", "t2w-swi-qsm"))
    printed = capsys.readouterr().out
    assert "sub-02: model default (swi-qsm) (swi+qsm)" in printed
    assert "sub-01: model default (t2w-swi-qsm) (t2w+swi+qsm)" in printed
    assert stand_in_shipped == {"t2w-swi-qsm": 1, "swi-qsm": 1}


def test_a_subject_no_model_serves_fails_alone(simulated_dataset, tmp_path, stand_in_shipped):
    data = tmp_path / "bids"
    shutil.copytree(simulated_dataset, data)
    SubjectRef("02").modality_path(data, "qsm").unlink()
    outcome = predict_dataset(data, tmp_path / "out", progress=False, report=False)
    assert set(outcome.written) == {"sub-01"} and set(outcome.failed) == {"sub-02"}
    message = outcome.failed["sub-02"]
    assert "no shipped model serves" in message and "missing: qsm" in message
    assert "sub-02_T2w.nii.gz" in message and "sub-02_swi.nii.gz" in message
    assert "sub-02" not in outcome.models


def test_a_file_a_filter_leaves_out_is_not_counted(simulated_dataset, tmp_path, stand_in_shipped):
    data = tmp_path / "bids"
    _subject(simulated_dataset, data, "01", {})
    filters = parse_filters({"swi": {"suffix": "T2starw"}})
    [ref] = find_subjects(data, filters=filters)
    assert not ref.has(data, "swi") and ref.has(data, "t2w")
    [choice] = choose_models("default", data, [ref]).values()
    assert isinstance(choice, str) and "no shipped model serves" in choice
    assert "missing: swi" in choice and "sub-01_swi.nii.gz" in choice  # found, not chosen
    outcome = predict_dataset(data, tmp_path / "out", progress=False, filters=filters)
    assert set(outcome.failed) == {"sub-01"} and not outcome.written


def test_each_shipped_model_is_loaded_once(simulated_dataset, tmp_path, monkeypatch):
    """The real shipped models through the real loader, counted."""
    data = tmp_path / "bids"
    shutil.copytree(simulated_dataset, data)
    shutil.copytree(data / "sub-01", data / "sub-03")
    for f in (data / "sub-03" / "anat").iterdir():
        f.rename(f.with_name(f.name.replace("sub-01", "sub-03")))
    SubjectRef("02").modality_path(data, "t2w").unlink()
    loads: list[str] = []
    real = predict_module.load_model

    def counting(folder):
        loads.append(Path(folder).name)
        return real(folder)

    monkeypatch.setattr(predict_module, "load_model", counting)
    predict_module._load_shipped.cache_clear()
    refs = find_subjects(data)
    for _ in range(2):
        choices = choose_models("default", data, refs)
        names = {str(r): c.name for r, c in choices.items() if isinstance(c, LoadedModel)}
        # the shipped model serves subjects without T2w too (T2w is optional)
        assert names == {
            "sub-01": "default (t2w-swi-qsm)",
            "sub-02": "default (t2w-swi-qsm)",
            "sub-03": "default (t2w-swi-qsm)",
        }
    assert sorted(loads) == ["t2w-swi-qsm"]
    predict_module._load_shipped.cache_clear()


def _run_cli(data: Path, out: Path, *extra: str) -> int:
    return main(["predict", "--data", str(data), "--out", str(out), "--no-report", *extra])


def test_cli_session_id_filter_file_and_qsm_dir(simulated_dataset, tmp_path, stand_in_shipped):
    data = tmp_path / "bids"
    _subject(simulated_dataset, data, "01", {"Chimap": None}, session="1")
    _subject(
        simulated_dataset, data, "01", {"swi": "acq-swi_T2starw.nii", "Chimap": None}, session="2"
    )
    anat = _subject(simulated_dataset, data, "02", {"Chimap": None}, session="2", source="02")
    shutil.copy(anat / "sub-02_ses-2_swi.nii.gz", anat / "sub-02_ses-2_acq-other_T2starw.nii.gz")
    qsm = tmp_path / "qsm"
    for label in ("01", "02"):
        target = SubjectRef(label, "2").anat_dir(qsm)
        target.mkdir(parents=True)
        shutil.copy(
            SubjectRef(label).modality_path(simulated_dataset, "qsm"),
            target / f"sub-{label}_ses-2_Chimap.nii.gz",
        )
    flt = tmp_path / "filter.json"
    flt.write_text(json.dumps({"swi": {"suffix": "T2starw", "acquisition": "swi"}}))
    out = tmp_path / "out"
    args = ["--session-id", "2", "--bids-filter-file", str(flt), "--qsm-dir", str(qsm)]
    # sub-02 has no acq-swi T2starw: it fails alone, naming what it has
    assert _run_cli(data, out, *args) == 1
    written = sorted(p.name for p in out.rglob("*_dseg.nii.gz"))
    assert written == ["sub-01_ses-2_desc-deepmir_dseg.nii.gz"]
    sources = _sidecar(out, SubjectRef("01", "2"))["Sources"]
    assert "bids:raw:sub-01/ses-2/anat/sub-01_ses-2_acq-swi_T2starw.nii" in sources
    # the --qsm-dir is a source dataset of its own, linked relative to the output
    assert "bids:qsm:sub-01/ses-2/anat/sub-01_ses-2_Chimap.nii.gz" in sources
    links = json.loads((out / "dataset_description.json").read_text())["DatasetLinks"]
    assert (out / links["qsm"]).resolve() == qsm.resolve()
    assert (out / links["raw"]).resolve() == data.resolve()
    # without the filter, sub-02's *_swi is read (swi ranks before T2starw)
    assert _run_cli(data, tmp_path / "o2", "--session-id", "2", "--qsm-dir", str(qsm)) == 0
    # usage errors: exit 2 before any work
    assert _run_cli(data, tmp_path / "o3", "--session-id", "3") == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert _run_cli(data, tmp_path / "o4", "--bids-filter-file", str(bad)) == 2
    assert _run_cli(data, tmp_path / "o5", "--qsm-dir", str(tmp_path / "nowhere")) == 2
    assert not (tmp_path / "o3").exists() and not (tmp_path / "o5").exists()
