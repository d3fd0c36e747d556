"""Data-parallel training on CPU (gloo) with two processes: exactness, rank-0 IO, failure, resume.

The process-launching tests share one killed-then-resumed job (a module fixture): two launches in all, to
stay well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reslab.data.loader import DeviceLoader, Normalization
from reslab.engine import TrainConfig, train
from reslab.engine.devices.distributed import local_batch
from reslab.engine.devices.launch import describe_failure, torchrun_args
from reslab.errors import ConfigError
from reslab.experiments.scheduler import train_on_devices

# resnet8 (6 BatchNorms) on 512 synthetic 1x12x12 images: 8 steps of 64 per epoch. channels_last off: on
# this CPU a 1-thread NHWC conv takes another kernel path whose rounding differs by ~1e-4 after 6 steps.
CONFIG = dict(
    model="resnet8", dataset="synthetic:1x12x12", iterations=6, epochs=None, batch_size=64, eval_every=2,
    device="cpu", precision="fp32", channels_last=False, progress="off", sync_bn=True,
)  # fmt: skip
LAUNCH_LIMIT_S = 90  # a hung job fails the test instead of the CI run


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def _reslab(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reslab", "train", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=LAUNCH_LIMIT_S,
    )


def _max_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)


# --- pure pieces: sharding, batch split, launcher arguments, failure line


@pytest.mark.parametrize("world", [2, 3, 4])
def test_shards_are_disjoint_and_each_step_is_the_single_process_batch(world: int) -> None:
    n, batch = 50, 12  # 50 = 4 full batches + a short one of 2: fewer images than ranks in it for world 3, 4
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    labels = torch.arange(n)  # the label is the image's index
    norm = Normalization("channel", torch.zeros(1, 1, 1), torch.ones(1, 1, 1))

    def loader(rank: int, size: int, train: bool) -> DeviceLoader:
        return DeviceLoader(
            images, labels, batch_size=batch, norm=norm, shuffle=train, drop_last=train, seed=7,
            rank=rank, world_size=size,
        )  # fmt: skip

    for train_split in (True, False):  # training: shuffled, drop_last; evaluation: in order, all images
        single = [y.tolist() for _, y in loader(0, 1, train_split).epoch(3)]
        shards = [[y.tolist() for _, y in loader(r, world, train_split).epoch(3)] for r in range(world)]
        assert all(len(s) == len(single) for s in shards)  # the same number of steps on every rank
        seen: list[int] = []
        for step, whole in enumerate(single):
            union = [i for s in shards for i in s[step]]
            assert union == whole  # rank r holds the r-th slice of the global batch
            seen += union
        assert len(seen) == len(set(seen))  # disjoint
        if not train_split:
            assert sorted(seen) == list(range(n))  # evaluation covers the split exactly once


def test_global_batch_must_split_evenly() -> None:
    assert local_batch(128, 4) == 32
    with pytest.raises(ConfigError, match="multiple of 3"):
        local_batch(64, 3)


def test_torchrun_arguments_carry_the_resolved_config() -> None:
    cfg = TrainConfig(**CONFIG)  # type: ignore[arg-type]
    args = torchrun_args(cfg, 2)
    assert args[:6] == ["--standalone", "--nproc-per-node", "2", "--max-restarts", "0", "-m"]
    assert args[6] == "reslab.engine.devices.worker"
    assert TrainConfig.from_dict(json.loads(args[7])) == cfg


def test_a_dead_rank_is_one_line() -> None:
    class Failure:
        def __init__(self, code: int, ts: int) -> None:
            self.exitcode, self.timestamp = code, ts

        def signal_name(self) -> str:
            return "SIGKILL"

    line, code = describe_failure({1: Failure(-9, 5), 0: Failure(-15, 6)})
    assert line == "rank 1 was killed by SIGKILL; torchrun stopped the other ranks" and code == 1
    line, code = describe_failure({0: Failure(2, 5)})
    assert line.startswith("rank 0 exited with code 2") and code == 2 and "\n" not in line


# --- two real processes through torchrun: one killed job, then its resumption with ``--nproc 2``

DIE_SCRIPT = """
import os, signal
from reslab.engine import TrainConfig, train

def die(metrics):
    if os.environ["RANK"] == "1" and metrics["iteration"] == 4:
        os.kill(os.getpid(), signal.SIGKILL)

