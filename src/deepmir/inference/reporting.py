"""A subject's prediction as the QC report's plain data (:mod:`deepmir.report.data`).

The report package renders what this gives it and knows nothing of the
inference: volumes go over in RAS voxel order, with the matrices that take a
RAS crop voxel to the scanner (mm) and to the input grid (the lesions.tsv
i, j, k).
"""

from __future__ import annotations

import time

import numpy as np

from deepmir import __version__
from deepmir.inference.calibration import inputs_key
from deepmir.inference.lesions import PostProcessing
from deepmir.inference.predict import SubjectPrediction
from deepmir.labels import LESION_CLASSES
from deepmir.model.checkpoint import ModelCard
from deepmir.report.data import RunDetails, SubjectReportData


def report_data(
    prediction: SubjectPrediction, card: ModelCard, post: PostProcessing, command: str = ""
) -> SubjectReportData:
    """What the subject's report shows; ``post``: the post-processing used
    (the model's, or with predict's ``--threshold``)."""
    subject = prediction.subject
    orient = prediction.orientation
    crop_to_input = np.eye(4)
    crop_to_input[:3, 3] = subject.origin
    # RAS crop voxel -> crop voxel (the inverse of the reorientation) -> input voxel
    ras_to_crop = np.linalg.solve(subject.crop_affine, orient.ras_affine)
    used = prediction.calibration  # the maps of this subject's inputs
    inputs = inputs_key(m for m in card.modalities if m in subject.images)
    subset = card.calibration is not None and inputs in card.calibration.subsets
    fitted_on = f", fitted on {inputs} inputs" if subset else ""
    calibration = (
        {}
        if used is None
        else {
            LESION_CLASSES[k]: f"{c.method} ({c.n_lesions} lesions{fitted_on})"
            for k, c in sorted(used.classes.items())
        }
    )
    model = prediction.model
    run = RunDetails(
        command=command,
        model_name=str(model.get("Name", "")),
        weights_sha256=str(model.get("WeightsSha256", card.weights_sha256)),
        modalities=tuple(card.modalities),
        post_processing=post.to_dict(),
        calibration=calibration,
        deepmir_version=__version__,
        date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        sources=list(prediction.sources),
        mask_method=prediction.mask_method,
        working_spacing_mm=card.working_spacing_mm,
    )
    return SubjectReportData(
        name=str(prediction.ref),
        images={m: orient.forward(v) for m, v in subject.images.items()},
        brain_mask=orient.forward(prediction.brain_mask).astype(bool),
        instances=orient.forward(prediction.lesions.instances).astype(np.int32, copy=False),
        affine=orient.ras_affine,
        to_input_voxel=crop_to_input @ ras_to_crop,
        lesions=[dict(r) for r in prediction.table],
        run=run,
        warnings=list(prediction.warnings),
    )
