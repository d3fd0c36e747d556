"""Per-class errors and the confusion matrix (:class:`reslab.confusion.ClassErrors`) as one figure."""

from __future__ import annotations

from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from reslab.plots.style import finish, styled

if TYPE_CHECKING:
    from reslab.confusion import ClassErrors

ANNOTATE_UP_TO = 20  # classes: beyond, the counts would not fit in their cells


@styled
def confusion_figure(report: ClassErrors, *, title: str = "") -> Figure:
    """Left, the confusion matrix with each row (a true class) as fractions of its images, counts written in
    the cells for up to 20 classes; right, each class's error (% of its images), the worst marked."""
    import numpy as np

    counts = np.array(report.matrix, dtype=np.float64)  # (C, C): rows true, columns predicted
    c = counts.shape[0]
    rows = counts.sum(1, keepdims=True)
    frac = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    side = min(4.2 + 0.25 * c, 12.0)
    fig = Figure(figsize=(side + 4.2, max(3.8, side * 0.85)), layout="constrained")
    ax, ax_e = fig.subplots(1, 2, width_ratios=(side, 4.0))
    image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    if c <= ANNOTATE_UP_TO:
        for i in range(c):
            for j in range(c):
                if counts[i, j]:
                    color = "white" if frac[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7, color=color)
    step = max(1, c // 25)  # at most ~25 labelled ticks
    ticks = list(range(0, c, step))
    ax.set_xticks(ticks, [report.classes[k] for k in ticks], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(ticks, [report.classes[k] for k in ticks], fontsize=7)
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.grid(False)
    ax.set_title(f"{report.split} split, {report.images:,} images: counts, colour = share of the row")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class's images")
    per = report.per_class()
    errors = [100 * r["error"] if r["error"] is not None else 0.0 for r in per]
    worst = max(range(c), key=lambda k: errors[k])
    colors = ["#d62728" if k == worst and errors[k] > 0 else "#1b6ac9" for k in range(c)]
    ax_e.barh(range(c), errors, color=colors)
    ax_e.set_yticks(ticks, [report.classes[k] for k in ticks], fontsize=7)
    ax_e.invert_yaxis()  # the same order as the matrix's rows
    ax_e.set(xlabel="error (% of the class's images)")
    ax_e.set_title(f"per-class error (overall {100 * report.error:.2f}%; red: the worst)")
    return finish(fig, title or "Per-class errors and confusion matrix")
