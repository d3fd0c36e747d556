"""The training step as one CUDA graph: captured once, replayed every step.

A deep CIFAR net at batch 128 launches thousands of small kernels per step; on a GPU the host's launches, not
the arithmetic, set the pace. Where the shapes are static (the training loader drops the last partial batch),
the whole step -- forward under autocast, loss, backward, the finite check, the SGD update and the interval's
running sums -- is captured once into a CUDA graph and replayed, as in PyTorch's "whole-network capture":

1. the first ``EAGER_STEPS`` steps of a session run eagerly on a side stream. They are real training steps
   (a side stream gives the same results), they create SGD's momentum buffers, and cuDNN and cuBLAS set
   themselves up there rather than during the capture;
2. the next step captures the step on that side stream, reading static input tensors and, for each
   parameter group, a one-element device tensor for the learning rate (capturing runs nothing);
3. from then on every step copies its batch into the static inputs, writes the scheduled learning rate into
   the lr tensors in place, and replays the graph. Loss, logits and the finite flag are the graph's static
   outputs (valid until the next replay); the interval's loss and correct sums are added inside the graph.

Where it applies (:func:`graph_plan`): CUDA, one process (no DDP), bf16 or fp32 (fp16's GradScaler reads its
scale on the host), data resident on the device, no activation checkpointing (its recomputation saves and
restores RNG state), torch's fused SGD (its update reads a tensor lr on the device). With ``--compile`` the
graphs are torch.compile's own (``mode="reduce-overhead"``) instead of this capture. A capture that fails
says so in one line and the run goes on eagerly.

The capture sits behind :class:`Capture`, so the static-buffer machinery also runs on a CPU, where
:class:`CallAgain`'s "replay" calls the step function again: that is how the tests check it, bit for bit,
against the eager loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch
import torch.nn.functional as F

from reslab.engine.devices.runtime import Runtime, autocast
from reslab.engine.optim import set_lr
from reslab.engine.specs import RuntimeSpec
from reslab.engine.step import Interval, NonFiniteStep, StepState, step_finite, train_step

EAGER_STEPS = 3  # eager steps before the capture, as PyTorch's whole-network example warms up
_T = TypeVar("_T")
Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # loss (), logits (B, K), finite () bool


@dataclass(frozen=True)
class GraphPlan:
    """How a run's step executes: the hand capture, a torch.compile mode, and the line that says why not."""

    capture: bool  # the whole step as one CUDA graph (this module)
    compile_mode: str | None  # torch.compile's mode for the model: None, "default" or "reduce-overhead"
    note: str | None = None  # one line when graphs were asked for on CUDA but do not apply

    @property
    def kind(self) -> str:
        """What config.json and summary.json record as the run's step."""
        if self.capture:
            return "cuda graph"
        return {None: "eager", "default": "compiled", "reduce-overhead": "compiled, cuda graphs"}[
            self.compile_mode
        ]


def graph_plan(spec: RuntimeSpec, rt: Runtime, *, resident: bool, checkpointing: bool) -> GraphPlan:
    """Whether the step is captured, compiled with CUDA graphs, or eager; silent off CUDA, one line on CUDA
    where ``--cuda-graphs`` (the default) cannot apply."""
    compile_mode = "default" if spec.compile else None
    if not spec.cuda_graphs or rt.device.type != "cuda":
        return GraphPlan(False, compile_mode)
    why = None
    if rt.world_size > 1:
        why = "under DDP (each process's all-reduce is its own)"
    elif rt.precision == "fp16":
        why = "with --precision fp16 (the GradScaler reads its scale on the host); bf16 has no scaler"
    elif not resident:
        why = "for data streamed from disk"
    elif checkpointing:
        why = "with --activation-checkpointing (its recomputation saves and restores RNG state)"
    if why is not None:
        note = f"cuda graphs: off {why}; the step runs eagerly (--no-cuda-graphs: no graphs, no message)"
        return GraphPlan(False, compile_mode, note)
    if spec.compile:
        return GraphPlan(False, "reduce-overhead")
    return GraphPlan(True, None)


def compiled(model: torch.nn.Module, plan: GraphPlan) -> torch.nn.Module:
    """The model as the plan runs it: itself, or torch.compile'd in the plan's mode."""
    if plan.compile_mode is None:
        return model
    # torch's stubs type the result as a plain callable; for a module it is an OptimizedModule, a Module
    return torch.compile(model, mode=plan.compile_mode)  # type: ignore[return-value]


class Capture(Protocol):
    """Where the eager warm-up steps run, and how a step function becomes something to replay."""

    def side(self) -> contextlib.AbstractContextManager[object]: ...

    def capture(self, fn: Callable[[], _T]) -> Callable[[], _T]: ...


