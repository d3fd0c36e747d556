"""The model zoo as data: one :class:`ModelSpec` line per variant, and ``build_model`` to build any of them.

Registered names (``list_models()``): the lecture's MLPs ``resmlp4 … resmlp64``, the CIFAR nets of He et al.
2015 section 4.2 ``resnet20 … resnet1202``, the pre-activation nets of He et al. 2016 ``preact_resnet164``,
``preact_resnet1001``, the ImageNet nets of Table 1 ``resnet18 … resnet152``, and every one's plain twin
(``plain20``, ``preact_plain164``, ``plain18``, ``plainmlp4`` …).

Any depth of a family also builds by name pattern, without registering:
``resnet<d>``/``plain<d>`` (d = 6n+2, CIFAR; or 18/34/50/101/152, ImageNet);
``cifar_resnet<d>``/``cifar_plain<d>`` (CIFAR even where d is an ImageNet depth, e.g. cifar_resnet50);
``preact_resnet<d>``/``preact_plain<d>`` (d = 9n+2); ``resmlp<d>``/``plainmlp<d>`` (d >= 1 dense blocks).
"""

from __future__ import annotations

import contextlib
import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

from reslab.errors import ConfigError
from reslab.models.blocks import SHORTCUTS, Norm, Shortcut, ShortcutPad
from reslab.models.nets import (
    CifarResNet,
    GlobalPool,
    ResidualMLP,
    ResNet,
    StagedNet,
    cifar_blocks_per_stage,
)

Family = Literal["mlp", "cifar", "cifar_preact", "imagenet"]
FAMILIES: tuple[str, ...] = ("mlp", "cifar", "cifar_preact", "imagenet")

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

    family: Family  # the constructor: ResidualMLP, CifarResNet (basic / preact bottleneck), ResNet
    depth: int  # weighted layers as the paper counts them; for "mlp", the number of dense blocks
    residual: bool = True  # False: the plain twin, same layers without the shortcuts
    shortcut: Shortcut | None = None  # None: the family's default (A for CIFAR basic, B otherwise)
    stride_in_1x1: bool = False  # bottlenecks only: True = paper v1, False = v1.5 (torchvision)
    width: int = 64  # "mlp" only: units per dense layer (the lecture's nets are narrow)

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


_MLP, _CIFAR, _PRE, _IN = "mlp", "cifar", "cifar_preact", "imagenet"
_REGISTRY: dict[str, ModelSpec] = {
    "resmlp4": ModelSpec(_MLP, 4),
    "resmlp8": ModelSpec(_MLP, 8),
    "resmlp16": ModelSpec(_MLP, 16),
    "resmlp32": ModelSpec(_MLP, 32),
    "resmlp64": ModelSpec(_MLP, 64),
    "plainmlp4": ModelSpec(_MLP, 4, residual=False),
    "plainmlp8": ModelSpec(_MLP, 8, residual=False),
    "plainmlp16": ModelSpec(_MLP, 16, residual=False),
    "plainmlp32": ModelSpec(_MLP, 32, residual=False),
    "plainmlp64": ModelSpec(_MLP, 64, residual=False),
    "resnet20": ModelSpec(_CIFAR, 20),
    "resnet32": ModelSpec(_CIFAR, 32),
    "resnet44": ModelSpec(_CIFAR, 44),
    "resnet56": ModelSpec(_CIFAR, 56),
    "resnet110": ModelSpec(_CIFAR, 110),
    "resnet1202": ModelSpec(_CIFAR, 1202),
    "plain20": ModelSpec(_CIFAR, 20, residual=False),
    "plain32": ModelSpec(_CIFAR, 32, residual=False),
    "plain44": ModelSpec(_CIFAR, 44, residual=False),
    "plain56": ModelSpec(_CIFAR, 56, residual=False),
    "plain110": ModelSpec(_CIFAR, 110, residual=False),
    "plain1202": ModelSpec(_CIFAR, 1202, residual=False),
    "preact_resnet164": ModelSpec(_PRE, 164),
    "preact_resnet1001": ModelSpec(_PRE, 1001),
    "preact_plain164": ModelSpec(_PRE, 164, residual=False),
    "preact_plain1001": ModelSpec(_PRE, 1001, residual=False),
    "resnet18": ModelSpec(_IN, 18),
    "resnet34": ModelSpec(_IN, 34),
    "resnet50": ModelSpec(_IN, 50),
    "resnet101": ModelSpec(_IN, 101),
    "resnet152": ModelSpec(_IN, 152),
    "plain18": ModelSpec(_IN, 18, residual=False),
    "plain34": ModelSpec(_IN, 34, residual=False),
    "plain50": ModelSpec(_IN, 50, residual=False),
    "plain101": ModelSpec(_IN, 101, residual=False),
    "plain152": ModelSpec(_IN, 152, residual=False),
}

