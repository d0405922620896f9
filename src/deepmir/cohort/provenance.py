"""Per-subject provenance: the record that lets a rerun skip finished subjects.

After a subject's outputs are in place, ``<prefix>_desc-deepmir_provenance.json``
is written next to them (atomically, and last). It records the deepmir
version, the model (name, weights sha256 and the sha256 of its whole card, so
re-tuned post-processing or a new calibration counts as a new model), the
options that change the outputs, the input files' identity (size and
modification time, in nanoseconds) and the outputs written. A subject is
*current* when its record matches what this run would write and every output
it lists exists; anything else (no record: a run killed before the record was
written; another model, option or input) means the subject is redone. The
record is removed before a subject is redone, so a run killed while writing
never leaves a record that vouches for outputs of another run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from deepmir import __version__
from deepmir.io.atomic import json_text, write_text
from deepmir.io.bids import SubjectRef
from deepmir.model.checkpoint import ModelCard

SUFFIX = "desc-deepmir_provenance.json"
#: the keys that must match for a subject to be skipped (the rest is information)
IDENTITY_KEYS = ("DeepmirVersion", "Model", "Options", "Inputs")


def provenance_path(out: Path, ref: SubjectRef) -> Path:
    return ref.anat_dir(out) / f"{ref.prefix}_{SUFFIX}"


def card_sha256(card: ModelCard) -> str:
    """sha256 of the model's whole card (weights hash, normalization,
    post-processing, calibration), canonical JSON."""
    text = json.dumps(card.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def model_identity(name: str, card: ModelCard) -> dict[str, Any]:
    return {
        "Name": name,
        "WeightsSha256": card.weights_sha256,
        "CardSha256": card_sha256(card),
    }


def input_files(root: Path, ref: SubjectRef) -> list[Path]:
    """The files a subject's prediction reads: its chosen modality files and mask."""
    files = ref.files
    if files is None:  # a ref made by hand: the contract's names that exist
        from deepmir.io.bids import ALL_MODALITIES

        paths = [ref.modality_path(root, m) for m in ALL_MODALITIES] + [ref.mask_path(root)]
        return [p for p in paths if p.exists()]
    paths = [Path(root) / p for p in files.modalities.values()]
    if files.mask is not None:
        paths.append(Path(root) / files.mask)
    for echo in files.gre:  # raw GRE that SWI or QSM would be computed from
        paths += [Path(root) / echo.magnitude, Path(root) / echo.phase]
    return sorted(paths)


def input_identity(root: Path, ref: SubjectRef) -> dict[str, list[int] | None]:
    """file (relative to the dataset root when inside it) -> [size, mtime_ns]
    (``None``: cannot be read now; never matches a record)."""
    out: dict[str, list[int] | None] = {}
    for path in input_files(root, ref):
        try:
            key = path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            key = str(path)
        try:
            st = path.stat()
        except OSError:
            out[key] = None
            continue
        out[key] = [st.st_size, st.st_mtime_ns]
    return out


def expected_record(
    root: Path,
    ref: SubjectRef,
    model: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, Any]:
    """The identity part of the record this run would write for ``ref``."""
    return {
        "DeepmirVersion": __version__,
        "Model": model,
        "Options": options,
        "Inputs": input_identity(root, ref),
    }


def read_record(path: Path) -> dict[str, Any] | None:
    """A provenance record, or ``None`` when absent or unreadable (redo)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_current(out: Path, ref: SubjectRef, expected: dict[str, Any]) -> bool:
    """Whether ``ref``'s outputs in ``out`` are those this run would write."""
    record = read_record(provenance_path(out, ref))
    if record is None:
        return False
    if any(record.get(k) != expected[k] for k in IDENTITY_KEYS):
        return False
    if any(v is None for v in expected["Inputs"].values()):
        return False
    outputs = record.get("Outputs")
    if not isinstance(outputs, list) or not outputs:
        return False
    anat = ref.anat_dir(out)
    return all((anat / str(name)).is_file() for name in outputs)


def write_record(
    out: Path,
    ref: SubjectRef,
    expected: dict[str, Any],
    outputs: list[Path],
    extra: dict[str, Any],
) -> Path:
    """Write the record (atomically): the identity, the outputs (file names in
    the subject's folder) and ``extra`` (counts, warnings, timing)."""
    path = provenance_path(out, ref)
    record = {**expected, "Outputs": sorted(p.name for p in outputs), **extra}
    write_text(path, json_text(record))
    return path


def remove_record(out: Path, ref: SubjectRef) -> None:
    """Remove the record (absent, or a folder that cannot be read: nothing to do;
    the subject's writes then fail with their own message)."""
    with contextlib.suppress(OSError):
        os.unlink(provenance_path(out, ref))