class CallAgain:
    """A stand-in for a CUDA graph where there is none: "replay" calls the step function again.

    It runs what a graph replays (the same static inputs, lr tensors, in-place sums) without recording
    anything, so the machinery can be checked on a CPU.
    """

    def side(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def capture(self, fn: Callable[[], _T]) -> Callable[[], _T]:
        return fn


class CudaCapture:
    """One CUDA graph of a step function, captured on a side stream, replayed on the current stream."""

    def __init__(self, device: torch.device) -> None:
        self.stream = torch.cuda.Stream(device)
        self.graph: torch.cuda.CUDAGraph | None = None

    @contextlib.contextmanager
    def side(self) -> Iterator[None]:
        """Work on the side stream, ordered after and before the current stream's (the batch, the sums)."""
        current = torch.cuda.current_stream(self.stream.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            yield
        current.wait_stream(self.stream)

    def capture(self, fn: Callable[[], _T]) -> Callable[[], _T]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):  # the warm-up's stream: no lazy set-up in capture
            outputs = fn()  # recorded, not run: the tensors the replays will overwrite
        self.graph = graph

        def replay() -> _T:
            graph.replay()
            return outputs

        return replay


class Stepper(Protocol):
    """One training step on the batch (x, y), its figures added to ``interval``; returns (loss, logits)."""

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, *, lr: float, iteration: int, interval: Interval
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class EagerStep:
    """:func:`~reslab.engine.step.train_step`, then the interval's sums. ``mark_steps``: tell torch.compile's
    CUDA graphs (reduce-overhead) that a new training step begins, so its outputs may be overwritten."""

    def __init__(self, st: StepState, *, mark_steps: bool = False) -> None:
        self.st, self.mark_steps = st, mark_steps

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, *, lr: float, iteration: int, interval: Interval
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mark_steps:
            torch.compiler.cudagraph_mark_step_begin()
        loss, logits = train_step(self.st, x, y, lr=lr, iteration=iteration)
        interval.add(loss, logits, y)
        return loss, logits


def whole_step(st: StepState, x: torch.Tensor, y: torch.Tensor, interval: Interval) -> Outputs:
    """What the graph holds: :func:`~reslab.engine.step.train_step` on the static batch (x (B, ...), y (B,))
    with the learning rate already in the optimizer's lr tensors, and the interval's sums. No host sync: the
    finite flag is an output, read after the replay (as :class:`~reslab.engine.guards.FiniteWatch` does)."""
    with autocast(st.runtime, cache=False):
        logits = st.forward(x)  # (B, K)
        loss = F.cross_entropy(logits, y, label_smoothing=st.label_smoothing)
    st.optimizer.zero_grad(set_to_none=True)  # the capture's backward makes .grad from the graph's pool
    loss.backward()
    finite = step_finite(st, loss)
    st.optimizer.step()
    loss, logits = loss.detach(), logits.detach()
    interval.sum_(loss, logits, y)
    return loss, logits, finite


class GraphedStep:
    """The step as a captured graph over static buffers (see the module doc); eager before the capture, and
    for good if the capture fails (``warn`` says so in one line)."""

    def __init__(
        self,
        st: StepState,
        capture: Capture,
        *,
        eager_steps: int = EAGER_STEPS,
        warn: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.st, self.backend, self.warn = st, capture, warn
        self.eager_left = eager_steps
        self.replay: Callable[[], Outputs] | None = None
        self.failed = False
        self.replays = 0
        self._inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._lrs: list[torch.Tensor] = []
        self._sums: Interval | None = None

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, *, lr: float, iteration: int, interval: Interval
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.failed:
            return EagerStep(self.st)(x, y, lr=lr, iteration=iteration, interval=interval)
        if self.replay is None and self.eager_left > 0:
            self.eager_left -= 1
            with self.backend.side():
                return EagerStep(self.st)(x, y, lr=lr, iteration=iteration, interval=interval)
        if self.replay is None and not self._record(x, y, interval):
            return EagerStep(self.st)(x, y, lr=lr, iteration=iteration, interval=interval)
        if interval is not self._sums:  # the graph adds into the tensors it was captured with
            raise RuntimeError("a captured step's interval must be reset in place, not replaced")
        assert self._inputs is not None and self.replay is not None
        self._inputs[0].copy_(x)
        self._inputs[1].copy_(y)
        for group, lr_tensor in zip(self.st.optimizer.param_groups, self._lrs, strict=True):
            lr_tensor.fill_(lr * group.get("lr_scale", 1.0))  # in place: the graph reads this memory
        loss, logits, finite = self.replay()
        self.replays += 1
        interval.count(y.shape[0])
        bad = self.st.watch.push(iteration, finite)
        if bad is not None:
            raise NonFiniteStep(bad)
        return loss, logits

    def _record(self, x: torch.Tensor, y: torch.Tensor, interval: Interval) -> bool:
        """Capture the step over static copies of this batch's tensors; False (and one line) if it fails."""
        sx, sy = torch.empty_like(x), torch.empty_like(y)  # the batch's shape, dtype and memory format
        # CUDA's fused SGD reads a tensor lr as float32; the CPU's rounds a Python lr to float32 as well
        self._lrs = [
            torch.zeros((), dtype=torch.float32, device=x.device) for _ in self.st.optimizer.param_groups
        ]
        for group, lr_tensor in zip(self.st.optimizer.param_groups, self._lrs, strict=True):
            group["lr"] = lr_tensor
        try:
            self.replay = self.backend.capture(lambda: whole_step(self.st, sx, sy, interval))
        except RuntimeError as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            self.warn(f"warning: cuda graphs: the capture failed ({first}); the run goes on eagerly")
            self.failed, self.replay = True, None
            set_lr(self.st.optimizer, 0.0)  # Python floats again: the eager step sets its own lr
            self.st.optimizer.zero_grad(set_to_none=True)
            return False
        self._inputs, self._sums = (sx, sy), interval
        return True


def make_stepper(st: StepState, plan: GraphPlan, *, warn: Callable[[str], None]) -> Stepper:
    """The step the plan asks for. The capture needs torch's fused SGD (a tensor lr on the device); without
    it, one line and the eager step."""
    if not plan.capture:
        return EagerStep(st, mark_steps=plan.compile_mode == "reduce-overhead")
    if not all(group.get("fused") for group in st.optimizer.param_groups):
        warn("cuda graphs: off: this torch has no fused SGD for this device; the step runs eagerly")
        return EagerStep(st)
    return GraphedStep(st, new_capture(st.runtime.device), warn=warn)


def new_capture(device: torch.device) -> Capture:
    """A CUDA graph on CUDA; elsewhere the stand-in (the tests route a CPU run through it)."""
    return CudaCapture(device) if device.type == "cuda" else CallAgain()
