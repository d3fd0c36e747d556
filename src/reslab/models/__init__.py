"""Residual networks and their plain twins (He et al. 2015; He et al. 2016), with no data or training code.

``build_model(name, ...)`` builds any registered variant (``list_models()``) or any valid depth by name;
``summarize(model)`` gives parameters and multiply-adds per stage (the paper's Table 1).
"""

from __future__ import annotations

from reslab.models.blocks import (
    BasicBlock,
    Bottleneck,
    PadShortcut,
    PreActBasicBlock,
    PreActBottleneck,
    ResidualDenseBlock,
    make_shortcut,
)
from reslab.models.cifar import CifarResNet, WideResNet, widened
from reslab.models.nets import ResidualMLP, ResNet, StagedNet, init_weights
from reslab.models.registry import (
    IMAGENET_LAYERS,
    ModelSpec,
    build_model,
    cifar_resnet,
    list_models,
    model_info,
    parameter_count,
    register_model,
)
from reslab.models.summary import ModelSummary, StageRow, count_parameters, summarize
from reslab.models.weights import LoadReport, WeightsInfo, inspect_weights, load_weights

__all__ = [
    "IMAGENET_LAYERS",
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "LoadReport",
    "ModelSpec",
    "ModelSummary",
    "PadShortcut",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNet",
    "ResidualDenseBlock",
    "ResidualMLP",
    "StageRow",
    "StagedNet",
    "WeightsInfo",
    "WideResNet",
    "build_model",
    "cifar_resnet",
    "count_parameters",
    "init_weights",
    "inspect_weights",
    "list_models",
    "load_weights",
    "make_shortcut",
    "model_info",
    "parameter_count",
    "register_model",
    "summarize",
    "widened",
]
