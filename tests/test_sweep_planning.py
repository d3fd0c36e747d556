"""Before a sweep starts: runs per device (slots), the worker processes that fill them, and the time estimate.

All on a CPU with worker processes; the CUDA paths are checked through the pure functions that decide them.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import exit_code, one_line_error, tiny
from reslab.errors import ConfigError
from reslab.experiments import CompareConfig, compare
from reslab.experiments import scheduler as sched
from reslab.experiments.degradation import compare_runs
from reslab.experiments.planning import (
    Estimate,
    choose_count,
    clock,
    estimate_runs,
    fit_by_memory,
    plan_sweep,
    runs_per_device,
    static_devices,
)

SWEEP = dict(
    depths=(8, 14), dataset="synthetic:1x12x12", iterations=8, batch_size=64, eval_every=4, device="cpu",
    precision="fp32", num_threads=1,
)  # fmt: skip


def test_runs_per_device_is_a_count_or_auto() -> None:
    assert runs_per_device("3") == 3 and runs_per_device("auto") is None and runs_per_device(None) is None
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ConfigError, match="--runs-per-device must be a positive integer or auto"):
            runs_per_device(bad)


def test_slots_from_the_settings() -> None:
    def slots(devices, n, kind="cpu", gpus=0, cpu=None):  # type: ignore[no-untyped-def]
        return static_devices(devices, n, kind=kind, gpu_count=gpus, cpu_processes=cpu)

    # each --devices entry N times, interleaved so that the deepest runs (first) spread over the devices
    assert slots(("cuda:0", "cuda:1"), "2", "cuda") == ("cuda:0", "cuda:1", "cuda:0", "cuda:1")
    assert slots(("cuda:1",), None, "cuda") == ("cuda:1",)  # as given
    assert slots(None, "3", "cuda", gpus=2) == ("cuda:0", "cuda:1") * 3  # every visible GPU
    assert slots(None, "1", "cuda", gpus=1) is None  # one at a time: in this process, as before
    assert slots(None, None, "cuda", gpus=4) is None  # auto on CUDA: decided when the sweep starts
    assert slots(None, "3") == ("cpu",) * 3 and slots(None, None, cpu=2) == ("cpu", "cpu")  # CPU: processes
    assert slots(None, None) is None and slots(None, "2", "mps") is None


def test_resolve_spends_runs_per_device_once(tmp_path: Path) -> None:
    cfg = CompareConfig(runs_per_device="2", out=str(tmp_path), **SWEEP).resolve()  # type: ignore[arg-type]
    assert cfg.devices == ("cpu", "cpu") and cfg.runs_per_device is None
    assert cfg.resolve().devices == ("cpu", "cpu")  # resolving the resolved config: the same sweep
    two = CompareConfig(devices=("cpu", "cpu"), runs_per_device="2", **SWEEP).resolve()  # type: ignore[arg-type]
    assert two.devices == ("cpu",) * 4
    assert CompareConfig(preset="deep").resolve().devices == ("cpu", "cpu")  # auto on a CPU: the preset's
    assert CompareConfig(preset="deep", runs_per_device="1").resolve().devices is None
    assert cfg.settings_hash() == CompareConfig(out=str(tmp_path), **SWEEP).resolve().settings_hash()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--runs-per-device", "0"], "--runs-per-device must be a positive integer or auto, got '0'"),
        (["--runs-per-device", "many"], "--runs-per-device must be a positive integer or auto"),
    ],
)
def test_a_bad_runs_per_device_is_one_line(tmp_path: Path, capsys, flags: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    assert exit_code(["compare", *flags, "--out", str(tmp_path / "x")]) == 2
    assert message in one_line_error(capsys)
    assert exit_code(["ablate", *flags, "--out", str(tmp_path / "y")]) == 2
    assert message in one_line_error(capsys)


def test_memory_and_measured_counts() -> None:
    gib = 2**30
    assert fit_by_memory(100 * gib, 9 * gib, 16) == 9  # 90 GiB / (9 + 1 GiB of context)
    assert fit_by_memory(100 * gib, 1 * gib, 4) == 4  # the cap
    assert fit_by_memory(5 * gib, 20 * gib, 4) == 1  # never below one
    assert fit_by_memory(None, 1, 4) == 4 and fit_by_memory(1, None, 3) == 3  # unknown: the cap
    assert choose_count({1: 100.0, 2: 180.0, 4: 250.0}) == 4
    assert choose_count({1: 100.0, 2: 105.0, 4: 300.0}) == 4  # judged against the best so far
    assert choose_count({1: 100.0, 2: 105.0}) == 1  # time-slicing that brings nothing: one at a time
    assert choose_count({1: 100.0, 2: 200.0, 4: 210.0}) == 2


def test_the_estimate_lays_runs_on_slots_as_the_scheduler_does() -> None:
    est = Estimate(run_seconds={0: 10.0, 1: 10.0, 2: 5.0})
    assert est.sweep_seconds(1) == 25.0 and est.sweep_seconds(2) == 15.0 and est.sweep_seconds(3) == 10.0
    est.slowdown = 1.5  # measured: each run 1.5x slower when runs share the GPU
    assert est.sweep_seconds(2) == 22.5 and est.sweep_seconds(1) == 25.0
    assert est.text(1) == ": estimated 25 s"
    assert est.text(2, assumed=True).endswith(
        "with 2 runs at a time, if the runs sharing a GPU do not slow each other"
    )
    assert Estimate(error="boom").text(1) == "; no time estimate (boom)" and Estimate().text(2).endswith(
        "left to train"
    )
    assert [clock(s) for s in (0.2, 45, 200, 3 * 3600 + 25 * 60)] == [
        "1 s",
        "45 s",
        "3 min 20 s",
        "3 h 25 min",
    ]


def test_cpu_threads_are_split_between_the_processes() -> None:
    cores = os.cpu_count() or 1
    assert sched.cpu_share(["cpu"] * 2) == max(1, cores // 2) and sched.cpu_share(["cuda:0"]) == cores
    assert sched.cpu_share(["cpu"] * (4 * cores)) == 1


def test_runs_per_device_trains_in_one_worker_per_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 runs, 2 slots on the CPU: two worker processes train them all, each run with half the cores."""
    started: list[str] = []

    class Counted(sched.Worker):
        def __init__(self, device: str) -> None:
            started.append(device)
            super().__init__(device)

    monkeypatch.setattr(sched, "Worker", Counted)
    settings = {**SWEEP, "num_threads": None, "iterations": 3}
    result = compare(CompareConfig(runs_per_device="2", out=str(tmp_path / "s"), progress="off", **settings))  # type: ignore[arg-type]
    assert len(result.runs) == 4 and started == ["cpu", "cpu"]
    for run in (tmp_path / "s").glob("*-s0"):
        saved = json.loads((run / "config.json").read_text())["config"]
        assert saved["num_threads"] == sched.cpu_share(["cpu", "cpu"]) and saved["device"] == "cpu"


