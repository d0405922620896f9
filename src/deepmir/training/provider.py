"""Where training patches come from: a *patch provider*.

The training loop asks a provider for each batch, passing it the loop's
random generator; the provider must draw every random number it needs from
that generator (and nothing else), so that a seed fixes the whole run and a
saved generator state resumes it exactly. A provider that keeps state of its
own (a cache, a counter) may expose ``state_dict() -> dict`` (JSON-serializable)
and ``load_state_dict(dict)``; both are saved with the resume state.

:class:`SubjectPatches`, the default, samples patches from prepared subjects
exactly as the training loop always did (same generator calls in the same
order, so the same seed gives bit-identical batches). An on-the-fly phantom
generator plugs in as another provider.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from deepmir.training.data import TrainingSubject
from deepmir.training.sampling import candidate_centres, extract_patch, sample_centres

FloatArray = npt.NDArray[np.float32]


@runtime_checkable
class PatchProvider(Protocol):
    """A source of training patches."""

    def batch(
        self, rng: np.random.Generator, size: int
    ) -> tuple[FloatArray, npt.NDArray[np.integer[Any]]]:
        """``size`` augmented patches drawn with ``rng``: images (size, C, *patch)
        float32 (C = the model's input channels) and labels (size, *patch)
        with the contract's label values (the loop restricts them to the
        learned classes)."""
        ...


def augment(
    rng: np.random.Generator, image: np.ndarray, label: np.ndarray, channels: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Physically plausible: mirror flips (the dipole pattern is mirror-symmetric)
    and gain/contrast changes of the arbitrary-unit channels; QSM keeps its ppm scale."""
    for axis in range(3):
        if rng.random() < 0.5:
            image = np.flip(image, axis=axis + 1)
            label = np.flip(label, axis=axis)
    image = image.copy()
    for c, name in enumerate(channels):
        if not name.startswith("qsm"):
            image[c] = image[c] * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)
    return image, label.copy()


class SubjectPatches:
    """Patches of prepared subjects: a subject at random, a centre oversampling
    lesions and mimics (:mod:`deepmir.training.sampling`), a jitter of up to a
    quarter patch, then :func:`augment`."""

    def __init__(
        self,
        subjects: list[TrainingSubject],
        channels: tuple[str, ...],
        patch_size: tuple[int, int, int],
        lesion_sampling: str = "voxel",
    ) -> None:
        if not subjects:
            raise ValueError("no training subject to draw patches from")
        self.subjects = subjects
        self.channels = channels
        self.patch_size = patch_size
        swi = channels.index("swi") if "swi" in channels else None
        self.candidates = [candidate_centres(s, swi, lesion_sampling) for s in subjects]

    def batch(
        self, rng: np.random.Generator, size: int
    ) -> tuple[FloatArray, npt.NDArray[np.uint8]]:
        images, labels = [], []
        for _ in range(size):
            k = int(rng.integers(len(self.subjects)))
            centre = sample_centres(rng, self.candidates[k], 1)[0]
            jitter = rng.integers(-self.patch_size[0] // 4, self.patch_size[0] // 4 + 1, 3)
            img = extract_patch(self.subjects[k].image, centre, self.patch_size, jitter)
            lab = extract_patch(self.subjects[k].dseg, centre, self.patch_size, jitter)
            img, lab = augment(rng, img, lab, self.channels)
            images.append(img)
            labels.append(lab)
        return np.stack(images).astype(np.float32, copy=False), np.stack(labels)


def drop_modalities(
    rng: np.random.Generator,
    images: FloatArray,
    channels: dict[str, tuple[int, ...]],
    probability: dict[str, float],
) -> None:
    """Modality dropout, in place: per patch, each modality of ``probability``
    (in the order of ``channels``) has all its channels set to zero with its
    probability. Draws nothing when ``probability`` is empty."""
    for b in range(images.shape[0]):
        for modality, index in channels.items():
            p = probability.get(modality, 0.0)
            if p > 0.0 and rng.random() < p:
                images[b, list(index)] = 0.0
