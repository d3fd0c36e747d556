"""report.html of a run and of a sweep, read back with html.parser: self-contained (no script, no external
resource), with the table, the verdict and figures that decode to PNG; top-5 only for more than 5 classes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import Page, read_report
from reslab.errors import ConfigError
from reslab.reports import write_run_report


def column(page: Page, title: str) -> list[str]:
    """The cells under the header ``title`` in the first table that has it."""
    for t in page.tables:
        if title in t[0]:
            k = t[0].index(title)
            return [row[k] for row in t[1:]]
    raise AssertionError(f"no column {title!r}")


@pytest.fixture
def run(tiny_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)  # the shared run stays read-only
    return copy


def test_a_finished_run(run: Path) -> None:
    path = write_run_report(run)
    assert path == run / "report.html"
    page = read_report(path)
    summary = json.loads((run / "summary.json").read_text())
    assert page.verdict.startswith("finished: final training error")
    assert (
        f"{100 * summary['final_test_error']:.2f}%" in page.verdict and "top-5" in page.verdict
    )  # 10 classes
    assert len(page.images) == 1  # the curves
    iterations = column(page, "iteration")
    assert iterations == [str(h["iteration"]) for h in map(json.loads, (run / "metrics.jsonl").open())]
    assert (
        "running training error (train mode)" in page.tables[1][0] and "test top-5 error" in page.tables[1][0]
    )
    rows = [row for t in page.tables for row in t]
    assert ["model", "resnet8"] in rows and ["dataset", "synthetic:1x12x12"] in rows  # settings, data facts


def test_few_classes_hide_top5_and_eval_files_are_shown(run: Path) -> None:
    meta = json.loads((run / "config.json").read_text())
    meta["data"]["classes"] = ["a", "b", "c"]
    (run / "config.json").write_text(json.dumps(meta))
    (run / "class_errors.json").write_text(json.dumps({"split": "test", "per_class": [
        {"class": "a", "images": 4, "errors": 1, "error": 0.25, "most_confused_with": "b"},
    ]}))  # fmt: skip
    shutil.copy(Path(__file__).parent.parent / "docs" / "img" / "curves.png", run / "confusion.png")
    page = read_report(write_run_report(run))
    text = " ".join(c for t in page.tables for row in t for c in row)
    assert "top-5" not in text and "top-5" not in page.verdict
    assert column(page, "most confused with") == ["b"] and len(page.images) == 2


def test_a_run_in_progress_or_diverged(run: Path) -> None:
    (run / "summary.json").unlink()
    assert read_report(write_run_report(run)).verdict.startswith(
        "in progress (or stopped): last evaluation at"
    )
    (run / "diverged.json").write_text('{"iteration": 7}')
    assert read_report(write_run_report(run)).verdict.startswith("diverged at iteration 7")


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"has no config\.json; pass a reslab run directory"):
        write_run_report(tmp_path)
