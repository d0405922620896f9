"""The simulator's output follows shared/docs/data-contract.md."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from deepmir.io.bids import SubjectRef, find_subjects
from deepmir.io.loader import load_subject
from deepmir.labels import LABELS

REF = "derivatives/reference"
CONTRACT_COLUMNS = ["lesion_id", "label", "i", "j", "k", "x", "y", "z", "volume_mm3", "chi_ppm"]


def test_file_names_and_dtypes(simulated_dataset):
    root = simulated_dataset
    assert json.loads((root / "dataset_description.json").read_text())["BIDSVersion"]
    assert (root / "participants.tsv").exists()
    assert (
        json.loads((root / REF / "dataset_description.json").read_text())["DatasetType"]
        == "derivative"
    )
    subjects = find_subjects(root)
    assert [s.subject for s in subjects] == ["01", "02"]
    for s in subjects:
        anat = root / f"sub-{s.subject}" / "anat"
        dtypes = {
            anat / f"sub-{s.subject}_T2w.nii.gz": np.float32,
            anat / f"sub-{s.subject}_swi.nii.gz": np.float32,
            anat / f"sub-{s.subject}_Chimap.nii.gz": np.float32,
            anat / f"sub-{s.subject}_desc-brain_mask.nii.gz": np.uint8,
            root / REF / f"sub-{s.subject}/anat/sub-{s.subject}_dseg.nii.gz": np.uint8,
            root
            / REF
            / f"sub-{s.subject}/anat/sub-{s.subject}_desc-instances_dseg.nii.gz": np.int16,
        }
        grids = []
        for path, dtype in dtypes.items():
            img = nib.load(path)
            assert img.get_data_dtype() == dtype, path
            assert img.ndim == 3
            grids.append((img.shape, img.affine))
        for shape, affine in grids[1:]:  # one grid for everything
            assert shape == grids[0][0]
            np.testing.assert_allclose(affine, grids[0][1])
        assert (
            root / REF / f"sub-{s.subject}/figures/sub-{s.subject}_desc-preview.png"
        ).stat().st_size > 10_000


def test_label_table(simulated_dataset):
    table = pd.read_csv(simulated_dataset / REF / "dseg.tsv", sep="\t")
    assert list(table.columns) == ["index", "name"]
    assert dict(zip(table["index"], table["name"], strict=True)) == LABELS


def test_instances_match_the_lesion_table(simulated_dataset):
    root = simulated_dataset
    n_lesions = 0
    for s in find_subjects(root):
        anat = root / REF / f"sub-{s.subject}" / "anat"
        table = pd.read_csv(anat / f"sub-{s.subject}_lesions.tsv", sep="\t")
        assert list(table.columns[: len(CONTRACT_COLUMNS)]) == CONTRACT_COLUMNS
        assert "region" in table.columns
        img = nib.load(anat / f"sub-{s.subject}_desc-instances_dseg.nii.gz")
        inst = np.asarray(img.dataobj)
        dseg = np.asarray(nib.load(anat / f"sub-{s.subject}_dseg.nii.gz").dataobj)
        assert set(np.unique(inst[inst > 0])) == set(table.lesion_id)
        assert ((inst > 0) == (dseg > 0)).all()
        voxel_volume = abs(np.linalg.det(img.affine[:3, :3]))
        for row in table.itertuples():
            m = inst == row.lesion_id
            assert set(np.unique(dseg[m])) == {row.label}
            assert row.volume_mm3 == np.round(m.sum() * voxel_volume, 3)
            ijk = np.array([w.mean() for w in np.nonzero(m)])
            np.testing.assert_allclose([row.i, row.j, row.k], ijk, atol=0.01)
            xyz = img.affine[:3, :3] @ ijk + img.affine[:3, 3]
            np.testing.assert_allclose([row.x, row.y, row.z], xyz, atol=0.01)
            assert row.region in {"lobar", "deep", "infratentorial"}
            # one lesion is one 26-connected component of its class: a perfect
            # detector scores perfectly under the metrics.md matching rule
            _, n_parts = ndimage.label(m, structure=np.ones((3, 3, 3)))
            assert n_parts == 1
        for label in LABELS:
            if label:
                _, n_parts = ndimage.label(dseg == label, structure=np.ones((3, 3, 3)))
                assert n_parts == int((table.label == label).sum())
        n_lesions += len(table)
    assert n_lesions > 0


def test_the_loader_reads_a_simulated_subject(simulated_dataset):
    subject = load_subject(simulated_dataset, SubjectRef("01"))
    assert set(subject.images) == {"t2w", "swi", "qsm"}
    assert subject.brain_mask is not None and subject.brain_mask.any()
    assert all(a.dtype == np.float32 for a in subject.images.values())


def test_simulating_twice_gives_identical_files(simulated_dataset, tmp_path):
    from deepmir.cli import main

    again = tmp_path / "again"
    assert (
        main(
            ["simulate", "--out", str(again), "--n", "1", "--seed", "11", "--size", "small"]
            + ["--preset", "narrow"]
        )
        == 0
    )
    for name in (
        "sub-01/anat/sub-01_swi.nii.gz",
        "sub-01/anat/sub-01_Chimap.nii.gz",
        f"{REF}/sub-01/anat/sub-01_desc-instances_dseg.nii.gz",
    ):
        a = np.asarray(nib.load(simulated_dataset / name).dataobj)
        b = np.asarray(nib.load(again / name).dataobj)
        np.testing.assert_array_equal(a, b)
    assert (again / f"{REF}/sub-01/anat/sub-01_desc-phantom_params.json").read_text() == (
        simulated_dataset / f"{REF}/sub-01/anat/sub-01_desc-phantom_params.json"
    ).read_text()
