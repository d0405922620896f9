"""Raw GRE in (issue 12, part 3): SWI and QSM from magnitude + phase, units and
sign detection, discovery of echo/part files with their sidecars, simulate
--raw-gre, and predict on a subject that has only raw GRE."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import bids_errors, validate
from scipy import ndimage

from deepmir.inference.fromgre import gre_echoes, gre_output_paths
from deepmir.io.bids import find_subjects
from deepmir.io.loader import SubjectDataError
from deepmir.labels import CALCIFICATION, CMB
from deepmir.phantom.physics import b0_direction, dipole_field
from deepmir.phantom.render import SubjectImages, render_subject
from deepmir.phantom.simulate import draw_with_anatomy, echo_times, receive_phase
from deepmir.qsm.dipole import radians_per_ppm
from deepmir.qsm.gre import GreData, phase_to_radians, read_gre, swi_qsm_from_gre

SEED = 5  # subject index 1 of this seed: 2 echoes, CMBs and a calcification (small grid)


@dataclass
class Phantom:
    images: SubjectImages
    data: GreData  # its raw GRE, receive-phase offset included
    echo_times_s: tuple[float, ...]


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    params, anatomy = draw_with_anatomy(SEED, 1, "small", preset="randomized")
    images = render_subject(params, anatomy, keep_gre=True)
    assert images.gre is not None
    signal = images.gre * np.exp(1j * receive_phase(images.gre.shape, 3))[..., None]
    assert params.variation is not None
    data = GreData(
        np.abs(signal).astype(np.float32),
        np.angle(signal).astype(np.float32),
        echo_times(params),
        params.variation.b0_tesla,
        images.affine,
        b0_world=b0_direction(params.acquisition.b0_tilt_deg, params.acquisition.b0_azimuth_deg),
    )
    return Phantom(images, data, echo_times(params))


def _lesion_means(volume: np.ndarray, images: SubjectImages, label: int) -> list[float]:
    ids = [i for i in np.unique(images.instances[images.dseg == label]) if i > 0]
    return [float(volume[images.instances == i].mean()) for i in ids]


def test_gre_phantom_gives_swi_and_qsm_with_the_right_signs(phantom: Phantom) -> None:
    images = phantom.images
    result = swi_qsm_from_gre(phantom.data, images.brain_mask > 0)
    assert len(phantom.echo_times_s) == 2
    assert result.phase_sign == 1 and result.phase_units == "rad"
    cmb = _lesion_means(result.chimap, images, CMB)
    calc = _lesion_means(result.chimap, images, CALCIFICATION)
    assert cmb and calc
    assert np.mean(cmb) > 0.05  # paramagnetic
    assert np.mean(calc) < -0.05  # diamagnetic
    m = result.qsm_mask
    truth = images.chi_true[m] - images.chi_true[m].mean()
    rmse = float(np.sqrt(np.mean((result.chimap[m] - truth) ** 2)))
    assert rmse < 0.05
    # CMBs dark on SWI, and the SWI looks like the simulator's own
    dark = result.swi[images.dseg == CMB].mean() / np.median(result.swi[m])
    assert dark < 0.6
    assert np.corrcoef(result.swi[m], images.swi[m])[0, 1] > 0.9


def test_sign_flipped_phase_is_detected(phantom: Phantom) -> None:
    ref = swi_qsm_from_gre(phantom.data, phantom.images.brain_mask > 0)
    flipped = GreData(
        phantom.data.magnitude,
        -phantom.data.phase,
        phantom.data.echo_times_s,
        phantom.data.b0_tesla,
        phantom.data.affine,
        b0_world=phantom.data.b0_world,
    )
    auto = swi_qsm_from_gre(flipped, phantom.images.brain_mask > 0)
    assert auto.phase_sign == -1 and auto.phase_sign_source == "auto"
    assert auto.sign_evidence["median_chi_dark_ppm"] < 0
    np.testing.assert_allclose(auto.chimap, ref.chimap, atol=1e-4)
    np.testing.assert_allclose(auto.swi, ref.swi, rtol=1e-3, atol=1e-3 * float(ref.swi.max()))
    forced = swi_qsm_from_gre(flipped, phantom.images.brain_mask > 0, phase_sign="+1")
    assert forced.phase_sign == 1 and forced.phase_sign_source == "option"
    assert np.mean(_lesion_means(forced.chimap, phantom.images, CMB)) < 0  # wrong on purpose


def test_integer_phase_is_rescaled_to_radians(phantom: Phantom) -> None:
    rad = phantom.data.phase
    signed = np.clip(np.round(rad / np.pi * 4096), -4096, 4095).astype(np.float32)
    back, units = phase_to_radians(signed)
    assert units == "integer/8192"
    assert np.abs(np.angle(np.exp(1j * (back - rad)))).max() < 2e-3
    unsigned = np.mod(np.round(rad / (2 * np.pi) * 4096), 4096).astype(np.float32)
    back, units = phase_to_radians(unsigned)
    assert units == "integer/4096"
    assert np.abs(np.angle(np.exp(1j * (back - rad)))).max() < 3e-3
    data = GreData(
        phantom.data.magnitude,
        signed,
        phantom.data.echo_times_s,
        phantom.data.b0_tesla,
        phantom.data.affine,
        b0_world=phantom.data.b0_world,
    )
    ref = swi_qsm_from_gre(phantom.data, phantom.images.brain_mask > 0)
    out = swi_qsm_from_gre(data, phantom.images.brain_mask > 0)
    assert out.phase_units == "integer/8192"
    m = ref.qsm_mask
    assert np.corrcoef(out.chimap[m], ref.chimap[m])[0, 1] > 0.99
    with pytest.raises(SubjectDataError, match="neither radians"):
        phase_to_radians(rad * 10.3, "sub-01_part-phase_MEGRE.nii.gz")


@pytest.fixture(scope="module")
def gre_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small randomized subjects written by ``deepmir simulate --raw-gre``."""
    from deepmir.cli import main

    root = tmp_path_factory.mktemp("gre") / "bids"
    args = ["simulate", "--out", str(root), "--n", "2", "--seed", str(SEED), "--size", "small"]
    assert main([*args, "--raw-gre"]) == 0
    return root


