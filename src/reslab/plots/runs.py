"""Any runs' training curves (``reslab plot``), from their metrics.jsonl."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from reslab.plots.style import (
    DEPTH_COLORS,
    TEST,
    TRAIN,
    error_axis,
    finish,
    legend_with_key,
    new_figure,
    split_handles,
    styled,
)


@styled
def run_curves_figure(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> Figure:
    """Error (left, %) and loss (right, log scale) against iterations of each ``(label, metrics records)``.

    Training figures dashed (train mode, averaged over each evaluation interval, label-smoothed loss), test
    figures solid; one colour per run; the error axis shows the full range (log above 1%).
    """
    fig, axes = new_figure(2, width=5.2, height=4.0)
    ax_err, ax_loss = axes[0]
    errors: list[float] = []
    for i, (label, history) in enumerate(runs):
        color = DEPTH_COLORS[i % len(DEPTH_COLORS)]
        for split, style in (("train", TRAIN), ("test", TEST)):
            for ax, key, scale in ((ax_err, "error", 100.0), (ax_loss, "loss", 1.0)):
                points = [
                    (int(h["iteration"]), scale * float(h[f"{split}_{key}"]))
                    for h in history
                    if h.get(f"{split}_{key}") is not None and h.get("iteration") is not None
                ]
                width, name = (1.0, None) if split == "train" else (2.0, label)  # one legend entry per run
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                ax.plot(xs, ys, color=color, linewidth=width, label=name, **style)
                errors += [p[1] for p in points] if key == "error" else []
    ax_err.set(xlabel="iterations (optimizer steps)", title="error")
    error_axis(ax_err, max(errors, default=100.0))
    # log scale: a loss spike early in training (eval-mode BN on a fresh net) would flatten the rest
    ax_loss.set(xlabel="iterations (optimizer steps)", ylabel="cross-entropy", title="loss", yscale="log")
    for ax in (ax_err, ax_loss):
        ax.set_xlim(left=0)
    legend_with_key(ax_err, split_handles(("training (train mode, running)", "test")), "colour = run")
    return finish(fig, "Training and test curves")


def plot_runs(runs: Sequence[str | Path]) -> Figure:
    """The curves of one or more run directories, from their metrics.jsonl (see :func:`run_curves_figure`).

    Raises:
        ConfigError: a path is not a run directory with evaluation records yet.
    """
    from reslab.engine.store.rundir import METRICS, read_jsonl
    from reslab.errors import ConfigError

    if not runs:
        raise ConfigError("no run given; pass one or more run directories")
    paths = [Path(r).expanduser() for r in runs]
    names = [p.name for p in paths]
    series = []
    for path in paths:
        if not (path / METRICS).is_file():
            raise ConfigError(f"{path} has no {METRICS}; pass a reslab run directory")
        history = read_jsonl(path / METRICS)
        if not history:
            raise ConfigError(f"{path / METRICS} has no evaluation yet; plot it after the first evaluation")
        series.append((path.name if names.count(path.name) == 1 else str(path), history))
    return run_curves_figure(series)
