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

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft
from scipy import ndimage

# shared with the raw-GRE path of predict (deepmir.qsm), re-exported here
from deepmir.qsm.dipole import GAMMA_MHZ_PER_T as GAMMA_MHZ_PER_T
from deepmir.qsm.dipole import dipole_kernel as dipole_kernel
from deepmir.qsm.dipole import padded_shape
from deepmir.qsm.dipole import qsm_inversion as qsm_inversion
from deepmir.qsm.dipole import radians_per_ppm as radians_per_ppm
from deepmir.qsm.swi import hanning_lowpass as hanning_lowpass
from deepmir.qsm.swi import swi as swi

FloatArray = npt.NDArray[np.float32]
ComplexArray = npt.NDArray[np.complex64]
WORKERS = -1  # scipy.fft: all cores
_padded_shape = padded_shape


def b0_direction(tilt_deg: float, azimuth_deg: float) -> tuple[float, float, float]:
    """Unit vector of B0 tilted by ``tilt_deg`` from the k (z) axis."""
    t, a = np.deg2rad(tilt_deg), np.deg2rad(azimuth_deg)
    return (float(np.sin(t) * np.cos(a)), float(np.sin(t) * np.sin(a)), float(np.cos(t)))


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
