"""The QC report: one self-contained HTML file per subject, and a cohort index.

Rendered with jinja2 templates (``templates/``, package data) from plain data
(:class:`deepmir.report.data.SubjectReportData`). Everything is in the file:
images are base64 PNGs, the script and style are inline, nothing is fetched,
so a report opens offline, alone, anywhere. The lesion cards are drawn by the
page's script, page by page, from a JSON block that holds every lesion's
tiles, so a subject with hundreds of lesions opens at once.

Rater mode (in the page): each lesion is confirmed or rejected and its class
may be changed; a missed lesion is added by clicking a tile; the ratings
download as ``<subject>_desc-rater_lesions.tsv`` (:mod:`deepmir.evaluation.ratings`
reads them back) with its JSON data dictionary.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from deepmir import __version__
from deepmir.inference.lesions import counts_and_centroids
from deepmir.labels import LESION_CLASSES
from deepmir.report.data import (
    MODALITIES,
    RATINGS_COLUMNS,
    RATINGS_SUFFIX,
    SubjectReportData,
    ratings_dictionary,
)
from deepmir.report.views import (
    COLOURS,
    HALF_FIELD_MM,
    MASK_COLOUR,
    MINIP_SLAB_MM,
    PLANES,
    QSM_WINDOW_PPM,
    display_window,
    lesion_tiles,
    mosaic,
    projected_position,
    projections,
)

#: lesion cards drawn per page
PAGE_SIZE = 20
#: the id of the report's summary block (read back by the cohort index)
SUMMARY_ID = "deepmir-summary"
METHODS_REFERENCE = (
    "Rashid T, Abdulkadir A, Nasrallah IM, et al. DEEPMIR: a deep neural network for "
    "differential detection of cerebral microbleeds and iron deposits in MRI. "
    "Sci Rep 2021;11:14124."
)


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("deepmir.report", "templates"),
        autoescape=jinja2.select_autoescape(["html.j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        colours=COLOURS,
        classes=LESION_CLASSES,
        mask_colour="#{:02x}{:02x}{:02x}".format(*MASK_COLOUR),
        version=__version__,
    )
    return env


def _render(template: str, **context: Any) -> str:
    return _environment().get_template(template).render(**context)


def _centroids(data: SubjectReportData) -> dict[int, tuple[float, float, float]]:
    """Each lesion's centroid in RAS crop voxels (from its voxels; the table's
    i, j, k are on the input grid)."""
    n = int(data.instances.max(initial=0))
    counts, centroids = counts_and_centroids(data.instances, n)
    return {
        k: (float(centroids[k, 0]), float(centroids[k, 1]), float(centroids[k, 2]))
        for k in range(1, n + 1)
        if counts[k] > 0
    }


def lesion_flags(row: dict[str, Any]) -> list[str]:
    """What a rater should look at twice (from the lesion's class, QSM and region)."""
    flags = []
    chi = row.get("chi_ppm")
    label = int(row["label"])
    if isinstance(chi, (int, float)):
        if label in (1, 2) and chi < 0:
            flags.append("negative chi for a paramagnetic class")
        if label == 3 and chi > 0:
            flags.append("positive chi for a calcification")
    structure = str(row.get("structure", "n/a"))
    if label == 2 and structure == "other":
        flags.append("iron deposit outside the deep grey nuclei")
    return flags


def _ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most probable first (then largest, then id)."""
    return sorted(
        rows, key=lambda r: (-float(r["probability"]), -float(r["volume_mm3"]), r["lesion_id"])
    )


def report_payload(data: SubjectReportData) -> dict[str, Any]:
    """The JSON the page's script draws from: every lesion with its tiles."""
    data.check()
    spacing = data.spacing
    images = {m: data.images[m] for m in MODALITIES if m in data.images}
    displays = {m: display_window(m, v, data.brain_mask) for m, v in images.items()}
    centroids = _centroids(data)
    lesions = []
    for row in _ordered(data.lesions):
        centroid = centroids.get(int(row["lesion_id"]))
        entry: dict[str, Any] = {
            k: row.get(k)
            for k in (
                "lesion_id",
                "label",
                "name",
                "i",
                "j",
                "k",
                "x",
                "y",
                "z",
                "volume_mm3",
                "probability",
                "chi_ppm",
                "region",
                "structure",
            )
        }
        entry["flags"] = lesion_flags(row)
        if centroid is not None:  # lost on a coarse input grid: table only
            entry["tiles"], entry["geometry"] = lesion_tiles(images, displays, centroid, spacing)
        lesions.append(entry)
    return {
        "subject": data.name,
        "modalities": list(images),
        "planes": [*PLANES, "minip"] if "swi" in images else list(PLANES),
        "affine": np.round(data.affine, 5).tolist(),
        "toInput": np.round(data.to_input_voxel, 5).tolist(),
        "colours": {str(k): v for k, v in COLOURS.items()},
        "classes": {str(k): v for k, v in LESION_CLASSES.items()},
        "lesions": lesions,
        "pageSize": PAGE_SIZE,
        "ratingsFile": data.name + RATINGS_SUFFIX,
        "ratingsColumns": list(RATINGS_COLUMNS),
        "ratingsDictionary": ratings_dictionary(),
        "storageKey": f"deepmir-ratings:{data.name}:{data.run.date}",
    }


def _whole_brain(data: SubjectReportData) -> dict[str, Any]:
    spacing = data.spacing
    shown = next((m for m in MODALITIES if m in data.images), None)
    centroids = _centroids(data)
    placed = [
        (int(r["lesion_id"]), int(r["label"]), centroids[int(r["lesion_id"])])
        for r in data.lesions
        if int(r["lesion_id"]) in centroids
    ]
    views = projections(data.brain_mask, spacing)
    for plane, view in views.items():
        view["dots"] = [
            {
                "id": i,
                "label": label,
                "xy": projected_position(plane, c, data.brain_mask.shape, spacing),
            }
            for i, label, c in placed
        ]
    slices = []
    if shown is not None:
        volume = data.images[shown]
        display = display_window(shown, volume, data.brain_mask)
        slices = mosaic(volume, display, data.brain_mask, spacing, placed)
    return {"modality": shown, "mosaic": slices, "projections": views}


def _run_details(data: SubjectReportData) -> list[tuple[str, str]]:
    run = data.run
    post = run.post_processing
    classes = list(LESION_CLASSES.values())

    def per_class(key: str) -> str:
        values = post.get(key)
        if not isinstance(values, list):
            return str(values)
        return ", ".join(
            f"{c} {'none' if v is None else v}" for c, v in zip(classes, values, strict=False)
        )

    calibration = (
        "; ".join(f"{c}: {m}" for c, m in run.calibration.items())
        if run.calibration
        else "none (probability = the raw mean class score)"
    )
    return [
        ("command", run.command or "n/a"),
        ("model", run.model_name),
        ("weights sha256", run.weights_sha256 or "n/a"),
        ("model inputs", "+".join(run.modalities)),
        ("working grid", f"{run.working_spacing_mm} mm isotropic"),
        ("probability threshold", str(post.get("threshold"))),
        ("minimum size (voxels)", per_class("min_size_voxels")),
        ("minimum probability", per_class("min_probability")),
        ("maximum elongation", per_class("max_elongation")),
        ("calibration", calibration),
        (
            "brain mask",
            "from the input" if run.mask_method == "file" else f"derived ({run.mask_method})",
        ),
        ("input files", ", ".join(run.sources) or "n/a"),
        ("deepmir version", run.deepmir_version or __version__),
        ("date", run.date or "n/a"),
    ]


def thumbnail(whole: dict[str, Any]) -> dict[str, Any] | None:
    """The axial glass brain with its lesion dots (the cohort index shows it)."""
    axial = whole["projections"].get("axial")
    return None if axial is None else {k: axial[k] for k in ("png", "w", "h", "dots")}


def subject_report(data: SubjectReportData) -> str:
    """The subject's report: counts, run details, methods, whole-brain views, the
    lesion table, lesion cards (three planes, SWI minIP) and rater mode."""
    payload = report_payload(data)
    whole = _whole_brain(data)
    counts = {n: sum(int(r["label"]) == k for r in data.lesions) for k, n in LESION_CLASSES.items()}
    has_regions = any(
        str(r.get("region", "n/a")) != "n/a" or "structure" in r for r in data.lesions
    )
    summary = {"subject": data.name, "counts": counts, "thumbnail": thumbnail(whole)}
    return _render(
        "subject.html.j2",
        data=data,
        run=data.run,
        counts=counts,
        rows=[{**r, "flags": lesion_flags(r)} for r in _ordered(data.lesions)],
        has_regions=has_regions,
        payload=payload,
        whole=whole,
        details=_run_details(data),
        summary=summary,
        summary_id=SUMMARY_ID,
        reference=METHODS_REFERENCE,
        qsm_window=QSM_WINDOW_PPM,
        field_mm=2 * HALF_FIELD_MM,
        slab_mm=MINIP_SLAB_MM,
    )


def read_summary(report: Path) -> dict[str, Any] | None:
    """The summary block of a subject's report (None: no report, or an older one)."""
    try:
        text = report.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    found = re.search(
        rf'<script type="application/json" id="{SUMMARY_ID}">(.*?)</script>', text, re.DOTALL
    )
    if found is None:
        return None
    try:
        value = json.loads(found.group(1))
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _report_path(name: str) -> str:
    sub = name.split("_")[0]
    ses = name.split("_")[1] if "_" in name else None
    return f"{sub}/{ses + '/' if ses else ''}anat/{name}_desc-deepmir_report.html"


def _histogram(values: list[int]) -> list[dict[str, int]]:
    top = max(values, default=0)
    return [{"count": c, "subjects": values.count(c)} for c in range(top + 1)]


def cohort_index(
    counts: dict[str, dict[str, int]],
    failed: dict[str, str],
    model_name: str,
    out: Path,
    warnings: dict[str, list[str]] | None = None,
    models: dict[str, str] | None = None,
) -> str:
    """Every subject (sortable table: model, counts, warnings, a thumbnail of
    its lesions, a link to its report), the distribution of counts per class
    over subjects, and failures with their error."""
    warnings = warnings or {}
    models = models or {}
    subjects = []
    for name in sorted(set(counts) | set(failed)):
        link = _report_path(name)
        summary = read_summary(Path(out) / link) if name in counts else None
        subjects.append(
            {
                "name": name,
                "link": link if name in counts else None,
                "model": models.get(name, ""),
                "counts": counts.get(name),
                "total": sum(counts[name].values()) if name in counts else None,
                "warnings": warnings.get(name, []),
                "error": failed.get(name),
                "thumbnail": summary.get("thumbnail") if summary else None,
            }
        )
    distributions = []
    for label, name in LESION_CLASSES.items():
        bins = _histogram([counts[n][name] for n in counts])
        top = max((b["subjects"] for b in bins), default=0)
        distributions.append({"label": label, "name": name, "bins": bins, "top": top})
    return _render(
        "index.html.j2",
        subjects=subjects,
        n_done=len(counts),
        n_failed=len(failed),
        model_name=model_name,
        out=str(out),
        distributions=distributions,
    )


def group_page(**context: Any) -> str:
    """The BIDS-App group level's cohort page (:func:`deepmir.cohort.group.group_index`
    gives the plain data: figures as base64 PNGs, models, CMB categories, census)."""
    return _render("group.html.j2", **context)
