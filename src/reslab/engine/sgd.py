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


def _layout(t: torch.Tensor) -> torch.memory_format | None:
    """The dense layouts the views handle: contiguous, channels_last; None for any other."""
    for fmt in (torch.contiguous_format, torch.channels_last):
        if t.is_contiguous(memory_format=fmt):
            return fmt
    return None


def _as_laid_out(t: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor | None:
    """``t`` as the fused kernel gets it: itself when contiguous, its storage in order (a 1-D view) when
    channels_last; None when ``t`` is not laid out as ``fmt`` (its elements would not line up with the
    parameter's)."""
    if not t.is_contiguous(memory_format=fmt):
        return None
    return t if fmt == torch.contiguous_format else memory_order(t)


class DenseSGD(torch.optim.SGD):
    """``torch.optim.SGD(fused=True)`` whose step hands the fused kernel channels_last tensors as 1-D views.

    Same update rule, same state (momentum buffers keyed by parameter, shaped and strided like it), so
    checkpoints are interchangeable with plain ``torch.optim.SGD``. Contiguous tensors are passed as they
    are. A gradient or momentum buffer laid out unlike its parameter (a run resumed with channels_last
    switched) is copied into the parameter's layout first: torch's fused CPU kernel pairs elements by memory
    position and would mix them up. A parameter in another layout, with a sparse gradient, or whose buffer
    does not exist yet while others in its group do, takes torch's per-tensor update; with a grad scaler's
    ``found_inf`` (fp16) the whole step is torch's own.
    """

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        if any(getattr(self, name, None) is not None for name in ("grad_scale", "found_inf")):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            fused, loose = self._plan(group)
            for lists, is_fused in ((fused, True), (loose, False)):
                if lists[0]:
                    self._update(group, *lists, fused=is_fused)
        return loss

    def _update(
        self,
        group: dict[str, Any],
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        bufs: list[torch.Tensor | None],
        owners: list[torch.Tensor],
        *,
        fused: bool,
    ) -> None:
        """torch's SGD on these lists (fused, or per tensor); new momentum buffers go into the state."""
        new = [b is None for b in bufs] if group["momentum"] != 0 else []
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
            has_sparse_grad=any(g.is_sparse for g in grads),
            foreach=False,
            fused=fused or None,
        )
        for p, buf, is_new in zip(owners, bufs, new, strict=False):
            if is_new:  # a fused buffer has the view's shape: stored shaped and strided like its parameter
                assert buf is not None
                self.state[p]["momentum_buffer"] = buf.as_strided(p.shape, p.stride()) if fused else buf

    def _plan(self, group: dict[str, Any]) -> tuple[tuple[list[Any], ...], tuple[list[Any], ...]]:
        """(fused, per tensor): each (params, grads, momentum buffers, their parameters) as the update gets
        them; the fused lists hold tensors or memory-order views laid out alike."""
        fused: tuple[list[Any], ...] = ([], [], [], [])
        loose: tuple[list[Any], ...] = ([], [], [], [])
        momentum = group["momentum"] != 0
        live = [p for p in group["params"] if p.grad is not None]
        bufs = [self.state[p].get("momentum_buffer") if momentum else None for p in live]
        late = any(b is None for b in bufs) and any(b is not None for b in bufs)  # some started, some not
        for p, buf in zip(live, bufs, strict=True):
            g = p.grad
            fmt = None if g.is_sparse or (late and buf is None) else _layout(p)
            if fmt is None:  # torch's per tensor update: any layout, sparse, a buffer that starts late
                _append(loose, p, g, buf, p)
                continue
            flat_g = _as_laid_out(g, fmt)
            if flat_g is None:  # laid out unlike p: a copy in p's layout (rare)
                flat_g = _as_laid_out(g.contiguous(memory_format=fmt), fmt)
            if buf is not None and _as_laid_out(buf, fmt) is None:  # once: the state takes p's layout
                buf = self.state[p]["momentum_buffer"] = buf.contiguous(memory_format=fmt)
            _append(fused, _as_laid_out(p, fmt), flat_g, None if buf is None else _as_laid_out(buf, fmt), p)
        return fused, loose


def _append(lists: tuple[list[Any], ...], *items: Any) -> None:
    for column, item in zip(lists, items, strict=True):
        column.append(item)


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
