"""Preview PNG of a simulated subject: modalities and reference on lesion slices."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from deepmir.io.atomic import atomic_path  # noqa: E402
from deepmir.labels import LESION_CLASSES  # noqa: E402

#: colours of the contract labels in every deepmir figure
LABEL_COLOURS = {1: "#ff2d2d", 2: "#ffb000", 3: "#00c8ff"}


def _robust(img: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_]) -> tuple[float, float]:
    vals = img[mask] if mask.any() else img.ravel()
    return float(np.percentile(vals, 1)), float(np.percentile(vals, 99))


def preview_slices(
    dseg: npt.NDArray[np.uint8], vein: npt.NDArray[np.float32] | None
) -> list[tuple[str, int]]:
    """Axial slice (k) through the largest lesion of each class, and one through a vein."""
    out = []
    for label, name in LESION_CLASSES.items():
        ks = np.nonzero(dseg == label)[2]
        if ks.size:
            counts = np.bincount(ks)
            out.append((name, int(np.argmax(counts))))
    if vein is not None and (vein > 0.3).any():
        counts = np.bincount(np.nonzero(vein > 0.3)[2])
        out.append(("vein (unlabelled)", int(np.argmax(counts))))
    if not out:
        out.append(("no lesion", dseg.shape[2] // 2))
    return out


def write_preview(
    path: str | os.PathLike[str],
    title: str,
    swi: npt.NDArray[np.float32],
    chimap: npt.NDArray[np.float32],
    t2w: npt.NDArray[np.float32],
    dseg: npt.NDArray[np.uint8],
    brain_mask: npt.NDArray[np.bool_],
    vein: npt.NDArray[np.float32] | None = None,
) -> None:
    """Write a PNG: one column per class (slice through a lesion), rows SWI, QSM, T2w, labels."""
    slices = preview_slices(dseg, vein)
    rows = [("SWI", swi, "gray"), ("QSM (ppm)", chimap, "gray"), ("T2w", t2w, "gray")]
    fig, axes = plt.subplots(4, len(slices), figsize=(3.2 * len(slices), 12.4), squeeze=False)
    cmap = ListedColormap(["none", *(LABEL_COLOURS[k] for k in sorted(LABEL_COLOURS))])
    for c, (name, k) in enumerate(slices):
        for r, (row_name, img, cm) in enumerate(rows):
            lo, hi = _robust(img, brain_mask)
            if row_name.startswith("QSM"):
                lo, hi = -0.15, 0.25
            axes[r, c].imshow(np.rot90(img[:, :, k]), cmap=cm, vmin=lo, vmax=hi)
            axes[r, c].set_title(
                f"{row_name}, k={k}" if r else f"{name}: {row_name}, k={k}", fontsize=9
            )
        lo, hi = _robust(swi, brain_mask)
        axes[3, c].imshow(np.rot90(swi[:, :, k]), cmap="gray", vmin=lo, vmax=hi)
        lab = np.rot90(dseg[:, :, k]).astype(float)
        axes[3, c].imshow(
            np.ma.masked_equal(lab, 0), cmap=cmap, vmin=0, vmax=3, interpolation="nearest"
        )
        if vein is not None:
            axes[3, c].contour(np.rot90(vein[:, :, k]), levels=[0.3], colors="lime", linewidths=0.6)
        axes[3, c].set_title("reference (red cmb, orange iron,\nblue calc, green vein)", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
