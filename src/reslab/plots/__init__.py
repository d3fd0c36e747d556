"""Every matplotlib figure of reslab, one function per figure, sharing one style (:mod:`.style`).

Each figure function takes plain data (lists of numbers, records or the analysis dataclasses) and returns a
:class:`matplotlib.figure.Figure`; :func:`save_png` writes it. In every figure dashed lines are training
error and solid lines test error, plain nets warm with circles and residual nets cool with squares, and
error axes show the full range (linear to 1%, logarithmic above).

- :mod:`.style`: colours, line styles, the error axis, ``save_png`` / ``png_bytes``;
- :mod:`.studies`: gradients, layer responses, loss landscapes;
- :mod:`.sweeps`: compare's curves and error vs depth, ablate's curves and bars;
- :mod:`.runs`: the curves of run directories (``reslab plot``);
- :mod:`.classes`: per-class errors and the confusion matrix.
"""

from __future__ import annotations

from reslab.plots.classes import confusion_figure
from reslab.plots.runs import plot_runs, run_curves_figure
from reslab.plots.studies import gradients_figure, landscape_figure, responses_figure
from reslab.plots.style import count, error_axis, png_bytes, save_png, split_handles, style_for, styled
from reslab.plots.sweeps import (
    ablation_bars_figure,
    ablation_curves_figure,
    compare_curves_figure,
    error_vs_depth_figure,
)

__all__ = [
    "ablation_bars_figure",
    "ablation_curves_figure",
    "compare_curves_figure",
    "confusion_figure",
    "count",
    "error_axis",
    "error_vs_depth_figure",
    "gradients_figure",
    "landscape_figure",
    "plot_runs",
    "png_bytes",
    "responses_figure",
    "run_curves_figure",
    "save_png",
    "split_handles",
    "style_for",
    "styled",
]
