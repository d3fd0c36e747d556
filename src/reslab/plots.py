"""Every matplotlib figure of reslab, one function per figure, sharing one style.

Each figure function takes plain data (lists of numbers or the analysis dataclasses) and returns a
:class:`matplotlib.figure.Figure`; :func:`save_png` writes it. Figures are built without pyplot, so importing
reslab never changes the user's backend or global style: in a notebook ``plt.show()`` keeps working, and a
returned figure displays inline like any other. Plain is always dashed and warm, residual solid and cool.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from reslab.analysis.gradient_flow import GradientProfile
    from reslab.analysis.layer_responses import ResponseProfile
    from reslab.analysis.loss_surface import Landscape

DPI = 110  # small PNGs that still read well in a README
STYLE = {"axes.grid": True, "grid.alpha": 0.3, "font.size": 9, "axes.titlesize": 10}
PLAIN_COLORS = ("#d95f02", "#e7298a", "#a6761d", "#e6ab02")  # warm: plain nets
RESIDUAL_COLORS = ("#1b6ac9", "#1b9e77", "#7570b3", "#66a61e")  # cool: residual nets
DEPTH_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")

FigFn = TypeVar("FigFn", bound=Callable[..., Figure])


def styled(fn: FigFn) -> FigFn:
    """Draw ``fn``'s figure under the project's style without touching the user's global rcParams."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def new_figure(
    ncols: int = 1, nrows: int = 1, *, width: float = 5.2, height: float = 3.8
) -> tuple[Figure, Any]:
    """A figure of ``nrows x ncols`` panels of ``width x height`` inches each (axes as a 2D array)."""
    fig = Figure(figsize=(width * ncols, height * nrows))
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def finish(fig: Figure, title: str | None = None, *, rect: tuple[float, ...] | None = None) -> Figure:
    """Add the bold suptitle and lay the panels out."""
    if title:
        fig.suptitle(title, fontsize=11, fontweight="bold")
    if rect is not None:
        fig.tight_layout(rect=rect)
    elif not fig.get_layout_engine():
        fig.tight_layout()
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at :data:`DPI` through the one writer (atomic, never through a link)."""
    from reslab.files import write_atomic

    return write_atomic(path, png_bytes(fig), "figure")


def png_bytes(fig: Figure) -> bytes:
    """The PNG of ``fig`` (for inline display in notebooks)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def style_for(residual: bool, index: int) -> dict[str, Any]:
    """Style of the ``index``-th plain or residual series: plain dashed and warm, residual solid and cool."""
    colors = RESIDUAL_COLORS if residual else PLAIN_COLORS
    return {"color": colors[index % len(colors)], "linestyle": "-" if residual else "--"}


def _styles(items: Sequence[Any]) -> list[dict[str, Any]]:
    counts = {True: 0, False: 0}
    out = []
    for item in items:
        out.append(style_for(item.residual, counts[item.residual]))
        counts[item.residual] += 1
    return out


def _positive(values: Sequence[float], floor: float) -> list[float]:
    # Log axes cannot show 0 (a fully vanished or dead layer): draw it at the floor, marked in the legend.
    return [v if v > 0 and math.isfinite(v) else floor for v in values]


