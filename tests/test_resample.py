"""The working grid: resampling to the model's voxel size and back, and predict on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import QsmThreshold

from deepmir.inference.lesions import PostProcessing
from deepmir.inference.predict import (
    LoadedModel,
    output_paths,
    predict_subject,
    working_input,
    write_subject,
)
from deepmir.inference.resample import (
    Resampler,
    instances_backward,
    instances_forward,
)
from deepmir.io.bids import SubjectRef
from deepmir.model.checkpoint import ModelCard
from deepmir.model.network import TinyNetworkConfig
from deepmir.model.preprocess import Normalization

# 0.5 x 0.5 x 2 mm, LPS-like signs and an origin off the voxel grid
ANISO = np.array(
    [[0.5, 0.0, 0.0, -30.3], [0.0, 0.5, 0.0, -25.1], [0.0, 0.0, 2.0, -17.7], [0, 0, 0, 1.0]]
)
ANISO_SHAPE = (64, 56, 14)


def _scanner(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return np.asarray(ijk, float) @ affine[:3, :3].T + affine[:3, 3]


def _voxel_centres(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Scanner coordinates (..., 3) of every voxel centre."""
    return _scanner(affine, np.moveaxis(np.indices(shape), 0, -1))


def _smooth(xyz: np.ndarray) -> np.ndarray:
    """A smooth test image (scales of ~10 mm), float32."""
    x, y, z = np.moveaxis(xyz, -1, 0)
    return (np.sin(x / 6.0) * np.cos(y / 7.0) + 0.5 * np.sin(z / 9.0) + 2.0).astype(np.float32)


def _centroid_mm(instances: np.ndarray, lesion: int, affine: np.ndarray) -> np.ndarray:
    return _scanner(affine, np.argwhere(instances == lesion).mean(axis=0))


def test_identity_returns_the_input_unchanged():
    affine = np.diag([0.95, 1.05, 1.0, 1.0])
    grid = Resampler.of(affine, (8, 9, 10))
    assert grid.identity
    np.testing.assert_array_equal(grid.target_affine, affine)
    assert grid.target_shape == (8, 9, 10)
    volume = np.random.default_rng(0).random((2, 8, 9, 10)).astype(np.float32)
    labels = np.zeros((8, 9, 10), np.int32)
    labels[3, 4, 5] = 7
    assert grid.forward(volume, 1) is volume
    first = volume[0]
    assert grid.backward(first, 1) is first
    assert instances_backward(labels, grid) is labels
    assert grid.to_dict()["identity"] is True
    assert not Resampler.of(np.diag([1.2, 1.0, 1.0, 1.0]), (8, 9, 10)).identity


def test_working_grid_keeps_the_axes_and_the_field_of_view():
    # oblique: a rotation about z, voxels 0.5 x 0.5 x 2 mm
    c, s = np.cos(0.3), np.sin(0.3)
    affine = ANISO.copy()
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ ANISO[:3, :3]
    grid = Resampler.of(affine, ANISO_SHAPE)
    assert grid.target_shape == (32, 28, 28)
    np.testing.assert_allclose(nib.affines.voxel_sizes(grid.target_affine), 1.0)
    for a in range(3):  # same directions
        u = affine[:3, a] / np.linalg.norm(affine[:3, a])
        np.testing.assert_allclose(grid.target_affine[:3, a], u, atol=1e-12)
    # the field-of-view box [-0.5, n - 0.5] has the same corners in scanner mm
    for corner in np.ndindex(2, 2, 2):
        src = np.where(corner, np.asarray(ANISO_SHAPE) - 0.5, -0.5)
        dst = np.where(corner, np.asarray(grid.target_shape) - 0.5, -0.5)
        np.testing.assert_allclose(
            _scanner(affine, src), _scanner(grid.target_affine, dst), atol=1e-9
        )
    d = grid.to_dict()
    assert d["source_voxel_size_mm"] == [0.5, 0.5, 2.0]
    assert d["working_voxel_size_mm"] == [1.0, 1.0, 1.0]
    assert d["working_shape"] == [32, 28, 28] and d["identity"] is False
    # n * spacing not a multiple of 1 mm: 1 mm voxels, box centred on the source's
    odd = Resampler.of(np.diag([0.7, 1.0, 3.0, 1.0]), (14, 10, 5))
    assert odd.target_shape == (10, 10, 15)
    low = _scanner(odd.target_affine, np.full(3, -0.5)) - _scanner(odd.source_affine, [-0.5] * 3)
    np.testing.assert_allclose(low, [-0.1, 0.0, 0.0], atol=1e-9)  # 9.8 mm -> 10 mm


