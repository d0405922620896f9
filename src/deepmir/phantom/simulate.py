"""``deepmir simulate``: write a simulated BIDS cohort with reference annotations.

Layout and labels follow ``docs/data-contract.md`` exactly. For each
subject the full parameter record is written next to its reference labels
(``derivatives/reference/sub-<id>/anat/sub-<id>_desc-phantom_params.json``), so
that ``render_subject(SubjectParams.from_json(...))`` regenerates the images.
With ``raw_gre`` (``--raw-gre``) the raw GRE magnitude and phase per echo are
written too (:func:`write_raw_gre`), to test ``deepmir predict`` on raw GRE.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
from tqdm import tqdm

from deepmir import __version__
from deepmir.io.atomic import (
    OutputError,
    os_reason,
    prepare_output_dir,
    write_json,
    write_nifti,
    write_text,
)
from deepmir.io.bids import SubjectRef, simulation_record
from deepmir.io.bids_meta import (
    BIDS_VERSION,
    RAW_IGNORE,
    REFERENCE_CHI,
    REFERENCE_IGNORE,
    bids_uri,
    instances_lookup,
    lesions_dictionary,
    source_links,
    write_bidsignore,
    write_dictionary,
    write_readme,
)
from deepmir.labels import LABELS, LESION_CLASSES, dseg_tsv
from deepmir.phantom.anatomy import DeformationParams, Grid, SubjectAnatomy
from deepmir.phantom.params import SubjectParams, draw_subject_params
from deepmir.phantom.preview import write_preview
from deepmir.phantom.render import SubjectImages, render_subject, subject_anatomy

REFERENCE = Path("derivatives") / "reference"
LESION_COLUMNS = ["lesion_id", "label", "i", "j", "k", "x", "y", "z", "volume_mm3", "chi_ppm"]


@dataclass(frozen=True)
class SimulationConfig:
    """The one config object of ``deepmir simulate`` (saved with the output)."""

    out: Path
    n_subjects: int
    seed: int
    grid_size: str = "full"
    preview: bool = False
    first_index: int = 0
    #: "randomized" (domain randomization, the default) or "narrow" (v0.1 phantom)
    preset: str = "randomized"
    #: held-out factor for the robustness benchmark ("none": training distribution)
    shift: str = "none"
    #: replace a non-empty ``out`` that holds a deepmir phantom cohort (else refused,
    #: unless the run extends that cohort: same seed, preset, shift and size,
    #: subjects from ``first_index`` on not there yet)
    overwrite: bool = False
    #: also write the raw GRE magnitude and phase per echo (``--raw-gre``)
    raw_gre: bool = False

    def check(self) -> None:
        """Argument ranges (``ValueError``), before anything is written."""
        if self.n_subjects < 1:
            raise ValueError(f"--n must be at least 1, got {self.n_subjects}")
        if self.first_index < 0:
            raise ValueError(f"--first-index must be 0 or more, got {self.first_index}")
        if self.seed < 0:
            raise ValueError(f"--seed must be 0 or more, got {self.seed}")
        if self.grid_size not in ("full", "small"):
            raise ValueError(f"--size must be full or small, got {self.grid_size!r}")


def lesion_table(params: SubjectParams, images: SubjectImages) -> pd.DataFrame:
    """The contract's ``lesions.tsv`` for a rendered subject (plus simulator columns)."""
    rows = []
    voxel_volume = float(abs(np.linalg.det(images.affine[:3, :3])))
    for lesion in params.lesions:
        where = np.nonzero(images.instances == lesion.lesion_id)
        if where[0].size == 0:
            continue
        ijk = np.array([w.mean() for w in where])
        xyz = images.affine[:3, :3] @ ijk + images.affine[:3, 3]
        rows.append(
            {
                "lesion_id": lesion.lesion_id,
                "label": lesion.label,
                "i": round(float(ijk[0]), 2),
                "j": round(float(ijk[1]), 2),
                "k": round(float(ijk[2]), 2),
                "x": round(float(xyz[0]), 2),
                "y": round(float(xyz[1]), 2),
                "z": round(float(xyz[2]), 2),
                "volume_mm3": round(where[0].size * voxel_volume, 3),
                "chi_ppm": round(float(images.chi_true[where].mean()), 4),
                "region": lesion.region,
                "name": LABELS[lesion.label],
                "host": lesion.host,
                "delta_chi_ppm": round(lesion.delta_chi_ppm, 4),
                "swi_te_s": round(params.acquisition.swi_te_s, 5),
            }
        )
    return pd.DataFrame(rows, columns=lesion_columns())


