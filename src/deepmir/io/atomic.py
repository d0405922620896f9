"""Atomic writes: an output file is either complete or absent.

Every writer in deepmir goes through these helpers: data are written to a
temporary name in the destination folder and renamed into place, so an
interrupted run never leaves a half-written file behind. Temporary files are
created with mode 0666 minus the umask (the mode a plain ``open`` would give),
so the renamed outputs are as readable as any other file the user writes.
A temporary name carries the writer's process id; a run that was killed
leaves its temporaries behind, and :func:`remove_stale_temporaries` deletes
them on the next run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

#: ``.<final name>.<pid>-<8 hex>.tmp<suffixes>``; before, ``tempfile.mkstemp``'s
#: ``.<final name>.<8 characters>.tmp<suffixes>`` (no pid: always stale)
_TEMPORARY = re.compile(r"^\..+\.(?:(?P<pid>\d+)-[0-9a-f]{8}|[a-z0-9_]{8})\.tmp(?:\.[^.]+)*$")


class OutputError(ValueError):
    """An output that cannot be written. The message names the path and the problem."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def os_reason(exc: OSError) -> str:
    """The reason of an OSError in words, with a hint for the usual ones."""
    reason = exc.strerror or str(exc)
    hints = {
        errno.ENOSPC: "free some space and run again",
        errno.EDQUOT: "free some space and run again",
        errno.EROFS: "the file system is mounted read-only",
        errno.EACCES: "no write permission",
        errno.EPERM: "not permitted (an immutable or protected folder?)",
    }
    hint = hints.get(exc.errno or 0)
    return f"{reason} ({hint})" if hint else reason


def _temporary_next_to(final: Path) -> Path:
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # the folder's path is taken by a file
        raise NotADirectoryError(
            errno.ENOTDIR, f"{final.parent} is a file, not a folder", str(final.parent)
        ) from exc
    suffix = "".join(final.suffixes)  # keep .nii.gz so nibabel compresses
    while True:
        tmp = final.parent / f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}"
        try:
            # 0o666: the kernel applies the umask, as for any file the user creates
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        os.close(fd)
        return tmp


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(root: str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """Delete the temporary files that killed runs left under ``root`` (in
    ``root`` alone when not ``recursive``).

    A temporary file is stale when the process that made it is gone (its pid,
    in the name, is not running on this machine) or when it has the older
    name without a pid. Returns the deleted paths."""
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for path in sorted(root.rglob(".*.tmp*") if recursive else root.glob(".*.tmp*")):
        match = _TEMPORARY.match(path.name)
        if match is None or not path.is_file():
            continue
        pid = match.group("pid")
        if pid is not None and _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def prepare_output_dir(path: str | os.PathLike[str], create: bool = True) -> Path:
    """Create ``path`` if needed and check that files can be written in it.

    With ``create=False`` a missing folder is not created: the nearest existing
    folder above it must be one where it can be.

    Raises :class:`OutputError` (a usage error) for an existing file, a folder
    that cannot be created, or one that cannot be written (read-only file
    system, immutable folder, no permission)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(path, "exists and is not a folder; choose a folder for the outputs")
    if not create and not path.exists():
        above = next(p for p in Path(os.path.abspath(path)).parents if p.exists())
        if not above.is_dir():
            raise OutputError(path, f"the folder cannot be created: {above} is a file")
        if not os.access(above, os.W_OK | os.X_OK):
            raise OutputError(path, f"the folder cannot be created: {above} is not writable")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(path, f"the folder cannot be created: {os_reason(exc)}") from exc
    try:
        _temporary_next_to(path / ".deepmir-write-test").unlink()
    except OSError as exc:
        raise OutputError(path, f"the folder is not writable: {os_reason(exc)}") from exc
    return path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success."""
    final = Path(path)
    tmp = _temporary_next_to(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_group() -> Iterator[Callable[[str | os.PathLike[str]], Path]]:
    """All or nothing for a set of files: yields ``stage(final) -> temporary path``;
    when the block succeeds every temporary file is renamed into place, when it
    fails (or a rename fails) they are all deleted, and so are the files already
    renamed (a subject's outputs are all there or none is)."""
    staged: list[tuple[Path, Path]] = []
    renamed: list[Path] = []

    def stage(path: str | os.PathLike[str]) -> Path:
        tmp = _temporary_next_to(Path(path))
        staged.append((tmp, Path(path)))
        return tmp

    try:
        yield stage
        for tmp, final in staged:
            os.replace(tmp, final)
            renamed.append(final)
    except BaseException:
        for path in [tmp for tmp, _ in staged] + renamed:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        raise


def write_all(writers: Mapping[Path, Callable[[Path], None]]) -> None:
    """Write a set of files all or nothing (:func:`atomic_group`): each writer
    gets its file's temporary path.

    Raises
    ------
    OutputError
        naming the file that could not be written and why; none is left then.
    """
    current = next(iter(writers), Path("."))
    try:
        with atomic_group() as stage:
            for current, write in writers.items():
                write(stage(current))
    except OSError as exc:
        raise OutputError(current, f"cannot be written: {os_reason(exc)}") from exc


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_text(obj: Any) -> str:
    """JSON as deepmir writes it: indented, keys in insertion order."""
    return json.dumps(obj, indent=2) + "\n"


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON (indented, keys kept in insertion order) atomically."""
    write_text(path, json_text(obj))


def write_nifti(
    path: str | os.PathLike[str],
    data: npt.NDArray[Any],
    affine: npt.NDArray[np.floating[Any]],
    dtype: npt.DTypeLike | None = None,
) -> None:
    """Write a NIfTI-1 image atomically with an exact on-disk dtype.

    Parameters
    ----------
    path : path ending in ``.nii`` or ``.nii.gz``
    data : 3D array in voxel order (i, j, k)
    affine : 4x4 voxel-to-scanner (mm) matrix
    dtype : on-disk data type; defaults to ``data.dtype``
    """
    with atomic_path(path) as tmp:
        nib.save(nifti_image(data, affine, dtype), tmp)


def nifti_image(
    data: npt.NDArray[Any],
    affine: npt.NDArray[np.floating[Any]],
    dtype: npt.DTypeLike | None = None,
) -> nib.Nifti1Image:
    """A NIfTI-1 image with an exact on-disk dtype, mm units, qform = sform = affine."""
    arr = np.asarray(data if dtype is None else data.astype(dtype, copy=False))
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.header.set_data_dtype(arr.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    return img
