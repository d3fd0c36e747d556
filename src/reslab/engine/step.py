"""One optimizer step, the same for ``train`` and for the benchmarks that time it.

:func:`train_step` is forward (under autocast), loss, backward, the finite check and the SGD update. It
returns the loss and logits as device tensors and never waits for the device: the loop accumulates them
on the device (:class:`Interval`) and reads them only at evaluation points.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from reslab.engine.devices.runtime import Runtime, autocast
from reslab.engine.guards import FiniteWatch, grads_finite
from reslab.engine.optim import set_lr
from reslab.errors import TrainingError


class NonFiniteStep(TrainingError):
    """The loss or a gradient of step ``iteration`` was NaN/inf; the weights were not updated with it."""

    def __init__(self, iteration: int) -> None:
        super().__init__(f"loss or gradients became NaN/inf at iteration {iteration}")
        self.iteration = iteration


@dataclass
class StepState:
    """What a step needs: the module that runs the forward, its parameters, the optimiser, the checks."""

    forward: nn.Module  # the model, or its compiled / DDP-wrapped form
    params: list[nn.Parameter]  # the model's own parameters (clipping, the finite check)
    optimizer: torch.optim.Optimizer
    runtime: Runtime
    watch: FiniteWatch
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    scaler: torch.amp.GradScaler | None = None  # fp16 only


def train_step(
    st: StepState, x: torch.Tensor, y: torch.Tensor, *, lr: float, iteration: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on the batch ``x`` (B, ...) with labels ``y`` (B,); returns (loss (), logits (B, K)).

    Raises :class:`NonFiniteStep` before the update when the loss or a gradient is not finite (on CUDA,
    one step later: the flag is read without draining the queue). ``iteration`` is 1-based (the step count
    after this step), as in metrics.jsonl and the checkpoints.
    """
    set_lr(st.optimizer, lr)
    with autocast(st.runtime):
        logits = st.forward(x)  # (B, K)
        loss = F.cross_entropy(logits, y, label_smoothing=st.label_smoothing)
    st.optimizer.zero_grad(set_to_none=True)
    (st.scaler.scale(loss) if st.scaler is not None else loss).backward()
    bad = st.watch.push(iteration, step_finite(st, loss))
    if bad is not None:
        raise NonFiniteStep(bad)
    if st.scaler is not None:
        st.scaler.step(st.optimizer)
        st.scaler.update()
    else:
        st.optimizer.step()
    return loss.detach(), logits.detach()


def step_finite(st: StepState, loss: torch.Tensor) -> torch.Tensor:
    """0-d bool on the device: the loss and (when they could poison the weights) the gradients are finite."""
    finite = torch.isfinite(loss.detach())
    if st.grad_clip is not None:
        if st.scaler is not None:
            st.scaler.unscale_(st.optimizer)
        norm = nn.utils.clip_grad_norm_(st.params, st.grad_clip)
        return finite if st.scaler is not None else finite & torch.isfinite(norm)
    if st.scaler is not None:  # a GradScaler expects inf gradients now and then and skips those steps
        return finite
    return finite & grads_finite(st.params)


class IntervalState(TypedDict):
    """An :class:`Interval` in a checkpoint (its tensors on the CPU)."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    images: int
    steps: int


@dataclass
class Interval:
    """Training figures since the last evaluation point, summed on the device (no host sync per step)."""

    loss_sum: torch.Tensor  # () float32
    correct: torch.Tensor  # () int64
    images: int = 0
    steps: int = 0
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def zeros(cls, device: torch.device) -> Interval:
        return cls(torch.zeros((), device=device), torch.zeros((), dtype=torch.int64, device=device))

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.sum_(loss, logits, y)
        self.count(y.shape[0])

    def sum_(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        """The device-side half of :meth:`add`, in place (a captured CUDA graph replays exactly this)."""
        self.loss_sum += loss.float() * y.shape[0]
        self.correct += (logits.argmax(1) == y).sum()

    def count(self, images: int) -> None:
        """The host-side half of :meth:`add`: one more step of ``images`` images."""
        self.images += images
        self.steps += 1

    def reset(self) -> None:
        """Zero the figures in place: a captured graph keeps adding into these same tensors."""
        self.loss_sum.zero_()
        self.correct.zero_()
        self.images = self.steps = 0
        self.started = time.perf_counter()

    def figures(self) -> tuple[float, float, float]:
        """(mean loss, error, images/s): the host sync of this interval."""
        n = max(self.images, 1)
        seconds = max(time.perf_counter() - self.started, 1e-9)
        return float(self.loss_sum) / n, (self.images - int(self.correct)) / n, self.images / seconds

    def to_state(self) -> IntervalState:
        return {
            "loss_sum": self.loss_sum.detach().cpu(),
            "correct": self.correct.detach().cpu(),
            "images": self.images,
            "steps": self.steps,
        }

    @classmethod
    def from_state(cls, state: IntervalState, device: torch.device) -> Interval:
        out = cls.zeros(device)
        out.loss_sum += state["loss_sum"].to(device)
        out.correct += state["correct"].to(device)
        out.images, out.steps = int(state["images"]), int(state["steps"])
        return out