def _scipy_linear(x: np.ndarray, zoom, shift, shape) -> np.ndarray:
    """The reference: scipy's trilinear interpolation in float64, edges repeated."""
    from scipy import ndimage

    return ndimage.affine_transform(
        x.astype(np.float64), zoom, offset=shift, output_shape=shape, order=1, mode="nearest"
    )


@pytest.mark.parametrize(
    "affine",
    [ANISO, np.diag([0.7, 0.68, 1.0, 1.0]), np.diag([1.3, 0.95, 0.45, 1.0])],
    ids=["0.5x0.5x2", "0.7x0.68x1", "1.3x0.95x0.45"],
)
def test_linear_resampling_equals_scipys_affine_transform(affine):
    """The separable float32 interpolation gives scipy's trilinear values (edge
    values repeated), forward and back, for images, stacks and masks."""
    rng = np.random.default_rng(3)
    grid = Resampler.of(affine, (23, 19, 11))
    assert not grid.identity
    back = (1.0 / grid.zoom, -grid.shift / grid.zoom, grid.source_shape)
    for resample, (zoom, shift, shape), source_shape in (
        (grid.forward, (grid.zoom, grid.shift, grid.target_shape), grid.source_shape),
        (grid.backward, back, grid.target_shape),
    ):
        source = (3.0 * rng.standard_normal(source_shape)).astype(np.float32)
        got = resample(source, 1)
        assert got.dtype == np.float32 and got.shape == shape
        expected = _scipy_linear(source, zoom, shift, shape)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        stack = resample(np.stack([source, 2 * source]), 1)
        np.testing.assert_allclose(stack[1], 2 * got, rtol=0, atol=1e-5)
        mask = source > 0.3
        linear = _scipy_linear(mask, zoom, shift, shape)
        # an exact tie (0.5 between an inside and an outside voxel) falls either
        # way in scipy too, by the rounding of its coordinates
        clear = np.abs(linear - 0.5) > 1e-6
        assert clear.mean() > 0.5
        np.testing.assert_array_equal(resample(mask, 1)[clear], (linear >= 0.5)[clear])


def test_a_bright_spot_stays_at_its_scanner_position():
    grid = Resampler.of(ANISO, ANISO_SHAPE)
    volume = np.zeros(ANISO_SHAPE, np.float32)
    volume[20:22, 31:33, 6] = 1.0  # 1 x 1 x 2 mm
    where = _scanner(ANISO, [20.5, 31.5, 6.0])
    working = grid.forward(volume, 1)
    assert working.dtype == np.float32 and working.shape == grid.target_shape
    weights = working / working.sum()
    centroid = np.tensordot(weights, np.moveaxis(np.indices(working.shape), 0, -1), 3)
    np.testing.assert_allclose(_scanner(grid.target_affine, centroid), where, atol=1e-6)
    # and back
    back = grid.backward(working, 1)
    assert back.shape == ANISO_SHAPE
    centroid = np.tensordot(back / back.sum(), np.moveaxis(np.indices(back.shape), 0, -1), 3)
    np.testing.assert_allclose(_scanner(ANISO, centroid), where, atol=1e-6)


def test_a_smooth_image_round_trips():
    grid = Resampler.of(ANISO, ANISO_SHAPE)
    source = _smooth(_voxel_centres(ANISO, ANISO_SHAPE))
    working = grid.forward(source, 1)
    expected = _smooth(_voxel_centres(grid.target_affine, grid.target_shape))
    inner = (slice(1, -1),) * 3  # the outer half voxel repeats the edge
    np.testing.assert_allclose(working[inner], expected[inner], atol=0.03)
    back = grid.backward(working, 1)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back[2:-2, 2:-2, 1:-1], source[2:-2, 2:-2, 1:-1], atol=0.03)
    stack = grid.forward(np.stack([source, 2 * source]), 1)
    np.testing.assert_allclose(stack[1], 2 * working, rtol=1e-5)
    mask = grid.forward(source > 2.0, 1)
    assert mask.dtype == np.bool_ and mask.shape == grid.target_shape


