"""Deterministic rendering: a :class:`SubjectParams` record -> images.

The chain follows ``docs/physics.md`` step by step: tissue maps,
lesions and veins, dipole field, GRE with sub-voxel blooming, SWI, QSM by a
real dipole inversion of a noisy local field, and spin-echo T2w. Nothing here
draws a random number that is not seeded by the record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from deepmir.labels import CALCIFICATION, CMB, IRON
from deepmir.phantom import anatomy as anat
from deepmir.phantom import physics as phy
from deepmir.phantom.anatomy import DeformationParams, Grid, SubjectAnatomy
from deepmir.phantom.geometry import (
    block_mean,
    bounding_box,
    ellipsoid_occupancy,
    fine_inside,
    tube_occupancy,
    upsample_nearest,
)
from deepmir.phantom.params import Acquisition, Lesion, SubjectParams

FloatArray = npt.NDArray[np.float32]

# Tissue properties: chi (ppm, QSM Challenge 2.0), R2* (1/s), T2 (s), T1 (s), PD.
# T1 and PD are not in physics.md; they are textbook 3 T values (design).
TISSUE = {
    "csf": dict(chi=0.0, r2s=3.0, t2=2.0, t1=4.0, pd=1.0),
    "gm": dict(chi=0.02, r2s=16.0, t2=0.10, t1=1.45, pd=0.80),
    "wm": dict(chi=-0.03, r2s=20.0, t2=0.07, t1=0.85, pd=0.68),
    "head": dict(chi=0.0, r2s=25.0, t2=0.06, t1=0.5, pd=0.9),  # scalp, outside brain
}
NUCLEI = {
    anat.CAUDATE: dict(chi=0.044, r2s=22.0, t2=0.080, t1=1.30, pd=0.80),
    anat.PUTAMEN: dict(chi=0.038, r2s=27.0, t2=0.075, t1=1.20, pd=0.78),
    anat.PALLIDUM: dict(chi=0.13, r2s=40.0, t2=0.060, t1=1.00, pd=0.72),
    anat.THALAMUS: dict(chi=0.01, r2s=19.0, t2=0.080, t1=1.05, pd=0.75),
    anat.SUBSTANTIA_NIGRA: dict(chi=0.11, r2s=35.0, t2=0.060, t1=1.00, pd=0.72),
    anat.RED_NUCLEUS: dict(chi=0.10, r2s=33.0, t2=0.060, t1=1.00, pd=0.72),
}
R2STAR_PER_PPM = 137.0  # s^-1 per ppm (Shin et al. 2021)
R2_PER_PPM_IRON = 40.0  # s^-1 per ppm of iron on spin-echo R2 (design)
PROPS = ("chi", "r2s", "t2", "t1", "pd")


@dataclass
class TissueMaps:
    chi: FloatArray
    r2s: FloatArray
    t2: FloatArray
    t1: FloatArray
    pd: FloatArray


@dataclass
class SubjectImages:
    """The rendered subject. Images share one grid (``affine``)."""

    t2w: FloatArray
    swi: FloatArray
    chimap: FloatArray  # QSM, ppm
    brain_mask: npt.NDArray[np.uint8]
    dseg: npt.NDArray[np.uint8]  # contract labels
    instances: npt.NDArray[np.int16]  # lesion ids (SubjectParams.lesions order)
    chi_true: FloatArray  # true susceptibility, ppm
    vein_occupancy: FloatArray  # partial-volume fraction of veins (never labelled)
    affine: npt.NDArray[np.float64]
    #: (I, J, K, E) complex GRE per echo, noise included, on the images' grid
    #: (only when rendered with ``keep_gre``: ``deepmir simulate --raw-gre``)
    gre: npt.NDArray[np.complex64] | None = None


def _single_component(occ: FloatArray) -> FloatArray:
    """Keep one lesion one lesion: the largest 26-connected part of its label.

    Clipping a blob to its host nucleus can split it; a fragment would then be
    a separate lesion to any detector. Occupancy further than one voxel from
    the kept part is dropped, so an unlabelled fragment leaves no trace either.
    """
    parts, n = ndimage.label(occ >= 0.5, structure=np.ones((3, 3, 3)))
    if n <= 1:
        return occ
    sizes = ndimage.sum_labels(np.ones_like(occ), parts, index=np.arange(1, n + 1))
    keep = parts == (int(np.argmax(sizes)) + 1)
    return (occ * ndimage.binary_dilation(keep, structure=np.ones((3, 3, 3)))).astype(np.float32)


def subject_anatomy(grid: Grid, deformation: DeformationParams) -> SubjectAnatomy:
    """The subject's deformed anatomy (cached template, deterministic warp)."""
    return anat.deform_anatomy(anat.load_template(), grid, deformation)


