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


def test_training_mask_jitter_uses_the_derived_mask_and_drops_lesions_outside(
    simulated_dataset,
):
    from deepmir.training.data import read_annotated

    modalities = ("t2w", "swi", "qsm")
    given = read_annotated(simulated_dataset, modalities)
    jittered = read_annotated(simulated_dataset, modalities, mask_jitter=1.0, seed=5)
    again = read_annotated(simulated_dataset, modalities, mask_jitter=1.0, seed=5)
    changed = 0
    for g, j, a in zip(given, jittered, again, strict=True):
        assert np.array_equal(j.mask, a.mask)  # reproducible from the seed
        assert not (j.dseg[~j.mask]).any() and not (j.instances[~j.mask]).any()
        assert _dice(j.mask, g.mask) > 0.8
        changed += int(not np.array_equal(j.mask, g.mask))
    assert changed == len(given)
    # without jitter the given mask is kept
    assert all(
        np.array_equal(r.mask, g.mask)
        for r, g in zip(read_annotated(simulated_dataset, modalities, seed=5), given, strict=True)
    )


def test_cropping_on_read_prepares_the_same_training_subject(simulated_dataset):
    from deepmir.training.data import CROP_MARGIN, crop, fit, prepare, read_annotated

    modalities = ("t2w", "swi", "qsm")
    raw = read_annotated(simulated_dataset, modalities)
    norm = fit(raw, modalities)
    cropped = read_annotated(simulated_dataset, modalities, crop_margin=CROP_MARGIN)
    assert fit(cropped, modalities) == norm
    for r, c in zip(raw, cropped, strict=True):
        assert c.mask.size <= r.mask.size
        full, small = prepare(r, norm), prepare(c, norm)
        for name in ("image", "dseg", "instances", "brain", "affine"):
            assert np.array_equal(getattr(full, name), getattr(small, name)), name
    assert crop(raw[0], CROP_MARGIN).mask.shape == cropped[0].mask.shape
    tight = crop(raw[0], 0)
    assert tight.mask.size < raw[0].mask.size and tight.mask.sum() == raw[0].mask.sum()
