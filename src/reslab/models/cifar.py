"""The CIFAR-style nets: He et al. 2015 section 4.2 (6n+2), He et al. 2016 (9n+2), Wide ResNets (6n+4).

All three read 32x32 images (any size works: global average pooling) through a 3x3 stem and three stages at
strides 1, 2, 2, and share the width multiplier k of Zagoruyko & Komodakis 2016 (:func:`widened`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from reslab.errors import ConfigError
from reslab.models.blocks import (
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ResidualUnit,
    Shortcut,
    ShortcutPad,
)
from reslab.models.identity_mappings import PLACEMENTS, Placement, ReorderedBasicBlock, ShortcutVariant
from reslab.models.nets import GLOBAL_POOLS, GlobalPool, StagedNet, WindowAvgPool, check_classes, init_weights


class CifarResNet(StagedNet):
    """The CIFAR-10 nets of He et al. 2015, section 4.2, and the pre-activation nets of He et al. 2016.

    Basic blocks: depth = 6n+2 (3x3 stem with 16 channels, 3 stages of n blocks with 16/32/64 channels, global
    average pool, fc). Bottleneck blocks: depth = 9n+2, bottleneck widths 16/32/64 -> 64/128/256 channels
    (ResNet-164 and ResNet-1001). ``preact=True`` uses pre-activation blocks and a final BN-ReLU before
    pooling.
    Shortcut default: A for basic blocks (paper, CIFAR), B for bottlenecks (the 2016 paper's code).
    ``widen`` is Wide ResNets' k (Zagoruyko & Komodakis 2016): every width, the stem's included, is
    ``widened(16|32|64, k)`` (e.g. 4/8/16 channels at k = 0.25). The stem shrinks with the stages so that
    option A's zero-padding shortcuts still only add channels, and k = 1 is the paper's net.
    ``shortcut_pad`` (where option A puts its zero channels) and ``global_pool`` change no parameter; "both"
    and "window" reproduce the akamaster/pytorch_resnet_cifar10 nets bit for bit.
    The ablations of He et al. 2016 (basic blocks, post-activation family): ``variant`` puts a shortcut
    function of Fig. 2 on every unit (``conv1x1`` = option C), and ``placement`` one of Fig. 4's orders of
    BN and ReLU (:class:`ReorderedBasicBlock`). For the pre-activation orders the stem keeps its BN-ReLU as
    the first unit's activation and the last unit gets an extra one after its addition (the appendix).
    """

    stage_names = ("layer1", "layer2", "layer3")

    def __init__(
        self,
        depth: int,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        residual: bool = True,
        bottleneck: bool = False,
        preact: bool = False,
        shortcut: Shortcut | None = None,
        shortcut_pad: ShortcutPad = "after",
        global_pool: GlobalPool = "adaptive",
        stride_in_1x1: bool = False,
        widen: float = 1.0,
        zero_init_residual: bool = False,
        activation_checkpointing: bool = False,
        variant: ShortcutVariant | None = None,
        placement: Placement = "original",
    ) -> None:
        super().__init__()
        n = cifar_blocks_per_stage(depth, bottleneck=bottleneck)
        check_classes(num_classes)
        if global_pool not in GLOBAL_POOLS:
            raise ConfigError(f"unknown global_pool {global_pool!r}; use 'adaptive' or 'window'")
        _check_ablation(variant, placement, basic_post_activation=not (bottleneck or preact))
        widths = [widened(c, widen) for c in (16, 32, 64)]  # (16, 32, 64) at k = 1
        self.depth, self.residual, self.widen = depth, residual, widen
        self.default_input_size = (in_channels, 32, 32)
        self.activation_checkpointing = activation_checkpointing
        self.preact, self.placement = preact, placement
        option: Shortcut = shortcut or ("B" if bottleneck else "A")
        if variant is not None and variant.kind == "conv1x1":
            option = "C"  # He et al. 2016, Fig. 2(e): a 1x1 conv (+ BN) on every shortcut
        stem = widths[0]
        self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=3, padding=1, bias=False)  # (B, 16k, 32, 32)
        if not preact:  # a pre-activation net's first block starts with its own BN-ReLU
            self.bn1 = nn.BatchNorm2d(stem)
            self.relu = nn.ReLU()
        common = dict(residual=residual, shortcut=option, shortcut_pad=shortcut_pad)
        in_planes = stem
        for i, (planes, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
            blocks: list[nn.Module] = []
            for j in range(n):
                block = _block(
                    in_planes, planes, stride if j == 0 else 1, bottleneck=bottleneck, preact=preact,
                    stride_in_1x1=stride_in_1x1, variant=variant, placement=placement,
                    after_stem=i == 1 and j == 0, **common,
                )  # fmt: skip
                blocks.append(block)
                in_planes = planes * block.expansion
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        if preact or placement == "full_preact":  # the last unit's output still needs BN-ReLU (appendix)
            self.bn = nn.BatchNorm2d(in_planes)
            self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1) if global_pool == "adaptive" else WindowAvgPool()
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self, zero_init_residual=zero_init_residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 64k or 256k)
        x = self.conv1(x)
        if not self.preact:
            x = self.relu(self.bn1(x))
        x = self._run_stages(x)  # (B, 64k|256k, H/4, W/4)
        if self.preact or self.placement == "full_preact":
            x = self.relu(self.bn(x))
        elif self.placement == "relu_preact":
            x = self.relu(x)  # Fig. 4(d)'s activation after the last unit's addition
        return torch.flatten(self.avgpool(x), 1)


def _block(
    in_planes: int,
    planes: int,
    stride: int,
    *,
    bottleneck: bool,
    preact: bool,
    stride_in_1x1: bool,
    variant: ShortcutVariant | None,
    placement: Placement,
    after_stem: bool,
    **common: Any,
) -> ResidualUnit:
    """One unit of a CIFAR net: bottleneck or basic, pre- or post-activation, in the order ``placement``."""
    if bottleneck:
        cls = PreActBottleneck if preact else Bottleneck
        return cls(in_planes, planes, stride, stride_in_1x1=stride_in_1x1, **common)
    if preact:
        return PreActBasicBlock(in_planes, planes, stride, **common)
    if placement != "original":
        return ReorderedBasicBlock(
            in_planes, planes, stride, placement=placement, after_stem=after_stem, variant=variant, **common
        )
    return BasicBlock(in_planes, planes, stride, variant=variant, **common)


def _check_ablation(variant: ShortcutVariant | None, placement: str, *, basic_post_activation: bool) -> None:
    if placement not in PLACEMENTS:
        raise ConfigError(f"unknown placement {placement!r}; use one of {', '.join(PLACEMENTS)}")
    ablated = (variant is not None and variant.kind != "identity") or placement != "original"
    if ablated and not basic_post_activation:
        raise ConfigError(
            "shortcut_kind and placement (He et al. 2016, Fig. 2 and 4) apply to the CIFAR basic-block nets "
            "(resnet<d>, d = 6n+2), not to the bottleneck or pre-activation families"
        )


class WideResNet(StagedNet):
    """Wide residual networks WRN-d-k (Zagoruyko & Komodakis 2016, "Wide Residual Networks", Table 1).

    A 3x3 stem of 16 channels, 3 stages of n = (d-4)/6 pre-activation basic blocks ("B(3,3)") of 16k / 32k /
    64k channels, BN-ReLU, global average pool, fc. ``shortcut="B"`` (default) puts a 1x1 projection (no BN,
    reading the block's BN-ReLU'd input, as the authors' code) wherever a block changes the shape, which for
    k != 1 includes the first block of the first stage. ``dropout`` sits between the two convs of every block
    (the paper uses 0.3 on CIFAR). ``residual=False`` gives the plain twin: the same convs, no shortcuts and
    so no projections.
    WRN-28-10 has 36,479,194 parameters (the paper's 36.5M).
    """

    stage_names = ("layer1", "layer2", "layer3")

    def __init__(
        self,
        depth: int,
        widen: float,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        residual: bool = True,
        shortcut: Shortcut = "B",
        dropout: float = 0.0,
        zero_init_residual: bool = False,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        n = wrn_blocks_per_stage(depth)
        check_classes(num_classes)
        self.depth, self.residual, self.widen, self.dropout = depth, residual, widen, dropout
        self.default_input_size = (in_channels, 32, 32)
        self.activation_checkpointing = activation_checkpointing
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=False)  # (B, 16, 32, 32)
        in_planes = 16
        for i, (base, stride) in enumerate(zip((16, 32, 64), (1, 2, 2)), start=1):
            planes = widened(base, widen)
            blocks = [
                PreActBasicBlock(
                    in_planes if j == 0 else planes,
                    planes,
                    stride if j == 0 else 1,
                    residual=residual,
                    shortcut=shortcut,
                    dropout=dropout,
                )
                for j in range(n)
            ]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            in_planes = planes
        self.bn = nn.BatchNorm2d(in_planes)  # the last unit's output still needs BN-ReLU before pooling
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self, zero_init_residual=zero_init_residual)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 64k)
        x = self._run_stages(self.conv1(x))  # (B, 64k, H/4, W/4)
        return torch.flatten(self.avgpool(self.relu(self.bn(x))), 1)


def cifar_blocks_per_stage(depth: int, *, bottleneck: bool = False) -> int:
    """n for a CIFAR net of ``depth`` layers: depth = 6n+2 (basic) or 9n+2 (bottleneck), n >= 1."""
    per_stage = 9 if bottleneck else 6
    if depth < per_stage + 2 or (depth - 2) % per_stage:
        paper = "164, 1001" if bottleneck else "20, 32, 44, 56, 110, 1202"
        below = max(per_stage + 2, depth - (depth - 2) % per_stage)
        nearest = ", ".join(str(d) for d in sorted({below, below + per_stage if below < depth else below}))
        kind = "bottleneck" if bottleneck else "basic-block"
        raise ConfigError(
            f"depth {depth} is impossible for the CIFAR {kind} family: "
            f"valid depths are {per_stage}n+2 with n >= 1 (the papers' {paper}); nearest: {nearest}"
        )
    return (depth - 2) // per_stage


def wrn_blocks_per_stage(depth: int) -> int:
    """n for a Wide ResNet of ``depth`` layers: depth = 6n+4 (Zagoruyko & Komodakis 2016), n >= 1."""
    if depth < 10 or (depth - 4) % 6:
        below = max(10, depth - (depth - 4) % 6)
        nearest = ", ".join(str(d) for d in sorted({below, below + 6 if below < depth else below}))
        raise ConfigError(
            f"depth {depth} is impossible for a Wide ResNet: valid depths are 6n+4 with n >= 1 "
            f"(the paper's 16, 22, 28, 40); nearest: {nearest}"
        )
    return (depth - 4) // 6


def check_widen(widen: object) -> float:
    """A width multiplier k must be a positive, finite number (fractions such as 0.25 allowed)."""
    if (
        isinstance(widen, bool)
        or not isinstance(widen, int | float)
        or not math.isfinite(widen)
        or widen <= 0
    ):
        raise ConfigError(f"widen must be a positive number such as 0.25, 1 or 10, got {widen!r}")
    return float(widen)


def widened(base: int, widen: float) -> int:
    """Channels of a ``base``-channel layer at width multiplier k: base*k rounded half up, at least 1.

    Rounding is monotone, so widened(16, k) <= widened(32, k) <= widened(64, k) for every k and option A
    (which can only add channels) stays valid. k = 0.25 -> 4/8/16, k = 0.1 -> 2/3/6 (1.6, 3.2, 6.4 rounded).
    """
    check_widen(widen)
    return max(1, math.floor(base * widen + 0.5))