def test_a_round_trip_puts_every_lesion_back_where_it_was():
    instances = np.zeros(ANISO_SHAPE, np.int16)
    ijk = np.moveaxis(np.indices(ANISO_SHAPE), 0, -1) * [0.5, 0.5, 2.0]
    instances[np.linalg.norm(ijk - [10.0, 9.0, 12.0], axis=-1) <= 2.0] = 1  # 4 mm ball
    instances[20:22, 30:32, 5] = 2  # 1 x 1 x 2 mm, aligned with the working voxels
    instances[41:43, 11:13, 8] = 3  # 1 x 1 x 2 mm, straddling working voxels
    instances[50:53, 40:42, 3:5] = 4  # 1.5 x 1 x 4 mm
    grid = Resampler.of(ANISO, ANISO_SHAPE)
    working = grid.forward(instances, 0)
    assert working.dtype == np.int16
    assert 0 < (working == 3).sum() <= 2  # a lesion of 1-2 working voxels
    back = instances_backward(working, grid)
    assert back.dtype == np.int16 and back.shape == ANISO_SHAPE
    for lesion in range(1, 5):
        assert (back == lesion).any(), lesion
        shift = _centroid_mm(back, lesion, ANISO) - _centroid_mm(instances, lesion, ANISO)
        assert np.linalg.norm(shift) <= 1.0, (lesion, shift)


def test_a_lesion_smaller_than_an_input_voxel_keeps_one():
    # working 1 mm -> input 1 x 1 x 3 mm: one-voxel lesions in a 3 mm slice
    grid = Resampler.of(np.diag([1.0, 1.0, 3.0, 1.0]), (12, 12, 4))
    assert grid.target_shape == (12, 12, 12)
    working = np.zeros(grid.target_shape, np.int32)
    working[2, 2, 3] = 1  # slice 3 of working: input slice 1 is centred on working slice 4
    working[6, 6, 4:6] = 2  # holds input voxel (6, 6, 1)...
    working[6, 6, 3] = 3  # ... which is also lesion 3's centroid voxel
    plain = grid.backward(working, 0)
    assert not (plain == 1).any() and not (plain == 3).any()
    back = instances_backward(working, grid)
    assert back[2, 2, 1] == 1
    assert back[6, 6, 1] == 2
    # lesion 3's only input voxel is lesion 2's: it gets the nearest free neighbour
    assert (back == 3).sum() == 1
    assert np.abs(np.argwhere(back == 3)[0] - [6, 6, 1]).max() == 1
    assert (back == 3).sum() + (back == 2).sum() + (back == 1).sum() == (back > 0).sum()
    # the other way: a one-voxel lesion of a 0.5 mm input kept on the 1 mm grid
    fine = Resampler.of(np.diag([0.5, 0.5, 0.5, 1.0]), (8, 8, 8))
    tiny = np.zeros((8, 8, 8), np.uint8)
    tiny[2, 2, 2] = 1
    assert not fine.forward(tiny, 0).any()
    assert instances_forward(tiny, fine)[1, 1, 1] == 1


def _threshold_model(spacing_mm: float) -> LoadedModel:
    card = ModelCard(
        network=TinyNetworkConfig(),
        normalization=Normalization(("t2w", "swi", "qsm"), qsm_scale_ppm=0.1),
        patch_size=(64, 64, 64),
        seed=0,
        working_spacing_mm=spacing_mm,
    )
    return LoadedModel(QsmThreshold(2), card, "qsm-threshold")


def _decimate(src: Path, dst: Path, ref: SubjectRef) -> None:
    """A copy of one subject with every other slice along k, the odd ones (2 x 2 x 4 mm)."""
    take = np.diag([1.0, 1.0, 2.0, 1.0])
    take[2, 3] = 1.0
    for f in ref.anat_dir(src).glob("*.nii.gz"):
        img = nib.load(f)
        affine = img.affine @ take
        data = np.ascontiguousarray(np.asarray(img.dataobj)[:, :, 1::2])
        out = ref.anat_dir(dst) / f.name
        out.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, affine), out)


def _reference_classes(root: Path, ref: SubjectRef) -> dict[int, int]:
    anat = ref.anat_dir(root / "derivatives" / "reference")
    dseg = np.asarray(nib.load(anat / f"{ref.prefix}_dseg.nii.gz").dataobj)
    inst = np.asarray(nib.load(anat / f"{ref.prefix}_desc-instances_dseg.nii.gz").dataobj)
    return {int(k): int(dseg[inst == k][0]) for k in np.unique(inst[inst > 0])}