@styled
def gradients_figure(profiles: Sequence[GradientProfile]) -> Figure:
    """Log ||dL/dW|| per weight layer (left) and ||dL/d(block output)|| per block (right).

    One line per model and snapshot: solid/dashed for residual/plain, thick for the start, thin with dots
    for after K steps.
    """
    fig, axes = new_figure(2, width=5.6, height=4.0)
    ax_w, ax_b = axes[0]
    every = [v for p in profiles for s in p.snapshots for v in s.weight_grad_norms + s.block_grad_norms]
    finite = [v for v in every if v > 0 and math.isfinite(v)]
    floor = min(finite) / 10 if finite else 1e-30
    for p, st in zip(profiles, _styles(profiles)):
        for s in p.snapshots:
            start = s.step == 0
            when = ("trained" if p.trained else "init") if start else f"after {s.step} steps"
            kw = dict(st, linewidth=2.0 if start else 1.0, alpha=1.0 if start else 0.8)
            if not start:
                kw["marker"] = "."
            ax_w.plot(
                range(len(s.weight_grad_norms)),
                _positive(s.weight_grad_norms, floor),
                label=f"{p.label} ({when})",
                **kw,
            )
            ax_b.plot(range(1, len(s.block_grad_norms) + 1), _positive(s.block_grad_norms, floor), **kw)
    ax_w.set(yscale="log", xlabel="weight layer (0 = input layer, last = classifier)", ylabel="‖∂L/∂W‖")
    ax_w.set_title("gradient w.r.t. each layer's weights")
    ax_b.set(yscale="log", xlabel="block (input side → output side)", ylabel="‖∂L/∂(block output)‖")
    ax_b.set_title("gradient w.r.t. each block's output activation")
    fig.legend(
        *ax_w.get_legend_handles_labels(), loc="lower center", ncol=min(4, 2 * len(profiles)), fontsize=8
    )
    return finish(fig, "Gradient norm vs depth: plain (dashed) vs residual (solid)", rect=(0, 0.07, 1, 1))


@styled
def responses_figure(profiles: Sequence[ResponseProfile]) -> Figure:
    """He et al. 2015, Fig. 7: std of each block's branch output, in layer order (left) and sorted by
    magnitude (right); plain dashed, residual solid."""
    fig, axes = new_figure(2, width=5.4, height=3.9)
    ax_o, ax_s = axes[0]
    for p, st in zip(profiles, _styles(profiles)):
        name = f"{p.label} ({'trained' if p.trained else 'init'})"
        xs = range(1, len(p.stds) + 1)
        ax_o.plot(xs, p.stds, marker=".", label=name, **st)
        ax_s.plot(xs, sorted(p.stds, reverse=True), marker=".", **st)
    ax_o.set(xlabel="block index (original order)", ylabel="std of branch output F(x)")
    ax_o.set_title("layer responses in depth order")
    ax_s.set(xlabel="rank (sorted by magnitude)", ylabel="std of branch output F(x)")
    ax_s.set_title("layer responses sorted by magnitude")
    for ax in (ax_o, ax_s):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # blocks are counted, not measured
    ax_o.legend(fontsize=8)
    return finish(fig, "Layer responses: std of each block's branch output F(x) (He et al. 2015, Fig. 7)")


@styled
def landscape_figure(maps: Sequence[Landscape]) -> Figure:
    """Top, one 2D contour per model on a shared colour scale (log of the loss); bottom, all 1D slices
    together on a log axis."""
    import numpy as np

    fig = Figure(figsize=(4.2 * max(len(maps), 2) + 1.0, 7.8), layout="constrained")
    grid = fig.add_gridspec(2, max(len(maps), 1), height_ratios=(1.2, 1.0))
    all_losses = np.array([m.losses for m in maps], dtype=np.float64)
    valid = all_losses[np.isfinite(all_losses)]
    # One colour scale for every panel, so plain and residual are read on the same terms; log levels
    # because a plain net's loss often grows by orders of magnitude away from w0.
    lo = max(float(valid.min()) if valid.size else 1e-3, 1e-3)
    hi = max(float(valid.max()) if valid.size else 10.0, lo * 1.01)
    levels = np.geomspace(lo, hi, 25)
    norm = matplotlib.colors.LogNorm(vmin=lo, vmax=hi)
    contour, top_axes = None, []
    for k, m in enumerate(maps):
        ax: Axes = fig.add_subplot(grid[0, k])
        z = np.clip(np.nan_to_num(np.array(m.losses), nan=hi, posinf=hi), lo, hi)
        contour = ax.contourf(m.coords, m.coords, z, levels=levels, norm=norm, cmap="viridis")
        ax.contour(m.coords, m.coords, z, levels=levels[::3], colors="white", linewidths=0.4, alpha=0.6)
        ax.plot(0, 0, marker="*", color="red", markersize=9, linestyle="none")
        kind = "residual" if m.residual else "plain"
        ax.set_title(f"{m.label} ({kind})\nloss at w0 (red star) = {m.center_loss:.3g}")
        ax.set(xlabel="direction 1 (α)", ylabel="direction 2 (β)", aspect="equal")
        ax.grid(False)
        top_axes.append(ax)
    if contour is not None:
        ticks = np.geomspace(lo, hi, 6)
        cbar = fig.colorbar(contour, ax=top_axes, shrink=0.9, ticks=ticks)
        cbar.ax.set_yticklabels([f"{t:.3g}" for t in ticks])
        cbar.ax.minorticks_off()
        cbar.set_label("training loss (log colour scale, shared)")
    ax1: Axes = fig.add_subplot(grid[1, :])
    for m, st in zip(maps, _styles(maps)):
        ax1.plot(
            m.coords,
            m.slice_1d,
            marker=".",
            label=f"{m.label} ({'residual' if m.residual else 'plain'})",
            **st,
        )
    ax1.set(
        yscale="log",
        xlabel="step along direction 1 (α), in units of filter-normalised ‖w‖",
        ylabel="training loss",
    )
    ax1.set_title("1D slice through w0 (β = 0)")
    ax1.legend(fontsize=8)
    return finish(
        fig, "Loss landscape around the weights, filter-normalised random directions (Li et al. 2018)"
    )


