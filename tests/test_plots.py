"""The figures' one convention: dashed = training, solid = test (said in each legend), the full error range on
the axis, singular/plural labels, and the diverged marker explained only where one is drawn."""

from __future__ import annotations

import math

import pytest

from reslab.analysis.gradient_flow import GradientProfile, GradientSnapshot
from reslab.analysis.layer_responses import ResponseProfile
from reslab.experiments.results import RunRecord
from reslab.plots import (
    ablation_curves_figure,
    compare_curves_figure,
    count,
    error_vs_depth_figure,
    gradients_figure,
    responses_figure,
    run_curves_figure,
)


def history(final: float, *, stop: int | None = None) -> list[dict[str, float]]:
    """Ten evaluations from 90% error down towards ``final`` (fractions); none from ``stop`` on."""
    out = []
    for i in range(1, 11):
        if stop is not None and 16 * i >= stop:
            break
        e = final + (0.9 - final) * math.exp(-i / 2)
        out.append({"iteration": 16 * i, "train_error": e * 0.9, "test_error": e * 1.1})
    return out


def record(kind: str, depth: int, final: float, *, diverged: bool = False, seed: int = 0) -> RunRecord:
    if diverged:
        return RunRecord(kind, depth, seed, "m", 1, math.nan, math.nan, 1.0, 1.0, 1.0, 60, "x",
                         history(final, stop=60), status="diverged", diverged_at=60)  # fmt: skip
    return RunRecord(kind, depth, seed, "m", 1, final, final + 0.01, 0.1, 0.1, 1.0, 160, "x", history(final))


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def styles(ax) -> dict[str, str]:
    return {line.get_label(): line.get_linestyle() for line in ax.get_lines()}


@pytest.fixture(scope="module")
def trained() -> list[RunRecord]:
    plain = [record("plain", 1, 0.05), record("plain", 4, 0.9)]
    return [*plain, record("residual", 1, 0.004), record("residual", 4, 0.002)]


def test_compare_curves_say_the_convention_and_show_the_whole_range(trained: list[RunRecord]) -> None:
    fig = compare_curves_figure(trained, depth_unit="dense blocks")
    for ax in fig.axes:
        texts = legend_texts(ax)
        assert "dashed: training error" in texts and "solid: test error" in texts
        assert ax.get_legend().get_title().get_text() == "colour = depth"  # nothing diverged: no x explained
        dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert dashed and all(max(line.get_ydata()) <= ax.get_ylim()[1] for line in ax.get_lines())
        assert ax.get_yscale() == "symlog" and ax.get_ylim()[0] == 0
    assert "plain, 1 dense block" in legend_texts(fig.axes[0])
    assert "plain, 4 dense blocks" in legend_texts(fig.axes[0])
    # the first evaluation (81% test error) is on the axis: no clip at a few times the final error
    assert fig.axes[0].get_ylim()[1] >= 90


def test_the_diverged_marker_is_explained_only_where_drawn(trained: list[RunRecord]) -> None:
    records = [*trained[:3], record("residual", 4, 0.01, diverged=True)]
    fig = compare_curves_figure(records, depth_unit="dense blocks")
    plain, residual = fig.axes
    assert "x = diverged" not in plain.get_legend().get_title().get_text()
    assert residual.get_legend().get_title().get_text() == "colour = depth; x = diverged"
    assert "residual, 4 dense blocks (diverged)" in legend_texts(residual)
    fig = ablation_curves_figure(
        [record("identity", 8, 0.01), record("scaling", 8, 0.02)], baseline="identity"
    )
    assert "diverged" not in fig.axes[0].get_legend().get_title().get_text()
    assert "dashed: training error" in legend_texts(fig.axes[0])


def test_error_vs_depth_uses_the_same_convention(trained: list[RunRecord]) -> None:
    ax = error_vs_depth_figure(trained).axes[0]
    lines = styles(ax)
    assert lines["plain: training error (dashed)"] == "--" and lines["plain: test error (solid)"] == "-"
    assert lines["residual: training error (dashed)"] == "--" and "diverged" not in " ".join(lines)
    assert ax.get_yscale() == "symlog" and ax.get_ylim()[1] >= 91  # plain at 4 blocks: 90% and 91%


def test_run_curves_and_analysis_figures() -> None:
    ax = run_curves_figure([("a", history(0.01)), ("b", history(0.02))]).axes[0]
    assert legend_texts(ax) == ["a", "b", "dashed: training (train mode, running)", "solid: test"]
    snap = GradientSnapshot(0, 2.3, ["a", "b"], [1e-3, 1.0], [0.5])
    grads = gradients_figure(
        [GradientProfile("p", "p", False, False, [snap]), GradientProfile("r", "r", True, False, [snap])]
    )
    prof = [
        ResponseProfile("p", "p", False, True, [1.0, 1.1], [1, 1]),
        ResponseProfile("r", "r", True, True, [0.9, 1], [1, 1]),
    ]
    for fig in (grads, responses_figure(prof)):  # no training/test split here: no dashed line at all
        assert {line.get_linestyle() for ax in fig.axes for line in ax.get_lines()} == {"-"}
        markers = {line.get_marker() for line in fig.axes[0].get_lines()}
        assert markers == {"o", "s"}  # plain circles, residual squares


def test_count() -> None:
    assert (count(1, "dense blocks"), count(2, "dense blocks"), count(1, "layers")) == (
        "1 dense block",
        "2 dense blocks",
        "1 layer",
    )