def _sidecars(params: SubjectParams) -> dict[str, dict[str, object]]:
    a = params.acquisition
    common = {"MagneticFieldStrength": a.b0_tesla, "Manufacturer": f"deepmir {__version__} phantom"}
    var = params.variation
    echo_time: object = a.swi_te_s if var is None else list(var.echo_times_s)
    return {
        "swi": {
            **common,
            "EchoTime": echo_time,
            "RepetitionTime": a.swi_tr_s,
            "FlipAngle": a.swi_flip_deg,
        },
        "T2w": {**common, "EchoTime": a.t2w_te_s, "RepetitionTime": a.t2w_tr_s},
        "Chimap": {
            **common,
            "Units": "ppm",
            "EchoTime": a.swi_te_s,
            "QSMMethod": a.qsm_method,
            "QSMParameter": a.qsm_parameter,
            "B0Direction": [float(v) for v in _b0(params)],
        },
    }


def _reference_sidecars(root: Path, ref: SubjectRef) -> dict[str, dict[str, object]]:
    """The JSON sidecars of a subject's reference segmentations (BIDS URIs into the
    raw dataset; the instance segmentation gets its own lookup table,
    ``desc-instances_dseg.tsv``, and overrides every key of the class one's)."""
    reference = root / REFERENCE
    links = {"raw": root}
    params = ref.anat_dir(reference) / f"{ref.prefix}_desc-phantom_params.json"
    common = {
        "Sources": [bids_uri(params, reference, links)],
        "SpatialReference": bids_uri(ref.modality_path(root, "swi"), reference, links),
    }
    return {
        f"{ref.prefix}_dseg.json": {
            "Description": "reference lesion classes of the phantom (ground truth, drawn "
            "with the images from the parameter record): labels in dseg.tsv",
            **common,
        },
        f"{ref.prefix}_desc-instances_dseg.json": {
            "Description": "reference lesion instances: each voxel holds its lesion's "
            f"lesion_id in {ref.prefix}_lesions.tsv (0: none); the lookup table "
            f"{ref.prefix}_desc-instances_dseg.tsv names each lesion id's class, not the "
            "classes of dseg.tsv",
            **common,
        },
    }


def _b0(params: SubjectParams) -> tuple[float, float, float]:
    from deepmir.phantom.physics import b0_direction

    return b0_direction(params.acquisition.b0_tilt_deg, params.acquisition.b0_azimuth_deg)


def write_subject(
    root: Path, params: SubjectParams, images: SubjectImages, preview: bool = False
) -> pd.DataFrame:
    """Write one subject's raw images, sidecars, reference labels and table."""
    ref = SubjectRef(params.subject)
    aff = images.affine
    for modality, data in (("t2w", images.t2w), ("swi", images.swi), ("qsm", images.chimap)):
        path = ref.modality_path(root, modality)
        write_nifti(path, data, aff, np.float32)
    for suffix, sidecar in _sidecars(params).items():
        write_json(ref.anat_dir(root) / f"{ref.prefix}_{suffix}.json", sidecar)
    write_nifti(ref.mask_path(root), images.brain_mask, aff, np.uint8)
    if images.gre is not None:
        write_raw_gre(root, params, images.gre, aff)

    ref_dir = ref.anat_dir(root / REFERENCE)
    write_nifti(ref_dir / f"{ref.prefix}_dseg.nii.gz", images.dseg, aff, np.uint8)
    write_nifti(
        ref_dir / f"{ref.prefix}_desc-instances_dseg.nii.gz", images.instances, aff, np.int16
    )
    table = lesion_table(params, images)
    for name, sidecar in _reference_sidecars(root, ref).items():
        write_json(ref_dir / name, sidecar)
    write_text(
        ref_dir / f"{ref.prefix}_desc-instances_dseg.tsv",
        instances_lookup(dict(zip(table.lesion_id, table.label, strict=True))),
    )
    write_text(ref_dir / f"{ref.prefix}_lesions.tsv", table.to_csv(sep="\t", index=False))
    write_text(ref_dir / f"{ref.prefix}_desc-phantom_params.json", params.to_json())
    if preview:
        counts = ", ".join(f"{(table.label == k).sum()} {v}" for k, v in LESION_CLASSES.items())
        write_preview(
            ref_dir.parent / "figures" / f"{ref.prefix}_desc-preview.png",
            f"{ref.prefix}: {counts}; {len(params.veins)} veins (unlabelled); "
            f"TE {params.acquisition.swi_te_s * 1e3:.1f} ms, QSM {params.acquisition.qsm_method}",
            images.swi,
            images.chimap,
            images.t2w,
            images.dseg,
            images.brain_mask > 0,
            images.vein_occupancy,
        )
    return table


