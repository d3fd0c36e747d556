"""Starting processes for the user: ``reslab train --nproc N`` (torchrun) and one run per device (sweeps).

:func:`launch_torchrun` runs torchrun's own launcher (``torch.distributed.run``: the elastic agent, a
standalone c10d rendezvous on a free port, ``--max-restarts 0``) in this process, with the workers running
``python -m reslab train --config-json ...``. It is exactly::

    torchrun --standalone --nproc-per-node N --max-restarts 0 -m reslab train <flags>

When a worker dies, the agent stops the others (SIGTERM, then SIGKILL) and we print one line naming the rank.

:func:`train_on_devices` runs independent TrainConfigs concurrently, one process per device, each pinned to
its GPU with ``CUDA_VISIBLE_DEVICES``: for a depth sweep of small CIFAR nets this beats data-parallel runs
(see the report of issue 7 / README).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path

from reslab.errors import ConfigError, TrainingError
from reslab.train.config import TrainConfig
from reslab.train.distributed import local_batch

# Worker exit codes of the reslab CLI that carry meaning (2 = bad input, 3 = training failed, 130 = Ctrl-C).
_CLI_CODES = (2, 3, 130)


def torchrun_args(cfg: TrainConfig, nproc: int) -> list[str]:
    """Arguments of ``torchrun`` (or ``python -m torch.distributed.run``) for ``nproc`` local workers."""
    return [
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "--max-restarts",
        "0",  # a dead worker ends the job: a restart would only replay the same failure
        "-m",
        "reslab",
        "train",
        "--config-json",
        json.dumps(cfg.to_dict()),
    ]


def describe_failure(failures: dict[int, object]) -> tuple[str, int]:
    """(one line, exit code) for torchrun's ``ChildFailedError.failures`` ({rank: ProcessFailure})."""
    # torchrun SIGTERMs the survivors itself: the root cause is a failure other than that, the earliest.
    causes = [r for r in failures if getattr(failures[r], "exitcode", 1) != -15] or list(failures)
    first = min(causes, key=lambda r: (getattr(failures[r], "timestamp", 0), r))
    code = int(getattr(failures[first], "exitcode", 1))
    if code < 0:
        how = f"was killed by signal {-code}"
        with contextlib.suppress(Exception):
            how = f"was killed by {failures[first].signal_name()}"  # type: ignore[attr-defined]
        return f"rank {first} {how}; torchrun stopped the other ranks", 1
    others = "" if len(failures) == 1 else f" ({len(failures) - 1} other rank(s) failed too)"
    line = f"rank {first} exited with code {code}{others}; torchrun stopped the job (its message is above)"
    return line, code if code in _CLI_CODES else 1


def launch_torchrun(cfg: TrainConfig, nproc: int) -> int:
    """Run ``cfg`` data-parallel on ``nproc`` local processes through torchrun; return the exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args
    from torch.distributed.run import run as torchrun

    if nproc < 1:
        raise ConfigError(f"--nproc must be a positive integer, got {nproc}")
    cfg.validate()
    local_batch(cfg.batch_size, nproc)  # refuse an uneven split here, before any process starts
    # torchrun's default (1 thread per worker) without its banner; an explicit --num-threads still wins.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # The agent's log (rendezvous, worker groups, "failed (exitcode: -9)") is replaced by our one line.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        torchrun(parse_args(torchrun_args(cfg, nproc)))
    except ChildFailedError as err:
        line, code = describe_failure(err.failures)  # type: ignore[arg-type]
        if code not in _CLI_CODES:  # a reslab error already said what happened, in the rank's own line
            sys.stderr.write(f"reslab: error: {line}\n")
        return code
    except (SignalException, KeyboardInterrupt):
        sys.stderr.write("reslab: interrupted\n")
        return 130
    return 0


def _result_from_run_dir(run_dir: Path) -> object:
    """A :class:`RunResult` rebuilt from ``summary.json`` + ``metrics.jsonl`` of a finished run."""
    from reslab.train.engine import RunResult
    from reslab.train.rundir import METRICS, SUMMARY, read_jsonl

    summary = json.loads((run_dir / SUMMARY).read_text())
    names = {f.name for f in fields(RunResult)} - {"run_dir", "history"}
    return RunResult(
        run_dir=run_dir,
        history=read_jsonl(run_dir / METRICS),
        **{k: summary[k] for k in names},
    )


def train_on_devices(
    configs: Sequence[TrainConfig],
    devices: Sequence[str],
    *,
    on_done: Callable[[int, object], None] | None = None,
) -> list[object]:
    """Train independent runs concurrently, one subprocess per device; returns their RunResults in order.

    Args:
        configs: the runs; each needs its own ``out`` (two runs may not share a directory).
        devices: e.g. ``["cuda:0", "cuda:1"]`` (each run sees only its GPU) or ``["cpu", "cpu"]`` (CPU
            threads are split evenly unless ``num_threads`` is set). A device takes the next waiting run as
            soon as its current one ends, so mixed depths keep every device busy.
        on_done: called as ``on_done(index, result)`` when a run finishes (e.g. to save sweep results).

    Raises:
        ConfigError: no devices, or runs without distinct ``out``. TrainingError: after all runs ended, if
        any failed (its one-line message; the other runs' results are on disk and were reported).
    """
    if not devices:
        raise ConfigError("no devices given; pass e.g. devices=['cuda:0', 'cuda:1'] or ['cpu']")
    outs = [c.out for c in configs]
    if any(o is None for o in outs) or len({str(Path(o).resolve()) for o in outs if o}) != len(outs):
        raise ConfigError("each run needs its own out directory to run concurrently; set TrainConfig.out")
    cpu_share = max(1, (os.cpu_count() or 1) // (sum(d == "cpu" for d in devices) or 1))
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(configs)):
        todo.put(i)
    results: list[object] = [None] * len(configs)
    errors: dict[int, str] = {}
    lock = threading.Lock()

    def worker(device: str) -> None:
        env = dict(os.environ)
        kind, _, index = device.partition(":")
        if kind == "cuda":  # the child sees one GPU, as cuda:0: no stray context on the other devices
            env["CUDA_VISIBLE_DEVICES"] = index or "0"
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            cfg = replace(configs[i], device=kind, progress="off")  # type: ignore[arg-type]
            if kind == "cpu" and cfg.num_threads is None:
                cfg = replace(cfg, num_threads=cpu_share)
            cmd = [sys.executable, "-m", "reslab", "train", "--config-json", json.dumps(cfg.to_dict())]
            proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            with lock:
                if proc.returncode == 0:
                    results[i] = _result_from_run_dir(Path(cfg.out))  # type: ignore[arg-type]
                    if on_done is not None:
                        on_done(i, results[i])
                else:
                    last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
                    errors[i] = f"run {cfg.out} on {device}: {last}"

    threads = [threading.Thread(target=worker, args=(d,), daemon=True) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        first = min(errors)
        raise TrainingError(f"{len(errors)} of {len(configs)} runs failed; first: {errors[first]}")
    return results
