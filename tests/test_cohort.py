"""Cohort scale: resume, Dask execution, the BIDS-App form and the group census."""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepmir.cli import main
from deepmir.cohort.group import cmb_category, read_cohort
from deepmir.cohort.provenance import SUFFIX
from deepmir.model.checkpoint import save_model
from deepmir.model.network import TinyNetworkConfig
from deepmir.training.data import fit, prepare, read_annotated
from deepmir.training.train import TrainConfig, train_on_subjects

TINY = TrainConfig(
    network=TinyNetworkConfig(),
    patch_size=(32, 32, 32),
    batch_size=2,
    iterations=40,
    learning_rate=1e-2,
    val_every=10_000,
    seed=3,
)
SUBJECTS = ("sub-01", "sub-02", "sub-03")


@pytest.fixture(scope="module")
def model(simulated_dataset, tmp_path_factory) -> Path:
    """A briefly trained tiny network (it finds some lesions; its quality is not tested)."""
    raw = read_annotated(simulated_dataset, TINY.modalities)
    norm = fit(raw, TINY.modalities)
    result = train_on_subjects([prepare(r, norm) for r in raw], [], norm, TINY, progress=False)
    out = tmp_path_factory.mktemp("model") / "tiny"
    save_model(out, result.net, result.card)
    return out


@pytest.fixture(scope="module")
def dataset(simulated_dataset, tmp_path_factory) -> Path:
    """The 2 simulated subjects plus sub-03, a copy of sub-01 under its own name."""
    root = tmp_path_factory.mktemp("cohort") / "bids"
    shutil.copytree(simulated_dataset, root, ignore=shutil.ignore_patterns("derivatives"))
    anat = root / "sub-03" / "anat"
    anat.mkdir(parents=True)
    for f in (root / "sub-01" / "anat").iterdir():
        shutil.copy2(f, anat / f.name.replace("sub-01", "sub-03"))
    return root


def _copy(dataset: Path, tmp: Path) -> Path:
    dst = tmp / "bids"
    shutil.copytree(dataset, dst)
    return dst


def _products(out: Path) -> dict[str, bytes]:
    """Every subject output that must not depend on how the run was executed
    (decompressed NIfTI, TSV, JSON sidecars); the provenance record (it holds a
    time stamp) and the reports are left out, but their presence counts."""
    found: dict[str, bytes] = {}
    for path in sorted(out.glob("sub-*/anat/*")):
        rel = path.relative_to(out).as_posix()
        if path.name.endswith(".nii.gz"):
            found[rel] = gzip.decompress(path.read_bytes())
        elif path.name.endswith((SUFFIX, ".html")):
            found[rel] = b""
        else:
            found[rel] = path.read_bytes()
    return found


def _temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if ".tmp" in p.name]


def _predict(data: Path, out: Path, model: Path, *extra: str) -> int:
    """``deepmir predict`` without the registration to MNI (its own tests below)."""
    args = ["predict", "--data", str(data), "--out", str(out), "--model", str(model)]
    return main([*args, "--no-regions", *extra])


def _record_mtimes(out: Path) -> dict[str, int]:
    return {p.parent.parent.name: p.stat().st_mtime_ns for p in out.glob(f"sub-*/anat/*_{SUFFIX}")}


def test_rerun_skips_current_subjects_and_redoes_exactly_the_changed_ones(dataset, model, tmp_path):
    data = _copy(dataset, tmp_path)
    out = tmp_path / "out"
    assert _predict(data, out, model) == 0
    first = _products(out)
    assert len(first) >= 3 * 4 and all(f"{s}/anat/{s}_{SUFFIX}" in first for s in SUBJECTS)
    before = _record_mtimes(out)
    assert _predict(data, out, model) == 0  # everything current: nothing redone
    assert _record_mtimes(out) == before
    assert _products(out) == first

    # a changed input file (a new modification time) invalidates that subject only
    swi = data / "sub-02" / "anat" / "sub-02_swi.nii.gz"
    os.utime(swi, ns=(swi.stat().st_atime_ns, swi.stat().st_mtime_ns + 10**9))
    assert _predict(data, out, model) == 0
    after = _record_mtimes(out)
    assert [s for s in SUBJECTS if after[s] != before[s]] == ["sub-02"]
    assert _products(out) == first

    # another option redoes every subject; so does --force
    assert _predict(data, out, model, "--participant-label", "01", "--no-report") == 0
    again = _record_mtimes(out)
    assert [s for s in SUBJECTS if again[s] != after[s]] == ["sub-01"]
    assert not (out / "sub-01" / "anat" / "sub-01_desc-deepmir_report.html").exists()
    assert _predict(data, out, model, "--force") == 0
    forced = _record_mtimes(out)
    assert all(forced[s] != again[s] for s in SUBJECTS)
    assert _products(out) == first

    # another model (same weights, re-tuned post-processing: a new card) redoes them all
    other = tmp_path / "other-model"
    shutil.copytree(model, other)
    config = json.loads((other / "config.json").read_text())
    config["post_processing"]["threshold"] = 0.9
    (other / "config.json").write_text(json.dumps(config))
    assert _predict(data, out, other, "--participant-label", "03") == 0
    assert [s for s in SUBJECTS if _record_mtimes(out)[s] != forced[s]] == ["sub-03"]


