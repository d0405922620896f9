"""Susceptibility-weighted imaging (Haacke et al., MRM 2004) from a complex
GRE signal: homodyne high-pass phase (Hanning low-pass in k-space), a phase
mask that darkens paramagnetic (positive, in deepmir's convention) phase,
raised to a power and multiplied into the magnitude.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft

from deepmir.qsm.dipole import WORKERS

FloatArray = npt.NDArray[np.float32]
ComplexArray = npt.NDArray[np.complex64]


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
