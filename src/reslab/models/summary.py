"""Parameters and multiply-adds per stage, as in He et al. 2015, Table 1.

Multiply-adds are counted as the paper counts "FLOPs": convolutions and fully connected layers only
(conv: output elements x in_channels/groups x kh x kw; linear: in x out per sample). BN, ReLU, the shortcut
additions and pooling are ignored. Counting runs one forward pass with hooks; build the model on the meta
device (``build_model(name, device="meta")``) and it costs neither memory nor time, even for ResNet-1202.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from reslab.errors import ConfigError


@dataclass(frozen=True)
class StageRow:
    """One row of the table: the stem, a stage (``layer1`` ...) or the head (pool + classifier)."""

    name: str
    output_size: tuple[int, ...]  # per sample: (C, H, W) for feature maps, (F,) after flattening
    blocks: int  # residual / plain blocks in the row (0 for stem and head)
    params: int
    macs: int  # multiply-adds per sample


@dataclass(frozen=True)
class ModelSummary:
    """Per-stage rows and totals for one input size (per sample, batch excluded)."""

    input_size: tuple[int, ...]
    rows: tuple[StageRow, ...]

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def total_blocks(self) -> int:
        return sum(r.blocks for r in self.rows)

    def table(self, title: str = "") -> str:
        """The summary as a fixed-width text table (the layout of the paper's Table 1, one row per stage)."""
        header = ("stage", "output size", "blocks", "parameters", "multiply-adds")
        lines = [
            (
                r.name,
                _shape(r.output_size),
                str(r.blocks) if r.blocks else "-",
                f"{r.params:,}",
                human(r.macs),
            )
            for r in self.rows
        ]
        total = ("total", "", str(self.total_blocks), f"{self.total_params:,}", human(self.total_macs))
        widths = [max(len(row[i]) for row in [header, *lines, total]) for i in range(len(header))]

        def fmt(row: Sequence[str]) -> str:
            left = f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}"
            return left + "".join(f"  {cell:>{w}}" for cell, w in zip(row[2:], widths[2:]))

        rule = "-" * len(fmt(header))
        out = [title] if title else []
        out += [f"input {_shape(self.input_size)}", fmt(header), rule, *map(fmt, lines), rule, fmt(total)]
        return "\n".join(out)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (works on the meta device: only shapes are read)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def summarize(model: nn.Module, input_size: Sequence[int] | None = None) -> ModelSummary:
    """Parameters, output size and multiply-adds of each stage of ``model`` for one input of ``input_size``.

    Rows: ``stem`` (every top-level module before the first stage), each stage in ``model.stage_names``,
    ``head`` (everything after). A model without ``stage_names`` gets one row per top-level module.
    ``input_size`` excludes the batch; default ``model.default_input_size``.
    """
    given: Sequence[int] = input_size or getattr(model, "default_input_size", None) or ()
    size = tuple(int(s) for s in given)
    if not size or min(size) < 1:
        raise ConfigError(f"input size must be positive, e.g. 3 32 32; got {size or 'nothing'}")
    stage_names = list(getattr(model, "stage_names", ()))
    group_of = _groups(model, stage_names)
    order = list(dict.fromkeys(group_of.values()))
    params = dict.fromkeys(order, 0)
    for name, child in model.named_children():
        params[group_of[name]] += count_parameters(child)
    macs, outputs = _trace(model, group_of, size)
    rows = tuple(
        StageRow(
            g,
            outputs.get(g, ()),
            len(getattr(model, g)) if g in stage_names else 0,
            params[g],
            macs.get(g, 0),
        )
        for g in order
    )
    return ModelSummary(size, rows)


def _groups(model: nn.Module, stage_names: list[str]) -> dict[str, str]:
    """Top-level module name -> its row: a stage, or ``stem`` before the stages and ``head`` after them."""
    group_of: dict[str, str] = {}
    seen_stage = False
    for name, _ in model.named_children():
        if name in stage_names:
            group_of[name], seen_stage = name, True
        elif stage_names:
            group_of[name] = "head" if seen_stage else "stem"
        else:
            group_of[name] = name
    return group_of


def _trace(
    model: nn.Module, group_of: dict[str, str], size: tuple[int, ...]
) -> tuple[dict[str, int], dict[str, tuple[int, ...]]]:
    """(multiply-adds, output shape) per row, from forward hooks during one forward pass of one input."""
    macs: dict[str, int] = {}
    outputs: dict[str, tuple[int, ...]] = {}

    def count(group: str, m: nn.Module, out: torch.Tensor) -> None:
        per_sample = out.numel() // out.shape[0]
        if isinstance(m, nn.Conv2d):
            fan_in = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            fan_in = m.in_features
        else:
            return
        macs[group] = macs.get(group, 0) + per_sample * fan_in

    hooks = []
    for name, child in model.named_children():
        g = group_of[name]
        hooks.append(
            child.register_forward_hook(lambda _m, _i, out, g=g: outputs.__setitem__(g, tuple(out.shape[1:])))
        )
        for m in child.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                hooks.append(m.register_forward_hook(lambda m, _i, out, g=g: count(g, m, out)))
    param = next(model.parameters(), None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *size), device=param.device if param is not None else "cpu"))
    except RuntimeError as err:
        raise ConfigError(
            f"input size {_shape(size)} does not fit this model: {str(err).splitlines()[0]}"
        ) from None
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return macs, outputs


def human(n: float) -> str:
    """4_089_184_256 -> '4.09G', 40_551_040 -> '40.6M' (the precision the paper quotes)."""
    for unit, scale, digits in (("G", 1e9, 2), ("M", 1e6, 1), ("K", 1e3, 1)):
        if abs(n) >= scale:
            return f"{n / scale:.{digits}f}{unit}"
    return str(int(n))


def _shape(size: Sequence[int]) -> str:
    return "x".join(map(str, size))
