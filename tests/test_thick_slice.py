"""A thick-slice (0.8 x 0.8 x 3 mm, UK-Biobank-like) phantom through the shipped model.

The subject is simulated physically at 3 mm slabs (complex average), predict
resamples it to the model's 1 mm working grid and puts the lesions back on
the 3 mm grid, where they are scored against the reference.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from deepmir.evaluation import compute_metrics, match_subject
from deepmir.inference.predict import predict_dataset
from deepmir.labels import CMB
from deepmir.phantom.simulate import REFERENCE, SimulationConfig, load_params, simulate_dataset

#: seed and subject chosen for a CMB of >= 4 mm and >= 0.8 ppm (found by drawing records only)
SEED, INDEX = 4711, 0


@pytest.fixture(scope="module")
def thick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("thick") / "bids"
    simulate_dataset(
        SimulationConfig(
            out=root,
            n_subjects=1,
            seed=SEED,
            first_index=INDEX,
            preset="randomized",
            shift="slice-3mm",
        ),
        progress=False,
    )
    return root


def test_thick_slice_cmb_is_found(thick: Path, tmp_path: Path) -> None:
    params = load_params(thick, f"{INDEX + 1:02d}")
    assert params.variation is not None and params.variation.recon_voxel_mm[2] == 3.0
    out = tmp_path / "pred"
    outcome = predict_dataset(thick, out, progress=False, log=lambda m: None)
    assert not outcome.failed
    prefix = f"sub-{INDEX + 1:02d}"
    ref_dir = thick / REFERENCE / prefix / "anat"
    ref_img = nib.load(ref_dir / f"{prefix}_dseg.nii.gz")
    pred_img = nib.load(out / prefix / "anat" / f"{prefix}_desc-deepmir_dseg.nii.gz")
    np.testing.assert_allclose(pred_img.affine, ref_img.affine)  # the 3 mm input grid
    assert pred_img.shape == ref_img.shape
    match = match_subject(
        np.asarray(ref_img.dataobj),
        np.asarray(nib.load(ref_dir / f"{prefix}_desc-instances_dseg.nii.gz").dataobj),
        np.asarray(pred_img.dataobj),
        ref_img.affine,
    )
    result = compute_metrics({prefix: match}, n_bootstrap=0)
    cmb = result.classes["cmb"]
    assert cmb.n_reference >= 1
    assert cmb.true_positives >= 1, "no thick-slice CMB found"
    assert (np.asarray(pred_img.dataobj) == CMB).any()