# --- sweeps: the degradation experiment (He et al. 2015, Fig. 1 and Fig. 6) --------------------------------


def _seed_mean_curve(runs: Sequence[Any], key: str) -> tuple[list[int], list[float]]:
    """(iterations, mean of ``key`` in % over the runs' histories) at the iterations every run logged."""
    per_run = [
        {int(h["iteration"]): float(h[key]) for h in r.history if h.get(key) is not None} for r in runs
    ]
    common = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
    return common, [100 * sum(p[i] for p in per_run) / len(per_run) for i in common]


@styled
def compare_curves_figure(records: Sequence[Any], *, subject: str = "", depth_unit: str = "layers") -> Figure:
    """Laid out as He et al. 2015, Fig. 6: error vs iterations, plain left, residual right.

    ``records``: objects with ``kind`` ("plain" | "residual"), ``depth``, ``status`` and ``history``
    (metrics.jsonl records), e.g. :class:`reslab.experiments.RunRecord`; seeds of one depth and kind are
    averaged. Training error (thin, dashed; train mode, averaged over each evaluation interval) and test
    error (bold); one colour per depth on both panels, which share the y-axis. A run that diverged is drawn
    up to its last finite point, marked with an x.
    """
    depths = sorted({r.depth for r in records})
    color = {d: DEPTH_COLORS[i % len(DEPTH_COLORS)] for i, d in enumerate(depths)}
    fig, axes = new_figure(2, width=5.0, height=3.9)
    final: list[float] = []
    for ax, kind in zip(axes[0], ("plain", "residual")):
        for d in depths:
            runs = [r for r in records if r.kind == kind and r.depth == d]
            if runs:
                final += _draw_curves(ax, runs, color[d], f"{kind}, {d} {depth_unit}")
        seeds = len({r.seed for r in records})
        ax.set_title(
            f"{kind} nets: training (dashed) and test (bold) error"
            + (f", mean of {seeds} seeds" if seeds > 1 else "")
        )
        ax.set(xlabel="iterations (optimizer steps)", ylabel="error (%)")
        ax.set_xlim(left=0)
        ax.legend(fontsize=8, title="colour = depth; x = diverged", title_fontsize=8)
    # As in Fig. 6, the y-axis is sized for where the nets end (up to 2.5x the worst final error), so the
    # gaps between depths stay readable; the first steps of training run off the top.
    top = max(final, default=40.0)
    axes[0][0].set_ylim(0, min(100.0, max(5.0, 2.5 * top)))
    for ax in axes[0][1:]:
        ax.sharey(axes[0][0])
    title = "Plain vs residual nets: error during training"
    return finish(fig, f"{title} ({subject})" if subject else title)


