"""A brain mask when the input has none (issue 12): derived, used and written."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from deepmir.io.bids import SubjectRef
from deepmir.model.preprocess import derive_brain_mask


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def _images(root, ref):
    out = {}
    for modality in ("t2w", "swi", "qsm"):
        img = nib.load(ref.modality_path(root, modality))
        out[modality] = np.asarray(img.dataobj, np.float32)
    mask = np.asarray(nib.load(ref.mask_path(root)).dataobj) > 0.5
    return out, mask, img.affine


def test_derived_masks_agree_with_the_given_one(simulated_dataset):
    ref = SubjectRef("01")
    images, given, affine = _images(simulated_dataset, ref)
    from_qsm, method = derive_brain_mask(images, affine)
    assert method == "qsm-support"
    assert _dice(from_qsm, given) > 0.9
    # the background (noise everywhere) is not taken as brain
    assert from_qsm.sum() < 0.6 * from_qsm.size
    without_qsm = {m: v for m, v in images.items() if m != "qsm"}
    from_swi, method = derive_brain_mask(without_qsm, affine)
    assert method == "nilearn-epi-mask"
    assert _dice(from_swi, given) > 0.8
