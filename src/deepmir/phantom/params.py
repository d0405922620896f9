"""The per-subject parameter record and its random draw.

Following TorchIO's split (``RandomBiasField`` draws, ``BiasField`` applies),
:func:`draw_subject_params` is the only place where randomness enters the
simulator: it draws every number of a subject (anatomy deformation, tissue
texture seed, acquisition, lesions, veins) into a plain :class:`SubjectParams`
record. :func:`deepmir.phantom.render.render_subject` turns a record into
images deterministically, so any subject can be regenerated or explained
from its JSON sidecar.

Lesion positions are drawn on the subject's own deformed anatomy, so the
draw looks at (deterministic) anatomy but never at images.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from deepmir import __version__
from deepmir.labels import CALCIFICATION, CMB, IRON
from deepmir.phantom import anatomy as anat
from deepmir.phantom.anatomy import DeformationParams, Grid, SubjectAnatomy
from deepmir.phantom.geometry import Ellipsoid
from deepmir.phantom.presets import PRESETS, SHIFTS


@dataclass(frozen=True)
class Acquisition:
    """Acquisition parameters of one subject (SI units: T, s, degrees)."""

    b0_tesla: float
    b0_tilt_deg: float
    b0_azimuth_deg: float
    swi_te_s: float
    swi_tr_s: float
    swi_flip_deg: float
    swi_snr: float
    swi_gain: float
    swi_bias_amplitude: float
    t2w_te_s: float
    t2w_tr_s: float
    t2w_snr: float
    t2w_gain: float
    t2w_bias_amplitude: float
    t2w_blur_vox: float
    qsm_method: str  # "tkd" or "tikhonov"
    qsm_parameter: float  # TKD threshold or Tikhonov lambda
    qsm_background_residual_ppm: float  # imperfect background-field removal
    noise_seed: int  # seeds every noise and bias field of the acquisition


@dataclass(frozen=True)
class Lesion:
    """One labelled lesion (contract label 1 cmb, 2 iron, 3 calcification).

    ``chi_ppm`` is the lesion's susceptibility: for CMB and iron it is
    ``host + delta``; for calcification it is absolute (relative to CSF).
    ``pd`` is absolute proton density (None: the host's).
    """

    lesion_id: int
    label: int
    region: str  # MARS category: lobar / deep / infratentorial
    host: str  # anatomical host structure
    ellipsoids: tuple[Ellipsoid, ...]
    delta_chi_ppm: float
    r2star_per_s: float
    t2_s: float
    pd: float | None
    host_region_code: int = 0  # clip to this region (iron deposits); 0 = no clip


@dataclass(frozen=True)
class Vein:
    """A vein (never labelled): a tube of deoxygenated blood along a polyline."""

    points_vox: tuple[tuple[float, float, float], ...]
    radius_mm: float
    chi_ppm: float
    r2star_per_s: float


@dataclass(frozen=True)
class Variation:
    """The domain-randomized part of a subject (``--preset randomized``; robustness.md).

    ``None`` in a record means the narrow phantom of v0.1 (``--preset narrow``).
    Voxel sizes are millimetres; the render grid stays 1 mm (2 mm for ``small``).
    """

    shift: str  # "none" (training distribution) or the held-out factor (SHIFTS)
    b0_tesla: float
    echo_times_s: tuple[float, ...]
    recon_voxel_mm: tuple[float, float, float]  # in-plane reconstruction, slab thickness
    acquired_inplane_mm: tuple[float, float]  # k-space extent (>= recon: Gibbs)
    swi_variant: str  # "3d" / "2d" homodyne + phase mask, or "swan" (magnitude only)
    swi_lowpass_fraction: float
    swi_mask_power: int
    qsm_background: str  # "ideal" (+ smooth residual), "sharp", "vsharp"
    qsm_background_radius_mm: float
    qsm_inversion: str  # "tkd", "tikhonov", "cg"
    qsm_parameter: float  # TKD threshold, Tikhonov lambda, or CG iterations
    qsm_reference: str  # "csf", "mean", "none"
    qsm_mask_erosion_mm: float
    qsm_scale: float  # pipeline scale error
    ghost_amplitude: float
    ghost_phase: float
    air_cavities: tuple[Ellipsoid, ...]  # sinus / mastoid air (+9.4 ppm), outside the brain
    wm_chi_ppm: float
    wm_anisotropy_ppm: float
    flip_axes: tuple[bool, bool, bool]  # storage orientation of the written files


@dataclass(frozen=True)
class SubjectParams:
    """Everything needed to render one phantom subject, and nothing random."""

    subject: str
    cohort_seed: int
    index: int
    grid_size: str  # "full" (1 mm) or "small" (2 mm)
    deformation: DeformationParams
    texture_seed: int
    texture_amplitude: float
    acquisition: Acquisition
    lesions: tuple[Lesion, ...]
    veins: tuple[Vein, ...]
    deepmir_version: str = __version__
    variation: Variation | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @staticmethod
    def from_json(text: str) -> SubjectParams:
        d = json.loads(text)
        lesions = tuple(
            Lesion(
                **{
                    **lz,
                    "ellipsoids": tuple(_ellipsoid(e) for e in lz["ellipsoids"]),
                }
            )
            for lz in d["lesions"]
        )
        veins = tuple(
            Vein(**{**v, "points_vox": tuple(tuple(p) for p in v["points_vox"])})
            for v in d["veins"]
        )
        dp = d["deformation"]
        deformation = DeformationParams(
            scale=tuple(dp["scale"]),
            rotation_deg=tuple(dp["rotation_deg"]),
            translation_mm=tuple(dp["translation_mm"]),
            field_mm=dp["field_mm"],
            field_seed=dp["field_seed"],
            control_points=tuple(dp["control_points"]),
            ventricle_scale=dp.get("ventricle_scale", 1.0),
        )
        v = d.get("variation")
        variation = None
        if v is not None:
            tuples = ("echo_times_s", "recon_voxel_mm", "acquired_inplane_mm", "flip_axes")
            variation = Variation(
                **{
                    **v,
                    **{k: tuple(v[k]) for k in tuples},
                    "air_cavities": tuple(_ellipsoid(e) for e in v["air_cavities"]),
                }
            )
        return SubjectParams(
            **{
                **d,
                "deformation": deformation,
                "acquisition": Acquisition(**d["acquisition"]),
                "lesions": lesions,
                "veins": veins,
                "variation": variation,
            }
        )


def _ellipsoid(e: dict[str, Any]) -> Ellipsoid:
    return Ellipsoid(tuple(e["center_vox"]), tuple(e["semi_axes_mm"]), tuple(e["angles_deg"]))


# ---------------------------------------------------------------------------
# The random draw
# ---------------------------------------------------------------------------

#: Host susceptibility (ppm) per region code, physics.md (QSM Challenge 2.0).
HOST_CHI = {anat.CAUDATE: 0.044, anat.PUTAMEN: 0.038, anat.PALLIDUM: 0.13}


def subject_rng(cohort_seed: int, index: int) -> np.random.Generator:
    """The generator of subject ``index`` of a cohort: independent of other subjects."""
    return np.random.default_rng(np.random.SeedSequence([cohort_seed, index]))


def draw_deformation(rng: np.random.Generator) -> DeformationParams:
    return DeformationParams(
        scale=tuple(float(x) for x in rng.uniform(0.92, 1.08, 3)),  # type: ignore[arg-type]
        rotation_deg=tuple(float(x) for x in rng.normal(0, 3.0, 3)),  # type: ignore[arg-type]
        translation_mm=tuple(float(x) for x in rng.normal(0, 2.0, 3)),  # type: ignore[arg-type]
        field_mm=float(rng.uniform(1.5, 3.5)),
        field_seed=int(rng.integers(2**31)),
    )


def draw_acquisition(rng: np.random.Generator) -> Acquisition:
    method = str(rng.choice(["tkd", "tikhonov"]))
    return Acquisition(
        b0_tesla=3.0,
        b0_tilt_deg=float(rng.uniform(0, 15)),
        b0_azimuth_deg=float(rng.uniform(0, 360)),
        swi_te_s=float(rng.uniform(0.015, 0.025)),
        swi_tr_s=float(rng.uniform(0.025, 0.030)),
        swi_flip_deg=15.0,
        swi_snr=float(rng.uniform(40, 150)),
        swi_gain=float(np.exp(rng.uniform(np.log(50), np.log(2000)))),
        swi_bias_amplitude=float(rng.uniform(0.05, 0.25)),
        t2w_te_s=float(rng.uniform(0.08, 0.10)),
        t2w_tr_s=float(rng.uniform(4.0, 6.0)),
        t2w_snr=float(rng.uniform(30, 50)),
        t2w_gain=float(np.exp(rng.uniform(np.log(50), np.log(2000)))),
        t2w_bias_amplitude=float(rng.uniform(0.05, 0.25)),
        t2w_blur_vox=float(rng.uniform(0.3, 0.7)),
        qsm_method=method,
        qsm_parameter=float(rng.uniform(0.15, 0.2) if method == "tkd" else rng.uniform(0.01, 0.03)),
        qsm_background_residual_ppm=float(rng.uniform(0.0, 0.01)),
        noise_seed=int(rng.integers(2**31)),
    )


class _Placer:
    """Draws non-overlapping lesion positions from candidate masks."""

    def __init__(self, rng: np.random.Generator, anatomy: SubjectAnatomy) -> None:
        self.rng = rng
        self.vs = anatomy.grid.voxel_size
        self.placed: list[tuple[npt.NDArray[np.float64], float]] = []
        # distance (mm) to the outside of the brain, to keep lesions inside it
        self.depth_mm = ndimage.distance_transform_edt(anatomy.brain_mask) * self.vs

    def pick(
        self,
        candidates: npt.NDArray[np.bool_],
        radius_mm: float,
        gap_mm: float = 3.0,
        tries: int = 60,
    ) -> npt.NDArray[np.float64] | None:
        ok = candidates & (self.depth_mm > radius_mm + 1.0)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return None
        for _ in range(tries):
            v = np.array(np.unravel_index(int(self.rng.choice(idx)), ok.shape), dtype=np.float64)
            v += self.rng.uniform(-0.5, 0.5, 3)
            if all(
                np.linalg.norm((v - c) * self.vs) > radius_mm + r + gap_mm for c, r in self.placed
            ):
                self.placed.append((v, radius_mm))
                return v
        return None


def _random_angles(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(a) for a in rng.uniform(0, 180, 3))  # type: ignore[return-value]


def _count(rng: np.random.Generator, p_none: float, mean: float, max_n: int) -> int:
    if rng.random() < p_none:
        return 0
    return int(min(max_n, 1 + rng.poisson(mean - 1)))


def _mirror_candidates(
    anatomy: SubjectAnatomy, region_mask: npt.NDArray[np.bool_], v: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """Voxels of ``region_mask`` on the other hemisphere near the mirror image of ``v``."""
    world = anatomy.grid.affine @ np.array([*v, 1.0])
    world[0] = -world[0]
    mv = (np.linalg.inv(anatomy.grid.affine) @ world)[:3]
    idx = np.indices(region_mask.shape, sparse=True)
    near = sum(((idx[a] - mv[a]) * anatomy.grid.voxel_size) ** 2 for a in range(3)) <= 6.0**2
    return region_mask & near


def draw_subject_params(
    cohort_seed: int,
    index: int,
    anatomy_of: Any,
    grid_size: str = "full",
    subject: str | None = None,
    preset: str = "narrow",
    shift: str = "none",
) -> SubjectParams:
    """Draw the full parameter record of subject ``index`` of a cohort.

    Parameters
    ----------
    cohort_seed, index : the subject's generator is ``SeedSequence([seed, index])``
    anatomy_of : callable ``(Grid, DeformationParams) -> SubjectAnatomy``
        (normally :func:`deepmir.phantom.render.subject_anatomy`)
    grid_size : ``"full"`` (1 mm) or ``"small"`` (2 mm)
    subject : BIDS label; defaults to ``index + 1`` zero-padded to 2 digits.
    preset : ``"narrow"`` (the v0.1 phantom, unchanged draws) or ``"randomized"``
        (domain randomization, robustness.md: wider lesions, veins and
        anatomy, and a :class:`Variation` of acquisition and processing)
    shift : with ``"randomized"``, ``"none"`` draws the training distribution;
        a name of :data:`SHIFTS` draws that factor from its held-out values
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
    if shift != "none" and (preset != "randomized" or shift not in SHIFTS):
        raise ValueError(f"unknown shift {shift!r} (with --preset randomized): {', '.join(SHIFTS)}")
    wide = preset == "randomized"
    rng = subject_rng(cohort_seed, index)
    # the randomized factors come from a stream of their own
    rng_var = np.random.default_rng(np.random.SeedSequence([cohort_seed, index, 1]))
    grid = Grid.make(grid_size)
    deformation = draw_deformation(rng)
    texture_seed = int(rng.integers(2**31))
    texture_amplitude = float(rng.uniform(0.10, 0.20))
    acquisition = draw_acquisition(rng)
    if wide:
        lo, hi = (1.3, 1.45) if shift == "atrophy" else (1.0, 1.25)
        deformation = dataclasses.replace(
            deformation, ventricle_scale=float(rng_var.uniform(lo, hi))
        )
    anatomy: SubjectAnatomy = anatomy_of(grid, deformation)
    placer = _Placer(rng, anatomy)
    region = anatomy.region
    brain = anatomy.brain_mask
    lesions: list[Lesion] = []

    def add(label: int, **kw: Any) -> None:
        lesions.append(Lesion(lesion_id=len(lesions) + 1, label=label, **kw))

    # --- CMBs: lobar (cortico-subcortical), deep, infratentorial (MARS) ---
    lobar = brain & (region == 0) & (anatomy.gm > 0.3) & (anatomy.wm > 0.15)
    deep = np.isin(region, anat.DEEP_GREY)
    infra = np.isin(region, anat.INFRATENTORIAL) & ((anatomy.gm + anatomy.wm) > 0.6)
    for _ in range(_count(rng, p_none=0.15, mean=4.0, max_n=15)):
        where = str(rng.choice(["lobar", "deep", "infratentorial"], p=[0.55, 0.3, 0.15]))
        if wide:  # down to 1 voxel of physical extent (robustness.md)
            diameter = 1.0 + 9.0 * float(rng.beta(1.1, 4.0))
        else:
            diameter = 2.0 + 8.0 * float(rng.beta(1.3, 4.0))  # 2-10 mm, mostly 2-5
        radius = diameter / 2
        cand = {"lobar": lobar, "deep": deep, "infratentorial": infra}[where]
        v = placer.pick(cand, radius)
        if v is None:
            continue
        host_code = int(region[tuple(np.round(v).astype(int))])
        host = anat.REGION_NAMES.get(host_code, "cortico-subcortical")
        axes = tuple(float(radius * f) for f in rng.uniform(0.8, 1.2, 3))
        add(
            CMB,
            region=where,
            host=host,
            ellipsoids=(Ellipsoid(tuple(float(c) for c in v), axes, _random_angles(rng)),),  # type: ignore[arg-type]
            delta_chi_ppm=float(np.exp(rng.uniform(np.log(0.2 if wide else 0.3), np.log(2.0)))),
            r2star_per_s=float(rng.uniform(100, 300)),
            t2_s=float(rng.uniform(0.045, 0.065)),
            pd=None,
        )

    # --- iron deposits: irregular blobs in pallidum / putamen / caudate, often bilateral ---
    n_iron = _count(rng, p_none=0.25, mean=2.0, max_n=5)
    while sum(1 for z in lesions if z.label == IRON) < n_iron:
        host_code = int(rng.choice(anat.BASAL_GANGLIA, p=[0.25, 0.35, 0.4]))
        host_mask = region == host_code
        main_r = float(rng.uniform(1.5 if wide else 2.0, 5.0))
        sites = []
        v = placer.pick(host_mask, 1.5 * main_r, tries=30)
        if v is None:
            break
        sites.append(v)
        if rng.random() < 0.6 and sum(1 for z in lesions if z.label == IRON) + 2 <= n_iron:
            m = placer.pick(_mirror_candidates(anatomy, host_mask, v), 1.5 * main_r, tries=30)
            if m is not None:
                sites.append(m)
        for site in sites:
            blobs = [
                Ellipsoid(
                    tuple(float(c) for c in site),  # type: ignore[arg-type]
                    tuple(float(main_r * f) for f in rng.uniform(0.6, 1.3, 3)),  # type: ignore[arg-type]
                    _random_angles(rng),
                )
            ]
            for _ in range(int(rng.integers(1, 4))):
                offset = rng.normal(0, 0.6 * main_r, 3) / anatomy.grid.voxel_size
                blobs.append(
                    Ellipsoid(
                        tuple(float(c) for c in site + offset),  # type: ignore[arg-type]
                        tuple(float(main_r * f) for f in rng.uniform(0.4, 0.8, 3)),  # type: ignore[arg-type]
                        _random_angles(rng),
                    )
                )
            add(
                IRON,
                region="deep",
                host=anat.REGION_NAMES[host_code],
                ellipsoids=tuple(blobs),
                delta_chi_ppm=float(rng.uniform(0.04 if wide else 0.05, 0.25)),
                r2star_per_s=0.0,  # derived: host R2* + 137 s^-1/ppm * delta chi
                t2_s=0.0,  # derived from the host
                pd=None,
                host_region_code=host_code,
            )

    # --- calcifications: pallidum (often bilateral), choroid plexus, pineal ---
    for _ in range(_count(rng, p_none=0.2 if wide else 0.3, mean=2.0, max_n=5)):
        place = str(rng.choice(["pallidum", "choroid_plexus", "pineal"], p=[0.5, 0.35, 0.15]))
        code = {
            "pallidum": anat.PALLIDUM,
            "choroid_plexus": anat.CHOROID_PLEXUS,
            "pineal": anat.PINEAL,
        }[place]
        # Pallidal calcifications sit in the most paramagnetic nucleus (0.13 ppm):
        # only dense ones (CT-visible, >= 2.5 mm, <= -0.25 ppm) stay negative on
        # QSM there (design choice inside the physics.md range).
        in_pallidum = place == "pallidum"
        small_d, faint = (1.0, -0.05) if wide else (1.5, -0.1)
        diameter = float(rng.uniform(2.5 if in_pallidum else small_d, 6.0))
        chi_calc = float(rng.uniform(-0.6, -0.25 if in_pallidum else faint))
        v = placer.pick(region == code, diameter / 2, gap_mm=2.0)
        if v is None:
            continue
        axes = tuple(float(diameter / 2 * f) for f in rng.uniform(0.8, 1.2, 3))
        add(
            CALCIFICATION,
            region="deep",
            host=place,
            ellipsoids=(Ellipsoid(tuple(float(c) for c in v), axes, _random_angles(rng)),),  # type: ignore[arg-type]
            delta_chi_ppm=chi_calc,
            r2star_per_s=float(rng.uniform(80, 200)),
            t2_s=float(rng.uniform(0.02, 0.04)),
            pd=float(rng.uniform(0.1, 0.5)),
        )

    veins = _draw_veins(rng, anatomy, placer, wide)
    variation = None
    if wide:
        variation = draw_variation(rng_var, anatomy, shift)
        method = variation.qsm_inversion
        acquisition = dataclasses.replace(
            acquisition,
            b0_tesla=variation.b0_tesla,
            swi_te_s=variation.echo_times_s[0],
            swi_tr_s=variation.echo_times_s[-1] + float(rng_var.uniform(0.005, 0.012)),
            swi_snr=float(rng_var.uniform(20, 150)),
            swi_bias_amplitude=float(rng_var.uniform(0.05, 0.4)),
            t2w_snr=float(rng_var.uniform(20, 60)),
            t2w_bias_amplitude=float(rng_var.uniform(0.05, 0.4)),
            qsm_method=method,
            qsm_parameter=variation.qsm_parameter,
        )
    return SubjectParams(
        subject=subject if subject is not None else f"{index + 1:02d}",
        cohort_seed=cohort_seed,
        index=index,
        grid_size=grid_size,
        deformation=deformation,
        texture_seed=texture_seed,
        texture_amplitude=texture_amplitude,
        acquisition=acquisition,
        lesions=tuple(lesions),
        veins=veins,
        variation=variation,
    )


#: echo time ranges (s) per field strength (robustness.md)
TE_RANGE = {1.5: (0.030, 0.050), 3.0: (0.010, 0.030), 7.0: (0.008, 0.020)}


def draw_variation(rng: np.random.Generator, anatomy: SubjectAnatomy, shift: str) -> Variation:
    """The acquisition, processing and anatomy factors of a randomized subject.

    Training values (``shift="none"``) and held-out values follow the
    protocol of robustness.md: 3 T only, slabs up to 2 mm, TKD / Tikhonov,
    ideal-or-SHARP background removal, 2D/3D homodyne SWI, mild atrophy; the
    shifts take 1.5 T, 7 T, UK-Biobank-like 0.8 x 0.8 x 3 mm with 2 echoes,
    CG (iLSQR-like) inversion, V-SHARP, SWAN-like SWI, strong atrophy.
    """
    b0 = {"b0-1.5t": 1.5, "b0-7t": 7.0}.get(shift, 3.0)
    te_lo, te_hi = TE_RANGE[b0]
    if shift == "slice-3mm":
        echoes: tuple[float, ...] = (0.0094, 0.020)
        recon = (0.8, 0.8, 3.0)
        acquired = (0.8, 0.8)
    else:
        n_echoes = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.2, 0.2, 0.2]))
        first = float(rng.uniform(te_lo, te_hi))
        spacing = float(rng.uniform(0.004, 0.010))
        echoes = tuple(first + e * spacing for e in range(n_echoes))
        inplane = float(rng.uniform(0.6, 1.0))
        slab = float(rng.uniform(1.0, 2.0))
        recon = (inplane, inplane, slab)
        sampled = float(min(1.2, inplane * rng.uniform(1.0, 1.4)))
        acquired = (sampled, sampled)
    swi_variant = "swan" if shift == "swi-swan" else str(rng.choice(["3d", "2d"]))
    background = "vsharp" if shift == "bg-vsharp" else str(rng.choice(["ideal", "sharp"]))
    inversion = "cg" if shift == "qsm-cg" else str(rng.choice(["tkd", "tikhonov"]))
    parameter = {
        "tkd": lambda: float(rng.uniform(0.12, 0.25)),
        "tikhonov": lambda: float(rng.uniform(0.005, 0.05)),
        "cg": lambda: float(rng.integers(15, 31)),
    }[inversion]()
    return Variation(
        shift=shift,
        b0_tesla=b0,
        echo_times_s=echoes,
        recon_voxel_mm=recon,
        acquired_inplane_mm=acquired,
        swi_variant=swi_variant,
        swi_lowpass_fraction=float(rng.uniform(0.08, 0.25)),
        swi_mask_power=int(rng.integers(2, 6)),
        qsm_background=background,
        qsm_background_radius_mm=float(rng.uniform(3.0, 6.0)),
        qsm_inversion=inversion,
        qsm_parameter=parameter,
        qsm_reference=str(rng.choice(["csf", "mean", "none"])),
        qsm_mask_erosion_mm=float(rng.uniform(1.0, 4.0)),
        qsm_scale=float(rng.uniform(0.85, 1.15)),
        ghost_amplitude=float(rng.uniform(0.0, 0.05)) if rng.random() < 0.3 else 0.0,
        ghost_phase=float(rng.uniform(0, 2 * np.pi)),
        air_cavities=_draw_air(rng, anatomy),
        wm_chi_ppm=float(rng.uniform(-0.06, -0.02)),
        wm_anisotropy_ppm=float(rng.uniform(0.0, 0.02)),
        flip_axes=tuple(bool(b) for b in rng.random(3) < 0.3),  # type: ignore[arg-type]
    )


