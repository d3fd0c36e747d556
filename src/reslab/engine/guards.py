"""Two watchmen of the step loop: non-finite losses and Ctrl-C, both without per-step host syncs on a GPU."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any

import torch


class FiniteWatch:
    """Finds the first step whose loss (or grad norm) is NaN/inf.

    CPU (and MPS): the flag is read at once, before ``optimizer.step``, so bad weights are never written.
    CUDA: the flag is copied to pinned host memory without blocking and read one step later, when it has
    surely arrived; the GPU queue never drains, and the run stops within one step.
    """

    def __init__(self, device: torch.device) -> None:
        self.lazy = device.type == "cuda"
        self._pending: tuple[int, torch.Tensor, Any] | None = None
        self._slots = (
            [torch.empty((), dtype=torch.bool, pin_memory=True) for _ in range(2)] if self.lazy else []
        )
        self._turn = 0

    def push(self, iteration: int, finite: torch.Tensor) -> int | None:
        """Register step ``iteration``'s flag (0-d bool tensor); returns a bad iteration once one is known."""
        if not self.lazy:
            return None if bool(finite) else iteration
        bad = self.poll()
        host = self._slots[self._turn]
        self._turn ^= 1
        host.copy_(finite, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending = (iteration, host, event)
        return bad

    def poll(self) -> int | None:
        """Wait for the pending flag (if any) and return its iteration when it was not finite."""
        if self._pending is None:
            return None
        iteration, host, event = self._pending
        self._pending = None
        event.synchronize()
        return None if bool(host) else iteration


def grads_finite(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """0-d bool on the device: every gradient is finite (no host sync; the caller's FiniteWatch reads it)."""
    grads = [p.grad for p in params if p.grad is not None]
    return finite_all(grads) if grads else torch.ones((), dtype=torch.bool)


def finite_all(tensors: list[torch.Tensor]) -> torch.Tensor:
    """0-d bool on the tensors' device: no element of any tensor is NaN or +-inf. Exact: large finite values
    (3e38) count as finite, as no sum of squares that could overflow is formed.

    CPU: the min and max of each tensor (``aminmax``: NaN propagates into both, -inf shows in the min, +inf
    in the max), a vectorised pass where the inf-norm GPUs reduce in one fused kernel is not vectorised.
    """
    tensors = [t for t in tensors if t.numel()]  # aminmax has no identity for an empty tensor
    if not tensors:
        return torch.ones((), dtype=torch.bool)
    if tensors[0].device.type == "cpu":
        extremes = torch.stack([torch.stack(torch.aminmax(t)).double() for t in tensors])  # (n, 2)
        return torch.isfinite(extremes).all()
    return torch.isfinite(torch.nn.utils.get_total_norm(tensors, norm_type=float("inf")))


def all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    """Every floating-point tensor (parameters and buffers such as BN running_var) is finite: one host sync.

    A checkpoint is "good" only then: a finite loss does not prove finite buffers.
    """
    return bool(finite_all([t.detach() for t in tensors.values() if t.is_floating_point()]))


class InterruptGuard:
    """Turns the first Ctrl-C into a flag the loop checks between steps, so a checkpoint is never half a step.

    A second Ctrl-C interrupts at once. Installed only in the main thread (where signals are delivered).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
