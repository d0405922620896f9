"""BIDS names and paths of the data contract (``docs/data-contract.md``), and the
discovery of a dataset's input files.

**Discovery.** Every NIfTI file (``.nii`` or ``.nii.gz``) in a datatype folder
of a subject (``sub-<id>/[ses-<s>/]<datatype>/``) is indexed, its name parsed
into BIDS entities by ancpbids (``ancpbids.utils.parse_bids_name``). Each
subject (and session) then gets one file per modality:

=========  ================================================================
modality   suffixes read, best first
=========  ================================================================
``t2w``    ``T2w``
``swi``    ``swi``; ``T2starw`` with ``acq-`` holding "swi" (``acq-swi_T2starw``);
           other ``T2starw``
``qsm``    ``Chimap`` (from ``--qsm-dir`` first when given, e.g. QSMxT output)
mask       ``desc-brain_mask``
gre        raw GRE, magnitude + phase per echo: ``MEGRE`` (``part-mag``, or no
           ``part-``, and ``part-phase``), else ``GRE`` or ``T2starw`` with
           ``part-mag`` and ``part-phase``; ``echo-<n>`` numbers the echoes
=========  ================================================================

A ``part-`` other than ``mag`` (phase, real, imaginary) is never an SWI or
T2w image, and a ``part-mag`` file with a ``part-phase`` partner is raw GRE,
not an SWI. **Raw GRE** (:class:`GreEchoFiles`, one per echo) is read when a
subject lacks SWI or QSM: ``deepmir predict`` computes them from it
(:mod:`deepmir.qsm.gre`; echo times and field strength from the JSON
sidecars). Every echo needs both parts; several candidate sets (other
``acq-``, ...) are an ambiguity, as for the modalities.
When several files fit one modality and differ only in ``run-``, the last
run is taken and a warning says so; when they differ in anything else
(``acq-``, ``echo-``, ``rec-``, ``.nii`` and ``.nii.gz``, ...), the subject
fails with an error that lists them and says how to choose
(``--bids-filter-file``). A missing modality's error lists the files found.

**Why ancpbids plus a walk, not a library's index.** Measured with
``benchmarks/bench_discovery.py --subjects 10000`` on a synthetic dataset of
10 000 subjects (30 000 empty files), each library in a fresh interpreter
(import: median of 3), on 2 cores shared with a training run (``nice -n
19``, one thread)::

    library          import s   index 10 000 subjects s   installs
    pybids 0.22      0.39       45.6                      sqlalchemy, formulaic, bids-validator, ...
    ancpbids 0.4.10  0.15       10.9                      nothing else
    bids2table 2.3   0.17        8.9                      pyarrow (170 MB)
    this module      0.15        1.3  (one participant: 0.02)   ancpbids

pybids and ancpbids index the whole dataset (every file and folder,
derivatives included) before one subject can be read: 11-46 s before the
first subject of a 10 000-subject cohort, and again in every job of a
per-participant run (``--participant-label``, one job per subject on a
cluster). bids2table can index chosen subjects only, but its full index is
still 9 s and it brings pyarrow (170 MB) for a table deepmir does not need.
predict only reads ``sub-*/[ses-*/]<datatype>/*.nii[.gz]``, so this module
walks exactly those folders (of the selected participants only) with
``os.scandir`` and leaves the parsing of names into entities to ancpbids (no
dependency of its own, 0.15 s to import). ancpbids is never asked to load a dataset: given
options, its loader unpickles a ``.ancpbids-dataset.pickle`` found in the
dataset, and deepmir never unpickles.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ancpbids.utils import parse_bids_name

#: modality key -> BIDS suffix of the raw input files deepmir writes (simulate)
MODALITY_SUFFIX = {"t2w": "T2w", "swi": "swi", "qsm": "Chimap"}
ALL_MODALITIES = ("t2w", "swi", "qsm")
#: modality key -> suffixes read, best first (T2starw: "swi" in acq- ranks first)
READ_SUFFIXES: dict[str, tuple[str, ...]] = {
    "t2w": ("T2w",),
    "swi": ("swi", "T2starw"),
    "qsm": ("Chimap",),
    "mask": ("mask",),
    "gre": ("MEGRE", "GRE", "T2starw"),
}
#: raw GRE suffixes, best first (GRE and T2starw only with part-mag / part-phase)
RAW_GRE_SUFFIXES = ("MEGRE", "GRE", "T2starw")
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
#: what ``--bids-filter-file`` keys may be (fMRIPrep's entity names and the short ones)
ENTITY_NAMES = {
    "subject": "sub",
    "session": "ses",
    "acquisition": "acq",
    "ceagent": "ce",
    "reconstruction": "rec",
    "direction": "dir",
    "run": "run",
    "echo": "echo",
    "part": "part",
    "space": "space",
    "description": "desc",
    "desc": "desc",
    "suffix": "suffix",
    "extension": "extension",
    "datatype": "datatype",
}
ENTITY_NAMES.update({short: short for short in list(ENTITY_NAMES.values())})
#: entities compared as numbers (``run-01`` is ``run-1``)
NUMERIC_ENTITIES = ("run", "echo")
_SUBJECT_DIR = re.compile(r"sub-[A-Za-z0-9]+")
_SESSION_DIR = re.compile(r"ses-[A-Za-z0-9]+")

#: entity key -> allowed values (None: the entity must be absent)
EntityFilter = dict[str, tuple[str | None, ...]]


def file_patterns(modality: str) -> str:
    """The file names read as ``modality``, for messages."""
    if modality == "mask":
        return "*_desc-brain_mask.nii[.gz]"
    if modality == "gre":
        return "*[_echo-<n>]_part-mag|phase_MEGRE.nii[.gz]"
    return " or ".join(f"*_{s}.nii[.gz]" for s in READ_SUFFIXES[modality])


class DiscoveryError(ValueError):
    """Unusable discovery options (a bad filter file, an unknown session): the
    message names the file or option and the problem."""


@dataclass(frozen=True)
class BidsFile:
    """One NIfTI file of a subject, with its parsed BIDS entities."""

    path: Path  # absolute
    entities: Mapping[str, str]  # short keys (sub, ses, acq, run, ...), suffix, extension, datatype

    @property
    def suffix(self) -> str:
        return self.entities.get("suffix", "")

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class GreEchoFiles:
    """One echo of a subject's raw GRE: magnitude and phase files (relative to
    the dataset root, as :class:`SubjectFiles` paths)."""

    echo: int
    magnitude: str
    phase: str


@dataclass(frozen=True)
class SubjectFiles:
    """The files discovery chose for one subject (and session).

    Paths are relative to the dataset root (absolute for a file outside it,
    such as a ``--qsm-dir`` QSM).
    """

    modalities: Mapping[str, str] = field(default_factory=dict)
    mask: str | None = None
    #: every NIfTI file of the subject, relative to the dataset root
    found: tuple[str, ...] = ()
    #: raw GRE files (MEGRE, GRE / T2starw magnitude and phase) found
    raw_gre: tuple[str, ...] = ()
    #: the raw GRE chosen, per echo (empty: none usable)
    gre: tuple[GreEchoFiles, ...] = ()
    #: why the raw GRE found is not usable (a part missing, several sets)
    gre_problem: str | None = None
    #: modality -> why no file was chosen although some fit (several candidates)
    problems: Mapping[str, str] = field(default_factory=dict)
    #: what the choice took for granted (the last of several runs)
    warnings: tuple[str, ...] = ()
    #: where QSM was looked for besides the dataset (``--qsm-dir``)
    qsm_dir: str | None = None


@dataclass(frozen=True)
class SubjectRef:
    """A subject (and optional session) of a BIDS dataset.

    ``files`` (from :func:`find_subjects`) holds the files discovery chose; a
    ref made by hand (``SubjectRef("01")``) has none and names the contract's
    canonical files ``sub-<id>[_ses-<s>]_<suffix>.nii.gz``. Refs compare and
    hash by subject and session only.
    """

    subject: str  # label without "sub-"
    session: str | None = None
    files: SubjectFiles | None = field(default=None, compare=False, repr=False)

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
        """The discovered file of ``modality``, else the contract's name for it."""
        if self.files is not None and modality in self.files.modalities:
            return Path(root) / self.files.modalities[modality]
        return self.anat_dir(root) / f"{self.prefix}_{MODALITY_SUFFIX[modality]}.nii.gz"

    def mask_path(self, root: str | Path) -> Path:
        if self.files is not None and self.files.mask is not None:
            return Path(root) / self.files.mask
        return self.anat_dir(root) / f"{self.prefix}_desc-brain_mask.nii.gz"

    def has(self, root: str | Path, modality: str) -> bool:
        """Whether the subject has a file for ``modality`` on disk (the discovered
        one; for a ref made by hand, the canonical one). An ambiguous modality
        counts as present (reading it reports the ambiguity); a file that
        discovery did not choose (a filter left it out) does not."""
        if self.files is not None:
            if modality in self.files.problems:
                return True
            if modality not in self.files.modalities:
                return False
        return self.modality_path(root, modality).exists()

    def has_mask(self, root: str | Path) -> bool:
        """Whether the subject has a brain mask on disk (as :meth:`has`)."""
        if self.files is not None and self.files.mask is None:
            return False
        return self.mask_path(root).exists()

    def absent_message(self, root: str | Path, missing: Iterable[str]) -> str:
        """The error for ``missing`` modalities: what is missing, what was found
        for this subject (its NIfTI files), and raw GRE named as such."""
        wanted = list(missing)
        if self.files is None:
            found = sorted(p.name for p in self.anat_dir(root).glob("*.nii*"))
            raw: tuple[str, ...] = ()
        else:
            found = [Path(f).name for f in self.files.found]
            raw = self.files.raw_gre
        names = ", ".join(f"{m} ({file_patterns(m)})" for m in wanted)
        text = ""
        gre_problem = self.files.gre_problem if self.files is not None else None
        usable = self.files is not None and bool(self.files.gre)
        if raw and ({"swi", "qsm"} & set(wanted)):
            names = ", ".join(Path(f).name for f in raw)
            if usable:
                text = (
                    f"raw GRE found ({names}): deepmir predict computes SWI and QSM from it "
                    "(this command reads them only as files); "
                )
            else:
                text = f"raw GRE found ({names}) but not usable: " + (
                    f"{gre_problem}; " if gre_problem else "it needs magnitude and phase per echo; "
                )
        text += f"missing: {names}; files found for {self.prefix}: " + (
            ", ".join(found) if found else "none"
        )
        if self.files is not None and self.files.qsm_dir and "qsm" in wanted:
            text += f" (and no {self.prefix} *_Chimap.nii[.gz] in --qsm-dir {self.files.qsm_dir})"
        return text

    def problem(self, modality: str) -> str | None:
        """Why ``modality``'s file could not be chosen (several candidates), or None."""
        if self.files is None:
            return None
        return self.files.problems.get(modality)

    def __str__(self) -> str:
        return self.prefix


