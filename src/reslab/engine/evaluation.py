"""``evaluate_model``: loss, error and top-5 error of a model on a loader, with one host sync at the end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean cross-entropy (no label smoothing: comparable across runs)
    error: float  # top-1 error in [0, 1]
    top5_error: float  # top-5 error (top-k with k = min(5, classes))
    n: int  # images evaluated


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    amp_dtype: torch.dtype | None = None,
    distributed: bool = False,
) -> EvalResult:
    """Evaluate in eval mode (BN running statistics); restores the model's train/eval mode afterwards.

    ``distributed``: every rank calls this with its own disjoint shard of the split (and the plain model, not
    the DDP wrapper); it evaluates rank 0's buffers and returns the figures of the whole split on every rank.
    """
    if distributed:
        from reslab.engine.distributed import broadcast_buffers

        broadcast_buffers(model)
    was_training = model.training
    model.eval()
    loss_sum = correct1 = correct5 = None
    n = 0
    try:
        for x, y in loader:
            if y.numel() == 0:  # a rank's shard of a split smaller than the world size
                continue
            ctx = (
                torch.autocast(device_type=x.device.type, dtype=amp_dtype)
                if amp_dtype is not None
                else contextlib.nullcontext()
            )
            with ctx:
                logits = model(x)  # (B, K)
            logits = logits.float()
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices  # (B, k)
            hits = top == y.view(-1, 1)  # (B, k)
            # Accumulate on the device: no .item() per batch.
            batch = (F.cross_entropy(logits, y, reduction="sum"), hits[:, 0].sum(), hits.any(1).sum())
            if loss_sum is None:
                loss_sum, correct1, correct5 = batch
            else:
                loss_sum, correct1, correct5 = loss_sum + batch[0], correct1 + batch[1], correct5 + batch[2]
            n += int(y.shape[0])
    finally:
        model.train(was_training)
    if distributed:  # sums over ranks (loss, top-1 hits, top-5 hits, images) in one all_reduce
        from reslab.engine.distributed import all_reduce_sum

        zero = torch.zeros((), device=next(iter(model.parameters())).device)
        parts = [zero, zero, zero] if loss_sum is None else [loss_sum, correct1, correct5]
        local = torch.stack([p.double() for p in parts] + [zero.double() + n])
        total = all_reduce_sum(local).tolist()
        loss_sum, correct1, correct5, n = total[0], round(total[1]), round(total[2]), round(total[3])
    if n == 0 or loss_sum is None:
        return EvalResult(float("nan"), float("nan"), float("nan"), 0)
    return EvalResult(
        loss=float(loss_sum) / n,
        error=(n - int(correct1)) / n,  # not 1 - c/n: no 0.025000000000000022 in the logs
        top5_error=(n - int(correct5)) / n,
        n=n,
    )