def echo_times(params: SubjectParams) -> tuple[float, ...]:
    """The subject's GRE echo times (s): the randomized variation's, else the one SWI echo."""
    var = params.variation
    return tuple(var.echo_times_s) if var is not None else (params.acquisition.swi_te_s,)


def receive_phase(shape: tuple[int, ...], seed: int) -> npt.NDArray[np.float32]:
    """A smooth receive-phase offset (rad), the same for every echo: a random
    constant plus linear and quadratic terms over the field of view (within
    about +-pi), as coil sensitivities and RF phase put into real phase images."""
    rng = np.random.default_rng(seed)
    coords = np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in shape[:3]), indexing="ij")
    offset = np.full(shape[:3], rng.uniform(-np.pi, np.pi), np.float32)
    for x in coords:
        offset += np.float32(rng.uniform(-1.0, 1.0)) * x + np.float32(rng.uniform(-0.5, 0.5)) * x**2
    return offset.astype(np.float32)


def raw_gre_path(root: Path, ref: SubjectRef, echo: int, part: str) -> Path:
    """``sub-<id>_echo-<n>_part-<mag|phase>_MEGRE.nii.gz`` in the subject's anat folder."""
    return ref.anat_dir(root) / f"{ref.prefix}_echo-{echo}_part-{part}_MEGRE.nii.gz"


def write_raw_gre(
    root: Path,
    params: SubjectParams,
    gre: npt.NDArray[np.complex64],
    affine: npt.NDArray[np.float64],
) -> None:
    """The raw multi-echo GRE, BIDS ``MEGRE``: per echo magnitude and wrapped phase
    (rad, deepmir's sign: paramagnetic positive) with a smooth receive-phase
    offset (:func:`receive_phase`), and their sidecars (EchoTime,
    MagneticFieldStrength, RepetitionTime, FlipAngle; Units for the phase)."""
    ref = SubjectRef(params.subject)
    a = params.acquisition
    var = params.variation
    b0 = var.b0_tesla if var is not None else a.b0_tesla
    offset = np.exp(1j * receive_phase(gre.shape, a.noise_seed + 7)).astype(np.complex64)
    common = {
        "MagneticFieldStrength": b0,
        "RepetitionTime": a.swi_tr_s,
        "FlipAngle": a.swi_flip_deg,
        "Manufacturer": f"deepmir {__version__} phantom",
        "MRAcquisitionType": "3D",
        # the head is tilted against B0 but the affine is axis-aligned: say where B0 is
        # (world axes = the render grid's, whose affine is diagonal)
        "B0Direction": [round(float(v), 6) for v in _b0(params)],
    }
    for n, te in enumerate(echo_times(params)):
        signal = gre[..., n] * offset
        for part, data, extra in (
            ("mag", np.abs(signal), {}),
            ("phase", np.angle(signal), {"Units": "rad"}),
        ):
            path = raw_gre_path(root, ref, n + 1, part)
            write_nifti(path, data.astype(np.float32), affine, np.float32)
            sidecar = {**common, "EchoTime": te, **extra}
            write_json(path.with_name(path.name.replace(".nii.gz", ".json")), sidecar)


def _subject_label(index: int, n_total: int) -> str:
    return f"{index + 1:0{max(2, len(str(n_total)))}d}"


