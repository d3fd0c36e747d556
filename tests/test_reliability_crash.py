"""Crash safety: ``reslab train`` killed with SIGKILL at a random step, then resumed.

SIGKILL cannot be caught, so nothing in reslab runs at the kill: what survives is whatever the atomic writes
left. A checkpoint is written at every step, so the kill lands in the middle of a write more often than not.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reslab.cli import main
from reslab.engine.store.checkpoint import list_checkpoints, load_checkpoint
from reslab.engine.store.rundir import read_jsonl

STEPS = 36
ARGS = [
    "train", "--model", "resnet8", "--dataset", "synthetic:1x12x12", "--iterations", str(STEPS),
    "--batch-size", "64", "--eval-every", "1", "--warmup-epochs", "0.5", "--precision", "fp32",
    "--device", "cpu", "--progress", "off", "--num-threads", "1",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    assert main([*ARGS, "--out", str(out)]) == 0
    return out


def _reslab(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "reslab", *argv], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _kill_at_a_random_step(run: Path, rng: random.Random, argv: list[str], max_delay: float) -> int:
    """Start ``reslab *argv``, SIGKILL it a random number of steps plus up to ``max_delay`` s later."""
    before = len(read_jsonl(run / "metrics.jsonl"))
    target, delay = before + rng.randint(3, STEPS // 3), rng.uniform(0.0, max_delay)
    proc = _reslab(*argv)
    deadline = time.monotonic() + 120
    seen = 0
    while proc.poll() is None and time.monotonic() < deadline:
        seen = len(read_jsonl(run / "metrics.jsonl"))
        if seen >= target:
            time.sleep(delay)
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill; the test proved nothing"
    return seen


def _assert_every_checkpoint_whole(run: Path) -> None:
    """Never half-visible: every checkpoint directory that exists is whole and verifies."""
    ckpts = list_checkpoints(run)
    assert 1 <= len(ckpts) <= 3  # the last two, plus at most one that was being pruned
    for ckpt in ckpts:
        _, state = load_checkpoint(ckpt)
        assert state["iteration"] == int(ckpt.name.split("-")[1])


def test_sigkill_twice_then_resume_is_bit_exact(tmp_path: Path, straight: Path) -> None:
    rng = random.Random(int(os.environ.get("RESLAB_KILL_SEED", "0")))  # seeded: a failure can be replayed
    run = tmp_path / "run"
    # A metrics line is written just before its checkpoint: a kill within ~2 ms of it lands in the write.
    assert _kill_at_a_random_step(run, rng, [*ARGS, "--out", str(run)], max_delay=0.002) >= 3
    _assert_every_checkpoint_whole(run)
    # A resumed run dies too, anywhere in a step, evaluation or write.
    _kill_at_a_random_step(run, rng, ["train", "--resume", str(run)], max_delay=0.03)
    _assert_every_checkpoint_whole(run)
    assert not (run / "summary.json").exists()

    assert main(["train", "--resume", str(run)]) == 0  # in-process: only the killed runs need their own
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Nothing lost or doubled in the log either: one line per step, in order.
    assert [m["iteration"] for m in read_jsonl(run / "metrics.jsonl")] == list(range(1, STEPS + 1))
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