def test_predict_on_an_anisotropic_input(simulated_dataset, tmp_path):
    ref = SubjectRef("01")
    data = tmp_path / "aniso"
    _decimate(simulated_dataset, data, ref)
    shutil.copy(simulated_dataset / "dataset_description.json", data)
    model = _threshold_model(1.0)
    prediction = predict_subject(data, ref, model, PostProcessing())
    # 4 mm slices
    assert any("far from the model's working grid" in m for m in prediction.warnings)
    out = tmp_path / "pred"
    written = write_subject(out, prediction, None, save_probabilities=True)
    paths = output_paths(out, ref)
    assert paths["dseg-json"] in written
    source = nib.load(ref.modality_path(data, "swi"))
    dseg = nib.load(paths["dseg"])
    assert dseg.shape == source.shape
    np.testing.assert_allclose(dseg.affine, source.affine, atol=1e-5)
    assert nib.load(paths["prob-1"]).shape == source.shape
    sidecar = json.loads(paths["dseg-json"].read_text())
    assert "bids:raw:sub-01/anat/sub-01_swi.nii.gz" in sidecar["Sources"]
    assert sidecar["SpatialReference"] == "bids:raw:sub-01/anat/sub-01_swi.nii.gz"
    probseg = json.loads(paths["prob-json-1"].read_text())
    assert probseg["Sources"] == sidecar["Sources"] and "cmb" in probseg["Description"]
    grid = sidecar["WorkingGrid"]
    assert grid["identity"] is False
    assert grid["source_voxel_size_mm"] == [2.0, 2.0, 4.0]
    assert grid["working_voxel_size_mm"] == [1.0, 1.0, 1.0]
    rows = prediction.table
    # the stand-in network finds every reference CMB left with > 0.7 ppm in the
    # decimated QSM, at its reference position
    reference = nib.load(
        ref.anat_dir(simulated_dataset / "derivatives" / "reference")
        / f"{ref.prefix}_desc-instances_dseg.nii.gz"
    )
    kept = np.asarray(reference.dataobj)[:, :, 1::2]
    qsm = np.asarray(nib.load(ref.modality_path(data, "qsm")).dataobj)
    kinds = _reference_classes(simulated_dataset, ref)
    strong = [
        k for k, c in kinds.items() if c == 1 and (kept == k).any() and qsm[kept == k].max() > 0.7
    ]
    assert strong, "the fixture has a strong CMB on an odd slice"
    found = np.array([[r["x"], r["y"], r["z"]] for r in rows if r["name"] == "cmb"])
    for lesion in strong:
        where = _centroid_mm(np.asarray(reference.dataobj), lesion, reference.affine)
        assert np.linalg.norm(found - where, axis=1).min() <= 2.0, (lesion, where)
    instances = prediction.subject.uncrop(prediction.lesions.instances)  # brain crop -> grid
    assert {r["lesion_id"] for r in rows} == set(np.unique(instances[instances > 0]).tolist())
    labels = np.asarray(dseg.dataobj)
    np.testing.assert_array_equal(labels > 0, instances > 0)
    for r in rows:
        ijk = np.array([r["i"], r["j"], r["k"]])
        assert np.all(ijk >= -0.5) and np.all(ijk <= np.asarray(source.shape) - 0.5), r
        xyz = [r["x"], r["y"], r["z"]]
        np.testing.assert_allclose(_scanner(source.affine, ijk), xyz, atol=0.05)
        assert r["volume_mm3"] == pytest.approx(round(r["volume_mm3"]))  # 1 mm^3 voxels
    # the same subject at the model's voxel size is not resampled
    same = predict_subject(simulated_dataset, ref, _threshold_model(2.0), PostProcessing())
    assert same.working_grid.identity
    assert same.working_grid.to_dict()["working_voxel_size_mm"] == [2.0, 2.0, 2.0]


def test_calibration_scores_the_lesions_predict_writes_on_the_input_grid(
    simulated_dataset, tmp_path
):
    """calibrate fits its maps on predict's own lesions: on an anisotropic input
    they are the lesion table's rows (same scores, same order), and as many are
    real as evaluate's matching finds on the input grid."""
    from deepmir.evaluation import match_subject
    from deepmir.training.calibrate import input_outcomes
    from deepmir.training.data import REFERENCE, read_reference

    ref = SubjectRef("01")
    data = tmp_path / "aniso"
    _decimate(simulated_dataset, data, ref)
    _decimate(simulated_dataset / REFERENCE, data / REFERENCE, ref)
    model = _threshold_model(1.0)
    card = model.card
    inp, image = working_input(data, ref, card)
    assert not inp.grid.identity and inp.present == ("t2w", "swi", "qsm")
    reference = read_reference(data / REFERENCE, ref)
    assert reference[0].shape == inp.subject.full_shape
    outcomes = input_outcomes(model.net, image, inp=inp, card=card, reference=reference)
    prediction = predict_subject(data, ref, model, card.post)
    rows = prediction.table
    assert len(rows) >= 2
    assert outcomes.labels.tolist() == [r["label"] for r in rows]
    np.testing.assert_allclose(outcomes.scores, [r["score"] for r in rows], atol=5e-4)
    match = match_subject(*reference, prediction.dseg, inp.subject.affine)
    assert 0 < int(outcomes.real.sum()) == len(match.matches)
