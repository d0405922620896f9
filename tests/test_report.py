"""The QC report from plain data: every lesion, markers, legend, run details;
tiles that show the lesion where the marker points; ratings read back into
the evaluation; the cohort index. The browser test is tests/test_report_browser.py."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from deepmir.cli import main
from deepmir.evaluation.evaluate import EvaluationInputError
from deepmir.evaluation.ratings import evaluate_ratings, rated_reference, read_ratings
from deepmir.report.data import RATINGS_COLUMNS, RunDetails, SubjectReportData
from deepmir.report.html import PAGE_SIZE, cohort_index, read_summary, subject_report
from deepmir.report.views import PLANES

SHAPE = (40, 44, 30)
SPACING = (1.0, 1.0, 2.0)
N_LESIONS = PAGE_SIZE + 5  # more than one page of cards


def _payload(text: str) -> dict:
    found = re.search(
        r'<script type="application/json" id="deepmir-data">(.*?)</script>', text, re.S
    )
    assert found is not None
    return json.loads(found.group(1))


def synthetic_report(n_lesions: int = N_LESIONS, seed: int = 0) -> SubjectReportData:
    """A brain ellipsoid with dark SWI dots (the lesions), bright QSM for the
    paramagnetic ones; RAS crop = input grid shifted by an origin."""
    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE).astype(np.float32)
    centre = (np.array(SHAPE) - 1) / 2
    mask = (((grid - centre[:, None, None, None]) / (centre[:, None, None, None] - 2)) ** 2).sum(
        0
    ) <= 1
    swi = np.where(mask, 1.0, 0.0).astype(np.float32) + rng.normal(0, 0.02, SHAPE).astype(
        np.float32
    )
    qsm = np.zeros(SHAPE, np.float32)
    t2w = swi.copy()
    instances = np.zeros(SHAPE, np.int32)
    inside = np.argwhere(mask & (grid[2] > 4) & (grid[2] < SHAPE[2] - 5))
    picks = inside[rng.choice(len(inside), 4 * n_lesions, replace=False)]
    rows, chosen = [], []
    for p in picks:
        if len(chosen) == n_lesions:
            break
        if any(np.abs(p - q).max() < 4 for q in chosen):
            continue
        chosen.append(p)
        n = len(chosen)
        label = 1 + (n - 1) % 3
        instances[tuple(p)] = n
        if n % 2:  # two-voxel lesions too
            instances[p[0] + 1, p[1], p[2]] = n
        voxels = instances == n
        swi[voxels] = 0.05
        qsm[voxels] = -0.1 if label == 3 else 0.2
        rows.append(
            {
                "lesion_id": n,
                "label": label,
                "name": {1: "cmb", 2: "iron", 3: "calcification"}[label],
                "i": float(p[0] + 10 + (0.5 if n % 2 else 0)),
                "j": float(p[1] + 20),
                "k": float(p[2] + 5),
                "x": float(p[0]),
                "y": float(p[1]),
                "z": float(p[2] * 2),
                "volume_mm3": float(voxels.sum() * 2),
                "probability": round(float(rng.uniform(0.3, 1)), 3),
                "chi_ppm": -0.1 if label == 3 else 0.2,
                "region": "n/a",
            }
        )
    assert len(rows) == n_lesions
    affine = np.diag([*SPACING, 1.0])
    to_input = np.eye(4)
    to_input[:3, 3] = (10, 20, 5)
    run = RunDetails(
        command="deepmir predict --data BIDS --out DERIV",
        model_name="t2w-swi-qsm",
        weights_sha256="ab" * 32,
        modalities=("t2w", "swi", "qsm"),
        post_processing={"threshold": 0.5, "min_size_voxels": [2, 2, 2]},
        calibration={"cmb": "isotonic (120 lesions)"},
        deepmir_version="9.9.9",
        date="2026-01-01T00:00:00",
    )
    return SubjectReportData(
        "sub-01", {"swi": swi, "qsm": qsm, "t2w": t2w}, mask, instances, affine, to_input, rows, run
    )


@pytest.fixture(scope="module")
def report_data() -> SubjectReportData:
    return synthetic_report()


@pytest.fixture(scope="module")
def report_html(report_data) -> str:
    return subject_report(report_data)


def test_report_holds_every_lesion_markers_legend_and_run(report_data, report_html):
    payload = _payload(report_html)
    ids = [entry["lesion_id"] for entry in payload["lesions"]]
    assert sorted(ids) == list(range(1, N_LESIONS + 1))
    probabilities = [entry["probability"] for entry in payload["lesions"]]
    assert probabilities == sorted(probabilities, reverse=True)  # most probable first
    for entry in payload["lesions"]:
        assert set(entry["tiles"]) == {"swi", "qsm", "t2w"}
        assert set(entry["tiles"]["swi"]) == {*PLANES, "minip"}
        assert set(entry["tiles"]["qsm"]) == set(PLANES)
    # every lesion on the mosaic once and on each of the three projections
    assert len(re.findall(r'<circle class="marker label-\d"', report_html)) == 4 * N_LESIONS
    for n in range(1, N_LESIONS + 1):
        assert f'id="row-{n}"' in report_html  # the table lists all
    assert "Legend" in report_html and "ppm" in report_html
    for letters in ("L", "R", "A", "P"):
        assert f">{letters}</text>" in report_html
    assert "10 mm" in report_html and "50 mm</text>" in report_html
    assert "deepmir predict --data BIDS --out DERIV" in report_html
    assert "ab" * 32 in report_html and "isotonic" in report_html
    assert "Rashid" in report_html and "diamagnetic" in report_html
    assert "http" not in report_html  # nothing fetched, nothing linked out
    size_per_lesion = len(report_html) / N_LESIONS
    assert size_per_lesion < 30_000, size_per_lesion  # 100 lesions stay a few MB


def _png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_the_marker_points_at_the_lesion_on_every_plane(report_data, report_html):
    """Under the marker (mm from the top left / voxel size) of each QSM tile of
    a paramagnetic lesion is the lesion (the brightest pixels): orientation and
    flips are right."""
    payload = _payload(report_html)
    paramagnetic = [e for e in payload["lesions"] if e["label"] in (1, 2)]
    for entry in paramagnetic[:6]:
        for plane, (_, col, row) in PLANES.items():
            picture = _png(entry["tiles"]["qsm"][plane]).astype(float)
            geometry = entry["geometry"][plane]
            assert picture.shape == (
                round(geometry["h"] / SPACING[row]),
                round(geometry["w"] / SPACING[col]),
            )
            c = int(geometry["x"] / SPACING[col])
            r = int(geometry["y"] / SPACING[row])
            assert picture[r, c] == picture.max() > np.median(picture) + 50


def test_lesion_flags_and_regions():
    data = synthetic_report(3)
    data.lesions[0].update(region="lobar", structure="frontal")
    data.lesions[1].update(label=2, name="iron", region="n/a", structure="other", chi_ppm=-0.05)
    text = subject_report(data)
    assert "iron deposit outside the deep grey nuclei" in text
    assert "negative chi for a paramagnetic class" in text
    assert "<th>region</th>" in text and "frontal" in text


def _predictions(tmp_path: Path, data: SubjectReportData) -> Path:
    """The predictions the synthetic report stands for, on the input grid."""
    out = tmp_path / "pred"
    anat = out / "sub-01" / "anat"
    anat.mkdir(parents=True)
    shape = tuple(s + 40 for s in SHAPE)
    dseg = np.zeros(shape, np.uint8)
    labels = np.array([0] + [r["label"] for r in data.lesions], np.uint8)
    dseg[10 : 10 + SHAPE[0], 20 : 20 + SHAPE[1], 5 : 5 + SHAPE[2]] = labels[data.instances]
    nib.save(
        nib.Nifti1Image(dseg, np.diag([*SPACING, 1.0])), anat / "sub-01_desc-deepmir_dseg.nii.gz"
    )
    columns = ["lesion_id", "label", "i", "j", "k"]
    lines = ["\t".join(columns)] + ["\t".join(str(r[c]) for c in columns) for r in data.lesions]
    (anat / "sub-01_desc-deepmir_lesions.tsv").write_text("\n".join(lines) + "\n")
    return out


def _far_point(data: SubjectReportData) -> dict[str, float]:
    """Input-grid voxel inside the brain, 8 mm or more from every lesion."""
    lesions = np.argwhere(data.instances > 0) * SPACING
    for p in np.argwhere(data.brain_mask):
        if np.linalg.norm(lesions - p * SPACING, axis=1).min() >= 8:
            i, j, k = (data.to_input_voxel @ [*p, 1])[:3]
            return {"i": float(i), "j": float(j), "k": float(k)}
    raise AssertionError("no free voxel")


def _ratings_tsv(path: Path, rows: list[dict]) -> None:
    lines = ["\t".join(RATINGS_COLUMNS)]
    for r in rows:
        lines.append("\t".join(str(r.get(c, "n/a")) for c in RATINGS_COLUMNS))
    path.write_text("\n".join(lines) + "\n")


def test_ratings_make_the_reference_and_read_back_into_evaluate(tmp_path):
    data = synthetic_report(6)
    predictions = _predictions(tmp_path, data)
    ratings = tmp_path / "ratings"
    ratings.mkdir()
    rows = []
    for r in data.lesions:
        n = r["lesion_id"]
        status = "rejected" if n in (1, 2) else "confirmed"
        label = 2 if n == 3 and r["label"] != 2 else r["label"]
        rows.append({**r, "status": status, "label": label, "predicted_label": r["label"]})
    rows.append({"lesion_id": "n/a", "status": "added", "label": 1, **_far_point(data)})
    _ratings_tsv(ratings / "sub-01_desc-rater_lesions.tsv", rows)
    result = evaluate_ratings(ratings, predictions, n_bootstrap=0)
    relabelled = data.lesions[2]["label"] != 2
    tp = sum(m.true_positives for m in result.classes.values())
    fp = sum(m.false_positives for m in result.classes.values())
    fn = sum(m.false_negatives for m in result.classes.values())
    assert tp == 4 - relabelled  # confirmed, in their class
    assert fp == 2 + relabelled  # rejected (+ the relabelled one, in its predicted class)
    assert fn == 1 + relabelled  # added (+ the relabelled one, in the rater's class)
    assert result.confusion.counts[2, data.lesions[2]["label"]] == int(relabelled)
    out = tmp_path / "eval"
    args = ["evaluate", "--ratings", str(ratings), "--predictions", str(predictions)]
    assert main([*args, "--out", str(out), "--n-bootstrap", "0"]) == 0
    assert (out / "metrics.json").exists()


def test_unrated_or_unknown_lesions_are_errors_naming_the_file(tmp_path):
    data = synthetic_report(3)
    predicted = {r["lesion_id"]: (r["label"], (r["i"], r["j"], r["k"])) for r in data.lesions}
    path = tmp_path / "sub-01_desc-rater_lesions.tsv"
    rows = [{**r, "status": "confirmed"} for r in data.lesions]
    rows[1]["status"] = "unrated"
    _ratings_tsv(path, rows)
    dseg = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(EvaluationInputError, match="sub-01_desc-rater_lesions.tsv: 1 predicted"):
        rated_reference(dseg, np.eye(4), predicted, read_ratings(path), path)
    rows[1]["status"] = "maybe"
    _ratings_tsv(path, rows)
    with pytest.raises(EvaluationInputError, match="line 3: status 'maybe'"):
        read_ratings(path)
    rows[1].update(status="confirmed", lesion_id=99)
    _ratings_tsv(path, rows)
    with pytest.raises(EvaluationInputError, match=r"lesion_id\(s\) \[99\]"):
        rated_reference(dseg, np.eye(4), predicted, read_ratings(path), path)


def test_cohort_index_sortable_with_distributions_thumbnails_and_links(tmp_path, report_html):
    out = tmp_path / "deriv"
    report = out / "sub-01" / "anat" / "sub-01_desc-deepmir_report.html"
    report.parent.mkdir(parents=True)
    report.write_text(report_html)
    summary = read_summary(report)
    assert summary is not None and summary["counts"]["cmb"] == 9
    counts = {
        "sub-01": summary["counts"],
        "sub-02": {"cmb": 0, "iron": 1, "calcification": 0},
    }
    text = cohort_index(counts, {"sub-03": "bad file"}, "t2w-swi-qsm", out)
    assert 'class="sortable"' in text and "makeSortable" in text
    assert "sub-01/anat/sub-01_desc-deepmir_report.html" in text
    assert text.count('class="distribution"') == 3
    assert "9 subject" not in text and "1 subject(s) with 9" in text  # the cmb histogram
    # sub-01's thumbnail: its lesions as dots (sub-02 has no report, so none)
    assert len(re.findall(r'<circle class="marker', text)) == N_LESIONS
    assert "bad file" in text


# ---------------------------------------------------------------- in a browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _click_at(page, selector: str, u: float, v: float) -> None:
    """Click an element at fractions (u, v) of its width and height."""
    element = page.locator(selector).first
    element.scroll_into_view_if_needed()
    box = element.bounding_box()
    assert box is not None, selector
    page.mouse.click(box["x"] + u * box["width"], box["y"] + v * box["height"])


def test_a_rater_clicks_through_downloads_and_the_ratings_score(tmp_path):
    """In headless Chromium: confirm, reject, relabel every lesion across the
    card pages, add a missed lesion on a tile and one on the mosaic, download
    the TSV; it reads back into evaluate with the expected TP / FP / FN."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install -y chromium (the report's browser test)"
        )
    from playwright.sync_api import sync_playwright

    data = synthetic_report(PAGE_SIZE + 2, seed=1)
    report = tmp_path / "sub-01_desc-deepmir_report.html"
    report.write_text(subject_report(data))
    payload = _payload(report.read_text())
    order = [e["lesion_id"] for e in payload["lesions"]]
    rejected, relabelled = {order[1], order[-1]}, order[2]
    new_label = 3 if data.lesions[relabelled - 1]["label"] != 3 else 1
    # a mosaic slice and a voxel on it far from every lesion (the missed lesion)
    mosaic_k = [
        int(float(m))
        for m in re.findall(r'data-origin="0\.0,[0-9.]+,([0-9.]+)"', report.read_text())
    ]
    far = next(
        p
        for p in np.argwhere(data.brain_mask)
        if int(p[2]) in mosaic_k
        and np.abs(np.argwhere(data.instances > 0) - p).max(axis=1).min() >= 6
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(accept_downloads=True, viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.as_uri())
        page.fill("#rater", "AB")
        page.press("#rater", "Tab")
        for n, lesion_id in enumerate(order):
            if n == PAGE_SIZE:
                page.click("#next-page")
            card = f"#lesion-{lesion_id}"
            if lesion_id == relabelled:
                page.select_option(f"{card} .relabel", str(new_label))
            else:
                page.click(f"{card} {'.reject' if lesion_id in rejected else '.confirm'}")
        assert page.locator("#progress").inner_text().startswith(f"{len(order)} of {len(order)}")
        page.click("#lesion-table th >> nth=0")  # sort by lesion_id
        assert page.locator("#lesion-table tbody tr").first.get_attribute("data-id") == "1"
        # a click on the crosshair of a marked axial SWI tile gives that lesion's voxel
        target = order[-2]
        geometry = payload["lesions"][-2]["geometry"]["axial"]
        page.click("#add-mode")
        _click_at(
            page,
            f"#lesion-{target} tr:nth-child(2) .pair .tile >> nth=1",
            geometry["x"] / geometry["w"],
            geometry["y"] / geometry["h"],
        )
        # and one on the mosaic, far from every lesion, as a calcification
        page.select_option("#add-label", "3")
        page.click("#add-mode")
        shape = data.brain_mask.shape
        _click_at(
            page,
            f'.mosaic .tile[data-origin$=",{float(far[2])}"]',
            (far[0] + 0.5) / shape[0],
            (shape[1] - 1 - far[1] + 0.5) / shape[1],
        )
        with page.expect_download() as info:
            page.click("#download")
        download = info.value
        ratings = tmp_path / "ratings"
        ratings.mkdir()
        saved = ratings / download.suggested_filename
        download.save_as(saved)
        with page.expect_download() as info:
            page.click("#download-json")
        dictionary = json.loads(Path(info.value.path()).read_text())
        browser.close()
    assert not errors, errors
    assert saved.name == "sub-01_desc-rater_lesions.tsv"
    assert set(dictionary) == set(RATINGS_COLUMNS)
    lines = [line.split("\t") for line in saved.read_text().splitlines()]
    assert lines[0] == list(RATINGS_COLUMNS)
    rows = [dict(zip(lines[0], line, strict=True)) for line in lines[1:]]
    by_id = {r["lesion_id"]: r for r in rows if r["status"] != "added"}
    assert len(by_id) == len(order) and all(r["rater"] == "AB" for r in rows)
    for lesion_id in order:
        row = by_id[str(lesion_id)]
        expected = "rejected" if lesion_id in rejected else "confirmed"
        assert row["status"] == expected
        label = new_label if lesion_id == relabelled else data.lesions[lesion_id - 1]["label"]
        assert int(row["label"]) == label
    added = [r for r in rows if r["status"] == "added"]
    assert len(added) == 2
    near = data.lesions[target - 1]
    assert all(abs(float(added[0][c]) - near[c]) <= 1.0 for c in "ijk"), (added[0], near)
    expected_far = data.to_input_voxel @ [*far, 1]
    assert [float(added[1][c]) for c in "ijk"] == pytest.approx(expected_far[:3].tolist())
    assert added[1]["label"] == "3"
    # read back: the tile-added lesion sits on a confirmed one (no voxel left for it:
    # nothing to score), the mosaic one is a missed calcification
    saved.write_text("\n".join("\t".join(line) for line in lines[:-2] + lines[-1:]) + "\n")
    result = evaluate_ratings(ratings, _predictions(tmp_path, data), n_bootstrap=0)
    tp = sum(m.true_positives for m in result.classes.values())
    fp = sum(m.false_positives for m in result.classes.values())
    fn = sum(m.false_negatives for m in result.classes.values())
    assert (tp, fp, fn) == (len(order) - 3, 2 + 1, 1 + 1)


def test_count_plots_keep_their_axis_labels_inside(tmp_path):
    """counts.png and bland_altman.png: no title or axis label cut off."""
    from deepmir.evaluation.plots import bland_altman_figure, counts_figure

    data = synthetic_report(6)
    ratings = tmp_path / "ratings"
    ratings.mkdir()
    rows = [{**r, "status": "confirmed"} for r in data.lesions]
    _ratings_tsv(ratings / "sub-01_desc-rater_lesions.tsv", rows)
    result = evaluate_ratings(ratings, _predictions(tmp_path, data), n_bootstrap=0)
    for figure in (counts_figure(result), bland_altman_figure(result)):
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
        frame = figure.bbox
        for ax in figure.axes:
            for text in (ax.xaxis.label, ax.yaxis.label, ax.title):
                box = text.get_window_extent(renderer)
                assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1, text.get_text()
                assert frame.y0 - 1 <= box.y0 and box.y1 <= frame.y1 + 1, text.get_text()


def test_a_subject_without_lesions_or_without_swi():
    empty = subject_report(synthetic_report(0))
    assert "No lesion found." in empty and _payload(empty)["lesions"] == []
    data = synthetic_report(3)
    del data.images["swi"]
    payload = _payload(subject_report(data))
    assert payload["planes"] == list(PLANES) and payload["modalities"] == ["qsm", "t2w"]
    assert all("minip" not in e["tiles"]["qsm"] for e in payload["lesions"])
