"""Gradient flow through depth: why plain deep nets are hard to train and residual nets are not.

For each weight layer (conv / linear weight, in depth order) we record ``||dL/dW||`` and for each block
``||dL/d(block output)||``, at the start (initialisation, or a run's trained weights) and after K SGD steps.
The ratio of the first layer's weight-gradient norm to the last layer's tells the story of the lecture:
in a deep plain MLP it is orders of magnitude below 1 (vanishing gradients), in its residual twin it stays
near 1, because each block's Jacobian is ``I + dF/dx`` and the identity path carries the gradient back
unchanged (He et al. 2016, "Identity Mappings in Deep Residual Networks", eq. 5).

MLPs run in float64 so that a gradient of 1e-50 is measured instead of underflowing to 0 in float32; conv
nets stay in float32, where CPU convolutions are fast (float64 ones are ~50x slower) and BN keeps the
norms far from underflow anyway.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from reslab.evidence import ONE_SEED, RULE, mean_std, separate

if TYPE_CHECKING:
    from reslab.models.nets import StagedNet

# Stated thresholds for the verdict on first/last gradient-norm ratios.
VANISHING_BELOW = 1e-2
EXPLODING_ABOVE = 1e2
UNDERFLOW = 324.0  # decades: a ratio of exactly 0 is below float64's smallest number, 4.9e-324


@dataclass
class GradientSnapshot:
    """Gradient norms at one point of training, on the fixed probe batch."""

    step: int  # SGD steps taken before this snapshot
    loss: float
    weight_names: list[str]  # e.g. "conv1.weight", in depth order
    weight_grad_norms: list[float]  # ||dL/dW|| per weight layer, same order
    block_grad_norms: list[float]  # ||dL/d(output of block i)|| per block, in depth order

    @property
    def ratio(self) -> float:
        """First weight layer's gradient norm over the last's (nan if the last is 0)."""
        first, last = self.weight_grad_norms[0], self.weight_grad_norms[-1]
        return first / last if last > 0 else float("nan")


@dataclass
class GradientProfile:
    """One model's gradient norms at the start and after K steps."""

    label: str
    model_name: str
    residual: bool
    trained: bool  # the start is trained weights (a run directory), not an initialisation
    snapshots: list[GradientSnapshot] = field(default_factory=list)
    diverged_at: int | None = None  # the SGD step whose loss was not finite, if any
    losses: list[float] = field(default_factory=list)  # the training loss of each SGD step, before it
    grad_norms: list[float] = field(default_factory=list)  # each step's global gradient norm, before a clip

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for snap, d in zip(self.snapshots, out["snapshots"]):
            d["ratio_first_last"] = _finite_or_none(snap.ratio)
            d["verdict"] = verdict(snap.ratio)
        return out


def verdict(ratio: float) -> str:
    """'vanishing' (< 1e-2), 'exploding' (> 1e2) or 'healthy'; 'undefined' for nan."""
    if math.isnan(ratio):
        return "undefined"
    if ratio < VANISHING_BELOW:
        return "vanishing"
    if ratio > EXPLODING_ABOVE:
        return "exploding"
    return "healthy"


