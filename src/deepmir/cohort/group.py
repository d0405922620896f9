"""Group level: the cohort census, index and dataset description, from disk.

Everything here is rebuilt from the subjects' outputs and provenance records
(:mod:`deepmir.cohort.provenance`) in one or more output folders, so the
subjects of an array job (one ``participant`` run per subject), of resumed
runs and of several output folders compose: the census of per-subject runs is
the census of one run.

Census columns (``group_census.tsv``, described in ``group_census.json``):
per subject the lesion counts per class, CMB counts per MARS region (Gregoire
et al., Neurology 2009: lobar, deep, infratentorial; ``n/a`` when the region
is unknown), the total iron load (the sum over iron lesions of the lesion's
mean chi times its volume, ppm x mm3: the lesions.tsv column
``chi_volume_ppm_mm3``), the CMB count category (0, 1, 2-4, >=5: the
categories of the Rotterdam Study, Akoudad et al., JAMA Neurology 2016), and
the model and deepmir version that made the outputs.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepmir import __version__
from deepmir.cohort import provenance
from deepmir.io.atomic import json_text, write_text
from deepmir.io.bids import SubjectRef
from deepmir.io.bids_meta import (
    BIDS_VERSION,
    DERIVATIVE_IGNORE,
    lesions_dictionary,
    source_links,
    write_bidsignore,
    write_readme,
)
from deepmir.labels import CMB, IRON, LESION_CLASSES, REGIONS, dseg_tsv

CENSUS = "group_census.tsv"
CMB_CATEGORIES = ("0", "1", "2-4", ">=5")


def cmb_category(n: int) -> str:
    """The CMB count category (Akoudad et al. 2016): 0, 1, 2-4, >=5."""
    if n <= 1:
        return str(n)
    return "2-4" if n <= 4 else ">=5"


@dataclass
class SubjectOnDisk:
    name: str  # sub-<label>[_ses-<label>]
    out: Path  # the output folder it is in
    record: dict[str, Any]
    lesions: list[dict[str, str]] = field(default_factory=list)

    @property
    def participant(self) -> str:
        return self.name.split("_")[0]

    @property
    def session(self) -> str:
        parts = self.name.split("_")
        return parts[1] if len(parts) > 1 else "n/a"

    @property
    def model(self) -> dict[str, Any]:
        model = self.record.get("Model")
        return model if isinstance(model, dict) else {}

    @property
    def model_name(self) -> str:
        return str(self.model.get("Name", "n/a"))

    @property
    def counts(self) -> dict[str, int]:
        """Counts per class, from lesions.tsv (the record's copy is for speed only)."""
        return {
            name: sum(1 for r in self.lesions if r.get("label") == str(label))
            for label, name in LESION_CLASSES.items()
        }

    @property
    def warnings(self) -> list[str]:
        return [str(w) for w in self.record.get("Warnings", [])]

    def report_link(self) -> str:
        anat = Path(self.participant)
        if self.session != "n/a":
            anat = anat / self.session
        return (anat / "anat" / f"{self.name}_desc-deepmir_report.html").as_posix()


@dataclass
class Cohort:
    subjects: list[SubjectOnDisk]
    #: subject -> the output folders it was found in, when more than one (first kept)
    duplicates: dict[str, list[Path]] = field(default_factory=dict)

    def model_names(self) -> list[str]:
        return sorted({s.model_name for s in self.subjects})

    def models(self) -> list[dict[str, Any]]:
        """Every distinct model (name, weights and card sha256) with its subjects."""
        seen: dict[tuple[str, str, str], dict[str, Any]] = {}
        for s in self.subjects:
            m = s.model
            key = (str(m.get("Name")), str(m.get("WeightsSha256")), str(m.get("CardSha256")))
            entry = seen.setdefault(key, {**m, "Subjects": 0})
            entry["Subjects"] += 1
        return [seen[k] for k in sorted(seen)]


def _read_lesions(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _subject_on_disk(record_path: Path, out: Path) -> SubjectOnDisk | None:
    """The finished subject whose provenance record is ``record_path`` (``None``:
    no record, or its lesions.tsv is missing or unreadable: not finished)."""
    name = record_path.name.removesuffix(f"_{provenance.SUFFIX}")
    record = provenance.read_record(record_path)
    tsv = record_path.with_name(f"{name}_desc-deepmir_lesions.tsv")
    if record is None or not tsv.is_file():
        return None
    try:
        rows = _read_lesions(tsv)
    except (OSError, ValueError, csv.Error):
        return None
    return SubjectOnDisk(name, Path(out), record, rows)


def read_cohort(outs: list[Path]) -> Cohort:
    """Every subject with a provenance record (a finished subject) in ``outs``.

    A subject found in several folders is taken from the first (the others
    are listed in ``duplicates``); a record whose lesions.tsv is missing or
    unreadable is left out (it is not finished). This scans the folders: the
    group level does it once; a participant run never does."""
    found: dict[str, SubjectOnDisk] = {}
    duplicates: dict[str, list[Path]] = {}
    for out in outs:
        for path in sorted(Path(out).glob(f"sub-*/**/anat/*_{provenance.SUFFIX}")):
            subject = _subject_on_disk(path, out)
            if subject is None:
                continue
            if subject.name in found:
                duplicates.setdefault(subject.name, [found[subject.name].out]).append(Path(out))
                continue
            found[subject.name] = subject
    return Cohort([found[n] for n in sorted(found)], duplicates)


def read_subjects(out: Path, refs: list[SubjectRef]) -> Cohort:
    """The finished subjects among ``refs`` in ``out``, read from their own
    records only (no scan of ``out``: the end of a ``deepmir predict`` run)."""
    subjects = [_subject_on_disk(provenance.provenance_path(out, ref), out) for ref in refs]
    return Cohort(sorted((s for s in subjects if s is not None), key=lambda s: s.name))


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "n/a") else None
    except ValueError:
        return None


CENSUS_COLUMNS = {
    "participant_id": "the subject",
    "session_id": "the session (n/a: none)",
    **{f"n_{name}": f"number of {name} lesions" for name in LESION_CLASSES.values()},
    **{f"n_cmb_{r}": f"CMBs in MARS region {r} (Gregoire et al. 2009)" for r in REGIONS},
    "n_cmb_region_unknown": "CMBs without a region (no registration to MNI)",
    "cmb_count_category": "CMB count category: 0, 1, 2-4, >=5 (Akoudad et al. 2016)",
    "iron_load_ppm_mm3": "total iron load: sum over iron lesions of mean chi (ppm) x volume "
    "(mm3), lesions.tsv chi_volume_ppm_mm3 (n/a: no QSM)",
    "model": "the model that made the outputs",
    "weights_sha256": "its weights' sha256",
    "deepmir_version": "the deepmir version that made the outputs",
    "output_dir": "the output folder the subject was read from",
}


def census_rows(cohort: Cohort) -> list[dict[str, Any]]:
    rows = []
    for s in cohort.subjects:
        counts = s.counts
        cmbs = [r for r in s.lesions if r.get("label") == str(CMB)]
        region_counts = {r: sum(1 for c in cmbs if c.get("region") == r) for r in REGIONS}
        loads = [
            _number(r.get("chi_volume_ppm_mm3")) for r in s.lesions if r.get("label") == str(IRON)
        ]
        known = [v for v in loads if v is not None]
        row: dict[str, Any] = {
            "participant_id": s.participant,
            "session_id": s.session,
            **{f"n_{name}": counts[name] for name in LESION_CLASSES.values()},
            **{f"n_cmb_{r}": region_counts[r] for r in REGIONS},
            "n_cmb_region_unknown": len(cmbs) - sum(region_counts.values()),
            "cmb_count_category": cmb_category(len(cmbs)),
            "iron_load_ppm_mm3": round(sum(known), 3) if known or not loads else "n/a",
            "model": s.model_name,
            "weights_sha256": s.model.get("WeightsSha256", "n/a"),
            "deepmir_version": s.record.get("DeepmirVersion", "n/a"),
            "output_dir": str(s.out),
        }
        rows.append(row)
    return rows


def census_tsv(rows: list[dict[str, Any]]) -> str:
    lines = ["\t".join(CENSUS_COLUMNS)]
    lines += ["\t".join(str(r[c]) for c in CENSUS_COLUMNS) for r in rows]
    return "\n".join(lines) + "\n"


def source_datasets(root: Path, qsm_dir: str | Path | None = None) -> dict[str, Path]:
    """The predictions' source datasets by link name (``DatasetLinks``): ``raw``,
    the input dataset, and ``qsm``, the ``--qsm-dir`` folder when given."""
    links = {"raw": Path(root)}
    if qsm_dir is not None:
        links["qsm"] = Path(qsm_dir)
    return links


def dataset_description(cohort: Cohort, links: Mapping[str, Path], dest: Path) -> dict[str, Any]:
    """The derivative's description, listing every model any subject was made with."""
    models = cohort.models()
    described = "; ".join(
        f"model {m.get('Name')}, weights sha256 {m.get('WeightsSha256')}: "
        f"{m['Subjects']} subject(s)"
        for m in models
    )
    return {**derivative_description(described, links, dest), "DeepmirModels": models}


def derivative_description(described: str, links: Mapping[str, Path], dest: Path) -> dict[str, Any]:
    """A deepmir derivative's ``dataset_description.json`` in ``dest``: ``described``
    says which models made it (empty: none yet), ``links`` are its source datasets
    (:func:`source_datasets`), linked relative to ``dest``."""
    return {
        "Name": "deepmir predictions",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "deepmir",
                "Version": __version__,
                "Description": described or "no subject could be predicted",
            }
        ],
        **source_links(links, dest),
    }