def test_simulate_writes_raw_gre_with_sidecars(gre_dataset: Path, phantom: Phantom) -> None:
    anat = gre_dataset / "sub-02" / "anat"
    names = sorted(p.name for p in anat.glob("*_MEGRE.nii.gz"))
    assert names == [
        f"sub-02_echo-{n}_part-{part}_MEGRE.nii.gz" for n in (1, 2) for part in ("mag", "phase")
    ]
    phase = np.asarray(nib.load(anat / "sub-02_echo-2_part-phase_MEGRE.nii.gz").dataobj)
    assert phase.min() >= -np.pi - 1e-4 and phase.max() <= np.pi + 1e-4
    assert (np.abs(phase) > 3.0).mean() > 0.01  # wrapped
    sidecar = json.loads((anat / "sub-02_echo-2_part-phase_MEGRE.json").read_text())
    assert sidecar["EchoTime"] == pytest.approx(phantom.echo_times_s[1])
    assert sidecar["Units"] == "rad" and sidecar["MagneticFieldStrength"] == 3.0
    # the phantom's head is tilted against B0 while its affine is axis-aligned: the
    # sidecar says where B0 is, and read_gre takes it
    assert np.linalg.norm(sidecar["B0Direction"]) == pytest.approx(1.0, abs=1e-5)
    ref = find_subjects(gre_dataset, ["02"])[0]
    data = read_gre(gre_echoes(gre_dataset, ref))
    np.testing.assert_allclose(data.b0_world, sidecar["B0Direction"], atol=1e-5)
    # the randomized raw dataset with raw GRE, and its reference, are valid BIDS
    assert bids_errors(validate(gre_dataset)) == []
    assert bids_errors(validate(gre_dataset / "derivatives" / "reference")) == []