def _draw_curves(ax: Axes, runs: Sequence[Any], color: str, label: str) -> list[float]:
    """One depth and kind: mean training and test curves; returns their final values (for the y-range)."""
    it_tr, tr = _seed_mean_curve(runs, "train_error")
    it_te, te = _seed_mean_curve(runs, "test_error")
    diverged = any(getattr(r, "status", "trained") == "diverged" for r in runs)
    ax.plot(it_tr, tr, color=color, linestyle="--", linewidth=1.0, alpha=0.9)
    ax.plot(it_te, te, color=color, linewidth=2.2, label=label + (" (diverged)" if diverged else ""))
    if diverged:  # an x on the top edge at the iteration where it stopped
        at = min(r.diverged_at or 0 for r in runs if getattr(r, "status", "") == "diverged")
        mark = dict(marker="x", color=color, markersize=9, markeredgewidth=2, linestyle="none", clip_on=False)
        ax.plot([at], [1.0], transform=ax.get_xaxis_transform(), **mark)
    return [] if diverged else tr[-1:] + te[-1:]


@styled
def error_vs_depth_figure(
    records: Sequence[Any],
    *,
    subject: str = "",
    depth_label: str = "number of layers",
    show_test: bool = True,
) -> Figure:
    """Final training error (eval mode, whole training split) vs depth, plain vs residual, mean ± std band
    over seeds; test error dotted. A depth whose runs diverged is an x at the top, not a number.

    ``records``: objects with ``kind``, ``depth``, ``seed``, ``status``, ``final_train_error`` and
    ``final_test_error``.
    """
    fig, axes = new_figure(1, width=7.4, height=4.4)
    ax = axes[0][0]
    seeds = len({r.seed for r in records})
    for kind, marker in (("plain", "o"), ("residual", "s")):
        mine = [r for r in records if r.kind == kind]
        if mine:
            _draw_depth_lines(
                ax, mine, style_for(kind == "residual", 0), kind, marker, band=seeds > 1, show_test=show_test
            )
    all_depths = sorted({r.depth for r in records})
    if all_depths and all_depths[-1] >= 8 * all_depths[0]:  # e.g. MLPs of 4, 16, 64 blocks: even spacing
        ax.set_xscale("log", base=2)
    ax.set_xticks(all_depths, [str(d) for d in all_depths])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set(xlabel=depth_label, ylabel="final error (%)")
    band = f"mean ± std band over {seeds} seeds" if seeds > 1 else "one seed"
    ax.set_title(
        f"bold: training error (eval mode, whole training split); dotted: test error; {band}", fontsize=9
    )
    ax.legend(fontsize=8)
    title = "Final error vs depth, plain vs residual"
    return finish(fig, f"{title} ({subject})" if subject else title)


def _draw_depth_lines(
    ax: Axes,
    records: Sequence[Any],
    st: dict[str, Any],
    kind: str,
    marker: str,
    *,
    band: bool,
    show_test: bool,
) -> None:
    trained = [r for r in records if getattr(r, "status", "trained") != "diverged"]
    depths = sorted({r.depth for r in trained})
    for key, what in (("final_train_error", "training"), ("final_test_error", "test")):
        if what == "test" and not show_test:
            continue
        groups = [[100 * getattr(r, key) for r in trained if r.depth == d] for d in depths]
        mean = [sum(g) / len(g) for g in groups]
        std = [
            math.sqrt(sum((v - m) ** 2 for v in g) / (len(g) - 1)) if len(g) > 1 else 0.0
            for g, m in zip(groups, mean)
        ]
        if what == "training":
            ax.plot(depths, mean, marker=marker, linewidth=2.0, label=f"{kind}: training error", **st)
            if band:
                lo, hi = [max(m - s, 0.0) for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)]
                ax.fill_between(depths, lo, hi, color=st["color"], alpha=0.18, linewidth=0)
        else:
            ax.plot(
                depths,
                mean,
                marker=marker,
                markersize=4,
                linewidth=1.0,
                alpha=0.6,
                color=st["color"],
                linestyle=":",
                label=f"{kind}: test error",
            )
    failed = sorted({r.depth for r in records if getattr(r, "status", "trained") == "diverged"} - set(depths))
    if failed:
        ax.plot(
            failed,
            [100.0] * len(failed),
            marker="x",
            markersize=10,
            markeredgewidth=2,
            linestyle="none",
            color=st["color"],
            label=f"{kind}: diverged",
        )


