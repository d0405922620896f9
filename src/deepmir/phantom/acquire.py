"""What a scanner and a QSM pipeline do to the rendered object (domain randomization).

The renderer (:mod:`deepmir.phantom.render`) computes the complex GRE signal,
the field and the T2w magnitude on its fine 1 mm grid. This module turns
them into what a user actually has, following ``robustness.md``:

* :class:`AcquisitionGrid` / :func:`acquire`: the acquired voxel. In-plane
  (axes i, j) by cropping or zero-filling k-space (the scanner's own
  resolution and zero-filled interpolation, Gibbs ringing included when the
  acquired matrix is smaller than the reconstructed one); through-plane (k)
  by averaging the **complex** signal over each slab (box slice profile), so
  a thick slice adds intravoxel dephasing instead of merely blurring an
  image. Motion ghosting (an N/2 replica along the phase-encode axis) is added
  in k-space order.
* :func:`gradient_dephasing`: signal loss of a 1 mm voxel in a steep
  background gradient (air-tissue interfaces), the classic sinc factor
  ``|sinc(dphi_i / 2) sinc(dphi_j / 2) sinc(dphi_k / 2)|``.
* :func:`sharp`, :func:`vsharp` (background-field removal, SHARP / V-SHARP)
  and :func:`cg_inversion` (CG weighted least-squares dipole inversion) live
  in :mod:`deepmir.qsm`, shared with the raw-GRE path of ``deepmir predict``,
  and are re-exported here.

All hand-written: no maintained Python library simulates the acquisition
chain, and the QSM methods here are the textbook algorithms in a few FFTs
(QSMxT, STI Suite and MEDI are MATLAB / containers, not importable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft

from deepmir.phantom import physics as phy
from deepmir.qsm.background import sharp as sharp
from deepmir.qsm.background import sphere_erode as sphere_erode
from deepmir.qsm.background import vsharp as vsharp
from deepmir.qsm.inversion import cg_inversion as cg_inversion

FloatArray = npt.NDArray[np.float32]
ComplexArray = npt.NDArray[np.complex64]
WORKERS = phy.WORKERS


@dataclass(frozen=True)
class AcquisitionGrid:
    """The acquired grid, relative to the render grid (factors of its voxel size).

    ``recon`` is the reconstructed voxel in-plane and the slab thickness
    through-plane; ``acquired_inplane`` (>= ``recon[0:2]``) the in-plane
    resolution actually sampled (its k-space extent): larger than the
    reconstructed voxel means zero-filled interpolation and Gibbs ringing.
    """

    recon: tuple[float, float, float]
    acquired_inplane: tuple[float, float]

    def shape(self, fine: tuple[int, ...]) -> tuple[int, int, int]:
        return tuple(max(1, int(round(n / f))) for n, f in zip(fine, self.recon, strict=True))  # type: ignore[return-value]

    def affine(
        self, fine_affine: npt.NDArray[np.float64], fine: tuple[int, ...]
    ) -> npt.NDArray[np.float64]:
        """Affine of the acquired grid: same axes and field-of-view box as the fine grid."""
        shape = self.shape(fine)
        step = np.array([n / m for n, m in zip(fine, shape, strict=True)])  # exact factors
        out = fine_affine.copy()
        out[:3, :3] = fine_affine[:3, :3] * step[None, :]
        # voxel centres: the FOV box [-0.5, n - 0.5] is shared
        centre0 = (step - 1.0) / 2.0
        out[:3, 3] = fine_affine[:3, :3] @ centre0 + fine_affine[:3, 3]
        return out


def overlap_matrix(n_fine: int, n_coarse: int) -> npt.NDArray[np.float32]:
    """W (coarse x fine): share of each coarse voxel covered by each fine voxel (rows sum to 1)."""
    step = n_fine / n_coarse
    edges_c = np.arange(n_coarse + 1) * step
    lo = np.maximum(edges_c[:-1, None], np.arange(n_fine)[None, :])
    hi = np.minimum(edges_c[1:, None], np.arange(1, n_fine + 1)[None, :])
    w = np.clip(hi - lo, 0.0, None) / step
    return w.astype(np.float32)


def area_average(volume: npt.NDArray[Any], shape: tuple[int, int, int]) -> npt.NDArray[Any]:
    """Exact box (area) average of a fine volume onto a grid of ``shape`` sharing its FOV.

    Also upsamples, where an axis gets more voxels: each new voxel then takes
    the fine voxels it overlaps, weighted by overlap.
    """
    out = volume
    for axis, m in enumerate(shape):
        n = out.shape[axis]
        if n == m:
            continue
        w = overlap_matrix(n, m)
        out = np.moveaxis(np.tensordot(w, np.moveaxis(out, axis, 0), axes=(1, 0)), 0, axis)
    return out.astype(volume.dtype)


def _kspace_resample_axis(
    signal: npt.NDArray[np.complex64], axis: int, n_out: int, n_acquired: int
) -> npt.NDArray[np.complex64]:
    """Resample one axis by DFT: keep ``n_acquired`` central k-space lines, zero-fill to ``n_out``.

    A linear phase moves the samples so that both grids share the FOV box.
    """
    n = signal.shape[axis]
    if n_out == n and n_acquired >= n:
        return signal
    spec = sfft.fft(signal, axis=axis, workers=WORKERS)
    k = np.fft.fftfreq(n, 1.0 / n)
    shift = (n / n_out - 1.0) / 2.0  # new sample m sits at fine index m * n / n_out + shift
    ramp = np.exp(2j * np.pi * k * shift / n).astype(np.complex64)
    keep = np.abs(k) <= (min(n_acquired, n_out) - 1) / 2.0
    shape = [1] * signal.ndim
    shape[axis] = n
    spec = spec * (ramp * keep).reshape(shape)
    # the output's k-space lines: the same frequencies, zero where the input has none
    k_out = np.rint(np.fft.fftfreq(n_out, 1.0 / n_out)).astype(np.int64)
    shape[axis] = n_out
    common = (np.abs(k_out) <= (min(n, n_out) - 1) / 2.0).reshape(shape)
    out_spec = np.take(spec, k_out % n, axis=axis) * common
    return sfft.ifft(out_spec, axis=axis, workers=WORKERS).astype(np.complex64) * np.float32(
        n_out / n
    )


def acquire(
    signal: npt.NDArray[np.complex64],
    grid: AcquisitionGrid,
    ghost_amplitude: float = 0.0,
    ghost_phase: float = 0.0,
) -> npt.NDArray[np.complex64]:
    """The complex image the scanner reconstructs from a fine complex signal.

    In-plane: k-space crop to the acquired resolution and zero-fill to the
    reconstructed matrix. Through-plane: complex mean over each slab.
    Ghosting: a replica shifted by half the FOV along the phase-encode axis (j).
    """
    shape = grid.shape(signal.shape)
    out = signal.astype(np.complex64)
    for axis in (0, 1):
        n = signal.shape[axis]
        n_acq = int(round(n / max(grid.acquired_inplane[axis], grid.recon[axis])))
        out = _kspace_resample_axis(out, axis, shape[axis], n_acq)
    if shape[2] != signal.shape[2]:
        out = area_average(out, (out.shape[0], out.shape[1], shape[2]))
    if ghost_amplitude > 0:
        ghost = np.roll(out, out.shape[1] // 2, axis=1)
        out = out + np.complex64(ghost_amplitude * np.exp(1j * ghost_phase)) * ghost
    return out.astype(np.complex64)


def gradient_dephasing(phase: FloatArray) -> FloatArray:
    """Magnitude factor of a voxel across which the phase changes linearly.

    ``prod_a |sinc(g_a / 2)|`` with ``g_a`` the phase difference across the
    voxel along axis ``a`` (central differences; numpy's sinc is sin(pi x)/(pi x)).
    """
    out = np.ones(phase.shape, np.float32)
    for axis in range(3):
        g = np.gradient(phase, axis=axis).astype(np.float32)
        out *= np.abs(np.sinc(g / (2 * np.pi))).astype(np.float32)
    return out
