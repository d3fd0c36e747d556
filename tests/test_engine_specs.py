"""The engine along its seams: the config resolved once into specs, the optimiser, the adaptive warm-up, and
run directories written by an earlier reslab that still resume."""

from __future__ import annotations

import ast
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import tiny
from reslab.engine import TrainConfig, train
from reslab.engine.optim import AdaptiveWarmup, lr_at, make_plan, make_sgd
from reslab.engine.specs import optim_spec, resolve
from reslab.errors import ConfigError
from reslab.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")
ENGINE = Path(__file__).resolve().parents[1] / "src" / "reslab" / "engine"
OLD_RUN = Path(__file__).resolve().parent / "data" / "run-v0.2.0"


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def test_only_train_and_the_config_resolution_take_the_whole_config() -> None:
    """Each engine module gets its own spec: no function but these takes a TrainConfig."""
    allowed = {
        "loop.py": {"train"},  # the entry point
        "probe.py": {"__init__"},  # the other one: times the steps train() would take (sweep estimates)
        "specs.py": {"resolve", "data_spec", "optim_spec", "runtime_spec", "with_init_kwargs"}
        | {"with_passed", "with_init_image_size"},  # data passed in memory, --init-from's image size
        "config.py": {"from_recipe", "from_file", "from_dict", "validate", "with_changes", "to_dict"},
        "store/resume.py": {"given_settings", "resume_settings"},  # what a resume keeps of the config
        "store/runs.py": {"run_metadata", "build_from_meta"},  # config.json: the config as written
        # train() in another process: the config is what they hand over, as JSON
        "devices/launch.py": {"torchrun_args", "launch_torchrun"},
        "devices/worker.py": {"train_as_process"},
    }
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        rel = str(path.relative_to(ENGINE))
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            args = node.args.args + node.args.kwonlyargs + node.args.posonlyargs
            typed = [ast.unparse(a.annotation) for a in args if a.annotation is not None]
            if any("TrainConfig" in t for t in typed) and node.name not in allowed.get(rel, set()):
                found.append(f"{rel}:{node.lineno} {node.name}")
    assert not found, found


def test_resolve_splits_the_config_and_applies_resume(tmp_path: Path) -> None:
    specs = resolve(tiny(tmp_path / "a", lr=0.05, head_lr=0.2, grad_clip=1.0))
    assert (specs.optim.lr, specs.optim.head_lr, specs.optim.grad_clip) == (0.05, 0.2, 1.0)
    assert (specs.data.dataset, specs.data.batch_size, specs.net.model) == (
        "synthetic:1x12x12",
        64,
        "resnet8",
    )
    assert specs.output.out == str(tmp_path / "a") and specs.runtime.precision == "fp32"
    with pytest.raises(ConfigError, match="--lr"):
        resolve(tiny(tmp_path / "b", lr=-1.0))
    # --grad-clip 0 turns a preset's clip off (compare's CIFAR recipe clips at 1); negative is refused
    assert resolve(tiny(tmp_path / "c", grad_clip=0.0)).optim.grad_clip is None
    with pytest.raises(ConfigError, match="--grad-clip"):
        resolve(tiny(tmp_path / "d", grad_clip=-1.0))


def test_make_sgd_is_torchs_fused_sgd_with_a_head_group() -> None:
    model = build_model("resnet8", num_classes=10)
    opt = make_sgd(model, optim_spec(TrainConfig(lr=0.1, head_lr=0.4, momentum=0.9, weight_decay=1e-4)))
    assert type(opt) is torch.optim.SGD and opt.defaults["fused"] is True
    assert [g["lr_scale"] for g in opt.param_groups] == [1.0, pytest.approx(4.0)]
    assert opt.param_groups[1]["params"] == list(model.fc.parameters())


