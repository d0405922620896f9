"""The subject loader's clear errors, one per kind of bad input."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from deepmir.io.atomic import write_nifti
from deepmir.io.bids import SubjectRef
from deepmir.io.loader import SubjectDataError, load_subject

REF = SubjectRef("01")
SHAPE = (12, 14, 10)


@pytest.fixture
def good(tmp_path):
    rng = np.random.default_rng(0)
    for modality in ("t2w", "swi", "qsm"):
        write_nifti(
            REF.modality_path(tmp_path, modality), rng.random(SHAPE).astype(np.float32), np.eye(4)
        )
    mask = np.zeros(SHAPE, np.uint8)
    mask[3:9, 3:9, 3:7] = 1
    write_nifti(REF.mask_path(tmp_path), mask, np.eye(4))
    return tmp_path


def _expect(root, match, **kw):
    with pytest.raises(SubjectDataError, match=match) as info:
        load_subject(root, REF, **kw)
    return info.value


def test_good_subject_loads(good):
    s = load_subject(good, REF)
    assert s.shape == SHAPE and s.brain_mask.sum() == 6 * 6 * 4


def test_missing_file_is_named(good):
    REF.modality_path(good, "qsm").unlink()
    err = _expect(good, "file is missing")
    assert err.path.name == "sub-01_Chimap.nii.gz"
    # a model that does not need QSM still loads the subject
    assert load_subject(good, REF, modalities=("swi", "t2w")).shape == SHAPE


def test_grid_shape_mismatch(good):
    write_nifti(REF.modality_path(good, "swi"), np.zeros((12, 14, 11), np.float32), np.eye(4))
    err = _expect(good, "grid does not match sub-01_T2w.nii.gz")
    assert err.path.name == "sub-01_swi.nii.gz"


def test_grid_affine_mismatch(good):
    affine = np.eye(4)
    affine[0, 3] = 2.0
    write_nifti(REF.modality_path(good, "qsm"), np.zeros(SHAPE, np.float32), affine)
    _expect(good, "affines differ")


def test_nan_and_inf(good):
    data = np.zeros(SHAPE, np.float32)
    data[1, 2, 3] = np.nan
    data[2, 2, 2] = np.inf
    write_nifti(REF.modality_path(good, "qsm"), data, np.eye(4))
    err = _expect(good, "2 NaN or infinite voxels")
    assert "Chimap" in str(err)


def test_4d_data(good):
    write_nifti(REF.modality_path(good, "swi"), np.zeros((*SHAPE, 3), np.float32), np.eye(4))
    _expect(good, "expected a 3D volume, got 4D")


def test_integer_data(good):
    write_nifti(REF.modality_path(good, "t2w"), np.ones(SHAPE, np.int16), np.eye(4))
    _expect(good, "holds int16 data; expected floating point")


def test_empty_brain_mask(good):
    write_nifti(REF.mask_path(good), np.zeros(SHAPE, np.uint8), np.eye(4))
    err = _expect(good, "brain mask is empty")
    assert err.path.name == "sub-01_desc-brain_mask.nii.gz"


def test_corrupt_gzip(good):
    path = REF.modality_path(good, "swi")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # truncated download
    _expect(good, "is corrupt or truncated")
    path.write_bytes(b"this is not gzip at all")
    _expect(good, "is not a gzip file")


def test_header_only_nifti_is_not_a_crash(good):
    path = REF.modality_path(good, "swi")
    img = nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4))
    raw = gzip.compress(img.header.binaryblock)  # header without data
    path.write_bytes(raw)
    _expect(good, "cannot be read|not a readable")
