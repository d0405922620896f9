"""The report's pictures: small PNG tiles (base64) and where things lie on them.

Volumes are in RAS voxel order (:mod:`deepmir.report.data`). Pictures follow
the neurological convention: the subject's right on the right; anterior
(axial) or superior (coronal, sagittal) up; sagittal: anterior on the right.
Tiles are grayscale at one pixel per voxel; the page scales them to their
size in millimetres (anisotropic voxels keep their true shape) and draws the
markers, orientation letters and scale bar over them (SVG), so a marked tile
and its plain twin share one image.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy.ndimage import binary_erosion

#: display window of QSM, ppm (paramagnetic bright, diamagnetic dark)
QSM_WINDOW_PPM = (-0.15, 0.25)
#: lesion tiles cover this many mm either side of the lesion's centre
HALF_FIELD_MM = 16.0
#: thickness of the SWI minimum-intensity projection slab (mm)
MINIP_SLAB_MM = 10.0
#: slices in the whole-brain mosaic
MOSAIC_SLICES = 12
#: marker colours per class label (CSS)
COLOURS = {1: "#ff2828", 2: "#ffa000", 3: "#3c8cff"}
#: the brain mask's outline on the mosaic (palette index 255)
MASK_COLOUR = (0, 230, 120)

#: per plane: (fixed axis, column axis, row axis), rows from the top (high index) down
PLANES: dict[str, tuple[int, int, int]] = {
    "axial": (2, 0, 1),
    "coronal": (1, 0, 2),
    "sagittal": (0, 1, 2),
}
#: per plane: the letters at the (left, right, top, bottom) edges
LETTERS: dict[str, tuple[str, str, str, str]] = {
    "axial": ("L", "R", "A", "P"),
    "coronal": ("L", "R", "S", "I"),
    "sagittal": ("P", "A", "S", "I"),
}

FloatArray = npt.NDArray[np.float32]


def window(volume: FloatArray, mask: npt.NDArray[np.bool_]) -> tuple[float, float]:
    """1st-99th percentile inside the brain (arbitrary-unit images)."""
    inside = volume[mask] if mask.any() else volume.ravel()
    low, high = np.percentile(inside, [1, 99])
    return float(low), float(max(high, low + 1e-6))


def display_window(
    modality: str, volume: FloatArray, mask: npt.NDArray[np.bool_]
) -> tuple[float, float]:
    return QSM_WINDOW_PPM if modality == "qsm" else window(volume, mask)


def png(picture: npt.NDArray[np.uint8], palette: list[int] | None = None) -> str:
    """Base64 PNG of a 2D uint8 picture (grayscale, or palette indices)."""
    image = Image.fromarray(np.ascontiguousarray(picture), mode="L")
    if palette is not None:
        image = image.convert("P")
        image.putpalette(palette)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=9)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def to_picture(section: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A (column axis, row axis) section -> picture rows, top row first."""
    return np.ascontiguousarray(np.flipud(np.asarray(section).T))


def grey(values: FloatArray, display: tuple[float, float], top: int = 255) -> npt.NDArray[np.uint8]:
    scaled = np.clip((values - display[0]) / (display[1] - display[0]), 0, 1) * top
    return np.nan_to_num(scaled, nan=0).astype(np.uint8)


@dataclass(frozen=True)
class Window3D:
    """A box of voxels around a centre: ``lo`` (first voxel) and ``size`` per axis."""

    lo: tuple[int, int, int]
    size: tuple[int, int, int]

    @staticmethod
    def around(centre: tuple[int, int, int], spacing: tuple[float, float, float]) -> Window3D:
        half = [max(2, int(round(HALF_FIELD_MM / s))) for s in spacing]
        return Window3D(
            (centre[0] - half[0], centre[1] - half[1], centre[2] - half[2]),
            (2 * half[0] + 1, 2 * half[1] + 1, 2 * half[2] + 1),
        )

    def cut(self, volume: FloatArray) -> FloatArray:
        """The box (NaN beyond the volume's edge)."""
        out = np.full(self.size, np.nan, np.float32)
        src, dst = [], []
        for lo, n, dim in zip(self.lo, self.size, volume.shape, strict=True):
            a, b = max(lo, 0), min(lo + n, dim)
            if b <= a:
                return out
            src.append(slice(a, b))
            dst.append(slice(a - lo, b - lo))
        out[tuple(dst)] = volume[tuple(src)]
        return out


def plane_geometry(
    plane: str, box: Window3D, centroid: tuple[float, float, float], spacing: tuple[float, ...]
) -> dict[str, Any]:
    """Size (mm) of a plane's tile, the lesion's position on it (mm from the top
    left), and what a click at (u, v) (fractions of width and height) means:
    the RAS voxel ``origin + u * du + v * dv`` (floored)."""
    fixed, col, row = PLANES[plane]
    width, height = box.size[col] * spacing[col], box.size[row] * spacing[row]
    x = (centroid[col] - box.lo[col] + 0.5) * spacing[col]
    y = (box.lo[row] + box.size[row] - 0.5 - centroid[row]) * spacing[row]
    origin = [0.0, 0.0, 0.0]
    du, dv = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    origin[fixed] = round(centroid[fixed])
    origin[col] = box.lo[col]
    origin[row] = box.lo[row] + box.size[row] - 1  # the top row; v runs downwards
    du[col] = box.size[col]
    dv[row] = -box.size[row]
    return {
        "w": round(width, 2),
        "h": round(height, 2),
        "x": round(x, 2),
        "y": round(y, 2),
        "letters": LETTERS[plane],
        "origin": origin,
        "du": du,
        "dv": dv,
    }