def iter_simulated(config: SimulationConfig) -> Iterator[tuple[SubjectParams, SubjectImages]]:
    """Draw and render the subjects of a cohort, one at a time (for Python users)."""
    last = config.first_index + config.n_subjects
    for index in range(config.first_index, last):
        params, anatomy = draw_with_anatomy(
            config.seed,
            index,
            config.grid_size,
            _subject_label(index, last),
            preset=config.preset,
            shift=config.shift,
        )
        yield params, render_subject(params, anatomy, keep_gre=config.raw_gre)


def draw_with_anatomy(
    seed: int,
    index: int,
    grid_size: str,
    subject: str | None = None,
    preset: str = "narrow",
    shift: str = "none",
) -> tuple[SubjectParams, SubjectAnatomy]:
    """Draw a subject's record and keep the anatomy the draw computed, for rendering."""
    seen: list[SubjectAnatomy] = []

    def anatomy_of(grid: Grid, deformation: DeformationParams) -> SubjectAnatomy:
        seen.append(subject_anatomy(grid, deformation))
        return seen[-1]

    params = draw_subject_params(
        seed, index, anatomy_of, grid_size, subject=subject, preset=preset, shift=shift
    )
    return params, seen[-1]


def simulate_dataset(config: SimulationConfig, progress: bool = True) -> pd.DataFrame:
    """Simulate a cohort into ``config.out``; returns one row of counts per subject.

    ``config.out`` must be empty or new: a dataset is always one seed's subjects
    ``first_index .. first_index + n - 1``, described by its
    ``dataset_description.json``. With ``config.overwrite`` a folder holding a
    deepmir phantom cohort is emptied first; a run that continues the cohort
    there (same seed, preset, shift and size, ``first_index`` where it ends)
    adds its subjects; any other non-empty folder is refused.

    Raises
    ------
    ValueError
        an argument out of range; :class:`~deepmir.io.atomic.OutputError` (a
        ``ValueError``) for an output folder that is refused or not writable.
    """
    root, extended = prepare_folder(config)
    first_index, n_subjects = config.first_index, config.n_subjects
    if extended is not None:  # the cohort there continues: describe all its subjects
        first_index = int(extended["first_index"])  # type: ignore[call-overload]
        n_subjects = config.first_index + config.n_subjects - first_index
    write_json(
        root / "dataset_description.json",
        {
            "Name": "deepmir phantom cohort",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "GeneratedBy": [{"Name": "deepmir simulate", "Version": __version__}],
            "deepmir_simulation": {
                "seed": config.seed,
                "n_subjects": n_subjects,
                "grid_size": config.grid_size,
                "first_index": first_index,
                "preset": config.preset,
                "shift": config.shift,
                "raw_gre": config.raw_gre,
            },
        },
    )
    write_json(
        root / REFERENCE / "dataset_description.json",
        {
            "Name": "deepmir phantom reference annotations",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "deepmir simulate", "Version": __version__}],
            **source_links({"raw": root}, root / REFERENCE),
            "deepmir_simulation": {"seed": config.seed, "grid_size": config.grid_size},
        },
    )
    write_text(root / REFERENCE / "dseg.tsv", dseg_tsv())
    rows = []
    bar = tqdm(
        iter_simulated(config),
        total=config.n_subjects,
        desc="simulate",
        unit="subject",
        disable=not progress,
    )
    for params, images in bar:
        table = write_subject(root, params, images, preview=config.preview)
        row: dict[str, object] = {"participant_id": f"sub-{params.subject}"}
        for k, name in LESION_CLASSES.items():
            row[f"n_{name}"] = int((table.label == k).sum())
        row["n_veins"] = len(params.veins)
        row["swi_te_ms"] = round(params.acquisition.swi_te_s * 1e3, 2)
        row["qsm_method"] = params.acquisition.qsm_method
        var = params.variation
        if var is not None:
            row["b0_t"] = var.b0_tesla
            row["echoes"] = len(var.echo_times_s)
            row["voxel_mm"] = "x".join(f"{v:.2g}" for v in np.abs(np.diag(images.affine))[:3])
            row["swi"] = var.swi_variant
            row["qsm_bg"] = var.qsm_background
        rows.append(row)
    counts = pd.DataFrame(rows)
    acq_columns = [
        c
        for c in ("swi_te_ms", "qsm_method", "b0_t", "echoes", "voxel_mm", "swi", "qsm_bg")
        if c in counts.columns
    ]
    _merge_tsv(root / "participants.tsv", counts[["participant_id", *acq_columns]])
    _merge_tsv(root / REFERENCE / "lesion_counts.tsv", counts.drop(columns=acq_columns))
    write_metadata(root)
    return counts


