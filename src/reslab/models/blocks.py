"""Residual blocks and their plain twins (He et al. 2015, section 3; He et al. 2016, "Identity Mappings").

Three layers, as in torchvision's ``resnet.py``: conv helpers and shortcuts, then the blocks.

Every convolutional block's ``forward`` follows one pattern, torchvision's::

    identity = self.shortcut(x)         # h(x): x itself, or option A/B/C's projection where the shape changes
    out = ...branch...                  # F(x)
    out = self.branch_out(out)          # hook point: F(x) before the addition
    if not self.residual:
        return F.relu(out)              # the plain twin: the same layers, nothing added
    out = out + identity                # the skip connection
    return self.relu(out)               # post-activation blocks; pre-activation ones add nothing after

With ``residual=False`` (the plain twin) a block has exactly the same branch layers and no shortcut module at
all: nothing is added, and no projection exists. For option A (the paper's CIFAR default) the shortcut has no
parameters, so a plain twin has *exactly* the parameter count of its residual net. For options B and C the
plain twin has fewer parameters, by the projections it does not need.

``branch_out`` is a parameter-free ``nn.Identity``: register a forward hook on it to read the residual
branch's output F(x) (before the addition and before any final ReLU) without changing any state_dict key.
The sum is a new tensor, so a hook's saved F(x) is never overwritten (writing it into F(x)'s tensor, as
torchvision's ``out += identity`` does, measured within 1% of a step: BENCHMARKS.md).

The ablations of He et al. 2016 ("Identity Mappings", sec. 3-4) are block options too: a ``variant``
(:class:`~reslab.models.identity_mappings.ShortcutVariant`) replaces the identity ``h(x) = x`` of
:class:`BasicBlock` by Fig. 2's scaling, gating or dropout, one ``modulation`` module between the two shortcut
lines; :mod:`reslab.models.identity_mappings` also holds those modules and Fig. 4's orders of BN and ReLU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from reslab.errors import ConfigError

if TYPE_CHECKING:
    from reslab.models.identity_mappings import ShortcutVariant

Shortcut = Literal["A", "B", "C"]
ShortcutPad = Literal["after", "both"]
Norm = Literal["batch"] | None
BranchScale = Literal["rezero", "sqrt_depth", "fixup"] | None
SHORTCUTS: tuple[str, ...] = ("A", "B", "C")
SHORTCUT_PADS: tuple[str, ...] = ("after", "both")
BRANCH_SCALES: tuple[str, ...] = ("rezero", "sqrt_depth", "fixup")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (the following BN has one)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias, used by bottlenecks and projection shortcuts."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Option A (section 4.2): identity with strided subsampling and zero-padded channels; no parameters.

    The paper does not say where the zero channels go. ``pad="after"`` (reslab's default) appends them, so
    input channel c stays channel c; ``pad="both"`` puts half before and half after, as the widely used
    akamaster/pytorch_resnet_cifar10 nets do (``planes//4`` on each side when the channels double). The two
    add the identity to different output channels, so weights trained with one give other outputs with the
    other: build the model with the convention its weights were trained with.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, *, pad: ShortcutPad = "after") -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ConfigError(
                f"option A shortcut cannot shrink channels ({in_planes} -> {out_planes}); use B"
            )
        if pad not in SHORTCUT_PADS:
            raise ConfigError(f"unknown shortcut_pad {pad!r}; use 'after' (reslab) or 'both' (akamaster)")
        self.extra = out_planes - in_planes
        self.stride = stride
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            # (B, C_in, ceil(H/s), ceil(W/s)): the same positions the strided conv of the branch reads
            x = x[:, :, :: self.stride, :: self.stride]
        before = self.extra // 2 if self.pad == "both" else 0
        return F.pad(x, (0, 0, 0, 0, before, self.extra - before))  # (B, C_out, H', W'): zero channels

    def extra_repr(self) -> str:
        return f"pad_channels={self.extra}, stride={self.stride}, pad={self.pad!r}"


def make_shortcut(
    in_planes: int,
    out_planes: int,
    stride: int,
    option: Shortcut,
    *,
    with_bn: bool = True,
    pad: ShortcutPad = "after",
) -> nn.Module | None:
    """The shortcut module for one block, or ``None`` for the plain identity.

    A: identity, or :class:`PadShortcut` (zero channels placed as ``pad`` says) where the shape changes.
    B: identity, or a 1x1 conv + BN projection where the shape changes (torchvision's ``downsample``).
    C: a projection on every shortcut.
    Pre-activation blocks pass ``with_bn=False``: their projection reads an input already BN-ReLU'd.
    """
    if option not in SHORTCUTS:
        raise ConfigError(f"unknown shortcut option {option!r}; use one of A, B, C (paper section 3.3)")
    changes_shape = stride != 1 or in_planes != out_planes
    if option == "A":
        return PadShortcut(in_planes, out_planes, stride, pad=pad) if changes_shape else None
    if option == "B" and not changes_shape:
        return None
    layers: list[nn.Module] = [conv1x1(in_planes, out_planes, stride)]
    if with_bn:
        layers.append(nn.BatchNorm2d(out_planes))
    return nn.Sequential(*layers)  # keys downsample.0 / downsample.1, as torchvision


class ResidualDenseBlock(nn.Module):
    """The lecture's dense block: two Linear layers, ``a[l+2] = relu(z[l+2] + a[l])``; plain ``relu(z[l+2])``.

    ``z[l+1] = W1 a[l] + b1``, ``a[l+1] = relu(z[l+1])``, ``z[l+2] = W2 a[l+1] + b2``. With ``norm="batch"``
    a BatchNorm1d follows each Linear (whose bias is then dropped as redundant).

    ``branch_scale`` keeps the residual stream's scale bounded in nets of hundreds of blocks without
    normalisation. With the lecture's equations and PyTorch's default init each branch adds ~1/18 of the
    stream's second moment, so its RMS grows ~3% per block (measured: x1,500 over 256 blocks, x470,000 over
    500, and the first SGD step gives NaN). It applies to residual blocks only; a plain block has no branch
    to scale and ignores it, as ``zero_init_residual``.

    - ``None``: the lecture's equations.
    - ``"rezero"``: ``a[l+2] = relu(alpha * z[l+2] + a[l])``, one learnable scalar ``alpha`` per block that
      starts at 0 (ReZero, Bachlechner et al. 2020; SkipInit, De & Smith 2020): every block starts as the
      identity and the net learns how much of each branch to let in.
    - ``"sqrt_depth"``: ``a[l+2] = relu(z[l+2] / sqrt(L) + a[l])`` for a net of ``L = num_blocks`` blocks: a
      fixed factor, so the sum of L branches has the variance of one.
    - ``"fixup"``: the lecture's equations; only the initialisation changes (Fixup, see ``init_weights``).
    """

    def __init__(
        self,
        width: int,
        *,
        residual: bool = True,
        norm: Norm = None,
        branch_scale: BranchScale = None,
        num_blocks: int = 1,
    ) -> None:
        super().__init__()
        if norm not in (None, "batch"):
            raise ConfigError(f"unknown norm {norm!r}; use None or 'batch'")
        if branch_scale is not None and branch_scale not in BRANCH_SCALES:
            raise ConfigError(f"unknown branch_scale {branch_scale!r}; use None, {', '.join(BRANCH_SCALES)}")
        if branch_scale == "fixup" and norm is not None:
            raise ConfigError(
                "branch_scale='fixup' is an init for nets without normalisation; drop norm='batch'"
            )
        if num_blocks < 1:
            raise ConfigError(f"num_blocks must be >= 1, got {num_blocks}")
        self.residual = residual
        self.branch_scale: BranchScale = branch_scale if residual else None
        bias = norm is None
        self.fc1 = nn.Linear(width, width, bias=bias)
        self.bn1 = nn.BatchNorm1d(width) if norm else nn.Identity()
        self.fc2 = nn.Linear(width, width, bias=bias)
        self.bn2 = nn.BatchNorm1d(width) if norm else nn.Identity()
        self.relu = nn.ReLU()
        # ReZero's alpha (a 0-dim parameter, 0 at init); absent otherwise, so no state_dict key changes.
        self.register_parameter(
            "alpha", nn.Parameter(torch.zeros(())) if self.branch_scale == "rezero" else None
        )
        self.branch_mult = num_blocks**-0.5 if self.branch_scale == "sqrt_depth" else 1.0
        self.branch_out = nn.Identity()
        self.downsample = None  # width never changes: the shortcut is always the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x = a[l]: (B, width)
        identity = x
        out = self.relu(self.bn1(self.fc1(x)))  # a[l+1]
        out = self.bn2(self.fc2(out))  # z[l+2]
        if self.alpha is not None:
            out = self.alpha * out  # ReZero: alpha * z[l+2]
        elif self.branch_mult != 1.0:
            out = out * self.branch_mult  # z[l+2] / sqrt(L)
        out = self.branch_out(out)  # what the block adds to the stream
        if self.residual:
            out = out + identity  # z[l+2] + a[l]
        return self.relu(out)  # a[l+2]

    def zero_init_last(self) -> None:
        """Zero the branch's last layer so the block starts as the identity (on non-negative input)."""
        if self.alpha is not None:
            raise ConfigError(
                "zero_init_residual with branch_scale='rezero' would freeze every branch (alpha and its "
                "last layer both 0 give both zero gradients); rezero already starts at the identity: drop one"
            )
        if isinstance(self.bn2, nn.BatchNorm1d):
            nn.init.zeros_(self.bn2.weight)
        else:
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

    def extra_repr(self) -> str:
        return "" if self.branch_scale is None else f"branch_scale={self.branch_scale!r}"


