"""The training engine: ``train(TrainConfig(...)) -> RunResult``, and using a run: evaluate, predict, export.

    from reslab.engine import TrainConfig, train
    result = train(TrainConfig(model="resnet20", dataset="mnist5k"))      # the default recipe
    result = train(TrainConfig.from_recipe("paper", model="resnet110", dataset="cifar10", data_dir="data"))
    result = train(TrainConfig(resume=str(result.run_dir), epochs=12))    # continue, with a longer schedule

Modules: config (TrainConfig, recipes), loop (train's phases), step (train_step, shared with the benchmarks),
resume (what a resume keeps and changes), schedule, checkpoint, rundir, runs (reading runs back),
inference (evaluate, predict), exporting, distributed / launch / worker (torchrun), memory, guards, progress.
"""

from __future__ import annotations

from reslab.engine.config import RECIPES, TrainConfig
from reslab.engine.exporting import export_run
from reslab.engine.inference import EvalReport, Prediction, evaluate, predict
from reslab.engine.loop import Callback, train
from reslab.engine.runs import RunInfo, RunResult, load_run, read_run_result
from reslab.engine.runtime import Runtime, resolve_runtime
from reslab.engine.step import StepState, train_step

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
