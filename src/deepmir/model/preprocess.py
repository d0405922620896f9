"""Preprocessing stored with the model: brain crop and per-modality normalization.

* QSM keeps its sign and physical scale: ``chi / qsm_scale_ppm`` with one
  scale for every subject, derived from the training data (the median over
  subjects of the 99.5th percentile of ``|chi|`` in the brain). The sign is
  what separates a calcification from a CMB, so QSM is never centred, and it
  enters the network as two channels, its paramagnetic part ``max(chi, 0)``
  and its diamagnetic part ``max(-chi, 0)``: with QSM as one signed channel
  the network learned CMBs and iron but never calcifications (their
  probability fell to 0 during training, although a voxel rule separates
  them), with the two parts it learns all three.
* SWI and T2w are in arbitrary units: each subject is normalized robustly
  inside its brain, ``(x - median) / IQR``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Normalization:
    """Normalization parameters (saved in the model's config.json)."""

    modalities: tuple[str, ...]
    qsm_scale_ppm: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def channels(self) -> tuple[str, ...]:
        """Network input channels: one per modality, QSM split into its two signs."""
        out: list[str] = []
        for m in self.modalities:
            out.extend(("qsm+", "qsm-") if m == "qsm" else (m,))
        return tuple(out)

    def channel_indices(self, modality: str) -> tuple[int, ...]:
        """Indices in :attr:`channels` of one modality's channels (two for QSM)."""
        names = ("qsm+", "qsm-") if modality == "qsm" else (modality,)
        return tuple(i for i, c in enumerate(self.channels) if c in names)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Normalization:
        return Normalization(modalities=tuple(d["modalities"]), qsm_scale_ppm=d["qsm_scale_ppm"])


def fit_normalization(
    modalities: tuple[str, ...], qsm_volumes: list[FloatArray], masks: list[npt.NDArray[np.bool_]]
) -> Normalization:
    """Derive the QSM scale from training data (the fingerprint, as in nnU-Net)."""
    if "qsm" not in modalities or not qsm_volumes:
        return Normalization(modalities=modalities)
    highs = [
        float(np.percentile(np.abs(q[m]), 99.5))
        for q, m in zip(qsm_volumes, masks, strict=True)
        if m.any()
    ]
    scale = float(np.median(highs)) if highs else 0.1
    return Normalization(modalities=modalities, qsm_scale_ppm=max(scale, 1e-3))


#: voxels added around a QSM's support: QSM pipelines erode the brain mask by a
#: few voxels before background removal and inversion
QSM_SUPPORT_DILATION = 2


def derive_brain_mask(
    images: dict[str, FloatArray], affine: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.bool_], str]:
    """A brain mask for a subject without one, and the method used.

    With QSM: the QSM's own support (QSM pipelines set chi to 0 outside their
    brain mask), its largest 26-connected component (cc3d) with holes filled,
    dilated by :data:`QSM_SUPPORT_DILATION` voxels to undo the pipelines'
    usual erosion (scipy.ndimage). Without QSM: nilearn's
    ``compute_epi_mask`` (T. Nichols' histogram heuristic, largest component,
    opening) on the SWI magnitude (or T2w), holes filled. Falls back to the
    voxels with signal (:func:`brain_mask_from`) when these find nothing.
    """
    import cc3d
    from scipy import ndimage

    qsm = images.get("qsm")
    if qsm is not None and np.count_nonzero(qsm):
        support = qsm != 0
        largest = cc3d.largest_k(support, k=1, connectivity=26) > 0
        filled = ndimage.binary_fill_holes(largest)
        ball = ndimage.generate_binary_structure(3, 1)
        mask = ndimage.binary_dilation(filled, ball, iterations=QSM_SUPPORT_DILATION)
        return np.asarray(mask, bool), "qsm-support"
    magnitude = images.get("swi", images.get("t2w"))
    if magnitude is not None and np.count_nonzero(magnitude):
        import nibabel as nib
        from nilearn.masking import compute_epi_mask

        image = nib.Nifti1Image(np.abs(magnitude).astype(np.float32), affine)
        mask = np.asarray(compute_epi_mask(image).dataobj) > 0
        mask = np.asarray(ndimage.binary_fill_holes(mask), bool)
        if mask.any():
            return mask, "nilearn-epi-mask"
    return brain_mask_from(images), "signal"


def brain_mask_from(images: dict[str, FloatArray]) -> npt.NDArray[np.bool_]:
    """A brain mask when the input has none: voxels with signal in any modality."""
    masks = [np.abs(v) > 1e-6 for v in images.values()]
    out = masks[0]
    for m in masks[1:]:
        out = out | m
    return out


def normalize(
    images: dict[str, FloatArray],
    mask: npt.NDArray[np.bool_],
    norm: Normalization,
    absent: Collection[str] = (),
) -> FloatArray:
    """Stack the model's input channels (:attr:`Normalization.channels`) into a
    (C, I, J, K) float32 array, filled in place (no float64 or per-channel
    copies); the channels of ``absent`` modalities (a model's optional
    modalities that a subject lacks) are zeros, as in modality dropout."""
    out = np.zeros((len(norm.channels), *mask.shape), np.float32)
    c = 0
    for modality in norm.modalities:
        if modality in absent:
            c += len(norm.channel_indices(modality))
            continue
        x = images[modality]
        if modality == "qsm":
            q = np.divide(x, np.float32(norm.qsm_scale_ppm), dtype=np.float32)
            q[~mask] = 0.0
            np.maximum(q, 0.0, out=out[c])
            np.negative(q, out=q)
            np.maximum(q, 0.0, out=out[c + 1])
            del q
            c += 2
        else:
            inside = x[mask] if mask.any() else x.ravel()
            med = float(np.median(inside))
            q1, q3 = np.percentile(inside, [25, 75])
            del inside
            iqr = max(float(q3 - q1), 1e-6 * max(abs(med), 1.0))
            np.subtract(x, np.float32(med), out=out[c], dtype=np.float32)
            out[c] /= np.float32(iqr)
            out[c][~mask] = 0.0
            c += 1
    return out


def brain_box(mask: npt.NDArray[np.bool_], margin: int) -> tuple[slice, ...]:
    """Bounding box of the brain plus ``margin`` voxels (crop to the brain)."""
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    idx = np.nonzero(mask)
    return tuple(
        slice(max(0, int(i.min()) - margin), min(n, int(i.max()) + margin + 1))
        for i, n in zip(idx, mask.shape, strict=True)
    )
