"""Shared pieces of the benchmarks: machine facts, A/B timing, the engine's step, baselines, FLOP/s.

Not a test module and not part of the package: the scripts next to it import it by file location
(``python benchmarks/throughput.py`` puts ``benchmarks/`` first on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reslab.data.loader import DeviceLoader, Normalization
from reslab.engine.devices.runtime import Runtime, autocast

# Random labels at a real lr can diverge within a few steps; a NaN run may time differently (and the engine
# would stop), so benchmark steps use a small lr. Speed does not depend on its value.
SGD_KW: dict[str, Any] = {"lr": 1e-3, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
REPO = Path(__file__).resolve().parent.parent
IMAGENET = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


# --- 1) the machine -------------------------------------------------------------------------------------


@dataclass
class Machine:
    """What the CPU says about itself, printed with every result.

    ``datasheet_fp32_gflops`` is the data-sheet style estimate (cores x lanes x 2 x FMA units x clock): it
    assumes a clock and an FMA count, so on another core of "the same kind" it can be off by 2x either way.
    It is printed as a note only; every "% of roofline" is against :mod:`roofline`'s measured peaks.
    """

    cpu: str
    vendor: str
    family: int | None
    physical_cores: int
    logical_cpus: int
    vector_isa: str  # avx512 | avx2 | neon/other
    fp32_lanes: int  # fp32 lanes of one vector register
    fma_units: int  # assumed FMA pipes per core, each one vector FMA per cycle
    ghz: float  # from /proc/cpuinfo "cpu MHz" (or lscpu): the current, not the boost, clock
    torch_threads: int
    datasheet_fp32_gflops: float  # cores x lanes x 2 (multiply + add) x fma_units x GHz: a note, not a peak
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [
            f"cpu: {self.cpu} ({self.physical_cores} physical cores, {self.logical_cpus} logical, "
            f"torch threads {self.torch_threads}, {self.vector_isa})",
            f"note: data-sheet style fp32 estimate {self.physical_cores} cores x {self.fp32_lanes} lanes x 2 "
            f"flops/FMA x {self.fma_units} FMA units (assumed) x {self.ghz:.2f} GHz (assumed clock) "
            f"= {self.datasheet_fp32_gflops:.0f} GFLOP/s: not a denominator (the measured roofline is)",
        ]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if ":" in line:
            key, value = (s.strip() for s in line.split(":", 1))
            info.setdefault(key, value)  # the first processor's values
    return info


def _lscpu_mhz() -> float | None:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"CPU (?:max )?MHz:\s*([\d.]+)", out)
    return float(m.group(1)) if m else None


def _physical_cores(info: dict[str, str]) -> int:
    """Distinct (physical id, core id) pairs; SMT siblings share one core's FMA units."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        cores = set(re.findall(r"physical id\s*:\s*(\d+)[\s\S]*?core id\s*:\s*(\d+)", text))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


def detect_machine(fma_units: int = 2) -> Machine:
    """Core count, vector width and clock of this CPU, and the data-sheet style fp32 estimate they imply."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    if "avx512f" in flags:
        isa, lanes = "avx512", 16
    elif "avx2" in flags:
        isa, lanes = "avx2", 8
    else:
        isa, lanes = platform.machine() or "unknown", 4  # NEON / SSE: 128-bit
    mhz = float(info["cpu MHz"]) if "cpu MHz" in info else (_lscpu_mhz() or 2000.0)
    cores = _physical_cores(info)
    family = int(info["cpu family"]) if info.get("cpu family", "").isdigit() else None
    vendor = info.get("vendor_id", platform.processor() or "unknown")
    notes = []
    if "cpu MHz" not in info:
        notes.append("clock from lscpu (or a 2.0 GHz guess): the estimate is rougher still")
    if vendor == "AuthenticAMD" and family == 25 and isa == "avx512":
        # Zen 4 runs a 512-bit FMA as two 256-bit halves: 1 zmm FMA per cycle per core, not 2.
        notes.append(
            "AMD Zen 4 (family 25) executes 512-bit FMAs as two 256-bit halves: the estimate above may be 2x "
            "too high"
        )
    if "avx512_bf16" in flags or "amx_tile" in flags:
        notes.append("native bf16 (avx512_bf16/AMX): bf16 contenders are measured against the bf16 roofline")
    peak = cores * lanes * 2 * fma_units * mhz / 1000.0
    return Machine(
        cpu=info.get("model name", platform.processor() or "unknown"),
        vendor=vendor,
        family=family,
        physical_cores=cores,
        logical_cpus=os.cpu_count() or 1,
        vector_isa=isa,
        fp32_lanes=lanes,
        fma_units=fma_units,
        ghz=mhz / 1000.0,
        torch_threads=torch.get_num_threads(),
        datasheet_fp32_gflops=peak,
        notes=notes,
    )


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def environment(command: Sequence[str]) -> dict[str, Any]:
    """Date, versions and the exact command: what BENCHMARKS.md records with each table."""
    try:
        import torchvision

        tv: str | None = torchvision.__version__
    except ImportError:
        tv = None
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "torchvision": tv,
        "python": platform.python_version(),
        "commit": git_commit(),
        "command": " ".join(command),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return out


# --- 2) A/B timing ------------------------------------------------------------------------------------


class Timer:
    """Wall time of a block: perf_counter on CPU; CUDA events + synchronize on a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def measure(self, fn: Callable[[], None], n: int) -> float:
        """Seconds for ``n`` calls of ``fn`` (queued work included)."""
        self.sync()
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - t0