PREDICTIONS_README = """
# deepmir predictions

Cerebral microbleeds (CMB), iron deposits and calcifications detected by deepmir
in the dataset `DatasetLinks.raw` (see `dataset_description.json`: the deepmir
version and the models used, with their weights' sha256). Per subject
(`sub-<id>[/ses-<s>]/anat/`):

- `*_desc-deepmir_dseg.nii.gz`: lesion classes on the input's grid, labels in
  `dseg.tsv` (0 background, 1 cmb, 2 iron, 3 calcification); its JSON sidecar
  names the input files (`Sources`, BIDS URIs), the grid the network ran on and
  the model;
- `*_label-<class>_desc-deepmir_probseg.nii.gz` (`--save-probabilities`): the
  class probability (0-1) per voxel;
- `*_desc-deepmir_lesions.tsv`: one row per lesion, columns described in
  `lesions.json`;
- `*_desc-brain_mask.nii.gz`: the brain mask, only where deepmir derived it;
- `*_desc-deepmir_report.html`: the QC report (`index.html`: the cohort page);
- `*_desc-deepmir_provenance.json`: what made the subject's outputs.

The group level adds `group_census.tsv` (described in `group_census.json`).
`.bidsignore` lists the files BIDS has no name for (lesion tables, reports,
provenance records, census, SWI computed from raw GRE).
"""


