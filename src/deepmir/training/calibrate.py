"""``deepmir calibrate``: fit a saved model's lesion-probability calibration
on annotated subjects it was not trained on (:mod:`deepmir.inference.calibration`).

The subjects are predicted as ``deepmir predict`` predicts them, by its own
steps (:func:`~deepmir.inference.predict.working_input`: crop, working
grid, normalization; :func:`~deepmir.inference.predict.working_lesions`:
sliding-window probabilities, the model's stored post-processing, the
lesions back on the input grid), every predicted lesion is matched to the
reference on the input grid, as ``deepmir evaluate`` matches predict's
outputs, and one monotone map per class is fitted, its method chosen by cross-validation by subject
(:func:`~deepmir.inference.calibration.fit_selected`). The ECE of the
calibrated probabilities on the lesions the map was fitted on is
optimistic, so with ``holdout_fraction`` > 0 the subjects are first split
(seeded, by subject): a map fitted on one part, its methods chosen on that
part alone, is scored on the other; the stored map is then refitted on
every subject. The config.json is rewritten with the map; the weights, and
their sha256, are unchanged.

Calibration under drift (``perturb`` > 0): a map fitted on subjects of the
training distribution is too confident where the images differ, since more of
a score's lesions are false there. Following Tomani et al. (CVPR 2021,
"Post-hoc uncertainty calibration for domain drift scenarios"), each subject
is then also predicted ``perturb`` times with generic corruptions of random
strength (:data:`PERTURBATIONS`: blur, noise, a QSM scale error; none of
them one of the robustness benchmark's held-out factors), and every map is
fitted on its clean and perturbed lesions together (still cross-validated by
subject). The draws are seeded by ``seed``, the subject and the copy. The
reported errors (in sample, held out) are on the clean lesions.
"""

from __future__ import annotations

import functools
import itertools
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm

from deepmir.inference.calibration import (
    MIN_ISOTONIC,
    SELECTION_FOLDS,
    SELECTION_MARGIN,
    Calibration,
    ClassCalibration,
    LesionOutcomes,
    calibration_errors,
    fit_selected,
    inputs_key,
    lesion_outcomes,
    reliability_figure,
)
from deepmir.inference.lesions import Lesions, lesions_from_probabilities, voxel_spacing
from deepmir.inference.predict import WorkingInput, working_input, working_lesions
from deepmir.inference.sliding import predict_probabilities
from deepmir.io.atomic import write_json
from deepmir.io.loader import SubjectDataError
from deepmir.model.checkpoint import ModelCard, load_model, save_model
from deepmir.training.data import (
    CROP_MARGIN,
    REFERENCE,
    TrainingSubject,
    folder_record,
    gre_derived,
    iter_pooled,
    iter_references,
    prepare,
    read_reference,
)

#: generic corruptions of the normalized input for calibration under drift, each
#: strength drawn uniformly per perturbed copy (the QSM scale log-uniformly):
#: isotropic Gaussian blur (sigma in working voxels) of every channel, then
#: Gaussian noise (sd in normalized units: median / IQR for SWI and T2w) on SWI
#: and T2w, and the QSM channels multiplied by one factor (pipelines disagree by
#: 10-30 %)
PERTURBATIONS: dict[str, tuple[float, float]] = {
    "blur_sigma_voxels": (0.0, 1.0),
    "noise_sd": (0.0, 0.25),
    "qsm_scale": (0.75, 1.33),
}

#: where calibrate judges the lesions (:func:`scored_subjects`)
GRID_NOTES = {
    "input": "input grid: each subject predicted by predict's own steps (crop, working "
    "grid, network, post-processing, lesions back on the input grid), matched to the "
    "reference on the input grid",
    "working": "working grid: each subject resampled whole to the working grid, cropped, "
    "predicted and matched to the reference resampled to it (calibrations before 0.10.2)",
}
GRIDS = tuple(GRID_NOTES)

METHODS_NOTE = (
    "per class: the raw lesion score, a Platt fit shrunk towards it, or (with >= "
    f"{MIN_ISOTONIC} lesions) isotonic regression of 'is a true positive of its class' on "
    f"it, whichever has the lowest out-of-fold log loss in {SELECTION_FOLDS}-fold "
    f"cross-validation by subject (a more flexible one must gain > {SELECTION_MARGIN}), "
    "refitted on every subject"
)