def test_discovery_finds_echoes_and_reads_echo_times(gre_dataset: Path, phantom: Phantom) -> None:
    refs = find_subjects(gre_dataset)
    ref = refs[1]
    assert ref.files is not None
    assert [e.echo for e in ref.files.gre] == [1, 2]
    assert Path(ref.files.gre[1].phase).name == "sub-02_echo-2_part-phase_MEGRE.nii.gz"
    assert "swi" in ref.files.modalities  # the simulator's own SWI is still there
    echoes = gre_echoes(gre_dataset, ref)
    assert [e.echo_time_s for e in echoes] == pytest.approx(list(phantom.echo_times_s))
    data = read_gre(echoes)
    assert data.magnitude.shape[-1] == 2 and data.b0_tesla == 3.0


def test_a_missing_sidecar_names_the_file(gre_dataset: Path, tmp_path: Path) -> None:
    data = tmp_path / "bids"
    shutil.copytree(gre_dataset, data, ignore=shutil.ignore_patterns("derivatives"))
    anat = data / "sub-02" / "anat"
    for part in ("mag", "phase"):
        (anat / f"sub-02_echo-2_part-{part}_MEGRE.json").unlink()
    ref = find_subjects(data)[1]
    with pytest.raises(SubjectDataError) as err:
        gre_echoes(data, ref)
    assert "sub-02_echo-2_part-phase_MEGRE.json" in str(err.value)
    assert "EchoTime" in str(err.value) and "sidecar missing" in str(err.value)


def test_predict_on_raw_gre_only_writes_swi_qsm_and_a_prediction(
    gre_dataset: Path, tmp_path: Path
) -> None:
    from deepmir.inference.predict import predict_dataset

    data = tmp_path / "bids"
    shutil.copytree(gre_dataset, data, ignore=shutil.ignore_patterns("derivatives"))
    for sub in ("01", "02"):
        for suffix in ("swi", "Chimap"):
            (data / f"sub-{sub}" / "anat" / f"sub-{sub}_{suffix}.nii.gz").unlink()
    # sub-01: its phase sidecar gone -> it fails alone, naming the file
    (data / "sub-01" / "anat" / "sub-01_echo-1_part-phase_MEGRE.json").unlink()
    (data / "sub-01" / "anat" / "sub-01_echo-1_part-mag_MEGRE.json").unlink()
    out = tmp_path / "out"
    outcome = predict_dataset(data, out, report=False, progress=False, log=lambda m: None)
    assert "sub-01" in outcome.failed and "part-phase_MEGRE.json" in outcome.failed["sub-01"]
    assert "sub-02" in outcome.written
    ref = find_subjects(data, ["02"])[0]
    paths = gre_output_paths(out, ref)
    for path in paths.values():
        assert path in outcome.written["sub-02"] and path.exists()
    chimap = np.asarray(nib.load(paths["qsm"]).dataobj)
    swi_img = np.asarray(nib.load(paths["swi"]).dataobj)
    assert chimap.shape == swi_img.shape and np.abs(chimap).max() > 0.05
    sidecar = json.loads(paths["qsm-json"].read_text())
    assert sidecar["PhaseSign"] == 1 and sidecar["Units"] == "ppm"
    dseg_json = json.loads((out / "sub-02" / "anat" / "sub-02_desc-deepmir_dseg.json").read_text())
    assert any("desc-fromgre_Chimap" in s for s in dseg_json["Sources"])
    assert (out / "sub-02" / "anat" / "sub-02_desc-deepmir_dseg.nii.gz").exists()
    # the SWI and QSM computed from raw GRE are valid BIDS derivatives
    assert bids_errors(validate(out)) == []


