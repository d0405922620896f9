"""Plausibility of a subject's images: units, degenerate images.

The loader checks that files are readable and consistent; these checks look
at the values inside the brain. What makes a prediction meaningless is an
error (:class:`~deepmir.io.loader.SubjectDataError`, naming the file and the
problem): a QSM map that is not in ppm (ppb is 1000x larger), an image that is
constant or zero inside the brain. What makes it doubtful is a warning (a
string naming the file): a QSM map with tiny values, an image that is zero in
most of the brain. (A voxel size far from the model's is resampled, with a
warning: :meth:`deepmir.inference.resample.Resampler.voxel_size_warning`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from deepmir.io.loader import SubjectDataError

#: brain QSM is within about +-0.3 ppm, microbleeds and veins reach a few ppm:
#: a 99th percentile of |chi| in the brain above this is not in ppm
QSM_MAX_P99_PPM = 5.0
#: below this the map is suspiciously flat for ppm (chi in SI units is 1e-6 ppm)
QSM_MIN_P99_PPM = 1e-3
#: an image that is 0 in more than this fraction of the brain gets a warning
ZERO_FRACTION = 0.5

_NAMES = {"t2w": "T2w", "swi": "SWI", "qsm": "QSM"}


def check_images(
    images: Mapping[str, npt.NDArray[np.float32]],
    mask: npt.NDArray[np.bool_],
    paths: Mapping[str, Path],
) -> list[str]:
    """Check the values of each image inside the brain ``mask``; returns warnings.

    Raises
    ------
    SubjectDataError
        for an image that is constant (or zero) inside the brain, a QSM map
        whose range is not ppm, or an empty brain.
    """
    if not mask.any():
        names = ", ".join(p.name for m, p in paths.items() if m in images)
        first = paths[next(iter(images))]
        raise SubjectDataError(first, f"no brain: no voxel has signal in any of {names}")
    warnings: list[str] = []
    for modality, volume in images.items():
        path, name = paths[modality], _NAMES.get(modality, modality)
        inside = volume[mask]
        low, high = float(inside.min()), float(inside.max())
        if low == high:
            what = "zero" if low == 0 else f"constant ({low:g})"
            raise SubjectDataError(
                path,
                f"the {name} image is {what} in every one of the {inside.size} brain voxels: "
                "a degenerate image that carries no information",
            )
        if modality == "qsm":
            p99 = float(np.percentile(np.abs(inside), 99))
            if p99 > QSM_MAX_P99_PPM:
                hint = (
                    " It looks like ppb (1000 x ppm): divide it by 1000."
                    if 20 <= p99 <= 5000
                    else ""
                )
                raise SubjectDataError(
                    path,
                    f"QSM values are not in ppm: the 99th percentile of |chi| in the brain is "
                    f"{p99:.3g}, where brain tissue is within about +-0.3 ppm and microbleeds "
                    f"reach a few ppm.{hint} deepmir expects the Chimap in ppm.",
                )
            if p99 < QSM_MIN_P99_PPM:
                warnings.append(
                    f"{path}: QSM values are tiny (99th percentile of |chi| in the brain "
                    f"{p99:.3g}); deepmir expects ppm: check the units"
                )
        else:
            zero = float(np.count_nonzero(inside == 0)) / inside.size
            if zero > ZERO_FRACTION:
                warnings.append(
                    f"{path}: the {name} image is 0 in {zero:.0%} of the brain voxels "
                    "(masked or cropped differently from the brain mask?)"
                )
    return warnings