_PATTERNS: tuple[tuple[re.Pattern[str], Family | None], ...] = (
    (re.compile(r"(resnet|plain)(\d+)"), None),  # ImageNet depth, else CIFAR
    (re.compile(r"cifar_(resnet|plain)(\d+)"), "cifar"),
    (re.compile(r"preact_(resnet|plain)(\d+)"), "cifar_preact"),
    (re.compile(r"(res|plain)mlp(\d+)"), "mlp"),
)


def list_models() -> list[str]:
    """Every registered model name, in registration order (family by family, residual before plain)."""
    return list(_REGISTRY)


def register_model(name: str, spec: ModelSpec, *, overwrite: bool = False) -> None:
    """Register a variant as one line of data.

    Example: ``register_model("resnet20b", ModelSpec("cifar", 20, shortcut="B"))``.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise ConfigError(f"model name {name!r} must be letters, digits, '_', '.' or '-'")
    if name in _REGISTRY and not overwrite:
        raise ConfigError(f"model {name!r} is already registered; pick another name or pass overwrite=True")
    _validate(spec, name)
    _REGISTRY[name] = spec


def model_info(name: str) -> ModelSpec:
    """The spec of a registered name or of a name pattern (``resnet26``, ``preact_plain83``, ``resmlp5``)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    for pattern, family in _PATTERNS:
        m = pattern.fullmatch(name)
        if m is None:
            continue
        residual = m.group(1) in ("resnet", "res")
        depth = int(m.group(2))
        fam: Family = family or ("imagenet" if depth in IMAGENET_LAYERS else "cifar")
        spec = ModelSpec(fam, depth, residual=residual)
        _validate(spec, name)
        return spec
    close = difflib.get_close_matches(name, list_models(), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "run `reslab models` for the list"
    raise ConfigError(f"unknown model {name!r}; {hint}")


def _validate(spec: ModelSpec, name: str) -> None:
    if spec.family not in FAMILIES:
        raise ConfigError(f"{name}: unknown family {spec.family!r}; use one of {', '.join(FAMILIES)}")
    if spec.shortcut is not None and spec.shortcut not in SHORTCUTS:
        raise ConfigError(f"{name}: unknown shortcut {spec.shortcut!r}; use one of A, B, C")
    if spec.family == "mlp":
        if spec.depth < 1 or spec.width < 1:
            raise ConfigError(f"{name}: an MLP needs depth >= 1 dense blocks and width >= 1")
    elif spec.family == "imagenet":
        if spec.depth not in IMAGENET_LAYERS:
            valid = ", ".join(map(str, IMAGENET_LAYERS))
            raise ConfigError(
                f"{name}: depth {spec.depth} is not an ImageNet ResNet; valid depths are {valid}"
            )
    else:
        try:
            cifar_blocks_per_stage(spec.depth, bottleneck=spec.family == "cifar_preact")
        except ConfigError as err:
            extra = " (or 18, 34, 50, 101, 152 for ImageNet)" if spec.family == "cifar" else ""
            raise ConfigError(f"{name}: {err}{extra}") from None


def build_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    in_features: int | None = None,
    input_shape: Sequence[int] | None = None,
    shortcut: Shortcut | None = None,
    shortcut_pad: ShortcutPad | None = None,
    global_pool: GlobalPool | None = None,
    stride_in_1x1: bool | None = None,
    zero_init_residual: bool = False,
    width: int | None = None,
    norm: Norm = None,
    activation_checkpointing: bool = False,
    device: torch.device | str | None = None,
    **unknown: object,
) -> StagedNet:
    """Build a model by name (see :func:`list_models` and the name patterns in this module's docstring).

    Args:
        name: e.g. ``"resnet20"`` (He et al. 2015, section 4.2) or its plain twin ``"plain20"``.
        num_classes: classifier outputs; default 10 (1000 for the ImageNet family).
        in_channels: input image channels (conv nets); default 3.
        in_features: flattened input size (MLPs); default 784 = 1x28x28.
        input_shape: the input without batch, e.g. ``(1, 28, 28)``: sets in_channels (conv) or in_features
            (MLP, the product), so a caller that knows its data needs not know the family.
        shortcut: "A" | "B" | "C" (paper section 3.3); default A for CIFAR basic, B otherwise.
            It has no effect on plain twins, which have no shortcut.
        shortcut_pad, global_pool: CIFAR nets only, no parameters: where option A puts its zero channels
            ("after", default, or "both") and how the head pools ("adaptive", default, or "window"). Weights
            of akamaster/pytorch_resnet_cifar10 need "both" and "window" for bit-identical outputs
            (``reslab.models.weights.inspect_weights(path).model_kwargs`` says which a file needs).
        stride_in_1x1: bottleneck nets only: True is the paper's v1, False (default) torchvision's v1.5.
        zero_init_residual: zero the last layer of each residual branch (ignored for plain twins).
        width, norm: MLPs only: units per dense layer (default 64) and None | "batch".
        activation_checkpointing: recompute each block in the backward pass to save memory (training only).
        device: build the parameters directly there (``"meta"`` costs no memory or time: counting, summaries).

    Raises:
        ConfigError: unknown name (with close matches), impossible depth, or an argument that does not apply.
    """
    if unknown:
        valid = "num_classes, in_channels, in_features, input_shape, shortcut, shortcut_pad, global_pool, "
        valid += "stride_in_1x1, zero_init_residual, width, norm, activation_checkpointing, device"
        raise ConfigError(
            f"build_model({name!r}): unknown argument(s) {', '.join(sorted(unknown))}; valid: {valid}"
        )
    spec = model_info(name)
    if shortcut is not None:
        spec = replace(spec, shortcut=shortcut)
    if stride_in_1x1 is not None:
        spec = replace(spec, stride_in_1x1=stride_in_1x1)
    if width is not None:
        spec = replace(spec, width=width)
    _validate(spec, name)
    classes = spec.default_num_classes if num_classes is None else num_classes
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    with torch.device(device) if device is not None else contextlib.nullcontext():
        if spec.family == "mlp":
            if any(a is not None for a in (shortcut, shortcut_pad, global_pool, stride_in_1x1)):
                raise ConfigError(
                    f"{name} is an MLP: shortcut, shortcut_pad, global_pool and stride_in_1x1 "
                    "apply only to conv nets"
                )
            return ResidualMLP(
                spec.depth,
                spec.width,
                _mlp_features(name, in_features, in_channels, shape),
                classes,
                residual=spec.residual,
                norm=norm,
                zero_init_residual=zero_init_residual,
                activation_checkpointing=activation_checkpointing,
            )
        if in_features is not None or width is not None or norm is not None:
            raise ConfigError(f"{name} is a conv net: in_features, width and norm apply only to MLPs")
        if stride_in_1x1 and not spec.has_bottleneck:
            raise ConfigError(f"{name} has basic blocks: stride_in_1x1 applies only to bottleneck nets")
        if spec.family == "imagenet" and (shortcut_pad is not None or global_pool is not None):
            raise ConfigError(
                f"{name} is an ImageNet net: shortcut_pad and global_pool apply only to CIFAR nets"
            )
        channels = _conv_channels(name, in_channels, shape)
        common = dict(
            num_classes=classes,
            in_channels=channels,
            residual=spec.residual,
            stride_in_1x1=spec.stride_in_1x1,
            zero_init_residual=zero_init_residual,
            activation_checkpointing=activation_checkpointing,
        )
        if spec.family == "imagenet":
            block, layers = IMAGENET_LAYERS[spec.depth]
            return ResNet(block, layers, shortcut=spec.shortcut or "B", **common)  # type: ignore[arg-type]
        preact = spec.family == "cifar_preact"
        return CifarResNet(
            spec.depth,
            bottleneck=preact,
            preact=preact,
            shortcut=spec.shortcut,
            shortcut_pad=shortcut_pad or "after",
            global_pool=global_pool or "adaptive",
            **common,  # type: ignore[arg-type]
        )


