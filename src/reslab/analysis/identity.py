"""The identity argument, made concrete (He et al. 2015, section 3.1).

"If the added layers can be constructed as identity mappings, a deeper model should have training error no
greater than its shallower counterpart." A residual block ``relu(F(x) + x)`` whose branch ends in zero
(last BN gamma = 0 and beta = 0, or a zeroed last conv / linear layer) computes ``relu(x)``, which *is* ``x``
on non-negative input, i.e. on the output of any earlier ReLU. The plain twin with the same zeroing outputs
``relu(0) = 0``: to be the identity its layers would have to learn it, which is the "degradation" problem.

    >>> block = zero_branch(BasicBlock(16, 16))  # in place      # doctest: +SKIP
    >>> is_identity_block(block.eval(), torch.rand(2, 16, 8, 8))
    True
"""

from __future__ import annotations

import torch
from torch import nn


def zero_branch(block: nn.Module) -> nn.Module:
    """Make ``block``'s residual branch output exactly zero, **in place**; returns the same block.

    (Like ``nn.init`` functions; use ``zero_branch(copy.deepcopy(block))`` to keep the original.)

    1. If the branch ends in a BN (``bn2`` of basic / dense blocks, ``bn3`` of bottlenecks), zero its
       gamma and beta: ``F(x) = 0 * x_hat + 0``, whatever the running statistics.
    2. Otherwise (pre-activation blocks, MLP blocks without norm) zero the last conv / linear weight and bias.
    The block's own ``residual`` flag is kept, so a plain block stays plain.
    """
    out = block
    for name in ("bn3", "bn2"):
        bn = getattr(out, name, None)
        if isinstance(bn, nn.modules.batchnorm._BatchNorm) and _ends_branch(out, name):
            with torch.no_grad():
                bn.weight.zero_()
                bn.bias.zero_()
            return out
    last = _last_layer(out)
    with torch.no_grad():
        last.weight.zero_()
        if last.bias is not None:
            last.bias.zero_()
    return out


def _ends_branch(block: nn.Module, bn_name: str) -> bool:
    # A bottleneck's bn2 is followed by conv3, so only its bn3 ends the branch.
    return not (bn_name == "bn2" and hasattr(block, "conv3"))


def _last_layer(block: nn.Module) -> nn.Conv2d | nn.Linear:
    for name in ("conv3", "conv2", "fc2"):
        layer = getattr(block, name, None)
        if isinstance(layer, nn.Conv2d | nn.Linear):
            return layer
    raise TypeError(f"{type(block).__name__} has no conv3/conv2/fc2 ending its branch")


@torch.inference_mode()
def branch_relative_norm(block: nn.Module, x: torch.Tensor) -> float:
    """``||F(x)|| / ||x||`` over the batch ``x``, F(x) read at ``block.branch_out``; 0 for the identity."""
    seen: list[torch.Tensor] = []
    tap = block.get_submodule("branch_out")  # F(x) before the addition (every reslab block has this tap)
    handle = tap.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        block(x)
    finally:
        handle.remove()
    return float(seen[0].norm() / x.norm().clamp_min(1e-12))


@torch.inference_mode()
def is_identity_block(block: nn.Module, x: torch.Tensor) -> bool:
    """True if ``block(x)`` equals ``x`` exactly (bitwise, no tolerance) for this input.

    Use eval mode (BN running statistics) and a non-negative ``x`` of the block's input shape, e.g. the
    output of a ReLU: on negative entries even the residual block's final ReLU differs from the identity.
    A block that changes the shape (stride or channels) can never be the identity.
    """
    y = block(x)
    return y.shape == x.shape and bool(torch.equal(y, x))