def test_adaptive_warm_up_ends_when_the_running_error_falls() -> None:
    """The paper's rule: the low lr until the error of the last 10 batches is below the threshold."""
    cfg = TrainConfig(warmup="adaptive", warmup_lr=0.01, lr=0.1, warmup_iters=40, iterations=100)
    plan = make_plan(optim_spec(cfg), steps_per_epoch=10, depth=20)
    watch = AdaptiveWarmup(0.8)
    errors = [0.9] * 12 + [0.5] * 20  # the window's mean falls below 0.8 on the 3rd low batch: 7*0.9+3*0.5
    it = 0
    while watch.watching(plan, it):
        assert lr_at(it, plan) == 0.01
        plan = watch.observe(plan, it, errors[it])
        it += 1
    assert watch.ended_at == 15 and plan.warmup_iters == 15
    assert lr_at(15, plan) == pytest.approx(0.1, rel=0.01)  # back to the peak, then the cosine decay
    # a net that never gets there warms up for the longest time the plan allows
    never, plan2 = AdaptiveWarmup(0.8), make_plan(optim_spec(cfg), steps_per_epoch=10, depth=20)
    for i in range(40):
        plan2 = never.observe(plan2, i, 0.9)
    assert never.ended_at is None and plan2.warmup_iters == 40 and not never.watching(plan2, 40)
    # the state goes through a checkpoint
    again = AdaptiveWarmup.from_state(watch.to_state(), 0.8)
    assert (
        again.ended_at == 15
        and again.resumed(make_plan(optim_spec(cfg), steps_per_epoch=10, depth=20)) == plan
    )


def test_adaptive_warm_up_is_logged_and_resumes_exactly(tmp_path: Path) -> None:
    # 10 classes: chance is 90%, so the window of 10 batches is below 95% as soon as it is full
    kw = dict(warmup="adaptive", warmup_lr=0.01, warmup_iters=14, warmup_until_error=0.95, iterations=16)
    straight = train(tiny(tmp_path / "straight", **kw))
    assert [h["warmup_ended_at"] for h in straight.history] == [None, None, 10, 10]
    assert [h["lr"] for h in straight.history][:2] == [0.01, 0.01]
    run = tmp_path / "run"
    for stop_at in (4, 12):  # inside the warm-up (its window restored), then after its end

        def stop(m: dict, at: int = stop_at) -> None:
            if m["iteration"] == at:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train(
                tiny(run, **kw) if stop_at == 4 else replace(tiny(run, **kw), resume=str(run), out=None),
                callback=stop,
            )
    train(replace(tiny(run, **kw), resume=str(run), out=None))
    a, b = _weights(tmp_path / "straight"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_directory_of_reslab_0_2_0_resumes_exactly(tmp_path: Path) -> None:
    """tests/data/run-v0.2.0: resnet8 (widen 0.25) stopped at iteration 4 of 8 by reslab 0.2.0, before the
    engine was regrouped (its checkpoint has no warm-up state, its SGD state is DenseSGD's)."""
    run = tmp_path / "old"
    shutil.copytree(OLD_RUN, run)
    assert json.loads((run / "config.json").read_text())["versions"]["reslab"] == "0.2.0"
    resumed = train(TrainConfig(resume=str(run), progress="off", num_threads=1))
    assert resumed.iterations == 8 and [h["iteration"] for h in resumed.history] == [4, 8]
    fresh = tmp_path / "fresh"
    train(tiny(fresh, iterations=8, model_kwargs={"widen": 0.25}))
    a, b = _weights(fresh), _weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_takes_its_settings_as_keywords(tmp_path: Path) -> None:
    result = train(**vars(tiny(tmp_path / "kw", iterations=2)))
    assert result.iterations == 2 and result.model == "resnet8"
    over = train(tiny(tmp_path / "cfg", iterations=4), iterations=2, out=str(tmp_path / "over"))
    assert over.iterations == 2 and over.run_dir == tmp_path / "over"
    with pytest.raises(ConfigError, match="TrainConfig"):
        train("resnet8")  # type: ignore[arg-type]