def lesion_tiles(
    images: dict[str, FloatArray],
    displays: dict[str, tuple[float, float]],
    centroid: tuple[float, float, float],
    spacing: tuple[float, float, float],
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, Any]]]:
    """Per modality and plane a tile through the lesion's centroid (the voxel
    nearest it), plus ``minip``: the SWI minimum-intensity projection over a
    slab of :data:`MINIP_SLAB_MM` (axial), when there is an SWI; and each
    plane's geometry (:func:`plane_geometry`)."""
    centre = (int(round(centroid[0])), int(round(centroid[1])), int(round(centroid[2])))
    box = Window3D.around(centre, spacing)
    tiles: dict[str, dict[str, str]] = {}
    rel = [c - lo for c, lo in zip(centre, box.lo, strict=True)]
    for modality, volume in images.items():
        cube = box.cut(volume)
        tiles[modality] = {
            plane: png(grey(to_picture(np.take(cube, rel[fixed], axis=fixed)), displays[modality]))
            for plane, (fixed, _, _) in PLANES.items()
        }
    geometry = {p: plane_geometry(p, box, centroid, spacing) for p in PLANES}
    if "swi" in images:
        half = max(0, int(round(MINIP_SLAB_MM / spacing[2] / 2)) - 0)
        slab = Window3D(
            (box.lo[0], box.lo[1], centre[2] - half), (box.size[0], box.size[1], 2 * half + 1)
        ).cut(images["swi"])
        with np.errstate(all="ignore"):
            projected = np.nanmin(np.where(np.isnan(slab), np.inf, slab), axis=2)
        projected[np.isinf(projected)] = np.nan
        tiles["swi"]["minip"] = png(grey(to_picture(projected), displays["swi"]))
        geometry["minip"] = {
            **geometry["axial"],
            "slab_mm": round((2 * half + 1) * spacing[2], 1),
        }
    return tiles, geometry


def mask_outline(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The mask's inner edge, slice by slice (axial)."""
    eroded = binary_erosion(
        mask, structure=np.array([[[0], [1], [0]], [[1], [1], [1]], [[0], [1], [0]]])
    )
    return mask & ~eroded


def mosaic(
    volume: FloatArray,
    display: tuple[float, float],
    mask: npt.NDArray[np.bool_],
    spacing: tuple[float, float, float],
    lesions: list[tuple[int, int, tuple[float, float, float]]],
    n: int = MOSAIC_SLICES,
) -> list[dict[str, Any]]:
    """Axial slices evenly spread over the brain, the mask's outline drawn in
    (palette colour :data:`MASK_COLOUR`); each lesion ``(id, label, RAS voxel
    centroid)`` is listed on the slice nearest its centroid, with its position
    (mm from the top left) and its distance from that slice (mm)."""
    ks = np.flatnonzero(mask.any(axis=(0, 1)))
    if ks.size == 0:
        ks = np.arange(mask.shape[2])
    # evenly spread inside the brain's extent (its first and last slices are mostly empty)
    spread = np.linspace(ks[0], ks[-1], n + 2)[1:-1] if ks.size > n + 2 else ks
    chosen = np.unique(np.round(spread).astype(int))
    outline = mask_outline(mask)
    palette = [v for g in range(255) for v in (g, g, g)] + list(MASK_COLOUR)
    width, height = volume.shape[0] * spacing[0], volume.shape[1] * spacing[1]
    slices = []
    for k in chosen:
        picture = grey(volume[:, :, k], display, top=254)
        picture[outline[:, :, k]] = 255
        slices.append(
            {
                "k": int(k),
                "z_mm": round(float(k * spacing[2]), 1),
                "png": png(to_picture(picture), palette),
                "w": round(width, 2),
                "h": round(height, 2),
                "origin": [0.0, float(volume.shape[1] - 1), float(k)],
                "du": [float(volume.shape[0]), 0.0, 0.0],
                "dv": [0.0, -float(volume.shape[1]), 0.0],
                "markers": [],
            }
        )
    for lesion_id, label, c in lesions:
        nearest = int(np.argmin(np.abs(chosen - c[2])))
        slices[nearest]["markers"].append(
            {
                "id": lesion_id,
                "label": label,
                "x": round((c[0] + 0.5) * spacing[0], 2),
                "y": round((volume.shape[1] - 0.5 - c[1]) * spacing[1], 2),
                "off_mm": round(abs(float(chosen[nearest]) - c[2]) * spacing[2], 1),
            }
        )
    return slices


def projections(
    mask: npt.NDArray[np.bool_], spacing: tuple[float, float, float]
) -> dict[str, dict[str, Any]]:
    """The brain mask projected along each axis (a silhouette to place lesions
    on: the glass brain), per plane, with its size in mm."""
    out = {}
    for plane, (fixed, col, row) in PLANES.items():
        silhouette = np.asarray(mask.any(axis=fixed))  # (column axis, row axis): col < row always
        picture = np.where(to_picture(silhouette), 70, 20).astype(np.uint8)
        out[plane] = {
            "png": png(picture),
            "w": round(mask.shape[col] * spacing[col], 2),
            "h": round(mask.shape[row] * spacing[row], 2),
            "letters": LETTERS[plane],
        }
    return out


def projected_position(
    plane: str,
    centroid: tuple[float, float, float],
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
) -> tuple[float, float]:
    """Where a RAS voxel centroid falls on a plane's projection (mm from the top left)."""
    _, col, row = PLANES[plane]
    return (
        round((centroid[col] + 0.5) * spacing[col], 2),
        round((shape[row] - 0.5 - centroid[row]) * spacing[row], 2),
    )