def _draw_air(rng: np.random.Generator, anatomy: SubjectAnatomy) -> tuple[Ellipsoid, ...]:
    """1-3 air cavities (frontal/ethmoid sinus, mastoid cells) just below the brain.

    Positions are drawn in MNI-like scanner mm from outside-brain voxels 4-12 mm
    from the brain, in front-below (sinuses) or lateral-below-behind (mastoid).
    """
    grid = anatomy.grid
    depth_out = ndimage.distance_transform_edt(~anatomy.brain_mask) * grid.voxel_size
    idx = np.indices(grid.shape, sparse=True)
    xyz = [
        grid.affine[a, 0] * idx[0]
        + grid.affine[a, 1] * idx[1]
        + grid.affine[a, 2] * idx[2]
        + grid.affine[a, 3]
        for a in range(3)
    ]
    shell = (depth_out > 4) & (depth_out < 12)
    sinus = shell & (xyz[1] > 15) & (xyz[2] < -5) & (np.abs(xyz[0]) < 25)
    mastoid = shell & (xyz[1] < -15) & (xyz[2] < -20) & (np.abs(xyz[0]) > 30)
    out = []
    for _ in range(int(rng.integers(1, 4))):
        pool = np.flatnonzero(sinus if rng.random() < 0.6 else mastoid)
        if pool.size == 0:
            continue
        v = np.unravel_index(int(rng.choice(pool)), grid.shape)
        axes = tuple(float(x) for x in rng.uniform(5.0, 14.0, 3))
        out.append(Ellipsoid(tuple(float(c) for c in v), axes, _random_angles(rng)))  # type: ignore[arg-type]
    return tuple(out)


