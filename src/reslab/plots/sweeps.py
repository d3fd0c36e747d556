"""The sweeps' figures: the degradation experiment (He et al. 2015, Fig. 1 and 6) and the shortcut ablations
(He et al. 2016, Fig. 3 and Tables 1-2)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from reslab.plots.style import (
    DEPTH_COLORS,
    TEST,
    TRAIN,
    count,
    error_axis,
    finish,
    legend_with_key,
    new_figure,
    split_handles,
    style_for,
    styled,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes


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
    averaged. Training error dashed (train mode, averaged over each evaluation interval), test error solid;
    one colour per depth on both panels, which share the y-axis (the full range, log above 1%). A run that
    diverged is drawn up to its last finite point, marked with an x (and the legend says so).
    """
    depths = sorted({r.depth for r in records})
    color = {d: DEPTH_COLORS[i % len(DEPTH_COLORS)] for i, d in enumerate(depths)}
    fig, axes = new_figure(2, width=5.0, height=4.1)
    drawn: list[float] = []
    seeds = len({r.seed for r in records})
    for ax, kind in zip(axes[0], ("plain", "residual")):
        for d in depths:
            runs = [r for r in records if r.kind == kind and r.depth == d]
            if runs:
                drawn += _draw_curves(ax, runs, color[d], f"{kind}, {count(d, depth_unit)}")
        ax.set_title(f"{kind} nets" + (f", mean of {seeds} seeds" if seeds > 1 else ""))
        ax.set(xlabel="iterations (optimizer steps)")
        ax.set_xlim(left=0)
    for ax in axes[0]:
        error_axis(ax, max(drawn, default=100.0))
        _legend(ax, records, "colour = depth")
    title = "Plain vs residual nets: error during training"
    return finish(fig, f"{title} ({subject})" if subject else title)


def _legend(ax: Axes, runs: Sequence[Any], what: str) -> None:
    """The panel's series, then the line-style convention; "x = diverged" only when an x is drawn here."""
    labels = ax.get_legend_handles_labels()[1]
    diverged = any(getattr(r, "status", "trained") == "diverged" for r in runs)
    title = what + ("; x = diverged" if diverged and any("(diverged)" in t for t in labels) else "")
    legend_with_key(ax, split_handles(), title)


def _draw_curves(ax: Axes, runs: Sequence[Any], color: str, label: str) -> list[float]:
    """One depth and kind: mean training (dashed) and test (solid) curves; returns every value drawn."""
    it_tr, tr = _seed_mean_curve(runs, "train_error")
    it_te, te = _seed_mean_curve(runs, "test_error")
    diverged = any(getattr(r, "status", "trained") == "diverged" for r in runs)
    ax.plot(it_tr, tr, color=color, linewidth=1.0, alpha=0.9, **TRAIN)
    ax.plot(it_te, te, color=color, linewidth=2.0, label=label + (" (diverged)" if diverged else ""), **TEST)
    if diverged:  # an x on the top edge at the iteration where it stopped
        at = min(r.diverged_at or 0 for r in runs if getattr(r, "status", "") == "diverged")
        mark: dict[str, Any] = dict(
            marker="x", color=color, markersize=9, markeredgewidth=2, linestyle="none", clip_on=False
        )
        ax.plot([at], [1.0], transform=ax.get_xaxis_transform(), **mark)
    return [v for v in tr + te if math.isfinite(v)]


@styled
def error_vs_depth_figure(
    records: Sequence[Any],
    *,
    subject: str = "",
    depth_label: str = "number of layers",
    show_test: bool = True,
) -> Figure:
    """Final training error (dashed; eval mode, whole training split) and test error (solid) vs depth, plain
    vs residual, mean ± std band over seeds. A depth whose runs diverged is an x at the top, not a number.

    ``records``: objects with ``kind``, ``depth``, ``seed``, ``status``, ``final_train_error`` and
    ``final_test_error``.
    """
    fig, axes = new_figure(1, width=7.4, height=4.6)
    ax = axes[0][0]
    seeds = len({r.seed for r in records})
    drawn: list[float] = []
    for kind, residual in (("plain", False), ("residual", True)):
        mine = [r for r in records if r.kind == kind]
        if mine:
            drawn += _draw_depth_lines(
                ax, mine, style_for(residual, 0), kind, band=seeds > 1, show_test=show_test
            )
    all_depths = sorted({r.depth for r in records})
    if all_depths and all_depths[-1] >= 8 * all_depths[0]:  # e.g. MLPs of 4, 16, 64 blocks: even spacing
        ax.set_xscale("log", base=2)
    ax.set_xticks(all_depths, [str(d) for d in all_depths])
    ax.minorticks_off()
    diverged = any(getattr(r, "status", "trained") == "diverged" for r in records)
    error_axis(ax, 100.0 if diverged else max(drawn, default=100.0), label="final error (%)")
    ax.set(xlabel=depth_label)
    band = f"mean ± std band over {seeds} seeds" if seeds > 1 else "one seed"
    what = "training error: eval mode, whole training split"
    ax.set_title(f"{what}; {band}", fontsize=9)
    ax.legend(fontsize=8)
    title = "Final error vs depth, plain vs residual"
    return finish(fig, f"{title} ({subject})" if subject else title)