@dataclass
class CalibrationReport:
    calibration: Calibration
    #: per class, on every subject (the map was fitted on them: optimistic)
    in_sample: dict[str, dict[str, Any]]
    #: per class, on the held-out subjects with a map fitted on the others (None: no hold-out)
    held_out: dict[str, dict[str, Any]] | None
    fit_subjects: list[str]
    held_out_subjects: list[str]
    #: per served input subset (inputs_key): {"in_sample": ..., "held_out": ...} as above
    subsets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "in_sample": self.in_sample,
            "held_out": self.held_out,
            "held_out_fit_subjects": self.fit_subjects,
            "held_out_subjects": self.held_out_subjects,
            **({"subsets": self.subsets} if self.subsets else {}),
            "calibration": self.calibration.to_dict(),
        }


def served_subsets(card: ModelCard) -> list[tuple[str, ...]]:
    """The model's input subsets other than the full one: every non-empty
    combination of its optional modalities left out, as ``absent`` tuples
    (fewest absent first)."""
    optional = [m for m in card.modalities if m in card.optional_modalities]
    return [
        absent
        for k in range(1, len(optional) + 1)
        for absent in itertools.combinations(optional, k)
        if any(m not in absent for m in card.modalities)
    ]


def without(
    image: npt.NDArray[np.float32], absent: Sequence[str], card: ModelCard
) -> npt.NDArray[np.float32]:
    """A normalized network input as predict feeds it when ``absent`` modalities
    are missing: their channels zero (:func:`deepmir.model.preprocess.normalize`)."""
    if not absent:
        return image
    image = image.copy()
    for modality in absent:
        image[list(card.normalization.channel_indices(modality))] = 0.0
    return image


def perturbed(
    image: npt.NDArray[np.float32], card: ModelCard, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float32], dict[str, float]]:
    """A normalized network input (the brain crop) with one random draw of
    :data:`PERTURBATIONS` applied; the strengths drawn."""
    from scipy import ndimage

    lo, hi = PERTURBATIONS["blur_sigma_voxels"]
    sigma = float(rng.uniform(lo, hi))
    lo, hi = PERTURBATIONS["noise_sd"]
    noise = float(rng.uniform(lo, hi))
    lo, hi = PERTURBATIONS["qsm_scale"]
    scale = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    image = image.copy()
    if sigma > 0:
        for c in range(image.shape[0]):
            image[c] = ndimage.gaussian_filter(image[c], sigma, mode="nearest")
    norm = card.normalization
    for modality in ("swi", "t2w"):
        for c in norm.channel_indices(modality):
            image[c] += rng.normal(0.0, noise, image[c].shape).astype(np.float32)
    for c in norm.channel_indices("qsm"):
        image[c] *= np.float32(scale)
    draw = {"blur_sigma_voxels": sigma, "noise_sd": noise, "qsm_scale": scale}
    return image, draw


def input_outcomes(
    net: torch.nn.Module,
    image: npt.NDArray[np.float32],
    own_swi: bool = False,
    *,
    inp: WorkingInput,
    card: ModelCard,
    reference: tuple[npt.NDArray[np.uint8], npt.NDArray[np.int16]],
) -> LesionOutcomes:
    """The outcomes of the lesions predict outputs for ``image`` (the subject's
    network input or a variant of it), on the input grid, against the
    reference labels (dseg, instances) on that grid. ``own_swi``: the
    SWI-structure limit measures the image's own normalized SWI channel (a
    perturbed copy's SWI differs from predict's; the limit is the same up to
    the normalization's positive affine map, which its robust local
    statistics ignore), else predict's resampled SWI. SWI is never left out
    (modality dropout never drops it)."""
    probabilities = predict_probabilities(net, image, card.patch_size)
    channel = card.normalization.channel_indices("swi")
    swi = image[channel[0]] if own_swi and channel else None
    back = working_lesions(probabilities, inp, card.post, swi)[0]
    return outcomes_on_input_grid(back, inp, reference)


def outcomes_on_input_grid(
    back: Lesions,
    inp: WorkingInput,
    reference: tuple[npt.NDArray[np.uint8], npt.NDArray[np.int16]],
) -> LesionOutcomes:
    """The outcomes of lesions on the input-grid crop (:func:`working_lesions`)
    against the reference labels (dseg, instances) on the whole input grid."""
    subject = inp.subject
    on_grid = Lesions(
        dseg=subject.uncrop(back.dseg),
        instances=subject.uncrop(back.instances),
        labels=back.labels,
        probability=back.probability,
    )
    dseg, instances = reference
    return lesion_outcomes(on_grid, dseg, instances if instances.any() else None, subject.affine)


