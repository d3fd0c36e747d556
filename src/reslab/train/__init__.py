"""The training engine: ``train(TrainConfig(...)) -> RunResult``, evaluation, checkpoints and recipes.

from reslab.train import TrainConfig, train
result = train(TrainConfig(model="resnet20", dataset="mnist5k"))          # the default recipe
result = train(TrainConfig.from_recipe("paper", model="resnet110", dataset="cifar10", data_dir="data"))
"""

from __future__ import annotations

from reslab.train.checkpoint import load_weights
from reslab.train.config import RECIPES, TrainConfig
from reslab.train.engine import Callback, RunResult, train
from reslab.train.evaluate import EvalResult, evaluate
from reslab.train.runs import RunInfo, load_run
from reslab.train.runtime import Runtime, resolve_runtime

__all__ = [
    "RECIPES",
    "Callback",
    "EvalResult",
    "RunInfo",
    "RunResult",
    "Runtime",
    "TrainConfig",
    "evaluate",
    "load_run",
    "load_weights",
    "resolve_runtime",
    "train",
]
