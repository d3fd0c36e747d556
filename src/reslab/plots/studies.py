"""The why-tools' figures: gradient norms per layer, layer responses (Fig. 7), loss landscapes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reslab.plots.style import finish, new_figure, positive, series_styles, styled

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from reslab.analysis.gradient_flow import GradientProfile
    from reslab.analysis.layer_responses import ResponseProfile
    from reslab.analysis.loss_surface import Landscape


@styled
def gradients_figure(profiles: Sequence[GradientProfile]) -> Figure:
    """Log ||dL/dW|| per weight layer (left) and ||dL/d(block output)|| per block (right).

    One line per model and snapshot: warm circles for plain, cool squares for residual, thick for the start,
    thin and faded for after K steps.
    """
    fig, axes = new_figure(2, width=5.6, height=4.0)
    ax_w, ax_b = axes[0]
    every = [v for p in profiles for s in p.snapshots for v in s.weight_grad_norms + s.block_grad_norms]
    finite = [v for v in every if v > 0 and math.isfinite(v)]
    floor = min(finite) / 10 if finite else 1e-30
    for p, st in zip(profiles, series_styles(profiles)):
        for s in p.snapshots:
            start = s.step == 0
            when = ("trained" if p.trained else "init") if start else f"after {s.step} steps"
            kw = dict(st, linewidth=2.0 if start else 1.0, alpha=1.0 if start else 0.6, markersize=4)
            kw["markevery"] = max(1, len(s.weight_grad_norms) // 12)  # a few markers, not one per layer
            kw["fillstyle"] = "full" if start else "none"
            ax_w.plot(
                range(len(s.weight_grad_norms)),
                positive(s.weight_grad_norms, floor),
                label=f"{p.label} ({when})",
                **kw,
            )
            ax_b.plot(range(1, len(s.block_grad_norms) + 1), positive(s.block_grad_norms, floor), **kw)
    ax_w.set(yscale="log", xlabel="weight layer (0 = input layer, last = classifier)", ylabel="‖∂L/∂W‖")
    ax_w.set_title("gradient w.r.t. each layer's weights")
    ax_b.set(yscale="log", xlabel="block (input side → output side)", ylabel="‖∂L/∂(block output)‖")
    ax_b.set_title("gradient w.r.t. each block's output activation")
    fig.legend(
        *ax_w.get_legend_handles_labels(), loc="lower center", ncol=min(4, 2 * len(profiles)), fontsize=8
    )
    title = "Gradient norm vs depth: plain (warm, circles) vs residual (cool, squares)"
    return finish(fig, title, rect=(0, 0.07, 1, 1))


@styled
def responses_figure(profiles: Sequence[ResponseProfile]) -> Figure:
    """He et al. 2015, Fig. 7: std of each block's branch output, in layer order (left) and sorted by
    magnitude (right); plain warm with circles, residual cool with squares."""
    fig, axes = new_figure(2, width=5.4, height=3.9)
    ax_o, ax_s = axes[0]
    for p, st in zip(profiles, series_styles(profiles)):
        name = f"{p.label} ({'trained' if p.trained else 'init'})"
        xs = range(1, len(p.stds) + 1)
        ax_o.plot(xs, p.stds, label=name, markersize=4, **st)
        ax_s.plot(xs, sorted(p.stds, reverse=True), markersize=4, **st)
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
    for m, st in zip(maps, series_styles(maps)):
        ax1.plot(
            m.coords,
            m.slice_1d,
            markersize=4,
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
