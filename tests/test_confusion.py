"""Per-class errors and the confusion matrix against a matrix counted by hand, its files, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
import torch
from torch import nn

from reslab.confusion import ClassErrors, class_errors, write_class_errors
from reslab.errors import ConfigError, DataError


class Echo(nn.Module):
    """Predicts the class written in the first feature of each input: a classifier whose answers we choose."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1) -> (B, C)
        return nn.functional.one_hot(x[:, 0].long(), self.classes).float() * self.scale


CLASSES = ["cat", "dog", "bird"]
# (true, predicted) of 10 images, in two batches
PAIRS = [(0, 0), (0, 0), (0, 1), (1, 1), (1, 1), (1, 1), (1, 2), (2, 0), (2, 2), (2, 0)]


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    y = torch.tensor([t for t, _ in PAIRS])
    x = torch.tensor([[float(p)] for _, p in PAIRS])
    return [(x[:6], y[:6]), (x[6:], y[6:])]


def test_matches_the_matrix_counted_by_hand() -> None:
    model = Echo(3).train()
    report = class_errors(model, batches(), CLASSES)
    assert model.training  # its mode is put back
    #                 predicted: cat dog bird
    assert report.matrix == [[2, 1, 0], [0, 3, 1], [2, 0, 1]]
    assert report.images == 10 and report.error == pytest.approx(4 / 10)
    per = {r["class"]: r for r in report.per_class()}
    assert per["cat"]["error"] == pytest.approx(1 / 3) and per["cat"]["most_confused_with"] == "dog"
    assert per["dog"]["error"] == pytest.approx(1 / 4) and per["dog"]["most_confused_with"] == "bird"
    assert per["bird"]["error"] == pytest.approx(2 / 3) and per["bird"]["most_confused_with"] == "cat"
    assert report.table().splitlines()[2].split() == ["bird", "3", "66.67%", "cat"]  # worst class first


def test_a_class_without_images_has_no_error_rate() -> None:
    y = torch.tensor([0, 0, 1])
    report = class_errors(Echo(3), [(y[:, None].float(), y)], CLASSES)
    assert report.per_class()[2] == {
        "class": "bird", "images": 0, "errors": 0, "error": None, "most_confused_with": None,
    }  # fmt: skip
    assert report.error == 0.0


def test_json_and_png(tmp_path: Path) -> None:
    report = class_errors(Echo(3), batches(), CLASSES, split="test")
    files = write_class_errors(report, tmp_path / "eval", title="Echo on three classes")
    data = json.loads(files["class_errors.json"].read_text())
    assert data["confusion_matrix"]["counts"] == report.matrix
    assert data["confusion_matrix"]["rows"] == "true class" and data["confusion_matrix"]["classes"] == CLASSES
    assert data["error"] == pytest.approx(0.4) and [r["errors"] for r in data["per_class"]] == [1, 1, 2]
    assert matplotlib.image.imread(files["confusion.png"]).shape[0] > 200


def test_many_classes_draw_without_annotations() -> None:
    from reslab.plots import confusion_figure

    c = 100
    matrix = [[5 if i == j else (1 if j == (i + 1) % c else 0) for j in range(c)] for i in range(c)]
    fig = confusion_figure(ClassErrors([f"c{i}" for i in range(c)], matrix))
    assert not fig.axes[0].texts  # 10,000 cells: no counts written
    assert len(fig.axes[0].get_xticks()) <= 26


def test_bad_input() -> None:
    with pytest.raises(DataError, match="a label is 3 but there are 3 classes"):
        class_errors(Echo(4), [(torch.zeros(2, 1), torch.tensor([0, 3]))], CLASSES)
    with pytest.raises(DataError, match="a label is -1"):
        class_errors(Echo(3), [(torch.zeros(2, 1), torch.tensor([0, -1]))], CLASSES)
    with pytest.raises(ConfigError, match="no images"):
        class_errors(Echo(3), [], CLASSES)
    with pytest.raises(ConfigError, match="class names"):
        class_errors(Echo(3), batches(), [])
