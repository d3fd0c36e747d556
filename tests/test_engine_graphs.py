"""The captured training step (``--cuda-graphs``) on a CPU: its static buffers against the eager loop.

A CUDA graph cannot be captured here, so the graph is replaced by :class:`~reslab.engine.graphs.CallAgain`
(its "replay" runs the step function again) while everything else is what runs on a GPU: the eager steps
before the capture, the static input tensors, the learning rate as a tensor written in place, the interval's
sums added inside the step and reset in place, the checkpoint of a run whose lr lives in tensors. Nothing
here touches CUDA: the plan's decisions are checked on ``torch.device("cuda")`` objects, which need no GPU.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import exit_code, tiny
from reslab.engine import graphs, train
from reslab.engine.config import TrainConfig
from reslab.engine.devices.runtime import Runtime
from reslab.engine.specs import runtime_spec
from reslab.engine.store.checkpoint import list_checkpoints, load_checkpoint

CUDA = torch.device("cuda")  # a device object only: nothing is allocated on it


class Spy(graphs.CallAgain):
    """CallAgain that counts captures and replays, so a test knows the captured path really ran."""

    def __init__(self) -> None:
        self.captures = 0
        self.replays = 0

    def capture(self, fn):  # type: ignore[no-untyped-def]
        self.captures += 1

        def replay():  # type: ignore[no-untyped-def]
            self.replays += 1
            return fn()

        return replay


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Spy]:
    """Every run in the test takes the captured path on the CPU; returns the spies, one per run."""
    spies: list[Spy] = []

    def plan(spec, rt, *, resident, checkpointing):  # type: ignore[no-untyped-def]
        return graphs.GraphPlan(spec.cuda_graphs, None)  # --no-cuda-graphs: the eager reference

    def new_capture(device: torch.device) -> Spy:
        spies.append(Spy())
        return spies[-1]

    monkeypatch.setattr(graphs, "graph_plan", plan)
    monkeypatch.setattr(graphs, "new_capture", new_capture)
    return spies


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def history(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if k not in ("images_per_s", "seconds")} for line in lines
    ]


SETTINGS = {
    "fp32": {},
    "clip and head lr": {"grad_clip": 0.5, "head_lr": 0.05},  # two lr tensors, the clip inside the step
    "bf16": {"precision": "bf16"},  # autocast without its cast cache, as in a capture
}


@pytest.mark.parametrize("settings", list(SETTINGS.values()), ids=list(SETTINGS))
def test_the_captured_step_trains_bit_identically_to_the_eager_loop(
    tmp_path: Path, captured: list[Spy], settings: dict
) -> None:
    train(tiny(tmp_path / "eager", iterations=14, cuda_graphs=False, **settings))
    result = train(tiny(tmp_path / "graph", iterations=14, **settings))
    assert captured[0].captures == 1 and captured[0].replays == 14 - graphs.EAGER_STEPS
    assert_same_weights(tmp_path / "eager", tmp_path / "graph")
    # the interval's sums came out of the captured step and were reset in place at every evaluation
    assert history(tmp_path / "eager") == history(tmp_path / "graph") and len(result.history) == 4
    summary = json.loads((tmp_path / "graph" / "summary.json").read_text())
    assert summary["step"] == "cuda graph"


def _stop_at(iteration: int):  # type: ignore[no-untyped-def]
    def callback(metrics: dict) -> None:
        if metrics["iteration"] == iteration:
            raise KeyboardInterrupt

    return callback


def test_a_captured_run_resumes_bit_exactly_in_either_mode(tmp_path: Path, captured: list[Spy]) -> None:
    train(tiny(tmp_path / "straight", iterations=14))  # captured from step 4 to the end
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(tiny(run, iterations=14), callback=_stop_at(8))
    assert list_checkpoints(run)[0].name == "ckpt-00000008"  # newest first
    _, state = load_checkpoint(list_checkpoints(run)[0])
    assert all(type(g["lr"]) is float for g in state["optimizer"]["param_groups"])  # as an eager run saves
    eager_copy = tmp_path / "eager-resume"
    shutil.copytree(run, eager_copy)
    train(replace(tiny(run, iterations=14), resume=str(run), out=None))  # 3 eager steps, then a new capture
    assert [s.captures for s in captured] == [1, 1, 1]
    assert_same_weights(tmp_path / "straight", run)
    train(replace(tiny(eager_copy, iterations=14, cuda_graphs=False), resume=str(eager_copy), out=None))
    assert len(captured) == 3
    assert_same_weights(tmp_path / "straight", eager_copy)


def test_the_adaptive_warmup_reads_the_captured_steps_logits(tmp_path: Path, captured: list[Spy]) -> None:
    adaptive = dict(
        iterations=16, warmup="adaptive", warmup_iters=14, warmup_lr=0.01, warmup_until_error=0.95,
        warmup_epochs=None,
    )  # fmt: skip
    graph = train(tiny(tmp_path / "graph", **adaptive))
    assert captured[0].replays == 16 - graphs.EAGER_STEPS
    ended = graph.history[-1]["warmup_ended_at"]
    assert ended is not None and ended > graphs.EAGER_STEPS  # it ended on a captured step's figures
    eager = train(tiny(tmp_path / "eager", cuda_graphs=False, **adaptive))
    assert len(captured) == 1 and eager.history[-1]["warmup_ended_at"] == ended
    assert_same_weights(tmp_path / "eager", tmp_path / "graph")


class Failing(graphs.CallAgain):
    def capture(self, fn):  # type: ignore[no-untyped-def]
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")


def test_a_capture_that_fails_says_so_in_one_line_and_trains_on_eagerly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    train(tiny(tmp_path / "eager", cuda_graphs=False))
    monkeypatch.setattr(graphs, "graph_plan", lambda *a, **k: graphs.GraphPlan(True, None))
    monkeypatch.setattr(graphs, "new_capture", lambda device: Failing())
    train(tiny(tmp_path / "failed", progress="lines"))
    err = [line for line in capsys.readouterr().err.splitlines() if "cuda graphs" in line]
    assert err == [
        "reslab: warning: cuda graphs: the capture failed (operation not permitted when stream is "
        "capturing); the run goes on eagerly"
    ]
    assert_same_weights(tmp_path / "eager", tmp_path / "failed")


def _plan(
    rt: Runtime, *, resident: bool = True, checkpointing: bool = False, **settings: object
) -> graphs.GraphPlan:
    spec = runtime_spec(TrainConfig(**settings))  # type: ignore[arg-type]
    return graphs.graph_plan(spec, rt, resident=resident, checkpointing=checkpointing)


def test_where_the_capture_applies() -> None:
    cpu = Runtime(torch.device("cpu"), "bf16", True)
    assert _plan(cpu) == graphs.GraphPlan(False, None, None)  # off a GPU: eager, and nothing said
    assert _plan(cpu, compile=True) == graphs.GraphPlan(False, "default", None)
    cuda = Runtime(CUDA, "bf16", True)
    assert _plan(cuda) == graphs.GraphPlan(True, None, None) and _plan(cuda).kind == "cuda graph"
    assert _plan(Runtime(CUDA, "fp32", True)).capture
    reduce = _plan(cuda, compile=True)  # torch.compile's own CUDA graphs instead of the hand capture
    assert reduce == graphs.GraphPlan(False, "reduce-overhead", None)
    assert reduce.kind == "compiled, cuda graphs"
    assert _plan(cuda, cuda_graphs=False) == graphs.GraphPlan(False, None, None)  # asked off: no message
    cases = {
        "DDP": _plan(Runtime(CUDA, "bf16", True, rank=0, world_size=2)),
        "fp16": _plan(Runtime(CUDA, "fp16", True)),
        "streamed": _plan(cuda, resident=False),
        "--activation-checkpointing": _plan(cuda, checkpointing=True),
        "compile": _plan(Runtime(CUDA, "fp16", True), compile=True),
    }
    for word, plan in cases.items():
        assert not plan.capture and plan.note is not None and "\n" not in plan.note, word
        assert plan.note.startswith("cuda graphs: off ") and "--no-cuda-graphs" in plan.note
    assert "DDP" in cases["DDP"].note and "fp16" in cases["fp16"].note  # type: ignore[operator]
    assert "streamed" in cases["streamed"].note  # type: ignore[operator]
    assert cases["compile"].compile_mode == "default"  # fp16 + --compile: compiled, without graphs


def test_a_cpu_run_says_nothing_about_graphs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train(tiny(tmp_path / "r", iterations=4, progress="lines"))
    assert "graph" not in capsys.readouterr().err
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["runtime"]["step"] == "eager" and saved["config"]["cuda_graphs"] is True


def test_without_fused_sgd_the_step_is_eager_and_says_why() -> None:
    from reslab.engine.guards import FiniteWatch
    from reslab.engine.step import StepState

    model = torch.nn.Linear(3, 2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # torch's per-tensor loop
    st = StepState(
        model, list(model.parameters()), sgd, Runtime(CUDA, "bf16", True), FiniteWatch(torch.device("cpu"))
    )
    said: list[str] = []
    stepper = graphs.make_stepper(st, graphs.GraphPlan(True, None), warn=said.append)
    assert isinstance(stepper, graphs.EagerStep) and len(said) == 1 and "fused SGD" in said[0]


def test_the_flag_and_its_resume_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["train", "--help"]) == 0
    assert "--no-cuda-graphs" in capsys.readouterr().out
    assert exit_code(["train", "--no-cuda-graphs", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["cuda_graphs"] is False
    from reslab.settings import fields_of

    field = next(f for f in fields_of(TrainConfig) if f.name == "cuda_graphs")
    assert field.metadata["resume"] == "session" and field.metadata["sweep"] is False
