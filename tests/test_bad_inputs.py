"""The bad-input battery: one row per way a run can go wrong, through the CLI.

Every row starts from a copy of a good 2-subject dataset (2 mm phantoms) and
a tiny model, breaks one thing (usually subject sub-02, a file, the model, an
argument or the output folder), runs ``deepmir`` in-process, and asserts:

* the exit code (0 all done, 1 some subjects failed, 2 usage or model error);
* an error (or warning) that names the file and the problem;
* no partial output: nothing of a failed subject (and no temporary file)
  is left; a usage error changes nothing at all;
* the other subjects were written, with the cohort index.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import json
import os
import pickle
import shutil
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from deepmir.cli import main
from deepmir.inference.predict import output_paths
from deepmir.io.atomic import remove_stale_temporaries
from deepmir.io.bids import SubjectRef
from deepmir.model.checkpoint import save_model, sha256_of
from deepmir.model.network import NetworkConfig, TinyNetworkConfig, build_network
from deepmir.training.data import fit, prepare, read_annotated
from deepmir.training.train import TrainConfig, train_on_subjects

GOOD, BAD = SubjectRef("01"), SubjectRef("02")


@pytest.fixture(scope="module")
def battery_model(simulated_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny network after a few iterations: its predictions do not matter here."""
    config = TrainConfig(
        network=TinyNetworkConfig(),
        patch_size=(32, 32, 32),
        iterations=3,
        val_every=10_000,
        seed=0,
    )
    raw = read_annotated(simulated_dataset, config.modalities)
    norm = fit(raw, config.modalities)
    result = train_on_subjects([prepare(r, norm) for r in raw], [], norm, config, progress=False)
    out = tmp_path_factory.mktemp("battery") / "model"
    save_model(out, result.net, result.card)
    return out


@dataclass
class Env:
    """What a row may change before the run."""

    tmp: Path
    data: Path
    out: Path
    model: Path
    monkeypatch: pytest.MonkeyPatch
    argv: list[str] = field(default_factory=list)
    #: files under ``out`` before the run (path -> (size, mtime)), taken after the setup
    before: dict[Path, tuple[int, int]] = field(default_factory=dict)
    #: run after the command, pass or fail
    cleanup: list[Callable[[], object]] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Env], None]
    rc: int
    #: fragments of the error (or warning): the file and the problem
    message: tuple[str, ...]
    #: the command is predict over both subjects (else simulate, train, ...)
    predict: bool = True
    check: Callable[[Env, str], None] | None = None


# --------------------------------------------------------------------------
# ways to break things


def _edit(env: Env, modality: str, change: Callable[[np.ndarray, np.ndarray], tuple]) -> Path:
    """Rewrite one of sub-02's files (modality key, or "mask") through ``change``."""
    path = BAD.mask_path(env.data) if modality == "mask" else BAD.modality_path(env.data, modality)
    img = nib.load(path)
    data, affine = change(np.asarray(img.dataobj), img.affine)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _set(modality: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Env], None]:
    return lambda env: _edit(env, modality, lambda d, a: (change(d.copy()), a))


def _nan(d: np.ndarray) -> np.ndarray:
    d[10, 10, 10] = np.nan
    return d


def _inf(d: np.ndarray) -> np.ndarray:
    d[20, 20, 20] = np.inf
    return d


def _remove(modality: str) -> Callable[[Env], None]:
    return lambda env: BAD.modality_path(env.data, modality).unlink()


def _shift_affine(env: Env) -> None:
    def shift(d: np.ndarray, a: np.ndarray) -> tuple:
        a = a.copy()
        a[0, 3] += 2.0
        return d, a

    _edit(env, "qsm", shift)


def _raw(env: Env, modality: str = "swi") -> tuple[Path, bytes]:
    path = BAD.modality_path(env.data, modality)
    return path, path.read_bytes()


