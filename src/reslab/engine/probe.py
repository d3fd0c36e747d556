"""A few timed training steps of a run, without its run directory: what a sweep's time estimate reads.

:class:`Probe` builds a run's data, network and step exactly as :func:`~reslab.engine.loop.train` would
(the same device, precision, batch, threads and step: eager, compiled or captured as a CUDA graph), runs the
steps that set it up (the eager steps before a capture, a compilation), then times steady steps and a few
evaluation batches. It writes nothing and leaves the process as it found it: the RNG states of Python, numpy
and torch, and torch's thread count, are restored when it closes.
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from reslab.engine.config import TrainConfig
from reslab.engine.data import RunData, load_data
from reslab.engine.devices.runtime import Runtime, resolve_device, resolve_runtime, seed_everything
from reslab.engine.graphs import EAGER_STEPS, compiled, graph_plan, make_stepper
from reslab.engine.guards import FiniteWatch
from reslab.engine.inference import evaluate_model
from reslab.engine.net import build_net
from reslab.engine.optim import make_sgd, trainable
from reslab.engine.specs import DataSpec, RunSpecs, resolve
from reslab.engine.step import Interval, StepState

EVAL_BATCHES = 2  # evaluation batches timed (after one untimed)


@dataclass(frozen=True)
class RunCost:
    """Measured costs of one run's parts, and how much of each the whole run has."""

    step_s: float  # seconds per training step, steady state
    eval_image_s: float  # seconds per image evaluated
    setup_s: float  # data (when it was loaded for this probe), network, and the steps that set the step up
    steps: int  # optimizer steps of the whole run
    eval_images: int  # images evaluated over the whole run: the test split at each evaluation point, then
    # the final training and test figures
    peak_bytes: int | None = None  # CUDA: memory the process's allocator held at its peak (None elsewhere)

    def seconds(self, *, from_step: int = 0) -> float:
        """The run's time from ``from_step`` (a resumed run) to its end."""
        left = max(self.steps - from_step, 0)
        done = from_step / max(self.steps, 1)
        return self.setup_s + left * self.step_s + (1 - done) * self.eval_images * self.eval_image_s


@contextlib.contextmanager
def _untouched(device: torch.device) -> Iterator[None]:
    """Everything a probe could change in this process, restored afterwards: RNG states and threads."""
    states = (random.getstate(), np.random.get_state(), torch.get_num_threads())
    devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # seeding a run seeds every GPU's generator
        try:
            yield
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_num_threads(states[2])


def _cycle(data: RunData) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    epoch = 0
    while True:
        yield from data.train.epoch(epoch)
        epoch += 1


