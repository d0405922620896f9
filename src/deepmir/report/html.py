"""The QC report: one self-contained HTML file per subject, and a cohort index.

Images are embedded (base64 PNG) so a report opens offline, alone, anywhere.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepmir import __version__
from deepmir.inference.orientation import Reorientation
from deepmir.labels import LESION_CLASSES
from deepmir.report.tiles import COLOURS, QSM_WINDOW_PPM, tile_png, window

if TYPE_CHECKING:
    from deepmir.inference.predict import SubjectPrediction

#: at most this many lesions get image tiles (largest first); the table lists all
MAX_TILED_LESIONS = 60
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;
text-align:right}th{background:#eee}.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ccc;padding:4px;font-size:12px}.card img{margin-right:2px}
.cmb{color:#d00}.iron{color:#c70}.calcification{color:#06c}.failed{color:#b00}
.warning{color:#a60}
"""


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, body: str) -> str:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{body}"
        f"<p><small>deepmir {__version__}</small></p></body></html>\n"
    )


def subject_report(prediction: SubjectPrediction, model_name: str) -> str:
    """Counts per class, the lesion table and tiles (SWI, QSM, T2w) per lesion."""
    name = str(prediction.ref)
    rows = prediction.table
    counts = [
        [f"<span class='{n}'>{n}</span>", sum(r["name"] == n for r in rows)]
        for n in LESION_CLASSES.values()
    ]
    columns = ["lesion_id", "name", "x", "y", "z", "volume_mm3", "probability", "chi_ppm"]
    lesion_rows = [
        [f"<span class='{r['name']}'>{r[c]}</span>" if c == "name" else r[c] for c in columns]
        for r in rows
    ]
    body = [
        f"<h1>{html.escape(name)}</h1>",
        f"<p>model: {html.escape(model_name)}. Tiles: axial, anterior up, subject's right on "
        "the right (neurological); QSM window "
        f"{QSM_WINDOW_PPM[0]} to {QSM_WINDOW_PPM[1]} ppm.</p>",
        "<h2>Counts</h2>",
        _table(["class", "lesions"], counts),
        "<h2>Lesions</h2>",
        _table(columns, lesion_rows) if rows else "<p>No lesion found.</p>",
    ]
    if rows:
        body.append("<h2>Lesion tiles</h2>")
        body.append(_tiles(prediction))
    return _page(f"deepmir QC {name}", "\n".join(body))


def _tiles(prediction: SubjectPrediction) -> str:
    subject = prediction.subject  # the brain crop: tiles stop at its edge
    orient = Reorientation.of(subject.crop_affine, subject.shape)
    images = {m: orient.forward(v) for m, v in subject.images.items()}
    mask = orient.forward(prediction.brain_mask).astype(bool)
    instances = orient.forward(prediction.lesions.instances)
    displays = {m: QSM_WINDOW_PPM if m == "qsm" else window(v, mask) for m, v in images.items()}
    order = sorted(prediction.table, key=lambda r: -r["volume_mm3"])[:MAX_TILED_LESIONS]
    cards = []
    for row in order:
        lesion = instances == row["lesion_id"]
        if not lesion.any():  # lost on a coarse input grid (another lesion holds its voxel)
            continue
        i, j, k = (int(round(c)) for c in np.argwhere(lesion).mean(axis=0))
        centre = (i, j, k)
        label = row["label"]
        tiles = "".join(
            f"<img title='{m}' alt='{m}' src='data:image/png;base64,"
            f"{tile_png(images[m], lesion, centre, displays[m], COLOURS[label])}'>"
            for m in ("swi", "qsm", "t2w")
            if m in images
        )
        cards.append(
            f"<div class='card'><b class='{row['name']}'>#{row['lesion_id']} {row['name']}"
            f"</b> {row['volume_mm3']} mm³, p {row['probability']}, χ {row['chi_ppm']} ppm"
            f"<br>{tiles}<br>{' / '.join(m for m in ('swi', 'qsm', 't2w') if m in images)}"
            "</div>"
        )
    more = len(prediction.table) - len(order)
    note = f"<p>{more} smaller lesion(s) not tiled.</p>" if more > 0 else ""
    return f"<div class='cards'>{''.join(cards)}</div>{note}"


def cohort_index(
    counts: dict[str, dict[str, int]],
    failed: dict[str, str],
    model_name: str,
    out: Path,
    warnings: dict[str, list[str]] | None = None,
    models: dict[str, str] | None = None,
) -> str:
    """Every subject with its model, its counts and a link to its report, and its
    warnings; failures with their error. ``model_name``: the models used."""
    warnings = warnings or {}
    models = models or {}
    rows: list[list[Any]] = []
    for name in sorted(set(counts) | set(failed)):
        if name in counts:
            sub = name.split("_")[0]
            ses = name.split("_")[1] if "_" in name else None
            rel = f"{sub}/{ses + '/' if ses else ''}anat/{name}_desc-deepmir_report.html"
            notes = "<br>".join(
                f"<span class='warning'>warning: {html.escape(w)}</span>"
                for w in warnings.get(name, [])
            )
            rows.append(
                [f"<a href='{rel}'>{html.escape(name)}</a>", html.escape(models.get(name, ""))]
                + [counts[name][n] for n in LESION_CLASSES.values()]
                + [notes]
            )
        else:
            rows.append(
                [html.escape(name), html.escape(models.get(name, ""))]
                + [""] * len(LESION_CLASSES)
                + [f"<span class='failed'>{html.escape(failed[name])}</span>"]
            )
    body = (
        f"<h1>deepmir cohort report</h1><p>{len(counts)} subject(s) predicted, "
        f"{len(failed)} failed; model(s) {html.escape(model_name)}; outputs in "
        f"{html.escape(str(out))}</p>"
        + _table(["subject", "model", *LESION_CLASSES.values(), "error or warning"], rows)
    )
    return _page("deepmir cohort report", body)
