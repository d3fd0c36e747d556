"""Variants as data: :class:`ModelSpec`, the families, the depth and width rules, and the parameter formula.

The registry (:mod:`reslab.models.registry`) names specs and builds them; this module only describes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reslab.errors import ConfigError
from reslab.models.blocks import SHORTCUTS, BranchScale, Norm, Shortcut
from reslab.models.cifar import check_widen, cifar_blocks_per_stage, widened, wrn_blocks_per_stage
from reslab.models.identity_mappings import (
    PLACEMENTS,
    PREACT_PLACEMENTS,
    SHORTCUT_KINDS,
    Placement,
    ShortcutKind,
)

Family = Literal["mlp", "cifar", "cifar_preact", "wrn", "imagenet"]
FAMILIES: tuple[str, ...] = ("mlp", "cifar", "cifar_preact", "wrn", "imagenet")
WIDENABLE: tuple[str, ...] = ("cifar", "cifar_preact", "wrn")  # the 16/32/64-channel families

# He et al. 2015, Table 1: block type and blocks per stage of each ImageNet depth.
IMAGENET_LAYERS: dict[int, tuple[Literal["basic", "bottleneck"], tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


@dataclass(frozen=True)
class ModelSpec:
    """One variant of the zoo, as data (register it with :func:`register_model`)."""

    family: Family  # the constructor: ResidualMLP, CifarResNet (6n+2, 9n+2), WideResNet, ResNet
    depth: int  # weighted layers as the paper counts them; for "mlp", the number of dense blocks
    residual: bool = True  # False: the plain twin, same layers without the shortcuts
    shortcut: Shortcut | None = None  # None: the family's default (A for CIFAR basic, B otherwise)
    stride_in_1x1: bool = False  # bottlenecks only: True = paper v1, False = v1.5 (torchvision)
    width: int = 64  # "mlp" only: units per dense layer (the lecture's nets are narrow)
    widen: float = 1.0  # CIFAR families and "wrn": channel multiplier k (stages of 16k/32k/64k channels)
    dropout: float = 0.0  # "wrn" only: dropout between the two convs of each block (the paper: 0.3)
    shortcut_kind: ShortcutKind = "identity"  # "cifar" residual nets: h(x) of He et al. 2016, Fig. 2
    placement: Placement = "original"  # "cifar" residual nets: BN/ReLU order of He et al. 2016, Fig. 4

    @property
    def kind(self) -> str:
        return "residual" if self.residual else "plain"

    @property
    def default_num_classes(self) -> int:
        return 1000 if self.family == "imagenet" else 10

    @property
    def has_bottleneck(self) -> bool:
        return self.family == "cifar_preact" or (
            self.family == "imagenet" and IMAGENET_LAYERS.get(self.depth, ("basic",))[0] == "bottleneck"
        )


# The deepest nets of the papers are 1202 layers (He et al. 2015, Table 6) and 1001 (He et al. 2016); the
# lecture's dense nets go to 500 blocks. Ten thousand leaves wide room and keeps every check, and the
# meta-device build behind it, to seconds: a depth of 6,000,002 is refused before anything grows with it.
MAX_DEPTH = 10_000


def validate_spec(spec: ModelSpec, name: str) -> None:
    """Check a spec; raise :class:`ConfigError` with a one-line message that starts with ``name``."""
    if isinstance(spec.depth, int) and spec.depth > MAX_DEPTH:
        raise ConfigError(f"{name}: depth {spec.depth:,} is beyond the {MAX_DEPTH:,} layers reslab builds")
    if spec.family not in FAMILIES:
        raise ConfigError(f"{name}: unknown family {spec.family!r}; use one of {', '.join(FAMILIES)}")
    if spec.shortcut is not None and spec.shortcut not in SHORTCUTS:
        raise ConfigError(f"{name}: unknown shortcut {spec.shortcut!r}; use one of A, B, C")
    if spec.widen != 1.0 and spec.family not in WIDENABLE:
        hint = "; an MLP takes width=units" if spec.family == "mlp" else ""
        raise ConfigError(f"{name}: widen applies to the CIFAR families and wrn (16/32/64 channels){hint}")
    try:
        check_widen(spec.widen)
    except ConfigError as err:
        raise ConfigError(f"{name}: {err}") from None
    p = spec.dropout
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1:
        raise ConfigError(f"{name}: dropout must be a probability in [0, 1), got {p!r}")
    if p != 0 and spec.family != "wrn":
        raise ConfigError(f"{name}: dropout applies to Wide ResNets (wrn<d>_<k>) only")
    _validate_ablation(spec, name)
    if spec.family == "mlp":
        if spec.depth < 1 or spec.width < 1:
            raise ConfigError(f"{name}: an MLP needs depth >= 1 dense blocks and width >= 1")
    elif spec.family == "imagenet":
        if spec.depth not in IMAGENET_LAYERS:
            valid = ", ".join(map(str, IMAGENET_LAYERS))
            raise ConfigError(
                f"{name}: depth {spec.depth} is not an ImageNet ResNet; valid depths are {valid}"
            )
    elif spec.family == "wrn":
        try:
            wrn_blocks_per_stage(spec.depth)
        except ConfigError as err:
            raise ConfigError(f"{name}: {err}") from None
    else:
        try:
            cifar_blocks_per_stage(spec.depth, bottleneck=spec.family == "cifar_preact")
        except ConfigError as err:
            extra = " (or 18, 34, 50, 101, 152 for ImageNet)" if spec.family == "cifar" else ""
            raise ConfigError(f"{name}: {err}{extra}") from None


def _validate_ablation(spec: ModelSpec, name: str) -> None:
    """He et al. 2016's shortcut kinds and BN/ReLU orders: residual CIFAR basic-block nets only."""
    if spec.shortcut_kind not in SHORTCUT_KINDS:
        raise ConfigError(
            f"{name}: unknown shortcut_kind {spec.shortcut_kind!r}; use {', '.join(SHORTCUT_KINDS)}"
        )
    if spec.placement not in PLACEMENTS:
        raise ConfigError(f"{name}: unknown placement {spec.placement!r}; use one of {', '.join(PLACEMENTS)}")
    given = [
        f"{key}={value!r}"
        for key, value, default in (
            ("shortcut_kind", spec.shortcut_kind, "identity"),
            ("placement", spec.placement, "original"),
        )
        if value != default
    ]
    if given and spec.family != "cifar":
        raise ConfigError(
            f"{name}: {', '.join(given)} applies to the CIFAR basic-block nets (resnet<d>, d = 6n+2) only"
        )
    if given and not spec.residual:
        raise ConfigError(
            f"{name} is a plain twin: it has no shortcut and no addition for {', '.join(given)}"
        )
    if spec.shortcut_kind == "conv1x1" and spec.shortcut not in (None, "C"):
        raise ConfigError(
            f"{name}: shortcut_kind='conv1x1' is a projection on every shortcut (option C); "
            f"drop shortcut={spec.shortcut!r}"
        )


