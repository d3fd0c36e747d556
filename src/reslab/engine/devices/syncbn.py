"""SyncBatchNorm that also runs on CPU (gloo): batch statistics of the *global* batch across all ranks.

``torch.nn.SyncBatchNorm`` only accepts GPU inputs, so on CUDA we use it, and on CPU this module does the same
maths with autograd-aware ``all_reduce``: per channel, the global sum and count give the mean, a second
all_reduce of the centred squares gives the (biased) variance. Two passes rather than E[x^2] - E[x]^2, so a
2-rank run matches single-process BatchNorm on the union batch to float rounding (tests/test_distributed.py).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum over ranks too (every rank's output depends on every input)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Autograd-aware element-wise sum over ranks."""
    return _AllReduceSum.apply(x)


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm{1,2,3}d over the union of every rank's batch; plain BatchNorm in eval mode.

    Same parameters and buffers (names and shapes) as ``nn.BatchNorm2d``, so checkpoints load into the plain
    model. Input (B, C, *).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (B, C, ...), got {input.dim()}D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)  # eval mode uses running statistics: no communication
        # 1) global per-channel sum and count (one all_reduce; the count rides along without a gradient)
        x = input.float()  # statistics in fp32 even under autocast
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)  # broadcast (C,) over (B, C, *)
        local_n = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        summed = all_reduce_sum(torch.cat([x.sum(dims), local_n]))  # (C + 1,)
        n = summed[-1].detach()
        mean = summed[:-1] / n  # (C,)
        # 2) global biased variance from centred squares (second all_reduce): numerically as BN does it
        centred = x - mean.view(shape)
        var = all_reduce_sum((centred * centred).sum(dims)) / n  # (C,)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        # 3) running statistics: unbiased variance over the global batch, as nn.BatchNorm does
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var.detach() * (n / (n - 1).clamp(min=1))
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return out.to(input.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Swap every BatchNorm for a synchronised one; parameters and buffers are the *same* tensors.

    CUDA: ``nn.SyncBatchNorm`` (fused kernels). Elsewhere: :class:`GlobalBatchNorm`. Done before the optimizer
    is built and before DDP wraps the model.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if isinstance(model, _BatchNorm) and not isinstance(model, GlobalBatchNorm):
        new = GlobalBatchNorm(
            model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats
        )
        # Reuse the very Parameter/buffer objects, so anything holding them (an optimizer) stays valid.
        new.weight, new.bias = model.weight, model.bias
        new.running_mean, new.running_var = model.running_mean, model.running_var
        new.num_batches_tracked = model.num_batches_tracked
        new.train(model.training)
        return new
    for name, child in model.named_children():
        model.add_module(name, convert_sync_batchnorm(child, device))
    return model
