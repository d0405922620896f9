"""deepmir predict: contract outputs, orientation, bad inputs, reports (tiny model)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import cc3d
import nibabel as nib
import numpy as np
import pytest

from deepmir.cli import main
from deepmir.evaluation import match_subject
from deepmir.inference.predict import LESION_COLUMNS, output_paths, predict_dataset
from deepmir.io.bids import SubjectRef, find_subjects
from deepmir.model.checkpoint import save_model
from deepmir.model.network import TinyNetworkConfig
from deepmir.training.data import fit, prepare, read_annotated
from deepmir.training.train import TrainConfig, train_on_subjects

TINY = TrainConfig(
    network=TinyNetworkConfig(),
    patch_size=(32, 32, 32),
    batch_size=2,
    iterations=250,
    learning_rate=1e-2,
    val_every=10_000,
    seed=3,
)
REFERENCE = Path("derivatives") / "reference"


@pytest.fixture(scope="module")
def tiny_model(simulated_dataset, tmp_path_factory) -> Path:
    """A tiny network overfit on the small phantoms (enough to find their CMBs)."""
    raw = read_annotated(simulated_dataset, TINY.modalities)
    norm = fit(raw, TINY.modalities)
    subjects = [prepare(r, norm) for r in raw]
    result = train_on_subjects(subjects, [], norm, TINY, progress=False)
    out = tmp_path_factory.mktemp("model") / "tiny"
    save_model(out, result.net, result.card)
    return out


@pytest.fixture(scope="module")
def predicted(simulated_dataset, tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pred") / "deepmir"
    args = ["predict", "--data", str(simulated_dataset), "--out", str(out)]
    assert main([*args, "--model", str(tiny_model), "--save-probabilities"]) == 0
    return out


def _reference(root: Path, ref: SubjectRef) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    anat = ref.anat_dir(root / REFERENCE)
    dseg = nib.load(anat / f"{ref.prefix}_dseg.nii.gz")
    inst = nib.load(anat / f"{ref.prefix}_desc-instances_dseg.nii.gz")
    return np.asarray(dseg.dataobj), np.asarray(inst.dataobj), dseg.affine


def test_predict_writes_the_contract_and_finds_the_cmbs(simulated_dataset, predicted):
    assert (predicted / "dataset_description.json").exists()
    assert (predicted / "dseg.tsv").read_text().splitlines()[1] == "0\tbackground"
    found = 0
    for ref in find_subjects(simulated_dataset):
        paths = output_paths(predicted, ref)
        for name, p in paths.items():
            # the input has its own mask: none (nor its sidecar) is written
            assert p.exists() == (not name.startswith("mask")), p
        image = nib.load(paths["dseg"])
        source = nib.load(ref.modality_path(simulated_dataset, "swi"))
        assert image.get_data_dtype() == np.uint8
        np.testing.assert_allclose(image.affine, source.affine, atol=1e-5)
        assert image.shape == source.shape
        prob = nib.load(paths["prob-1"])
        assert prob.get_data_dtype() == np.float32 and prob.shape == source.shape
        header = paths["lesions"].read_text().splitlines()[0].split("\t")
        assert header == LESION_COLUMNS
        dseg, inst, affine = _reference(simulated_dataset, ref)
        match = match_subject(dseg, inst, np.asarray(image.dataobj), affine)
        found += match.counts(1).true_positives
        rows = paths["lesions"].read_text().splitlines()[1:]
        n_components = cc3d.connected_components(np.asarray(image.dataobj) > 0, connectivity=26)
        assert len(rows) == int(n_components.max())
    assert found >= 1


def test_lesion_table_chi_matches_the_qsm(simulated_dataset, predicted):
    ref = find_subjects(simulated_dataset)[0]
    paths = output_paths(predicted, ref)
    rows = [r.split("\t") for r in paths["lesions"].read_text().splitlines()[1:]]
    if not rows:
        pytest.skip("no lesion predicted in this subject")
    qsm = np.asarray(nib.load(ref.modality_path(simulated_dataset, "qsm")).dataobj)
    dseg = np.asarray(nib.load(paths["dseg"]).dataobj)
    # one lesion per row; the total chi x volume equals the QSM summed over lesion voxels
    voxel = float(abs(np.linalg.det(nib.load(paths["dseg"]).affine[:3, :3])))
    total = sum(float(r[LESION_COLUMNS.index("chi_volume_ppm_mm3")]) for r in rows)
    assert total == pytest.approx(float(qsm[dseg > 0].sum()) * voxel, rel=1e-2, abs=1e-2)


def test_reports_are_self_contained(simulated_dataset, predicted):
    index = (predicted / "index.html").read_text()
    for ref in find_subjects(simulated_dataset):
        report = output_paths(predicted, ref)["report"]
        assert str(report.relative_to(predicted)) in index
        text = report.read_text()
        assert "<h2>Counts</h2>" in text
        assert "http" not in text.replace("http-equiv", "")  # nothing fetched
        assert "data:image/png;base64," in text  # the whole-brain views at least
        # every lesion of the table is in the report, with its tiles
        data = text.split('id="deepmir-data">')[1].split("</script>")[0]
        lesions = json.loads(data)["lesions"]
        table = output_paths(predicted, ref)["lesions"].read_text().splitlines()[1:]
        ids = sorted(int(r.split("\t")[0]) for r in table)
        assert sorted(e["lesion_id"] for e in lesions) == ids
        assert all("swi" in e["tiles"] for e in lesions if "tiles" in e)


def _flip_subject(src: Path, dst: Path, ref: SubjectRef) -> None:
    """A copy of the dataset whose images are stored flipped along i (LAS-like)."""
    shutil.copytree(src, dst)
    for f in ref.anat_dir(dst).glob("*.nii.gz"):
        img = nib.load(f)
        data = np.asarray(img.dataobj)[::-1]
        flip = np.eye(4)
        flip[0, 0], flip[0, 3] = -1, data.shape[0] - 1
        out = nib.Nifti1Image(np.ascontiguousarray(data), img.affine @ flip, img.header)
        out.set_qform(img.affine @ flip, code=1)
        out.set_sform(img.affine @ flip, code=1)
        nib.save(out, f)


def test_flipped_orientation_gives_the_same_lesions(
    simulated_dataset, tiny_model, predicted, tmp_path
):
    ref = find_subjects(simulated_dataset)[0]
    flipped = tmp_path / "flipped"
    _flip_subject(simulated_dataset, flipped, ref)
    out = tmp_path / "pred"
    outcome = predict_dataset(
        flipped, out, model=tiny_model, participants=[ref.subject], progress=False
    )
    assert not outcome.failed
    a = nib.load(output_paths(predicted, ref)["dseg"])
    b = nib.load(output_paths(out, ref)["dseg"])
    np.testing.assert_allclose(b.affine, nib.load(ref.modality_path(flipped, "swi")).affine)
    assert not np.allclose(a.affine, b.affine)
    np.testing.assert_array_equal(np.asarray(b.dataobj)[::-1], np.asarray(a.dataobj))


def _bad_dataset(src: Path, dst: Path) -> dict[str, str]:
    """Subjects 01 (good) and five bad copies of it; returns label -> expected message."""
    shutil.copytree(src, dst)
    good = SubjectRef("01")
    shutil.rmtree(dst / "sub-02")
    expected = {}

    def copy(label: str) -> SubjectRef:
        ref = SubjectRef(label)
        ref.anat_dir(dst).mkdir(parents=True)
        for f in good.anat_dir(dst).glob("*.nii.gz"):
            shutil.copy(f, ref.anat_dir(dst) / f.name.replace("sub-01", f"sub-{label}"))
        return ref

    ref = copy("nomod")
    ref.modality_path(dst, "qsm").unlink()
    expected["nomod"] = "missing: qsm"
    ref = copy("grid")
    img = nib.load(ref.modality_path(dst, "t2w"))
    nib.save(
        nib.Nifti1Image(np.asarray(img.dataobj)[:-2], img.affine), ref.modality_path(dst, "t2w")
    )
    expected["grid"] = "shape"
    ref = copy("nan")
    img = nib.load(ref.modality_path(dst, "qsm"))
    data = np.asarray(img.dataobj).copy()
    data[10, 10, 10] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), ref.modality_path(dst, "qsm"))
    expected["nan"] = "NaN"
    ref = copy("fourd")
    img = nib.load(ref.modality_path(dst, "swi"))
    data = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.stack([data, data], -1), img.affine), ref.modality_path(dst, "swi"))
    expected["fourd"] = "4D"
    ref = copy("gzip")
    raw = gzip.decompress(ref.modality_path(dst, "swi").read_bytes())
    ref.modality_path(dst, "swi").write_bytes(gzip.compress(raw)[: len(raw) // 50])
    expected["gzip"] = "swi.nii.gz"
    return expected


def test_bad_inputs_fail_alone_and_leave_nothing(simulated_dataset, tiny_model, tmp_path):
    data = tmp_path / "bad"
    expected = _bad_dataset(simulated_dataset, data)
    out = tmp_path / "pred"
    outcome = predict_dataset(data, out, model=tiny_model, progress=False)
    assert set(outcome.written) == {"sub-01"}
    assert set(outcome.failed) == {f"sub-{k}" for k in expected}
    for label, words in expected.items():
        message = outcome.failed[f"sub-{label}"]
        assert words.lower() in message.lower(), message
        assert f"sub-{label}" in message  # names the file
        anat = SubjectRef(label).anat_dir(out)
        assert not anat.exists() or not any(anat.iterdir())
    assert not list(out.rglob("*.tmp*"))
    args = ["predict", "--data", str(data), "--out", str(tmp_path / "cli")]
    assert main([*args, "--model", str(tiny_model), "--no-report"]) == 1


def test_unknown_participant_and_bad_threshold(simulated_dataset, tiny_model, tmp_path):
    args = ["predict", "--data", str(simulated_dataset), "--out", str(tmp_path / "o")]
    assert main([*args, "--model", str(tiny_model), "--participant-label", "99"]) == 2
    assert main([*args, "--model", str(tiny_model), "--threshold", "1.5"]) == 2
    assert main([*args, "--model", str(tmp_path / "nothing")]) == 2


def test_threshold_changes_the_lesions(simulated_dataset, tiny_model, tmp_path):
    low = predict_dataset(
        simulated_dataset,
        tmp_path / "a",
        tiny_model,
        threshold=0.05,
        report=False,
        progress=False,
    )
    high = predict_dataset(
        simulated_dataset,
        tmp_path / "b",
        tiny_model,
        threshold=0.95,
        report=False,
        progress=False,
    )

    def total(o):
        return sum(sum(c.values()) for c in o.counts.values())

    assert total(low) >= total(high)
    assert not list((tmp_path / "a").rglob("*report.html")), "report=False writes no report"
    assert not (tmp_path / "a" / "index.html").exists()
    a = np.asarray(nib.load(output_paths(tmp_path / "a", SubjectRef("01"))["dseg"]).dataobj)
    b = np.asarray(nib.load(output_paths(tmp_path / "b", SubjectRef("01"))["dseg"]).dataobj)
    assert (a > 0).sum() > (b > 0).sum()


def test_tune_rewrites_the_post_processing_not_the_weights(simulated_dataset, tiny_model, tmp_path):
    import json

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    before = json.loads((model / "config.json").read_text())
    assert main(["tune", "--model", str(model), "--data", str(simulated_dataset)]) == 0
    after = json.loads((model / "config.json").read_text())
    assert after["weights_sha256"] == before["weights_sha256"]
    assert after["training"]["post_processing_tuned_on"]["subjects"] == ["sub-01", "sub-02"]
    keys = {"threshold", "min_size_voxels", "min_probability", "max_elongation", "min_depth_mm"}
    keys |= {"extent_threshold", "max_swi_elongation"}  # design values, kept as given
    assert set(after["post_processing"]) == keys
    # the rim depth is kept as given, not searched
    argv = ["tune", "--model", str(model), "--data", str(simulated_dataset)]
    assert main([*argv, "--min-depth-mm", "0,1.5,4"]) == 0
    tuned = json.loads((model / "config.json").read_text())["post_processing"]
    assert tuned["min_depth_mm"] == [0.0, 1.5, 4.0]
    assert main([*argv, "--min-depth-mm", "1,2"]) == 2
    assert main(["tune", "--model", str(tmp_path / "none"), "--data", str(simulated_dataset)]) == 2


def test_tune_on_rated_subjects(simulated_dataset, tiny_model, predicted, tmp_path):
    """The ratings a rater downloads from the reports (here: every lesion of
    sub-01 confirmed, a missed one added) are the reference tune chooses on."""
    from deepmir.report.data import RATINGS_COLUMNS

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    ref = find_subjects(simulated_dataset)[0]
    rows = _lesion_rows(output_paths(predicted, ref)["lesions"])
    lines = ["\t".join(RATINGS_COLUMNS)]
    for r in rows:
        rated = {**r, "status": "confirmed", "predicted_label": r["label"], "rater": "t"}
        lines.append("\t".join(rated.get(c, "n/a") for c in RATINGS_COLUMNS))
    lines.append("n/a\tadded\t1\tn/a\t20\t20\t20\tn/a\tn/a\tn/a\tt")
    ratings = tmp_path / "ratings"
    ratings.mkdir()
    (ratings / f"{ref.prefix}_desc-rater_lesions.tsv").write_text("\n".join(lines) + "\n")
    args = ["tune", "--model", str(model), "--data", str(simulated_dataset)]
    assert main([*args, "--ratings", str(ratings), "--predictions", str(predicted)]) == 0
    tuned = json.loads((model / "config.json").read_text())["training"]
    assert tuned["post_processing_tuned_on"]["subjects"] == [ref.prefix]  # the rated one only
    assert main([*args, "--ratings", str(ratings)]) == 2  # without --predictions


def _lesion_rows(path: Path) -> list[dict[str, str]]:
    header, *rows = (line.split("\t") for line in path.read_text().splitlines())
    return [dict(zip(header, r, strict=True)) for r in rows]


def test_calibrated_probability_and_raw_score(simulated_dataset, tiny_model, predicted, tmp_path):
    from deepmir.inference.calibration import Calibration, ClassCalibration
    from deepmir.model.checkpoint import load_model

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    net, card = load_model(model)
    constant = ClassCalibration((0.0, 1.0), (0.2, 0.2), "isotonic")
    card.calibration = Calibration(dict.fromkeys((1, 2, 3), constant))
    save_model(model, net, card)
    out = tmp_path / "pred"
    predict_dataset(simulated_dataset, out, model=model, report=False, progress=False)
    n = 0
    for ref in find_subjects(simulated_dataset):
        raw = _lesion_rows(output_paths(predicted, ref)["lesions"])
        rows = _lesion_rows(output_paths(out, ref)["lesions"])
        assert [r["score"] for r in rows] == [r["score"] for r in raw]
        assert all(r["probability"] == r["score"] for r in raw), "uncalibrated: the raw score"
        assert all(float(r["probability"]) == 0.2 for r in rows)
        n += len(rows)
    assert n > 0


def _with_optional(tiny_model: Path, out: Path, optional: tuple[str, ...]):
    """A copy of the tiny model that declares ``optional`` modalities (their
    channels enter as zeros when a subject lacks them); (net, card)."""
    from deepmir.model.checkpoint import load_model

    shutil.copytree(tiny_model, out)
    net, card = load_model(out)
    card.optional_modalities = optional
    save_model(out, net, card)
    return net, card


def test_predict_applies_the_calibration_of_the_subjects_inputs(
    simulated_dataset, tiny_model, tmp_path
):
    from deepmir.inference.calibration import Calibration, ClassCalibration

    model = tmp_path / "m"
    net, card = _with_optional(tiny_model, model, ("t2w",))

    def constant(p: float) -> dict[int, ClassCalibration]:
        return dict.fromkeys((1, 2, 3), ClassCalibration((0.0, 1.0), (p, p), "platt"))

    card.calibration = Calibration(constant(0.2), {}, {"qsm+swi": constant(0.7)})
    save_model(model, net, card)
    data = tmp_path / "bids"
    shutil.copytree(simulated_dataset, data)
    without_t2w = SubjectRef("01")
    without_t2w.modality_path(data, "t2w").unlink()
    out = tmp_path / "pred"
    outcome = predict_dataset(data, out, model=model, progress=False)
    assert not outcome.failed, outcome.failed
    for ref in find_subjects(data):
        rows = _lesion_rows(output_paths(out, ref)["lesions"])
        assert rows, f"{ref}: the tiny model should find lesions"
        expected = 0.7 if ref == without_t2w else 0.2
        assert {float(r["probability"]) for r in rows} == {expected}
    report = output_paths(out, without_t2w)["report"].read_text()
    assert "fitted on qsm+swi inputs" in report
    assert "fitted on" not in output_paths(out, SubjectRef("02"))["report"].read_text()


def test_calibrate_fits_one_map_per_served_input_subset(simulated_dataset, tiny_model, tmp_path):
    import json

    from deepmir.model.checkpoint import load_model
    from deepmir.training.calibrate import served_subsets

    model = tmp_path / "m"
    _, card = _with_optional(tiny_model, model, ("t2w", "qsm"))
    assert served_subsets(card) == [("t2w",), ("qsm",), ("t2w", "qsm")]
    args = ["calibrate", "--model", str(model), "--data", str(simulated_dataset)]
    assert main([*args, "--out", str(tmp_path / "report")]) == 0
    _, card = load_model(model)
    assert card.calibration is not None
    assert set(card.calibration.subsets) == {"qsm+swi", "swi+t2w", "swi"}
    assert card.calibration.for_inputs(["swi"]).classes == card.calibration.subsets["swi"]
    report = json.loads((tmp_path / "report" / "calibration.json").read_text())
    assert set(report["subsets"]) == {"qsm+swi", "swi+t2w", "swi"}
    assert report["subsets"]["swi"]["absent"] == ["t2w", "qsm"]
    assert set(report["subsets"]["swi"]["held_out"]) == {"cmb", "iron", "calcification"}
    # the full-input maps do not depend on the subsets fitted beside them
    full_only = tmp_path / "full-only"
    _with_optional(tiny_model, full_only, ("t2w", "qsm"))
    assert (
        main(
            [
                "calibrate",
                "--model",
                str(full_only),
                "--data",
                str(simulated_dataset),
                "--no-subsets",
                "--out",
                str(tmp_path / "r2"),
            ]
        )
        == 0
    )
    _, plain = load_model(full_only)
    assert plain.calibration is not None and plain.calibration.subsets == {}
    assert plain.calibration.classes == card.calibration.classes


def test_calibrate_stores_the_map_not_new_weights(simulated_dataset, tiny_model, tmp_path):
    import json

    from deepmir.model.checkpoint import load_model

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    before = json.loads((model / "config.json").read_text())
    args = ["calibrate", "--model", str(model), "--data", str(simulated_dataset)]
    assert main([*args, "--out", str(tmp_path / "report")]) == 0
    _, card = load_model(model)
    assert card.weights_sha256 == before["weights_sha256"]
    assert card.calibration is not None and set(card.calibration.classes) == {1, 2, 3}
    assert card.calibration.info["subjects"] == ["sub-01", "sub-02"]
    assert card.calibration.subsets == {}  # no optional modality: full inputs only
    report = json.loads((tmp_path / "report" / "calibration.json").read_text())
    assert len(report["held_out_subjects"]) == 1 and len(report["held_out_fit_subjects"]) == 1
    assert set(report["in_sample"]) == {"cmb", "iron", "calcification"}
    for name in ("reliability.png", "reliability_held_out.png"):
        assert (tmp_path / "report" / name).read_bytes()[:4] == b"\x89PNG"
    assert main([*args, "--holdout-fraction", "1.5"]) == 2


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_predict_without_a_mask_writes_the_mask_it_used(simulated_dataset, tiny_model, tmp_path):
    data = tmp_path / "bids"
    shutil.copytree(simulated_dataset, data)
    ref = SubjectRef("01")
    given = np.asarray(nib.load(ref.mask_path(data)).dataobj) > 0.5
    ref.mask_path(data).unlink()
    out = tmp_path / "out"
    outcome = predict_dataset(data, out, model=tiny_model, progress=False, log=lambda m: None)
    assert not outcome.failed
    assert any("no brain mask" in w for w in outcome.warnings["sub-01"])
    paths = output_paths(out, ref)
    written = nib.load(paths["mask"])
    assert written.shape == given.shape
    assert _dice(np.asarray(written.dataobj) > 0, given) > 0.9  # issue 12: QSM support
    sidecar = json.loads(paths["dseg-json"].read_text())
    assert "qsm-support" in sidecar["BrainMask"]
    # a subject with its own mask gets no derived one
    assert not output_paths(out, SubjectRef("02"))["mask"].exists()
    assert (
        "desc-brain_mask"
        in json.loads(output_paths(out, SubjectRef("02"))["dseg-json"].read_text())["BrainMask"]
    )


def test_calibrate_with_perturbed_copies_fits_on_more_lesions_reproducibly(
    simulated_dataset, tiny_model, tmp_path
):
    """--perturb K: each subject is also predicted K times with random blur, noise
    and QSM scale; the maps are fitted on all those lesions, the reported errors are
    on the clean ones, and the draws are recorded and repeat with the seed."""
    import json

    from deepmir.model.checkpoint import load_model

    fitted = {}
    for name in ("a", "b", "clean"):
        model = tmp_path / name
        shutil.copytree(tiny_model, model)
        extra = [] if name == "clean" else ["--perturb", "2"]
        args = ["calibrate", "--model", str(model), "--data", str(simulated_dataset), *extra]
        assert main([*args, "--out", str(tmp_path / f"report-{name}")]) == 0
        fitted[name] = load_model(model)[1].calibration
    a, b, clean = fitted["a"], fitted["b"], fitted["clean"]
    assert a is not None and b is not None and clean is not None
    record = a.info["perturbations"]
    assert record["copies_per_subject"] == 2 and set(record["draws"]) == {"sub-01", "sub-02"}
    assert all(len(d) == 2 for d in record["draws"].values())
    assert a.classes == b.classes and record == b.info["perturbations"]  # seeded
    assert "perturbations" not in clean.info
    report = json.loads((tmp_path / "report-a" / "calibration.json").read_text())
    report_clean = json.loads((tmp_path / "report-clean" / "calibration.json").read_text())
    assert report["in_sample"]["cmb"]["n_lesions"] == report_clean["in_sample"]["cmb"]["n_lesions"]
    n_fit = sum(c.n_lesions for c in a.classes.values())
    assert n_fit > sum(c.n_lesions for c in clean.classes.values())  # perturbed lesions too
    assert (
        main(
            [
                "calibrate",
                "--model",
                str(tmp_path / "a"),
                "--data",
                str(simulated_dataset),
                "--perturb",
                "-1",
            ]
        )
        == 2
    )


def test_perturbation_scales_qsm_and_adds_noise_to_swi_only():
    from deepmir.model.checkpoint import ModelCard
    from deepmir.model.network import TinyNetworkConfig
    from deepmir.model.preprocess import Normalization
    from deepmir.training.calibrate import perturbed

    norm = Normalization(("swi", "qsm"), qsm_scale_ppm=0.1)
    shape = (24, 24, 24)
    image = np.ones((len(norm.channels), *shape), np.float32)
    card = ModelCard(TinyNetworkConfig(), norm, (16, 16, 16), 0)
    out, draw = perturbed(image, card, np.random.default_rng(3))
    assert image.min() == 1.0 == image.max()  # the input is not touched
    for c in norm.channel_indices("qsm"):  # a constant image: blur changes nothing
        np.testing.assert_allclose(out[c], draw["qsm_scale"], rtol=1e-5)
    swi = out[norm.channel_indices("swi")[0]]
    assert abs(float(swi.std()) - draw["noise_sd"]) < 0.05 * draw["noise_sd"] + 1e-3
    assert 0.75 <= draw["qsm_scale"] <= 1.33 and draw["noise_sd"] > 0


def test_calibrate_judges_lesions_on_the_input_grid_or_the_working_grid(
    simulated_dataset, tiny_model, tmp_path
):
    """--grid input (default) runs predict's own steps; --grid working the
    pre-0.10.2 path. On data already at the model's voxel size both see the
    same lesions; the grid is recorded; another value is refused."""
    import json

    from deepmir.model.checkpoint import load_model

    reports = {}
    for grid in ("input", "working"):
        model = tmp_path / grid
        shutil.copytree(tiny_model, model)
        args = ["calibrate", "--model", str(model), "--data", str(simulated_dataset)]
        assert main([*args, "--grid", grid, "--out", str(tmp_path / f"r-{grid}")]) == 0
        calibration = load_model(model)[1].calibration
        assert calibration is not None and calibration.info["grid"].startswith(grid)
        reports[grid] = json.loads((tmp_path / f"r-{grid}" / "calibration.json").read_text())
    for c in ("cmb", "iron", "calcification"):
        a, b = reports["input"]["in_sample"][c], reports["working"]["in_sample"][c]
        assert (a["n_lesions"], a["n_real"]) == (b["n_lesions"], b["n_real"]), c
    assert reports["input"]["in_sample"]["cmb"]["n_lesions"] > 0
    bad = ["calibrate", "--model", str(tmp_path / "input"), "--data", "x", "--grid", "native"]
    assert main(bad) == 2
