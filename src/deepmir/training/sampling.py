"""Patch sampling that oversamples lesions of each class and their mimics.

CMBs are about 1e-5 of brain voxels, so uniform patches would almost never
show one. Patch centres are drawn (seeded) from: voxels of each lesion
class, mimics (the darkest unlabelled SWI voxels: veins, and calcifications
for a single-class model), and random brain voxels.

Within a lesion class the centre is either any voxel of the class (``voxel``:
a lesion is picked in proportion to its size) or a lesion first, each as
likely as any other whatever its size, then one of its voxels (``lesion``):
1-2 voxel CMBs, the ones a detector misses, are otherwise a hundredth of
the draws of a 200-voxel one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from deepmir.training.data import TrainingSubject

#: share of patch centres per source: lesion classes 1..3, mimics, anywhere in the brain
DEFAULT_MIX = {"cmb": 0.25, "iron": 0.15, "calcification": 0.25, "mimic": 0.2, "brain": 0.15}


@dataclass(frozen=True)
class Candidates:
    """The voxels each source of patch centres may pick, as flat (C-order)
    int32 indices into a volume of ``shape``: a twelfth of the memory of
    (N, 3) int64 coordinates (a 1 mm brain has over a million voxels), and
    the same picks (the same positions in the same order as ``np.argwhere``)."""

    shape: tuple[int, ...]
    pools: dict[str, npt.NDArray[np.int32]]
    #: per pool sorted by lesion: where each lesion's voxels start in the pool
    #: (``lesion`` sampling draws a lesion, then a voxel of it)
    starts: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)

    def position(self, rng: np.random.Generator, name: str) -> int:
        """A random position in pool ``name``: uniform over its voxels, or
        over its lesions first when the pool has ``starts``."""
        pool = self.pools[name]
        starts = self.starts.get(name)
        if starts is None:
            return int(rng.integers(len(pool)))
        k = int(rng.integers(len(starts)))
        end = int(starts[k + 1]) if k + 1 < len(starts) else len(pool)
        return int(rng.integers(int(starts[k]), end))

    def coordinates(self, name: str, position: int) -> npt.NDArray[np.int64]:
        """The (3,) voxel index of the ``position``-th candidate of ``name``."""
        flat = int(self.pools[name][position])
        return np.asarray(np.unravel_index(flat, self.shape), dtype=np.int64)


def _flat(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int32]:
    return np.flatnonzero(mask).astype(np.int32)


#: how a lesion class's patch centre is drawn (module docstring)
LESION_SAMPLING = ("voxel", "lesion")


def candidate_centres(
    subject: TrainingSubject, swi_channel: int | None, lesion_sampling: str = "voxel"
) -> Candidates:
    """The voxels of each source of patch centres (lesions: ``LESION_SAMPLING``)."""
    if lesion_sampling not in LESION_SAMPLING:
        raise ValueError(
            f"lesion sampling must be one of {LESION_SAMPLING}, got {lesion_sampling!r}"
        )
    pools, starts = {}, {}
    for label, name in ((1, "cmb"), (2, "iron"), (3, "calcification")):
        pools[name] = _flat(subject.dseg == label)
        if lesion_sampling == "lesion" and len(pools[name]):
            # group the class's voxels by reference lesion (stable: voxel order within one)
            ids = subject.instances.reshape(-1)[pools[name]]
            order = np.argsort(ids, kind="stable")
            pools[name] = pools[name][order]
            starts[name] = np.flatnonzero(np.r_[True, np.diff(ids[order]) != 0])
    pools["brain"] = _flat(subject.brain)
    if swi_channel is not None:
        swi = subject.image[swi_channel]
        free = subject.brain & (subject.dseg == 0)
        if free.any():
            threshold = np.percentile(swi[free], 0.5)
            pools["mimic"] = _flat(free & (swi <= threshold))
    return Candidates(subject.brain.shape, pools, starts)


def sample_centres(
    rng: np.random.Generator,
    candidates: Candidates,
    n: int,
    mix: dict[str, float] | None = None,
) -> npt.NDArray[np.int64]:
    """Draw ``n`` patch centres (n, 3) following ``mix`` among the sources that exist."""
    mix = mix or DEFAULT_MIX
    names = [k for k in mix if k in candidates.pools and len(candidates.pools[k])]
    p = np.array([mix[k] for k in names], dtype=float)
    p /= p.sum()
    picks = rng.choice(len(names), size=n, p=p)
    centres = []
    for i in picks:
        centres.append(candidates.coordinates(names[i], candidates.position(rng, names[i])))
    return np.asarray(centres)


def extract_patch(
    volume: npt.NDArray[np.generic],
    centre: npt.NDArray[np.int64],
    size: tuple[int, ...],
    jitter: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.generic]:
    """A patch of ``size`` around ``centre`` over the last three axes, zero-padded."""
    spatial = volume.shape[-3:]
    start = np.asarray(centre) - np.asarray(size) // 2
    if jitter is not None:
        start = start + jitter
    out = np.zeros((*volume.shape[:-3], *size), dtype=volume.dtype)
    src, dst = [], []
    for s, n, length in zip(start, spatial, size, strict=True):
        lo, hi = max(0, s), min(n, s + length)
        src.append(slice(lo, max(lo, hi)))
        dst.append(slice(lo - s, lo - s + max(0, hi - lo)))
    to: tuple[Any, ...] = (Ellipsis, *dst)
    source: tuple[Any, ...] = (Ellipsis, *src)
    out[to] = volume[source]
    return out
