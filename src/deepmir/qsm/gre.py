"""SWI and QSM from raw GRE magnitude and phase (``deepmir predict`` on raw GRE).

Many cohorts keep only the scanner's (multi-echo) GRE magnitude and phase
(UK Biobank swMRI: 2 echoes, 0.8 x 0.8 x 3 mm). When a subject has no SWI or
QSM but has them, predict computes both here, writes them as derivatives and
detects with them. The steps, each a named textbook method:

1. **Phase units** (:func:`phase_to_radians`): radians are kept (values
   within [-pi, 2 pi]); scanner integers (e.g. -4096..4095 or 0..4095) are
   rescaled by ``2 pi / span``, ``span`` the observed integer range rounded
   up to a power of two when within 10% of one (4096, 8192).
2. **Phase sign**: deepmir's convention is that of its simulator
   (:mod:`deepmir.qsm.dipole`): paramagnetic sources (veins, CMBs, iron) give
   positive phase. Vendors differ; ``phase_sign="auto"`` decides from the data
   (:func:`detect_phase_sign`): the QSM is computed once with the phase as
   read, and the voxels that are dark on the magnitude relative to their
   surroundings (high R2*: veins, microbleeds, iron-rich nuclei, which are
   paramagnetic; calcifications are the rare diamagnetic exception) must have
   positive median susceptibility; if not, the sign is flipped (the whole
   chain is linear in the phase, so flipping the QSM and recomputing the SWI
   is exact). ``+1`` / ``-1`` force it.
3. **Unwrapping**: Laplacian unwrapping per echo (Schofield & Zhu 2003,
   :mod:`deepmir.qsm.unwrap`): fast and never fails on noise; it returns the
   phase up to a harmonic function, which step 5 removes. It sees ``sin`` of
   the phase step between neighbours, so it falls short where the phase is
   steep (around CMBs and calcifications at long TE). Residual corrections
   (``laplacian_unwrap(..., corrections=1)``: the wrapped remainder
   unwrapped again and added) raised the lesion chi of the development
   phantoms from 0.52-0.89 to 0.70-1.07 of the truth, but on the benchmark
   phantoms they lowered the detection F1 of every class (0.64-0.67 against
   0.75-0.91; more artifacts, RMSE 0.034 against 0.030 ppm), so
   :data:`UNWRAP_CORRECTIONS` is 0.
4. **Echo combination**: magnitude-weighted least-squares fit of the
   unwrapped phase over echo times, ``phi_n = phi_0 + omega TE_n`` with
   weights ``|S_n|^2``; the offset ``phi_0`` (receive phase) is smoothed and
   the slope refitted through it, which keeps the noise of the whole echo
   train (:func:`total_field_ppm`; one echo: ``omega = phi / TE``), then
   ``field_ppm = omega / (2 pi gamma B0)``.
5. **Background-field removal**: V-SHARP (Wu et al., MRM 2012), spheres from
   12 mm down in steps of two voxels, on the brain mask less the air-tissue
   regions (:mod:`deepmir.qsm.background`). Air-tissue regions
   (:func:`air_tissue_regions`): next to the sinuses and petrous bones the
   phase is too steep for Laplacian unwrapping (the wrapped first-echo phase
   steps by more than :data:`STEEP_PHASE_RAD` between neighbours), the
   resulting field error is not harmonic, and V-SHARP leaves it in: on the
   benchmark phantoms a 360 mm^3 "iron deposit" at the frontal base came
   out of it. Steep-phase regions that reach the outer
   :data:`AIR_EDGE_MM` of the brain mask and exceed :data:`AIR_MIN_MM3`
   (a CMB of 10 mm, the largest, is 524 mm^3; on one of those phantoms the
   lesions' own steep regions were at most 182 mm^3 and 7 mm or more from
   the edge)
   are left out of the QSM mask, as quality-guided masking does (e.g. the
   two-pass masking of QSMxT, Stewart et al., MRM 2022).
6. **Dipole inversion**: truncated k-space division (TKD, Shmueli et al.,
   MRM 2009; :func:`deepmir.qsm.dipole.qsm_inversion`), threshold 0.18, B0
   along the scanner z axis of the affine, or the sidecars' ``B0Direction``
   (world axes) when they give one (:func:`read_b0_direction`).
   ``inversion="tikhonov"`` (closed form ``D / (D^2 + lambda)``, lambda 0.02,
   Bilgic et al. MRM 2014) and ``"cg"`` (magnitude-weighted least squares by
   conjugate gradients, iLSQR-like, Li et al. NeuroImage 2015; up to 43 s a
   subject on 2 shared cores, over the 30 s budget) are there too. Tikhonov
   with lambda 0.02 was the default until measured on two full-size
   phantoms of a development seed (4343, not the benchmark's): it shrinks
   every spatial frequency by ``D^2 / (D^2 + lambda)``, and the mean chi of
   CMBs and calcifications came out at 0.40-0.70 of the truth, iron at 0.62
   (1.19 on the phantom whose 10 degree B0 tilt was ignored: streaks); TKD
   keeps ``|D| > 0.18`` whole and, with B0 from the sidecar, gave 0.52-0.89
   (iron 0.86-0.93), at an RMSE 4 % lower to 9 % higher. Fed the
   true local field, TKD matches the simulator's own QSM; what remains is
   the field estimate (step 3, and noise near strong sources).
7. **Referencing**: mean susceptibility over the QSM mask is 0; ppm out.
8. **SWI** (Haacke et al. 2004; :mod:`deepmir.qsm.swi`, the simulator's own
   function): homodyne high-pass phase with a Hanning low-pass over 1/8 of
   k-space (3D, or 2D in-plane when the slices are more than 1.5 times thicker
   than the in-plane voxel), negative-phase mask (paramagnetic side) to the
   power 4 times the magnitude, echoes combined by root mean square (as the
   simulator's multi-echo SWI).

Brain mask: the subject's ``desc-brain_mask`` when it has one, else
:func:`deepmir.model.preprocess.derive_brain_mask` on the first echo's
magnitude (nilearn's EPI mask). Budget: the whole step (SWI + QSM) is well
under 30 s for a 1 mm 160 x 192 x 160 subject on 2 cores
(``benchmarks/bench_gre.py`` measures it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from deepmir.io.loader import SubjectDataError, read_nifti
from deepmir.qsm.background import vsharp
from deepmir.qsm.dipole import qsm_inversion, radians_per_ppm
from deepmir.qsm.inversion import cg_inversion
from deepmir.qsm.swi import swi
from deepmir.qsm.unwrap import laplacian_unwrap

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

#: SWI settings (the simulator's defaults, physics.swi)
SWI_LOWPASS_FRACTION = 0.125
SWI_MASK_POWER = 4
#: CG (iLSQR-like) iterations of the dipole inversion
CG_ITERATIONS = 20
#: residual corrections of the Laplacian unwrapping (:func:`deepmir.qsm.unwrap.laplacian_unwrap`)
UNWRAP_CORRECTIONS = 0
#: smoothing of the multi-echo phase offset (mm)
OFFSET_SIGMA_MM = 4.0
#: closed-form inversions: TKD threshold, Tikhonov lambda
INVERSION_PARAMETER = {"tkd": 0.18, "tikhonov": 0.02}
INVERSION_NAMES = {
    "tikhonov": f"Tikhonov closed form, lambda {INVERSION_PARAMETER['tikhonov']} "
    "(Bilgic et al. 2014)",
    "tkd": f"TKD, threshold {INVERSION_PARAMETER['tkd']} (Shmueli et al. 2009)",
    "cg": f"weighted least squares, CG {CG_ITERATIONS} iterations (iLSQR-like, Li et al. 2015)",
}
#: V-SHARP's largest sphere (mm)
VSHARP_MAX_RADIUS_MM = 12.0
#: air-tissue regions (:func:`air_tissue_regions`): wrapped first-echo phase step
#: between neighbours (rad), reach of the mask edge (mm), smallest volume (mm^3)
STEEP_PHASE_RAD = 1.5
AIR_EDGE_MM = 2.0
AIR_MIN_MM3 = 1000.0
#: a voxel is "dark" (sign detection) below this share of its neighbourhood's magnitude
DARK_RATIO = 0.6
PHASE_SIGNS = ("auto", "+1", "-1")


@dataclass(frozen=True)
class GreEcho:
    """One echo's files (absolute paths) and echo time."""

    echo: int
    magnitude: Path
    phase: Path
    echo_time_s: float


