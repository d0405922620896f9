"""The phantom's claims: what each lesion and mimic looks like on each modality."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from deepmir.labels import CALCIFICATION, CMB, IRON
from deepmir.phantom.anatomy import Grid
from deepmir.phantom.geometry import Ellipsoid
from deepmir.phantom.params import Lesion, SubjectParams, draw_subject_params
from deepmir.phantom.render import render_subject, subject_anatomy


def _shell(mask: np.ndarray, images, inner: int = 1, outer: int = 3) -> np.ndarray:
    """Surroundings of a lesion: a shell, away from other lesions and veins."""
    return (
        ndimage.binary_dilation(mask, iterations=outer)
        & ~ndimage.binary_dilation(mask, iterations=inner)
        & (images.dseg == 0)
        & (images.vein_occupancy < 0.1)
        & (images.brain_mask > 0)
    )


def _lesions(cohort, label):
    for r in cohort:
        for z in r.params.lesions:
            m = r.images.instances == z.lesion_id
            if z.label == label and m.any():
                yield r, z, m


def test_cohort_has_every_class(small_cohort):
    for label in (CMB, IRON, CALCIFICATION):
        assert any(True for _ in _lesions(small_cohort, label)), label


def test_every_cmb_is_dark_on_swi_and_positive_on_qsm(small_cohort):
    n = 0
    for r, _, m in _lesions(small_cohort, CMB):
        shell = _shell(m, r.images)
        assert r.images.swi[m].mean() < 0.8 * np.median(r.images.swi[shell])
        assert r.images.chimap[m].mean() > 0
        n += 1
    assert n >= 5


def test_every_calcification_is_dark_on_swi_and_negative_on_qsm(small_cohort):
    n = 0
    for r, _, m in _lesions(small_cohort, CALCIFICATION):
        shell = _shell(m, r.images)
        assert r.images.swi[m].mean() < 0.8 * np.median(r.images.swi[shell])
        assert r.images.chimap[m].mean() < 0
        n += 1
    assert n >= 2


def test_iron_deposits_raise_qsm_over_their_host_nucleus(small_cohort):
    n = 0
    for r, z, m in _lesions(small_cohort, IRON):
        host = (r.anatomy.region == z.host_region_code) & (r.images.dseg == 0)
        assert r.images.chimap[m].mean() > r.images.chimap[host].mean() + 0.02
        n += 1
    assert n >= 2


def test_veins_are_in_the_images_and_not_in_the_labels(small_cohort):
    for r in small_cohort:
        assert len(r.params.veins) >= 6
        vein = r.images.vein_occupancy > 0.5
        assert vein.sum() > 10
        assert not (r.images.dseg[vein] > 0).any()
        brain = (r.images.brain_mask > 0) & (r.images.dseg == 0) & ~vein
        assert r.images.swi[vein].mean() < 0.8 * np.median(r.images.swi[brain])
        assert r.images.chimap[vein].mean() > 0.05  # paramagnetic deoxygenated blood


def test_counts_vary_and_some_subjects_lack_a_class():
    """Drawing only (no rendering): per-subject counts differ and zero counts occur."""
    counts = []
    for index in range(12):
        p = draw_subject_params(99, index, subject_anatomy, "small")
        counts.append(
            tuple(sum(1 for z in p.lesions if z.label == k) for k in (CMB, IRON, CALCIFICATION))
        )
    arr = np.array(counts)
    assert len(set(counts)) > 4
    for c in range(3):
        assert (arr[:, c] == 0).any() and (arr[:, c] > 0).any()
    regions = {
        z.region
        for i in range(12)
        for z in draw_subject_params(99, i, subject_anatomy, "small").lesions
        if z.label == CMB
    }
    assert regions == {"lobar", "deep", "infratentorial"}


def _single_cmb_subject(size: str, diameter_mm: float):
    params = draw_subject_params(7, 0, subject_anatomy, size)
    grid = Grid.make(size)
    anatomy = subject_anatomy(grid, params.deformation)
    wm = ndimage.binary_erosion(
        (anatomy.wm > 0.95) & (anatomy.region == 0), iterations=int(6 / grid.voxel_size)
    )
    points = np.argwhere(wm)
    centre = tuple(float(c) for c in points[len(points) // 2])
    cmb = Lesion(
        lesion_id=1,
        label=CMB,
        region="lobar",
        host="white matter",
        ellipsoids=(Ellipsoid(centre, (diameter_mm / 2,) * 3, (0, 0, 0)),),
        delta_chi_ppm=1.0,
        r2star_per_s=150.0,
        t2_s=0.055,
        pd=None,
    )
    return dataclasses.replace(params, lesions=(cmb,), veins=()), anatomy


def _dark_voxels(image: np.ndarray, lesion: np.ndarray, threshold: float) -> np.ndarray:
    far = ndimage.binary_dilation(lesion, iterations=8) ^ ndimage.binary_dilation(
        lesion, iterations=5
    )
    return ndimage.binary_dilation(lesion, iterations=5) & (
        image < threshold * np.median(image[far])
    )


def test_a_cmb_blooms_on_swi_with_te_and_not_on_t2w():
    """Liu et al. 2012: apparent SWI volume grows ~2.3x from TE 20 to 40 ms."""
    params, anatomy = _single_cmb_subject("full", 3.0)
    swi_volume, t2w_outside = {}, {}
    for te_swi, te_t2 in ((0.020, 0.080), (0.040, 0.120)):
        acq = dataclasses.replace(
            params.acquisition, swi_te_s=te_swi, t2w_te_s=te_t2, swi_snr=500.0, t2w_snr=500.0
        )
        images = render_subject(dataclasses.replace(params, acquisition=acq), anatomy)
        lesion = images.dseg == CMB
        swi_volume[te_swi] = _dark_voxels(images.swi, lesion, 0.5).sum()
        # T2w: no voxel more than one voxel away from the lesion is darkened
        near = ndimage.binary_dilation(lesion, iterations=1)
        t2w_outside[te_swi] = (_dark_voxels(images.t2w, lesion, 0.85) & ~near).sum()
        true_volume = lesion.sum()
    assert swi_volume[0.020] > true_volume
    assert swi_volume[0.040] > 1.6 * swi_volume[0.020]
    assert t2w_outside == {0.020: 0, 0.040: 0}


def test_same_seed_same_images_and_record_round_trip(small_cohort):
    first = small_cohort[0]
    again = draw_subject_params(
        first.params.cohort_seed, first.params.index, subject_anatomy, "small"
    )
    assert again == first.params
    restored = SubjectParams.from_json(first.params.to_json())
    assert restored == first.params
    images = render_subject(restored)
    for name in ("t2w", "swi", "chimap", "dseg", "instances"):
        np.testing.assert_array_equal(getattr(images, name), getattr(first.images, name))


def test_different_seeds_differ(small_cohort):
    a, b = small_cohort[0], small_cohort[1]
    assert a.params.deformation != b.params.deformation
    assert not np.array_equal(a.images.swi, b.images.swi)
    assert not np.array_equal(a.images.brain_mask, b.images.brain_mask)  # own anatomy
    other = draw_subject_params(6, 0, subject_anatomy, "small")
    assert other.acquisition != a.params.acquisition


@pytest.mark.parametrize(
    "field", ["swi_te_s", "swi_snr", "b0_tilt_deg", "t2w_snr", "swi_gain", "qsm_method"]
)
def test_acquisition_is_drawn_per_subject(field):
    values = {
        getattr(draw_subject_params(3, i, subject_anatomy, "small").acquisition, field)
        for i in range(6)
    }
    assert len(values) > 1
