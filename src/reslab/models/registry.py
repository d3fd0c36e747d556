"""The model zoo as data: one :class:`ModelSpec` line per variant, and ``build_model`` to build any of them.

Registered names (``list_models()``): the lecture's MLPs ``resmlp4 … resmlp64``, the CIFAR nets of He et al.
2015 section 4.2 ``resnet20 … resnet1202``, the pre-activation nets of He et al. 2016 ``preact_resnet164``,
``preact_resnet1001``, the Wide ResNets of Zagoruyko & Komodakis 2016 ``wrn16_4 … wrn28_10`` (WRN-d-k as
``wrn<d>_<k>``), the ImageNet nets of Table 1 ``resnet18 … resnet152``, and every one's plain twin
(``plain20``, ``preact_plain164``, ``wrn_plain28_10``, ``plain18``, ``plainmlp4`` …).

Any depth of a family also builds by name pattern, without registering:
``resnet<d>``/``plain<d>`` (d = 6n+2, CIFAR; or 18/34/50/101/152, ImageNet);
``cifar_resnet<d>``/``cifar_plain<d>`` (CIFAR even where d is an ImageNet depth, e.g. cifar_resnet50);
``preact_resnet<d>``/``preact_plain<d>`` (d = 9n+2); ``wrn<d>_<k>``/``wrn_plain<d>_<k>`` (d = 6n+4, k > 0,
e.g. wrn16_0.5); ``resmlp<d>``/``plainmlp<d>`` (d >= 1 dense blocks).
"""

from __future__ import annotations

import contextlib
import difflib
import math
import re
from dataclasses import replace
from typing import Any

import torch

from reslab.errors import ConfigError
from reslab.models.blocks import BranchScale, Norm, Shortcut
from reslab.models.cifar import CifarResNet, WideResNet
from reslab.models.identity_mappings import Placement, ShortcutKind, ShortcutVariant
from reslab.models.nets import ResidualMLP, ResNet, StagedNet
from reslab.models.options import ModelOptions, model_options
from reslab.models.specs import FAMILIES as FAMILIES  # re-exported: `reslab models --family` lists them
from reslab.models.specs import (
    IMAGENET_LAYERS,
    MAX_DEPTH,
    Family,
    ModelSpec,
    count_parameters_of,
    validate_spec,
)

_MLP: Family = "mlp"
_CIFAR: Family = "cifar"
_PRE: Family = "cifar_preact"
_WRN: Family = "wrn"
_IN: Family = "imagenet"
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
    # Zagoruyko & Komodakis 2016, Tables 1-4: 2.7M, 8.9M, 11.0M, 36.5M parameters
    "wrn16_4": ModelSpec(_WRN, 16, widen=4),
    "wrn40_4": ModelSpec(_WRN, 40, widen=4),
    "wrn16_8": ModelSpec(_WRN, 16, widen=8),
    "wrn28_10": ModelSpec(_WRN, 28, widen=10),
    "wrn_plain16_4": ModelSpec(_WRN, 16, residual=False, widen=4),
    "wrn_plain40_4": ModelSpec(_WRN, 40, residual=False, widen=4),
    "wrn_plain16_8": ModelSpec(_WRN, 16, residual=False, widen=8),
    "wrn_plain28_10": ModelSpec(_WRN, 28, residual=False, widen=10),
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
    (re.compile(r"wrn(_plain)?(\d+)_(\d+(?:\.\d+)?)"), "wrn"),  # WRN-d-k; group 1 empty = residual
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
    validate_spec(spec, name)
    _REGISTRY[name] = spec