@dataclass
class GreData:
    """Raw GRE of one subject: (I, J, K, E) magnitude and phase as read."""

    magnitude: FloatArray
    phase: FloatArray
    echo_times_s: tuple[float, ...]
    b0_tesla: float
    affine: npt.NDArray[np.float64]
    #: the phase files (for messages)
    phase_paths: tuple[Path, ...] = ()
    magnitude_paths: tuple[Path, ...] = ()
    #: B0 in the world (scanner) axes of ``affine``: the scanner's z axis, unless the
    #: sidecars give ``B0Direction`` (:func:`read_b0_direction`)
    b0_world: tuple[float, float, float] = (0.0, 0.0, 1.0)

    @property
    def voxel_mm(self) -> tuple[float, float, float]:
        sizes = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return (float(sizes[0]), float(sizes[1]), float(sizes[2]))


@dataclass
class GreResult:
    """What :func:`swi_qsm_from_gre` computed, on the GRE grid."""

    swi: FloatArray
    chimap: FloatArray  # ppm, 0 outside ``qsm_mask``
    qsm_mask: BoolArray
    brain_mask: BoolArray
    mask_method: str  # "file" or how it was derived
    phase_sign: int
    phase_sign_source: str  # "auto" or "option"
    #: sign detection: median chi (ppm, phase as read) in the dark voxels, and their count
    sign_evidence: dict[str, float] = field(default_factory=dict)
    phase_units: str = "rad"
    seconds: float = 0.0
    #: CPU time of the process (all threads) during the step: comparable on a busy machine
    cpu_seconds: float = 0.0
    inversion: str = ""
    #: B0 in the voxel axes (the dipole kernel's direction) and where it came from
    b0_voxel: tuple[float, float, float] = (0.0, 0.0, 1.0)
    #: volume (mm^3) of the brain mask left out of the QSM as air-tissue regions
    air_tissue_mm3: float = 0.0

    def sidecar(self, data: GreData, root: Path | None = None) -> dict[str, Any]:
        """What the derivative's JSON sidecar records (methods and decisions)."""

        def rel(p: Path) -> str:
            if root is None:
                return str(p)
            try:
                return p.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                return str(p)

        return {
            "Sources": [
                rel(p)
                for pair in zip(data.magnitude_paths, data.phase_paths, strict=True)
                for p in pair
            ],
            "EchoTime": list(data.echo_times_s),
            "MagneticFieldStrength": data.b0_tesla,
            "PhaseUnitsRead": self.phase_units,
            "PhaseSign": self.phase_sign,
            "PhaseSignSource": self.phase_sign_source,
            "PhaseSignEvidence": self.sign_evidence,
            "BrainMask": self.mask_method,
            "AirTissueExcludedMm3": round(self.air_tissue_mm3, 1),
            "B0DirectionWorld": list(data.b0_world),
            "B0DirectionVoxel": [round(v, 6) for v in self.b0_voxel],
            "Methods": {
                "Unwrapping": f"Laplacian (Schofield & Zhu 2003), {UNWRAP_CORRECTIONS} residual "
                "correction(s)",
                "EchoCombination": "magnitude-weighted least-squares fit of phase over TE",
                "BackgroundRemoval": "V-SHARP (Wu et al. 2012), radii <= "
                f"{VSHARP_MAX_RADIUS_MM} mm, air-tissue regions left out (steep first-echo "
                f"phase > {STEEP_PHASE_RAD} rad per voxel reaching the mask's outer "
                f"{AIR_EDGE_MM} mm, > {AIR_MIN_MM3:.0f} mm^3)",
                "DipoleInversion": self.inversion,
                "Referencing": "mean over the QSM mask",
                "SWI": f"homodyne Hanning low-pass {SWI_LOWPASS_FRACTION}, phase mask power "
                f"{SWI_MASK_POWER} (Haacke et al. 2004), echoes by root mean square",
            },
            "Seconds": round(self.seconds, 2),
            "CpuSeconds": round(self.cpu_seconds, 2),
        }


