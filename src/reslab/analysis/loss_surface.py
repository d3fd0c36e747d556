"""Loss landscapes along random directions with filter-wise normalisation (Li et al. 2018).

Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018: plot
``L(w0 + a*d1 + b*d2)`` for two random directions. Each direction has the shape of the weights, and each
filter of it (a slice along the output dimension) is rescaled to the norm of the same filter of ``w0``
(section 4, eq. 1), so that the scale-invariance of ReLU+BN nets does not distort the picture and plots of
different nets are comparable. BN parameters and biases get a zero direction, as the paper recommends for
1-D parameters. The paper's Fig. 5 shows the plain nets' surfaces turning chaotic with depth while the
residual nets' stay smooth and convex-looking.

The scan never rebuilds the model: it writes ``w0 + a*d1 + b*d2`` into the parameters in place with
``torch._foreach`` ops, evaluates in eval mode under ``torch.inference_mode`` on one fixed batch set, and puts
``w0`` back bit for bit at the end (also on error or Ctrl-C).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reslab.errors import ConfigError


@dataclass
class Landscape:
    """A 2D grid of losses around ``w0``; ``losses[j][i]`` is at ``(a = coords[i], b = coords[j])``."""

    label: str
    model_name: str
    residual: bool
    depth: int
    coords: list[float]  # (G,) shared by both axes, symmetric around 0
    losses: list[list[float]]  # (G, G), rows over b (direction 2), columns over a (direction 1)
    center_loss: float  # L(w0)
    seed: int  # the directions' seed: the same seed gives the same directions for the same architecture
    samples: int
    seconds: float

    @property
    def slice_1d(self) -> list[float]:
        """The 1D slice ``L(w0 + a*d1)``: the grid's row at b = 0 (grid sizes are odd)."""
        return self.losses[len(self.coords) // 2]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "model": self.model_name,
            "residual": self.residual,
            "depth": self.depth,
            "coords": self.coords,
            "losses": self.losses,
            "slice_1d": self.slice_1d,
            "center_loss": self.center_loss,
            "directions_seed": self.seed,
            "samples": self.samples,
            "seconds": self.seconds,
        }


def filter_normalized_direction(params: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    """A Gaussian direction, each filter rescaled to its weight filter's norm; zero for 1-D parameters.

    For a weight ``w`` of shape ``(out, ...)`` (conv ``(O, I, k, k)``, linear ``(O, I)``):
    ``d[i] <- d[i] / ||d[i]|| * ||w[i]||`` for each output slice ``i`` (Li et al. 2018, eq. 1).
    """
    out = []
    for w in params:
        if w.ndim <= 1:  # BN gamma/beta and biases: the paper leaves them out of the directions
            out.append(torch.zeros_like(w))
            continue
        d = torch.randn(w.shape, generator=generator, dtype=torch.float32).to(w)
        dims = tuple(range(1, w.ndim))
        d_norm = torch.linalg.vector_norm(d, dim=dims, keepdim=True)  # (out, 1, ...)
        w_norm = torch.linalg.vector_norm(w.detach(), dim=dims, keepdim=True)
        out.append(d * (w_norm / d_norm.clamp_min(1e-12)))
    return out


@torch.inference_mode()
def mean_loss(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean cross-entropy over the fixed batch set (model already in eval mode)."""
    total = torch.zeros((), dtype=torch.float64)
    n = 0
    for x, y in batches:
        total += F.cross_entropy(model(x).float(), y, reduction="sum").double()
        n += int(y.shape[0])
    return float(total) / n


def grid_coords(grid: int, span: float) -> list[float]:
    """``grid`` points evenly spaced in ``[-span, span]``; ``grid`` must be odd so that 0 is on it."""
    if grid < 3 or grid % 2 == 0:
        raise ConfigError(f"--grid must be an odd number >= 3 (so w0 is at the centre), got {grid}")
    if not span > 0:
        raise ConfigError(f"--span must be a positive number, got {span}")
    return torch.linspace(-span, span, grid, dtype=torch.float64).tolist()


def loss_landscape(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    grid: int = 21,
    span: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
    label: str = "",
    model_name: str = "",
    residual: bool = True,
    depth: int = 0,
    progress: Callable[[int], object] | None = None,
) -> Landscape:
    """Scan ``L(w0 + a*d1 + b*d2)`` on a ``grid x grid`` lattice of ``[-span, span]^2``.

    ``x`` (N, ...) / ``y`` (N,) are the fixed evaluation set, cut once into batches of ``batch_size``.
    ``progress(k)`` is called after each grid point. The model's parameters are restored exactly afterwards.
    """
    coords = grid_coords(grid, span)
    params: list[torch.Tensor] = list(model.parameters())
    if not params:
        raise ConfigError(f"{label or model_name} has no parameters to perturb")
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w0 = [p.detach().clone() for p in params]
        d1 = filter_normalized_direction(w0, gen)
        d2 = filter_normalized_direction(w0, gen)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    try:
        center = mean_loss(model, batches)
        losses = _scan(model, params, batches, w0, (d1, d2), coords, progress)
    finally:
        with torch.no_grad():
            torch._foreach_copy_(params, w0)  # bit-exact restore, also on error or Ctrl-C
        model.train(was_training)
    seconds = time.perf_counter() - t0
    n = int(x.shape[0])
    return Landscape(
        label or model_name, model_name, residual, depth, coords, losses, center, seed, n, seconds
    )


@torch.inference_mode()
def _scan(
    model: nn.Module,
    params: list[torch.Tensor],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    w0: list[torch.Tensor],
    directions: tuple[list[torch.Tensor], list[torch.Tensor]],
    coords: list[float],
    progress: Callable[[int], object] | None,
) -> list[list[float]]:
    """The loss at every grid point; ``losses[j][i]`` at ``(a = coords[i], b = coords[j])``."""
    d1, d2 = directions
    losses = [[0.0] * len(coords) for _ in coords]
    for j, b in enumerate(coords):
        for i, a in enumerate(coords):
            # 1. w <- w0 + a*d1 + b*d2, in place: no allocation per point, no model rebuild.
            torch._foreach_copy_(params, w0)
            if a != 0.0:
                torch._foreach_add_(params, d1, alpha=a)
            if b != 0.0:
                torch._foreach_add_(params, d2, alpha=b)
            # 2. The loss there, on the same batch set at every point.
            losses[j][i] = mean_loss(model, batches)
            if progress is not None:
                progress(1)
    return losses


def progress_bar(total: int, desc: str) -> tuple[Callable[[int], object], Callable[[], None]]:
    """``(update, close)`` of a bar on a terminal or in a notebook; no-ops otherwise (CI logs stay clean)."""
    from reslab.engine.progress import resolve_mode, tqdm_class

    if resolve_mode("auto") != "bar":
        return (lambda _k: None), (lambda: None)
    bar = tqdm_class()(total=total, desc=desc, unit="pt", leave=False)
    return bar.update, bar.close
