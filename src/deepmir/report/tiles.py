"""Small image tiles around a lesion (PNG, base64) for the QC report.

Axial slices in RAS voxel order, anterior up, the subject's right on the
right (neurological convention); the lesion is outlined just outside its
voxels, in its class colour, so that the lesion itself stays visible.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy.ndimage import binary_dilation

#: outline colour per class label
COLOURS = {1: (255, 40, 40), 2: (255, 160, 0), 3: (60, 140, 255)}
#: display window per modality: (low, high) in ppm for QSM, percentiles otherwise
QSM_WINDOW_PPM = (-0.15, 0.25)


def window(volume: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_]) -> tuple[float, float]:
    """1st-99th percentile inside the brain (arbitrary-unit images)."""
    inside = volume[mask] if mask.any() else volume.ravel()
    low, high = np.percentile(inside, [1, 99])
    return float(low), float(max(high, low + 1e-6))


def tile_png(
    volume: npt.NDArray[np.float32],
    lesion: npt.NDArray[np.bool_],
    centre: tuple[int, int, int],
    display: tuple[float, float],
    colour: tuple[int, int, int],
    half: int = 16,
    zoom: int = 4,
) -> str:
    """Base64 PNG of the axial slice through ``centre``, ``2*half`` voxels wide."""
    i, j, k = centre
    lo = [max(0, i - half), max(0, j - half)]
    sl = (slice(lo[0], i + half), slice(lo[1], j + half), k)
    img = np.clip((volume[sl] - display[0]) / (display[1] - display[0]), 0, 1)
    rgb = np.repeat((img * 255).astype(np.uint8)[..., None], 3, axis=-1)
    m = lesion[sl]
    edge = binary_dilation(m) & ~m  # outline drawn around the lesion, which stays visible
    rgb[edge] = colour
    # array (i: left->right, j: posterior->anterior) -> picture rows anterior first
    picture = np.ascontiguousarray(np.flipud(rgb.transpose(1, 0, 2)))
    out = Image.fromarray(picture).resize(
        (picture.shape[1] * zoom, picture.shape[0] * zoom), Image.Resampling.NEAREST
    )
    buffer = io.BytesIO()
    out.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