train(TrainConfig(**{config!r}), callback=die)
"""


@dataclass
class Job:
    run: Path  # the run directory
    killed: subprocess.CompletedProcess[str]  # torchrun, rank 1 SIGKILLed after iteration 4
    killed_s: float  # how long the killed job took to end
    finished_after_kill: bool  # summary.json present right after the killed job
    resumed: subprocess.CompletedProcess[str]  # reslab train --nproc 2 --resume RUN


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    """torchrun runs ``train()`` on 2 ranks without ``out`` (the name is rank 0's, broadcast); rank 1 dies
    after iteration 4; then ``reslab train --nproc 2 --resume`` finishes the run."""
    cwd = tmp_path_factory.mktemp("ddp")
    script = cwd / "die.py"
    script.write_text(DIE_SCRIPT.format(config=CONFIG))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    started = time.monotonic()
    killed = subprocess.run(
        [*torchrun, "--max-restarts", "0", str(script)],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=LAUNCH_LIMIT_S,
    )
    killed_s = time.monotonic() - started
    runs = list((cwd / "runs").iterdir()) if (cwd / "runs").is_dir() else []
    assert len(runs) == 1, (runs, killed.stderr[-2000:])  # one run directory, not one per rank
    finished = (runs[0] / "summary.json").exists()
    resumed = _reslab(["--nproc", "2", "--resume", str(runs[0])], cwd)
    return Job(runs[0], killed, killed_s, finished, resumed)


def test_killed_rank_stops_the_job_in_bounded_time(job: Job) -> None:
    assert job.killed.returncode != 0
    assert job.killed_s < 60, f"the surviving rank took {job.killed_s:.0f} s to stop"
    assert not job.finished_after_kill
    assert "SIGKILL" in job.killed.stderr  # torchrun names the signal that ended rank 1


def test_resumed_ddp_run_is_written_by_rank_0_only(job: Job) -> None:
    assert job.resumed.returncode == 0, job.resumed.stderr[-2000:]
    assert job.resumed.stdout.count("run: ") == 1  # only rank 0 reports
    lines = (job.run / "metrics.jsonl").read_text().splitlines()
    iterations = [json.loads(line)["iteration"] for line in lines]
    # no duplicated lines from rank 1; 4 may be missing if torchrun stopped rank 0 between checkpoint 4
    # and its metrics line
    assert iterations[0] == 2 and iterations[-1] == 6 and iterations == sorted(set(iterations))
    config = json.loads((job.run / "config.json").read_text())
    assert config["runtime"]["world_size"] == 2 and config["config"]["sync_bn"] is True
    assert [p.name for p in sorted((job.run / "checkpoints").iterdir())][-1] == "ckpt-00000006"


def test_ddp_with_sync_bn_matches_one_process(job: Job, tmp_path: Path) -> None:
    """Same global batches, averaged gradients, BN over the global batch: the same run up to rounding,
    through a kill and a resume on every rank from rank 0's checkpoint."""
    assert job.resumed.returncode == 0, job.resumed.stderr[-2000:]
    single = train(TrainConfig(**CONFIG, out=str(tmp_path / "single"), num_threads=1))  # type: ignore[arg-type]
    assert _max_diff(job.run, single.run_dir) < 1e-5
    summary = json.loads((job.run / "summary.json").read_text())
    # evaluation reduced over the two ranks' shards = evaluation of the whole split by one process
    assert summary["final_test_error"] == single.final_test_error
    assert summary["final_train_error"] == single.final_train_error
    assert summary["final_test_loss"] == pytest.approx(single.final_test_loss, abs=1e-5)


# --- sweeps: one independent run per device (what `reslab compare` would use on several GPUs)


def test_train_on_devices_runs_a_config_in_a_subprocess_and_returns_its_result(tmp_path: Path) -> None:
    """One run only (each costs a Python + torch start-up); the scheduling is a queue shared by devices."""
    with pytest.raises(ConfigError, match="own out directory"):
        train_on_devices([TrainConfig(out="a"), TrainConfig(out="a")], ["cpu"])
    cfg = TrainConfig(**dict(CONFIG, sync_bn=False, iterations=2), out=str(tmp_path / "r"), num_threads=1)  # type: ignore[arg-type]
    done: list[int] = []
    [result] = train_on_devices([cfg], ["cpu"], on_done=lambda i, _: done.append(i))
    assert done == [0]
    assert result.run_dir == tmp_path / "r" and result.iterations == 2  # type: ignore[attr-defined]
    assert [m["iteration"] for m in result.history] == [2]  # type: ignore[attr-defined]


@pytest.mark.parametrize("world", ["1", "2", "two"])
def test_leave_exits_with_the_code_and_flushes_output(world: str) -> None:
    # A rank of a multi-process job leaves with os._exit (no finalisation for gloo's threads to abort in):
    # the code and the unflushed output must still come out; atexit handlers then do not run.
    code = (
        "import atexit, sys; from reslab.engine.devices.distributed import leave; "
        "atexit.register(lambda: print('atexit ran')); "
        "sys.stdout.write('result line'); sys.stderr.write('err line'); leave(3)"
    )
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": world, "LOCAL_RANK": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 3
    assert out.stdout.startswith("result line") and out.stderr == "err line"
    assert ("atexit ran" in out.stdout) == (world != "2")  # malformed WORLD_SIZE: no job, a plain exit


def test_a_command_that_joins_no_job_ignores_a_malformed_torchrun_environment() -> None:
    env = {**os.environ, "RANK": "3", "WORLD_SIZE": "2"}
    cmd = [sys.executable, "-m", "reslab", "models"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "resnet20" in out.stdout and out.stderr == ""
