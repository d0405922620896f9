"""The BIDS metadata deepmir writes with its datasets, so that they pass the BIDS
validator (``bids-validator-deno``, the schema validator; ``tests/test_bids_valid.py``).

Every dataset deepmir writes (the simulated raw dataset, its reference
annotations, the predictions) gets a ``README.md``, data dictionaries for its
tables (``participants.json``, ``lesions.json``, ...), source links that stay
true when the folders move (``DatasetLinks`` and ``SourceDatasets`` relative to
the dataset, ``Sources`` as BIDS URIs ``bids:<link>:<path>``) and a
``.bidsignore`` for the files BIDS has no name for yet, as fMRIPrep does:

- ``*_swi``: BIDS has no SWI suffix yet (bids-specification PR #2538 adds
  ``swi`` under ``anat/``; ``T2starw`` is a different contrast), so deepmir
  keeps the upcoming name and the raw dataset ignores it until the schema has it;
- ``*_desc-brain_mask`` in a raw dataset: ``mask`` is a derivatives-only suffix;
- ``*_lesions.tsv`` (+ ``lesions.json``), the HTML reports and ``index.html``,
  the provenance records, the group census, the phantom parameter records and
  the reference's ``lesion_counts.tsv`` and preview figures: no BIDS names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from deepmir.io.atomic import json_text, write_text
from deepmir.labels import LABELS

BIDS_VERSION = "1.9.0"

#: raw dataset (``deepmir simulate``): SWI (no BIDS suffix yet), the raw brain mask
RAW_IGNORE = ("*_swi.nii", "*_swi.nii.gz", "*_swi.json", "*_desc-brain_mask.*")
#: tables, records and figures of the derivatives that BIDS has no name for
DERIVATIVE_IGNORE = (
    "*_lesions.tsv",
    "lesions.json",
    "*.html",
    "*_provenance.json",
    "group_census.*",
    "*_swi.nii",
    "*_swi.nii.gz",
    "*_swi.json",
)
REFERENCE_IGNORE = (
    "*_lesions.tsv",
    "lesions.json",
    "lesion_counts.*",
    "*_desc-phantom_params.json",
    "figures",  # a folder (the validator matches "figures", not "figures/")
)

_LABEL_CODES = ", ".join(f"{k} {v}" for k, v in LABELS.items() if k)

#: ``lesions.tsv`` columns (predictions and the simulator's reference): BIDS data dictionary
LESION_COLUMNS: dict[str, dict[str, Any]] = {
    "lesion_id": {
        "Description": "lesion number, 1..n in the subject (the value of its voxels in an "
        "instance segmentation)"
    },
    "label": {
        "Description": "the lesion's class (index of dseg.tsv)",
        "Levels": {str(k): v for k, v in LABELS.items() if k},
    },
    "name": {"Description": f"the class name ({_LABEL_CODES})"},
    "i": {"Description": "centroid, first voxel index of the input image", "Units": "voxel"},
    "j": {"Description": "centroid, second voxel index of the input image", "Units": "voxel"},
    "k": {"Description": "centroid, third voxel index of the input image", "Units": "voxel"},
    "x": {"Description": "centroid, scanner (world) x of the input's affine", "Units": "mm"},
    "y": {"Description": "centroid, scanner (world) y of the input's affine", "Units": "mm"},
    "z": {"Description": "centroid, scanner (world) z of the input's affine", "Units": "mm"},
    "volume_mm3": {"Description": "lesion volume", "Units": "mm^3"},
    "probability": {
        "Description": "chance that the lesion is real: calibrated when the model is "
        "(else the raw score)"
    },
    "score": {"Description": "raw lesion score: mean class probability over the lesion"},
    "chi_ppm": {
        "Description": "mean measured susceptibility (input QSM) over the lesion's voxels; "
        "n/a without QSM",
        "Units": "ppm",
    },
    "chi_volume_ppm_mm3": {
        "Description": "chi_ppm times volume_mm3 (iron load); n/a without QSM",
        "Units": "ppm*mm^3",
    },
    "region": {
        "Description": "MARS location category (Gregoire et al. 2009); n/a without a "
        "registration to MNI152",
        "Levels": {
            "lobar": "cortico-subcortical",
            "deep": "basal ganglia, thalamus, internal/external capsule, corpus callosum, "
            "deep and periventricular white matter",
            "infratentorial": "brainstem and cerebellum",
            "n/a": "unknown",
        },
    },
    "structure": {
        "Description": "a CMB's lobe or nucleus, an iron deposit's or calcification's host "
        "structure (atlas after registration to MNI152); n/a without it"
    },
    "mni_x": {
        "Description": "centroid in MNI152 space, x; n/a without registration",
        "Units": "mm",
    },
    "mni_y": {
        "Description": "centroid in MNI152 space, y; n/a without registration",
        "Units": "mm",
    },
    "mni_z": {
        "Description": "centroid in MNI152 space, z; n/a without registration",
        "Units": "mm",
    },
    # the simulator's reference adds these
    "host": {"Description": "anatomical structure the phantom lesion was placed in"},
    "delta_chi_ppm": {
        "Description": "susceptibility the simulator gave the lesion: relative to its host "
        "(CMB, iron) or absolute (calcification)",
        "Units": "ppm",
    },
    "swi_te_s": {"Description": "echo time of the simulated SWI", "Units": "s"},
}
#: the reference's ``chi_ppm`` is the ground truth, not a measurement
REFERENCE_CHI = {
    "Description": "mean true susceptibility (the phantom's chi) over the lesion's voxels",
    "Units": "ppm",
}


def lesions_dictionary(
    columns: Iterable[str], overrides: Mapping[str, dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """The data dictionary (``lesions.json``) of a lesion table with ``columns``."""
    table = {**LESION_COLUMNS, **(overrides or {})}
    missing = [c for c in columns if c not in table]
    if missing:
        raise KeyError(f"lesions.tsv columns without a description: {', '.join(missing)}")
    return {c: table[c] for c in columns}


def write_bidsignore(root: Path, patterns: Iterable[str]) -> None:
    """Add ``patterns`` to ``root/.bidsignore`` (lines already there are kept)."""
    path = root / ".bidsignore"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    lines += [p for p in patterns if p not in lines]
    write_text(path, "\n".join(lines) + "\n")


def write_readme(root: Path, text: str, replace: bool = True) -> None:
    """``root/README.md`` (with ``replace=False``, only where the dataset has no README)."""
    if not replace and any((root / f"README{e}").exists() for e in ("", ".md", ".rst", ".txt")):
        return
    write_text(root / "README.md", text.strip() + "\n")


def write_dictionary(path: Path, dictionary: Mapping[str, Any]) -> None:
    write_text(path, json_text(dict(dictionary)))


def relative_uri(target: Path, dest: Path) -> str:
    """``target`` folder as a URI relative to the dataset ``dest`` (``../../``), so
    that the link survives moving both; an absolute ``file:`` URI where no relative
    path exists (another drive)."""
    try:
        rel = os.path.relpath(Path(target).resolve(), Path(dest).resolve())
    except ValueError:
        return Path(target).resolve().as_uri()
    return Path(rel).as_posix().rstrip("/") + "/"


def source_links(sources: Mapping[str, Path], dest: Path) -> dict[str, Any]:
    """``DatasetLinks`` (name -> relative URI, for the BIDS URIs ``bids:<name>:...``)
    and ``SourceDatasets`` of a derivative dataset at ``dest``."""
    links = {name: relative_uri(folder, dest) for name, folder in sources.items()}
    return {
        "DatasetLinks": links,
        "SourceDatasets": [{"URL": uri} for uri in links.values()],
    }


def bids_uri(path: str | Path, dest: Path, links: Mapping[str, Path], relative: str = "raw") -> str:
    """A file as a BIDS URI: ``bids::<path>`` inside the dataset ``dest``,
    ``bids:<name>:<path>`` inside the linked dataset ``links[name]``, and a path
    that is not absolute as relative to the dataset linked as ``relative``; a
    file in none of them, as an absolute ``file:`` URI."""
    p = Path(path)
    if not p.is_absolute():
        return f"bids:{relative}:{p.as_posix()}"
    resolved = p.resolve()
    for name, folder in [("", dest), *links.items()]:
        try:
            return f"bids:{name}:{resolved.relative_to(Path(folder).resolve()).as_posix()}"
        except ValueError:
            continue
    return resolved.as_uri()


def instances_lookup(labels: Mapping[int, int]) -> str:
    """The ``desc-instances_dseg.tsv`` of an instance segmentation: each lesion id
    (index) with its class name; it overrides the class table ``dseg.tsv``, which
    would otherwise apply to it by inheritance."""
    lines = ["index\tname", "0\tbackground"]
    lines += [f"{i}\t{LABELS[labels[i]]}" for i in sorted(labels)]
    return "\n".join(lines) + "\n"