def weight_layers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Conv / Linear weights in depth order (module registration order), without the shortcut's own layers.

    Projections (``downsample``) and the gates of gated shortcuts (``modulation``) sit beside the depth
    path, not on it; leaving them out keeps one point per weighted layer as the paper counts depth.
    """
    layers: list[tuple[str, torch.Tensor]] = []
    for name, m in model.named_modules():
        beside = ".downsample" in f".{name}" or ".modulation" in f".{name}"
        if isinstance(m, nn.Linear | nn.Conv2d) and not beside:
            layers.append((f"{name}.weight", m.weight))
    return layers


def _blocks(model: StagedNet) -> list[nn.Module]:
    return list(model.blocks())


def gradient_snapshot(
    model: StagedNet, x: torch.Tensor, y: torch.Tensor, *, step: int = 0
) -> GradientSnapshot:
    """Norms of dL/dW per weight layer and dL/d(block output) per block, for one batch in train mode.

    ``x`` (B, ...) and the model must share a dtype; parameters' ``.grad`` is cleared before and after.
    """
    layers = weight_layers(model)
    block_norms: dict[int, float] = {}
    handles = []
    for i, block in enumerate(_blocks(model)):

        def hook(_m: nn.Module, _inp: Any, out: torch.Tensor, i: int = i) -> None:
            if out.requires_grad:  # a tensor hook sees dL/d(out) during backward
                out.register_hook(lambda g, i=i: block_norms.__setitem__(i, float(g.norm())))

        handles.append(block.register_forward_hook(hook))
    model.zero_grad(set_to_none=True)
    try:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    weight_norms = [float(p.grad.norm()) if p.grad is not None else 0.0 for _, p in layers]
    model.zero_grad(set_to_none=True)
    n_blocks = len(handles)
    return GradientSnapshot(
        step=step,
        loss=float(loss.detach()),
        weight_names=[n for n, _ in layers],
        weight_grad_norms=weight_norms,
        block_grad_norms=[block_norms.get(i, 0.0) for i in range(n_blocks)],
    )


def gradient_profile(
    model: StagedNet,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 20,
    batch_size: int = 128,
    lr: float = 0.01,
    momentum: float = 0.9,
    warmup_steps: int = 0,
    grad_clip: float | None = None,
    seed: int = 0,
    label: str = "",
    model_name: str = "",
    residual: bool = True,
    trained: bool = False,
) -> GradientProfile:
    """Snapshots at the start and after ``steps`` SGD steps on minibatches of ``(x, y)``.

    1. Work on a copy of ``model`` (the caller's model is left untouched), float64 if it has no convolutions.
    2. Probe batch: the first ``batch_size`` samples, the same at both snapshots so they are comparable.
    3. Train K steps of SGD with momentum on seeded random minibatches of ``(x, y)``, in train mode, as the
       engine's recipe does: the lr rises linearly to ``lr`` over ``warmup_steps``, and with ``grad_clip``
       the gradient's global norm is clipped to it; each step's loss and gradient norm are recorded.
    4. Stop early (``diverged_at``) if the loss is not finite; the second snapshot is then left out.
    """
    import copy

    net = copy.deepcopy(model).train()
    threads = torch.get_num_threads()
    if not any(isinstance(m, nn.Conv2d) for m in net.modules()):
        net = net.double()
        # float64 GEMMs this small run ~10x slower on 2 threads than on 1 (OpenMP hand-offs dominate).
        torch.set_num_threads(1)
    try:
        return _profile(
            net,
            x.to(next(net.parameters()).dtype),
            y,
            steps,
            batch_size,
            _Sgd(lr, momentum, warmup_steps, grad_clip),
            seed,
            GradientProfile(label or model_name, model_name, residual, trained),
        )
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class _Sgd:
    """The K steps' optimiser: SGD with momentum, a linear warm-up, an optional clip of the global norm."""

    lr: float
    momentum: float
    warmup_steps: int
    grad_clip: float | None


def _profile(
    net: StagedNet,
    xd: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    batch_size: int,
    sgd: _Sgd,
    seed: int,
    profile: GradientProfile,
) -> GradientProfile:
    probe_x, probe_y = xd[:batch_size], y[:batch_size]
    profile.snapshots.append(gradient_snapshot(net, probe_x, probe_y, step=0))
    if steps <= 0:
        return profile
    opt = torch.optim.SGD(net.parameters(), lr=sgd.lr, momentum=sgd.momentum)
    gen = torch.Generator().manual_seed(seed)
    n = xd.shape[0]
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(xd[idx]), y[idx])
        profile.losses.append(float(loss.detach()))
        if not torch.isfinite(loss):
            profile.diverged_at = step
            return profile
        loss.backward()
        clip = sgd.grad_clip if sgd.grad_clip is not None else math.inf  # inf: the norm only
        norm = float(nn.utils.clip_grad_norm_(net.parameters(), clip))
        profile.grad_norms.append(norm)
        if not math.isfinite(norm):
            profile.diverged_at = step
            return profile
        for group in opt.param_groups:  # linear warm-up, as the engine's (step k of w at lr * k / w)
            group["lr"] = sgd.lr * min(1.0, step / sgd.warmup_steps) if sgd.warmup_steps else sgd.lr
        opt.step()
    profile.snapshots.append(gradient_snapshot(net, probe_x, probe_y, step=steps))
    return profile


def gradient_verdict(profiles: list[GradientProfile]) -> str:
    """Plain against residual at the start: how far each model's first/last weight-gradient ratio is from 1,
    in decades (``|log10 ratio|``: 0 = the input layer gets the classifier's gradient; 50 = 1e-50 of it).

    Each model is one sample; "closer to 1" is claimed under reslab's one rule
    (:func:`reslab.evidence.separate`), so it needs two models of each kind or more (``--seeds 3`` for
    fresh models); with one it states the numbers only. A ratio of 0 or nan (the input layer's gradient
    underflowed, or a dead layer) counts as 324 decades, beyond the smallest float64.
    """
    plain = [_decades(p) for p in profiles if not p.residual]
    res = [_decades(p) for p in profiles if p.residual]
    if not plain or not res:
        return ""
    numbers = f"residual {_decades_text(res)} vs plain {_decades_text(plain)} decades from 1"
    what = "first/last gradient ratio at the start"
    side = separate(res, plain)
    if side == "one seed":
        return f"{what}: {numbers} ({ONE_SEED}; use --seeds 3)"
    if side == "overlap":
        return f"{what}: no clear difference between residual and plain ({numbers})"
    closer = "residual nets'" if side == "below" else "plain nets'"
    return f"{what}: the {closer} is closer to 1 ({numbers}; {RULE})"


def _decades(p: GradientProfile) -> float:
    r = p.snapshots[0].ratio
    return min(abs(math.log10(r)), UNDERFLOW) if r > 0 and math.isfinite(r) else UNDERFLOW


def _decades_text(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3g}"
    mean, std = mean_std(values)
    return f"{mean:.3g} ± {std:.2g}"


def ratio_table(profiles: list[GradientProfile]) -> str:
    """Terminal table: first/last weight-gradient norm ratio and verdict per model and snapshot."""
    rows = [("model", "kind", "step", "loss", "|dL/dW| first", "|dL/dW| last", "first/last", "verdict")]
    for p in profiles:
        for s in p.snapshots:
            rows.append(
                (
                    p.label,
                    "residual" if p.residual else "plain",
                    "trained" if s.step == 0 and p.trained else ("init" if s.step == 0 else str(s.step)),
                    f"{s.loss:.4g}",
                    f"{s.weight_grad_norms[0]:.3g}",
                    f"{s.weight_grad_norms[-1]:.3g}",
                    f"{s.ratio:.3g}",
                    verdict(s.ratio),
                )
            )
        if p.diverged_at is not None:
            rows.append((p.label, "", str(p.diverged_at), "not finite", "", "", "", "diverged"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    note = (
        f"labels: first/last < {VANISHING_BELOW:g} vanishing, > {EXPLODING_ABOVE:g} exploding, "
        "else healthy (first = input layer, last = classifier)"
    )
    return "\n".join([*lines, note])


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None