def simulation_record(root: Path) -> dict[str, object] | None:
    """The ``deepmir_simulation`` record of a phantom cohort folder (its
    ``dataset_description.json``, written by ``deepmir simulate``), else None."""
    try:
        description = json.loads((root / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(description, dict):
        return None
    record = description.get("deepmir_simulation")
    return record if isinstance(record, dict) else None


def dataset_problem(root: str | Path) -> str | None:
    """What makes ``root`` unusable as a BIDS dataset folder, or None."""
    root = Path(root)
    if not root.exists():
        return "does not exist (give the BIDS dataset folder)"
    if not root.is_dir():
        return "is a file, not a BIDS dataset folder"
    if not _subject_dirs(root):
        return "no sub-* folders: not a BIDS dataset"
    return None


def _subject_dirs(root: Path) -> list[os.DirEntry[str]]:
    with os.scandir(root) as it:
        return sorted(
            (e for e in it if _SUBJECT_DIR.fullmatch(e.name) and e.is_dir()), key=lambda e: e.name
        )


def _nifti_files(folder: str) -> list[str]:
    """Paths of the NIfTI files in the datatype folders of a subject or session folder."""
    out: list[str] = []
    with os.scandir(folder) as it:
        datatypes = [e.path for e in it if not e.name.startswith((".", "ses-")) and e.is_dir()]
    for d in datatypes:
        with os.scandir(d) as it:
            # a folder with a NIfTI name is kept: reading it says what it is
            out.extend(e.path for e in it if e.name.endswith(NIFTI_EXTENSIONS))
    return out


def parse_file(path: str | Path) -> BidsFile | None:
    """A NIfTI file's BIDS entities (ancpbids parses the name), or None for a name
    that is not BIDS."""
    path = Path(path)
    parsed: Any = parse_bids_name(path.name)
    if not parsed or not parsed.get("suffix"):
        return None
    entities = dict(parsed["entities"])
    entities["suffix"] = parsed["suffix"]
    entities["extension"] = parsed["extension"]
    entities["datatype"] = path.parent.name
    return BidsFile(path, entities)


@dataclass
class DatasetIndex:
    """The NIfTI files of a dataset's subjects, per subject folder and session."""

    root: Path
    #: (subject, session or None) -> every NIfTI file path in its datatype folders
    subjects: dict[tuple[str, str | None], list[str]]

    @property
    def files(self) -> list[BidsFile]:
        """Every file with a BIDS name (parsed on demand)."""
        return [
            f for paths in self.subjects.values() for p in paths if (f := parse_file(p)) is not None
        ]


def index_dataset(root: str | Path, participants: Iterable[str] | None = None) -> DatasetIndex:
    """Walk ``sub-*/[ses-*/]<datatype>/`` of ``root`` (only the ``participants``
    given, labels with or without ``sub-``) for NIfTI files."""
    root = Path(root)
    wanted = {p.removeprefix("sub-") for p in participants} if participants else None
    subjects: dict[tuple[str, str | None], list[str]] = {}
    for sub in _subject_dirs(root):
        label = sub.name[4:]
        if wanted is not None and label not in wanted:
            continue
        with os.scandir(sub.path) as it:
            sessions = sorted(
                (e for e in it if _SESSION_DIR.fullmatch(e.name) and e.is_dir()),
                key=lambda e: e.name,
            )
        if sessions:
            for ses in sessions:
                subjects[(label, ses.name[4:])] = sorted(_nifti_files(ses.path))
        else:
            subjects[(label, None)] = sorted(_nifti_files(sub.path))
    return DatasetIndex(root, subjects)


def index_qsm_dir(qsm_dir: str | Path) -> dict[tuple[str, str | None], list[BidsFile]]:
    """Every ``*_Chimap.nii[.gz]`` under ``qsm_dir`` (any depth: QSMxT and other
    BIDS-derivatives-like trees), per (subject, session)."""
    qsm_dir = Path(qsm_dir)
    out: dict[tuple[str, str | None], list[BidsFile]] = {}
    for folder, dirs, names in os.walk(qsm_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.endswith(NIFTI_EXTENSIONS):
                continue
            f = parse_file(Path(folder) / name)
            if f is not None and f.suffix == "Chimap" and "sub" in f.entities:
                out.setdefault((f.entities["sub"], f.entities.get("ses")), []).append(f)
    return out


def _norm(key: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = str(value)
    if key in NUMERIC_ENTITIES and value.isdigit():
        return str(int(value))
    if key == "extension" and not value.startswith("."):
        return "." + value
    return value


def parse_filters(source: str | Path | Mapping[str, Any]) -> dict[str, EntityFilter]:
    """A ``--bids-filter-file`` (fMRIPrep's format): modality -> entity -> value.

    Keys are modality names (``t2w``, ``swi``, ``qsm``, ``mask``; ``t2starw``,
    ``chimap``, ``t2`` are aliases), values objects of entity filters with
    fMRIPrep's (pybids) entity names or the short ones (``session`` or ``ses``,
    ``acquisition`` or ``acq``, ``run``, ``echo``, ``part``, ``suffix``,
    ``extension``, ...). A value is a string or number, ``null`` (the entity
    must be absent) or a list of those (any of them).

    Raises
    ------
    DiscoveryError
        naming the file and the problem.
    """
    where = "--bids-filter-file" if isinstance(source, Mapping) else str(source)
    if isinstance(source, Mapping):
        data: Any = source
    else:
        path = Path(source)
        if not path.is_file():
            raise DiscoveryError(f"{path}: --bids-filter-file does not exist or is not a file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DiscoveryError(f"{path}: not a JSON file ({exc})") from exc
    if not isinstance(data, Mapping):
        raise DiscoveryError(f"{where}: expected a JSON object of modality -> entity filters")
    aliases = {
        "t2starw": "swi",
        "chimap": "qsm",
        "t2": "t2w",
        "brain_mask": "mask",
        "megre": "gre",
    }
    out: dict[str, EntityFilter] = {}
    for key, entities in data.items():
        modality = aliases.get(str(key).lower(), str(key).lower())
        if modality not in READ_SUFFIXES:
            raise DiscoveryError(
                f"{where}: unknown modality {key!r}; the keys are modality names "
                f"({', '.join(READ_SUFFIXES)})"
            )
        if not isinstance(entities, Mapping):
            raise DiscoveryError(f"{where}: {key!r} must map to an object of entity filters")
        flt: EntityFilter = {}
        for name, value in entities.items():
            entity = ENTITY_NAMES.get(str(name))
            if entity is None or entity == "sub":
                known = ", ".join(sorted(set(ENTITY_NAMES) - {"subject", "sub"}))
                raise DiscoveryError(
                    f"{where}: {key}: unknown entity {name!r} (known: {known}; subjects are "
                    "chosen with --participant-label)"
                )
            values = list(value) if isinstance(value, list | tuple) else [value]
            for v in values:
                if v is not None and not isinstance(v, str | int) or isinstance(v, bool):
                    raise DiscoveryError(
                        f"{where}: {key}.{name}: expected a string, number, null or a list "
                        f"of those, got {v!r}"
                    )
            flt[entity] = tuple(_norm(entity, None if v is None else str(v)) for v in values)
        if "suffix" in flt:
            bad = [s for s in flt["suffix"] if s not in READ_SUFFIXES[modality]]
            if bad:
                raise DiscoveryError(
                    f"{where}: {key}.suffix {bad[0]!r} is not read as {modality} "
                    f"(one of {', '.join(READ_SUFFIXES[modality])})"
                )
        out[modality] = flt
    return out


def _passes(f: BidsFile, flt: EntityFilter | None) -> bool:
    if not flt:
        return True
    return all(_norm(k, f.entities.get(k)) in allowed for k, allowed in flt.items())


def _rank(modality: str, f: BidsFile) -> int | None:
    """How well ``f`` fits ``modality`` (0 best), or None if it does not."""
    suffixes = READ_SUFFIXES[modality]
    if f.suffix not in suffixes:
        return None
    if modality == "mask":
        return 0 if f.entities.get("desc") == "brain" else None
    if modality in ("t2w", "swi") and f.entities.get("part", "mag") != "mag":
        return None  # phase, real or imaginary parts are not images of the modality
    if modality == "swi" and f.suffix == "T2starw":
        return 1 if "swi" in f.entities.get("acq", "").lower() else 2
    return 0


def _choose(
    modality: str, candidates: list[BidsFile], root: Path
) -> tuple[BidsFile | None, str | None, str | None]:
    """(file, warning, problem): the best-ranked candidate; of several that differ
    only in ``run-``, the last run (warning); otherwise a problem listing them."""
    ranked = [(r, f) for f in candidates if (r := _rank(modality, f)) is not None]
    if not ranked:
        return None, None, None
    best = min(r for r, _ in ranked)
    top = sorted((f for r, f in ranked if r == best), key=lambda f: f.name)
    if len(top) == 1:
        return top[0], None, None
    names = ", ".join(f.name for f in top)
    keys = sorted({k for f in top for k in f.entities})
    differ = [k for k in keys if len({_norm(k, f.entities.get(k)) for f in top}) > 1]
    if differ == ["run"] and all("run" in f.entities for f in top):
        last = max(top, key=lambda f: int(_norm("run", f.entities["run"]) or 0))
        warning = (
            f"{len(top)} files fit {modality} ({names}): took the last run, "
            f"{_relative(last.path, root)} (choose another with --bids-filter-file)"
        )
        return last, warning, None
    if not differ:  # run-1 and run-01, say
        differ = ["name"]
    problem = (
        f"{len(top)} files fit {modality} and differ in {', '.join(differ)}: {names}; "
        f"choose one with --bids-filter-file, e.g. "
        f'{{"{modality}": {{"{_long(differ[0])}": ...}}}}'
    )
    return None, None, problem


def _long(entity: str) -> str:
    for long, short in ENTITY_NAMES.items():
        if short == entity and len(long) > len(short):
            return long
    return entity


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def resolve_subject(
    root: Path,
    label: str,
    session: str | None,
    paths: list[str],
    filters: Mapping[str, EntityFilter] | None = None,
    qsm_files: list[BidsFile] | None = None,
    qsm_dir: Path | None = None,
) -> SubjectRef:
    """One subject's files per modality (module docstring: the rules)."""
    filters = filters or {}
    files = [f for p in paths if (f := parse_file(p)) is not None]
    own = [
        f
        for f in files
        if f.entities.get("sub") == label
        and f.entities.get("ses") == session
        and f.entities["extension"] in NIFTI_EXTENSIONS
    ]
    chosen: dict[str, str] = {}
    problems: dict[str, str] = {}
    warnings: list[str] = []
    mask: str | None = None
    gre_candidates = [f for f in own if _is_raw_gre(f, own)]
    gre, gre_warning, gre_problem = _choose_gre(
        [f for f in gre_candidates if _passes(f, filters.get("gre"))], root
    )
    if gre_warning:
        warnings.append(gre_warning)
    raw_paths = {f.path for f in gre_candidates}
    own = [f for f in own if f.path not in raw_paths]  # a raw magnitude is not an SWI
    for modality in (*ALL_MODALITIES, "mask"):
        flt = filters.get(modality)
        pick: BidsFile | None = None
        if modality == "qsm" and qsm_files:
            pick, warning, problem = _choose(
                modality, [f for f in qsm_files if _passes(f, flt)], root
            )
            if pick is not None or problem is not None:
                _record(modality, pick, warning, problem, root, chosen, problems, warnings)
                continue
        pick, warning, problem = _choose(modality, [f for f in own if _passes(f, flt)], root)
        if modality == "mask":
            if problem is not None:
                warnings.append(f"brain mask not used: {problem}")
            elif pick is not None:
                mask = _relative(pick.path, root)
                if warning:
                    warnings.append(warning)
            continue
        _record(modality, pick, warning, problem, root, chosen, problems, warnings)
    raw = tuple(
        sorted(
            {_relative(f.path, root) for f in gre_candidates}
            | {
                _relative(f.path, root)
                for f in own
                if f.suffix in ("T2starw", "swi") and f.entities.get("part") == "phase"
            }
        )
    )
    return SubjectRef(
        label,
        session,
        SubjectFiles(
            modalities=chosen,
            mask=mask,
            found=tuple(_relative(Path(p), root) for p in paths),
            raw_gre=raw,
            gre=gre,
            gre_problem=gre_problem,
            problems=problems,
            warnings=tuple(warnings),
            qsm_dir=str(qsm_dir) if qsm_dir is not None else None,
        ),
    )


def _is_raw_gre(f: BidsFile, files: list[BidsFile]) -> bool:
    """MEGRE (any part), or GRE / T2starw with ``part-phase``, or with ``part-mag``
    and a ``part-phase`` partner (the same name but for the part)."""
    if f.suffix == "MEGRE":
        return True
    part = f.entities.get("part")
    if f.suffix not in RAW_GRE_SUFFIXES or part not in ("mag", "phase"):
        return False
    if part == "phase":
        return True
    partner = f.name.replace("_part-mag_", "_part-phase_")
    return any(g.name == partner for g in files)


def _choose_gre(
    candidates: list[BidsFile], root: Path
) -> tuple[tuple[GreEchoFiles, ...], str | None, str | None]:
    """(echoes, warning, problem): the raw GRE set of the best suffix, grouped by
    every entity but ``part`` and ``echo``; of several sets that differ only in
    ``run-``, the last run; each echo needs one magnitude and one phase."""
    if not candidates:
        return (), None, None
    best = min(RAW_GRE_SUFFIXES.index(f.suffix) for f in candidates)
    groups: dict[tuple[tuple[str, str | None], ...], list[BidsFile]] = {}
    for f in candidates:
        if RAW_GRE_SUFFIXES.index(f.suffix) != best:
            continue
        key = tuple(
            sorted((k, _norm(k, v)) for k, v in f.entities.items() if k not in ("part", "echo"))
        )
        groups.setdefault(key, []).append(f)
    warning = None
    if len(groups) > 1:
        keys = list(groups)
        differ = sorted(
            {k for key in keys for k, _ in key if len({dict(o).get(k) for o in keys}) > 1}
        )
        names = ", ".join(f.name for g in groups.values() for f in sorted(g, key=lambda f: f.name))
        if differ != ["run"]:
            return (
                (),
                None,
                f"{len(groups)} raw GRE sets differ in {', '.join(differ)}: {names}; choose one "
                f'with --bids-filter-file, e.g. {{"gre": {{"{_long(differ[0])}": ...}}}}',
            )
        last = max(keys, key=lambda key: int(_norm("run", dict(key).get("run")) or 0))
        warning = (
            f"{len(groups)} raw GRE sets differ in run: took run {dict(last).get('run')} "
            "(choose another with --bids-filter-file)"
        )
        group = groups[last]
    else:
        group = next(iter(groups.values()))
    echoes: dict[int, dict[str, BidsFile]] = {}
    for f in group:
        echo = int(_norm("echo", f.entities.get("echo", "1")) or 1)
        echoes.setdefault(echo, {})[f.entities.get("part", "mag")] = f
    out = []
    for echo in sorted(echoes):
        parts = echoes[echo]
        missing = [p for p in ("mag", "phase") if p not in parts]
        if missing:
            have = ", ".join(f.name for f in parts.values())
            return (), None, f"echo {echo} has no part-{missing[0]} file (found {have})"
        out.append(
            GreEchoFiles(
                echo,
                _relative(parts["mag"].path, root),
                _relative(parts["phase"].path, root),
            )
        )
    return tuple(out), warning, None


def _record(
    modality: str,
    pick: BidsFile | None,
    warning: str | None,
    problem: str | None,
    root: Path,
    chosen: dict[str, str],
    problems: dict[str, str],
    warnings: list[str],
) -> None:
    if pick is not None:
        chosen[modality] = _relative(pick.path, root)
    if warning:
        warnings.append(warning)
    if problem:
        problems[modality] = problem


def find_subjects(
    root: str | Path,
    participants: Iterable[str] | None = None,
    sessions: Iterable[str] | None = None,
    filters: Mapping[str, EntityFilter] | None = None,
    qsm_dir: str | Path | None = None,
) -> list[SubjectRef]:
    """Subjects (and sessions, where present) of a BIDS folder, sorted, each with
    the files discovery chose (:class:`SubjectFiles`).

    ``participants``: only these labels (with or without ``sub-``; unknown ones
    are ignored here, :func:`deepmir.inference.predict.select_subjects` refuses
    them); ``sessions``: only these session labels (with or without ``ses-``;
    subjects without sessions are then left out); ``filters``: from
    :func:`parse_filters`; ``qsm_dir``: a folder whose ``*_Chimap.nii[.gz]``
    files give the QSM (before the dataset's own).
    """
    root = Path(root)
    index = index_dataset(root, participants)
    qsm = index_qsm_dir(qsm_dir) if qsm_dir is not None else {}
    wanted_ses = {s.removeprefix("ses-") for s in sessions} if sessions else None
    refs = []
    for (label, session), paths in sorted(index.subjects.items(), key=lambda kv: _key(kv[0])):
        if wanted_ses is not None and session not in wanted_ses:
            continue
        qsm_files = qsm.get((label, session))
        if qsm_files is None and session is not None and qsm_dir is not None:
            qsm_files = qsm.get((label, None))  # a QSM tree without sessions
        refs.append(
            resolve_subject(
                root,
                label,
                session,
                paths,
                filters,
                qsm_files,
                Path(qsm_dir) if qsm_dir is not None else None,
            )
        )
    return refs


def _key(key: tuple[str, str | None]) -> tuple[str, str]:
    return key[0], key[1] or ""


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