def write_dataset_files(dest: Path) -> None:
    """The predictions' ``dseg.tsv``, README (kept when there is one),
    ``lesions.json`` and ``.bidsignore`` (:mod:`deepmir.io.bids_meta`)."""
    from deepmir.inference.predict import LESION_COLUMNS

    write_text(dest / "dseg.tsv", dseg_tsv())
    write_readme(dest, PREDICTIONS_README, replace=False)
    write_text(dest / "lesions.json", json_text(lesions_dictionary(LESION_COLUMNS)))
    write_bidsignore(dest, DERIVATIVE_IGNORE)


def _figure_png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figures(cohort: Cohort, rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[tuple[str, str]] = []
    names = list(LESION_CLASSES.values())
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3))
    for ax, name in zip(axes, names, strict=True):
        values = [int(r[f"n_{name}"]) for r in rows]
        top = max(values, default=0)
        ax.hist(values, bins=range(0, top + 2), color="#4c72b0", align="left", rwidth=0.9)
        ax.set_xlabel(f"{name} lesions per subject")
        ax.set_ylabel("subjects")
    out.append(("Lesion counts per subject", _figure_png(fig)))
    plt.close(fig)
    points = [
        (float(x), float(y), float(z), int(r["label"]))
        for s in cohort.subjects
        for r in s.lesions
        if all(_number(r.get(c)) is not None for c in ("mni_x", "mni_y", "mni_z"))
        for x, y, z in [(r["mni_x"], r["mni_y"], r["mni_z"])]
    ]
    if points:
        fig, axes = plt.subplots(1, 2, figsize=(9, 4))
        colours = {1: "#d62728", 2: "#1f77b4", 3: "#2ca02c"}
        for label, name in LESION_CLASSES.items():
            mine = [p for p in points if p[3] == label]
            if not mine:
                continue
            axes[0].scatter([p[0] for p in mine], [p[1] for p in mine], s=6, c=colours[label])
            axes[1].scatter([p[0] for p in mine], [p[2] for p in mine], s=6, c=colours[label])
            axes[1].scatter([], [], c=colours[label], label=name)
        axes[0].set(xlabel="MNI x (mm)", ylabel="MNI y (mm)", title="axial projection")
        axes[1].set(xlabel="MNI x (mm)", ylabel="MNI z (mm)", title="coronal projection")
        for ax in axes:
            ax.set_aspect("equal")
        axes[1].legend(loc="upper right", fontsize=7)
        out.append(("Lesion locations in MNI space (every subject)", _figure_png(fig)))
        plt.close(fig)
    return out


