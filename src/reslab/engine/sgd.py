"""The engine's optimiser: SGD with momentum, fused into one kernel, fed tensors in their memory order.

Why the memory order matters on a CPU: with ``channels_last`` the 4-D weights, their gradients and momentum
buffers are dense but not contiguous, and torch's fused CPU kernels (and ``aminmax``) walk such tensors
through their strides at a fraction of their speed. A dense tensor read in storage order holds the same
elements, so an elementwise update (or a reduction whose order does not matter) on a 1-D view of it gives the
same result. Measured on the 2-core CPU, resnet18's gradients with channels_last (A/B, one process): fused
SGD 7.9 -> 3.8 ms, the finite check 5.6 -> 1.3 ms, of a 255 ms bf16 step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.sgd import sgd as functional_sgd


def memory_order(t: torch.Tensor) -> torch.Tensor | None:
    """A 1-D view of ``t``'s elements in the order they lie in memory, or None when ``t`` is not dense.

    Two tensors with the same shape and strides give views whose k-th elements correspond.
    """
    if t.is_contiguous():
        return t.view(-1)
    if t.is_contiguous(memory_format=torch.channels_last):  # the common case, without the sort below
        return t.as_strided((t.numel(),), (1,), t.storage_offset())
    order = sorted(range(t.dim()), key=lambda d: (t.stride(d), t.size(d)), reverse=True)
    permuted = t.permute(order)
    return permuted.view(-1) if permuted.is_contiguous() else None


def _layout(t: torch.Tensor) -> str | None:
    """ "contiguous", "channels_last" (dense, not contiguous), or None (a layout the views do not handle)."""
    if t.is_contiguous():
        return "contiguous"
    return "channels_last" if t.is_contiguous(memory_format=torch.channels_last) else None


def _as_laid_out(t: torch.Tensor, layout: str) -> torch.Tensor | None:
    """``t`` as the fused kernel gets it: itself when contiguous, its storage in order (a 1-D view, NHWC
    order) when channels_last; None when ``t`` is not laid out as ``layout`` (its elements would not line
    up with the parameter's)."""
    if layout == "contiguous":
        return t if t.is_contiguous() else None
    if not t.is_contiguous(memory_format=torch.channels_last):
        return None
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


class DenseSGD(torch.optim.SGD):
    """``torch.optim.SGD(fused=True)`` whose step hands the fused kernel channels_last tensors as 1-D views.

    Same update rule, same state (momentum buffers keyed by parameter, shaped and strided like it), so
    checkpoints are interchangeable with plain ``torch.optim.SGD``. Contiguous tensors are passed as they
    are. Anything the views cannot map exactly (a closure, a grad scaler's ``found_inf``, a gradient or
    buffer laid out unlike its parameter, a sparse gradient, another layout) takes torch's own step.
    """

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        scaled = any(getattr(self, name, None) is not None for name in ("grad_scale", "found_inf"))
        plans = [None] if closure is not None or scaled else [self._plan(g) for g in self.param_groups]
        if any(plan is None for plan in plans):
            return super().step(closure)
        for group, plan in zip(self.param_groups, plans, strict=True):
            params, grads, bufs, owners = plan  # type: ignore[misc]
            first = group["momentum"] != 0 and bool(bufs) and bufs[0] is None
            functional_sgd(
                params,
                grads,
                bufs,
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                lr=group["lr"],
                dampening=group["dampening"],
                nesterov=group["nesterov"],
                maximize=group["maximize"],
                has_sparse_grad=False,
                fused=True,
            )
            for p, buf in zip(owners, bufs, strict=True) if first else ():
                # a new buffer has the view's shape: stored shaped and strided like its parameter
                self.state[p]["momentum_buffer"] = buf.as_strided(p.shape, p.stride())
        return None

    def _plan(self, group: dict[str, Any]) -> tuple[list[Any], ...] | None:
        """(params, grads, momentum buffers, their parameters) as the kernel gets them; None: torch's step."""
        params: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        bufs: list[torch.Tensor | None] = []
        owners: list[torch.Tensor] = []
        momentum = group["momentum"] != 0
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            layout = None if g.is_sparse else _layout(p)
            buf = self.state[p].get("momentum_buffer") if momentum else None
            views = [_as_laid_out(t, layout) for t in (p, g)] if layout else [None]
            if buf is not None and layout:
                views.append(_as_laid_out(buf, layout))
            if any(v is None for v in views):
                return None
            params.append(views[0])
            grads.append(views[1])
            bufs.append(views[2] if buf is not None else None)
            owners.append(p)
        if momentum and any(b is None for b in bufs) and any(b is not None for b in bufs):
            return None  # some buffers exist, some do not: torch's own step knows how to start those
        return params, grads, bufs, owners


def make_sgd(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    *,
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
) -> torch.optim.SGD:
    """SGD with momentum (He et al. 2015, Sec. 3.4), fused into one kernel where the device has one.

    Fused = one pass over all parameters instead of several ops per tensor. On the 2-core CPU (one process,
    A/B) the update of resnet50 takes 10 ms instead of 44 ms (~5% of a batch-8 bf16 step), resnet20's 0.2 ms
    instead of 0.8 ms. Same update rule; a torch without fused SGD for the device falls back to the default.
    On a CPU it is :class:`DenseSGD` (memory-order views: channels_last weights at contiguous speed).
    """
    params = list(params)  # tensors, or parameter groups {"params": [...], "lr_scale": ...} (--head-lr)
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    device = tensors[0].device.type if tensors else "cpu"
    kwargs = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if device in ("cpu", "cuda"):
        fused = DenseSGD if device == "cpu" else torch.optim.SGD
        with contextlib.suppress(RuntimeError, ValueError, TypeError):
            return fused(params, fused=True, **kwargs)  # type: ignore[arg-type]
    return torch.optim.SGD(params, **kwargs)  # type: ignore[arg-type]