def _truncate(env: Env) -> None:
    path, raw = _raw(env)
    path.write_bytes(raw[: len(raw) // 2])


def _empty_file(env: Env) -> None:
    BAD.modality_path(env.data, "swi").write_bytes(b"")


def _text_file(env: Env) -> None:
    BAD.modality_path(env.data, "swi").write_text("subject 02, swi: see the scanner console\n")


def _gzipped_text(env: Env) -> None:
    BAD.modality_path(env.data, "swi").write_bytes(gzip.compress(b"not a NIfTI image\n" * 50))


def _header_only(env: Env) -> None:
    path, raw = _raw(env)
    path.write_bytes(gzip.compress(gzip.decompress(raw)[:352]))


def _changed_voxels_same_crc(env: Env) -> None:
    """Voxels changed inside a valid deflate stream, the stored CRC32 the original's:
    what a flipped bit on disk or in transit looks like once it decompresses."""
    path, raw = _raw(env)
    data = gzip.decompress(raw)
    changed = bytearray(data)
    changed[len(data) // 2] ^= 0xFF
    blob = bytearray(gzip.compress(bytes(changed), mtime=0))
    blob[-8:-4] = struct.pack("<I", zlib.crc32(data))
    path.write_bytes(bytes(blob))


def _flipped_byte(env: Env) -> None:
    """One flipped byte of the compressed stream that zlib decompresses without
    complaint (only the CRC32 or the length tells)."""
    path, raw = _raw(env)
    for position in range(len(raw) // 2, len(raw) - 8):
        blob = bytearray(raw)
        blob[position] ^= 0x04
        try:
            gzip.decompress(bytes(blob))
        except gzip.BadGzipFile:
            path.write_bytes(bytes(blob))
            return
        except (zlib.error, EOFError):
            continue
    raise AssertionError("no silent flip found")


def _rescale_affine(env: Env) -> None:
    """All of sub-02's images with 5 mm slices (2 x 2 x 5 mm voxels): resampled to
    the model's working grid, with a warning (beyond the usual 0.4-3 mm)."""

    def half(d: np.ndarray, a: np.ndarray) -> tuple:
        a = a.copy()
        a[:3, 2] *= 2.5
        return d, a

    for modality in ("t2w", "swi", "qsm", "mask"):
        _edit(env, modality, half)


def _args(*extra: str) -> Callable[[Env], None]:
    return lambda env: env.argv.extend(extra)


def _no_subjects(env: Env) -> None:
    shutil.rmtree(env.data)
    env.data.mkdir()
    env.argv[env.argv.index("--data") + 1] = str(env.data)


def _data_path(kind: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        target = env.tmp / "nowhere"
        if kind == "file":
            target.write_text("not a folder")
        env.argv[env.argv.index("--data") + 1] = str(target)

    return setup


def _own_model(env: Env) -> Path:
    copy = env.tmp / "model"
    shutil.copytree(env.model, copy)
    env.argv[env.argv.index("--model") + 1] = str(copy)
    return copy


def _tamper(env: Env) -> None:
    weights = _own_model(env) / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-100] ^= 0x01
    weights.write_bytes(bytes(blob))


def _reseal(model: Path) -> None:
    """Make config.json's sha256 match the (replaced) weights: not a tampering case."""
    config = json.loads((model / "config.json").read_text())
    config["weights_sha256"] = sha256_of(model / "model.safetensors")
    (model / "config.json").write_text(json.dumps(config))


class _Payload:
    """Unpickling this creates a folder: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.marker,))


def _pickle_weights(env: Env) -> None:
    model = _own_model(env)
    (model / "model.safetensors").write_bytes(pickle.dumps(_Payload(env.tmp / "UNPICKLED")))
    _reseal(model)


def _torch_save_weights(env: Env) -> None:
    model = _own_model(env)
    net = build_network(TinyNetworkConfig(), in_channels=4)
    torch.save(net.state_dict(), model / "model.safetensors")
    _reseal(model)


def _other_architecture(env: Env) -> None:
    model = _own_model(env)
    net = build_network(NetworkConfig(), in_channels=4)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(model / "model.safetensors"))
    _reseal(model)


def _edit_config(change: Callable[[dict], None]) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        path = _own_model(env) / "config.json"
        config = json.loads(path.read_text())
        change(config)
        path.write_text(json.dumps(config))

    return setup


def _untrained(config: dict) -> None:
    config["training"]["iterations_run"] = 0


def _bad_config(env: Env) -> None:
    (_own_model(env) / "config.json").write_text("{ not json")


def _missing_model(env: Env) -> None:
    env.argv[env.argv.index("--model") + 1] = str(env.tmp / "no-model")


def _out_is_file(env: Env) -> None:
    env.out.write_text("a file where the outputs should go\n")


def _out_under_file(env: Env) -> None:
    blocker = env.tmp / "blocker"
    blocker.write_text("a file\n")
    env.out = blocker / "deriv"
    env.argv[env.argv.index("--out") + 1] = str(env.out)


def _read_only(env: Env) -> None:
    """The output folder exists on a read-only file system (as root, chmod would not do)."""
    env.out.mkdir()
    real = os.open

    def read_only(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).startswith(str(env.out)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, flags, *args, **kwargs)

    env.monkeypatch.setattr(os, "open", read_only)


def _disk_full(only: str | None) -> Callable[[Env], None]:
    """Every write under --out (or only sub-02's NIfTI writes) fails with ENOSPC."""

    def setup(env: Env) -> None:
        save, write_text = nib.save, Path.write_text

        def full(path: object) -> OSError:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        def nib_save(img, filename, *args, **kwargs):  # type: ignore[no-untyped-def]
            if str(filename).startswith(str(env.out)) and (only is None or only in str(filename)):
                raise full(filename)
            return save(img, filename, *args, **kwargs)

        def path_write_text(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if only is None and str(self).startswith(str(env.out)):
                raise full(self)
            return write_text(self, *args, **kwargs)

        env.monkeypatch.setattr(nib, "save", nib_save)
        env.monkeypatch.setattr(Path, "write_text", path_write_text)

    return setup


def _anat_is_a_file(env: Env) -> None:
    """sub-02's output folder cannot be made (the ``chattr +i`` case, as root too)."""
    (env.out / "sub-02").mkdir(parents=True)
    (env.out / "sub-02" / "anat").write_text("not a folder\n")


def _umask(env: Env) -> None:
    old = os.umask(0o027)
    env.cleanup.append(lambda: os.umask(old))


def _modes(env: Env, text: str) -> None:
    files = [p for p in env.out.rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o640 for p in files), [
        (p.name, oct(p.stat().st_mode)) for p in files
    ]
    folders = [p for p in env.out.rglob("*") if p.is_dir()]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o750 for p in folders)


STALE = (
    ".sub-01_desc-deepmir_dseg.nii.gz.2147483000-0123abcd.tmp.nii.gz",  # pid of no process
    ".sub-01_desc-deepmir_lesions.tsv.x1y2z3w4.tmp.tsv",  # older name, without a pid
)


def _stale_temporaries(env: Env) -> None:
    anat = GOOD.anat_dir(env.out)
    anat.mkdir(parents=True)
    for name in STALE:
        (anat / name).write_bytes(b"\0" * 1000)


def _no_stale(env: Env, text: str) -> None:
    assert not any((GOOD.anat_dir(env.out) / name).exists() for name in STALE)


def _earlier_run(env: Env) -> None:
    """A complete earlier run (with probabilities); then sub-02's QSM gets a NaN."""
    args = ["predict", "--data", str(env.data), "--out", str(env.out), "--model", str(env.model)]
    assert main([*args, "--save-probabilities"]) == 0
    assert output_paths(env.out, BAD)["dseg"].exists()
    _edit(env, "qsm", lambda d, a: (_nan(d.copy()), a))


def _earlier_outputs_gone(env: Env, text: str) -> None:
    index = (env.out / "index.html").read_text()
    assert "earlier run were removed" in index
    # sub-01 succeeded without --save-probabilities: its old probabilities went too
    assert not output_paths(env.out, GOOD)["prob-1"].exists()


def _voxel_warning(env: Env, text: str) -> None:
    assert any(line.startswith("sub-02: WARNING: ") for line in text.splitlines())
    assert "warning: " in (env.out / "index.html").read_text()
    assert output_paths(env.out, BAD)["dseg"].exists()


# simulate, train and other commands --------------------------------------


def _simulate(*extra: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        env.argv[:] = ["simulate", "--out", str(env.out), "--size", "small", "--n", "1", *extra]

    return setup


def _existing_cohort(*extra: str) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        shutil.copytree(env.data, env.out)
        _simulate(*extra)(env)

    return setup


def _foreign_folder(env: Env) -> None:
    env.out.mkdir()
    (env.out / "thesis.tex").write_text("\\documentclass{article}\n")
    _simulate("--overwrite")(env)


def _replaced_cohort(env: Env, text: str) -> None:
    participants = (env.out / "participants.tsv").read_text().splitlines()
    assert [p.split("\t")[0] for p in participants[1:]] == ["sub-01"]
    description = json.loads((env.out / "dataset_description.json").read_text())
    assert description["deepmir_simulation"]["seed"] == 3
    assert not (env.out / "sub-02").exists()


def _command(*argv: str) -> Callable[[Env], None]:
    """``{data}``, ``{out}`` and ``{model}`` are filled in."""

    def setup(env: Env) -> None:
        values = {"data": env.data, "out": env.out, "model": env.model}
        env.argv[:] = [a.format(**values) for a in argv]

    return setup


CASES = [
    # input files of one subject: it fails alone (rc 1), naming the file ---------------
    Case("missing-modality", _remove("qsm"), 1, ("sub-02_Chimap.nii.gz", "missing: qsm")),
    Case(
        "grid-shape",
        lambda env: _edit(env, "t2w", lambda d, a: (d[:-2].copy(), a)),
        1,
        ("sub-02_T2w.nii.gz: grid does not match", "shape (78, 96, 80)"),
    ),
    Case(
        "grid-affine",
        _shift_affine,
        1,
        ("sub-02_Chimap.nii.gz: grid does not match", "affines differ by up to 2 mm"),
    ),
    Case(
        "mask-grid",
        lambda env: _edit(env, "mask", lambda d, a: (d[:, :-1].copy(), a)),
        1,
        ("sub-02_desc-brain_mask.nii.gz: grid does not match", "shape (80, 95, 80)"),
    ),
    Case("nan", _set("qsm", _nan), 1, ("sub-02_Chimap.nii.gz", "1 NaN or infinite voxels")),
    Case("inf", _set("swi", _inf), 1, ("sub-02_swi.nii.gz", "1 NaN or infinite voxels")),
    Case(
        "4d",
        lambda env: _edit(env, "swi", lambda d, a: (np.stack([d, d], -1), a)),
        1,
        ("sub-02_swi.nii.gz", "expected a 3D volume, got 4D"),
    ),
    Case(
        "integer-dtype",
        _set("t2w", lambda d: d.astype(np.int16)),
        1,
        ("sub-02_T2w.nii.gz", "holds int16 data; expected floating point"),
    ),
    Case(
        "empty-mask",
        _set("mask", np.zeros_like),
        1,
        ("sub-02_desc-brain_mask.nii.gz", "brain mask is empty"),
    ),
    Case("truncated-gzip", _truncate, 1, ("sub-02_swi.nii.gz", "corrupt or truncated")),
    Case("empty-file", _empty_file, 1, ("sub-02_swi.nii.gz", "file is empty (0 bytes)")),
    Case("not-gzip", _text_file, 1, ("sub-02_swi.nii.gz", "is not a gzip file")),
    Case("not-nifti", _gzipped_text, 1, ("sub-02_swi.nii.gz", "not a readable NIfTI image")),
    Case("header-only", _header_only, 1, ("sub-02_swi.nii.gz", "not a readable NIfTI image")),
    # D4: corruption inside the gzip stream, caught by its CRC32
    Case(
        "gzip-crc",
        _changed_voxels_same_crc,
        1,
        ("sub-02_swi.nii.gz", "corrupt", "CRC check failed"),
    ),
    Case("gzip-flipped-byte", _flipped_byte, 1, ("sub-02_swi.nii.gz", "corrupt")),
    # D5, D9: implausible values
    Case(
        "qsm-in-ppb",
        _set("qsm", lambda d: d * 1000),
        1,
        ("sub-02_Chimap.nii.gz", "not in ppm", "ppb"),
    ),
    Case(
        "zero-swi",
        _set("swi", np.zeros_like),
        1,
        ("sub-02_swi.nii.gz", "SWI image is zero in every one of the"),
    ),
    Case(
        "constant-t2w",
        _set("t2w", lambda d: np.full_like(d, 100.0)),
        1,
        ("sub-02_T2w.nii.gz", "T2w image is constant (100)"),
    ),
    Case(
        "voxel-size",
        _rescale_affine,
        0,
        ("sub-02_", "voxel size 2 x 2 x 5 mm is far from the model's working grid"),
        check=_voxel_warning,
    ),
    # D3, D2: write errors ---------------------------------------------------------------
    Case(
        "subject-folder-unwritable",
        _anat_is_a_file,
        1,
        ("sub-02_desc-deepmir_dseg.nii.gz", "cannot be written", "anat is a file, not a folder"),
    ),
    Case(
        "disk-full-during-a-subject",
        _disk_full("sub-02"),
        1,
        ("sub-02_desc-deepmir_dseg.nii.gz", "No space left on device"),
    ),
    Case(
        "disk-full-from-the-start",
        _disk_full(None),
        2,
        ("dataset_description.json", "No space left on device"),
    ),
    Case("out-is-a-file", _out_is_file, 2, ("deriv", "exists and is not a folder")),
    Case("out-under-a-file", _out_under_file, 2, ("blocker/deriv", "cannot be created")),
    Case("out-read-only", _read_only, 2, ("deriv", "not writable", "Read-only file system")),
    # D1, D11, D12: what a run leaves --------------------------------------------------
    Case("umask-modes", _umask, 0, (), check=_modes),
    Case(
        "stale-temporaries",
        _stale_temporaries,
        0,
        ("removed 2 temporary file(s)",),
        check=_no_stale,
    ),
    Case(
        "stale-outputs",
        _earlier_run,
        1,
        ("sub-02_Chimap.nii.gz", "NaN", "output file(s) from an earlier run were removed"),
        check=_earlier_outputs_gone,
    ),
    # usage errors: rc 2 before any work --------------------------------------------------
    Case("no-subjects", _no_subjects, 2, ("data", "no sub-* folders")),
    Case("data-missing", _data_path("missing"), 2, ("nowhere", "does not exist")),
    Case("data-is-a-file", _data_path("file"), 2, ("nowhere", "is a file")),
    Case(
        "unknown-participant",
        _args("--participant-label", "99"),
        2,
        ("/data", "no such participant(s): 99"),
    ),
    Case("threshold", _args("--threshold", "1.5"), 2, ("--threshold", "must be in (0, 1)")),
    # D10: model folders -----------------------------------------------------------------
    Case("tampered-weights", _tamper, 2, ("model.safetensors", "does not match config.json")),
    Case(
        "pickle-as-safetensors",
        _pickle_weights,
        2,
        ("model.safetensors", "is a pickle file, not safetensors", "never unpickles"),
    ),
    Case(
        "torch-save-as-safetensors",
        _torch_save_weights,
        2,
        ("model.safetensors", "zip (torch.save)", "never unpickles"),
    ),
    Case(
        "other-architecture",
        _other_architecture,
        2,
        ("model.safetensors", "do not fit the architecture in config.json"),
    ),
    Case("untrained-model", _edit_config(_untrained), 2, ("config.json", "never trained")),
    Case("bad-config", _bad_config, 2, ("config.json", "not a deepmir model config")),
    Case("missing-model", _missing_model, 2, ("no-model", "does not exist")),
    # D13, D14: simulate ------------------------------------------------------------------
    Case(
        "simulate-into-a-dataset",
        _existing_cohort("--seed", "3"),
        2,
        ("deriv", "is not empty", "--overwrite"),
        predict=False,
    ),
    Case(
        "simulate-overwrite-other-folder",
        _foreign_folder,
        2,
        ("deriv", "holds no deepmir phantom cohort"),
        predict=False,
    ),
    Case(
        "simulate-overwrite",
        _existing_cohort("--seed", "3", "--overwrite"),
        0,
        (),
        predict=False,
        check=_replaced_cohort,
    ),
    Case(
        "simulate-negative-index",
        _simulate("--first-index", "-1"),
        2,
        ("--first-index", "must be 0 or more, got -1"),
        predict=False,
    ),
    Case(
        "simulate-negative-seed",
        _simulate("--seed", "-1"),
        2,
        ("--seed", "must be 0 or more"),
        predict=False,
    ),
    Case("simulate-zero-subjects", _simulate("--n", "0"), 2, ("--n", "must be 1 or more"), False),
    # D15 and the other commands' ranges ----------------------------------------------------
    Case(
        "train-zero-iterations",
        _command("train", "--data", "{data}", "--out", "{out}", "--iterations", "0"),
        2,
        ("--iterations", "must be 1 or more, got 0"),
        predict=False,
    ),
    Case(
        "train-negative-iterations",
        _command("train", "--data", "{data}", "--out", "{out}", "--iterations", "-5"),
        2,
        ("--iterations", "must be 1 or more, got -5"),
        predict=False,
    ),
    Case(
        "train-out-is-a-file",
        lambda env: (
            _out_is_file(env),
            _command("train", "--data", "{data}", "--out", "{out}")(env),
        ),
        2,
        ("deriv", "exists and is not a folder"),
        predict=False,
    ),
    Case(
        "train-missing-data",
        _command("train", "--data", "{out}/none", "--out", "{out}/model"),
        2,
        ("none", "does not exist"),
        predict=False,
    ),
    Case(
        "evaluate-bootstrap",
        _command(
            "evaluate",
            "--reference",
            "{data}",
            "--predictions",
            "{out}",
            "--out",
            "{out}",
            "--n-bootstrap",
            "-1",
        ),
        2,
        ("--n-bootstrap", "must be 0 or more"),
        predict=False,
    ),
    Case(
        "cv-one-fold",
        _command("cv", "--data", "{data}", "--out", "{out}", "--folds", "1"),
        2,
        ("--folds", "must be 2 or more"),
        predict=False,
    ),
]


def _files(root: Path) -> dict[Path, tuple[int, int]]:
    if not root.is_dir():
        return {root: (root.stat().st_size, root.stat().st_mtime_ns)} if root.exists() else {}
    return {
        p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, simulated_dataset, battery_model, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    shutil.copytree(simulated_dataset, data, ignore=shutil.ignore_patterns("derivatives"))
    out = tmp_path / "deriv"
    argv = ["predict", "--data", str(data), "--out", str(out), "--model", str(battery_model)]
    env = Env(tmp_path, data, out, battery_model, monkeypatch, argv)
    case.setup(env)
    capsys.readouterr()
    env.before = _files(env.out)
    try:
        rc = main(env.argv)
    finally:
        for undo in env.cleanup:
            undo()
        monkeypatch.undo()
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert rc == case.rc, text
    flat = " ".join(text.split())
    for fragment in case.message:
        assert fragment.lower() in flat.lower(), f"{fragment!r} not in:\n{text}"
    after = _files(env.out)
    assert not [p for p in after if ".tmp" in p.name], "temporary files left"
    assert not (tmp_path / "UNPICKLED").exists(), "something was unpickled"
    if case.rc == 2:  # refused before any work: nothing changed
        assert after == env.before, "a usage error wrote something"
    if case.predict and case.rc != 2:
        for name, path in output_paths(env.out, GOOD).items():
            if "prob" not in path.name and not name.startswith("mask"):  # mask: if derived
                assert path.exists(), f"the good subject was not written: {path}"
        index = (env.out / "index.html").read_text()
        assert "sub-01_desc-deepmir_report.html" in index
        bad_outputs = [p for p in after if p.name.startswith("sub-02") and "deepmir" in p.name]
        if case.rc == 1:  # the FAILED line is a line of its own
            failed = [line for line in captured.out.splitlines() if line.startswith("sub-02: FAIL")]
            assert failed and failed[0].startswith("sub-02: FAILED: "), text
            for fragment in case.message:
                assert fragment.lower() in failed[0].lower()
            assert not bad_outputs, f"partial output of the failed subject: {bad_outputs}"
            assert "failed" in index and "sub-02" in index
    if case.check is not None:
        case.check(env, text)


def test_stale_temporaries_of_live_processes_are_kept(tmp_path):
    live = tmp_path / f".a.nii.gz.{os.getpid()}-0123abcd.tmp.nii.gz"
    other = tmp_path / ".a.nii.gz.1-0123abcd.tmp.nii.gz"  # pid 1 runs
    dead = tmp_path / "sub" / ".a.nii.gz.2147483000-0123abcd.tmp.nii.gz"
    dead.parent.mkdir()
    for path in (live, other, dead):
        path.write_bytes(b"x")
    (tmp_path / "a.tmp.nii.gz").write_bytes(b"x")  # not a temporary name: never touched
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert live.exists() and other.exists() and (tmp_path / "a.tmp.nii.gz").exists()


class _FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_failed_line_is_not_glued_to_the_progress_bar(simulated_dataset, battery_model, tmp_path):
    """On a terminal the bar is drawn; the FAILED line still starts a line of its own."""
    data = tmp_path / "data"
    shutil.copytree(simulated_dataset, data, ignore=shutil.ignore_patterns("derivatives"))
    BAD.modality_path(data, "qsm").unlink()
    terminal = _FakeTerminal()
    with contextlib.redirect_stdout(terminal), contextlib.redirect_stderr(terminal):
        argv = ["predict", "--data", str(data), "--out", str(tmp_path / "o")]
        rc = main([*argv, "--model", str(battery_model), "--no-report"])
    assert rc == 1
    text = terminal.getvalue()
    assert "predict:" in text  # the bar was drawn
    pieces = text.replace("\r", "\n").splitlines()
    assert any(p.startswith("sub-02: FAILED: ") for p in pieces), text