def group_index(
    cohort: Cohort, rows: list[dict[str, Any]], missing: list[str], figures: bool = True
) -> str:
    """The cohort page: figures, the census with links to the subjects' reports,
    every model used and each subject's provenance; subjects without outputs."""
    from deepmir.report.html import group_page

    shown = [c for c in CENSUS_COLUMNS if c not in ("participant_id", "session_id", "output_dir")]
    subjects = [
        {
            "name": s.name,
            "link": s.report_link(),
            "cells": [str(r[c]) for c in shown],
            "provenance": f"deepmir {s.record.get('DeepmirVersion')}, options "
            f"{json.dumps(s.record.get('Options'))}, finished {s.record.get('Finished')}",
            "warnings": s.warnings,
        }
        for s, r in zip(cohort.subjects, rows, strict=True)
    ]
    categories = {c: sum(r["cmb_count_category"] == c for r in rows) for c in CMB_CATEGORIES}
    return group_page(
        n_subjects=len(cohort.subjects),
        missing=missing,
        figures=_figures(cohort, rows) if figures else [],
        models=cohort.models(),
        categories=categories,
        columns=shown,
        subjects=subjects,
    )


@dataclass
class GroupOutcome:
    census: Path
    index: Path
    n_subjects: int
    missing: list[str]
    duplicates: dict[str, list[Path]]


def run_group(
    links: Mapping[str, Path],
    outs: list[Path],
    dest: Path,
    expected: list[str] | None = None,
    figures: bool = True,
) -> GroupOutcome:
    """Write ``group_census.tsv`` (+ its JSON description), ``index.html`` and
    ``dataset_description.json`` (with the README, data dictionaries and
    ``.bidsignore``) in ``dest`` from the subjects in ``outs``. ``links``: the
    source datasets (:func:`source_datasets`); ``expected``: the subjects that
    should have outputs (the others are listed as missing)."""
    cohort = read_cohort(outs)
    rows = census_rows(cohort)
    have = {s.name for s in cohort.subjects}
    missing = sorted(set(expected or []) - have)
    census = dest / CENSUS
    write_text(census, census_tsv(rows))
    write_text(
        dest / "group_census.json",
        json_text({c: {"Description": d} for c, d in CENSUS_COLUMNS.items()}),
    )
    index = dest / "index.html"
    write_text(index, group_index(cohort, rows, missing, figures))
    write_text(
        dest / "dataset_description.json", json_text(dataset_description(cohort, links, dest))
    )
    write_dataset_files(dest)
    return GroupOutcome(census, index, len(cohort.subjects), missing, cohort.duplicates)