def test_a_worker_that_fails_outside_reslab_answers_then_ends() -> None:
    worker = sched.Worker("cpu")
    try:
        reply = worker.ask({"not a request": 1})  # a KeyError in the worker: a bug, answered, then it ends
        assert reply is not None and reply["code"] == 1 and reply["fatal"] and "KeyError" in reply["error"]
        worker.proc.wait(timeout=60)
        assert not worker.alive() and worker.ask({"config": {}}) is None
        assert worker.last_error()  # the scheduler's one line for that run
    finally:
        worker.close()


def test_serve_trains_answers_errors_and_probes(tmp_path: Path) -> None:
    from reslab.engine.devices.worker import serve

    good = tiny(tmp_path / "run", iterations=2).to_dict()
    bad = {**good, "model": "resnet7", "out": str(tmp_path / "bad")}
    probe = {"probe": tiny(tmp_path / "p", iterations=2).to_dict(), "seconds": 0.05}
    lines = [json.dumps({"config": good}), json.dumps({"config": bad}), json.dumps(probe), "go"]
    replies = io.StringIO()
    assert serve(io.StringIO("\n".join(lines) + "\n"), replies) == 0
    answers = [json.loads(line) for line in replies.getvalue().splitlines()]
    assert answers[0] == {"code": 0} and (tmp_path / "run" / "summary.json").is_file()
    assert answers[1]["code"] == 2 and "resnet7" in answers[1]["error"] and "\n" not in answers[1]["error"]
    assert answers[2] == {"ready": True} and answers[3]["code"] == 0 and answers[3]["steps_per_s"] > 0


def test_concurrency_is_measured_with_probes_side_by_side(tmp_path: Path) -> None:
    rates = sched.measure_concurrency(tiny(tmp_path / "p", iterations=2), "cpu", [1, 2], seconds=0.2)
    assert not (tmp_path / "p").exists()  # probes write nothing
    assert sorted(rates) == [1, 2] and all(r > 0 for r in rates.values())


def _seconds(line: str) -> float:
    m = re.search(r"estimated (?:(\d+) min )?(\d+) s", line)
    assert m is not None, line
    return 60 * int(m[1] or 0) + int(m[2])


def test_the_estimate_is_printed_with_the_plan_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = CompareConfig(out=str(tmp_path / "est"), progress="lines", **{**SWEEP, "iterations": 24})  # type: ignore[arg-type]
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    devices, text = plan_sweep(cfg.resolve(), compare_runs(cfg.resolve()), key=lambda j: j.depth)
    assert torch.equal(rng, torch.get_rng_state()) and torch.get_num_threads() == threads  # untouched
    assert devices is None and not (tmp_path / "est").exists()  # nothing written, no run directory
    t0 = time.perf_counter()
    compare(cfg)
    real = time.perf_counter() - t0
    plan = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("compare: 4 runs"))
    assert text.startswith(": estimated ") and ": estimated " in plan
    assert _seconds(plan) > 0 and real / 8 < _seconds(plan) < real * 8 + 2, (plan, real)  # a loose factor
    # the same sweep without the estimate trains the same weights
    compare(replace(cfg, out=str(tmp_path / "plain"), estimate=False))
    assert "estimated" not in capsys.readouterr().err
    for run in ("plain8-s0", "resnet14-s0"):
        a = load_file(str(tmp_path / "est" / run / "model.safetensors"))
        b = load_file(str(tmp_path / "plain" / run / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a)
    # finished runs cost nothing, and are not probed again
    _, again = plan_sweep(cfg.resolve(), compare_runs(cfg.resolve()), key=lambda j: j.depth)
    assert again == ": nothing left to train"


def test_past_its_budget_the_estimate_scales_the_models_it_did_not_time(tmp_path: Path) -> None:
    cfg = CompareConfig(out=str(tmp_path / "s"), **SWEEP).resolve()  # type: ignore[arg-type]
    jobs = compare_runs(cfg)
    est = estimate_runs(jobs, key=lambda j: j.depth, budget_s=0.0)  # time for one probe only: the shallowest
    assert (est.timed, est.models) == (1, 2) and sorted(est.run_seconds) == [0, 1, 2, 3]
    by_depth = {j.depth: est.run_seconds[j.index] for j in jobs}
    assert by_depth[14] > by_depth[8] > 0  # 14 layers: the 8-layer step and evaluation, x 14/8
    assert "(1 of 2 models timed, the others scaled by depth)" in est.text(1)
