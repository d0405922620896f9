"""Domain randomization: the record, the acquisition operators, the QSM pipeline variants."""

from __future__ import annotations

import numpy as np
import pytest

from deepmir.phantom import acquire
from deepmir.phantom import physics as phy
from deepmir.phantom.params import SHIFTS, SubjectParams, draw_subject_params
from deepmir.phantom.render import render_subject, subject_anatomy


@pytest.fixture(scope="module")
def randomized() -> tuple[SubjectParams, object]:
    params = draw_subject_params(21, 3, subject_anatomy, "small", preset="randomized")
    return params, render_subject(params)


def test_randomized_record_reproduces_the_images(randomized: tuple[SubjectParams, object]) -> None:
    params, images = randomized
    assert params.variation is not None and params.variation.shift == "none"
    again = render_subject(SubjectParams.from_json(params.to_json()))
    for name in ("swi", "chimap", "t2w", "dseg", "instances", "brain_mask"):
        np.testing.assert_array_equal(getattr(again, name), getattr(images, name), err_msg=name)
    np.testing.assert_array_equal(again.affine, images.affine)  # type: ignore[attr-defined]


def test_training_draws_stay_in_distribution() -> None:
    for i in range(6):
        v = draw_subject_params(4, i, subject_anatomy, "small", preset="randomized").variation
        assert v is not None
        assert v.b0_tesla == 3.0 and v.swi_variant in ("2d", "3d")
        assert v.qsm_inversion in ("tkd", "tikhonov") and v.qsm_background in ("ideal", "sharp")
        assert 1.0 <= v.recon_voxel_mm[2] <= 2.0 and 0.01 <= v.echo_times_s[0] <= 0.03


@pytest.mark.parametrize(
    "shift, check",
    [
        ("b0-7t", lambda v: v.b0_tesla == 7.0 and v.echo_times_s[0] <= 0.02),
        ("b0-1.5t", lambda v: v.b0_tesla == 1.5 and v.echo_times_s[0] >= 0.03),
        ("slice-3mm", lambda v: v.recon_voxel_mm == (0.8, 0.8, 3.0) and len(v.echo_times_s) == 2),
        ("qsm-cg", lambda v: v.qsm_inversion == "cg"),
        ("bg-vsharp", lambda v: v.qsm_background == "vsharp"),
        ("swi-swan", lambda v: v.swi_variant == "swan"),
    ],
)
def test_held_out_shifts(shift: str, check: object) -> None:
    assert shift in SHIFTS
    v = draw_subject_params(4, 0, subject_anatomy, "small", preset="randomized", shift=shift)
    assert v.variation is not None and check(v.variation)  # type: ignore[operator]


def test_atrophy_enlarges_ventricles() -> None:
    base = draw_subject_params(4, 1, subject_anatomy, "small", preset="randomized")
    atrophic = draw_subject_params(
        4, 1, subject_anatomy, "small", preset="randomized", shift="atrophy"
    )
    assert atrophic.deformation.ventricle_scale > base.deformation.ventricle_scale
    from deepmir.phantom.anatomy import _VENTRICLES, Grid

    grid = Grid.make("small")
    idx = np.indices(grid.shape).reshape(3, -1)
    xyz = (grid.affine[:3, :3] @ idx + grid.affine[:3, 3:]).reshape(3, *grid.shape)
    near = np.zeros(grid.shape, bool)
    for c in _VENTRICLES:
        near |= ((xyz - np.array(c)[:, None, None, None]) ** 2).sum(0) <= 20.0**2

    def ventricles(deformation: object) -> int:
        return int(((subject_anatomy(grid, deformation).csf > 0.5) & near).sum())  # type: ignore[arg-type]

    assert ventricles(atrophic.deformation) > 1.15 * ventricles(base.deformation)


def test_unknown_preset_or_shift_is_refused() -> None:
    with pytest.raises(ValueError, match="preset"):
        draw_subject_params(1, 0, subject_anatomy, "small", preset="wide")
    with pytest.raises(ValueError, match="shift"):
        draw_subject_params(1, 0, subject_anatomy, "small", preset="narrow", shift="b0-7t")