class ResidualUnit(nn.Module):
    """What every convolutional unit shares: the shortcut path ``h(x)`` and the ``branch_out`` tap.

    ``h`` is the identity, or option A/B/C's projection where the shape changes; ``modulation`` (He et al.
    2016, Fig. 2) rescales h(x) and F(x) before the sum. A plain twin (``residual=False``) has no shortcut
    path at all. The sum itself is written out in each block's ``forward``.
    """

    expansion: int = 1  # output channels per "planes" (4 for bottlenecks)
    residual: bool
    downsample: nn.Module | None
    modulation: nn.Module | None

    def zero_init_last(self) -> None:
        """Zero the branch's last BN (or conv) so that the unit starts as its shortcut (Goyal et al. 2017)."""
        raise NotImplementedError

    def _init_paths(
        self,
        residual: bool,
        in_planes: int,
        out_planes: int,
        stride: int,
        shortcut: Shortcut,
        pad: ShortcutPad,
        *,
        with_bn: bool = True,
        variant: ShortcutVariant | None = None,
    ) -> None:
        # Called where the subclass registered its shortcut before: parameter order (and so the optimizer's
        # state in older checkpoints, and the seeded initialisation) is unchanged.
        self.residual = residual
        self.downsample = (
            make_shortcut(in_planes, out_planes, stride, shortcut, with_bn=with_bn, pad=pad)
            if residual
            else None
        )
        self.modulation = _modulation(variant, residual, in_planes, out_planes, stride)
        self.branch_out = nn.Identity()

    def shortcut(self, x: torch.Tensor, pre: torch.Tensor | None = None) -> torch.Tensor:
        """``h(x)``: ``x`` itself, or its projection; a pre-activation unit's projection reads ``pre``."""
        if self.downsample is None:
            return x
        return self.downsample(x if pre is None else _shortcut_input(self.downsample, x, pre))


