"""Plots of count agreement: Bland-Altman and predicted-vs-reference counts.

One figure each, with a panel per lesion class. Figures are built with
:class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot state), so
plotting works headless and from threads. Counts are whole numbers, so
subjects with the same pair of counts are drawn as one marker whose area grows
with their number.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from deepmir.evaluation.metrics import EvaluationResult
from deepmir.io.atomic import atomic_path
from deepmir.labels import LESION_CLASSES

#: Marker colour per class name.
CLASS_COLOURS = {"cmb": "#c0392b", "iron": "#d68910", "calcification": "#2471a3"}

PANEL_SIZE_INCHES = 4.0
DPI = 120


def _counts(result: EvaluationResult, label: int) -> tuple[npt.NDArray[np.int64], ...]:
    rows = [r for r in result.per_subject if r.label == label]
    reference = np.array([r.n_reference for r in rows], dtype=np.int64)
    predicted = np.array([r.n_predicted for r in rows], dtype=np.int64)
    return reference, predicted


def _grouped(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Unique (x, y) points and a marker area that grows with their multiplicity."""
    if x.size == 0:
        empty = np.zeros(0)
        return empty, empty, empty
    points, multiplicity = np.unique(np.stack([x, y], axis=1), axis=0, return_counts=True)
    area = 25.0 + 20.0 * (multiplicity - 1).astype(np.float64)
    return points[:, 0], points[:, 1], area


def _panels(title: str) -> tuple[Figure, list[Axes]]:
    n = len(LESION_CLASSES)
    # constrained layout keeps titles and axis labels inside the picture (equal
    # aspect panels under a suptitle clipped the x label with tight_layout)
    figure = Figure(
        figsize=(PANEL_SIZE_INCHES * n, PANEL_SIZE_INCHES + 0.6), dpi=DPI, layout="constrained"
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, n, squeeze=False)[0]
    figure.suptitle(title)
    return figure, list(axes)


def bland_altman_figure(result: EvaluationResult) -> Figure:
    """Bland-Altman plot of lesion counts per class.

    x: mean of reference and predicted count of a subject; y: predicted minus
    reference count. Lines: mean difference (bias) and its 95 % limits of
    agreement (mean +- 1.96 SD).
    """
    figure, axes = _panels(
        "Lesion counts: Bland-Altman (predicted - reference); marker area grows with subjects"
    )
    for ax, (label, name) in zip(axes, LESION_CLASSES.items(), strict=True):
        reference, predicted = _counts(result, label)
        mean = (reference + predicted) / 2.0
        difference = (predicted - reference).astype(np.float64)
        x, y, size = _grouped(mean, difference)
        ax.scatter(x, y, s=size, color=CLASS_COLOURS.get(name, "k"), alpha=0.7, lw=0)
        agreement = result.classes[name].count_agreement
        bias, low, high = agreement.mean_difference, agreement.limit_low, agreement.limit_high
        if math.isfinite(bias):
            ax.axhline(bias, color="0.3", lw=1, label=f"bias {bias:+.2f}")
        if math.isfinite(low) and math.isfinite(high):
            ax.axhline(
                low, color="0.3", ls="--", lw=1, label=f"95% limits {low:+.2f} / {high:+.2f}"
            )
            ax.axhline(high, color="0.3", ls="--", lw=1)
        if math.isfinite(bias):
            ax.legend(loc="best", fontsize=8, framealpha=0.9)
        ax.margins(y=0.2)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.axhline(0.0, color="0.8", lw=0.8, zorder=0)
        ax.set_title(f"{name} (n = {agreement.n_subjects} subjects)")
        ax.set_xlabel("mean of reference and predicted count")
        ax.set_ylabel("predicted - reference count")
    return figure


def counts_figure(result: EvaluationResult) -> Figure:
    """Predicted against reference lesion count per subject, per class.

    The diagonal is perfect agreement; the title gives Pearson r.
    """
    figure, axes = _panels(
        "Lesion counts per subject: predicted vs reference; marker area grows with subjects"
    )
    for ax, (label, name) in zip(axes, LESION_CLASSES.items(), strict=True):
        reference, predicted = _counts(result, label)
        x, y, size = _grouped(reference.astype(np.float64), predicted.astype(np.float64))
        ax.scatter(x, y, s=size, color=CLASS_COLOURS.get(name, "k"), alpha=0.7, lw=0)
        top = float(max(reference.max(initial=0), predicted.max(initial=0), 1)) * 1.08
        ax.plot([0, top], [0, top], color="0.5", ls="--", lw=1)
        ax.set_xlim(-0.05 * top, top)
        ax.set_ylim(-0.05 * top, top)
        ax.set_aspect("equal")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        r = result.classes[name].count_agreement.pearson_r
        r_text = f"r = {r:.2f}" if math.isfinite(r) else "r undefined"
        ax.set_title(f"{name} ({r_text})")
        ax.set_xlabel("reference count")
        ax.set_ylabel("predicted count")
    return figure


def figure_png(figure: Figure) -> bytes:
    """A figure rendered as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.1)
    return buffer.getvalue()


def save_png(figure: Figure, path: str | os.PathLike[str]) -> None:
    """Save a figure as PNG, atomically."""
    content = figure_png(figure)
    with atomic_path(path) as tmp:
        tmp.write_bytes(content)


def render_plots(result: EvaluationResult) -> dict[str, bytes]:
    """PNG bytes of every plot, by output file name."""
    return {
        "bland_altman.png": figure_png(bland_altman_figure(result)),
        "counts.png": figure_png(counts_figure(result)),
    }