def working_outcomes(
    net: torch.nn.Module,
    image: npt.NDArray[np.float32],
    own_swi: bool = True,
    *,
    subject: TrainingSubject,
    card: ModelCard,
) -> LesionOutcomes:
    """``grid="working"`` (the calibration of models before 0.10.2): the
    lesions of ``image`` (the prepared subject's, or a variant) found and
    matched on the working grid, against the reference resampled to it; the
    SWI-structure limit always measures the image's normalized SWI channel
    (``own_swi`` is ignored)."""
    probabilities = predict_probabilities(net, image, card.patch_size)
    spacing = voxel_spacing(subject.affine)
    channel = card.normalization.channel_indices("swi")
    swi = image[channel[0]] if channel else None
    lesions = lesions_from_probabilities(probabilities, card.post, spacing, subject.brain, swi)
    instances = subject.instances if subject.instances.any() else None
    return lesion_outcomes(lesions, subject.dseg, instances, subject.affine)


def scored_subjects(
    net: torch.nn.Module,
    card: ModelCard,
    data: str | Path | Sequence[str | Path],
    grid: str = "input",
) -> Iterator[
    tuple[str, npt.NDArray[np.float32], Callable[[npt.NDArray[np.float32], bool], LesionOutcomes]]
]:
    """Per calibration subject, one at a time: its name, its normalized network
    input, and the function that gives the outcomes of the lesions of that
    input or of a variant of it (a modality zeroed, a perturbation), called
    with ``own_swi`` True for a perturbed copy (:func:`input_outcomes`).

    ``grid="input"``: predict's own steps, lesions judged on the input grid
    (:func:`input_outcomes`); ``"working"``: the prepared training subject on
    the working grid (:func:`working_outcomes`), kept to reproduce the
    calibrations fitted before 0.10.2."""
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {', '.join(GRIDS)}, got {grid!r}")
    if grid == "working":
        for raw in iter_pooled(data, card.modalities, card.working_spacing_mm, CROP_MARGIN):
            subject = prepare(raw, card.normalization, CROP_MARGIN)
            yield (
                str(raw.ref),
                subject.image,
                functools.partial(working_outcomes, net, subject=subject, card=card),
            )
        return
    for folder, ref in iter_references(data):
        name = str(ref)
        reference = read_reference(folder / REFERENCE, ref)
        with gre_derived(folder, ref, card.modalities) as derived:
            inp, image = working_input(folder, derived, card)
        lacking = [m for m in card.modalities if m not in inp.present]
        if lacking:
            raise SubjectDataError(
                ref.modality_path(folder, lacking[0]),
                f"calibration needs every input of the model; {name} lacks {', '.join(lacking)}",
            )
        yield (
            name,
            image,
            functools.partial(input_outcomes, net, inp=inp, card=card, reference=reference),
        )
        del inp, image, reference  # one subject in memory at a time