def count_parameters_of(
    spec: ModelSpec,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    norm: Norm = None,
    branch_scale: BranchScale = None,
) -> int:
    """Parameters of the net ``spec`` describes, from the architecture's formula, without building it.

    Conv: cin*cout*k*k (no bias); BN: 2*C; Linear: in*out + out (no bias before a BN).
    """
    k = spec.default_num_classes if num_classes is None else num_classes
    c = 3 if in_channels is None else in_channels
    if spec.family == "mlp":
        if in_channels is not None:
            raise ConfigError(
                "an MLP flattens its input (784 features by default): in_channels does not apply"
            )
        w = spec.width
        block = 2 * (w * w + 2 * w) if norm == "batch" else 2 * (w * w + w)  # two Linear (+ BN) layers
        rezero = 1 if spec.residual and branch_scale == "rezero" else 0  # alpha
        return 784 * w + w + spec.depth * (block + rezero) + w * k + k
    if norm is not None or branch_scale is not None:
        raise ConfigError(f"a {spec.family} net is a conv net: norm and branch_scale apply only to MLPs")
    if spec.family == "imagenet":
        kind, layers = IMAGENET_LAYERS[spec.depth]
        total, cin = c * 64 * 49 + 2 * 64, 64  # 7x7 stem conv + BN
        plan = [(p, n, 1 if i == 0 else 2) for i, (p, n) in enumerate(zip((64, 128, 256, 512), layers))]
        return _staged_total(spec, total, cin, plan, k, bottleneck=kind == "bottleneck", preact=False)
    widths = [widened(base, spec.widen) for base in (16, 32, 64)]
    bottleneck = spec.family == "cifar_preact"
    preact = spec.family in ("cifar_preact", "wrn")
    if spec.family == "wrn":
        n, stem = wrn_blocks_per_stage(spec.depth), 16
    else:
        n, stem = cifar_blocks_per_stage(spec.depth, bottleneck=bottleneck), widths[0]
    total = c * stem * 9 + (0 if preact else 2 * stem)  # 3x3 stem conv (+ BN if post-activation)
    plan = [(widths[0], n, 1), (widths[1], n, 2), (widths[2], n, 2)]
    return _staged_total(spec, total, stem, plan, k, bottleneck=bottleneck, preact=preact)


def _staged_total(
    spec: ModelSpec,
    total: int,
    cin: int,
    plan: list[tuple[int, int, int]],
    k: int,
    *,
    bottleneck: bool,
    preact: bool,
) -> int:
    """``total`` (the stem) plus every block of ``plan`` (planes, blocks, stride per stage) and the head."""
    default = "B" if spec.family in ("imagenet", "wrn") or bottleneck else "A"
    option = "C" if spec.shortcut_kind == "conv1x1" else spec.shortcut or default
    unit_preact = preact or spec.placement == "full_preact"  # a BN on the block's input channels
    proj_bn = not (preact or spec.placement in PREACT_PLACEMENTS)  # pre-activation projections have none
    gated = spec.shortcut_kind in ("exclusive_gate", "shortcut_gate")
    first = True
    for planes, n, stride in plan:
        for j in range(n):
            cout = planes * (4 if bottleneck else 1)
            if bottleneck:  # 1x1, 3x3, 1x1 and their BNs (pre-activation: BN on the block input instead)
                total += cin * planes + 9 * planes * planes + planes * cout + 2 * (2 * planes)
                total += 2 * cin if preact else 2 * cout
            else:
                total += 9 * cin * planes + 9 * planes * planes + 2 * planes
                # full pre-activation: the first unit's input BN is the stem's (He et al. 2016, appendix)
                total += (0 if first and not preact else 2 * cin) if unit_preact else 2 * planes
            changes = (stride if j == 0 else 1) != 1 or cin != cout
            if spec.residual and (option == "C" or (option == "B" and changes)):
                total += cin * cout + (2 * cout if proj_bn else 0)  # projection (+ BN if post-activation)
            if spec.residual and gated:
                total += cin * cout + cout  # the gate's 1x1 conv and its bias b_g
            cin, first = cout, False
    return total + (2 * cin if unit_preact else 0) + cin * k + k  # final BN of pre-activation nets, then fc