@dataclass
class Runner:
    """One contender: ``step()`` processes one batch of ``batch`` images."""

    name: str
    step: Callable[[], None]
    batch: int
    group: str = "reslab"  # reslab | baseline | torchvision
    settings: dict[str, Any] = field(default_factory=dict)
    setup_s: float = 0.0  # build + (compile) warm-up time


@dataclass
class Timing:
    name: str
    group: str
    settings: dict[str, Any]
    images_per_s: list[float]  # one per round
    setup_s: float

    @property
    def median(self) -> float:
        return statistics.median(self.images_per_s)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.images_per_s), max(self.images_per_s)

    def ratio_to(self, other: Timing) -> float:
        """Median of per-round ratios: rounds run back to back, so a noisy neighbour hits both sides alike."""
        return statistics.median(a / b for a, b in zip(self.images_per_s, other.images_per_s))


def ab_rounds(
    runners: Sequence[Runner],
    *,
    device: torch.device,
    warmup: int,
    repeats: int,
    steps: int,
    log: Callable[[str], None] = print,
) -> list[Timing]:
    """Warm every runner up, then ``repeats`` rounds; each round times ``steps`` steps of every runner.

    The order rotates each round, so no contender always runs right after the same neighbour (caches,
    turbo, other processes).
    """
    timer = Timer(device)
    for r in runners:
        t0 = time.perf_counter()
        timer.measure(r.step, warmup)
        r.setup_s += time.perf_counter() - t0
        log(f"  warmed up {r.name} ({r.setup_s:.1f} s incl. build/compile)")
    ips: dict[str, list[float]] = {r.name: [] for r in runners}
    for k in range(repeats):
        order = list(runners[k % len(runners) :]) + list(runners[: k % len(runners)])
        for r in order:
            ips[r.name].append(steps * r.batch / timer.measure(r.step, steps))
    return [Timing(r.name, r.group, r.settings, ips[r.name], r.setup_s) for r in runners]


def spread_pct(t: Timing) -> float:
    lo, hi = t.spread
    return 100.0 * (hi - lo) / max(t.median, 1e-12)


# --- 3) the engine's step and the baselines ---------------------------------------------------------------


def make_sgd(model: nn.Module) -> torch.optim.SGD:
    """The engine's optimiser (fused SGD where the device has it) with ``SGD_KW``."""
    from reslab.engine import TrainConfig
    from reslab.engine.optim import make_sgd as engine_sgd
    from reslab.engine.specs import optim_spec

    return engine_sgd(model, optim_spec(TrainConfig(**SGD_KW)))


def plain_sgd(model: nn.Module) -> torch.optim.SGD:
    """What a straightforward loop writes: torch's defaults (per-parameter loop on a CPU)."""
    return torch.optim.SGD(model.parameters(), **SGD_KW)