# --- reading -----------------------------------------------------------------


def sidecar_path(nifti: Path) -> Path:
    """The same-name JSON sidecar of a NIfTI file."""
    name = nifti.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return nifti.with_name(name[: -len(ext)] + ".json")
    return nifti.with_suffix(".json")


def _sidecar_value(paths: list[Path], key: str, what: str) -> float:
    """``key`` from the first of ``paths`` (JSON sidecars) that has it, or a clear error."""
    for path in paths:
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SubjectDataError(path, f"sidecar is not readable JSON ({exc})") from exc
        if not isinstance(data, dict) or key not in data:
            continue
        value = data[key]
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise SubjectDataError(path, f"{key} must be a positive number ({what}), got {value!r}")
        return float(value)
    existing = [p for p in paths if p.is_file()]
    if not existing:
        raise SubjectDataError(
            paths[0],
            f"JSON sidecar missing: raw GRE needs {key} ({what}) from the sidecar next to "
            f"{paths[0].with_suffix('').name}.nii[.gz] (BIDS)",
        )
    raise SubjectDataError(existing[0], f"sidecar has no {key} ({what}); raw GRE needs it")


def read_echo_time(magnitude: Path, phase: Path) -> tuple[float, float]:
    """(EchoTime s, MagneticFieldStrength T) from the phase's sidecar, else the magnitude's."""
    paths = [sidecar_path(phase), sidecar_path(magnitude)]
    te = _sidecar_value(paths, "EchoTime", "seconds")
    if te > 1.0:
        raise SubjectDataError(
            next(p for p in paths if p.is_file()),
            f"EchoTime {te} is not in seconds (BIDS): give e.g. 0.02 for 20 ms",
        )
    b0 = _sidecar_value(paths, "MagneticFieldStrength", "tesla")
    return te, b0