def test_a_raw_gre_only_training_cohort_is_read_with_computed_swi_and_qsm(
    gre_dataset: Path, tmp_path: Path
) -> None:
    """tune, calibrate and train read a labelled cohort that has raw GRE and no
    SWI or QSM: both computed as predict computes them, signs right, and
    nothing written next to the data."""
    from deepmir.training.data import iter_annotated

    data = tmp_path / "bids"
    shutil.copytree(gre_dataset, data)
    anat = data / "sub-02" / "anat"
    for suffix in ("swi", "Chimap"):
        (anat / f"sub-02_{suffix}.nii.gz").unlink()
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    own, from_gre = (
        {r.ref.subject: r for r in iter_annotated(root, ("t2w", "swi", "qsm"))}["02"]
        for root in (gre_dataset, data)
    )
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
    assert set(from_gre.images) == {"t2w", "swi", "qsm"}
    # calibrate's path (predict's own steps) gets them too
    from deepmir.inference.predict import working_input
    from deepmir.io.bids import find_subjects
    from deepmir.model.checkpoint import ModelCard
    from deepmir.model.network import TinyNetworkConfig
    from deepmir.model.preprocess import Normalization
    from deepmir.training.data import gre_derived

    card = ModelCard(TinyNetworkConfig(), Normalization(("t2w", "swi", "qsm")), (32, 32, 32), 0)
    ref = next(r for r in find_subjects(data) if r.subject == "02")
    with gre_derived(data, ref, card.modalities) as derived:
        inp, image = working_input(data, derived, card)
    assert inp.present == ("t2w", "swi", "qsm") and image.shape[0] == 4
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
    np.testing.assert_array_equal(from_gre.images["t2w"], own.images["t2w"])
    np.testing.assert_array_equal(from_gre.dseg, own.dseg)
    qsm = from_gre.images["qsm"]
    assert not np.array_equal(qsm, own.images["qsm"])  # computed, not the simulator's
    inside = from_gre.mask
    # the same brain (the simulator inverts with its own, varied method)
    assert np.corrcoef(qsm[inside], own.images["qsm"][inside])[0, 1] > 0.5
    cmb = [
        qsm[from_gre.instances == i].mean()
        for i in np.unique(from_gre.instances[from_gre.dseg == CMB])
    ]
    calc = [
        qsm[from_gre.instances == i].mean()
        for i in np.unique(from_gre.instances[from_gre.dseg == CALCIFICATION])
    ]
    assert cmb and calc and np.mean(cmb) > 0.05 and np.mean(calc) < -0.05


def test_t2starw_magnitude_with_a_phase_partner_is_raw_gre_not_swi(
    gre_dataset: Path, tmp_path: Path
) -> None:
    data = tmp_path / "bids"
    shutil.copytree(gre_dataset, data, ignore=shutil.ignore_patterns("derivatives"))
    anat = data / "sub-02" / "anat"
    (anat / "sub-02_swi.nii.gz").unlink()
    for part in ("mag", "phase"):
        for ext in (".nii.gz", ".json"):
            old = anat / f"sub-02_echo-1_part-{part}_MEGRE{ext}"
            old.rename(anat / f"sub-02_part-{part}_T2starw{ext}")
            (anat / f"sub-02_echo-2_part-{part}_MEGRE{ext}").unlink()
    ref = find_subjects(data, ["02"])[0]
    assert ref.files is not None
    assert "swi" not in ref.files.modalities  # the magnitude is not an SWI
    assert [(e.echo, Path(e.magnitude).name) for e in ref.files.gre] == [
        (1, "sub-02_part-mag_T2starw.nii.gz")
    ]
    assert gre_echoes(data, ref)[0].echo_time_s > 0