def cifar_resnet(
    depth: int,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    residual: bool = True,
    shortcut: Shortcut | None = None,
    bottleneck: bool = False,
    preact: bool = False,
    zero_init_residual: bool = False,
    activation_checkpointing: bool = False,
) -> CifarResNet:
    """A CIFAR ResNet of any depth 6n+2 (basic) or 9n+2 (``bottleneck=True``), He et al. 2015 section 4.2.

    ``residual=False`` gives the plain twin; ``preact=True`` the pre-activation form (He et al. 2016).
    """
    return CifarResNet(
        depth,
        num_classes=num_classes,
        in_channels=in_channels,
        residual=residual,
        bottleneck=bottleneck,
        preact=preact,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        activation_checkpointing=activation_checkpointing,
    )


def _mlp_features(
    name: str, in_features: int | None, in_channels: int | None, shape: tuple[int, ...] | None
) -> int:
    from_shape = None if shape is None else math.prod(shape)
    if in_features is not None and from_shape is not None and in_features != from_shape:
        raise ConfigError(f"{name}: in_features={in_features} disagrees with input_shape={shape}")
    if shape is not None and in_channels is not None and len(shape) == 3 and shape[0] != in_channels:
        raise ConfigError(f"{name}: in_channels={in_channels} disagrees with input_shape={shape}")
    if in_features is None and from_shape is None and in_channels is not None:
        raise ConfigError(
            f"{name} flattens its input: pass in_features=C*H*W or input_shape=(C, H, W), not in_channels"
        )
    return in_features or from_shape or 784