class Probe:
    """One run's step, ready to time (see the module doc). Use as a context manager, or call ``close``."""

    def __init__(self, cfg: TrainConfig, *, data: tuple[DataSpec, RunData] | None = None) -> None:
        self.specs: RunSpecs = resolve(replace(cfg, resume=None, progress="off", logger=()))
        self._restore: contextlib.AbstractContextManager[None] | None = _untouched(
            resolve_device(self.specs.runtime.device)
        )
        self._restore.__enter__()
        t0 = time.perf_counter()
        try:
            self.rt: Runtime = resolve_runtime(self.specs.runtime)
            if self.rt.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.rt.device)
            seed_everything(self.specs.data.seed)
            given = data[1] if data is not None and _same_data(data[0], self.specs.data) else None
            self.data: RunData = given or load_data(self.specs.data, self.rt)
            self._build()
        except BaseException:
            self.close()
            raise
        self.setup_s = time.perf_counter() - t0

    def _build(self) -> None:
        specs, rt = self.specs, self.rt
        net = build_net(specs.net, rt, num_classes=len(self.data.classes), input_shape=self.data.image_shape)
        self.model = net.model
        from reslab.data.loader import DeviceLoader

        self.plan = graph_plan(
            specs.runtime, rt, resident=isinstance(self.data.train, DeviceLoader),
            checkpointing=specs.net.activation_checkpointing,
        )  # fmt: skip
        self.fwd = compiled(self.model, self.plan)
        state = StepState(
            forward=self.fwd, params=trainable(self.model), optimizer=make_sgd(self.model, specs.optim),
            runtime=rt, watch=FiniteWatch(rt.device), label_smoothing=specs.optim.label_smoothing,
            grad_clip=specs.optim.grad_clip,
            scaler=torch.amp.GradScaler(rt.device.type) if rt.precision == "fp16" else None,
        )  # fmt: skip
        self.stepper = make_stepper(state, self.plan, warn=lambda _line: None)
        self.batches = _cycle(self.data)
        self.interval = Interval.zeros(rt.device)
        self.model.train()
        self.it = 0

    def steps(self, n: int) -> None:
        """``n`` training steps at the run's peak learning rate."""
        for _ in range(n):
            x, y = next(self.batches)
            self.it += 1
            lr = self.specs.optim.lr
            self.stepper(x, y, lr=lr, iteration=self.it, interval=self.interval)

    def sync(self) -> None:
        if self.rt.device.type == "cuda":
            torch.cuda.synchronize(self.rt.device)

    def warm(self) -> float:
        """The steps that set the step up (the eager steps and the capture, a compilation); their seconds."""
        t0 = time.perf_counter()
        self.steps((EAGER_STEPS + 1 if self.plan.capture else 1) + (2 if self.plan.compile_mode else 0))
        self.sync()
        return time.perf_counter() - t0

    def time_steps(self, n: int) -> float:
        """Seconds per step over ``n`` steady steps."""
        self.sync()
        t0 = time.perf_counter()
        self.steps(n)
        self.sync()
        return (time.perf_counter() - t0) / max(n, 1)

    def steps_for(self, seconds: float, *, chunk: int = 5) -> float:
        """Steps per second over about ``seconds`` of steady steps (concurrency probes run side by side)."""
        self.sync()
        t0, done = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds or done == 0:
            self.steps(chunk)
            self.sync()
            done += chunk
        return done / (time.perf_counter() - t0)

    def time_eval(self) -> float:
        """Seconds per evaluated image, over a few batches of the test split (the first one untimed)."""
        loader = self.data.eval_test
        first = list(_take(loader, 1))
        evaluate_model(self.fwd, first, amp_dtype=self.rt.amp_dtype)
        batches = list(_take(loader, EVAL_BATCHES))
        self.sync()
        t0 = time.perf_counter()
        evaluate_model(self.fwd, batches, amp_dtype=self.rt.amp_dtype)
        self.sync()
        return (time.perf_counter() - t0) / max(sum(int(y.shape[0]) for _, y in batches), 1)

    def cost(self, steps: int = 2) -> RunCost:
        """The run's costs: set-up, ``steps`` timed steps, a few evaluation batches."""
        setup = self.setup_s + self.warm()
        step_s = self.time_steps(steps)
        eval_image_s = self.time_eval()
        total = self.specs.optim.run_length(len(self.data.train))
        every = self.specs.output.eval_every or len(self.data.train)
        test, train = self.data.eval_test.n, self.data.eval_train.n
        images = math.ceil(total / every) * test + train + test
        cuda = self.rt.device.type == "cuda"
        peak = torch.cuda.max_memory_reserved(self.rt.device) if cuda else None
        return RunCost(step_s, eval_image_s, setup, total, images, peak)

    def close(self) -> None:
        """Free the network and its step (and the GPU's cached blocks); restore RNG states and threads."""
        for name in ("stepper", "fwd", "model", "batches", "interval", "data"):
            self.__dict__.pop(name, None)
        gc.collect()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        if self._restore is not None:
            self._restore.__exit__(None, None, None)
            self._restore = None

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _take(loader: Any, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for k, batch in enumerate(loader):
        if k >= n:
            return
        yield batch


def _same_data(a: DataSpec, b: DataSpec) -> bool:
    """Whether two runs read the same splits in the same form (their seeds only order the batches)."""
    return replace(a, seed=0) == replace(b, seed=0)
