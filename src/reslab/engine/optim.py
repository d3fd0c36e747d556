"""Optimisation: SGD with momentum, its parameter groups, and the learning rate as a function of the step.

Everything here reads one :class:`~reslab.engine.specs.OptimSpec`. The learning rate is a pure function of
the step (:func:`lr_at` over an :class:`LrPlan`): nothing to save, exact on resume. The one exception is
the paper's adaptive warm-up (:class:`AdaptiveWarmup`), whose end is measured and then fixed in the plan.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, TypedDict

import torch
from torch import nn

from reslab.engine.specs import OptimSpec
from reslab.errors import ConfigError

HEAD = "fc."  # every reslab net's classifier, as torchvision's and timm's


def make_sgd(model: nn.Module, spec: OptimSpec) -> torch.optim.SGD:
    """SGD with momentum (He et al. 2015, Sec. 3.4) over the model's trainable parameters.

    One update kernel for all parameters (``fused``) where the device has one, else torch's default. The
    learning rate is set before every step by :func:`set_lr`; the groups carry only their ``lr_scale``.
    """
    groups = param_groups(model, spec)
    kwargs: dict[str, Any] = dict(
        lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov, weight_decay=spec.weight_decay
    )
    devices = {p.device.type for g in groups for p in g["params"]}
    if devices <= {"cpu", "cuda"}:
        with contextlib.suppress(RuntimeError, ValueError, TypeError):  # a torch without fused SGD here
            return torch.optim.SGD(groups, fused=True, **kwargs)
    return torch.optim.SGD(groups, **kwargs)


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def param_groups(model: nn.Module, spec: OptimSpec) -> list[dict[str, Any]]:
    """Every trainable parameter; with ``head_lr``, the classifier ``fc`` in a group of its own.

    Each group's ``lr_scale`` multiplies the scheduled lr (:func:`set_lr`): ``--head-lr`` trains the head at
    its own peak lr on the same schedule.
    """
    if spec.head_lr is None:
        return [{"params": trainable(model), "lr_scale": 1.0}]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = [p for n, p in named if n.startswith(HEAD)]
    if not head:
        raise ConfigError("--head-lr needs a classifier named fc; this model has none")
    body = [p for n, p in named if not n.startswith(HEAD)]
    groups = [{"params": body, "lr_scale": 1.0}] if body else []
    return [*groups, {"params": head, "lr_scale": spec.head_lr / spec.lr}]


def checkpoint_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state dict with every learning rate a Python float, as an eager run saves it (a
    captured step keeps its lr in device tensors: :mod:`reslab.engine.graphs`)."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:  # state_dict's groups are copies: the optimizer keeps its tensors
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = float(group["lr"])
    return state


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The scheduled ``lr`` into every group, times the group's ``lr_scale`` (``--head-lr``; default 1)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


@dataclass(frozen=True)
class LrPlan:
    """Everything ``lr_at`` needs, resolved from a config once the run length is known."""

    total: int  # optimizer steps in the whole run
    base_lr: float
    schedule: str  # step | cosine | onecycle
    warmup_iters: int
    warmup_lr: float
    warmup: str  # linear | constant | adaptive
    milestones: tuple[float, ...]  # fractions of total (step schedule)
    gamma: float

    def notes(self, spec: OptimSpec) -> list[str]:
        """One line when a warm-up the user set explicitly leaves the run no decay at all."""
        explicit = spec.warmup_iters is not None or spec.warmup_epochs is not None
        if explicit and self.warmup_iters >= self.total and self.schedule != "step":
            return [
                f"warning: the warm-up ({self.warmup_iters} iterations) covers the whole run of "
                f"{self.total}: the learning rate never decays; shorten --warmup-epochs/--warmup-iters or "
                "train longer"
            ]
        return []


# The default warm-up is 1 epoch but at most this fraction of the run. resnet20 on mnist5k, --epochs 1 (62
# steps), test error with seeds 0 / 1: no warm-up 6.1 / 7.8%; 5% 5.8 / 5.4%; 10% 6.3 / 5.5%; 20% 6.2 / 6.6%;
# 30% 5.2 / 7.0%; the whole run (the old default) 24.2 / 35.0%. Every cap up to 30% is within seed noise;
# 20% leaves the warm-up of the default 8-epoch run (12.5%) and of compare's 5-epoch runs (20%) as it was,
# and gives the deep plain nets, which need warm-up most, the longest one. (The paper: 400 of 64,000 steps.)
DEFAULT_WARMUP_FRACTION = 0.2


def make_plan(spec: OptimSpec, *, steps_per_epoch: int, depth: int) -> LrPlan:
    """Resolve run length, warm-up length and schedule for a ``depth``-layer model."""
    total = spec.run_length(steps_per_epoch)
    # 1) warm-up length: explicit iterations win over epochs; the default (None) is one epoch, capped at
    #    DEFAULT_WARMUP_FRACTION of the run so that a short run still has its decay
    if spec.warmup_iters is not None:
        warm = spec.warmup_iters
    elif spec.warmup_epochs is not None:
        warm = round(spec.warmup_epochs * steps_per_epoch)
    else:
        warm = min(steps_per_epoch, round(DEFAULT_WARMUP_FRACTION * total))
    # 2) the paper warms up only its 110-layer net (Sec. 4.2)
    if depth < spec.warmup_min_depth:
        warm = 0
    # 3) one-cycle needs a rising phase: a quarter of the run when none is set
    if spec.schedule == "onecycle" and warm == 0:
        warm = max(1, total // 4)
    # 4) adaptive: the warm-up length is its longest; AdaptiveWarmup shortens it once the error has fallen
    return LrPlan(
        total=total,
        base_lr=spec.lr,
        schedule=spec.schedule,
        warmup_iters=min(warm, total),
        warmup_lr=spec.warmup_lr,
        warmup=spec.warmup,
        milestones=tuple(spec.milestones),
        gamma=spec.gamma,
    )


def lr_at(it: int, plan: LrPlan) -> float:
    """Learning rate for optimizer step ``it`` (0-based)."""
    # 1) warm-up: linear from warmup_lr to base_lr, or the paper's constant low lr
    if it < plan.warmup_iters:
        if plan.warmup in ("constant", "adaptive"):
            return plan.warmup_lr
        return plan.warmup_lr + (plan.base_lr - plan.warmup_lr) * (it + 1) / plan.warmup_iters
    # 2) step: milestones are fractions of the whole run, as the paper's 32k/48k of 64k
    if plan.schedule == "step":
        passed = sum(it >= round(m * plan.total) for m in plan.milestones)
        return plan.base_lr * plan.gamma**passed
    # 3) cosine / one-cycle decay over the n steps after warm-up: step k of n (1-based) sits at k/(n+1) of
    #    the way down, so the first decayed step is already below the peak the warm-up reached and the last
    #    one is low (1/(n+1) of the way from 0) but never a wasted step at exactly 0
    progress = (it - plan.warmup_iters + 1) / (plan.total - plan.warmup_iters + 1)
    if plan.schedule == "cosine":
        return plan.base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return plan.base_lr * (1.0 - progress)  # onecycle: linear down after the linear rise


WARMUP_WINDOW = 10  # batches whose training error the adaptive warm-up watches


class WarmupState(TypedDict, total=False):
    """An :class:`AdaptiveWarmup` in a checkpoint (either key may be missing: read with defaults)."""

    errors: list[float]
    ended_at: int | None


@dataclass
class AdaptiveWarmup:
    """The paper's warm-up rule (He et al. 2015, Sec. 4.2, for 110 and 1,202 layers): "we use 0.01 to warm up
    the training until the training error is below 80% (about 400 iterations), and then go back to 0.1".

    The training error is that of the last ``WARMUP_WINDOW`` batches (before their update). When it falls
    below ``until_error`` after step ``E``, the plan's warm-up becomes ``E`` steps long and the schedule
    runs from there; a net that never gets there leaves the warm-up at its longest, the plan's length.
    """

    until_error: float
    errors: list[float] = field(default_factory=list)  # the last WARMUP_WINDOW batch errors
    ended_at: int | None = None  # the step count at which the warm-up ended

    def watching(self, plan: LrPlan, it: int) -> bool:
        """Whether step ``it`` (0-based) is still in a warm-up that may end early."""
        return plan.warmup == "adaptive" and self.ended_at is None and it < plan.warmup_iters

    def observe(self, plan: LrPlan, it: int, error: float) -> LrPlan:
        """Record the error of step ``it``'s batch; the plan, its warm-up ended when the window allows."""
        self.errors = [*self.errors, error][-WARMUP_WINDOW:]
        running = sum(self.errors) / len(self.errors)
        if len(self.errors) == WARMUP_WINDOW and running < self.until_error:
            self.ended_at = it + 1
            return dataclasses.replace(plan, warmup_iters=it + 1)
        return plan

    def resumed(self, plan: LrPlan) -> LrPlan:
        """The plan of a run whose warm-up had already ended (after a restore of this state)."""
        if self.ended_at is None or plan.warmup != "adaptive":
            return plan
        return dataclasses.replace(plan, warmup_iters=min(self.ended_at, plan.total))

    def to_state(self) -> WarmupState:
        return {"errors": list(self.errors), "ended_at": self.ended_at}

    @classmethod
    def from_state(cls, state: WarmupState | None, until_error: float) -> AdaptiveWarmup:
        if not state:
            return cls(until_error)
        ended = state.get("ended_at")
        errors = [float(e) for e in state.get("errors", [])]
        return cls(until_error, errors, None if ended is None else int(ended))
