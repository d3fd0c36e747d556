"""Progress display: a tqdm bar on a terminal, plain periodic lines otherwise (CI logs), or nothing."""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm

# The bar's live figures need a host sync on GPUs; refresh them at most this often.
BAR_REFRESH_S = 0.5


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where stderr is not a terminal but a bar still displays)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def resolve_mode(mode: str, stream: TextIO | None = None) -> str:
    """``auto`` = ``bar`` on a terminal or in a notebook, ``lines`` otherwise (a pipe, a log file, CI)."""
    stream = stream or sys.stderr
    if mode != "auto":
        return mode
    isatty = getattr(stream, "isatty", None)
    return "bar" if (isatty is not None and isatty()) or in_notebook() else "lines"


def tqdm_class() -> type[tqdm[Any]]:
    """tqdm's notebook widget in Jupyter when ipywidgets is installed, else the text bar."""
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm
    from tqdm import tqdm as text_tqdm

    return text_tqdm


def _fmt(metrics: dict[str, Any]) -> str:
    parts = [f"iter {metrics['iteration']}", f"epoch {metrics['epoch']:.2f}"]
    for key, label, spec in (
        ("train_loss", "train loss", ".4f"),
        ("train_error", "train err", ".2%"),
        ("test_loss", "test loss", ".4f"),
        ("test_error", "test err", ".2%"),
        ("lr", "lr", ".4g"),
        ("images_per_s", "img/s", ".0f"),
    ):
        value = metrics.get(key)
        if value is not None and math.isfinite(value):  # NaN is "not measured" (no test images): left out
            parts.append(f"{label} {format(value, spec)}")
    return " | ".join(parts)


class Progress:
    """``update`` every step (cheap), ``log`` at every evaluation point, ``close`` at the end."""

    def __init__(
        self, mode: str, *, total: int, initial: int = 0, desc: str = "", stream: TextIO | None = None
    ):
        self.stream = stream or sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self.bar: Any = None
        self._last = 0.0
        if self.mode == "bar":
            self.bar = tqdm_class()(
                total=total, initial=initial, desc=desc, unit="it", file=self.stream, dynamic_ncols=True
            )
        elif self.mode == "lines" and desc:
            self.stream.write(f"{desc}: {total} iterations\n")
            self.stream.flush()

    def wants_stats(self) -> bool:
        """True when the bar is due for fresh live figures (the caller then pays one host sync)."""
        return self.bar is not None and time.monotonic() - self._last >= BAR_REFRESH_S

    def update(self, n: int = 1, stats: dict[str, float] | None = None) -> None:
        if self.bar is None:
            return
        self.bar.update(n)
        if stats is not None:
            self._last = time.monotonic()
            self.bar.set_postfix(
                loss=f"{stats['loss']:.4f}",
                err=f"{stats['error']:.2%}",
                lr=f"{stats['lr']:.3g}",
                img_s=f"{stats['images_per_s']:.0f}",
                refresh=False,
            )

    def log(self, metrics: dict[str, Any]) -> None:
        if self.mode == "off":
            return
        if self.bar is not None:
            self.bar.write(_fmt(metrics), file=self.stream)
        else:
            self.stream.write(_fmt(metrics) + "\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        if self.mode == "off":
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def warn(self, text: str) -> None:
        """A warning is shown in every mode, "off" included (it changes what the run means)."""
        line = f"reslab: {text}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