def model_info(name: str) -> ModelSpec:
    """The spec of a registered name or of a name pattern (``resnet26``, ``preact_plain83``, ``resmlp5``)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    for pattern, family in _PATTERNS:
        m = pattern.fullmatch(name)
        if m is None:
            continue
        digits = m.group(2)  # a 5,000-digit "depth" is too deep, not a ValueError of int()
        depth = int(digits) if len(digits) <= 18 else MAX_DEPTH + 1
        if family == "wrn":
            spec = ModelSpec("wrn", depth, residual=m.group(1) is None, widen=float(m.group(3)))
            validate_spec(spec, name)
            return spec
        residual = m.group(1) in ("resnet", "res")
        fam: Family = family or ("imagenet" if depth in IMAGENET_LAYERS else "cifar")
        spec = ModelSpec(fam, depth, residual=residual)
        validate_spec(spec, name)
        return spec
    close = difflib.get_close_matches(name, list_models(), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "run `reslab models` for the list"
    raise ConfigError(f"unknown model {name!r}; {hint}")


def build_model(name: str, **options: Any) -> StagedNet:
    """Build a model by name (see :func:`list_models` and the name patterns in this module's docstring).

    ``name`` is e.g. ``"resnet20"`` (He et al. 2015, section 4.2) or its plain twin ``"plain20"``;
    ``options`` are the fields of :class:`~reslab.models.options.ModelOptions` (``num_classes``,
    ``input_shape``, ``shortcut``, ``widen``, ``zero_init_residual``, ...), each type-checked.

    Raises:
        ConfigError: unknown name (with close matches), impossible depth, an unknown option (with the closest
            valid one), or an option that does not apply to the family.
    """
    opts = model_options(name, options)
    spec = _spec_with(model_info(name), opts, name)
    if opts.device is None or torch.device(opts.device).type == "cpu":
        _check_parameter_memory(name, spec, opts)
    with torch.device(opts.device) if opts.device is not None else contextlib.nullcontext():
        if spec.family == "mlp":
            return _build_mlp(name, spec, opts)
        return _build_conv(name, spec, opts)


def _check_parameter_memory(name: str, spec: ModelSpec, opts: ModelOptions) -> None:
    """Refuse in one line, before allocating, a model whose parameters alone would not fit in host memory."""
    from reslab.resources import check_host_memory

    params = None
    with contextlib.suppress(ConfigError, TypeError):  # options the formula cannot weigh: let the build say
        params = count_parameters_of(
            spec, num_classes=opts.num_classes, in_channels=opts.in_channels, norm=opts.norm,
            branch_scale=opts.branch_scale,
        )  # fmt: skip
    if params is not None:
        fix = "use a smaller width/widen or fewer classes, or build on device='meta' to count"
        check_host_memory(4 * params, what=f"building {name} ({params:,} parameters)", fix=fix)


def _spec_with(spec: ModelSpec, opts: ModelOptions, name: str) -> ModelSpec:
    """The registered spec with the options that change the architecture's data (validated)."""
    if opts.widen is not None and spec.family == "wrn":
        raise ConfigError(f"{name} takes its width k from its name; build wrn<d>_<k> (e.g. wrn28_4) instead")
    changes = {
        k: getattr(opts, k)
        for k in ("shortcut", "stride_in_1x1", "width", "widen", "dropout", "shortcut_kind", "placement")
        if getattr(opts, k) is not None
    }
    spec = replace(spec, **changes)
    validate_spec(spec, name)
    return spec


def _build_mlp(name: str, spec: ModelSpec, opts: ModelOptions) -> StagedNet:
    conv_only = [
        k
        for k in ("shortcut", "shortcut_pad", "global_pool", "stride_in_1x1")
        if getattr(opts, k) is not None
    ]
    if conv_only:
        raise ConfigError(f"{name} is an MLP: {', '.join(conv_only)} apply only to conv nets")
    shape = tuple(opts.input_shape) if opts.input_shape is not None else None
    return ResidualMLP(
        spec.depth,
        spec.width,
        _mlp_features(name, opts.in_features, opts.in_channels, shape),
        spec.default_num_classes if opts.num_classes is None else opts.num_classes,
        residual=spec.residual,
        norm=opts.norm,
        branch_scale=opts.branch_scale,
        zero_init_residual=opts.zero_init_residual,
        activation_checkpointing=opts.activation_checkpointing,
    )


def _build_conv(name: str, spec: ModelSpec, opts: ModelOptions) -> StagedNet:
    mlp_only = [k for k in ("in_features", "width", "norm", "branch_scale") if getattr(opts, k) is not None]
    if mlp_only:
        raise ConfigError(f"{name} is a conv net: {', '.join(mlp_only)} apply only to MLPs")
    if opts.stride_in_1x1 and not spec.has_bottleneck:
        raise ConfigError(f"{name} has basic blocks: stride_in_1x1 applies only to bottleneck nets")
    cifar_only = [k for k in ("shortcut_pad", "global_pool") if getattr(opts, k) is not None]
    if cifar_only and spec.family not in ("cifar", "cifar_preact"):
        raise ConfigError(
            f"{name}: {', '.join(cifar_only)} apply only to the CIFAR nets (resnet<d>, preact_*)"
        )
    shape = tuple(opts.input_shape) if opts.input_shape is not None else None
    common: dict[str, Any] = dict(
        num_classes=spec.default_num_classes if opts.num_classes is None else opts.num_classes,
        in_channels=_conv_channels(name, opts.in_channels, shape),
        residual=spec.residual,
        zero_init_residual=opts.zero_init_residual,
        activation_checkpointing=opts.activation_checkpointing,
    )
    if spec.family == "wrn":
        return WideResNet(
            spec.depth, spec.widen, shortcut=spec.shortcut or "B", dropout=spec.dropout, **common
        )
    if spec.family == "imagenet":
        block, layers = IMAGENET_LAYERS[spec.depth]
        return ResNet(
            block, layers, shortcut=spec.shortcut or "B", stride_in_1x1=spec.stride_in_1x1, **common
        )
    preact = spec.family == "cifar_preact"
    return CifarResNet(
        spec.depth,
        bottleneck=preact,
        preact=preact,
        shortcut=spec.shortcut,
        shortcut_pad=opts.shortcut_pad or "after",
        global_pool=opts.global_pool or "adaptive",
        stride_in_1x1=spec.stride_in_1x1,
        widen=spec.widen,
        variant=_shortcut_variant(name, spec, opts),
        placement=spec.placement,
        **common,
    )


# The options that tune one shortcut kind: (ModelOptions field, ShortcutVariant field, the kinds it tunes).
_KIND_OPTIONS = (
    ("shortcut_scale", "scale", ("scaling",)),
    ("scale_branch", "scale_branch", ("scaling",)),
    ("gate_bias", "gate_bias", ("exclusive_gate", "shortcut_gate")),
    ("shortcut_dropout", "dropout", ("dropout",)),
)


def _shortcut_variant(name: str, spec: ModelSpec, opts: ModelOptions) -> ShortcutVariant | None:
    """The shortcut function of He et al. 2016, Fig. 2 (None: the identity); its options checked."""
    values = {}
    for option, field, kinds in _KIND_OPTIONS:
        value = getattr(opts, option)
        if value is None:
            continue
        if spec.shortcut_kind not in kinds:
            raise ConfigError(
                f"{name}: {option} applies to shortcut_kind={' or '.join(kinds)}, not {spec.shortcut_kind!r}"
            )
        values[field] = value
    if spec.shortcut_kind == "identity":
        return None
    try:
        return ShortcutVariant(spec.shortcut_kind, **values)
    except ConfigError as err:
        raise ConfigError(f"{name}: {err}") from None


def cifar_resnet(
    depth: int,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    residual: bool = True,
    shortcut: Shortcut | None = None,
    bottleneck: bool = False,
    preact: bool = False,
    widen: float = 1.0,
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
        widen=widen,
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


def parameter_count(
    name: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    widen: float | None = None,
    norm: Norm = None,
    branch_scale: BranchScale = None,
    shortcut_kind: ShortcutKind | None = None,
    placement: Placement | None = None,
) -> int:
    """Parameters of ``build_model(name, ...)`` from the architecture's formula, without building it.

    ``reslab models`` lists the whole zoo this way in milliseconds; the tests check it against the built
    models (see :func:`reslab.models.specs.count_parameters_of`).
    """
    spec = model_info(name)
    if widen is not None or shortcut_kind is not None or placement is not None:
        spec = replace(
            spec,
            widen=spec.widen if widen is None else widen,
            shortcut_kind=shortcut_kind or spec.shortcut_kind,
            placement=placement or spec.placement,
        )
        validate_spec(spec, name)
    if spec.family == "mlp" and in_channels is not None:
        raise ConfigError(f"{name} flattens its input (784 features by default): in_channels does not apply")
    if spec.family != "mlp" and (norm is not None or branch_scale is not None):
        raise ConfigError(f"{name} is a conv net: norm and branch_scale apply only to MLPs")
    return count_parameters_of(
        spec, num_classes=num_classes, in_channels=in_channels, norm=norm, branch_scale=branch_scale
    )
