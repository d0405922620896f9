"""Rendering of a domain-randomized subject (``--preset randomized``).

The object (tissue, veins, lesions) is built exactly as for the narrow
phantom (:func:`deepmir.phantom.render.build_object`) on the 1 mm render
grid; then the :class:`~deepmir.phantom.params.Variation` decides how it is
imaged and processed (robustness.md):

1. anatomy extras: white-matter susceptibility and its orientation-like
   smooth modulation, air cavities (+9.4 ppm, no signal) below the brain;
2. the field of everything, air included; R2* scaled with B0;
3. per echo, the GRE signal with gradient dephasing and sub-voxel blooming,
   acquired on the randomized grid (k-space in-plane, complex slab average,
   Gibbs, ghosting), then complex noise;
4. SWI: 2D or 3D homodyne phase mask (power 2-5), or SWAN-like magnitude,
   echoes combined by root mean square;
5. QSM: magnitude-weighted field on the acquired grid with noise, background
   removal (ideal + residual, SHARP, V-SHARP), inversion (TKD, Tikhonov, CG),
   mask erosion, referencing (CSF, mean, none), a pipeline scale error;
6. T2w acquired on the same grid; labels by area fraction on that grid (a
   lesion smaller than a voxel keeps its fullest voxel);
7. the storage orientation (axis flips) of the written files;
8. with ``keep_gre`` (``deepmir simulate --raw-gre``) the noisy complex echoes
   of step 3 are kept: their phase carries the field of everything, the air
   cavities' background field included.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from deepmir.phantom import acquire as acq_ops
from deepmir.phantom import anatomy as anat
from deepmir.phantom import physics as phy
from deepmir.phantom.acquire import AcquisitionGrid, area_average
from deepmir.phantom.anatomy import SubjectAnatomy
from deepmir.phantom.geometry import ellipsoid_occupancy
from deepmir.phantom.params import SubjectParams, Variation
from deepmir.phantom.render import (
    SubjectImages,
    _bloom,
    build_object,
    spin_echo_object,
    tissue_maps,
)

FloatArray = npt.NDArray[np.float32]
AIR_CHI_PPM = 9.4  # air relative to water (water -9.05, air +0.36 ppm)


def acquisition_grid(variation: Variation, render_voxel_mm: float) -> AcquisitionGrid:
    """The variation's voxel in units of the render voxel (never finer than half of
    it; never finer than it on the 2 mm ``small`` grid of the tests)."""
    finest = 0.5 if render_voxel_mm <= 1.0 else 1.0
    recon = tuple(max(finest, v / render_voxel_mm) for v in variation.recon_voxel_mm)
    sampled = tuple(
        max(r, v / render_voxel_mm)
        for r, v in zip(recon[:2], variation.acquired_inplane_mm, strict=True)
    )
    return AcquisitionGrid(recon=recon, acquired_inplane=sampled)  # type: ignore[arg-type]


def _labels_on_grid(
    instances: npt.NDArray[np.int16], labels: dict[int, int], shape: tuple[int, int, int]
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int16]]:
    """Instance and class maps on the acquired grid by area fraction (>= 0.5, or the
    lesion's fullest voxel when none reaches it)."""
    w = [acq_ops.overlap_matrix(n, m) for n, m in zip(instances.shape, shape, strict=True)]
    best = np.zeros(shape, np.float32)
    out = np.zeros(shape, np.int16)
    for lesion_id in (int(i) for i in np.unique(instances) if i > 0):
        where = np.nonzero(instances == lesion_id)
        lo = [int(a.min()) for a in where]
        hi = [int(a.max()) + 1 for a in where]
        rows = [
            np.flatnonzero(wa[:, lo_a:hi_a].sum(1) > 0)
            for wa, lo_a, hi_a in zip(w, lo, hi, strict=True)
        ]
        box = (instances[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == lesion_id).astype(
            np.float32
        )
        frac = box
        for axis in range(3):
            wa = w[axis][rows[axis][0] : rows[axis][-1] + 1, lo[axis] : hi[axis]]
            frac = np.moveaxis(np.tensordot(wa, np.moveaxis(frac, axis, 0), axes=(1, 0)), 0, axis)
        sl = tuple(slice(r[0], r[-1] + 1) for r in rows)
        take = (frac >= 0.5) & (frac > best[sl])
        if not take.any():
            take = frac >= frac.max()
        out[sl][take] = lesion_id
        best[sl] = np.where(take, frac, best[sl])
    dseg = np.zeros(shape, np.uint8)
    for lesion_id, label in labels.items():
        dseg[out == lesion_id] = label
    # a lesion overwritten everywhere by a neighbour is gone; that is rare and honest
    return dseg, out


def render_varied(
    params: SubjectParams, anatomy: SubjectAnatomy, keep_gre: bool = False
) -> SubjectImages:
    """Render a randomized subject on its acquired grid (deterministic from the record);
    ``keep_gre``: with the complex GRE signal per echo (``SubjectImages.gre``)."""
    var = params.variation
    assert var is not None
    acq = params.acquisition
    grid = anatomy.grid
    vs = grid.voxel_size
    shape = grid.shape
    b0_dir = phy.b0_direction(acq.b0_tilt_deg, acq.b0_azimuth_deg)
    seeds = np.random.SeedSequence(acq.noise_seed).generate_state(12)
    tissue = tissue_maps(anatomy, params.texture_seed, params.texture_amplitude)

    # white matter: its own susceptibility and a smooth orientation-like modulation
    wm = np.clip(anatomy.wm, 0, 1) * np.clip(anatomy.brain, 0, 1)
    aniso = anat.smooth_noise(shape, int(seeds[5]), (10, 12, 10))[0]
    tissue.chi += (wm * ((var.wm_chi_ppm + 0.03) + var.wm_anisotropy_ppm * aniso)).astype(
        np.float32
    )
    obj = build_object(params, anatomy, tissue)
    labels = {z.lesion_id: z.label for z in params.lesions}

    # air cavities: strong background field sources with no signal
    air = np.zeros(shape, np.float32)
    for cavity in var.air_cavities:
        box, occ = ellipsoid_occupancy([cavity], vs, shape)
        air[box] = np.maximum(air[box], occ)
    air *= (~ndimage.binary_dilation(anatomy.brain_mask, iterations=2)).astype(np.float32)
    chi_total = obj.chi_all + AIR_CHI_PPM * air
    field = phy.dipole_field(chi_total, vs, b0_dir)
    if var.qsm_background == "ideal":
        field_local = phy.dipole_field(obj.chi_all, vs, b0_dir)
    r2s_scale = var.b0_tesla / 3.0  # R2* grows about linearly with B0
    tissue.r2s *= np.float32(r2s_scale)
    pd_scale = np.float32(1.0) - air

    # --- per echo: fine GRE with blooming, then the acquired grid ---
    agrid = acquisition_grid(var, vs)
    out_shape = agrid.shape(shape)
    affine = agrid.affine(grid.affine, shape)
    bias_fields = anat.smooth_noise(shape, int(seeds[0]), (5, 6, 5), n=2)
    bias_swi = np.exp(acq.swi_bias_amplitude * bias_fields[0]).astype(np.float32)
    m0 = phy.spoiled_gre_m0(tissue.pd, tissue.t1, acq.swi_tr_s, acq.swi_flip_deg) * bias_swi
    m0 = m0 * pd_scale
    echoes = []
    for te in var.echo_times_s:
        acq_e = dataclasses.replace(acq, swi_te_s=te)
        rad = phy.radians_per_ppm(var.b0_tesla, te)
        gre = phy.gre_signal(m0, tissue.r2s, field, te, var.b0_tesla)
        gre *= acq_ops.gradient_dephasing((rad * field).astype(np.float32))
        for lesion, _, _, chi_les in obj.focal:
            scaled = dataclasses.replace(lesion, r2star_per_s=lesion.r2star_per_s * r2s_scale)
            _bloom(gre, scaled, chi_les, tissue, m0, field, b0_dir, acq_e, vs, shape, rad)
        echoes.append(acq_ops.acquire(gre, agrid, var.ghost_amplitude, var.ghost_phase))
    brain_frac = area_average(anatomy.brain_mask.astype(np.float32), out_shape)
    brain_mask = brain_frac >= 0.5
    peak = float(np.percentile(np.abs(echoes[0][brain_mask]), 99)) if brain_mask.any() else 1.0
    echoes = [
        phy.add_complex_noise(e, peak / acq.swi_snr, int(seeds[1]) + n)
        for n, e in enumerate(echoes)
    ]

    # --- SWI ---
    axes = (0, 1) if var.swi_variant == "2d" else (0, 1, 2)
    per_echo = [
        np.abs(e)
        if var.swi_variant == "swan"
        else phy.swi(e, var.swi_lowpass_fraction, var.swi_mask_power, axes)
        for e in echoes
    ]
    swi_img = np.sqrt(np.mean(np.square(per_echo), axis=0)) * np.float32(acq.swi_gain / peak)

    # --- QSM ---
    # the magnitude that weights the field (first echo, before dephasing): no complex signal needed
    mag_fine = (m0 * np.exp(-var.echo_times_s[0] * tissue.r2s)).astype(np.float32)
    weight = np.maximum(area_average(mag_fine, out_shape), 1e-6)
    source = field_local if var.qsm_background == "ideal" else field
    field_acq = area_average(mag_fine * source, out_shape) / weight
    rel_mag = np.maximum(np.abs(echoes[0]) / peak, 1.0 / acq.swi_snr)
    rad_eff = float(
        np.sqrt(sum(phy.radians_per_ppm(var.b0_tesla, te) ** 2 for te in var.echo_times_s))
    )
    noise = np.random.default_rng(int(seeds[2])).standard_normal(out_shape, dtype=np.float32)
    field_acq = field_acq + noise / (acq.swi_snr * rel_mag * rad_eff)
    sizes = np.abs(np.diag(affine)[:3])
    vox = (float(sizes[0]), float(sizes[1]), float(sizes[2]))
    qsm_mask = acq_ops.sphere_erode(brain_mask, vox, var.qsm_mask_erosion_mm)  # type: ignore[arg-type]
    if var.qsm_background == "ideal":
        residual = 0.01 * anat.smooth_noise(out_shape, int(seeds[3]), (3, 3, 3))[0]
        local = field_acq + residual
    elif var.qsm_background == "sharp":
        local, kept = acq_ops.sharp(field_acq, brain_mask, vox, var.qsm_background_radius_mm)  # type: ignore[arg-type]
        qsm_mask &= kept
    else:
        radii = tuple(float(r) for r in np.arange(12.0, 0.0, -2.0 * max(vox)))
        local, kept = acq_ops.vsharp(field_acq, brain_mask, vox, radii)  # type: ignore[arg-type]
        qsm_mask &= kept
    if var.qsm_inversion == "cg":
        chimap = acq_ops.cg_inversion(
            local,
            qsm_mask,
            rel_mag.astype(np.float32),
            vox,
            b0_dir,
            int(var.qsm_parameter),  # type: ignore[arg-type]
        )
    else:
        chimap = phy.qsm_inversion(
            local, qsm_mask, vox, b0_dir, var.qsm_inversion, var.qsm_parameter
        )  # type: ignore[arg-type]
    if var.qsm_reference == "csf":
        csf = (area_average(anatomy.csf, out_shape) > 0.8) & qsm_mask
        ref = float(np.median(chimap[csf])) if csf.sum() > 20 else 0.0
    elif var.qsm_reference == "mean":
        ref = float(chimap[qsm_mask].mean()) if qsm_mask.any() else 0.0
    else:
        ref = 0.0
    chimap = np.where(qsm_mask, (chimap - ref) * var.qsm_scale, 0.0).astype(np.float32)

    # --- T2w on the same grid ---
    t2w = spin_echo_object(obj, acq) * pd_scale
    bias_t2 = np.exp(acq.t2w_bias_amplitude * bias_fields[1]).astype(np.float32)
    t2w = phy.blur(t2w * bias_t2, acq.t2w_blur_vox)
    t2w = np.abs(acq_ops.acquire(t2w.astype(np.complex64), agrid)).astype(np.float32)
    t2_peak = float(np.percentile(t2w[brain_mask], 99)) if brain_mask.any() else 1.0
    t2w = phy.rician(t2w, t2_peak / acq.t2w_snr, int(seeds[4])) * np.float32(acq.t2w_gain / t2_peak)

    dseg, instances = _labels_on_grid(obj.instances, labels, out_shape)
    images = SubjectImages(
        t2w=t2w.astype(np.float32),
        swi=swi_img.astype(np.float32),
        chimap=chimap,
        brain_mask=brain_mask.astype(np.uint8),
        dseg=dseg,
        instances=instances,
        chi_true=area_average(obj.chi_all, out_shape).astype(np.float32),
        vein_occupancy=area_average(obj.vein_occupancy, out_shape).astype(np.float32),
        affine=affine,
        gre=np.stack(echoes, axis=-1) if keep_gre else None,
    )
    return flip_storage(images, var.flip_axes)


def flip_storage(images: SubjectImages, flips: tuple[bool, bool, bool]) -> SubjectImages:
    """Store the arrays with some axes reversed (LPS-like files); the affine follows."""
    if not any(flips):
        return images
    axes = tuple(a for a, f in enumerate(flips) if f)
    shape = images.swi.shape
    affine = images.affine.copy()
    for a in axes:
        affine[:3, 3] = affine[:3, 3] + affine[:3, a] * (shape[a] - 1)
        affine[:3, a] = -affine[:3, a]
    arrays = {
        f.name: np.ascontiguousarray(np.flip(getattr(images, f.name), axis=axes))
        for f in dataclasses.fields(images)
        if f.name != "affine" and getattr(images, f.name) is not None
    }
    return SubjectImages(**arrays, affine=affine)
