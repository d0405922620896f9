"""What a subject's QC report shows, as plain data (numpy arrays, dicts, strings).

Predict fills it (:func:`deepmir.inference.reporting.report_data`); the report
package renders it and imports nothing of the inference. Volumes are the brain
crop in RAS voxel order (axis 0 towards the subject's right, 1 anterior, 2
superior), so the renderer needs no orientation logic of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from deepmir.labels import LESION_CLASSES

#: the modalities a report can show, in the order of its rows
MODALITIES = ("swi", "qsm", "t2w")
#: the ratings a rater downloads from a report (read back by
#: :mod:`deepmir.evaluation.ratings`): suffix and columns
RATINGS_SUFFIX = "_desc-rater_lesions.tsv"
RATINGS_COLUMNS = {
    "lesion_id": "the lesion's id in the subject's desc-deepmir_lesions.tsv; n/a for a lesion "
    "the rater added",
    "status": "confirmed (a real lesion), rejected (not a lesion), added (a lesion deepmir "
    "missed), or unrated",
    "label": "the class the rater gives it (1 cmb, 2 iron, 3 calcification; dseg.tsv)",
    "predicted_label": "the class deepmir gave it (n/a for an added lesion)",
    "i": "voxel index on the input grid (lesions.tsv i); for an added lesion the voxel clicked",
    "j": "voxel index on the input grid",
    "k": "voxel index on the input grid",
    "x": "scanner coordinate, mm",
    "y": "scanner coordinate, mm",
    "z": "scanner coordinate, mm",
    "rater": "the rater's name or initials as typed in the report",
}
#: a rating's status
STATUSES = ("confirmed", "rejected", "added", "unrated")


def ratings_dictionary() -> dict[str, Any]:
    """The JSON data dictionary of a ratings TSV (BIDS-style)."""
    out: dict[str, Any] = {c: {"Description": d} for c, d in RATINGS_COLUMNS.items()}
    out["status"]["Levels"] = {
        "confirmed": "a real lesion of the class in label",
        "rejected": "not a lesion (a false positive)",
        "added": "a lesion deepmir missed, at voxel i, j, k",
        "unrated": "not rated yet",
    }
    out["label"]["Levels"] = {str(k): v for k, v in LESION_CLASSES.items()}
    return out


@dataclass
class RunDetails:
    """How the predictions were made (shown in the report's run details)."""

    command: str
    model_name: str
    weights_sha256: str
    modalities: tuple[str, ...]
    #: the post-processing used (threshold, per-class minimum size, probability, elongation)
    post_processing: dict[str, Any]
    #: per class: the calibration method and its lesion count; empty: raw scores
    calibration: dict[str, str] = field(default_factory=dict)
    deepmir_version: str = ""
    date: str = ""
    #: the input files, relative to the dataset root
    sources: list[str] = field(default_factory=list)
    #: "file", or how predict derived the brain mask
    mask_method: str = "file"
    #: the voxel size (mm) the network ran at
    working_spacing_mm: float = 1.0


@dataclass
class SubjectReportData:
    """One subject's report.

    ``lesions``: the rows of the subject's lesions.tsv (``lesion_id``, ``label``,
    ``name``, ``i``/``j``/``k`` on the input grid, ``x``/``y``/``z`` scanner mm,
    ``volume_mm3``, ``probability``, ``chi_ppm``, and ``region``/``structure``
    when regions were computed); ``instances`` holds each lesion's voxels
    under its ``lesion_id``.
    """

    name: str
    #: modality -> crop volume (RAS voxel order), float32
    images: dict[str, npt.NDArray[np.float32]]
    brain_mask: npt.NDArray[np.bool_]
    instances: npt.NDArray[np.int32]
    #: RAS crop voxel -> scanner mm
    affine: npt.NDArray[np.float64]
    #: RAS crop voxel -> voxel of the input grid (the lesions.tsv i, j, k)
    to_input_voxel: npt.NDArray[np.float64]
    lesions: list[dict[str, Any]]
    run: RunDetails
    warnings: list[str] = field(default_factory=list)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along the RAS axes."""
        s = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return float(s[0]), float(s[1]), float(s[2])

    def check(self) -> None:
        """Raise ValueError when the arrays do not share one grid."""
        shape = self.brain_mask.shape
        for name, volume in [*self.images.items(), ("instances", self.instances)]:
            if volume.shape != shape:
                raise ValueError(f"report data: {name} has shape {volume.shape}, mask {shape}")
