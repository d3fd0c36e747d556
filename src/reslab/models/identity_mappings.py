"""He et al. 2016, "Identity Mappings in Deep Residual Networks": the units its ablations train.

Section 3 (Fig. 2, Table 1) replaces the identity shortcut ``h(x) = x`` of a residual unit
``y = h(x) + F(x)`` by a constant scaling, a gate, a 1x1 conv or dropout: :class:`ShortcutVariant` names one
as data and builds its ``modulation`` module (:class:`ScaledShortcut`, :class:`GatedShortcut`,
:class:`DropoutShortcut`), which a block applies to (h(x), F(x)) just before the addition. Section 4 (Fig. 4,
Table 2) keeps the identity and moves BN and ReLU around the addition: :data:`PLACEMENTS` lists the five
orders as data and :class:`ReorderedBasicBlock` runs any of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from reslab.errors import ConfigError
from reslab.models.blocks import ResidualUnit, Shortcut, ShortcutPad, conv3x3

ShortcutKind = Literal["identity", "scaling", "exclusive_gate", "shortcut_gate", "conv1x1", "dropout"]
SHORTCUT_KINDS: tuple[str, ...] = (
    "identity", "scaling", "exclusive_gate", "shortcut_gate", "conv1x1", "dropout",
)  # fmt: skip
Placement = Literal["original", "bn_after_add", "relu_before_add", "relu_preact", "full_preact"]
# He et al. 2016, Fig. 4: the same two convs, two BNs and ReLUs in five orders, as (the branch F, what
# follows the addition). (a) is BasicBlock; a BN placed before conv1 normalises the block's input channels.
PLACEMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "original": (("conv1", "bn1", "relu", "conv2", "bn2"), ("relu",)),  # (a) Table 2: 6.61%
    "bn_after_add": (("conv1", "bn1", "relu", "conv2"), ("bn2", "relu")),  # (b) 8.17%
    "relu_before_add": (("conv1", "bn1", "relu", "conv2", "bn2", "relu"), ()),  # (c) 7.84%
    "relu_preact": (("relu", "conv1", "bn1", "relu", "conv2", "bn2"), ()),  # (d) 6.71%
    "full_preact": (("bn1", "relu", "conv1", "bn2", "relu", "conv2"), ()),  # (e) 6.37%
}
PREACT_PLACEMENTS: tuple[str, ...] = ("relu_preact", "full_preact")  # f = identity: nothing after the add


class ScaledShortcut(nn.Module):
    """He et al. 2016, Fig. 2(b): ``y = λ·h(x) + (1-λ)·F(x)``, the "frozen gating" of Table 1 (12.35% at
    λ = 0.5); ``scale_branch=False`` leaves F as is, ``y = λ·h(x) + F(x)`` (Table 1: "fail").

    Backward, the shortcut carries ``λ`` per block: ``λ^k`` over k blocks (eq. 8), so with λ < 1 the direct
    path to the early layers vanishes geometrically.
    """

    def __init__(self, scale: float, *, scale_branch: bool = True) -> None:
        super().__init__()
        self.scale, self.scale_branch = scale, scale_branch

    def forward(
        self, x: torch.Tensor, identity: torch.Tensor, branch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scale * identity, (1.0 - self.scale) * branch if self.scale_branch else branch

    def extra_repr(self) -> str:
        return f"scale={self.scale}, scale_branch={self.scale_branch}"


class GatedShortcut(nn.Module):
    """He et al. 2016, Fig. 2(c) and (d): a gate ``g(x) = sigmoid(W_g x + b_g)`` per output element, W_g a
    1x1 conv with the block's stride (so g has F's shape) and a bias b_g, as in Highway networks.

    ``exclusive=True`` (Fig. 2(c)): ``y = (1-g)·h(x) + g·F(x)``; ``False`` (shortcut-only, Fig. 2(d)):
    ``y = (1-g)·h(x) + F(x)``. ``bias_init`` is b_g at initialisation (applied by ``init_weights``): the paper
    found it critical, -6 best for both (Table 1), i.e. g ~ 0.0025 and a shortcut near the identity.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, *, exclusive: bool, bias_init: float):
        super().__init__()
        self.gate = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=True)
        self.exclusive, self.bias_init = exclusive, bias_init

    def forward(
        self, x: torch.Tensor, identity: torch.Tensor, branch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.sigmoid(self.gate(x))  # (B, C_out, H', W'), reads the block's input x
        return (1.0 - g) * identity, g * branch if self.exclusive else branch

    def extra_repr(self) -> str:
        return f"exclusive={self.exclusive}, bias_init={self.bias_init}"


class DropoutShortcut(nn.Module):
    """He et al. 2016, Fig. 2(f): dropout on the shortcut's output, ``y = m ⊙ h(x) + F(x)`` (Table 1: "fail").

    The dropout of the paper's reference (Hinton et al. 2012): in training each element is kept with
    probability 1-p and *not* rescaled; in evaluation the shortcut is multiplied by 1-p, the expectation. So
    the shortcut carries an expected scale of 1-p = 0.5, the point of sec. 3.1 ("similar to constant scaling
    by 0.5"). PyTorch's ``nn.Dropout`` would rescale by 1/(1-p) in training and keep the expectation at 1.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(
        self, x: torch.Tensor, identity: torch.Tensor, branch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training:
            # m = 1 with probability 1-p; comparing uniforms is ~5x faster on CPU than bernoulli_
            keep = torch.rand_like(identity, dtype=torch.float32) >= self.p
            return identity * keep, branch
        return identity * (1.0 - self.p), branch

    def extra_repr(self) -> str:
        return f"p={self.p}"


@dataclass(frozen=True)
class ShortcutVariant:
    """The shortcut function h(x) of a residual unit (He et al. 2016, sec. 3, Fig. 2, Table 1) as data.

    ``identity`` is the original ``x + F(x)`` (no module, no parameters). ``conv1x1`` is a 1x1 conv + BN
    projection on every shortcut, i.e. option C (the net sets it); the others are one ``modulation`` module
    per block that rescales h(x) and F(x) just before the addition.
    """

    kind: ShortcutKind = "identity"
    scale: float = 0.5  # scaling: λ (the paper's 0.5)
    scale_branch: bool = True  # scaling: F scaled by 1-λ too (Table 1's "frozen gating" row)
    gate_bias: float = -6.0  # gates: b_g at initialisation (Table 1's best for both gates)
    dropout: float = 0.5  # dropout: the ratio p (the paper's 0.5)

    def __post_init__(self) -> None:
        if self.kind not in SHORTCUT_KINDS:
            raise ConfigError(f"unknown shortcut_kind {self.kind!r}; use one of {', '.join(SHORTCUT_KINDS)}")
        if not (math.isfinite(self.scale) and self.scale >= 0):
            raise ConfigError(f"shortcut_scale must be finite and >= 0 (the paper: 0.5), got {self.scale}")
        if not math.isfinite(self.gate_bias):
            raise ConfigError(f"gate_bias must be a finite number (the paper: -6), got {self.gate_bias}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"shortcut_dropout must be in [0, 1) (the paper: 0.5), got {self.dropout}")

    def modulation(self, in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
        """The module that rescales (h(x), F(x)) in one block, or None for identity and conv1x1."""
        if self.kind == "scaling":
            return ScaledShortcut(self.scale, scale_branch=self.scale_branch)
        if self.kind in ("exclusive_gate", "shortcut_gate"):
            exclusive = self.kind == "exclusive_gate"
            return GatedShortcut(in_planes, out_planes, stride, exclusive=exclusive, bias_init=self.gate_bias)
        if self.kind == "dropout":
            return DropoutShortcut(self.dropout)
        return None


class ReorderedBasicBlock(ResidualUnit):
    """A basic block with its BN and ReLU in one of the orders of He et al. 2016, Fig. 4 (Table 2).

    The same components as :class:`BasicBlock` (two 3x3 convs, two BNs, ReLUs), in the order that
    :data:`PLACEMENTS` gives for ``placement``: the branch F, then the addition, then what follows it. A BN
    before conv1 normalises the input's channels (full pre-activation); others the block's. ``after_stem``
    drops the ops before conv1 for the first unit of a pre-activation net, whose input the stem's BN-ReLU
    has already activated "before splitting into two paths" (the paper's appendix). For the pre-activation
    orders a projection shortcut reads the pre-activated input and has no BN, as :class:`PreActBasicBlock`.
    ``variant`` adds a shortcut function of Fig. 2 (``modulation``), as in :class:`BasicBlock`.
    """

    expansion: int = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        placement: Placement = "original",
        after_stem: bool = False,
        residual: bool = True,
        shortcut: Shortcut = "B",
        shortcut_pad: ShortcutPad = "after",
        variant: ShortcutVariant | None = None,
    ) -> None:
        super().__init__()
        if placement not in PLACEMENTS:
            raise ConfigError(f"unknown placement {placement!r}; use one of {', '.join(PLACEMENTS)}")
        branch, after = PLACEMENTS[placement]
        if after_stem:
            branch = branch[branch.index("conv1") :]
        self.placement = placement
        self.branch_ops, self.after_ops = branch, after
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.conv2 = conv3x3(planes, planes)
        for bn in ("bn1", "bn2"):  # only the BNs this order uses (the first unit may have one fewer)
            if bn in branch or bn in after:
                before_conv1 = bn in branch and branch.index(bn) < branch.index("conv1")
                self.add_module(bn, nn.BatchNorm2d(in_planes if before_conv1 else planes))
        self.relu = nn.ReLU()
        preact = placement in PREACT_PLACEMENTS
        self._init_paths(
            residual, in_planes, planes, stride, shortcut, shortcut_pad, with_bn=not preact, variant=variant
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W)
        start = self.branch_ops.index("conv1")
        pre = x
        for name in self.branch_ops[:start]:  # pre-activation, (d) and (e): (B, C_in, H, W)
            pre = getattr(self, name)(pre)
        identity = self.shortcut(x, pre)
        out = pre
        for name in self.branch_ops[start:]:
            out = getattr(self, name)(out)  # F(x): (B, C_out, H', W')
        out = self.branch_out(out)
        if self.residual:
            if self.modulation is not None:  # Fig. 2: h(x) and F(x) rescaled
                identity, out = self.modulation(x, identity, out)
            out = out + identity  # the skip connection
        for name in self.after_ops:  # f: ReLU (a), BN-ReLU (b), nothing (c)-(e)
            out = getattr(self, name)(out)
        return out

    def zero_init_last(self) -> None:
        """Zero the branch's last conv or BN, so that F(x) starts at 0 in every order."""
        last = [name for name in self.branch_ops if name != "relu"][-1]
        nn.init.zeros_(getattr(self, last).weight)

    def extra_repr(self) -> str:
        return f"placement={self.placement!r}"
