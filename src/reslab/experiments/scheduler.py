"""Independent runs on several devices at once: one worker process per device slot, each taking the next
waiting run.

For a sweep of small CIFAR nets this beats data-parallel runs: a batch of 128 split over 8 GPUs leaves every
GPU launch-bound while the all-reduce dominates, whereas N independent runs finish an N-GPU sweep about N
times sooner. A slot is a :mod:`reslab.engine.devices.worker` process started with ``--serve``, pinned to its
GPU with ``CUDA_VISIBLE_DEVICES``; it trains the runs it is given one after another, so a sweep of short runs
starts Python, torch and a GPU context once per slot. ``cuda:0`` listed three times is three slots on one
GPU: three runs share it (``--runs-per-device``). The same workers time a run's step side by side
(:func:`measure_concurrency`), which is how ``--runs-per-device auto`` can be chosen by measurement.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from reslab.engine import TrainConfig
from reslab.engine.config import Device
from reslab.engine.store.rundir import DIVERGED
from reslab.engine.store.runs import read_run_result
from reslab.errors import ConfigError, TrainingError

OnDone = Callable[[int, object], None]
WORKER = "reslab.engine.devices.worker"
_KINDS: dict[str, Device] = {"cpu": "cpu", "cuda": "cuda", "mps": "mps"}  # a slot names its device


def cpu_share(devices: Sequence[str]) -> int:
    """CPU threads of each run when ``devices`` lists the CPU k times: the cores split evenly."""
    return max(1, (os.cpu_count() or 1) // (sum(d == "cpu" for d in devices) or 1))


def train_on_devices(
    configs: Sequence[TrainConfig], devices: Sequence[str], *, on_done: OnDone | None = None
) -> list[object]:
    """Train independent runs concurrently, one worker process per device slot; returns their RunResults.

    Args:
        configs: the runs; each needs its own ``out`` (two runs may not share a directory).
        devices: e.g. ``["cuda:0", "cuda:1"]`` (each run sees only its GPU), ``["cuda:0"] * 3`` (three runs
            at a time on one GPU) or ``["cpu", "cpu"]`` (CPU threads are split evenly unless ``num_threads``
            is set). A slot takes the next waiting run as soon as its current one ends, so mixed depths keep
            every device busy.
        on_done: called as ``on_done(index, result)`` when a run finishes (e.g. to save sweep results).

    Raises:
        ConfigError: no devices, a device that is not cpu, cuda[:N] or mps, or runs without distinct
        ``out``. TrainingError: after all runs ended, if
        any failed (its one-line message; the other runs' results are on disk and were reported). A run
        that diverged is not a failure: its result is None and its ``diverged.json`` says where it stopped.
    """
    if not devices:
        raise ConfigError("no devices given; pass e.g. devices=['cuda:0', 'cuda:1'] or ['cpu']")
    kinds = {d: _kind(d) for d in devices}
    outs = [c.out for c in configs]
    if any(o is None for o in outs) or len({str(Path(o).resolve()) for o in outs if o}) != len(outs):
        raise ConfigError("each run needs its own out directory to run concurrently; set TrainConfig.out")
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(configs)):
        todo.put(i)
    results: list[object] = [None] * len(configs)
    errors: dict[int, str] = {}
    lock = threading.Lock()
    share = cpu_share(devices)

    def one(worker: Worker, device: str, i: int) -> None:
        code, result, error = _run_one(worker, configs[i], kinds[device], share)
        with lock:
            if code == 0:
                results[i] = result
                if on_done is not None and result is not None:
                    on_done(i, result)
            else:
                errors[i] = f"run {configs[i].out} on {device}: {error}"

    threads = [threading.Thread(target=_slot, args=(d, todo, one), daemon=True) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        first = min(errors)
        raise TrainingError(f"{len(errors)} of {len(configs)} runs failed; first: {errors[first]}")
    return results


def _slot(device: str, todo: queue.Queue[int], one: Callable[[Worker, str, int], None]) -> None:
    """One slot: a worker process that takes the next waiting run until none is left (a fresh process after
    one that crashed)."""
    worker: Worker | None = None
    try:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            worker = worker or Worker(device)
            one(worker, device, i)
            if not worker.alive():
                worker.close()
                worker = None
    finally:
        if worker is not None:
            worker.close()


class Worker:
    """One ``worker --serve`` process on one device (see the module doc); its stderr is kept, last lines
    first, for the error of a process that ends without answering."""

    def __init__(self, device: str) -> None:
        env = dict(os.environ)
        kind, _, index = device.partition(":")
        if kind == "cuda":  # the child sees one GPU, as cuda:0: no stray context on the other devices
            env["CUDA_VISIBLE_DEVICES"] = index or "0"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", WORKER, "--serve"], env=env, text=True, bufsize=1,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.tail: collections.deque[str] = collections.deque(maxlen=50)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # a full pipe would stall the worker: read it as it comes
            self.tail.append(line.rstrip("\n"))

    def send(self, text: str) -> bool:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def read(self) -> dict[str, Any] | None:
        """The next reply, or None when the process ended (or answered something that is not a reply)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        try:
            reply = json.loads(line) if line else None
        except ValueError:
            return None
        return reply if isinstance(reply, dict) else None

    def ask(self, request: dict[str, Any]) -> dict[str, Any] | None:
        return self.read() if self.send(json.dumps(request)) else None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def last_error(self) -> str:
        """Why the process ended: its last line on stderr, or its exit code."""
        code = self.proc.wait()
        self._reader.join(timeout=5)
        lines = [line for line in self.tail if line.strip()]
        return lines[-1] if lines else f"the worker process ended with exit code {code}"

    def close(self) -> None:
        """End the process: no more requests (it exits after its current one)."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _kind(device: str) -> Device:
    """The kind of a device slot (``cuda:1`` -> ``cuda``: its worker process sees that GPU alone)."""
    kind = _KINDS.get(device.partition(":")[0])
    if kind is None:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps")
    return kind


def _run_one(worker: Worker, cfg: TrainConfig, kind: Device, share: int) -> tuple[int, object, str]:
    """Train one config in ``worker`` on a device of ``kind``: (exit code, RunResult or None, one-line
    error)."""
    cfg = replace(cfg, device=kind, progress="off")
    if kind == "cpu" and cfg.num_threads is None:
        cfg = replace(cfg, num_threads=share)
    reply = worker.ask({"config": cfg.to_dict()})
    if reply is None:
        return 1, None, worker.last_error()
    code = int(reply.get("code", 1))
    if code == 3 and (Path(str(cfg.out)) / DIVERGED).is_file():
        return 0, None, ""  # a run that diverged is a result of the sweep, recorded in its directory
    if code != 0:
        return code, None, str(reply.get("error") or f"exit code {code}")
    assert cfg.out is not None  # train_on_devices checked that every run has its own out
    return 0, read_run_result(Path(cfg.out)), ""


def measure_concurrency(
    cfg: TrainConfig, device: str, counts: Sequence[int], *, seconds: float = 2.0
) -> dict[int, float]:
    """Steps per second of ``cfg``'s step summed over ``n`` runs side by side on ``device``, for each n.

    ``n`` worker processes build the run's step (as training would, see :class:`~reslab.engine.probe.Probe`),
    wait until all are ready, then each steps for about ``seconds``. Raises TrainingError when a probe fails.
    """
    kind = _kind(device)
    workers = [Worker(device) for _ in range(max(counts))]
    rates: dict[int, float] = {}
    probe = replace(cfg, device=kind, progress="off")
    request = json.dumps({"probe": probe.to_dict(), "seconds": seconds})
    try:
        for n in counts:
            group = workers[:n]
            sent = [w.send(request) for w in group]  # all build their step at once, then wait for "go"
            replies = [w.read() if ok else None for w, ok in zip(group, sent, strict=True)]
            if not all(r and r.get("ready") for r in replies):
                raise TrainingError(f"concurrency probe on {device}: {_why(group, replies)}")
            for w in group:
                w.send("go")
            done = [w.read() for w in group]
            if not all(r and "steps_per_s" in r for r in done):
                raise TrainingError(f"concurrency probe on {device}: {_why(group, done)}")
            rates[n] = sum(float(r["steps_per_s"]) for r in done if r)
    finally:
        for w in workers:
            w.close()
    return rates


def _why(group: list[Worker], replies: list[dict[str, Any] | None]) -> str:
    for w, r in zip(group, replies, strict=True):
        if r is None:
            return w.last_error()
        if r.get("error"):
            return str(r["error"])
    return "no answer"