def _conv_channels(name: str, in_channels: int | None, shape: tuple[int, ...] | None) -> int:
    if shape is not None:
        if len(shape) != 3:
            raise ConfigError(f"{name} takes images: input_shape must be (C, H, W), got {shape}")
        if in_channels is not None and in_channels != shape[0]:
            raise ConfigError(f"{name}: in_channels={in_channels} disagrees with input_shape={shape}")
        return shape[0]
    channels = 3 if in_channels is None else in_channels
    if channels < 1:
        raise ConfigError(f"{name}: in_channels must be >= 1, got {channels}")
    return channels


def parameter_count(name: str, *, num_classes: int | None = None, in_channels: int | None = None) -> int:
    """Parameters of ``build_model(name, ...)`` from the architecture's formula, without building it.

    ``reslab models`` lists the whole zoo this way in milliseconds; the tests check it against the built
    models. Conv: cin*cout*k*k (no bias); BN: 2*C; Linear: in*out + out.
    """
    spec = model_info(name)
    k = spec.default_num_classes if num_classes is None else num_classes
    c = 3 if in_channels is None else in_channels
    if spec.family == "mlp":
        if in_channels is not None:
            raise ConfigError(
                f"{name} flattens its input (784 features by default): in_channels does not apply"
            )
        w = spec.width
        return 784 * w + w + spec.depth * 2 * (w * w + w) + w * k + k
    if spec.family == "imagenet":
        kind, layers = IMAGENET_LAYERS[spec.depth]
        total, cin = c * 64 * 49 + 2 * 64, 64  # 7x7 stem conv + BN
        plan = [(p, n, 1 if i == 0 else 2) for i, (p, n) in enumerate(zip((64, 128, 256, 512), layers))]
        bottleneck, preact, option = kind == "bottleneck", False, spec.shortcut or "B"
    else:
        preact = bottleneck = spec.family == "cifar_preact"
        n = cifar_blocks_per_stage(spec.depth, bottleneck=bottleneck)
        total, cin = c * 16 * 9 + (0 if preact else 2 * 16), 16  # 3x3 stem conv (+ BN if post-activation)
        plan = [(16, n, 1), (32, n, 2), (64, n, 2)]
        option = spec.shortcut or ("B" if bottleneck else "A")
    for planes, n, stride in plan:
        for j in range(n):
            cout = planes * (4 if bottleneck else 1)
            if bottleneck:  # 1x1, 3x3, 1x1 and their BNs (pre-activation: BN on the block input instead)
                total += cin * planes + 9 * planes * planes + planes * cout + 2 * (2 * planes)
                total += 2 * cin if preact else 2 * cout
            else:
                total += (
                    9 * cin * planes + 9 * planes * planes + 2 * planes + (2 * cin if preact else 2 * planes)
                )
            changes = (stride if j == 0 else 1) != 1 or cin != cout
            if spec.residual and (option == "C" or (option == "B" and changes)):
                total += cin * cout + (0 if preact else 2 * cout)  # projection (+ BN if post-activation)
            cin = cout
    return total + (2 * cin if preact else 0) + cin * k + k  # final BN of pre-activation nets, then fc