# --- any runs: their training curves (reslab plot) -------------------------------------------------------


@styled
def run_curves_figure(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> Figure:
    """Error (left, %) and loss (right, log scale) against iterations of each ``(label, metrics records)``.

    Training figures dashed (train mode, averaged over each evaluation interval, label-smoothed loss), test
    figures solid; one colour per run.
    """
    fig, axes = new_figure(2, width=5.2, height=3.8)
    ax_err, ax_loss = axes[0]
    for i, (label, history) in enumerate(runs):
        color = DEPTH_COLORS[i % len(DEPTH_COLORS)]
        for split, style in (("train", "--"), ("test", "-")):
            for ax, key, scale in ((ax_err, "error", 100.0), (ax_loss, "loss", 1.0)):
                points = [
                    (int(h["iteration"]), scale * float(h[f"{split}_{key}"]))
                    for h in history
                    if h.get(f"{split}_{key}") is not None and h.get("iteration") is not None
                ]
                ax.plot(
                    [p[0] for p in points], [p[1] for p in points], color=color, linestyle=style,
                    linewidth=1.0 if split == "train" else 2.0, label=f"{label} ({split})",
                )  # fmt: skip
    ax_err.set(xlabel="iterations (optimizer steps)", ylabel="error (%)", title="error")
    # log scale: a loss spike early in training (eval-mode BN on a fresh net) would flatten the rest
    ax_loss.set(xlabel="iterations (optimizer steps)", ylabel="cross-entropy", title="loss", yscale="log")
    for ax in (ax_err, ax_loss):
        ax.set_xlim(left=0)
    ax_err.legend(fontsize=8)
    return finish(fig, "Training (dashed) and test (solid) curves")


def plot_runs(runs: Sequence[str | Path]) -> Figure:
    """The curves of one or more run directories, from their metrics.jsonl (see :func:`run_curves_figure`).

    Raises:
        ConfigError: a path is not a run directory with evaluation records yet.
    """
    from reslab.engine.rundir import METRICS, read_jsonl
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


# --- ablations: He et al. 2016, "Identity Mappings", Fig. 3 and Tables 1-2 ---------------------------------


@styled
def ablation_curves_figure(records: Sequence[Any], *, baseline: str, subject: str = "") -> Figure:
    """Laid out as He et al. 2016, Fig. 3: one panel per variant, each against the baseline (grey).

    ``records``: objects with ``kind`` (the variant), ``status``, ``diverged_at`` and ``history``
    (metrics.jsonl records), e.g. :class:`reslab.experiments.RunRecord`; seeds of one variant are averaged.
    Training error (thin, dashed; train mode, averaged over each evaluation interval) and test error (bold)
    against iterations; a run that diverged is drawn up to its last finite point, marked with an x. Each
    panel's y-axis is sized for where its two nets end (up to 2.5x the worse final error).
    """
    variants = list(dict.fromkeys([baseline, *(r.kind for r in records)]))
    others = [v for v in variants if v != baseline] or [baseline]
    ncols = min(3, len(others))
    fig, axes = new_figure(ncols, math.ceil(len(others) / ncols), width=4.6, height=3.6)
    base_runs = [r for r in records if r.kind == baseline]
    seeds = len({r.seed for r in records})
    for i, (ax, variant) in enumerate(zip(axes.flat, others)):
        final: list[float] = []
        if variant != baseline and base_runs:
            final += _draw_curves(ax, base_runs, _variant_color(0), baseline)
        runs = [r for r in records if r.kind == variant]
        final += _draw_curves(ax, runs, _variant_color(variants.index(variant)), variant)
        ax.set_title(f"({chr(ord('a') + i)}) {variant}" + (f" vs {baseline}" if variant != baseline else ""))
        ax.set(xlabel="iterations (optimizer steps)", ylabel="error (%)")
        ax.set_xlim(left=0)
        ax.set_ylim(0, min(100.0, max(5.0, 2.5 * max(final, default=40.0))))
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(others) :]:
        ax.set_visible(False)
    mean = f", mean of {seeds} seeds" if seeds > 1 else ""
    title = f"Training (dashed) and test (bold) error per variant{mean}"
    return finish(fig, f"{title} ({subject})" if subject else title)


