"""Independent runs on several devices at once: one process per device, each taking the next waiting run.

For a sweep of small CIFAR nets this beats data-parallel runs: a batch of 128 split over 8 GPUs leaves every
GPU launch-bound while the all-reduce dominates, whereas N independent runs finish an N-GPU sweep about N
times sooner. Each run is a :mod:`reslab.engine.devices.worker` process pinned to its GPU with
``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from reslab.engine import TrainConfig
from reslab.engine.store.rundir import DIVERGED
from reslab.engine.store.runs import read_run_result
from reslab.errors import ConfigError, TrainingError

OnDone = Callable[[int, object], None]


def train_on_devices(
    configs: Sequence[TrainConfig], devices: Sequence[str], *, on_done: OnDone | None = None
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
        any failed (its one-line message; the other runs' results are on disk and were reported). A run
        that diverged is not a failure: its result is None and its ``diverged.json`` says where it stopped.
    """
    if not devices:
        raise ConfigError("no devices given; pass e.g. devices=['cuda:0', 'cuda:1'] or ['cpu']")
    outs = [c.out for c in configs]
    if any(o is None for o in outs) or len({str(Path(o).resolve()) for o in outs if o}) != len(outs):
        raise ConfigError("each run needs its own out directory to run concurrently; set TrainConfig.out")
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(configs)):
        todo.put(i)
    results: list[object] = [None] * len(configs)
    errors: dict[int, str] = {}
    lock = threading.Lock()
    cpu_share = max(1, (os.cpu_count() or 1) // (sum(d == "cpu" for d in devices) or 1))

    def worker(device: str) -> None:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            code, result, error = _run_one(configs[i], device, cpu_share)
            with lock:
                if code == 0:
                    results[i] = result
                    if on_done is not None and result is not None:
                        on_done(i, result)
                else:
                    errors[i] = f"run {configs[i].out} on {device}: {error}"

    threads = [threading.Thread(target=worker, args=(d,), daemon=True) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        first = min(errors)
        raise TrainingError(f"{len(errors)} of {len(configs)} runs failed; first: {errors[first]}")
    return results


def _run_one(cfg: TrainConfig, device: str, cpu_share: int) -> tuple[int, object, str]:
    """Train one config in a worker process on ``device``: (exit code, RunResult or None, last error line)."""
    env = dict(os.environ)
    kind, _, index = device.partition(":")
    if kind == "cuda":  # the child sees one GPU, as cuda:0: no stray context on the other devices
        env["CUDA_VISIBLE_DEVICES"] = index or "0"
    cfg = replace(cfg, device=kind, progress="off")  # type: ignore[arg-type]
    if kind == "cpu" and cfg.num_threads is None:
        cfg = replace(cfg, num_threads=cpu_share)
    cmd = [sys.executable, "-m", "reslab.engine.devices.worker", json.dumps(cfg.to_dict())]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode == 3 and (Path(str(cfg.out)) / DIVERGED).is_file():
        return 0, None, ""  # a run that diverged is a result of the sweep, recorded in its directory
    if proc.returncode != 0:
        return (
            proc.returncode,
            None,
            (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1],
        )
    return 0, read_run_result(Path(cfg.out)), ""  # type: ignore[arg-type]
