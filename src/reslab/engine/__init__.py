"""The training engine: ``train(TrainConfig(...)) -> RunResult``, and using a run: evaluate, predict, export.

    from reslab.engine import TrainConfig, train
    result = train(TrainConfig(model="resnet20", dataset="mnist5k"))      # the default recipe
    result = train(TrainConfig.from_recipe("paper", model="resnet110", dataset="cifar10", data_dir="data"))
    result = train(TrainConfig(resume=str(result.run_dir), epochs=12))    # continue, with a longer schedule

Modules, along the seams of :mod:`reslab.engine.specs` (the config resolved once into small specs):
config (TrainConfig, recipes), specs, loop (train's phases), step (train_step, shared with the benchmarks),
guards (finite checks, Ctrl-C), data (the splits on the device), net (the network and its starting weights),
optim (SGD and the learning rate), inference (evaluate_model, evaluate, predict), exporting, progress,
loggers; store/ (run directory, checkpoints, reading runs back, resume); devices/ (runtime, memory, torchrun).
"""

from __future__ import annotations

from reslab.engine.config import RECIPES, TrainConfig
from reslab.engine.devices.runtime import Runtime, resolve_runtime
from reslab.engine.exporting import export_run
from reslab.engine.inference import EvalReport, Prediction, evaluate, predict
from reslab.engine.loop import Callback, train
from reslab.engine.step import StepState, train_step
from reslab.engine.store.runs import RunInfo, RunResult, load_run, read_run_result

__all__ = [
    "RECIPES",
    "Callback",
    "EvalReport",
    "Prediction",
    "RunInfo",
    "RunResult",
    "Runtime",
    "StepState",
    "TrainConfig",
    "evaluate",
    "export_run",
    "load_run",
    "predict",
    "read_run_result",
    "resolve_runtime",
    "train",
    "train_step",
]