def _draw_veins(
    rng: np.random.Generator, anatomy: SubjectAnatomy, placer: _Placer, wide: bool = False
) -> tuple[Vein, ...]:
    """Medullary and cortical veins: smooth random curves, 15-45 mm long.

    Veins keep 2 mm away from every labelled lesion, so that a vein never
    touches a lesion's label. ``wide`` (randomized preset): density 6-40,
    calibre 0.3-1.5 mm, 8-45 mm long, a third of them deep medullary veins
    starting next to the ventricles.
    """
    vs = anatomy.grid.voxel_size
    start_ok = anatomy.brain_mask & (anatomy.region == 0) & ((anatomy.gm + anatomy.wm) > 0.6)
    start_idx = np.flatnonzero(start_ok & (placer.depth_mm > 4))
    if wide:
        near_ventricle = ndimage.binary_dilation(anatomy.csf > 0.7, iterations=2) & (
            anatomy.wm > 0.5
        )
        deep_idx = np.flatnonzero(start_ok & near_ventricle & (placer.depth_mm > 15))
    veins: list[Vein] = []
    n_target = int(rng.integers(6, 41)) if wide else int(rng.integers(6, 15))
    for _ in range(n_target * 4):
        if len(veins) >= n_target or start_idx.size == 0:
            break
        pool = deep_idx if wide and deep_idx.size and rng.random() < 0.33 else start_idx
        p = np.array(np.unravel_index(int(rng.choice(pool)), start_ok.shape), float)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        radius = float(rng.uniform(0.3, 1.5)) if wide else float(rng.uniform(0.5, 1.5))
        length = float(rng.uniform(8, 45)) if wide else float(rng.uniform(15, 45))
        step = 2.0  # mm
        pts = [p.copy()]
        for _ in range(int(length / step)):
            direction = direction + rng.normal(0, 0.15, 3)
            direction /= np.linalg.norm(direction)
            p = p + direction * step / vs
            ip = tuple(np.round(p).astype(int))
            if any(c < 0 or c >= n for c, n in zip(ip, start_ok.shape, strict=True)):
                break
            if placer.depth_mm[ip] < radius + 1:
                break
            pts.append(p.copy())
        if len(pts) < (4 if wide else 6):
            continue
        arr = np.asarray(pts)
        clear = all(
            np.min(np.linalg.norm((arr - c) * vs, axis=1)) > r + radius + 2.0
            for c, r in placer.placed
        )
        if not clear:
            continue
        veins.append(
            Vein(
                points_vox=tuple(tuple(float(c) for c in q) for q in arr),  # type: ignore[misc]
                radius_mm=radius,
                chi_ppm=float(rng.uniform(0.3, 0.45)),
                r2star_per_s=float(rng.uniform(50, 100)),
            )
        )
    return tuple(veins)
