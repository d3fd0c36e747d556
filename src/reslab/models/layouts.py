"""Key layouts of ResNet state dicts saved by other code, and their explicit mapping to reslab's names.

Pure functions on dicts of tensors (only their keys and shapes are read): no files, no models.

========== ==================================================== ====================================
layout     whose files                                          mapping to reslab
========== ==================================================== ====================================
reslab     reslab; torchvision ``resnet18 … 152``; timm's plain none: the same keys (conv1, bn1,
           ``resnet18 … 152`` (e.g. ``resnet50.a1_in1k``)       layerI.J.convK/bnK, .downsample.0/1, fc)
akamaster  akamaster/pytorch_resnet_cifar10 ``resnet20 … 1202`` ``linear.`` -> ``fc.``; option B
                                                                ``shortcut.0/1`` -> ``downsample.0/1``;
                                                                ``compressible_`` names -> plain names
========== ==================================================== ====================================

timm's plain ResNets differ from torchvision's only in modules without parameters (``act1``, ``global_pool``),
and a timm model made with ``num_classes=0`` saves no ``fc.*``. timm's deep-stem (``resnet50d``:
``conv1.0.weight``), average-pool-downsample (``downsample.2``), SE and anti-aliased variants are other
architectures: :data:`TIMM_VARIANT` finds their keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch

from reslab.models.registry import IMAGENET_LAYERS

Layout = Literal["reslab", "akamaster"]
HEAD = "fc."  # every reslab net's classifier (torchvision's and timm's name too)

# Each rule is (pattern, replacement, what it does), applied in order to every key of a file of that layout.
KEY_MAPS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "reslab": (),
    "akamaster": (
        (r"^(compressible_)?linear\.", "fc.", "linear -> fc"),
        # a later revision of akamaster's resnet.py prefixes its convs and classifier for pruning
        (r"(^|\.)compressible_(conv\d)\.", r"\1\2.", "compressible_convN -> convN"),
        (r"\.shortcut\.([01])\.", r".downsample.\1.", "shortcut.N -> downsample.N"),  # option B: conv, BN
    ),
}
LAYOUT_NAMES = {"reslab": "reslab/torchvision/timm", "akamaster": "akamaster/pytorch_resnet_cifar10"}
# Keys of timm variants that are not reslab architectures (deep stem, avg-pool downsample, SE, anti-aliasing).
TIMM_VARIANT = re.compile(r"^conv1\.\d+\.|\.downsample\.2\.|\.se\.|\.aa\.")


def detect_layout(keys: Iterable[str]) -> Layout:
    """``"akamaster"`` where the classifier is ``linear`` or a shortcut ``shortcut.N``, else ``"reslab"``."""
    keys = list(keys)
    if any(k.startswith(HEAD) for k in keys):
        return "reslab"
    aka = ("linear.", "compressible_")
    return "akamaster" if any(k.startswith(aka) or ".shortcut." in k for k in keys) else "reslab"


def convert_state_dict(
    state: Mapping[str, torch.Tensor], layout: Layout
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(state dict with reslab's key names, notes on each rule used) by the rules of :data:`KEY_MAPS`."""
    rules = KEY_MAPS[layout]
    used = [0] * len(rules)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        for i, (pattern, repl, _) in enumerate(rules):
            new, n = re.subn(pattern, repl, new)
            used[i] += n
        out[new] = value
    return out, [f"{rules[i][2]} ({n} keys)" for i, n in enumerate(used) if n]


def guess_model(state: Mapping[str, torch.Tensor]) -> tuple[str | None, dict[str, Any]]:
    """(reslab model name, its non-default build_model keywords) that reslab-named keys and shapes describe.

    Plain twins with option A have the keys of their residual nets (no shortcut has parameters), and v1/v1.5
    bottlenecks the same shapes: the guess is then the residual net, v1.5.
    """
    stages: dict[int, set[int]] = {}
    for key in state:
        m = re.match(r"layer(\d+)\.(\d+)\.", key)
        if m:
            stages.setdefault(int(m[1]), set()).add(int(m[2]))
    fc_in = state.get("fc_in.weight")
    if fc_in is not None and fc_in.ndim == 2:  # the lecture's MLP: (width, in_features)
        width, features = int(fc_in.shape[0]), int(fc_in.shape[1])
        kwargs = {k: v for k, v, d in (("width", width, 64), ("in_features", features, 784)) if v != d}
        return f"resmlp{len(stages.get(1, ()))}", kwargs
    n = tuple(max(blocks) + 1 for _, blocks in sorted(stages.items()))
    bottleneck = any(k.endswith(".conv3.weight") for k in state)
    projected = {k.split(".downsample.")[0] for k in state if ".downsample.0." in k}
    blocks = sum(n)
    option = "C" if projected and len(projected) == blocks else "B" if projected else "A"
    if len(n) == 4:
        depth = 2 + blocks * (3 if bottleneck else 2)
        if IMAGENET_LAYERS.get(depth) != ("bottleneck" if bottleneck else "basic", n):
            return None, {}
        return f"resnet{depth}", {} if option == "B" else {"shortcut": option}
    if len(n) != 3 or len(set(n)) != 1 or (bottleneck and "bn.weight" not in state):
        return None, {}
    if bottleneck:  # the pre-activation family: 9n+2, option B by default
        return f"preact_resnet{9 * n[0] + 2}", {} if option == "B" else {"shortcut": option}
    depth = 6 * n[0] + 2
    name = f"cifar_resnet{depth}" if depth in IMAGENET_LAYERS else f"resnet{depth}"
    return name, {} if option == "A" else {"shortcut": option}
