"""``deepmir predict`` on raw GRE: SWI and QSM computed, written, then used.

A subject that lacks its SWI or QSM (Chimap) but has raw GRE magnitude and
phase (:class:`deepmir.io.bids.GreEchoFiles`) gets them from
:func:`deepmir.qsm.gre.swi_qsm_from_gre`, written with the predictions as
derivatives on the GRE's grid::

    <out>/sub-<id>[/ses-<s>]/anat/sub-<id>[_ses-<s>]_desc-fromgre_swi.nii.gz   (+ .json)
    <out>/sub-<id>[/ses-<s>]/anat/sub-<id>[_ses-<s>]_desc-fromgre_Chimap.nii.gz (ppm, + .json)

(both files at once, atomically), and the subject's missing modalities then
point at them: the detector reads them like any input file. A modality the
subject has as a file is kept (the GRE fills only what is missing). The JSON
sidecars name the sources, methods, phase units and sign read, and the brain
mask used.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np

from deepmir.io.atomic import json_text, nifti_image, write_all
from deepmir.io.bids import SubjectRef
from deepmir.io.bids_meta import bids_uri
from deepmir.io.loader import SubjectDataError, read_nifti
from deepmir.qsm.gre import GreEcho, read_echo_time, read_gre, swi_qsm_from_gre


def gre_output_paths(out: Path, ref: SubjectRef) -> dict[str, Path]:
    """The derivatives computed from raw GRE (module docstring)."""
    anat = ref.anat_dir(out)
    p = ref.prefix
    return {
        "swi": anat / f"{p}_desc-fromgre_swi.nii.gz",
        "swi-json": anat / f"{p}_desc-fromgre_swi.json",
        "qsm": anat / f"{p}_desc-fromgre_Chimap.nii.gz",
        "qsm-json": anat / f"{p}_desc-fromgre_Chimap.json",
    }


def needs_gre(root: Path, ref: SubjectRef) -> bool:
    """Whether the subject has usable raw GRE and lacks its SWI or QSM file."""
    if ref.files is None or not ref.files.gre:
        return False
    return not (ref.has(root, "swi") and ref.has(root, "qsm"))


def gre_echoes(root: Path, ref: SubjectRef) -> list[GreEcho]:
    """The subject's raw GRE echoes with their echo times (sidecars)."""
    assert ref.files is not None
    echoes = []
    for e in ref.files.gre:
        mag, phase = Path(root) / e.magnitude, Path(root) / e.phase
        te, _ = read_echo_time(mag, phase)
        echoes.append(GreEcho(e.echo, mag, phase, te))
    return echoes


def derive_from_gre(
    root: Path, out: Path, ref: SubjectRef, phase_sign: str = "auto"
) -> tuple[SubjectRef, list[Path], list[str]]:
    """Compute, write and use SWI and QSM from the subject's raw GRE.

    Returns the subject with its missing modalities pointing at the written
    derivatives, the files written, and warnings (what was computed).

    Raises
    ------
    SubjectDataError
        bad raw GRE (a file, a sidecar, units), naming the file.
    OutputError
        a derivative cannot be written (nothing of it is left).
    """
    assert ref.files is not None
    data = read_gre(gre_echoes(root, ref))
    mask = None
    if ref.has_mask(root):
        mask_path = ref.mask_path(root)
        img, arr = read_nifti(mask_path)
        arr = np.asarray(arr)
        if arr.ndim == 4 and arr.shape[3] == 1:
            arr = arr[..., 0]
        if arr.shape != data.magnitude.shape[:3] or not np.allclose(
            np.asarray(img.affine), data.affine, atol=1e-3
        ):
            raise SubjectDataError(
                mask_path,
                f"brain mask grid {arr.shape} differs from the raw GRE's "
                f"{data.magnitude.shape[:3]} (the mask must be on the GRE grid)",
            )
        mask = arr > 0
    result = swi_qsm_from_gre(data, mask, phase_sign)
    paths = gre_output_paths(out, ref)
    sidecar = result.sidecar(data, root)
    sidecar["Sources"] = [bids_uri(s, out, {}) for s in sidecar["Sources"]]  # BIDS URIs
    writers = {
        "swi": lambda tmp: nib.save(nifti_image(result.swi, data.affine, np.float32), tmp),
        "qsm": lambda tmp: nib.save(nifti_image(result.chimap, data.affine, np.float32), tmp),
        "swi-json": lambda tmp: tmp.write_text(
            json_text({"Description": "SWI computed by deepmir from raw GRE", **sidecar}),
            encoding="utf-8",
        ),
        "qsm-json": lambda tmp: tmp.write_text(
            json_text(
                {
                    "Description": "QSM computed by deepmir from raw GRE",
                    "Units": "ppm",
                    "SkullStripped": True,  # chi is 0 outside the brain mask
                    **sidecar,
                }
            ),
            encoding="utf-8",
        ),
    }
    write_all({paths[name]: write for name, write in writers.items()})
    modalities = dict(ref.files.modalities)
    for modality in ("swi", "qsm"):
        if not ref.has(root, modality):
            modalities[modality] = str(paths[modality].resolve())
    files = dataclasses.replace(ref.files, modalities=modalities)
    sign = f"{result.phase_sign:+d} ({result.phase_sign_source})"
    warnings = [
        f"SWI and QSM computed from raw GRE ({len(data.echo_times_s)} echo(es), phase read as "
        f"{result.phase_units}, sign {sign}, brain mask: {result.mask_method}, "
        f"{result.seconds:.1f} s): {paths['swi'].name}, {paths['qsm'].name}"
    ]
    return dataclasses.replace(ref, files=files), list(paths.values()), warnings