def test_a_failing_subject_loses_its_outputs_and_record_others_go_on(dataset, model, tmp_path):
    data = _copy(dataset, tmp_path)
    out = tmp_path / "out"
    assert _predict(data, out, model) == 0
    swi = data / "sub-02" / "anat" / "sub-02_swi.nii.gz"
    swi.write_bytes(swi.read_bytes()[:1000])  # truncated
    assert _predict(data, out, model) == 1
    assert not list((out / "sub-02" / "anat").glob("*"))
    assert {s.name for s in read_cohort([out]).subjects} == {"sub-01", "sub-03"}


def test_killed_run_resumes_to_the_outputs_of_an_uninterrupted_run(dataset, model, tmp_path):
    data = _copy(dataset, tmp_path)
    reference = tmp_path / "reference"
    assert _predict(data, reference, model) == 0
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    cmd = [sys.executable, "-m", "deepmir.cli", "predict", "--data", str(data), "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--model", str(model), "--no-regions"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = out / "sub-01" / "anat" / f"sub-01_{SUFFIX}"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # as a job scheduler kills a job
    proc.wait()
    assert first.exists()
    killed_at = _record_mtimes(out)
    assert set(killed_at) < set(SUBJECTS), "the run finished before it was killed"
    assert _predict(data, out, model) == 0
    assert _record_mtimes(out)["sub-01"] == killed_at["sub-01"]  # skipped, not redone
    assert _products(out) == _products(reference)
    assert _temporaries(out) == []


def _census(out: Path) -> list[dict[str, str]]:
    with (out / "group_census.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        row.pop("output_dir")
    return rows


def test_dask_workers_and_scheduler_give_the_serial_outputs(dataset, model, tmp_path):
    from distributed import LocalCluster

    serial = tmp_path / "serial"
    assert _predict(dataset, serial, model) == 0
    local = tmp_path / "local"
    args = [str(dataset), str(local), "participant", "--model", str(model), "--no-regions"]
    assert main([*args, "--n-workers", "1", "--threads-per-worker", "1"]) == 0
    assert _products(local) == _products(serial)
    remote = tmp_path / "remote"
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        args = [str(dataset), str(remote), "participant", "--model", str(model), "--no-regions"]
        assert main([*args, "--scheduler", cluster.scheduler_address]) == 0
    assert _products(remote) == _products(serial)


def test_a_broken_subject_does_not_stop_the_dask_run(dataset, model, tmp_path, capsys):
    data = _copy(dataset, tmp_path)
    (data / "sub-03" / "anat" / "sub-03_T2w.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "out"
    args = [str(data), str(out), "participant", "--model", str(model), "--n-workers", "2"]
    args.append("--no-regions")
    assert main([*args, "--threads-per-worker", "1"]) == 1
    assert "sub-03_T2w.nii.gz" in capsys.readouterr().out  # the failure, with its file
    assert {s.name for s in read_cohort([out]).subjects} == {"sub-01", "sub-02"}
    assert main([str(data), str(out), "group"]) == 1  # sub-03 has no outputs
    assert "sub-03" in (out / "index.html").read_text()


def test_participant_runs_touch_only_their_subject_and_group_builds_the_cohort(
    dataset, model, tmp_path, monkeypatch
):
    """An array job (participant level) neither reads the other subjects' records
    nor writes the cohort files (quadratic, and racy, over an array);
    ``deepmir predict`` indexes its own subjects without scanning the folder;
    group builds the census and index of every subject on disk."""
    from deepmir.cohort import provenance

    read: list[Path] = []
    read_record = provenance.read_record

    def spy(path: Path) -> dict | None:
        read.append(Path(path))
        return read_record(path)

    monkeypatch.setattr(provenance, "read_record", spy)
    out = tmp_path / "out"
    base = [str(dataset), str(out), "participant", "--model", str(model), "--n-workers", "0"]
    for label in ("01", "02"):
        read.clear()
        assert main([*base, "--no-regions", "--participant-label", label]) == 0
        assert read and {p.relative_to(out).parts[0] for p in read} == {f"sub-{label}"}
    assert not (out / "index.html").exists() and not (out / "group_census.tsv").exists()
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"

    read.clear()
    assert _predict(dataset, out, model, "--participant-label", "03") == 0
    assert {p.relative_to(out).parts[0] for p in read} == {"sub-03"}
    index = (out / "index.html").read_text()
    assert "sub-03_desc-deepmir_report.html" in index and "sub-01" not in index

    assert main([str(dataset), str(out), "group"]) == 0
    index = (out / "index.html").read_text()
    assert all(f"{s}_desc-deepmir_report.html" in index for s in SUBJECTS)
    assert [r["participant_id"] for r in _census(out)] == list(SUBJECTS)


def test_array_style_runs_and_group_give_the_census_of_one_run(dataset, model, tmp_path):
    one = tmp_path / "one"
    args = [str(dataset), str(one), "participant", "--model", str(model), "--n-workers", "0"]
    assert main(args) == 0
    assert main([str(dataset), str(one), "group"]) == 0
    array = tmp_path / "array"
    for label in ("03", "01", "02"):  # one job per subject, in any order
        args = [str(dataset), str(array), "participant", "--participant-label", label]
        assert main([*args, "--model", str(model), "--n-workers", "0"]) == 0
    assert main([str(dataset), str(array), "group"]) == 0
    census = _census(one)
    assert census == _census(array)
    assert [r["participant_id"] for r in census] == list(SUBJECTS)
    index = (array / "index.html").read_text()
    assert all(f"{s}_desc-deepmir_report.html" in index for s in SUBJECTS)
    assert "data:image/png;base64," in index

    # the census values come from the lesion tables
    for row in census:
        tsv = array / row["participant_id"] / "anat"
        with (tsv / f"{row['participant_id']}_desc-deepmir_lesions.tsv").open() as f:
            lesions = list(csv.DictReader(f, delimiter="\t"))
        n_cmb = sum(r["label"] == "1" for r in lesions)
        assert int(row["n_cmb"]) == n_cmb
        assert row["cmb_count_category"] == cmb_category(n_cmb)
        load = sum(float(r["chi_volume_ppm_mm3"]) for r in lesions if r["label"] == "2")
        assert float(row["iron_load_ppm_mm3"]) == pytest.approx(load, abs=1e-3)
    assert sum(int(r["n_cmb"]) + int(r["n_iron"]) for r in census) > 0
    # every lesion got a region or structure and MNI coordinates (registration)
    for row in census:
        regions = sum(int(row[f"n_cmb_{r}"]) for r in ("lobar", "deep", "infratentorial"))
        assert regions == int(row["n_cmb"]) and row["n_cmb_region_unknown"] == "0"
    tables = list(array.glob("sub-*/anat/*_lesions.tsv"))
    rows = [r for t in tables for r in csv.DictReader(t.open(), delimiter="\t")]
    assert rows and all(r["mni_x"] != "n/a" and r["structure"] != "n/a" for r in rows)


def test_regions_agree_with_the_phantom_reference(simulated_dataset):
    """Reference lesions mapped through each phantom's registration to MNI152:
    the CMB's MARS region and the iron deposit's or calcification's host."""
    import nibabel as nib
    import numpy as np

    from deepmir.cohort import regions

    agree = total = 0
    for anat in sorted(simulated_dataset.glob("sub-*/anat")):
        sub = anat.parent.name
        t2w = nib.load(anat / f"{sub}_T2w.nii.gz")
        mask = np.asarray(nib.load(anat / f"{sub}_desc-brain_mask.nii.gz").dataobj) > 0
        reg = regions.register_to_mni(t2w.get_fdata(dtype=np.float32), mask, t2w.affine, 1)
        reference = simulated_dataset / "derivatives" / "reference" / sub / "anat"
        with (reference / f"{sub}_lesions.tsv").open() as f:
            for row in csv.DictReader(f, delimiter="\t"):
                xyz = np.array([float(row[c]) for c in "xyz"])
                region, structure = regions.classify(int(row["label"]), reg.to_mni(xyz)[0])
                ok = region == row["region"] if row["label"] == "1" else structure == row["host"]
                agree, total = agree + ok, total + 1
    assert total >= 8
    assert agree / total >= 0.9, f"{agree}/{total}"


def test_group_lists_every_model_and_the_missing_subjects(dataset, model, tmp_path):
    other = tmp_path / "other-model"
    shutil.copytree(model, other)
    config = json.loads((other / "config.json").read_text())
    config["post_processing"]["threshold"] = 0.9
    (other / "config.json").write_text(json.dumps(config))
    out, extra = tmp_path / "out", tmp_path / "extra"
    base = [str(dataset), str(out), "participant", "--n-workers", "0", "--no-regions"]
    assert main([*base, "--participant-label", "01", "--model", str(model)]) == 0
    # the group's description must not forget the first run's model
    assert main([*base, "--participant-label", "02", "--model", str(other)]) == 0
    assert main([str(dataset), str(out), "group"]) == 1  # sub-03 has no outputs yet
    models = json.loads((out / "dataset_description.json").read_text())["DeepmirModels"]
    assert sorted(m["Name"] for m in models) == sorted([str(model), str(other)])
    assert "sub-03" in (out / "index.html").read_text()
    args = [str(dataset), str(extra), "participant", "--participant-label", "03"]
    assert main([*args, "--model", str(model), "--n-workers", "0", "--no-regions"]) == 0
    assert main([str(dataset), str(out), "group", "--derivatives", str(extra)]) == 0
    assert [r["participant_id"] for r in _census(out)] == list(SUBJECTS)


def test_cmb_categories():
    assert [cmb_category(n) for n in (0, 1, 2, 4, 5, 40)] == ["0", "1", "2-4", "2-4", ">=5", ">=5"]
