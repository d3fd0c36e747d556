"""Per-class errors and the confusion matrix of a classifier on a split: what Keras/Lightning users expect
from an evaluation beside the overall error.

:func:`class_errors` runs a model over ``(x, y)`` batches (any iterable: a reslab loader, a torch
DataLoader, a list) and counts ``matrix[true][predicted]`` on the model's device, with one host transfer at
the end. :class:`ClassErrors` gives the per-class error, a JSON-ready dict and a terminal table;
:func:`write_class_errors` writes ``class_errors.json`` and ``confusion.png`` (drawn by
:func:`reslab.plots.confusion_figure`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reslab.errors import ConfigError, DataError

JSON_NAME = "class_errors.json"
PNG_NAME = "confusion.png"


@dataclass(frozen=True)
class ClassErrors:
    """Counts of one split: ``matrix[i][j]`` images of true class ``i`` predicted as class ``j``."""

    classes: list[str]
    matrix: list[list[int]]  # (C, C): rows = true class, columns = predicted class
    split: str = "test"

    @property
    def images(self) -> int:
        return sum(map(sum, self.matrix))

    @property
    def error(self) -> float:
        """The overall error: off-diagonal counts over all images."""
        right = sum(self.matrix[i][i] for i in range(len(self.classes)))
        return 1.0 - right / self.images if self.images else float("nan")

    def per_class(self) -> list[dict[str, Any]]:
        """One entry per true class: its images, errors, error rate (None without images) and the class it is
        most often mistaken for (None when it never is)."""
        out = []
        for i, name in enumerate(self.classes):
            row = self.matrix[i]
            n, wrong = sum(row), sum(row) - row[i]
            others = [(count, j) for j, count in enumerate(row) if j != i and count > 0]
            confused = self.classes[max(others)[1]] if others else None
            out.append({"class": name, "images": n, "errors": wrong, "error": wrong / n if n else None,
                        "most_confused_with": confused})  # fmt: skip
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the split, the overall figures, per-class errors, the matrix and its orientation."""
        return {
            "split": self.split,
            "images": self.images,
            "error": self.error,
            "per_class": self.per_class(),
            "confusion_matrix": {
                "rows": "true class",
                "columns": "predicted class",
                "classes": self.classes,
                "counts": self.matrix,
            },
        }

    def table(self) -> str:
        """Per-class errors as a terminal table, worst class first."""
        rows = sorted(
            self.per_class(), key=lambda r: -1.0 if r["error"] is None else r["error"], reverse=True
        )
        lines = [("class", "images", "error", "most confused with")]
        for r in rows:
            error = "–" if r["error"] is None else f"{r['error']:.2%}"
            lines.append((r["class"], str(r["images"]), error, r["most_confused_with"] or "–"))
        widths = [max(len(line[k]) for line in lines) for k in range(4)]
        text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(text)


@torch.inference_mode()
def class_errors(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    classes: Sequence[str],
    *,
    split: str = "test",
) -> ClassErrors:
    """The confusion matrix of ``model`` (in eval mode; its mode is restored) over ``batches`` of
    ``(x (B, ...), y (B,))``, each ``x`` ready for the model (normalised, on its device).

    Raises:
        ConfigError: no classes, or no batches.
        DataError: a label outside ``0 .. len(classes) - 1``.
    """
    c = len(classes)
    if c == 0:
        raise ConfigError("class_errors needs the class names; pass classes=[...] with one name per class")
    was_training = model.training
    model.eval()
    counts: torch.Tensor | None = None  # (C*C,) on the model's device
    lo, hi = [], []  # per batch, the smallest and largest label (checked once, after the loop: no host sync)
    try:
        for x, y in batches:
            pred = model(x).argmax(1)  # (B,)
            y = y.to(pred.device, torch.int64)
            if not y.numel():
                continue
            lo.append(y.min())
            hi.append(y.max())
            flat = torch.bincount(y.clamp(0, c - 1) * c + pred.clamp(0, c - 1), minlength=c * c)
            counts = flat if counts is None else counts + flat
    finally:
        model.train(was_training)
    if counts is None:
        raise ConfigError("class_errors got no images; pass a loader with at least one (x, y) batch")
    low, high = int(torch.stack(lo).min()), int(torch.stack(hi).max())
    if low < 0 or high >= c:
        bad = low if low < 0 else high
        raise DataError(
            f"a label is {bad} but there are {c} classes (labels 0..{c - 1}); pass one name per class"
        )
    return ClassErrors(list(classes), counts.view(c, c).cpu().tolist(), split)


def write_class_errors(report: ClassErrors, out: str | Path, *, title: str = "") -> dict[str, Path]:
    """``class_errors.json`` and ``confusion.png`` in the directory ``out``; their paths."""
    from reslab.files import write_atomic
    from reslab.plots import confusion_figure, save_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = write_atomic(out / JSON_NAME, (json.dumps(report.to_dict(), indent=2) + "\n").encode(), "results")
    return {JSON_NAME: path, PNG_NAME: save_png(confusion_figure(report, title=title), out / PNG_NAME)}