def _sphere_gre(b0_world: tuple[float, float, float]) -> tuple[GreData, np.ndarray, np.ndarray]:
    """A 64 mm^3 head: a 4 mm sphere of +0.3 ppm in an ellipsoidal brain, an air
    cavity (+9.4 ppm) outside it, 2 echoes at 3 T with noise and a phase offset."""
    n = 64
    idx = np.indices((n, n, n), dtype=np.float32) - (n - 1) / 2
    brain = (idx[0] / 26) ** 2 + (idx[1] / 28) ** 2 + (idx[2] / 24) ** 2 < 1.0
    lesion = (idx[0] - 4) ** 2 + (idx[1] + 3) ** 2 + (idx[2] - 2) ** 2 <= 16.0
    air = idx[0] ** 2 + (idx[1] - 40) ** 2 + (idx[2] + 34) ** 2 <= 14.0**2
    chi = np.where(lesion, 0.3, 0.0) + np.where(air, 9.4, 0.0)
    field = dipole_field(chi.astype(np.float32), 1.0, b0_world)
    rng = np.random.default_rng(0)
    tes = (0.010, 0.020)
    mag = np.where(brain, 1.0, 0.02).astype(np.float32)
    echoes = []
    for te in tes:
        signal = mag * np.exp(-te * 20.0) * np.exp(1j * (radians_per_ppm(3.0, te) * field + 0.4))
        echoes.append(
            signal
            + 0.01 * (rng.standard_normal(signal.shape) + 1j * rng.standard_normal(signal.shape))
        )
    gre = np.stack(echoes, axis=-1)
    data = GreData(
        np.abs(gre).astype(np.float32),
        np.angle(gre).astype(np.float32),
        tes,
        3.0,
        np.eye(4),
        b0_world=b0_world,
    )
    return data, brain, lesion


def test_sphere_chi_is_recovered() -> None:
    """The QSM of a sphere phantom: TKD (the default) recovers its chi within 30 %;
    the Tikhonov inversion that was the default before loses over a third of it
    (why it is not the default)."""
    data, brain, lesion = _sphere_gre((0.0, 0.0, 1.0))
    result = swi_qsm_from_gre(data, brain, phase_sign="+1")
    inside = lesion & result.qsm_mask
    assert inside.sum() > 200
    chi = float(result.chimap[inside].mean())
    assert 0.7 * 0.3 < chi < 1.1 * 0.3
    tikhonov = swi_qsm_from_gre(data, brain, phase_sign="+1", inversion="tikhonov")
    assert float(tikhonov.chimap[inside].mean()) < 0.65 * 0.3


def test_b0_direction_from_the_sidecar_is_used() -> None:
    """B0 tilted 15 degrees: knowing it (``B0Direction``) halves the streaks that
    assuming the scanner z axis leaves around the sphere."""
    tilted = (0.0, float(np.sin(np.deg2rad(15))), float(np.cos(np.deg2rad(15))))
    data, brain, lesion = _sphere_gre(tilted)
    known = swi_qsm_from_gre(data, brain, phase_sign="+1")
    np.testing.assert_allclose(known.b0_voxel, tilted, atol=1e-6)
    assumed = swi_qsm_from_gre(
        GreData(data.magnitude, data.phase, data.echo_times_s, 3.0, data.affine), brain, "+1"
    )
    assert assumed.b0_voxel == pytest.approx((0.0, 0.0, 1.0))
    far = known.qsm_mask & ~ndimage.binary_dilation(lesion, iterations=4)
    assert known.chimap[far].std() < 0.7 * assumed.chimap[far].std()


def test_air_tissue_regions_take_the_steep_edge_and_leave_a_deep_lesion() -> None:
    from deepmir.qsm.gre import air_tissue_regions

    shape = (60, 60, 60)
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    mask = (i - 30) ** 2 + (j - 30) ** 2 + (k - 30) ** 2 <= 27**2
    phase = np.zeros(shape, np.float32)
    # next to the "sinus": the phase steps by 2.5 rad per voxel in a slab at the edge
    sinus = mask & (k < 12) & (np.abs(i - 30) < 12) & (np.abs(j - 30) < 12)
    phase[sinus] = np.angle(np.exp(2.5j * i[sinus])).astype(np.float32)
    # a CMB deep inside: steep too, but small and far from the edge
    cmb = (i - 30) ** 2 + (j - 30) ** 2 + (k - 34) ** 2 <= 3**2
    phase[cmb] = np.angle(np.exp(2.5j * (i[cmb] + j[cmb]))).astype(np.float32)
    air = air_tissue_regions(phase, mask, (1.0, 1.0, 1.0))
    assert air[sinus].mean() > 0.9
    assert not air[cmb].any()
    assert not (air & ~mask).any()
    # the same slab, if it were smaller than the threshold, stays in
    small = air_tissue_regions(np.where(k < 4, phase, 0).astype(np.float32), mask, (1.0,) * 3)
    assert not small.any()