@styled
def ablation_bars_figure(records: Sequence[Any], *, order: Sequence[str], subject: str = "") -> Figure:
    """Final training error (solid) and test error (hatched) per variant: mean ± std over seeds as bars and
    whiskers, each seed a dot, the training mean written on its bar. The runs of a variant that diverged
    are not averaged in; the variant gets an x at the top and "N diverged"."""
    fig, axes = new_figure(1, width=max(5.5, 1.2 * len(order) + 2.0), height=4.2)
    ax = axes[0][0]
    top, diverged = 0.0, {}
    for i, variant in enumerate(order):
        runs = [r for r in records if r.kind == variant]
        ok = [r for r in runs if getattr(r, "status", "trained") != "diverged"]
        color = _variant_color(i)
        top = max(top, _error_bar(ax, i - 0.19, ok, "final_train_error", color, hatch=None))
        top = max(top, _error_bar(ax, i + 0.19, ok, "final_test_error", color, hatch="//"))
        if len(ok) < len(runs):
            diverged[i] = len(runs) - len(ok)
    top = max(top * 1.15, 1.0)
    for i, n in diverged.items():
        ax.plot([i], [top], marker="x", color="#d62728", markersize=10, markeredgewidth=2, clip_on=False)
        ax.annotate(
            f"{n} diverged", (i, top), ha="center", va="top", xytext=(0, -8), textcoords="offset points"
        )
    ax.set_ylim(0, top)
    ax.set_xticks(range(len(order)), list(order), rotation=20, ha="right")
    ax.set_ylabel("final error (%)")
    seeds = len({r.seed for r in records})
    spread = f"mean ± std over {seeds} seeds, dots = seeds" if seeds > 1 else "one seed"
    ax.set_title(f"solid: training error (eval mode, whole training split)\nhatched: test error; {spread}")
    title = "Final error per variant"
    return finish(fig, f"{title} ({subject})" if subject else title)


def _variant_color(index: int) -> str:
    """The baseline (index 0) grey, the other variants in turn: the same colours in both ablation figures."""
    return "#7f7f7f" if index == 0 else DEPTH_COLORS[(index - 1) % len(DEPTH_COLORS)]


def _error_bar(ax: Axes, x: float, runs: Sequence[Any], key: str, color: str, *, hatch: str | None) -> float:
    """One bar (mean ± std in %) with its seeds as dots; returns the highest point drawn (0: nothing)."""
    values = [100 * getattr(r, key) for r in runs if math.isfinite(getattr(r, key))]
    if not values:
        return 0.0
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    face = "white" if hatch else color
    ax.bar(x, mean, 0.38, yerr=std or None, capsize=3, color=face, edgecolor=color, hatch=hatch)
    ax.plot([x] * len(values), values, "k.", markersize=4, zorder=3)
    if hatch is None:
        ax.annotate(
            f"{mean:.2f}", (x, max(mean + std, *values)), xytext=(0, 3), textcoords="offset points",
            ha="center", va="bottom", fontsize=7,
        )  # fmt: skip
    return max(mean + std, *values)
