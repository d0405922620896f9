"""Robustness benchmark: a model on in-distribution and on held-out-shift phantoms.

The protocol of the project's robustness page (docs/robustness.md): every
randomized factor has training values and held-out values
(:data:`deepmir.phantom.params.SHIFTS`); each held-out set changes one
factor. For each set, ``--n`` subjects are simulated (``--preset
randomized``, seed ``--seed`` + the set's index, never a training seed),
predicted with the model and scored with ``deepmir evaluate``: per class
sensitivity, precision, F1 and FP per subject, and calcifications called CMB.
Calibration: every predicted lesion is matched to the reference (the
evaluation's rule; real = a true positive of its class) and the expected
calibration error (ECE, 10 bins) of its ``probability`` (calibrated) and of
its raw ``score`` is reported per class and set, pooled over the held-out
sets, with a reliability diagram of the pooled held-out lesions
(``reliability.png`` next to the JSON).

Resumable: a set already simulated, or predicted with the same weights, is reused.
A set holding more subjects than ``--n`` (extended by a larger run) is scored on
its first ``--n`` (a view of symlinks, ``bids-first<n>``), as it was before.
With ``--jobs J`` (default 2) the missing sets are first simulated by J
``deepmir simulate`` processes at once, one thread each (numpy's FFTs run on
one core, so one process leaves the second core mostly idle; the phantoms
are the same up to float32 rounding of the QSM inversion's sums; the time
is printed), then scored one by one.

Run: ``make bench-robust`` or
``.venv/bin/python benchmarks/bench_robust.py --model default --n 6 --out build/robust``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from deepmir.phantom.params import SHIFTS

SETS = ("in-distribution", *SHIFTS)
CLASSES = ("cmb", "iron", "calcification")


#: input subsets scored on the in-distribution subjects (the full set is t2w, swi,
#: qsm and the brain mask): fewer modalities, or no mask (predict derives one)
SUBSETS = {
    "swi+qsm": ("swi", "qsm", "mask"),
    "swi": ("swi", "mask"),
    "no-mask": ("t2w", "swi", "qsm"),
    "swi-no-mask": ("swi",),
}


#: the subsets lacking a modality (the model's calibration per input subset)
FEWER_MODALITIES = tuple(
    k for k, keep in SUBSETS.items() if set(keep) - {"mask"} < {"t2w", "swi", "qsm"}
)


def simulate_sets(names: list[str], args: argparse.Namespace) -> None:
    """Simulate the missing subjects of the base sets of ``names``, ``args.jobs``
    sets at a time, each by a single-threaded ``deepmir simulate`` process
    (its log in the set's folder); a failure raises with that log's name."""
    import os
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    bases = list(dict.fromkeys(name.partition(":")[0] for name in names))
    todo = [b for b in bases if _missing_subjects(b, args) is not None]
    if args.jobs <= 1 or len(todo) <= 1:
        return  # run_set simulates in this process
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env = {**os.environ, **threads}

    def simulate(base: str) -> None:
        config = _missing_subjects(base, args)
        config.out.parent.mkdir(parents=True, exist_ok=True)
        log = config.out.parent / "simulate.log"
        command = [
            sys.executable, "-m", "deepmir.cli", "simulate", "--out", str(config.out),
            "--n", str(config.n_subjects), "--first-index", str(config.first_index),
            "--seed", str(config.seed), "--preset", config.preset, "--shift", config.shift,
        ]  # fmt: skip
        if config.first_index == 0 and config.out.exists():  # an interrupted first run's
            command.append("--overwrite")
        with open(log, "w") as out:
            done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise RuntimeError(f"simulating {base} failed: see {log}")

    print(f"simulating {len(todo)} set(s), {args.jobs} at a time: {', '.join(todo)}", flush=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(simulate, todo))
    print(f"simulated in {time.perf_counter() - start:.0f} s", flush=True)


def _missing_subjects(base: str, args: argparse.Namespace) -> Any:
    """The simulation of the subjects base set ``base`` still lacks (its folder,
    seed ``--seed`` + the set's index, its shift; none when it has them all)."""
    from deepmir.phantom.simulate import SimulationConfig

    data = Path(args.out) / base / "bids"
    have = _n_simulated(data)
    if have >= args.n:
        return None
    return SimulationConfig(
        out=data,
        n_subjects=args.n - have,
        first_index=have,
        seed=args.seed + SETS.index(base),
        preset="randomized",
        shift="none" if base == "in-distribution" else base,
    )


def run_set(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Simulate (once) and score one set; ``in-distribution:swi`` and the like
    score the in-distribution subjects with only those modalities' files."""
    from deepmir.phantom.simulate import simulate_dataset

    base, _, subset = name.partition(":")
    root = Path(args.out) / base
    data = root / "bids"
    missing = _missing_subjects(base, args)
    if missing is not None:  # a new set, or a smaller one of an earlier run extended
        simulate_dataset(missing, progress=False)
    view = view_suffix(data, args.n)
    if view:  # a set extended by a larger run: its first --n only
        data = first_subjects(data, args.n, root / f"bids{view}")
    if subset:
        data = subset_dataset(data, SUBSETS[subset], root / f"bids-{subset}{view}")
    predictions = predictions_folder(root, model_key(args.model), view, subset)
    return score(name, data, predictions, args)


def view_suffix(data: Path, n: int) -> str:
    """``-first<n>`` when the set in ``data`` holds more than ``n`` subjects
    (extended by a larger run: scored on its first ``n``), else nothing."""
    return f"-first{n}" if _n_simulated(data) > n else ""


def predictions_folder(root: Path, key: str, view: str, subset: str) -> Path:
    """Where a set's predictions by the model ``key`` (:func:`model_key`) go."""
    return root / f"pred-{key}{view}{'-' + subset if subset else ''}"


def _n_simulated(data: Path) -> int:
    tsv = data / "participants.tsv"
    if not tsv.exists():
        return 0
    return max(0, len(tsv.read_text().strip().splitlines()) - 1)


def model_key(model: str) -> str:
    """The predictions' folder name: the model and its weights, plus a digest of
    its whole config when post-processing or calibration were changed after
    training (a cached run of other weights or another tuning under the same
    name, say an earlier shipped model, is not reused)."""
    from deepmir.inference.predict import SHIPPED_MODELS, shipped_model_dir
    from deepmir.model.checkpoint import CONFIG

    folders = (
        [shipped_model_dir(name) for name in SHIPPED_MODELS]
        if model == "default"
        else [Path(model)]
    )
    configs = [json.loads((f / CONFIG).read_text()) for f in folders]
    digests = [c["weights_sha256"][:12] for c in configs]
    tuned = [{k: c.get(k) for k in ("post_processing", "calibration")} for c in configs]
    tuning = hashlib.sha256(json.dumps(tuned, sort_keys=True).encode()).hexdigest()[:6]
    return f"{Path(model).name}-{'-'.join(digests)}-{tuning}"


def first_subjects(data: Path, n: int, out: Path) -> Path:
    """A view of ``data`` (symlinks) holding only its first ``n`` subjects (the
    order of participants.tsv, which simulate writes by index), with their
    reference labels and the dataset's own description files."""
    if (out / "participants.tsv").exists():  # written last: the view is complete
        return out
    rows = (data / "participants.tsv").read_text().strip().splitlines()
    keep = {line.split("\t")[0] for line in rows[1 : n + 1]}
    for path in sorted(data.rglob("*")):
        rel = path.relative_to(data)
        subject = next((p for p in rel.parts if p.startswith("sub-")), None)
        if path.is_dir() or (subject is not None and subject not in keep):
            continue
        target = out / rel
        if rel != Path("participants.tsv") and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    (out / "participants.tsv").write_text("\n".join(rows[: n + 1]) + "\n")
    return out


def subset_dataset(data: Path, keep: tuple[str, ...], out: Path) -> Path:
    """``data`` without the images of the modalities not in ``keep`` (and without
    the brain mask unless ``mask`` is in ``keep``), as symlinks."""
    from deepmir.io.bids import MODALITY_SUFFIX

    dropped = tuple(f"_{s}." for m, s in MODALITY_SUFFIX.items() if m not in keep)
    if "mask" not in keep:
        dropped += ("_desc-brain_mask.",)
    for path in sorted(data.rglob("*")):
        rel = path.relative_to(data)
        if path.is_dir() or (
            rel.parts[0] != "derivatives" and any(d in path.name for d in dropped)
        ):
            continue
        target = out / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    return out


def score(name: str, data: Path, predictions: Path, args: argparse.Namespace) -> dict[str, Any]:
    from deepmir.evaluation import evaluate_dataset
    from deepmir.inference.predict import predict_dataset
    from deepmir.io.loader import SubjectDataError
    from deepmir.model.checkpoint import ModelError
    from deepmir.phantom.simulate import REFERENCE

    row: dict[str, Any] = {"set": name, "n_subjects": args.n}
    start = time.perf_counter()
    row["predict_s_per_subject"] = None  # predictions of an earlier run reused
    done = (predictions / "index.html").exists() and len(
        list(predictions.glob("sub-*/"))
    ) == _n_simulated(data)
    if not done or args.repredict:
        try:
            # --repredict forces: predict's resume would keep outputs of other code
            outcome = predict_dataset(
                data,
                predictions,
                model=args.model,
                progress=False,
                log=lambda m: None,
                force=bool(args.repredict),
            )
        except (ModelError, SubjectDataError) as exc:  # no model serves these inputs
            return {**row, "served": False, "reason": str(exc)}
        if outcome.failed:
            return {**row, "served": False, "reason": next(iter(outcome.failed.values()))}
        row["predict_s_per_subject"] = (time.perf_counter() - start) / args.n
    row["model"] = json.loads((predictions / "dataset_description.json").read_text())[
        "GeneratedBy"
    ][0]["Description"]
    result = evaluate_dataset(data / REFERENCE, predictions, n_bootstrap=0)
    row["served"] = True
    for c in CLASSES:
        m = result.classes[c]
        row[c] = {
            "n_ref": m.n_reference,
            "tp": m.true_positives,
            "fp": m.false_positives,
            "sensitivity": m.sensitivity,
            "precision": m.precision,
            "f1": m.f1,
            "fp_per_subject": m.fp_per_subject,
            # voxel Dice of the matched pairs: how well the lesions' extent is found
            "dice": m.dice,
        }
    row["calcification_as_cmb"] = _calc_as_cmb(result)
    outcomes = lesion_outcomes_from_files(data, predictions)
    row["calibration"] = _eces(outcomes)
    row["_outcomes"] = outcomes
    return row


def _calc_as_cmb(result: Any) -> float:
    total = result.classes["calcification"].n_reference
    return float(result.confusion.found_as(3, 1) / total) if total else float("nan")


def lesion_outcomes_from_files(data: Path, predictions: Path) -> Any:
    """Every predicted lesion of a set (its lesions.tsv row): class, raw ``score``,
    calibrated ``probability`` and whether it is real (a same-class match of the
    evaluation's rule), and its subject (``<set>/sub-<id>``: one subject for
    every input subset of it, for the ECE's bootstrap spread). A row is tied
    to its dseg component by class and nearest centroid (mm)."""
    import nibabel as nib
    import pandas as pd

    from deepmir.evaluation.matching import match_subject
    from deepmir.inference.calibration import LesionOutcomes
    from deepmir.inference.predict import output_paths
    from deepmir.io.bids import find_subjects
    from deepmir.phantom.simulate import REFERENCE

    labels: list[int] = []
    scores: list[float] = []
    probabilities: list[float] = []
    real: list[bool] = []
    subjects: list[str] = []
    for ref in find_subjects(data):
        anat = ref.anat_dir(data / REFERENCE)
        reference = np.asarray(nib.load(anat / f"{ref.prefix}_dseg.nii.gz").dataobj)
        instances = np.asarray(nib.load(anat / f"{ref.prefix}_desc-instances_dseg.nii.gz").dataobj)
        paths = output_paths(predictions, ref)
        predicted = nib.load(paths["dseg"])
        table = pd.read_csv(paths["lesions"], sep="\t")
        if table.empty:
            continue
        match = match_subject(reference, instances, np.asarray(predicted.dataobj), predicted.affine)
        found = {pair.predicted for pair in match.matches}
        centroids = np.array([lesion.centroid_xyz for lesion in match.predicted_lesions])
        classes = np.array([lesion.label for lesion in match.predicted_lesions])
        for row in table.itertuples():
            same = np.flatnonzero(classes == row.label)
            if same.size == 0:  # pragma: no cover - every row has a component
                continue
            distance = np.linalg.norm(centroids[same] - [row.x, row.y, row.z], axis=1)
            labels.append(int(row.label))
            scores.append(float(row.score))
            probabilities.append(float(row.probability))
            real.append(int(same[np.argmin(distance)]) in found)
            subjects.append(f"{data.parent.name}/{ref}")
    return (
        LesionOutcomes(np.array(labels, np.uint8), np.array(scores), np.array(real, bool)),
        np.array(probabilities),
        np.array(subjects, dtype=str),
    )


def _eces(outcomes: Any) -> dict[str, dict[str, Any]]:
    """Per class: lesions, real ones, ECE of the calibrated probability and of
    the raw score, and the calibrated ECE's bootstrap spread over subjects."""
    from deepmir.inference.calibration import ece_spread, expected_calibration_error
    from deepmir.labels import LESION_CLASSES

    lesions, probabilities, subjects = outcomes
    out = {}
    for label, name in LESION_CLASSES.items():
        inside = lesions.labels == label
        real = lesions.real[inside]

        def ece(p: Any, real: Any = real) -> float | None:
            value = expected_calibration_error(p, real)
            return None if np.isnan(value) else round(value, 4)

        spread = ece_spread(probabilities[inside], real, subjects[inside])
        out[name] = {
            "n_lesions": int(inside.sum()),
            "n_real": int(real.sum()),
            "ece": ece(probabilities[inside]),
            "ece_raw_score": ece(lesions.scores[inside]),
            # sd of the ECE over 1000 resamples of the subjects (seed 0)
            "ece_bootstrap_sd": None if np.isnan(spread) else round(spread, 4),
        }
    return out


def _pooled(rows: list[dict[str, Any]]) -> Any:
    from deepmir.inference.calibration import LesionOutcomes

    parts = [r["_outcomes"] for r in rows]
    return (
        LesionOutcomes.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]) if parts else np.zeros(0),
        np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, str),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="default (shipped) or a model folder")
    parser.add_argument("--n", type=int, default=6, help="subjects per set")
    parser.add_argument("--seed", type=int, default=3100, help="seed of the first set")
    parser.add_argument("--out", type=Path, default=Path("build/robust"))
    parser.add_argument(
        "--sets",
        nargs="*",
        default=[*SETS, *(f"in-distribution:{k}" for k in SUBSETS)],
        help="sets to score (default: all, and the in-distribution subjects with only "
        "SWI + QSM, with only SWI, and without the brain mask)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--repredict", action="store_true")
    parser.add_argument(
        "--jobs", type=int, default=2, help="simulate this many sets at once (1: in this process)"
    )
    args = parser.parse_args(argv)
    simulate_sets(args.sets, args)
    rows = []
    for name in args.sets:
        rows.append(run_set(name, args))
        r = rows[-1]
        if not r["served"]:
            print(f"{name:16s} not served: {r['reason']}", flush=True)
            continue
        print(
            f"{name:16s} "
            + "  ".join(
                f"{c[:4]} {r[c]['sensitivity']:.2f}/{r[c]['precision']:.2f}/F1 {r[c]['f1']:.2f}"
                f"/FP {r[c]['fp_per_subject']:.2f}/Dice {r[c]['dice']:.2f}"
                for c in CLASSES
            )
            + f"  calc->cmb {r['calcification_as_cmb']:.2f}"
            + (
                f"  {r['predict_s_per_subject']:.1f} s/subj"
                if r["predict_s_per_subject"] is not None
                else ""
            ),
            flush=True,
        )
    held_out = [r for r in rows if r["served"] and r["set"] in SHIFTS]
    pooled = _eces(_pooled(held_out)) if held_out else {}
    for c, e in pooled.items():
        print(
            f"ECE held-out sets pooled, {c}: {e['ece']} calibrated, {e['ece_raw_score']} "
            f"raw score ({e['n_lesions']} lesions, {e['n_real']} real)"
        )
    fewer = [r for r in rows if r["served"] and r["set"].partition(":")[2] in FEWER_MODALITIES]
    by_subset = _eces(_pooled(fewer)) if fewer else {}
    for c, e in by_subset.items():
        print(
            f"ECE fewer-modality rows pooled ({', '.join(r['set'] for r in fewer)}), {c}: "
            f"{e['ece']} calibrated, {e['ece_raw_score']} raw score ({e['n_lesions']} lesions, "
            f"{e['n_real']} real)"
        )
    command = "python benchmarks/bench_robust.py " + " ".join(sys.argv[1:])
    print(f"reproduce: {command}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        if held_out:
            _reliability_png(
                _pooled(held_out),
                args.model,
                Path(args.out) / held_out[0]["set"] / "bids",
                args.json.with_suffix(".reliability.png"),
            )
        for r in rows:
            r.pop("_outcomes", None)
        result = {
            "command": command,
            "rows": rows,
            "held_out_calibration": pooled,
            "fewer_modalities_calibration": by_subset,
        }
        args.json.write_text(json.dumps(result, indent=1))
    return 0


def _reliability_png(outcomes: Any, model: str, data: Path, path: Path) -> None:
    """Reliability diagram (raw score and calibrated) of the pooled held-out lesions."""
    from deepmir.inference.calibration import reliability_figure
    from deepmir.inference.predict import choose_model
    from deepmir.io.bids import find_subjects

    card = choose_model(model, data, find_subjects(data)).card
    figure = reliability_figure(
        outcomes[0],
        card.calibration,
        "Lesion probability on the held-out shifts (numbers: lesions per bin)",
    )
    figure.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
