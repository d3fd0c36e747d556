"""The options of ``build_model``, declared once: each with its type, its default and its reason.

``build_model(name, **options)`` checks every option against this dataclass (an unknown name is a one-line
error naming the closest valid one; a wrong type is refused), so the same names work from Python, from a
run's ``model_kwargs`` and from ``--model-kwargs KEY=VALUE`` on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from reslab.errors import ConfigError
from reslab.models.blocks import BranchScale, Norm, Shortcut, ShortcutPad
from reslab.models.identity_mappings import Placement, ShortcutKind
from reslab.models.nets import GlobalPool
from reslab.settings import check_value, closest, setting


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Keyword arguments of :func:`~reslab.models.build_model`; None = the family's default."""

    num_classes: int | None = setting(None, help="classifier outputs; default 10 (1000 for ImageNet nets)")
    in_channels: int | None = setting(None, help="input image channels of a conv net; default 3")
    in_features: int | None = setting(None, help="flattened input size of an MLP; default 784 = 1x28x28")
    input_shape: tuple[int, ...] | None = setting(
        None, help="the input without batch, e.g. (1, 28, 28): sets in_channels (conv) or in_features (MLP)"
    )
    shortcut: Shortcut | None = setting(
        None,
        help="A | B | C (paper sec. 3.3); default A for CIFAR basic blocks, B otherwise; plain twins: none",
    )
    shortcut_pad: ShortcutPad | None = setting(
        None, help="CIFAR option A: the zero channels after (reslab) or on both sides (akamaster's nets)"
    )
    global_pool: GlobalPool | None = setting(
        None, help="CIFAR nets: adaptive (reslab) or window (akamaster's F.avg_pool2d); same parameters"
    )
    stride_in_1x1: bool | None = setting(
        None, help="bottlenecks: True = the paper's v1, False = v1.5 (torchvision)"
    )
    zero_init_residual: bool = setting(
        False, help="zero the last layer of each residual branch (Goyal et al. 2017); plain twins ignore it"
    )
    widen: float | None = setting(
        None,
        help="CIFAR families: Wide ResNets' k, stages (and stem) of 16k/32k/64k channels, rounded half up",
    )
    dropout: float | None = setting(
        None, help="Wide ResNets: dropout between the two convs of a block (paper 0.3)"
    )
    width: int | None = setting(None, help="MLPs: units per dense layer; default 64")
    norm: Norm = setting(None, help="MLPs: none (the lecture's equations) or batch")
    branch_scale: BranchScale = setting(
        None,
        help="MLP residual blocks: rezero | sqrt_depth | fixup (see ResidualDenseBlock); plain twins: none",
    )
    shortcut_kind: ShortcutKind | None = setting(
        None,
        help="CIFAR basic blocks, h(x) of He et al. 2016 Fig. 2: identity | scaling | exclusive_gate | "
        "shortcut_gate | conv1x1 | dropout; default identity",
    )
    shortcut_scale: float | None = setting(
        None, help="shortcut_kind=scaling: λ on the shortcut; default 0.5 (the paper)"
    )
    scale_branch: bool | None = setting(
        None, help="shortcut_kind=scaling: F scaled by 1-λ too (default: Table 1's 'frozen gating')"
    )
    gate_bias: float | None = setting(
        None,
        help="gated shortcut kinds: the gate bias b_g at initialisation; default -6 (the paper's best)",
    )
    shortcut_dropout: float | None = setting(
        None, help="shortcut_kind=dropout: the ratio dropped; default 0.5 (the paper)"
    )
    placement: Placement | None = setting(
        None,
        help="CIFAR basic blocks, BN/ReLU order of He et al. 2016 Fig. 4: original | bn_after_add | "
        "relu_before_add | relu_preact | full_preact; default original",
    )
    activation_checkpointing: bool = setting(
        False, help="recompute each block in the backward pass: less memory"
    )
    device: Any = setting(
        None, help="build the parameters there; 'meta' costs no memory (counting, summaries)"
    )


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(ModelOptions))


def model_options(name: str, given: Mapping[str, Any]) -> ModelOptions:
    """``given`` checked: one-line ConfigError naming ``build_model(name)``, the option and the fix."""
    where = f"build_model({name!r})"
    for key in given:
        if key not in OPTION_NAMES:
            raise ConfigError(f"{where}: unknown option {key!r}{closest(str(key), list(OPTION_NAMES))}")
    return ModelOptions(**{k: check_value(ModelOptions, k, v, where) for k, v in given.items()})


def parse_entry(entry: str) -> tuple[str, dict[str, Any]]:
    """``"resnet56:shortcut_kind=scaling:shortcut_scale=0.8"`` -> ``("resnet56", {...})``.

    A name followed by ``:KEY=VALUE`` options, each value read as a YAML scalar (``0.8``, ``true``, ``B``), as
    ``--model-kwargs`` reads them; so one list of names can hold the same model with different options. The
    options are not checked here: ``build_model`` checks them against :class:`ModelOptions`.
    """
    import yaml

    from reslab.settings import load_yaml

    name, *parts = entry.split(":")
    options: dict[str, Any] = {}
    for part in parts:
        key, sep, raw = part.partition("=")
        if not sep or not key.strip() or not name.strip():
            raise ConfigError(f"{entry!r}: write NAME:KEY=VALUE, e.g. resnet56:shortcut_kind=scaling")
        try:
            options[key.strip()] = load_yaml(raw, f"{name.strip()}:{key.strip()}") if raw.strip() else ""
        except yaml.YAMLError:
            options[key.strip()] = raw
    return name.strip(), options
