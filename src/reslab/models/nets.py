"""Whole networks: the shared surface (``StagedNet``), ``init_weights``, the lecture's MLP, ImageNet ResNets.

The CIFAR-style nets (6n+2, 9n+2, Wide ResNets) are in :mod:`reslab.models.cifar`.

Every net exposes the same surface, for feature extraction and for the diagnostics:

- ``forward_features(x)`` -> pooled features ``(B, F)``; ``forward(x) = fc(forward_features(x))``;
- ``stage_names`` (e.g. ``("layer1", "layer2", "layer3")``) and ``stages`` (those modules, in order);
- ``blocks()`` -> every residual / plain block in depth order; hook ``block.branch_out`` for F(x);
- ``activation_checkpointing`` (default False): in training, each stage runs as segments of about sqrt(n)
  blocks that are recomputed in the backward pass instead of keeping their activations
  (``torch.utils.checkpoint``, non-reentrant), so activation memory grows like sqrt(depth);
- ``default_input_size``: the input (without batch) the family is made for, used by ``reslab summary``.

All initialisation happens in :func:`init_weights`.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from reslab.errors import ConfigError
from reslab.models.blocks import (
    BasicBlock,
    Bottleneck,
    BranchScale,
    Norm,
    ResidualDenseBlock,
    ResidualUnit,
    Shortcut,
)
from reslab.models.identity_mappings import GatedShortcut

BlockKind = Literal["basic", "bottleneck"]
GlobalPool = Literal["adaptive", "window"]
GLOBAL_POOLS: tuple[str, ...] = ("adaptive", "window")


def init_weights(model: nn.Module, *, zero_init_residual: bool = False) -> None:
    """Initialise every layer of ``model``, with the reason for each choice.

    1. Conv: Kaiming normal, fan_out, ReLU gain (He et al. 2015 "Delving deep", as torchvision's ResNet).
    2. Linear (the lecture's dense MLP, and every classifier ``fc``): PyTorch's default init, as a plain
       ``nn.Linear`` stack has it (the lecture's setting). Without normalisation this is what makes a deep
       plain MLP's gradients vanish (each layer scales the signal by about 1/sqrt(6)), while the residual
       twin keeps them: its identity path carries the signal. Kaiming fan_in would hide the first effect and,
       summed over 64 residual branches with no normalisation, make activations explode (variance doubles
       per block).
    3. BatchNorm: weight 1, bias 0 (start as a plain standardisation).
    4. ``zero_init_residual``: zero the last layer of each residual branch (last BN gamma, or last conv for
       pre-activation blocks) so every residual block starts as the identity (Goyal et al. 2017). It is
       skipped for plain blocks, where it would cut the only path through the net.
    5. Fixup (Zhang, Dauphin & Ma 2019, rules 1-2, m = 2 layers per branch), for dense blocks built with
       ``branch_scale="fixup"``: the branch's last Linear (weight and bias) starts at 0 and its first one is
       rescaled by L^(-1/(2m-2)) = L^(-1/2), L the number of such blocks. The net starts as the identity
       stack, and after the first updates the L branches add O(1) to the stream's variance in total instead
       of a factor per block. Fixup's zero classifier, scalar biases and multipliers are left out: every
       Linear keeps its own bias, and the plain twin keeps the same classifier.
    6. Gated shortcuts (He et al. 2016, Fig. 2(c)(d)): the gate's bias b_g starts at the block's
       ``bias_init`` (the paper's -6 by default): sec. 3.1 found this initial value critical, and the gate's
       1x1 conv weights are Kaiming, as every conv (step 1).
    """
    if any(p.is_meta for p in model.parameters()):
        return  # shapes only (counting, summaries): there are no values to initialise
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, ResidualUnit | ResidualDenseBlock) and m.residual:
                m.zero_init_last()
    fixup = [m for m in model.modules() if isinstance(m, ResidualDenseBlock) and m.branch_scale == "fixup"]
    for m in model.modules():
        if isinstance(m, GatedShortcut) and m.gate.bias is not None:
            nn.init.constant_(m.gate.bias, m.bias_init)
    with torch.no_grad():
        for m in fixup:
            m.fc1.weight.mul_(len(fixup) ** -0.5)  # L^(-1/(2m-2)) with m = 2
            nn.init.zeros_(m.fc2.weight)
            nn.init.zeros_(m.fc2.bias)


@contextlib.contextmanager
def _frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """During a checkpoint's recomputation, keep BN running stats as the first forward left them.

    The recomputed forward runs in train mode again; without this, every BN would count each batch twice.
    Momentum 0 leaves running_mean/var unchanged; num_batches_tracked is put back afterwards.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in bns
    ]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(bns, saved):
            m.momentum = momentum
            if tracked is not None and m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def _recompute_contexts(
    segment: nn.Module,
) -> tuple[contextlib.AbstractContextManager[Any], contextlib.AbstractContextManager[Any]]:
    """checkpoint's (forward, recompute) contexts: BN statistics are not counted twice."""
    return contextlib.nullcontext(), _frozen_bn_stats(segment)


class WindowAvgPool(nn.Module):
    """Global average pooling by ``F.avg_pool2d`` with the whole map as window: (B, C, H, W) -> (B, C, 1, 1).

    The same mean as ``nn.AdaptiveAvgPool2d(1)``, summed in another order, so the last bit can differ (about
    1e-7). The akamaster/pytorch_resnet_cifar10 nets pool this way; a model that loads their weights pools
    the same way to give bit-identical outputs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=x.shape[-2:])


class StagedNet(nn.Module):
    """What every reslab net shares: stages, blocks(), forward_features and activation checkpointing."""

    stage_names: tuple[str, ...] = ()
    default_input_size: tuple[int, ...] = ()
    activation_checkpointing: bool = False
    fc: nn.Module  # the classifier (torchvision's and timm's name)

    @property
    def stages(self) -> list[nn.Sequential]:
        """The stage modules in order (named as in :attr:`stage_names`; torchvision's ``layer1`` ...)."""
        return [getattr(self, name) for name in self.stage_names]

    def blocks(self) -> Iterator[nn.Module]:
        """Every residual (or plain) block in depth order."""
        for stage in self.stages:
            yield from stage

    def _run_stages(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.activation_checkpointing and self.training and torch.is_grad_enabled()):
            for stage in self.stages:
                x = stage(x)  # calling the stage itself lets forward hooks on it fire
            return x
        for stage in self.stages:
            # Checkpoint segments of about sqrt(n) blocks (Chen et al. 2016, "Training deep nets with
            # sublinear memory cost"): only each segment's input is kept, and one segment at a time is
            # recomputed, so memory grows like sqrt(depth) instead of depth. Per-block checkpoints would
            # still keep all n block inputs (6 GiB for preact_resnet1001 at batch 128).
            blocks = list(stage)
            size = math.isqrt(max(len(blocks) - 1, 0)) + 1  # ceil(sqrt(n))
            for i in range(0, len(blocks), size):
                segment = nn.Sequential(*blocks[i : i + size])  # a view over existing blocks: no copies
                x = checkpoint(
                    segment,
                    x,
                    use_reentrant=False,
                    context_fn=functools.partial(_recompute_contexts, segment),
                )
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))  # (B, num_classes)


class ResidualMLP(StagedNet):
    """The lecture's network: a Linear input layer, ``depth`` dense blocks of ``width`` units, a classifier.

    The input is flattened, so it takes ``(B, in_features)`` or ``(B, C, H, W)`` with ``C*H*W = in_features``.
    """

    stage_names = ("layer1",)

    def __init__(
        self,
        depth: int,
        width: int = 64,
        in_features: int = 784,
        num_classes: int = 10,
        *,
        residual: bool = True,
        norm: Norm = None,
        branch_scale: BranchScale = None,
        zero_init_residual: bool = False,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        for what, value in (("depth", depth), ("width", width), ("in_features", in_features)):
            if value < 1:
                raise ConfigError(f"ResidualMLP {what} must be >= 1, got {value}")
        check_classes(num_classes)
        self.depth, self.width, self.residual = depth, width, residual
        self.default_input_size = (in_features,)
        self.activation_checkpointing = activation_checkpointing
        self.flatten = nn.Flatten()
        self.fc_in = nn.Linear(in_features, width)  # a[0]: from the input to the block width
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(
            *[
                ResidualDenseBlock(
                    width, residual=residual, norm=norm, branch_scale=branch_scale, num_blocks=depth
                )
                for _ in range(depth)
            ]
        )
        self.fc = nn.Linear(width, num_classes)
        init_weights(self, zero_init_residual=zero_init_residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (B, width)
        x = self.relu(self.fc_in(self.flatten(x)))
        return self._run_stages(x)


class ResNet(StagedNet):
    """The ImageNet ResNets (He et al. 2015, Table 1), with torchvision's module names and state_dict keys.

    7x7 stride-2 stem with 64 channels and a 3x3 stride-2 max-pool, four stages of 64/128/256/512 planes
    (x4 for bottlenecks), global average pool, fc. Option B shortcuts and v1.5 bottlenecks (stride in the 3x3)
    by default, as torchvision; ``stride_in_1x1=True`` gives the paper's v1.
    """

    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(
        self,
        block: BlockKind,
        layers: Sequence[int],
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        residual: bool = True,
        shortcut: Shortcut = "B",
        stride_in_1x1: bool = False,
        zero_init_residual: bool = False,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if block not in ("basic", "bottleneck") or len(layers) != 4 or min(layers) < 1:
            raise ConfigError(
                f"ResNet needs block 'basic'|'bottleneck' and 4 positive stage sizes, got {layers}"
            )
        check_classes(num_classes)
        cls = BasicBlock if block == "basic" else Bottleneck
        self.depth = 2 + sum(layers) * (2 if block == "basic" else 3)
        self.residual = residual
        self.default_input_size = (in_channels, 224, 224)
        self.activation_checkpointing = activation_checkpointing
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)  # on the stem's BN output only
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # (B, 64, H/4, W/4)
        in_planes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            blocks: list[nn.Module] = []
            for j in range(n):
                s = 2 if i > 1 and j == 0 else 1
                if cls is Bottleneck:
                    b: nn.Module = Bottleneck(
                        in_planes,
                        planes,
                        s,
                        residual=residual,
                        shortcut=shortcut,
                        stride_in_1x1=stride_in_1x1,
                    )
                else:
                    b = BasicBlock(in_planes, planes, s, residual=residual, shortcut=shortcut)
                blocks.append(b)
                in_planes = planes * cls.expansion
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self, zero_init_residual=zero_init_residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 512 or 2048)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self._run_stages(x)  # (B, 512|2048, H/32, W/32)
        return torch.flatten(self.avgpool(x), 1)


def check_classes(num_classes: int) -> None:
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