def split_holdout(names: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(fit, held out) subject names; no hold-out with a fraction of 0 or one subject."""
    if fraction <= 0 or len(names) < 2:
        return list(names), []
    n_held = min(max(int(round(fraction * len(names))), 1), len(names) - 1)
    order = np.random.default_rng(seed).permutation(len(names))
    held = sorted(names[i] for i in order[:n_held])
    return [n for n in names if n not in held], held


def calibrate_model(
    model_dir: str | Path,
    data: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    holdout_fraction: float = 0.5,
    seed: int = 0,
    subsets: bool = True,
    perturb: int = 0,
    grid: str = "input",
) -> CalibrationReport:
    """Fit, store in the model's config.json, and (with ``out``) write
    ``calibration.json`` and ``reliability.png`` (plus ``reliability_held_out.png``).

    ``subsets``: also fit the maps of every served input subset
    (:func:`served_subsets`; each subject is then predicted once per subset).
    ``perturb``: perturbed copies of each subject added to the fit (module
    docstring: calibration under drift); each is predicted once per subset too.
    ``grid``: where the lesions are judged (:func:`scored_subjects`)."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"--holdout-fraction must be in [0, 1), got {holdout_fraction}")
    if perturb < 0:
        raise ValueError(f"--perturb must be 0 or more, got {perturb}")
    net, card = load_model(model_dir)
    variants: list[tuple[str, ...]] = [(), *(served_subsets(card) if subsets else [])]
    outcomes: dict[tuple[str, ...], dict[str, LesionOutcomes]] = {v: {} for v in variants}
    clean: dict[tuple[str, ...], dict[str, LesionOutcomes]] = {v: {} for v in variants}
    bar = tqdm(
        scored_subjects(net, card, data, grid), desc="calibrate", unit="subject", disable=None
    )
    draws: dict[str, list[dict[str, float]]] = {}
    for name, image, score in bar:  # one subject in memory at a time
        copies = [image]
        for k in range(perturb):
            rng = np.random.default_rng([seed, zlib.crc32(name.encode()), k])
            copy, draw = perturbed(image, card, rng)
            copies.append(copy)
            draws.setdefault(name, []).append(draw)
        for absent in variants:
            parts = [score(without(c, absent, card), k > 0) for k, c in enumerate(copies)]
            clean[absent][name] = parts[0]
            outcomes[absent][name] = LesionOutcomes.concatenate(parts)
        del copies, image, score
    bar.close()
    names = list(outcomes[()])
    fit_names, held_names = split_holdout(names, holdout_fraction, seed)

    def pooled(variant: tuple[str, ...], selected: list[str]) -> LesionOutcomes:
        """The clean lesions (what the reported errors are measured on)."""
        return LesionOutcomes.concatenate([clean[variant][n] for n in selected])

    def fitted(
        variant: tuple[str, ...],
    ) -> tuple[Calibration, Calibration | None, dict[str, dict[str, Any]] | None]:
        """Maps fitted on every subject; on the fit part; their held-out errors."""
        held_fit = held_out = None
        if held_names:  # the whole procedure, selection included, on the fit part only
            held_fit = fit_selected([outcomes[variant][n] for n in fit_names], seed=seed)
            held_out = calibration_errors(pooled(variant, held_names), held_fit)
        every = fit_selected([outcomes[variant][n] for n in names], seed=seed)
        return every, held_fit, held_out

    full, held_fit, held_out = fitted(())
    subset_report: dict[str, dict[str, Any]] = {}
    subset_maps: dict[str, dict[int, ClassCalibration]] = {}
    for absent in variants[1:]:
        key = inputs_key(m for m in card.modalities if m not in absent)
        every, _, subset_held = fitted(absent)
        subset_maps[key] = every.classes
        subset_report[key] = {
            "absent": list(absent),
            "in_sample": calibration_errors(pooled(absent, names), every),
            "held_out": subset_held,
        }
    info: dict[str, Any] = {
        "methods": METHODS_NOTE,
        "data": folder_record(data),
        "subjects": names,
        "post_processing": card.post.to_dict(),
        "grid": GRID_NOTES[grid],
    }
    if perturb:
        info["perturbations"] = {
            "copies_per_subject": perturb,
            "seed": seed,
            "ranges": {k: list(v) for k, v in PERTURBATIONS.items()},
            "note": "each subject's lesions, clean and in perturbed copies, pooled for "
            "the fit (calibration under drift, Tomani et al. 2021)",
            "draws": draws,
        }
    info["held_out"] = (
        None
        if held_out is None
        else {
            "fit_subjects": fit_names,
            "subjects": held_names,
            "classes": held_out,
            **(
                {"subsets": {k: v["held_out"] for k, v in subset_report.items()}}
                if subset_report
                else {}
            ),
        }
    )
    if subset_maps:
        info["subsets_note"] = (
            "subsets: the maps of inputs lacking optional modalities (key: the modalities "
            "present), fitted on the same subjects predicted with the absent modalities' "
            "channels zero, as predict feeds them"
        )
    calibration = Calibration(full.classes, info, subset_maps)
    card.calibration = calibration
    save_model(model_dir, net, card)
    report = CalibrationReport(
        calibration=calibration,
        in_sample=calibration_errors(pooled((), names), calibration),
        held_out=held_out,
        fit_subjects=fit_names if held_names else [],
        held_out_subjects=held_names,
        subsets=subset_report,
    )
    if out is not None:
        from deepmir.evaluation.plots import save_png

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "calibration.json", report.to_dict())
        save_png(
            reliability_figure(
                pooled((), names),
                calibration,
                f"Lesion probability reliability, {len(names)} subjects "
                "(calibrated: fitted on these lesions, optimistic)",
            ),
            out / "reliability.png",
        )
        if held_names:
            save_png(
                reliability_figure(
                    pooled((), held_names),
                    held_fit,
                    f"Held-out subjects ({len(held_names)}), map fitted on the other "
                    f"{len(fit_names)}",
                ),
                out / "reliability_held_out.png",
            )
    return report
