"""TrainConfig validation, recipes, runtime resolution and the learning-rate function."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from reslab.engine import RECIPES, TrainConfig
from reslab.engine.devices.runtime import resolve_runtime
from reslab.engine.optim import lr_at, make_plan
from reslab.engine.specs import optim_spec, runtime_spec
from reslab.errors import ConfigError


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"batch_size": 0}, "--batch-size"),
        ({"batch_size": -8}, "--batch-size"),
        ({"epochs": 0}, "--epochs"),
        ({"epochs": 2, "iterations": 10}, "at most one"),
        ({"lr": "0.1"}, "--lr must be a number"),
        ({"seed": 2**64}, "--seed"),
        ({"nesterov": "yes"}, "--nesterov must be true or false"),
        ({"lr": 0.0}, "--lr"),
        ({"lr": float("nan")}, "--lr"),
        ({"weight_decay": -1.0}, "--weight-decay"),
        ({"momentum": 1.5}, "--momentum"),
        ({"label_smoothing": 1.0}, "--label-smoothing"),
        ({"grad_clip": -1.0}, "--grad-clip"),
        ({"eval_every": 0}, "--eval-every"),
        ({"schedule": "linear"}, "--schedule"),
        ({"device": "tpu"}, "--device"),
        ({"precision": "fp8"}, "--precision"),
        ({"milestones": (0.75, 0.5)}, "milestones"),
    ],
)
def test_bad_fields_give_one_line_config_errors(overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig(**overrides).validate()
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_defaults_are_valid_and_round_trip_through_dict() -> None:
    cfg = TrainConfig(model_kwargs={"shortcut": "B"}).validate()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict({**cfg.to_dict(), "field_from_the_future": 1}) == cfg


def test_paper_recipe_is_the_papers_protocol() -> None:
    cfg = TrainConfig.from_recipe("paper", model="resnet110", dataset="cifar10").validate()
    assert (cfg.iterations, cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum) == (64_000, None, 128, 0.1, 0.9)
    assert (cfg.weight_decay, cfg.val_split, cfg.normalize, cfg.schedule) == (1e-4, 5000, "pixel", "step")
    plan = make_plan(optim_spec(cfg), steps_per_epoch=352, depth=110)
    assert lr_at(0, plan) == lr_at(399, plan) == 0.01  # constant warm-up for 110 layers (Sec. 4.2)
    assert lr_at(400, plan) == lr_at(31_999, plan) == 0.1
    assert math.isclose(lr_at(32_000, plan), 0.01) and math.isclose(lr_at(48_000, plan), 0.001)
    shallow = make_plan(optim_spec(cfg), steps_per_epoch=352, depth=20)
    assert lr_at(0, shallow) == 0.1  # no warm-up below 110 layers
    assert TrainConfig.from_recipe("paper", epochs=3).iterations is None
    assert set(RECIPES) == {"default", "paper"}
    with pytest.raises(ConfigError, match="recipe"):
        TrainConfig.from_recipe("fast")


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "step"])
def test_lr_schedules_warm_up_then_decay(schedule: str) -> None:
    cfg = TrainConfig(schedule=schedule, warmup_epochs=1.0, lr=0.2, iterations=100)
    plan = make_plan(optim_spec(cfg), steps_per_epoch=10, depth=20)
    lrs = [lr_at(i, plan) for i in range(100)]
    assert lrs[0] == pytest.approx(0.02) and lrs[9] == pytest.approx(0.2)  # linear warm-up over 10 steps
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(lrs[:10]))
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(lrs[9:]))  # then never rises
    assert lrs[-1] < 0.2 * 0.1 + 1e-9


def test_runtime_resolution() -> None:
    rt = resolve_runtime(runtime_spec(TrainConfig(device="cpu", precision="fp32", channels_last=False)))
    assert (rt.device.type, rt.precision, rt.channels_last, rt.is_main) == ("cpu", "fp32", False, True)
    assert resolve_runtime(runtime_spec(TrainConfig(device="cpu"))).precision in ("bf16", "fp32")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_runtime(runtime_spec(TrainConfig(device="cuda")))


@pytest.mark.parametrize(
    ("length", "steps_per_epoch", "most"),
    [
        ({"epochs": 1}, 62, 0.01),  # one epoch of resnet20 on mnist5k: the first thing a new user runs
        ({"iterations": 5}, 62, 0.15),  # a smoke run of a few steps
        ({}, 62, 0.01),  # the full default: 8 epochs
        ({"epochs": 5, "batch_size": 128}, 31, 0.01),  # compare's runs
    ],
)
def test_every_default_schedule_ends_low(length: dict, steps_per_epoch: int, most: float) -> None:
    cfg = TrainConfig(**length).validate()
    plan = make_plan(optim_spec(cfg), steps_per_epoch=steps_per_epoch, depth=20)
    total = plan.total
    lrs = [lr_at(i, plan) for i in range(total)]
    assert max(lrs) == pytest.approx(cfg.lr)  # the warm-up reaches the peak ...
    assert plan.warmup_iters <= max(1, round(0.2 * total))  # ... within the first 20% of the run
    assert 0 < lrs[-1] <= most * cfg.lr  # and the last step is low, never a wasted step at 0
    assert plan.notes(optim_spec(cfg)) == []


def test_a_warm_up_that_leaves_no_decay_is_announced() -> None:
    cfg = TrainConfig(epochs=1, warmup_epochs=1.0).validate()
    plan = make_plan(optim_spec(cfg), steps_per_epoch=62, depth=20)
    [note] = plan.notes(optim_spec(cfg))
    assert note.startswith("warning: the warm-up (62 iterations) covers the whole run of 62")
