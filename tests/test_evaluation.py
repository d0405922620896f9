"""Lesion-level evaluation (``shared/docs/metrics.md``) on hand-built volumes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import deepmir.cli
from deepmir.evaluation import (
    EvaluationInputError,
    compute_metrics,
    evaluate_dataset,
    greedy_match,
    match_subject,
    pearson_r,
    write_evaluation,
)
from deepmir.io.atomic import write_nifti, write_text
from deepmir.labels import CALCIFICATION, CMB, IRON

SHAPE = (32, 32, 32)
EYE = np.eye(4)


def volume() -> np.ndarray:
    return np.zeros(SHAPE, dtype=np.uint8)


def cube(dseg: np.ndarray, corner: tuple[int, int, int], size: int, label: int) -> None:
    i, j, k = corner
    dseg[i : i + size, j : j + size, k : k + size] = label


def tp_fp_fn(match, label: int) -> tuple[int, int, int]:
    counts = match.counts(label)
    return counts.true_positives, counts.false_positives, counts.false_negatives


# --------------------------------------------------------------------------
# Matching


def test_known_true_positives_false_positives_false_negatives_per_class():
    reference, predicted = volume(), volume()
    cube(reference, (4, 4, 4), 2, CMB)  # found (shifted by a voxel)
    cube(predicted, (5, 5, 5), 2, CMB)
    cube(reference, (20, 20, 20), 2, CMB)  # missed
    cube(predicted, (27, 27, 27), 2, CMB)  # false alarm
    cube(reference, (10, 24, 10), 3, IRON)  # found exactly
    cube(predicted, (10, 24, 10), 3, IRON)
    cube(reference, (24, 4, 24), 2, CALCIFICATION)  # missed
    cube(predicted, (4, 27, 27), 2, CALCIFICATION)  # false alarm

    match = match_subject(reference, None, predicted, EYE)

    assert tp_fp_fn(match, CMB) == (1, 1, 1)
    assert tp_fp_fn(match, IRON) == (1, 0, 0)
    assert tp_fp_fn(match, CALCIFICATION) == (0, 1, 1)
    # A 2x2x2 cube shifted by one voxel along each axis shares 1 voxel.
    cmb_pair = next(p for p in match.matches if match.reference_lesions[p.reference].label == CMB)
    assert cmb_pair.overlap_voxels == 1
    assert cmb_pair.dice == pytest.approx(2 * 1 / 16)
    assert cmb_pair.distance_mm == pytest.approx(math.sqrt(3))


def test_two_predictions_on_one_lesion_give_one_true_positive_and_one_false_positive():
    reference, predicted = volume(), volume()
    cube(reference, (10, 10, 10), 3, CMB)  # centroid (11, 11, 11)
    predicted[11, 11, 11] = CMB  # on the lesion
    predicted[11, 11, 14] = CMB  # 3 mm away: could match too, but comes second

    match = match_subject(reference, None, predicted, EYE)

    assert tp_fp_fn(match, CMB) == (1, 1, 0)
    (pair,) = match.matches
    assert match.predicted_lesions[pair.predicted].centroid_ijk == (11.0, 11.0, 11.0)


def test_greedy_matching_takes_the_nearest_pair_first():
    # Reference 0 is near both predictions, reference 1 only near prediction 0.
    # Greedy gives prediction 0 to reference 0 (nearest pair) and leaves
    # reference 1 unmatched, although an optimal assignment would match both.
    accepted = greedy_match(np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([1.0, 2.0, 1.5]))
    assert accepted == [0]


def test_centroids_within_3_mm_match_without_overlap_and_4_mm_do_not():
    reference = volume()
    reference[10, 10, 10] = CMB
    near, far = volume(), volume()
    near[10, 10, 13] = CMB  # 3 mm
    far[10, 10, 14] = CMB  # 4 mm

    assert tp_fp_fn(match_subject(reference, None, near, EYE), CMB) == (1, 0, 0)
    assert tp_fp_fn(match_subject(reference, None, far, EYE), CMB) == (0, 1, 1)


def test_a_large_reference_lesion_matches_within_its_equivalent_radius():
    # A hollow shell: a prediction in its hollow is 4 mm from the centroid and
    # shares no voxel, so only the equivalent-radius arm of the rule matches it.
    i, j, k = np.indices(SHAPE)
    radius = np.sqrt((i - 16) ** 2 + (j - 16) ** 2 + (k - 16) ** 2)
    shell = np.where((radius >= 5.5) & (radius <= 7.0), CMB, 0).astype(np.uint8)
    inside = volume()
    inside[16, 16, 20] = CMB

    as_reference = match_subject(shell, None, inside, EYE)
    as_prediction = match_subject(inside, None, shell, EYE)

    assert 4.0 < as_reference.reference_lesions[0].equivalent_radius_mm
    assert tp_fp_fn(as_reference, CMB) == (1, 0, 0)
    assert as_reference.matches[0].overlap_voxels == 0
    assert as_reference.matches[0].dice == 0.0
    # The radius is the reference lesion's: a one-voxel reference does not reach.
    assert tp_fp_fn(as_prediction, CMB) == (0, 1, 1)


def test_distances_are_in_mm_on_an_anisotropic_grid():
    affine = np.diag([1.0, 1.0, 2.0, 1.0])  # 2 mm slices along k
    reference, predicted = volume(), volume()
    reference[10, 10, 10] = CMB
    predicted[10, 10, 12] = CMB  # 2 voxels, but 4 mm away

    match = match_subject(reference, None, predicted, affine)

    assert tp_fp_fn(match, CMB) == (0, 1, 1)
    assert match.reference_lesions[0].volume_mm3 == pytest.approx(2.0)
    assert match.predicted_lesions[0].centroid_xyz == pytest.approx((10.0, 10.0, 24.0))


def test_touching_reference_lesions_stay_two_lesions_with_an_instance_map():
    reference = volume()
    cube(reference, (10, 10, 10), 2, CMB)
    cube(reference, (10, 10, 12), 2, CMB)  # face to face with the first
    instances = np.zeros(SHAPE, dtype=np.int16)
    instances[10:12, 10:12, 10:12] = 1
    instances[10:12, 10:12, 12:14] = 2
    predicted = reference.copy()  # one 26-connected component

    with_instances = match_subject(reference, instances, predicted, EYE)
    without_instances = match_subject(reference, None, predicted, EYE)

    assert len(with_instances.reference_lesions) == 2
    assert len(with_instances.predicted_lesions) == 1
    assert tp_fp_fn(with_instances, CMB) == (1, 0, 1)
    assert tp_fp_fn(without_instances, CMB) == (1, 0, 0)


def test_corner_touching_voxels_are_one_lesion_and_touching_classes_are_two():
    predicted = volume()
    predicted[5, 5, 5] = predicted[6, 6, 6] = CMB  # 26-connected
    predicted[6, 6, 7] = CALCIFICATION  # touches the CMB, other class

    match = match_subject(volume(), None, predicted, EYE)

    assert sorted(lesion.label for lesion in match.predicted_lesions) == [CMB, CALCIFICATION]


def test_instance_classes_come_from_the_lesion_table_when_given():
    reference = volume()
    cube(reference, (10, 10, 10), 2, CMB)
    instances = np.zeros(SHAPE, dtype=np.int16)
    instances[10:12, 10:12, 10:12] = 7

    from_dseg = match_subject(reference, instances, volume(), EYE)
    from_table = match_subject(reference, instances, volume(), EYE, instance_labels={7: IRON})

    assert [lesion.label for lesion in from_dseg.reference_lesions] == [CMB]
    assert [lesion.label for lesion in from_table.reference_lesions] == [IRON]
    assert from_dseg.reference_lesions[0].source_id == 7


def test_empty_reference_and_empty_prediction():
    lesions = volume()
    cube(lesions, (4, 4, 4), 2, CMB)
    cube(lesions, (20, 20, 20), 2, CMB)

    alarms_only = compute_metrics(
        {"sub-01": match_subject(volume(), None, lesions, EYE)}, n_bootstrap=50
    )
    misses_only = compute_metrics(
        {"sub-01": match_subject(lesions, None, volume(), EYE)}, n_bootstrap=50
    )
    nothing = compute_metrics({"sub-01": match_subject(volume(), None, volume(), EYE)})

    cmb = alarms_only.classes["cmb"]
    assert (cmb.true_positives, cmb.false_positives, cmb.false_negatives) == (0, 2, 0)
    assert math.isnan(cmb.sensitivity)
    assert cmb.precision == 0.0
    assert cmb.fp_per_subject == 2.0

    cmb = misses_only.classes["cmb"]
    assert (cmb.true_positives, cmb.false_positives, cmb.false_negatives) == (0, 0, 2)
    assert cmb.sensitivity == 0.0
    assert math.isnan(cmb.precision)
    assert cmb.fp_per_subject == 0.0
    assert cmb.f1 == 0.0

    for metrics in nothing.classes.values():
        assert (metrics.n_reference, metrics.n_predicted) == (0, 0)
        assert math.isnan(metrics.sensitivity) and math.isnan(metrics.f1)
        assert math.isnan(metrics.count_agreement.pearson_r)
        assert metrics.fp_per_subject == 0.0
    json.dumps(nothing.to_dict(), allow_nan=False)  # nan is written as null


def test_reference_scored_against_itself_is_perfect():
    matches = {}
    for n_subject in range(4):
        reference = volume()
        for n_lesion in range(n_subject + 1):  # 1..4 lesions of each class
            for n_class, label in enumerate((CMB, IRON, CALCIFICATION)):
                cube(reference, (2 + 6 * n_lesion, 2 + 8 * n_class, 4 + n_subject), 2, label)
        matches[f"sub-{n_subject:02d}"] = match_subject(reference, None, reference, EYE)

    result = compute_metrics(matches, n_bootstrap=200)

    for metrics in result.classes.values():
        assert metrics.n_reference > 0
        assert metrics.false_positives == metrics.false_negatives == 0
        for name in ("sensitivity", "precision", "f1", "count_ratio", "dice"):
            statistic = metrics.figures[name]
            assert statistic.pooled == statistic.mean == 1.0
            assert statistic.ci_low == statistic.ci_high == 1.0
        assert metrics.figures["abs_count_difference"].pooled == 0.0
        assert metrics.count_agreement.pearson_r == pytest.approx(1.0)
        assert metrics.count_agreement.mean_difference == 0.0
        assert metrics.count_agreement.limit_low == metrics.count_agreement.limit_high == 0.0
    off_diagonal = result.confusion.counts - np.diag(np.diag(result.confusion.counts))
    assert not off_diagonal.any()


def test_a_lesion_predicted_with_the_wrong_class_counts_in_the_confusion_table():
    reference, predicted = volume(), volume()
    cube(reference, (10, 10, 10), 2, CALCIFICATION)
    cube(predicted, (10, 10, 10), 2, CMB)  # the mimic error: calcification called CMB
    cube(reference, (20, 20, 20), 2, IRON)  # missed altogether

    match = match_subject(reference, None, predicted, EYE)
    result = compute_metrics({"sub-01": match}, n_bootstrap=0)

    assert tp_fp_fn(match, CALCIFICATION) == (0, 0, 1)
    assert tp_fp_fn(match, CMB) == (0, 1, 0)
    assert result.confusion.found_as(CALCIFICATION, CMB) == 1
    assert result.confusion.found_as(CALCIFICATION, 0) == 0
    assert result.confusion.found_as(0, CMB) == 0
    assert result.confusion.found_as(IRON, 0) == 1
    assert result.to_dict()["confusion"]["counts"]["calcification"]["cmb"] == 1


def test_a_correct_class_match_wins_over_a_nearer_wrong_class_one():
    reference, predicted = volume(), volume()
    reference[10, 10, 10] = CMB
    predicted[10, 10, 10] = CALCIFICATION  # nearest, wrong class
    predicted[10, 10, 12] = CMB  # 2 mm, right class

    match = match_subject(reference, None, predicted, EYE)
    table = match.confusion()

    assert tp_fp_fn(match, CMB) == (1, 0, 0)
    assert tp_fp_fn(match, CALCIFICATION) == (0, 1, 0)
    assert table[CMB, CMB] == 1 and table[0, CALCIFICATION] == 1 and table[CMB, CALCIFICATION] == 0


# --------------------------------------------------------------------------
# Figures


def test_subjects_without_the_class_count_towards_false_alarms_not_sensitivity():
    with_cmbs, alarm = volume(), volume()
    cube(with_cmbs, (4, 4, 4), 2, CMB)
    cube(with_cmbs, (20, 20, 20), 2, CMB)
    alarm[15, 15, 15] = CMB
    matches = {
        "sub-01": match_subject(with_cmbs, None, with_cmbs, EYE),
        "sub-02": match_subject(volume(), None, alarm, EYE),
    }

    cmb = compute_metrics(matches, n_bootstrap=100).classes["cmb"]

    assert cmb.n_subjects == 2 and cmb.n_subjects_with_class == 1
    assert cmb.figures["sensitivity"].pooled == 1.0
    assert cmb.figures["sensitivity"].n_subjects == 1
    assert cmb.figures["precision"].pooled == pytest.approx(2 / 3)
    assert cmb.figures["precision"].mean == pytest.approx(0.5)  # subjects 1.0 and 0.0
    assert cmb.figures["precision"].n_subjects == 2
    assert cmb.figures["fp_per_subject"].pooled == 0.5
    assert cmb.figures["fp_per_subject"].n_subjects == 2
    assert cmb.figures["f1"].pooled == pytest.approx(4 / 5)


def test_count_agreement_by_hand():
    agreement_r = pearson_r([1, 2, 3], [2, 2, 5])
    assert agreement_r == pytest.approx(np.corrcoef([1, 2, 3], [2, 2, 5])[0, 1])
    assert math.isnan(pearson_r([2, 2], [1, 3]))
    assert math.isnan(pearson_r([1], [1]))

    matches = {}
    for n, (n_ref, n_pred) in enumerate([(1, 2), (2, 2), (3, 5)]):
        reference, predicted = volume(), volume()
        for m in range(n_ref):
            reference[4 + 6 * m, 4, 4] = IRON
        for m in range(n_pred):
            predicted[4 + 6 * m, 4, 4] = IRON
        matches[f"sub-{n}"] = match_subject(reference, None, predicted, EYE)

    iron = compute_metrics(matches, n_bootstrap=0).classes["iron"]

    # differences 1, 0, 2: mean 1, SD 1
    assert iron.count_agreement.mean_difference == pytest.approx(1.0)
    assert iron.count_agreement.limit_low == pytest.approx(1 - 1.96)
    assert iron.count_agreement.limit_high == pytest.approx(1 + 1.96)
    assert iron.figures["abs_count_difference"].pooled == pytest.approx(1.0)
    assert iron.figures["count_ratio"].pooled == pytest.approx(9 / 6)
    assert iron.figures["count_ratio"].mean == pytest.approx((2 + 1 + 5 / 3) / 3)
    assert math.isnan(iron.figures["count_ratio"].ci_low)  # no bootstrap asked


def test_bootstrap_is_seeded_and_recorded():
    matches = {}
    for n in range(6):
        reference, predicted = volume(), volume()
        for m in range(n + 1):
            reference[4 + 4 * m, 4, 4] = CMB
        predicted[4, 4, 4] = CMB
        matches[f"sub-{n}"] = match_subject(reference, None, predicted, EYE)

    first = compute_metrics(matches, seed=7, n_bootstrap=300)
    again = compute_metrics(matches, seed=7, n_bootstrap=300)
    other = compute_metrics(matches, seed=8, n_bootstrap=300)

    sensitivity = first.classes["cmb"].figures["sensitivity"]
    assert sensitivity == again.classes["cmb"].figures["sensitivity"]
    assert sensitivity != other.classes["cmb"].figures["sensitivity"]
    assert sensitivity.ci_low <= sensitivity.mean <= sensitivity.ci_high
    assert first.to_dict()["bootstrap"]["seed"] == 7


# --------------------------------------------------------------------------
# Files


def write_reference(
    root: Path,
    key: str,
    dseg: np.ndarray,
    affine: np.ndarray = EYE,
    instances: np.ndarray | None = None,
    lesion_labels: dict[int, int] | None = None,
) -> Path:
    anat = root.joinpath(*key.split("_"), "anat")
    path = anat / f"{key}_dseg.nii.gz"
    write_nifti(path, dseg, affine, np.uint8)
    if instances is not None:
        write_nifti(anat / f"{key}_desc-instances_dseg.nii.gz", instances, affine, np.int16)
    if lesion_labels is not None:
        rows = ["lesion_id\tlabel\ti\tj\tk\tx\ty\tz\tvolume_mm3\tchi_ppm"]
        rows += [f"{i}\t{label}\t0\t0\t0\t0\t0\t0\t1\t0.1" for i, label in lesion_labels.items()]
        write_text(anat / f"{key}_lesions.tsv", "\n".join(rows) + "\n")
    return path


def write_prediction(root: Path, key: str, dseg: np.ndarray, affine: np.ndarray = EYE) -> Path:
    path = root.joinpath(*key.split("_"), "anat", f"{key}_desc-deepmir_dseg.nii.gz")
    write_nifti(path, dseg, affine, np.uint8)
    return path


def run_cli(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    return deepmir.cli.main(["evaluate", *argv])


def test_cli_end_to_end_on_a_small_bids_tree(tmp_path, monkeypatch, capsys):
    reference_dir, predictions_dir, out = (
        tmp_path / "reference",
        tmp_path / "predictions",
        tmp_path / "out",
    )
    # sub-01: two CMBs (instance map + lesions.tsv), one found; a calcification
    # predicted as CMB.
    reference = volume()
    cube(reference, (4, 4, 4), 2, CMB)
    cube(reference, (20, 20, 20), 2, CMB)
    cube(reference, (10, 24, 10), 2, CALCIFICATION)
    instances = np.zeros(SHAPE, dtype=np.int16)
    instances[4:6, 4:6, 4:6] = 1
    instances[20:22, 20:22, 20:22] = 2
    instances[10:12, 24:26, 10:12] = 3
    write_reference(
        reference_dir, "sub-01", reference, instances=instances,
        lesion_labels={1: CMB, 2: CMB, 3: CALCIFICATION},
    )  # fmt: skip
    predicted = volume()
    cube(predicted, (4, 4, 4), 2, CMB)
    cube(predicted, (10, 24, 10), 2, CMB)
    write_prediction(predictions_dir, "sub-01", predicted)
    # sub-02 (with a session): one iron deposit, found; prediction missing for sub-03.
    iron = volume()
    cube(iron, (8, 8, 8), 3, IRON)
    write_reference(reference_dir, "sub-02_ses-1", iron)
    write_prediction(predictions_dir, "sub-02_ses-1", iron)
    write_reference(reference_dir, "sub-03", iron)

    code = run_cli(
        monkeypatch,
        "--reference", str(reference_dir),
        "--predictions", str(predictions_dir),
        "--out", str(out),
        "--n-bootstrap", "100",
    )  # fmt: skip

    assert code == 0
    for name in ("metrics.json", "per_subject.tsv", "summary.tsv", "bland_altman.png"):
        assert (out / name).is_file()
    assert (out / "counts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["subjects"] == ["sub-01", "sub-02_ses-1", "sub-03"]
    assert metrics["missing_subjects"] == ["sub-03"]
    cmb = metrics["classes"]["cmb"]
    assert (cmb["true_positives"], cmb["false_positives"], cmb["false_negatives"]) == (1, 1, 1)
    assert cmb["figures"]["sensitivity"]["pooled"] == 0.5
    assert cmb["figures"]["sensitivity"]["ci95_low"] == 0.5  # one subject has CMBs
    assert cmb["figures"]["fp_per_subject"]["pooled"] == pytest.approx(1 / 3)
    iron_figures = metrics["classes"]["iron"]
    assert (iron_figures["true_positives"], iron_figures["false_negatives"]) == (1, 1)
    assert iron_figures["figures"]["dice"]["pooled"] == 1.0
    assert metrics["confusion"]["counts"]["calcification"]["cmb"] == 1
    assert metrics["bootstrap"]["seed"] == 0
    per_subject = (out / "per_subject.tsv").read_text().splitlines()
    assert len(per_subject) == 1 + 3 * 3
    assert "sub-03\tiron\t2\t1\t0\t0\t0\t1\t0\tn/a" in (out / "per_subject.tsv").read_text()
    printed = capsys.readouterr().out
    assert "calcification" in printed and "sub-03" in printed


def test_grid_mismatch_names_both_files_and_writes_nothing(tmp_path, monkeypatch, capsys):
    reference_path = write_reference(tmp_path / "ref", "sub-01", volume())
    prediction_path = write_prediction(
        tmp_path / "pred", "sub-01", volume(), affine=np.diag([1.0, 1.0, 2.0, 1.0])
    )
    out = tmp_path / "out"

    with pytest.raises(EvaluationInputError) as error:
        evaluate_dataset(tmp_path / "ref", tmp_path / "pred")
    assert str(prediction_path) in str(error.value)
    assert str(reference_path) in str(error.value)

    code = run_cli(
        monkeypatch,
        "--reference", str(tmp_path / "ref"),
        "--predictions", str(tmp_path / "pred"),
        "--out", str(out),
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2
    assert "grid mismatch" in captured.err and "Traceback" not in captured.err
    assert not out.exists()


def test_shape_mismatch_is_a_grid_mismatch(tmp_path):
    write_reference(tmp_path / "ref", "sub-01", volume())
    write_prediction(tmp_path / "pred", "sub-01", np.zeros((32, 32, 30), np.uint8))
    with pytest.raises(EvaluationInputError, match="grid mismatch.*shape"):
        evaluate_dataset(tmp_path / "ref", tmp_path / "pred")


def test_a_label_outside_the_table_is_a_clear_error(tmp_path):
    write_reference(tmp_path / "ref", "sub-01", volume())
    bad = volume()
    bad[3, 3, 3] = 7
    prediction_path = write_prediction(tmp_path / "pred", "sub-01", bad)

    with pytest.raises(EvaluationInputError, match=r"label values \[7\]") as error:
        evaluate_dataset(tmp_path / "ref", tmp_path / "pred")
    assert str(prediction_path) in str(error.value)


def test_a_subject_missing_from_predictions_is_scored_as_empty_and_listed(tmp_path):
    lesion = volume()
    cube(lesion, (4, 4, 4), 2, CMB)
    for key in ("sub-01", "sub-02"):
        write_reference(tmp_path / "ref", key, lesion)
    write_prediction(tmp_path / "pred", "sub-01", lesion)

    result = evaluate_dataset(tmp_path / "ref", tmp_path / "pred", n_bootstrap=0)

    assert result.missing_subjects == ("sub-02",)
    cmb = result.classes["cmb"]
    assert (cmb.true_positives, cmb.false_positives, cmb.false_negatives) == (1, 0, 1)
    row = next(r for r in result.per_subject if r.subject == "sub-02" and r.label == CMB)
    assert row.prediction_missing and row.n_predicted == 0


def test_an_inconsistent_lesion_table_names_the_file(tmp_path):
    lesion = volume()
    cube(lesion, (4, 4, 4), 2, CMB)
    instances = (lesion > 0).astype(np.int16)
    write_reference(tmp_path / "ref", "sub-01", lesion, instances=instances, lesion_labels={1: 9})
    write_prediction(tmp_path / "pred", "sub-01", lesion)

    with pytest.raises(EvaluationInputError, match=r"sub-01_lesions\.tsv.*not a lesion class"):
        evaluate_dataset(tmp_path / "ref", tmp_path / "pred")


def test_write_evaluation_writes_every_output(tmp_path):
    lesion = volume()
    cube(lesion, (4, 4, 4), 2, CMB)
    result = compute_metrics({"sub-01": match_subject(lesion, None, lesion, EYE)}, n_bootstrap=10)

    written = write_evaluation(result, tmp_path / "out")

    assert sorted(p.name for p in written) == sorted(
        [
            "metrics.json",
            "per_subject.tsv",
            "summary.tsv",
            "confusion.tsv",
            "bland_altman.png",
            "counts.png",
        ]
    )
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    summary = (tmp_path / "out" / "summary.tsv").read_text()
    assert "cmb\tsensitivity\t1\t1\tn/a\t1\t1\t1" in summary