def read_b0_direction(paths: list[Path]) -> tuple[float, float, float] | None:
    """``B0Direction`` of the first of ``paths`` (JSON sidecars) that has it: a
    3-vector in the world (scanner) axes of the NIfTI affine, normalized; None
    when no sidecar has it (B0 is then the scanner's z axis, which the affine of
    real data carries). Not a BIDS key: deepmir's phantoms write it, whose head
    is tilted against B0 while their affines stay axis-aligned."""
    for path in paths:
        if not path.is_file():
            continue
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get("B0Direction")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise SubjectDataError(path, f"sidecar is not readable JSON ({exc})") from exc
        if value is None:
            continue
        vec = np.asarray(value, np.float64) if isinstance(value, list) else np.zeros(0)
        if vec.shape != (3,) or not np.isfinite(vec).all() or np.linalg.norm(vec) < 1e-6:
            raise SubjectDataError(path, f"B0Direction must be 3 numbers (a vector), got {value!r}")
        vec = vec / np.linalg.norm(vec)
        return (float(vec[0]), float(vec[1]), float(vec[2]))
    return None


def _volume(path: Path) -> tuple[Any, FloatArray]:
    img, data = read_nifti(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SubjectDataError(
            path, f"expected a 3D volume per echo, got {data.ndim}D data of shape {data.shape}"
        )
    arr = np.asarray(data, np.float32)
    if not np.isfinite(arr).all():
        raise SubjectDataError(path, "holds NaN or Inf values")
    return img, arr


def read_gre(echoes: list[GreEcho]) -> GreData:
    """Magnitude and phase of every echo on one grid, with the echo times and B0.

    Raises
    ------
    SubjectDataError
        naming the file and the problem (unreadable, grids that differ,
        sidecars without EchoTime / MagneticFieldStrength, B0 that differs).
    """
    if not echoes:
        raise ValueError("no echoes")
    mags: list[FloatArray] = []
    phases: list[FloatArray] = []
    affine: npt.NDArray[np.float64] | None = None
    shape: tuple[int, ...] | None = None
    b0s = []
    for e in sorted(echoes, key=lambda e: e.echo):
        for path, out in ((e.magnitude, mags), (e.phase, phases)):
            img, arr = _volume(path)
            aff = np.asarray(img.affine, np.float64)
            if affine is None:
                affine, shape = aff, arr.shape
            elif arr.shape != shape or not np.allclose(aff, affine, atol=1e-3):
                raise SubjectDataError(
                    path,
                    f"grid {arr.shape} differs from the first echo's {shape} (raw GRE echoes and "
                    "parts must share one grid)",
                )
            out.append(arr)
        b0s.append(read_echo_time(e.magnitude, e.phase)[1])
    if max(b0s) - min(b0s) > 1e-3:
        raise SubjectDataError(
            echoes[0].phase, f"MagneticFieldStrength differs between echoes: {b0s}"
        )
    assert affine is not None
    ordered = sorted(echoes, key=lambda e: e.echo)
    b0_world = read_b0_direction(
        [sidecar_path(ordered[0].phase), sidecar_path(ordered[0].magnitude)]
    )
    return GreData(
        magnitude=np.stack(mags, axis=-1),
        phase=np.stack(phases, axis=-1),
        echo_times_s=tuple(e.echo_time_s for e in ordered),
        b0_tesla=b0s[0],
        affine=affine,
        phase_paths=tuple(e.phase for e in ordered),
        magnitude_paths=tuple(e.magnitude for e in ordered),
        b0_world=b0_world if b0_world is not None else (0.0, 0.0, 1.0),
    )


# --- the numerics -------------------------------------------------------------


def phase_to_radians(phase: FloatArray, path: Path | str = "phase") -> tuple[FloatArray, str]:
    """The phase in radians and what it was read as (``"rad"`` or ``"integer/<span>"``).

    Radians: every value within [-pi, 2 pi] (with a little slack for rounding).
    Scanner integers: integer values spanning at least 64; scaled by
    ``2 pi / span`` with ``span`` the observed range (max - min + 1) rounded up
    to a power of two when that is at most 10% more (Siemens -4096..4095 ->
    8192, 0..4095 -> 4096). Anything else is refused with a clear error.
    """
    lo, hi = float(phase.min()), float(phase.max())
    slack = 0.02
    if lo >= -np.pi - slack and hi <= 2 * np.pi + slack and hi - lo <= 2 * np.pi + slack:
        return phase.astype(np.float32, copy=False), "rad"
    sample = phase.ravel()[:: max(1, phase.size // 100_000)]
    if np.allclose(sample, np.round(sample), atol=1e-3) and hi - lo >= 64:
        observed = hi - lo + 1
        power = 2.0 ** np.ceil(np.log2(observed))
        span = power if power <= observed * 1.1 else observed
        scaled = (phase * np.float32(2 * np.pi / span)).astype(np.float32)
        return scaled, f"integer/{int(span)}"
    raise SubjectDataError(
        path,
        f"phase values range {lo:g}..{hi:g}: neither radians ([-pi, pi] or [0, 2 pi]) nor "
        "scanner integers (e.g. -4096..4095); rescale it to radians",
    )


def b0_direction_of(
    affine: npt.NDArray[np.float64], b0_world: tuple[float, float, float] = (0.0, 0.0, 1.0)
) -> tuple[float, float, float]:
    """B0 (``b0_world`` in world axes; default the scanner's z axis) in the voxel
    axes of ``affine`` (unit vector)."""
    rot = affine[:3, :3] / np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    b = np.linalg.solve(rot, np.asarray(b0_world, np.float64))
    b /= np.linalg.norm(b)
    return (float(b[0]), float(b[1]), float(b[2]))


def total_field_ppm(
    magnitude: FloatArray,
    phase_rad: FloatArray,
    echo_times_s: tuple[float, ...],
    b0_tesla: float,
    voxel_mm: tuple[float, float, float],
    mask: BoolArray | None = None,
) -> FloatArray:
    """Field (ppm) from (I, J, K, E) magnitude and wrapped phase.

    Laplacian unwrapping per echo; then, with several echoes, the
    magnitude-weighted least-squares fit of ``phi_n = phi_0 + omega TE_n``
    gives the phase offset ``phi_0``, which is smoothed (Gaussian, sigma
    :data:`OFFSET_SIGMA_MM`, weighted by magnitude within ``mask``): the
    receive-phase offset is smooth, and the fit's own intercept is several
    times noisier than its slope. The field is the weighted fit through that
    offset, ``omega = sum w t (phi - phi_0) / sum w t^2`` (weights
    ``|S_n|^2``), whose noise is that of the full echo train. One echo:
    ``omega = phi / TE``. ``field_ppm = omega / (2 pi gamma B0)``.
    """
    tes = np.asarray(echo_times_s, np.float64)
    unwrapped = [
        laplacian_unwrap(phase_rad[..., n], voxel_mm, UNWRAP_CORRECTIONS) for n in range(len(tes))
    ]
    per_ppm = radians_per_ppm(b0_tesla, 1.0)  # rad per ppm per second of TE
    if len(tes) == 1:
        return (unwrapped[0] / np.float32(tes[0] * per_ppm)).astype(np.float32)
    eps = np.float32(1e-12)
    w = [np.square(magnitude[..., n], dtype=np.float32) + eps for n in range(len(tes))]
    sw = np.sum(w, axis=0)
    t_bar = np.sum([w[n] * np.float32(tes[n]) for n in range(len(tes))], axis=0) / sw
    p_bar = np.sum([w[n] * unwrapped[n] for n in range(len(tes))], axis=0) / sw
    num = np.zeros_like(sw)
    den = np.zeros_like(sw)
    for n in range(len(tes)):
        dt = np.float32(tes[n]) - t_bar
        num += w[n] * dt * (unwrapped[n] - p_bar)
        den += w[n] * dt * dt
    omega = num / np.maximum(den, eps)
    offset = p_bar - omega * t_bar
    support = sw if mask is None else np.where(mask, sw, 0.0).astype(np.float32)
    sigma = tuple(OFFSET_SIGMA_MM / v for v in voxel_mm)
    smooth = ndimage.gaussian_filter(offset * support, sigma) / np.maximum(
        ndimage.gaussian_filter(support, sigma), eps
    )
    num[:] = 0.0
    den[:] = 0.0
    for n in range(len(tes)):
        t = np.float32(tes[n])
        num += w[n] * t * (unwrapped[n] - smooth)
        den += w[n] * t * t
    return (num / np.maximum(den, eps) / np.float32(per_ppm)).astype(np.float32)


def air_tissue_regions(
    phase_rad: FloatArray, mask: BoolArray, voxel_mm: tuple[float, float, float]
) -> BoolArray:
    """Voxels of ``mask`` in air-tissue regions (the module docstring, step 5):
    26-connected regions where the wrapped phase (one echo) steps by more than
    :data:`STEEP_PHASE_RAD` to a neighbour, reaching within :data:`AIR_EDGE_MM`
    of the mask edge and larger than :data:`AIR_MIN_MM3`."""
    import cc3d

    steep = np.zeros(mask.shape, bool)
    for axis in range(3):
        step = np.abs(np.angle(np.exp(1j * np.diff(phase_rad, axis=axis))))
        big = step > STEEP_PHASE_RAD
        lead = [slice(None)] * 3
        lead[axis] = slice(0, -1)
        trail = [slice(None)] * 3
        trail[axis] = slice(1, None)
        steep[tuple(lead)] |= big
        steep[tuple(trail)] |= big
    steep &= mask
    if not steep.any():
        return steep
    components = cc3d.connected_components(steep, connectivity=26)
    n = int(components.max())
    depth = ndimage.distance_transform_edt(mask, sampling=voxel_mm)
    at_edge = np.bincount(components[depth <= AIR_EDGE_MM], minlength=n + 1) > 0
    volume = np.bincount(components.ravel(), minlength=n + 1) * float(np.prod(voxel_mm))
    keep = at_edge & (volume > AIR_MIN_MM3)
    keep[0] = False
    return np.asarray(keep[components])


def local_contrast(
    magnitude: FloatArray, mask: BoolArray, voxel_mm: tuple[float, float, float]
) -> FloatArray:
    """Magnitude over its masked Gaussian neighbourhood mean (sigma 3 mm)."""
    sigma = tuple(3.0 / v for v in voxel_mm)
    m = np.where(mask, magnitude, 0.0).astype(np.float32)
    num = ndimage.gaussian_filter(m, sigma)
    den = ndimage.gaussian_filter(mask.astype(np.float32), sigma)
    ref = num / np.maximum(den, 1e-6)
    return (m / np.maximum(ref, 1e-12)).astype(np.float32)


def detect_phase_sign(
    chimap: FloatArray,
    magnitude: FloatArray,
    mask: BoolArray,
    voxel_mm: tuple[float, float, float],
) -> tuple[int, dict[str, float]]:
    """+1 if the phase already follows deepmir's convention, else -1.

    Rule: in the QSM mask, the voxels darker than :data:`DARK_RATIO` times
    their neighbourhood on the (last echo's) magnitude are mostly veins, CMBs
    and iron: paramagnetic. Their median susceptibility, computed with the
    phase as read, is positive when the sign is right. With fewer than 20
    such voxels the 1% darkest are used instead.
    """
    ratio = local_contrast(magnitude, mask, voxel_mm)
    inner = mask & (ratio > 0)
    dark = inner & (ratio < DARK_RATIO)
    if dark.sum() < 20 and inner.any():
        dark = inner & (ratio <= np.percentile(ratio[inner], 1))
    if not dark.any():
        return 1, {"median_chi_dark_ppm": 0.0, "dark_voxels": 0.0}
    median = float(np.median(chimap[dark]))
    evidence = {"median_chi_dark_ppm": round(median, 5), "dark_voxels": float(dark.sum())}
    return (1 if median >= 0 else -1), evidence


def swi_from_gre(
    magnitude: FloatArray, phase_rad: FloatArray, voxel_mm: tuple[float, float, float]
) -> FloatArray:
    """SWI (module docstring, step 8) of (I, J, K, E) magnitude and phase in
    deepmir's sign convention."""
    vox = np.asarray(voxel_mm)
    thick = int(np.argmax(vox))
    if vox[thick] > 1.5 * np.min(vox):
        axes: tuple[int, ...] = tuple(a for a in range(3) if a != thick)
    else:
        axes = (0, 1, 2)
    acc = np.zeros(magnitude.shape[:3], np.float32)
    n = magnitude.shape[-1]
    for e in range(n):
        signal = (magnitude[..., e] * np.exp(1j * phase_rad[..., e])).astype(np.complex64)
        acc += np.square(swi(signal, SWI_LOWPASS_FRACTION, SWI_MASK_POWER, axes))
    return np.sqrt(acc / np.float32(n)).astype(np.float32)


def swi_qsm_from_gre(
    data: GreData,
    brain_mask: BoolArray | None = None,
    phase_sign: str = "auto",
    inversion: str = "tkd",
) -> GreResult:
    """SWI and QSM (ppm) of one subject's raw GRE (the module docstring's steps).

    Raises
    ------
    SubjectDataError
        phase in units it cannot read; a mask on another grid.
    ValueError
        an unknown ``phase_sign`` or ``inversion``.
    """
    from deepmir.model.preprocess import derive_brain_mask

    if phase_sign not in PHASE_SIGNS:
        raise ValueError(f"phase sign must be one of {', '.join(PHASE_SIGNS)}, got {phase_sign!r}")
    if inversion not in INVERSION_NAMES:
        raise ValueError(
            f"inversion must be one of {', '.join(INVERSION_NAMES)}, got {inversion!r}"
        )
    start, cpu_start = time.perf_counter(), time.process_time()
    where = data.phase_paths[0] if data.phase_paths else "phase"
    phase, units = phase_to_radians(data.phase, where)
    vox = data.voxel_mm
    magnitude = np.abs(data.magnitude).astype(np.float32)
    if brain_mask is not None and brain_mask.shape != magnitude.shape[:3]:
        raise SubjectDataError(
            where,
            f"the brain mask's grid {brain_mask.shape} differs from the raw GRE's "
            f"{magnitude.shape[:3]}",
        )
    mask_method = "file"
    if brain_mask is None:
        brain_mask, how = derive_brain_mask({"swi": magnitude[..., 0]}, data.affine)
        mask_method = f"derived from the GRE magnitude ({how})"
    brain_mask = np.asarray(brain_mask, bool)
    if not brain_mask.any():
        raise SubjectDataError(where, "the brain mask is empty: cannot compute QSM")

    field_ppm = total_field_ppm(magnitude, phase, data.echo_times_s, data.b0_tesla, vox, brain_mask)
    radii = tuple(float(r) for r in np.arange(VSHARP_MAX_RADIUS_MM, 0.0, -2.0 * max(vox)))
    air = air_tissue_regions(phase[..., 0], brain_mask, vox)
    local, qsm_mask = vsharp(field_ppm, brain_mask & ~air, vox, radii)
    del field_ppm
    if not qsm_mask.any():
        raise SubjectDataError(where, "the brain mask is too small for V-SHARP (nothing left)")
    b0_dir = b0_direction_of(data.affine, data.b0_world)
    if inversion == "cg":
        peak = float(np.percentile(magnitude[..., 0][brain_mask], 99))
        weight = np.clip(magnitude[..., 0] / max(peak, 1e-12), 0.05, 1.0).astype(np.float32)
        chimap = cg_inversion(local, qsm_mask, weight, vox, b0_dir, CG_ITERATIONS)
    else:
        parameter = INVERSION_PARAMETER[inversion]
        chimap = qsm_inversion(local, qsm_mask, vox, b0_dir, inversion, parameter)
    chimap = np.where(qsm_mask, chimap - chimap[qsm_mask].mean(), 0.0).astype(np.float32)

    evidence: dict[str, float] = {}
    if phase_sign == "auto":
        sign, evidence = detect_phase_sign(chimap, magnitude[..., -1], qsm_mask, vox)
        source = "auto"
    else:
        sign, source = int(phase_sign), "option"
    if sign < 0:
        chimap = -chimap
        phase = -phase
    swi_img = swi_from_gre(magnitude, phase, vox)
    return GreResult(
        swi=swi_img,
        chimap=chimap,
        qsm_mask=qsm_mask,
        brain_mask=brain_mask,
        mask_method=mask_method,
        phase_sign=sign,
        phase_sign_source=source,
        sign_evidence=evidence,
        phase_units=units,
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu_start,
        inversion=INVERSION_NAMES[inversion],
        b0_voxel=b0_dir,
        air_tissue_mm3=float(air.sum() * np.prod(vox)),
    )