class BasicBlock(ResidualUnit):
    """Two 3x3 convs, post-activation (He et al. 2015, Fig. 2 / Fig. 5 left): ``relu(F(x) + x)``."""

    expansion: int = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        residual: bool = True,
        shortcut: Shortcut = "B",
        shortcut_pad: ShortcutPad = "after",
        variant: ShortcutVariant | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        # In place, as torchvision: only on tensors made here (BN outputs, the sum), never on branch_out's
        # output, which a hook may have saved (the plain twin's last ReLU is out of place, see forward).
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self._init_paths(residual, in_planes, planes, stride, shortcut, shortcut_pad, variant=variant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W)
        identity = self.shortcut(x)  # (B, C_out, H', W')
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))  # F(x): (B, C_out, H', W')
        out = self.branch_out(out)
        if not self.residual:
            return F.relu(out)  # not in place: a hook's saved F(x) must not be overwritten
        if self.modulation is not None:  # He et al. 2016, Fig. 2: h(x) and F(x) rescaled
            identity, out = self.modulation(x, identity, out)
        out = out + identity  # the skip connection: F(x) + x
        return self.relu(out)  # a[l+2] = g(F(x) + x)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(ResidualUnit):
    """1x1 reduce, 3x3, 1x1 expand (x4), post-activation (He et al. 2015, Fig. 5 right).

    ``stride_in_1x1=True`` puts the stride in the first 1x1 as the paper does (v1); the default puts it in the
    3x3 as torchvision does (v1.5: same parameters, more multiply-adds, better accuracy).
    """

    expansion: int = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        residual: bool = True,
        shortcut: Shortcut = "B",
        shortcut_pad: ShortcutPad = "after",
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_planes, planes, s1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, s3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        # In place, as torchvision: only on tensors made here (BN outputs, the sum), never on branch_out's
        # output, which a hook may have saved (the plain twin's last ReLU is out of place, see forward).
        self.relu = nn.ReLU(inplace=True)
        self._init_paths(residual, in_planes, out_planes, stride, shortcut, shortcut_pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W)
        identity = self.shortcut(x)  # (B, 4*planes, H', W')
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))  # F(x): (B, 4*planes, H', W')
        out = self.branch_out(out)
        if not self.residual:
            return F.relu(out)  # not in place: a hook's saved F(x) must not be overwritten
        out = out + identity  # the skip connection: F(x) + x
        return self.relu(out)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