def cycle(loader: DeviceLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    epoch = 0
    while True:
        yield from loader.epoch(epoch)
        epoch += 1


def engine_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    rt: Runtime,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
) -> Callable[[], None]:
    """One step of ``reslab.engine.loop.train``: the engine's own ``train_step`` (label smoothing 0.1, the
    finite check of loss and gradients) and its device-side interval sums; the model is already in the
    runtime's memory format. It is put in training mode (BN on batch statistics), as ``train`` does."""
    from reslab.engine.guards import FiniteWatch
    from reslab.engine.step import Interval, NonFiniteStep, StepState, train_step

    state = StepState(
        forward=model,
        params=list(model.parameters()),
        optimizer=opt,
        runtime=rt,
        watch=FiniteWatch(rt.device),
        label_smoothing=0.1,
    )
    model.train()
    interval = Interval.zeros(rt.device)
    nonfinite: list[int] = []

    def step() -> None:
        x, y = next(batches)
        try:
            loss, logits = train_step(state, x, y, lr=SGD_KW["lr"], iteration=interval.steps + 1)
        except NonFiniteStep:
            nonfinite.append(1)  # the engine would stop here; a benchmark notes it and goes on
            return
        interval.add(loss, logits, y)

    step.nonfinite = nonfinite  # type: ignore[attr-defined]
    return step


STEP_MODES = (
    "eager",
    "capture",
    "compile",
)  # the engine's step: eager, one CUDA graph, torch.compile's graphs


def engine_stepper(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    rt: Runtime,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    mode: str,
    *,
    lr: float = SGD_KW["lr"],
) -> Callable[[], None]:
    """One step of ``reslab.engine.loop.train`` as it runs with ``--cuda-graphs`` on a GPU: ``eager`` (the
    plain step), ``capture`` (the whole step as one CUDA graph: :mod:`reslab.engine.graphs`; on a CPU the
    same machinery replays by calling the step again) or ``compile`` (``torch.compile(mode=
    "reduce-overhead")``, torch's own CUDA graphs). Label smoothing 0.1, the finite check, device-side sums.
    ``step.losses`` keeps a copy of each step's loss (on the device) when ``step.keep_losses`` is set."""
    from reslab.engine.graphs import GraphPlan, make_stepper
    from reslab.engine.guards import FiniteWatch
    from reslab.engine.step import Interval, NonFiniteStep, StepState

    if mode not in STEP_MODES:
        raise ValueError(f"mode must be one of {STEP_MODES}, got {mode!r}")
    plan = GraphPlan(mode == "capture", "reduce-overhead" if mode == "compile" else None)
    forward = torch.compile(model, mode="reduce-overhead") if mode == "compile" else model
    state = StepState(
        forward=forward, params=list(model.parameters()), optimizer=opt, runtime=rt,
        watch=FiniteWatch(rt.device), label_smoothing=0.1,
    )  # fmt: skip
    stepper = make_stepper(state, plan, warn=print)
    model.train()
    interval = Interval.zeros(rt.device)
    losses: list[torch.Tensor] = []
    nonfinite: list[int] = []

    def step() -> None:
        x, y = next(batches)
        try:
            loss, _ = stepper(x, y, lr=lr, iteration=interval.steps + 1, interval=interval)
        except NonFiniteStep:
            nonfinite.append(1)
            return
        if step.keep_losses:  # type: ignore[attr-defined]
            losses.append(loss.detach().float().clone())  # a graph's output: overwritten by the next replay

    step.keep_losses = False  # type: ignore[attr-defined]
    step.losses = losses  # type: ignore[attr-defined]
    step.nonfinite = nonfinite  # type: ignore[attr-defined]
    step.stepper = stepper  # type: ignore[attr-defined]
    return step


def engine_infer(
    model: nn.Module, rt: Runtime, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
) -> Callable[[], None]:
    """Inference as ``reslab.engine.inference`` does it: eval mode, no grad, autocast, sums on the device."""
    model.eval()
    total = torch.zeros((), dtype=torch.int64, device=rt.device)

    @torch.no_grad()
    def step() -> None:
        nonlocal total
        x, y = next(batches)
        with autocast(rt):
            logits = model(x)
        total += (logits.float().argmax(1) == y).sum()

    return step


def plain_loader(
    images: torch.Tensor, labels: torch.Tensor, norm: Normalization, batch: int
) -> Iterator[Any]:
    """The straightforward input pipeline: pre-normalised float NCHW tensors in a shuffling DataLoader."""
    from torch.utils.data import DataLoader, TensorDataset

    x = norm.apply(images)  # (N, C, H, W) float32, NCHW
    dl = DataLoader(TensorDataset(x, labels.long()), batch_size=batch, shuffle=True, drop_last=True)

    def forever() -> Iterator[Any]:
        while True:
            yield from dl

    return forever()