def _extends(record: dict[str, object], config: SimulationConfig) -> bool:
    """Whether ``config`` adds subjects to the cohort ``record`` describes: same
    draw (seed, preset, shift, size), the same files (``raw_gre``), and its
    indices start where the cohort ends."""
    same = (
        record.get("seed") == config.seed
        and record.get("preset", "narrow") == config.preset
        and record.get("shift", "none") == config.shift
        and record.get("grid_size") == config.grid_size
        and record.get("raw_gre", False) == config.raw_gre
    )
    first = record.get("first_index", 0)
    n = record.get("n_subjects", 0)
    last = config.first_index + config.n_subjects
    return (
        same
        and isinstance(first, int)
        and isinstance(n, int)
        and config.first_index == first + n
        # the subject labels keep their width (sub-01 .. sub-99, then sub-100)
        and _subject_label(0, first + n) == _subject_label(0, last)
    )


def prepare_folder(config: SimulationConfig) -> tuple[Path, dict[str, object] | None]:
    """Check the arguments and make ``config.out`` ready, or refuse
    (``ValueError``, :class:`~deepmir.io.atomic.OutputError`).

    A new or empty folder is used as is. A folder that holds a phantom cohort
    is emptied with ``config.overwrite``, or extended when ``config`` continues
    it (same seed, preset, shift and size; ``--first-index`` where it ends):
    the cohort's record is returned then. Anything else is refused."""
    config.check()
    root = Path(config.out)
    if root.exists() and not root.is_dir():
        raise OutputError(root, "exists and is not a folder; choose a folder for the dataset")
    entries = sorted(root.iterdir()) if root.is_dir() else []
    record = simulation_record(root) if entries else None
    if entries and not config.overwrite:
        if record is not None and _extends(record, config):
            prepare_output_dir(root)
            return root, record
        names = ", ".join(e.name for e in entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputError(
            root,
            f"is not empty ({names}); simulate writes a whole new dataset (one seed, "
            "consistent participants.tsv and dataset_description.json): choose a new or "
            "empty folder, pass --overwrite to replace this one, or extend the cohort "
            "there with its seed, preset, shift and size and --first-index where it ends",
        )
    if entries:
        if record is None:
            raise OutputError(
                root,
                "is not empty and holds no deepmir phantom cohort (its "
                "dataset_description.json was not written by deepmir simulate); "
                "--overwrite only replaces a dataset written by deepmir simulate",
            )
        for entry in entries:
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except OSError as exc:
                raise OutputError(entry, f"cannot be removed: {os_reason(exc)}") from exc
    prepare_output_dir(root)
    return root, None


PARTICIPANT_COLUMNS: dict[str, dict[str, object]] = {
    "participant_id": {"Description": "the phantom subject"},
    "swi_te_ms": {"Description": "echo time of the SWI", "Units": "ms"},
    "qsm_method": {
        "Description": "dipole inversion of the QSM",
        "Levels": {"tkd": "truncated k-space division", "tikhonov": "Tikhonov-regularized"},
    },
    "b0_t": {"Description": "main field strength", "Units": "T"},
    "echoes": {"Description": "number of GRE echoes"},
    # not a number: no Units (the validator would then require numbers)
    "voxel_mm": {"Description": "voxel size in mm along the image axes, such as 0.7x0.7x1.6"},
    "swi": {
        "Description": "SWI processing",
        "Levels": {
            "3d": "3D homodyne high-pass phase mask",
            "2d": "slice-wise homodyne high-pass phase mask",
            "swan": "magnitude only (SWAN-like)",
        },
    },
    "qsm_bg": {
        "Description": "background-field removal of the QSM",
        "Levels": {
            "ideal": "exact, plus a smooth residual",
            "sharp": "SHARP",
            "vsharp": "V-SHARP",
        },
    },
}
COUNT_COLUMNS: dict[str, dict[str, object]] = {
    "participant_id": {"Description": "the phantom subject"},
    **{
        f"n_{name}": {"Description": f"number of {name} lesions"}
        for name in LESION_CLASSES.values()
    },
    "n_veins": {"Description": "number of veins (unlabelled mimics)"},
}
RAW_README = """
# deepmir phantom cohort

Simulated T2w, SWI and QSM (`Chimap`, ppm) of phantom subjects with cerebral
microbleeds, iron deposits and calcifications (labelled) and veins
(unlabelled mimics), written by `deepmir simulate` (see `GeneratedBy` and
`deepmir_simulation` in `dataset_description.json` for the version, seed and
options that regenerate it). `participants.tsv` lists each subject's
acquisition; the reference labels are the derivative dataset
`derivatives/reference`.

`.bidsignore` lists the files BIDS has no name for yet: the SWI
(`*_swi.nii.gz`; the `swi` suffix is proposed in bids-specification PR #2538)
and the brain masks (`*_desc-brain_mask.nii.gz`; `mask` is a derivatives-only
suffix). With `--raw-gre` the raw multi-echo GRE is `*_echo-<n>_part-mag|phase_MEGRE`.
"""
REFERENCE_README = """
# deepmir phantom reference annotations

Ground truth of the phantom cohort in `../..` (`DatasetLinks.raw`), written by
`deepmir simulate` with the images: per subject

- `sub-<id>_dseg.nii.gz`: lesion classes, labels in `dseg.tsv`
  (0 background, 1 cmb, 2 iron, 3 calcification);
- `sub-<id>_desc-instances_dseg.nii.gz`: lesion instances, each voxel holding its
  `lesion_id` (its own lookup table `sub-<id>_desc-instances_dseg.tsv` gives each
  lesion's class);
- `sub-<id>_lesions.tsv`: one row per lesion (columns described in `lesions.json`);
- `sub-<id>_desc-phantom_params.json`: the parameter record that regenerates the
  subject's images.

`lesion_counts.tsv` (described in `lesion_counts.json`) counts the lesions and
veins per subject. `.bidsignore` lists the files BIDS has no name for
(the lesion tables, parameter records, counts and preview figures).
"""


def write_metadata(root: Path) -> None:
    """README, data dictionaries and ``.bidsignore`` of the raw dataset and of its
    reference annotations (``deepmir.io.bids_meta``)."""
    reference = root / REFERENCE
    write_readme(root, RAW_README)
    header = (root / "participants.tsv").read_text(encoding="utf-8").split("\n", 1)[0]
    write_dictionary(
        root / "participants.json", {c: PARTICIPANT_COLUMNS[c] for c in header.split("\t")}
    )
    write_bidsignore(root, RAW_IGNORE)
    write_readme(reference, REFERENCE_README)
    write_dictionary(
        reference / "lesions.json",
        lesions_dictionary(lesion_columns(), {"chi_ppm": REFERENCE_CHI}),
    )
    write_dictionary(reference / "lesion_counts.json", COUNT_COLUMNS)
    write_bidsignore(reference, REFERENCE_IGNORE)


def lesion_columns() -> list[str]:
    """The columns of the reference's ``lesions.tsv``."""
    return [*LESION_COLUMNS, "region", "name", "host", "delta_chi_ppm", "swi_te_s"]


def _merge_tsv(path: Path, new: pd.DataFrame) -> None:
    """Add or replace rows by participant_id, keep the others (a run that
    extends a cohort adds its subjects)."""
    if path.exists():
        old = pd.read_csv(path, sep="\t", dtype={"participant_id": str})
        old = old[~old.participant_id.isin(new.participant_id)]
        new = pd.concat([old, new], ignore_index=True).sort_values("participant_id")
    write_text(path, new.to_csv(sep="\t", index=False))


def load_params(root: str | Path, subject: str) -> SubjectParams:
    """Read a subject's parameter record back from a simulated dataset."""
    ref = SubjectRef(subject)
    path = ref.anat_dir(Path(root) / REFERENCE) / f"{ref.prefix}_desc-phantom_params.json"
    return SubjectParams.from_json(path.read_text())