def _soft_nuclei(
    a: SubjectAnatomy,
) -> dict[int, tuple[tuple[slice, slice, slice], FloatArray]]:
    """Soft membership (0..1) of each deep nucleus, in its bounding box.

    The atlas is a 1 mm label grid; a light Gaussian smoothing (0.8 mm) turns
    its staircase edges into the gradual boundaries real nuclei have.
    """
    sigma = 0.8 / a.grid.voxel_size
    out = {}
    for code in NUCLEI:
        where = a.region == code
        if not where.any():
            continue
        idx = np.nonzero(where)
        box = tuple(
            slice(max(0, int(i.min()) - 3), min(n, int(i.max()) + 4))
            for i, n in zip(idx, a.grid.shape, strict=True)
        )
        weight = ndimage.gaussian_filter(where[box].astype(np.float32), sigma)
        out[code] = (box, weight)
    return out  # type: ignore[return-value]


def tissue_maps(a: SubjectAnatomy, texture_seed: int, amplitude: float) -> TissueMaps:
    """Property maps from tissue fractions, deep nuclei, and smooth texture."""
    frac = np.stack([a.gm, a.wm, a.csf])
    frac /= np.maximum(frac.sum(0), 1e-3)
    brain = np.clip(a.brain, 0.0, 1.0)
    control = tuple(max(4, int(n * a.grid.voxel_size) // 12) for n in a.grid.shape)
    texture = anat.smooth_noise(a.grid.shape, texture_seed, control, n=4)  # type: ignore[arg-type]
    nuclei = _soft_nuclei(a)
    maps = {}
    for t, prop in enumerate(PROPS):
        parenchyma = (frac[0] * TISSUE["gm"][prop] + frac[1] * TISSUE["wm"][prop]).astype(
            np.float32
        )
        for code, (box, weight) in nuclei.items():
            tissue_part = (frac[0][box] + frac[1][box]) * NUCLEI[code][prop]
            parenchyma[box] = (1 - weight) * parenchyma[box] + weight * tissue_part
        inside = parenchyma + frac[2] * TISSUE["csf"][prop]
        if prop == "pd":
            outside = TISSUE["head"]["pd"] * np.clip(a.t1, 0, 1.2)
        else:
            outside = np.full(a.grid.shape, TISSUE["head"][prop], np.float32)
        value = brain * inside + (1 - brain) * outside
        # texture: +-amplitude relative, (chi gets an extra small additive part)
        tex = texture[t if t < 4 else 3]
        if prop == "chi":
            value = value * (1 + amplitude * tex) + 0.003 * tex * brain
        elif prop != "t1":
            value = value * (1 + amplitude * tex)
        maps[prop] = value.astype(np.float32)
    return TissueMaps(**maps)


def _fine_field_box_mm(lesion: Lesion, te_s: float, b0: float) -> float:
    """Half-width (mm) of the box in which a focal lesion's dephasing is computed."""
    radius = max(max(e.semi_axes_mm) for e in lesion.ellipsoids)
    phase_max = phy.radians_per_ppm(b0, te_s) * abs(lesion.delta_chi_ppm) * 2 / 3
    reach = radius * max(1.0, (phase_max / 0.3) ** (1 / 3))
    return float(np.clip(reach, radius + 3.0, radius + 14.0))


@dataclass
class SubjectObject:
    """The object before imaging: tissue maps with veins and lesions, labels."""

    tissue: TissueMaps
    chi_all: FloatArray  # susceptibility with focal lesions (partial volume)
    dseg: npt.NDArray[np.uint8]
    instances: npt.NDArray[np.int16]
    vein_occupancy: FloatArray
    focal: list[tuple[Lesion, tuple[slice, slice, slice], FloatArray, float]]


def build_object(
    params: SubjectParams, anatomy: SubjectAnatomy, tissue: TissueMaps
) -> SubjectObject:
    """Veins, iron deposits and focal lesions into ``tissue`` (in place), with their labels."""
    vs = anatomy.grid.voxel_size
    shape = anatomy.grid.shape
    # --- veins (unlabelled) ---
    vein_occ = np.zeros(shape, np.float32)
    for vein in params.veins:
        box, occ = tube_occupancy(list(vein.points_vox), vein.radius_mm, vs, shape)
        f = np.maximum(occ, vein_occ[box]) - vein_occ[box]  # add only new volume
        for prop, v in (("chi", vein.chi_ppm), ("r2s", vein.r2star_per_s)):
            m = getattr(tissue, prop)
            m[box] = (1 - f) * m[box] + f * v
        vein_occ[box] = np.maximum(vein_occ[box], occ)

    dseg = np.zeros(shape, np.uint8)
    instances = np.zeros(shape, np.int16)

    def label(lesion: Lesion, box: tuple[slice, slice, slice], occ: FloatArray) -> None:
        lab = occ >= 0.5
        if not lab.any():  # a lesion smaller than a voxel keeps its fullest voxel
            lab = occ >= occ.max()
        dseg[box][lab] = lesion.label
        instances[box][lab] = lesion.lesion_id

    # --- iron deposits: raise chi, R2* and R2 inside their host nucleus ---
    for lesion in (z for z in params.lesions if z.label == IRON):
        box, occ = ellipsoid_occupancy(list(lesion.ellipsoids), vs, shape)
        host = ndimage.binary_dilation(anatomy.region[box] == lesion.host_region_code)
        occ = _single_component(occ * host)
        if occ.max() <= 0:
            continue
        d = lesion.delta_chi_ppm
        tissue.chi[box] += occ * d
        tissue.r2s[box] += occ * R2STAR_PER_PPM * d
        tissue.t2[box] = 1.0 / (1.0 / tissue.t2[box] + occ * R2_PER_PPM_IRON * d)
        label(lesion, box, occ)

    # --- focal lesions (CMB, calcification): partial volume into chi; blooming later ---
    focal = [z for z in params.lesions if z.label in (CMB, CALCIFICATION)]
    chi_all = tissue.chi.copy()
    focal_occ: list[tuple[Lesion, tuple[slice, slice, slice], FloatArray, float]] = []
    for lesion in focal:
        box, occ = ellipsoid_occupancy(list(lesion.ellipsoids), vs, shape)
        centre = tuple(int(round(c)) for c in lesion.ellipsoids[0].center_vox)
        host_chi = float(tissue.chi[centre])
        chi_les = host_chi + lesion.delta_chi_ppm if lesion.label == CMB else lesion.delta_chi_ppm
        chi_all[box] = (1 - occ) * chi_all[box] + occ * chi_les
        focal_occ.append((lesion, box, occ, chi_les))
        label(lesion, box, occ)
    return SubjectObject(tissue, chi_all, dseg, instances, vein_occ, focal_occ)


def spin_echo_object(obj: SubjectObject, acq: Acquisition) -> FloatArray:
    """Turbo spin-echo magnitude of the object, focal lesions by partial volume."""
    tissue = obj.tissue
    t2w = phy.spin_echo(tissue.pd, tissue.t1, tissue.t2, acq.t2w_te_s, acq.t2w_tr_s)
    for lesion, box, occ, _ in obj.focal:
        pd_les = tissue.pd[box] if lesion.pd is None else np.float32(lesion.pd)
        les_signal = phy.spin_echo(
            pd_les * np.ones_like(occ),
            tissue.t1[box],
            np.full_like(occ, lesion.t2_s),
            acq.t2w_te_s,
            acq.t2w_tr_s,
        )
        t2w[box] = (1 - occ) * t2w[box] + occ * les_signal
    return t2w


def render_subject(
    params: SubjectParams, anatomy: SubjectAnatomy | None = None, keep_gre: bool = False
) -> SubjectImages:
    """Render one subject from its parameter record (deterministic).

    Parameters
    ----------
    params : the record drawn by :func:`deepmir.phantom.params.draw_subject_params`
    anatomy : the subject's deformed anatomy, if already computed
    keep_gre : also return the complex GRE signal per echo (``SubjectImages.gre``)

    Returns
    -------
    SubjectImages
    """
    grid = Grid.make(params.grid_size)
    if anatomy is None:
        anatomy = subject_anatomy(grid, params.deformation)
    if params.variation is not None:
        from deepmir.phantom.scanner import render_varied

        return render_varied(params, anatomy, keep_gre)
    acq = params.acquisition
    vs = grid.voxel_size
    shape = grid.shape
    b0_dir = phy.b0_direction(acq.b0_tilt_deg, acq.b0_azimuth_deg)
    tissue = tissue_maps(anatomy, params.texture_seed, params.texture_amplitude)
    brain_mask = anatomy.brain_mask
    seeds = np.random.SeedSequence(acq.noise_seed).generate_state(8)
    obj = build_object(params, anatomy, tissue)
    chi_all, focal_occ = obj.chi_all, obj.focal

    # --- field (physics.md step 3) ---
    field = phy.dipole_field(chi_all, vs, b0_dir)

    # --- GRE with blooming (steps 4-5) ---
    bias_fields = anat.smooth_noise(shape, int(seeds[0]), (5, 6, 5), n=2)
    bias_swi = np.exp(acq.swi_bias_amplitude * bias_fields[0]).astype(np.float32)
    m0 = phy.spoiled_gre_m0(tissue.pd, tissue.t1, acq.swi_tr_s, acq.swi_flip_deg) * bias_swi
    gre = phy.gre_signal(m0, tissue.r2s, field, acq.swi_te_s, acq.b0_tesla)
    rad = phy.radians_per_ppm(acq.b0_tesla, acq.swi_te_s)
    for lesion, _, _, chi_les in focal_occ:
        _bloom(gre, lesion, chi_les, tissue, m0, field, b0_dir, acq, vs, shape, rad)
    peak = float(np.percentile(np.abs(gre[brain_mask]), 99)) if brain_mask.any() else 1.0
    gre = phy.add_complex_noise(gre, peak / acq.swi_snr, int(seeds[1]))
    swi_img = phy.swi(gre) * np.float32(acq.swi_gain / peak)

    # --- QSM (step 7): noisy local field, real inversion, eroded mask ---
    rel_mag = np.maximum(np.abs(gre) / peak, 1.0 / acq.swi_snr)
    rng_field = np.random.default_rng(int(seeds[2]))
    field_noise = rng_field.standard_normal(shape, dtype=np.float32) / (acq.swi_snr * rel_mag * rad)
    residual = (
        acq.qsm_background_residual_ppm * anat.smooth_noise(shape, int(seeds[3]), (3, 3, 3))[0]
    )
    erosion = max(1, int(round(2 / vs)))
    qsm_mask = ndimage.binary_erosion(brain_mask, iterations=erosion)
    chimap = phy.qsm_inversion(
        field + field_noise + residual, qsm_mask, vs, b0_dir, acq.qsm_method, acq.qsm_parameter
    )
    csf_ref = qsm_mask & (anatomy.csf > 0.8)
    if csf_ref.sum() > 20:
        chimap = np.where(qsm_mask, chimap - np.median(chimap[csf_ref]), 0).astype(np.float32)

    # --- T2w turbo spin echo (step 8): partial volume, no blooming ---
    t2w = spin_echo_object(obj, acq)
    bias_t2 = np.exp(acq.t2w_bias_amplitude * bias_fields[1]).astype(np.float32)
    t2w = phy.blur(t2w * bias_t2, acq.t2w_blur_vox)
    t2_peak = float(np.percentile(t2w[brain_mask], 99)) if brain_mask.any() else 1.0
    t2w = phy.rician(t2w, t2_peak / acq.t2w_snr, int(seeds[4])) * np.float32(acq.t2w_gain / t2_peak)

    return SubjectImages(
        t2w=t2w.astype(np.float32),
        swi=swi_img.astype(np.float32),
        chimap=chimap.astype(np.float32),
        brain_mask=brain_mask.astype(np.uint8),
        dseg=obj.dseg,
        instances=obj.instances,
        chi_true=chi_all,
        vein_occupancy=obj.vein_occupancy,
        affine=grid.affine,
        gre=gre[..., None] if keep_gre else None,
    )


def _bloom(
    gre: npt.NDArray[np.complex64],
    lesion: Lesion,
    chi_les: float,
    tissue: TissueMaps,
    m0: FloatArray,
    field: FloatArray,
    b0_dir: tuple[float, float, float],
    acq: Acquisition,
    vs: float,
    shape: tuple[int, int, int],
    rad_per_ppm: float,
) -> None:
    """Sub-voxel dephasing around one focal lesion, multiplied into ``gre`` in place.

    On a grid ``s`` times finer than the voxels, the lesion's own field is
    computed by the same dipole convolution; the complex signal is evaluated
    there and averaged down (complex mean), so phase dispersion inside a voxel
    darkens it: blooming (physics.md step 5; Liu et al., Radiology 2012).
    The 1 mm signal in the box is multiplied by ``fine average / coarse signal``.
    """
    half = _fine_field_box_mm(lesion, acq.swi_te_s, acq.b0_tesla)
    box = bounding_box(
        list(lesion.ellipsoids),
        vs,
        shape,
        margin_mm=half - max(max(e.semi_axes_mm) for e in lesion.ellipsoids),
    )
    box_shape = tuple(sl.stop - sl.start for sl in box)
    s = (
        int(np.clip(96 // max(box_shape), 2, 4))
        if vs <= 1.0
        else int(np.clip(96 // max(box_shape), 3, 6))
    )
    inside = fine_inside(list(lesion.ellipsoids), box, vs, s)
    host_chi = upsample_nearest(tissue.chi[box], s)
    dchi_fine = np.where(inside, chi_les - host_chi, 0.0).astype(np.float32)
    field_les_fine = phy.dipole_field(dchi_fine, vs / s, b0_dir)
    field_bg = upsample_nearest(field[box] - block_mean(field_les_fine, s), s)
    phase = rad_per_ppm * (field_bg + field_les_fine)
    r2s_fine = upsample_nearest(tissue.r2s[box], s)
    r2s_fine = np.where(inside, lesion.r2star_per_s, r2s_fine)
    m0_fine = upsample_nearest(m0[box], s)
    if lesion.pd is not None:
        pd_fine = upsample_nearest(tissue.pd[box], s)
        m0_fine = np.where(inside, m0_fine * lesion.pd / np.maximum(pd_fine, 1e-3), m0_fine)
    fine_signal = m0_fine * np.exp(-acq.swi_te_s * r2s_fine) * np.exp(1j * phase)
    averaged = block_mean(fine_signal.astype(np.complex64), s)
    coarse = (
        m0[box] * np.exp(-acq.swi_te_s * tissue.r2s[box]) * np.exp(1j * rad_per_ppm * field[box])
    )
    ok = np.abs(coarse) > 1e-6
    factor = np.where(ok, averaged / np.where(ok, coarse, 1), 1.0)
    gre[box] *= factor.astype(np.complex64)