def plain_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    amp: torch.dtype | None = None,
    channels_last: bool = False,
) -> Callable[[], None]:
    """The usual PyTorch training step (``loss.item()`` each step, as most loops log it), in training mode."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.train()

    def step() -> None:
        x, y = next(batches)
        x, y = x.to(device, memory_format=fmt), y.to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()

    return step


def plain_infer(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    amp: torch.dtype | None = None,
    channels_last: bool = False,
) -> Callable[[], None]:
    model.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    @torch.no_grad()
    def step() -> None:
        x, y = next(batches)
        x = x.to(device, memory_format=fmt)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            (model(x).argmax(1) == y.to(device)).sum().item()

    return step


def torchvision_twin(name: str, reslab_model: nn.Module, x: torch.Tensor) -> nn.Module | None:
    """torchvision's ``name`` with ``reslab_model``'s weights, in training mode; None without torchvision.

    Loads strictly and checks eval-mode outputs match on ``x`` before any timing (same kernels, same order of
    operations: they should agree to float rounding). Both models leave in training mode: a twin left in
    eval mode trains with BN's running statistics, a cheaper BN that made torchvision look 8% faster.
    """
    try:
        import torchvision.models as tvm
    except ImportError:
        return None
    tv = getattr(tvm, name)(weights=None, num_classes=reslab_model.fc.out_features)  # type: ignore[union-attr]
    tv.load_state_dict(reslab_model.state_dict(), strict=True)
    reslab_model.eval()
    tv.eval()
    with torch.no_grad():
        a, b = reslab_model(x), tv(x)
    reslab_model.train()
    tv.train()
    if not torch.allclose(a, b, rtol=1e-4, atol=1e-4):
        raise AssertionError(
            f"torchvision {name} and reslab {name} disagree: max diff {(a - b).abs().max():.3g}"
        )
    return tv.to(x.device)


# --- 4) memory and FLOP/s -----------------------------------------------------------------------------


def state_bytes(model: nn.Module, opt: torch.optim.Optimizer | None) -> int:
    """Parameters + gradients + optimiser buffers (momentum): memory that lives across steps."""
    n = sum(p.numel() * p.element_size() * 2 for p in model.parameters())  # weights + grads
    if opt is not None:
        for s in opt.state.values():
            n += sum(t.numel() * t.element_size() for t in s.values() if isinstance(t, torch.Tensor))
    return n


def peak_step_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Peak memory one step allocates on top of what was live before it.

    CUDA: the allocator's peak. CPU: the profiler's allocation trace, summed in time order (op granularity).
    """
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]  # type: ignore[union-attr]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's C++ start/stop lines (written to fd 2, not through sys.stderr)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def gflops(macs_per_image: int, images_per_s: float, *, train: bool, input_macs: int = 0) -> float:
    """Achieved GFLOP/s: 2 flops per multiply-add of the conv / linear layers (He et al.'s count).

    Training runs each layer three times (forward, grad of its input, grad of its weights), except the grad
    of the image: the layer that reads the image (``input_macs``, see :func:`first_layer_macs`) runs twice.
    Counting it three times would credit a step with work it never did (3% of resnet50's step).
    """
    flops = 2 * (3 * macs_per_image - input_macs) if train else 2 * macs_per_image
    return flops * images_per_s / 1e9


def first_layer_macs(model: torch.nn.Module, input_size: tuple[int, ...]) -> int:
    """Multiply-adds per image of the first conv / linear layer to run: the one that reads the image (every
    reslab and torchvision net starts with one). Shapes only: a model on the ``meta`` device works."""
    found: list[int] = []

    def hook(m: torch.nn.Module, _inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if found:
            return
        if isinstance(m, torch.nn.Conv2d):
            fan_in = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            fan_in = m.in_features  # type: ignore[assignment]
        found.append((out.numel() // out.shape[0]) * fan_in)

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    hooks = [m.register_forward_hook(hook) for m in layers]
    device, was_training = next(model.parameters()).device, model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros((1, *input_size), device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return found[0] if found else 0


def timing_record(t: Timing, **extra: Any) -> dict[str, Any]:
    rec = asdict(t)
    rec.update(median=t.median, spread=list(t.spread), spread_pct=spread_pct(t))
    rec.update(extra)
    return rec
