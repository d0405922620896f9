"""The MRI forward model of the phantom: field, GRE, SWI, QSM and T2w.

Written by hand because no maintained library simulates this chain; every
step follows ``docs/physics.md`` and cites its source.

Units: susceptibility chi and fields in ppm, times in seconds, rates in 1/s,
lengths in mm, B0 in tesla.

Phase sign convention (stated once, used everywhere in deepmir):
``phase = +2 pi * GAMMA_MHZ_PER_T * B0 * TE * field_ppm`` (rad), so a
paramagnetic source (chi > 0), whose field is positive where B0 lines run
through it, gives **positive** phase. This is the opposite of Haacke's
right-handed convention; the SWI phase mask is therefore built to darken
positive phase. The invariant tested is the physical one: paramagnetic
sources end dark on SWI and positive on QSM, diamagnetic ones (calcification)
dark on SWI and negative on QSM.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft
from scipy import ndimage

GAMMA_MHZ_PER_T = 42.577478  # proton gyromagnetic ratio / 2 pi
FloatArray = npt.NDArray[np.float32]
ComplexArray = npt.NDArray[np.complex64]
WORKERS = -1  # scipy.fft: all cores


def b0_direction(tilt_deg: float, azimuth_deg: float) -> tuple[float, float, float]:
    """Unit vector of B0 tilted by ``tilt_deg`` from the k (z) axis."""
    t, a = np.deg2rad(tilt_deg), np.deg2rad(azimuth_deg)
    return (float(np.sin(t) * np.cos(a)), float(np.sin(t) * np.sin(a)), float(np.cos(t)))


def radians_per_ppm(b0_tesla: float, te_s: float) -> float:
    """Phase accrued per ppm of field: 2 pi gamma B0 TE (about 16 rad at 3 T, 20 ms)."""
    return float(2.0 * np.pi * GAMMA_MHZ_PER_T * b0_tesla * te_s)


@lru_cache(maxsize=32)
def dipole_kernel(
    shape: tuple[int, int, int],
    voxel_mm: float | tuple[float, float, float],
    b0_dir: tuple[float, float, float],
) -> FloatArray:
    """Dipole kernel ``D(k) = 1/3 - (k.b)^2 / |k|^2`` on an rFFT grid, ``D(0) = 0``.

    The 1/3 term is the Lorentz-sphere correction: the field inside a uniform
    sphere is zero (Salomir et al. 2003; Marques & Bowtell 2005).
    """
    vox = (voxel_mm,) * 3 if isinstance(voxel_mm, int | float) else tuple(voxel_mm)
    k = [np.fft.fftfreq(n, d=v).astype(np.float32) for n, v in zip(shape[:2], vox[:2], strict=True)]
    k.append(np.fft.rfftfreq(shape[2], d=vox[2]).astype(np.float32))
    ki, kj, kk = np.meshgrid(*k, indexing="ij", sparse=True)
    k2 = ki**2 + kj**2 + kk**2
    kb = ki * b0_dir[0] + kj * b0_dir[1] + kk * b0_dir[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.float32(1.0 / 3.0) - kb**2 / k2
    d = d.astype(np.float32)
    d[0, 0, 0] = 0.0
    d.setflags(write=False)  # cached and shared: never modified in place
    return d


def _padded_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int, int]:
    return tuple(sfft.next_fast_len(int(np.ceil(n * factor)), real=True) for n in shape)  # type: ignore[return-value]


def dipole_field(
    chi: FloatArray,
    voxel_mm: float | tuple[float, float, float],
    b0_dir: tuple[float, float, float],
    pad_factor: float = 2.0,
) -> FloatArray:
    """Field perturbation (ppm of B0) of a susceptibility map (ppm).

    ``field = IFFT[D(k) FFT[chi]]`` on a zero-padded grid (``pad_factor`` times
    the size, physics.md step 3).
    """
    shape = _padded_shape(chi.shape, pad_factor)
    d = dipole_kernel(shape, voxel_mm, b0_dir)
    spec = sfft.rfftn(chi.astype(np.float32), s=shape, workers=WORKERS)
    spec *= d
    out = sfft.irfftn(spec, s=shape, workers=WORKERS)
    return np.ascontiguousarray(out[: chi.shape[0], : chi.shape[1], : chi.shape[2]], np.float32)


def qsm_inversion(
    field: FloatArray,
    mask: npt.NDArray[np.bool_],
    voxel_mm: float | tuple[float, float, float],
    b0_dir: tuple[float, float, float],
    method: str,
    parameter: float,
    pad_factor: float = 1.5,
) -> FloatArray:
    """A real single-step dipole inversion of a local field map (ppm -> ppm).

    ``method="tkd"``: truncated k-space division, ``1/D`` with ``|D|`` clipped
    from below at ``parameter`` (0.15-0.2; Shmueli et al., MRM 2009).
    ``method="tikhonov"``: closed-form ``D / (D^2 + parameter)``
    (Bilgic et al., MRM 2014). Both under-estimate small strong sources and
    streak around them, as real QSM does. The result is masked.
    """
    shape = _padded_shape(field.shape, pad_factor)
    d = dipole_kernel(shape, voxel_mm, b0_dir)
    if method == "tkd":
        mag = np.maximum(np.abs(d), parameter)
        inv = np.where(d >= 0, 1.0, -1.0).astype(np.float32) / mag
    elif method == "tikhonov":
        inv = d / (d * d + np.float32(parameter))
    else:
        raise ValueError(f"unknown QSM inversion {method!r}; use 'tkd' or 'tikhonov'")
    inv = inv.astype(np.float32)
    inv[0, 0, 0] = 0.0
    spec = sfft.rfftn(np.where(mask, field, 0.0).astype(np.float32), s=shape, workers=WORKERS)
    spec *= inv
    chi = sfft.irfftn(spec, s=shape, workers=WORKERS)[
        : field.shape[0], : field.shape[1], : field.shape[2]
    ]
    return np.where(mask, chi, 0.0).astype(np.float32)


def spoiled_gre_m0(pd: FloatArray, t1_s: FloatArray, tr_s: float, flip_deg: float) -> FloatArray:
    """Steady-state spoiled GRE amplitude (Ernst equation) before T2* decay."""
    a = np.deg2rad(flip_deg)
    e1 = np.exp(-tr_s / np.maximum(t1_s, 1e-3))
    return (pd * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)).astype(np.float32)


def gre_signal(
    m0: FloatArray, r2star: FloatArray, field_ppm: FloatArray, te_s: float, b0_tesla: float
) -> ComplexArray:
    """Complex GRE signal ``M0 exp(-TE R2*) exp(i phase)`` (physics.md step 4)."""
    phase = radians_per_ppm(b0_tesla, te_s) * field_ppm
    mag = m0 * np.exp(-te_s * r2star)
    return (mag * np.exp(1j * phase)).astype(np.complex64)


def hanning_lowpass(
    signal: ComplexArray, fraction: float, axes: tuple[int, ...] = (0, 1, 2)
) -> ComplexArray:
    """Low-pass a complex image with a centred Hanning window in k-space.

    The window spans ``fraction`` of k-space along each of ``axes`` (all
    three: 3D homodyne; ``(0, 1)``: the 2D, slice-by-slice filter of many
    scanners).
    """
    spec = sfft.fftn(signal, axes=axes, workers=WORKERS)
    window = np.ones((1, 1, 1), dtype=np.float32)
    for axis in axes:
        n = signal.shape[axis]
        width = max(3, int(round(n * fraction)))
        w = np.zeros(n, dtype=np.float32)
        han = np.hanning(width + 2)[1:-1].astype(np.float32)
        w[: width // 2 + width % 2] = han[width // 2 :]
        w[n - width // 2 :] = han[: width // 2]
        shape = [1, 1, 1]
        shape[axis] = n
        window = window * w.reshape(shape)
    spec *= window
    return sfft.ifftn(spec, axes=axes, workers=WORKERS).astype(np.complex64)


def swi(
    signal: ComplexArray,
    lowpass_fraction: float = 0.125,
    power: int = 4,
    axes: tuple[int, ...] = (0, 1, 2),
) -> FloatArray:
    """Susceptibility-weighted image from a complex GRE signal (Haacke et al. 2004).

    High-pass phase by homodyne filtering (phase of ``S * conj(LP(S))``), a
    phase mask that is 1 for negative phase and falls linearly to 0 at +pi
    (paramagnetic side, in deepmir's sign convention), and
    ``SWI = |S| * mask**power``.
    """
    low = hanning_lowpass(signal, lowpass_fraction, axes)
    hp_phase = np.angle(signal * np.conj(low)).astype(np.float32)
    mask = np.where(hp_phase > 0, np.clip(1.0 - hp_phase / np.pi, 0.0, 1.0), 1.0)
    return (np.abs(signal) * mask.astype(np.float32) ** power).astype(np.float32)


def spin_echo(
    pd: FloatArray, t1_s: FloatArray, t2_s: FloatArray, te_s: float, tr_s: float
) -> FloatArray:
    """Turbo spin-echo magnitude ``PD (1 - exp(-TR/T1)) exp(-TE/T2)``.

    The refocusing pulse cancels static dephasing, so there is no blooming
    (physics.md step 8).
    """
    return (
        pd * (1 - np.exp(-tr_s / np.maximum(t1_s, 1e-3))) * np.exp(-te_s / np.maximum(t2_s, 1e-4))
    ).astype(np.float32)


def add_complex_noise(signal: ComplexArray, sigma: float, seed: int) -> ComplexArray:
    """Add white complex Gaussian noise (magnitude then becomes Rician)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((2, *signal.shape), dtype=np.float32) * np.float32(sigma)
    return (signal + noise[0] + 1j * noise[1]).astype(np.complex64)


def rician(magnitude: FloatArray, sigma: float, seed: int) -> FloatArray:
    """Magnitude of a real image plus complex Gaussian noise (Rician)."""
    return np.abs(add_complex_noise(magnitude.astype(np.complex64), sigma, seed)).astype(np.float32)


def blur(image: FloatArray, sigma_vox: float) -> FloatArray:
    """Mild Gaussian blur (point-spread function of the acquisition)."""
    return ndimage.gaussian_filter(image, sigma_vox).astype(np.float32)