def test_thick_slab_is_a_complex_average_not_a_blur() -> None:
    """A phase ramp across a 3-voxel slab dephases: the magnitude drops (sinc-like),
    while the average of the magnitudes would stay 1."""
    n = 12
    k = np.arange(n)
    phase = np.broadcast_to(2.0 * k, (4, 4, n)).astype(np.float32)  # 2 rad per voxel along k
    signal = np.exp(1j * phase).astype(np.complex64)
    grid = acquire.AcquisitionGrid(recon=(1.0, 1.0, 3.0), acquired_inplane=(1.0, 1.0))
    out = acquire.acquire(signal, grid)
    assert out.shape == (4, 4, 4)
    expected = abs(np.mean(np.exp(1j * 2.0 * np.arange(3))))
    np.testing.assert_allclose(np.abs(out), expected, rtol=1e-4)
    assert expected < 0.5


def test_acquired_grid_keeps_the_field_of_view() -> None:
    fine = np.eye(4)
    fine[:3, 3] = (-80.0, -110.0, -70.0)
    grid = acquire.AcquisitionGrid(recon=(0.8, 0.8, 3.0), acquired_inplane=(1.0, 1.0))
    shape = grid.shape((160, 192, 160))
    affine = grid.affine(fine, (160, 192, 160))
    first_edge = affine @ np.array([-0.5, -0.5, -0.5, 1.0])
    last_edge = affine @ np.array([shape[0] - 0.5, shape[1] - 0.5, shape[2] - 0.5, 1.0])
    np.testing.assert_allclose(first_edge[:3], fine[:3, 3] - 0.5, atol=1e-6)
    np.testing.assert_allclose(
        last_edge[:3], fine[:3, 3] + np.array([159.5, 191.5, 159.5]), atol=0.6
    )


def test_kspace_resampling_puts_a_point_where_it_was() -> None:
    """In-plane DFT resampling to 0.5 and to 2 units keeps a smooth blob's centroid."""
    n = 64
    x = np.arange(n)
    blob = np.exp(-((x[:, None, None] - 30.0) ** 2) / 18.0) * np.ones((1, n, 2))
    for factor in (0.5, 2.0):
        grid = acquire.AcquisitionGrid(recon=(factor, 1.0, 1.0), acquired_inplane=(factor, 1.0))
        out = np.abs(acquire.acquire(blob.astype(np.complex64), grid))[:, 0, 0]
        centres = (np.arange(out.size) + 0.5) * factor - 0.5  # fine-voxel coordinates
        centroid = float((out * centres).sum() / out.sum())
        assert abs(centroid - 30.0) < 0.1, (factor, centroid)


def test_sharp_removes_a_background_field() -> None:
    shape = (48, 48, 48)
    chi = np.zeros(shape, np.float32)
    chi[2:8, 20:28, 20:28] = 9.4  # air-like source outside the mask
    idx = np.indices(shape)
    mask = ((idx - 28) ** 2).sum(0) <= 14**2
    field = phy.dipole_field(chi, 1.0, (0.0, 0.0, 1.0))
    local, kept = acquire.sharp(field, mask, (1.0, 1.0, 1.0), 4.0)
    assert kept.sum() > 0.3 * mask.sum()
    assert np.abs(local[kept]).mean() < 0.1 * np.abs(field[kept]).mean()


def test_cg_inversion_keeps_the_sign_of_a_source() -> None:
    shape = (40, 40, 40)
    idx = np.indices(shape)
    chi = np.zeros(shape, np.float32)
    chi[((idx - 20) ** 2).sum(0) <= 3**2] = 0.5
    chi[((idx - np.array([20, 10, 20])[:, None, None, None]) ** 2).sum(0) <= 3**2] = -0.5
    field = phy.dipole_field(chi, 1.0, (0.0, 0.0, 1.0))
    mask = np.ones(shape, bool)
    out = acquire.cg_inversion(
        field, mask, np.ones(shape, np.float32), (1.0, 1.0, 1.0), (0, 0, 1.0), 25
    )
    assert out[20, 20, 20] > 0.2 and out[20, 10, 20] < -0.2


def test_every_lesion_keeps_a_voxel_on_a_thick_grid() -> None:
    from deepmir.phantom.scanner import _labels_on_grid

    inst = np.zeros((20, 20, 30), np.int16)
    inst[5, 5, 7] = 1  # a one-voxel lesion straddling slabs
    inst[10:13, 10:13, 10:20] = 2
    dseg, out = _labels_on_grid(inst, {1: 1, 2: 3}, (20, 20, 10))
    assert set(np.unique(out)) == {0, 1, 2}
    assert (dseg[out == 1] == 1).all() and (dseg[out == 2] == 3).all()
