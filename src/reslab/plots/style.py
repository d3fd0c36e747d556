"""The one style of reslab's figures: colours, line styles, the error axis, and figure helpers.

Figures are built without pyplot, so importing reslab never changes the user's backend or global style: in a
notebook ``plt.show()`` keeps working, and a returned figure displays inline like any other.

One convention across every figure: **dashed = training error, solid = test error** (He et al. 2015, Fig. 6),
said in each legend; plain nets are warm with circles, residual nets cool with squares (line style never
tells them apart). Error axes are linear from 0 to 1% and logarithmic above, up to the highest error drawn,
so early training (90%) and the last tenths of a percent are both visible; nothing is clipped.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

import matplotlib
import matplotlib.ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.typing import RcKeyType

DPI = 110  # small PNGs that still read well in a README
STYLE: dict[RcKeyType, Any] = {"axes.grid": True, "grid.alpha": 0.3, "font.size": 9, "axes.titlesize": 10}
PLAIN_COLORS = ("#d95f02", "#e7298a", "#a6761d", "#e6ab02")  # warm: plain nets
RESIDUAL_COLORS = ("#1b6ac9", "#1b9e77", "#7570b3", "#66a61e")  # cool: residual nets
DEPTH_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")

P = ParamSpec("P")


def styled(fn: Callable[P, Figure]) -> Callable[P, Figure]:
    """Draw ``fn``'s figure under the project's style without touching the user's global rcParams."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Figure:
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def new_figure(
    ncols: int = 1, nrows: int = 1, *, width: float = 5.2, height: float = 3.8
) -> tuple[Figure, Any]:
    """A figure of ``nrows x ncols`` panels of ``width x height`` inches each (axes as a 2D array)."""
    fig = Figure(figsize=(width * ncols, height * nrows))
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def finish(
    fig: Figure, title: str | None = None, *, rect: tuple[float, float, float, float] | None = None
) -> Figure:
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


TRAIN: dict[str, Any] = {"linestyle": "--"}  # training error (and loss), in every figure
TEST: dict[str, Any] = {"linestyle": "-"}  # test error (and loss), in every figure
ERROR_LINEAR_BELOW = 1.0  # %: the error axis is linear below, logarithmic above
ERROR_TICKS = (0, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


def style_for(residual: bool, index: int) -> dict[str, Any]:
    """Style of the ``index``-th plain or residual series: plain warm with circles, residual cool with
    squares; solid, since dashed means training error in every figure."""
    colors = RESIDUAL_COLORS if residual else PLAIN_COLORS
    return {"color": colors[index % len(colors)], "linestyle": "-", "marker": "s" if residual else "o"}


def count(n: int, unit: str) -> str:
    """``"1 dense block"``, ``"4 dense blocks"``, ``"1 layer"``: ``unit`` is given in the plural."""
    return f"{n} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"


def split_handles(what: tuple[str, str] = ("training error", "test error")) -> list[Line2D]:
    """Legend entries that say the line-style convention: dashed training, solid test."""
    return [
        Line2D([], [], color="0.3", label=f"dashed: {what[0]}", **TRAIN),
        Line2D([], [], color="0.3", linewidth=2.0, label=f"solid: {what[1]}", **TEST),
    ]


def legend_with_key(ax: Axes, key: Sequence[Any], title: str) -> None:
    """The panel's own series, then ``key`` (the line-style convention), under ``title``."""
    handles, labels = ax.get_legend_handles_labels()
    ax.legend([*handles, *key], [*labels, *(h.get_label() for h in key)], fontsize=7, title=title,
              title_fontsize=7)  # fmt: skip


def error_axis(ax: Axes, top: float | None = None, *, label: str = "error (%)") -> None:
    """An error axis in %: linear from 0 to 1%, logarithmic above, up to ``top`` (default 100%), so the first
    steps of training and the last tenths of a percent are both readable."""
    hi = 100.0 if top is None or not math.isfinite(top) else min(100.0, max(2.0, top * 1.15))
    ax.set_yscale("symlog", linthresh=ERROR_LINEAR_BELOW, linscale=0.6)
    ax.set_ylim(0, hi)
    ax.set_yticks([t for t in ERROR_TICKS if t <= hi])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_ylabel(f"{label}, log above 1%")


def series_styles(items: Sequence[Any]) -> list[dict[str, Any]]:
    """One style per item (objects with ``residual``): the plain ones and the residual ones each in turn."""
    counts = {True: 0, False: 0}
    out = []
    for item in items:
        out.append(style_for(item.residual, counts[item.residual]))
        counts[item.residual] += 1
    return out


def positive(values: Sequence[float], floor: float) -> list[float]:
    """The values, with 0 and non-finite ones at ``floor``."""
    # Log axes cannot show 0 (a fully vanished or dead layer): draw it at the floor, marked in the legend.
    return [v if v > 0 and math.isfinite(v) else floor for v in values]