def _draw_depth_lines(
    ax: Axes, records: Sequence[Any], st: dict[str, Any], kind: str, *, band: bool, show_test: bool
) -> list[float]:
    """One kind's training (dashed, with a band) and test (solid) lines; returns the values drawn."""
    trained = [r for r in records if getattr(r, "status", "trained") != "diverged"]
    depths = sorted({r.depth for r in trained})
    drawn: list[float] = []
    for key, what in (("final_train_error", "training"), ("final_test_error", "test")):
        if what == "test" and not show_test:
            continue
        groups = [[100 * getattr(r, key) for r in trained if r.depth == d] for d in depths]
        mean = [sum(g) / len(g) for g in groups]
        std = [
            math.sqrt(sum((v - m) ** 2 for v in g) / (len(g) - 1)) if len(g) > 1 else 0.0
            for g, m in zip(groups, mean)
        ]
        line = dict(st, **(TRAIN if what == "training" else TEST))
        width = 2.0 if what == "training" else 1.2
        label = f"{kind}: {what} error ({'dashed' if what == 'training' else 'solid'})"
        ax.plot(depths, mean, linewidth=width, markersize=5, label=label, **line)
        if band and what == "training":
            lo, hi = [max(m - s, 0.0) for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)]
            ax.fill_between(depths, lo, hi, color=st["color"], alpha=0.18, linewidth=0)
            drawn += hi
        drawn += mean
    failed = sorted({r.depth for r in records if getattr(r, "status", "trained") == "diverged"} - set(depths))
    if failed:
        ax.plot(failed, [100.0] * len(failed), marker="x", markersize=10, markeredgewidth=2, linestyle="none",
                color=st["color"], label=f"{kind}: diverged (x)", clip_on=False)  # fmt: skip
    return drawn


# --- ablations: He et al. 2016, "Identity Mappings", Fig. 3 and Tables 1-2 ---------------------------------


@styled
def ablation_curves_figure(records: Sequence[Any], *, baseline: str, subject: str = "") -> Figure:
    """Laid out as He et al. 2016, Fig. 3: one panel per variant, each against the baseline (grey).

    ``records``: objects with ``kind`` (the variant), ``status``, ``diverged_at`` and ``history``
    (metrics.jsonl records), e.g. :class:`reslab.experiments.RunRecord`; seeds of one variant are averaged.
    Training error dashed (train mode, averaged over each evaluation interval), test error solid, against
    iterations, on the full error range (log above 1%); a run that diverged is drawn up to its last finite
    point, marked with an x (and the legend says so).
    """
    variants = list(dict.fromkeys([baseline, *(r.kind for r in records)]))
    others = [v for v in variants if v != baseline] or [baseline]
    ncols = min(3, len(others))
    fig, axes = new_figure(ncols, math.ceil(len(others) / ncols), width=4.6, height=3.6)
    base_runs = [r for r in records if r.kind == baseline]
    seeds = len({r.seed for r in records})
    for i, (ax, variant) in enumerate(zip(axes.flat, others)):
        drawn: list[float] = []
        if variant != baseline and base_runs:
            drawn += _draw_curves(ax, base_runs, _variant_color(0), baseline)
        runs = [r for r in records if r.kind == variant]
        drawn += _draw_curves(ax, runs, _variant_color(variants.index(variant)), variant)
        ax.set_title(f"({chr(ord('a') + i)}) {variant}" + (f" vs {baseline}" if variant != baseline else ""))
        ax.set(xlabel="iterations (optimizer steps)")
        ax.set_xlim(left=0)
        error_axis(ax, max(drawn, default=100.0))
        _legend(ax, [*base_runs, *runs], "colour = variant")
    for ax in list(axes.flat)[len(others) :]:
        ax.set_visible(False)
    mean = f", mean of {seeds} seeds" if seeds > 1 else ""
    title = f"Error per variant during training{mean}"
    return finish(fig, f"{title} ({subject})" if subject else title)


@styled
def ablation_bars_figure(records: Sequence[Any], *, order: Sequence[str], subject: str = "") -> Figure:
    """Final training error (filled) and test error (hatched) per variant: mean ± std over seeds as bars and
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
    ax.set_title(f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed")
    key: list[Artist] = [
        Patch(
            facecolor="0.5", edgecolor="0.5", label="filled: training error (eval mode, whole training split)"
        ),
        Patch(facecolor="white", edgecolor="0.5", hatch="//", label="hatched: test error"),
    ]
    if seeds > 1:
        key.append(Line2D([], [], color="k", marker=".", linestyle="none", label="dots: one seed each"))
    if diverged:
        key.append(Line2D([], [], color="#d62728", marker="x", linestyle="none", label="x: diverged"))
    ax.legend(handles=key, fontsize=7, loc="upper left")
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
