"""BIDS names and paths of the data contract (``docs/data-contract.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: modality key -> BIDS suffix of the raw input files
MODALITY_SUFFIX = {"t2w": "T2w", "swi": "swi", "qsm": "Chimap"}
ALL_MODALITIES = ("t2w", "swi", "qsm")


@dataclass(frozen=True)
class SubjectRef:
    """A subject (and optional session) of a BIDS dataset."""

    subject: str  # label without "sub-"
    session: str | None = None

    @property
    def prefix(self) -> str:
        ses = f"_ses-{self.session}" if self.session else ""
        return f"sub-{self.subject}{ses}"

    def anat_dir(self, root: str | Path) -> Path:
        d = Path(root) / f"sub-{self.subject}"
        if self.session:
            d = d / f"ses-{self.session}"
        return d / "anat"

    def modality_path(self, root: str | Path, modality: str) -> Path:
        return self.anat_dir(root) / f"{self.prefix}_{MODALITY_SUFFIX[modality]}.nii.gz"

    def mask_path(self, root: str | Path) -> Path:
        return self.anat_dir(root) / f"{self.prefix}_desc-brain_mask.nii.gz"

    def __str__(self) -> str:
        return self.prefix


def dataset_problem(root: str | Path) -> str | None:
    """What makes ``root`` unusable as a BIDS dataset folder, or None."""
    root = Path(root)
    if not root.exists():
        return "does not exist (give the BIDS dataset folder)"
    if not root.is_dir():
        return "is a file, not a BIDS dataset folder"
    if not find_subjects(root):
        return "no sub-* folders: not a BIDS dataset"
    return None


def find_subjects(root: str | Path) -> list[SubjectRef]:
    """Subjects (and sessions, where present) of a BIDS folder, sorted."""
    refs: list[SubjectRef] = []
    for sub in sorted(Path(root).glob("sub-*")):
        if not sub.is_dir():
            continue
        label = sub.name[4:]
        sessions = sorted(p for p in sub.glob("ses-*") if p.is_dir())
        if sessions:
            refs.extend(SubjectRef(label, s.name[4:]) for s in sessions)
        else:
            refs.append(SubjectRef(label))
    return refs


def parse_modalities(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Parse ``"swi,qsm"`` (or a list) into an ordered modality tuple; clear error if unknown."""
    items = text.split(",") if isinstance(text, str) else list(text)
    mods = tuple(m.strip().lower() for m in items if m.strip())
    aliases = {"chimap": "qsm", "t2": "t2w"}
    mods = tuple(aliases.get(m, m) for m in mods)
    unknown = [m for m in mods if m not in MODALITY_SUFFIX]
    if unknown or not mods:
        raise ValueError(
            f"unknown modalities {unknown or text!r}: choose from {', '.join(ALL_MODALITIES)}"
        )
    return tuple(m for m in ALL_MODALITIES if m in mods)
