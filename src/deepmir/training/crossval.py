"""``deepmir cv`` and ``deepmir ablate``: cross-validation by subject.

Folds split subjects, never patches. Each fold fits its normalization on its
training subjects only, keeps a few of them for best-checkpoint selection
(validation lesion F1), trains, and predicts its held-out subjects; held-out
predictions of all folds are scored together with
:func:`deepmir.evaluation.compute_metrics` (pooled figures as in the paper)
and per fold. K = number of subjects is leave-one-out, as in DEEPMIR.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepmir.evaluation import SubjectMatch, compute_metrics, write_evaluation
from deepmir.evaluation.metrics import EvaluationResult
from deepmir.io.atomic import write_json, write_text
from deepmir.labels import LESION_CLASSES
from deepmir.training.data import RawSubject, fit, prepare, read_annotated
from deepmir.training.train import TrainConfig, match_predictions, train_on_subjects

#: the paper's modality sets (Rashid et al. 2021, Table 2) and its single-class model
ABLATION_VARIANTS: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "SWI": (("swi",), (1, 2, 3)),
    "SWI+QSM": (("swi", "qsm"), (1, 2, 3)),
    "SWI+T2w": (("t2w", "swi"), (1, 2, 3)),
    "SWI+QSM+T2w": (("t2w", "swi", "qsm"), (1, 2, 3)),
    "SWI+QSM+T2w single-class (CMB)": (("t2w", "swi", "qsm"), (1,)),
}


@dataclass
class CVResult:
    overall: EvaluationResult
    folds: list[EvaluationResult]
    fold_subjects: list[list[str]]
    seconds: float
    config: TrainConfig
    fold_training: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    n_validation: int = 2

    def row(self, result: EvaluationResult) -> dict[str, Any]:
        return summary_row(result, self.config.target_labels)

    def rows(self, pooled: str = "overall (pooled)") -> dict[str, dict[str, Any]]:
        """Table 2 rows: one per fold, then the pooled figures."""
        rows = {f"fold {k + 1}": self.row(f) for k, f in enumerate(self.folds)}
        rows[pooled] = self.row(self.overall)
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "n_validation": self.n_validation,
            "folds": [
                {"held_out": s, "figures": self.row(r), "training": t}
                for s, r, t in zip(self.fold_subjects, self.folds, self.fold_training, strict=True)
            ],
            "overall": self.row(self.overall),
            "seconds": round(self.seconds, 1),
        }


def split_folds(n_subjects: int, folds: int, seed: int) -> list[np.ndarray]:
    """Subject indices of each fold (seeded shuffle, sizes differ by at most one)."""
    if not 2 <= folds <= n_subjects:
        raise ValueError(f"--folds must be between 2 and the number of subjects ({n_subjects})")
    order = np.random.default_rng(seed).permutation(n_subjects)
    return [np.sort(f) for f in np.array_split(order, folds)]


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 4)


def summary_row(result: EvaluationResult, learned: tuple[int, ...] = (1, 2, 3)) -> dict[str, Any]:
    """Pooled figures per class plus calcification -> CMB confusion (DEEPMIR Table 2).

    Classes a model did not learn (the single-class model) keep their counts
    but get no sensitivity, precision or F1."""
    row: dict[str, Any] = {}
    for label, name in LESION_CLASSES.items():
        m = result.classes[name]
        counts = {"n_reference": m.n_reference, "n_predicted": m.n_predicted}
        if label not in learned:
            row[name] = counts | dict.fromkeys(("sensitivity", "precision", "f1", "fp_per_subject"))
            continue
        row[name] = counts | {
            "TP": m.true_positives,
            "FP": m.false_positives,
            "FN": m.false_negatives,
            "sensitivity": _finite(m.sensitivity),
            "precision": _finite(m.precision),
            "f1": _finite(m.f1),
            "fp_per_subject": _finite(m.fp_per_subject),
        }
    n_calc = result.classes["calcification"].n_reference
    row["calcification_as_cmb"] = (
        _finite(result.confusion.found_as(3, 1) / n_calc) if n_calc else None
    )
    return row


def cross_validate(
    data: str | Path | list[RawSubject],
    config: TrainConfig,
    folds: int,
    n_validation: int = 2,
    progress: bool = True,
    log: Any = print,
) -> CVResult:
    """K-fold cross-validation by subject; returns pooled and per-fold evaluations."""
    raw = data if isinstance(data, list) else read_annotated(data, config.modalities)
    raw = [_select(r, config.modalities) for r in raw]
    splits = split_folds(len(raw), folds, config.seed)
    start = time.perf_counter()
    all_matches: dict[str, SubjectMatch] = {}
    fold_results, fold_subjects, fold_training = [], [], []
    # held-out subjects are scored against their whole reference, so that a
    # single-class model's calcifications called CMB show in the confusion
    every_class = dataclasses.replace(config, target_labels=(1, 2, 3))
    for k, test_idx in enumerate(splits):
        train_idx = [i for i in range(len(raw)) if i not in set(test_idx.tolist())]
        norm = fit([raw[i] for i in train_idx], config.modalities)
        prepared = [prepare(raw[i], norm) for i in train_idx]
        n_val = n_validation if len(prepared) > n_validation + 1 else 0
        val, train = prepared[:n_val], prepared[n_val:]
        log(
            f"fold {k + 1}/{len(splits)}: train {len(train)}, validation {len(val)}, "
            f"held out {len(test_idx)}"
        )
        result = train_on_subjects(train, val, norm, config, progress=progress)
        test = [prepare(raw[i], norm) for i in test_idx]
        matches = match_predictions(result.net, test, every_class, result.card.post)
        all_matches.update(matches)
        fold_results.append(compute_metrics(matches, seed=config.seed, n_bootstrap=0))
        fold_subjects.append([t.name for t in test])
        fold_training.append(
            {k: v for k, v in result.card.training.items() if k != "config"}
            | {"post_processing": result.card.post.to_dict()}
        )
    overall = compute_metrics(all_matches, seed=config.seed, n_bootstrap=1000)
    seconds = time.perf_counter() - start
    return CVResult(
        overall, fold_results, fold_subjects, seconds, config, fold_training, n_validation
    )


def _select(raw: RawSubject, modalities: tuple[str, ...]) -> RawSubject:
    """The subject with only the modalities of this run (ablation reuses one read)."""
    missing = [m for m in modalities if m not in raw.images]
    if missing:
        raise ValueError(f"{raw.ref}: modality {', '.join(missing)} was not read")
    return dataclasses.replace(raw, images={m: raw.images[m] for m in modalities})


def table2_tsv(rows: dict[str, dict[str, Any]]) -> str:
    """One line per model/fold: per-class sensitivity, precision, F1 (DEEPMIR Table 2)."""
    header = ["model"]
    for name in LESION_CLASSES.values():
        header += [f"{name}_{figure}" for figure in ("sensitivity", "precision", "f1")]
        header.append(f"{name}_fp_per_subject")
    header.append("calcification_as_cmb")
    lines = ["\t".join(header)]
    for model, row in rows.items():
        cells = [model]
        for name in LESION_CLASSES.values():
            c = row[name]
            cells += [
                _cell(c["sensitivity"]),
                _cell(c["precision"]),
                _cell(c["f1"]),
                _cell(c["fp_per_subject"]),
            ]
        cells.append(_cell(row["calcification_as_cmb"]))
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


def _cell(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def write_cv(result: CVResult, out: str | Path) -> None:
    """Per fold and overall evaluation folders, table2.tsv and cv.json."""
    out = Path(out)
    for k, fold in enumerate(result.folds):
        write_evaluation(fold, out / f"fold-{k + 1}")
    write_evaluation(result.overall, out / "overall")
    write_text(out / "table2.tsv", table2_tsv(result.rows()))
    write_json(out / "cv.json", result.to_dict())


def ablate(
    data: str | Path,
    out: str | Path,
    base: TrainConfig,
    folds: int,
    variants: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] | None = None,
    progress: bool = True,
    log: Any = print,
) -> dict[str, dict[str, Any]]:
    """Cross-validate each modality set of the paper and the single-class model."""
    variants = variants or ABLATION_VARIANTS
    out = Path(out)
    raw = read_annotated(data, ("t2w", "swi", "qsm"))
    rows: dict[str, dict[str, Any]] = {}
    for name, (modalities, targets) in variants.items():
        log(f"== {name}")
        config = dataclasses.replace(base, modalities=modalities, target_labels=targets)
        result = cross_validate(raw, config, folds, progress=progress, log=log)
        slug = name.replace("+", "-").replace(" ", "_").replace("(", "").replace(")", "")
        write_cv(result, out / slug)
        rows[name] = result.row(result.overall) | {"seconds": round(result.seconds, 1)}
        write_text(out / "ablation.tsv", table2_tsv(rows))
        write_json(out / "ablation.json", {"folds": folds, "base": base.to_dict(), "rows": rows})
    return rows