class PreActBasicBlock(ResidualUnit):
    """Pre-activation basic block (He et al. 2016, Fig. 1b): ``x + F(x)`` with BN-ReLU-conv inside F.

    Nothing follows the addition. A projection shortcut reads the pre-activated input (as in the paper's
    code), an option A shortcut reads ``x`` itself. ``dropout > 0`` puts dropout between the two convs,
    after the second ReLU (Wide ResNets, Zagoruyko & Komodakis 2016, section 2.4).
    """

    expansion: int = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        residual: bool = True,
        shortcut: Shortcut = "B",
        shortcut_pad: ShortcutPad = "after",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()  # no parameters, no keys
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU()
        self._init_paths(residual, in_planes, planes, stride, shortcut, shortcut_pad, with_bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W)
        pre = self.relu(self.bn1(x))
        identity = self.shortcut(x, pre)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))  # F(x): (B, C_out, H', W')
        out = self.branch_out(out)
        if not self.residual:
            return out
        out = out + identity  # the skip connection: x + F(x), nothing after it
        return out

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)  # no BN ends a pre-activation branch (as timm's zero_init_last)


class PreActBottleneck(ResidualUnit):
    """Pre-activation bottleneck (He et al. 2016; ResNet-164/1001 on CIFAR): BN-ReLU before each conv."""

    expansion: int = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        residual: bool = True,
        shortcut: Shortcut = "B",
        shortcut_pad: ShortcutPad = "after",
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, planes, s1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, s3)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.relu = nn.ReLU()
        self._init_paths(residual, in_planes, out_planes, stride, shortcut, shortcut_pad, with_bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W)
        pre = self.relu(self.bn1(x))
        identity = self.shortcut(x, pre)
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))  # F(x): (B, 4*planes, H', W')
        out = self.branch_out(out)
        if not self.residual:
            return out
        out = out + identity  # the skip connection: x + F(x), nothing after it
        return out

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)


def _shortcut_input(shortcut: nn.Module, x: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    # A projection shares the block's BN-ReLU (He et al. 2016 code); option A pads the raw input.
    return x if isinstance(shortcut, PadShortcut) else pre


def _modulation(
    variant: ShortcutVariant | None, residual: bool, in_planes: int, planes: int, stride: int
) -> nn.Module | None:
    # A plain twin has no shortcut to modulate; identity and conv1x1 need no module.
    return variant.modulation(in_planes, planes, stride) if residual and variant is not None else None
