"""Before a sweep starts: how many runs share each device, and how long the sweep will take.

- **Runs per device** (``--runs-per-device N|auto``): each entry of ``--devices`` becomes N slots (one worker
  process each, :mod:`~reslab.experiments.scheduler`); on a GPU with no ``--devices``, every visible GPU
  gets N. ``auto`` on a CPU is what the preset says (``cpu_processes``: processes with the cores split
  between them); on CUDA it is chosen when the sweep starts: the most runs that fit the GPU's memory (the
  probe's measured peak, plus a CUDA context each), at most :data:`AUTO_MAX_RUNS_PER_GPU`, and, for a sweep
  long enough to pay for it (:data:`MEASURE_ABOVE_S`), the count among 1, 2, 4, ... whose measured
  throughput of the sweep's shallowest run, side by side, is best.
- **The estimate** (on unless ``--no-estimate`` or ``--progress off``): a few timed steps and evaluation
  batches of each distinct model of the sweep, on the sweep's device with its batch, precision, threads
  and step (:class:`~reslab.engine.probe.Probe`), times each unfinished run's steps and evaluations, plus its
  set-up; the runs are then laid on the slots as the scheduler does (deepest first, each slot taking the
  next). Runs already finished cost nothing; an interrupted one costs what is left after its checkpoint. It
  runs in this process, writes nothing, and leaves the RNG states and thread count as they were.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from reslab.engine import TrainConfig
from reslab.engine.probe import Probe, RunCost
from reslab.engine.store.checkpoint import list_checkpoints
from reslab.errors import ConfigError
from reslab.experiments.sweep import Job, run_state

AUTO_MAX_RUNS_PER_GPU = 4  # not yet measured on a GPU: benchmarks/gpu.py times 1, 2 and 4 side by side
MEASURE_ABOVE_S = 600.0  # auto measures concurrency (about 20 s of probes) only for sweeps longer than this
CONTEXT_BYTES = 2**30  # a CUDA context, cuDNN/cuBLAS workspaces: memory a run takes beyond its tensors
MEMORY_SHARE = 0.9  # of the GPU's free memory that the runs sharing it may fill
GAIN = 1.1  # a doubling of the runs per GPU must bring 10% more throughput to be chosen
PROBE_BUDGET_S = 20.0  # past this, the estimate scales the models not yet timed by depth


def runs_per_device(value: str | None) -> int | None:
    """``--runs-per-device``: a positive integer, or None for ``auto`` (and when not given)."""
    if value is None or value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"--runs-per-device must be a positive integer or auto, got {value!r}")
    return n


def slots(devices: Sequence[str], n: int) -> tuple[str, ...]:
    """Each device ``n`` times, interleaved (``cuda:0,cuda:1`` x 2 = ``cuda:0,cuda:1,cuda:0,cuda:1``), so
    the deepest runs, which start first, spread over the devices."""
    return tuple(d for _ in range(n) for d in devices)


def gpus(count: int, n: int) -> tuple[str, ...]:
    """``n`` slots on each of ``count`` GPUs."""
    return slots([f"cuda:{i}" for i in range(count)], n)


def static_devices(
    devices: Sequence[str] | None,
    per_device: str | None,
    *,
    kind: str,
    gpu_count: int,
    cpu_processes: int | None,
) -> tuple[str, ...] | None:
    """The slots a sweep's settings fix before it starts (None: one run at a time, in this process).

    ``kind`` is the sweep's device type. CUDA with ``auto`` and no ``--devices`` is left to
    :func:`auto_gpu_slots` when the sweep starts (None here).
    """
    n = runs_per_device(per_device)
    if devices:
        return slots(devices, n or 1)  # as given (one entry: that device, in this process)
    if kind == "cpu":
        out = slots(["cpu"], n or cpu_processes or 1)
    elif kind == "cuda" and n is not None:
        out = gpus(max(gpu_count, 1), n)
    else:
        return None
    return out if len(out) > 1 else None


def fit_by_memory(free_bytes: int | None, run_bytes: int | None, cap: int) -> int:
    """Runs of ``run_bytes`` each (plus a CUDA context) that fit in ``MEMORY_SHARE`` of ``free_bytes``."""
    if free_bytes is None or run_bytes is None:
        return cap
    return max(1, min(cap, int(MEMORY_SHARE * free_bytes) // (run_bytes + CONTEXT_BYTES)))


def choose_count(rates: dict[int, float]) -> int:
    """The measured count to use: go up from 1 while each step up brings at least ``GAIN`` more throughput."""
    best = min(rates)
    for n in sorted(rates):
        if n > best and rates[n] >= GAIN * rates[best]:
            best = n
    return best


@dataclass
class Estimate:
    """What the estimate found: each unfinished run's seconds (alone), and the sweep's with its slots."""

    run_seconds: dict[int, float] = field(default_factory=dict)  # job index -> seconds
    peak_bytes: int | None = None  # CUDA: the largest probe's measured peak
    probe_seconds: float = 0.0
    slowdown: float = 1.0  # per-run slowdown when runs share a GPU (measured), 1 when not known
    error: str | None = None  # why there is no estimate
    timed: int = 0  # distinct models timed ...
    models: int = 0  # ... of the sweep's distinct unfinished models (the others scaled by depth)

    def sweep_seconds(self, n_slots: int) -> float:
        """The scheduler's order (longest first, each slot takes the next): when the last slot is done."""
        loads = [0.0] * max(n_slots, 1)
        for s in sorted(self.run_seconds.values(), reverse=True):
            loads[loads.index(min(loads))] += s * (self.slowdown if n_slots > 1 else 1.0)
        return max(loads)

    def text(self, n_slots: int, *, assumed: bool = False) -> str:
        """``: estimated 3 min 20 s`` for the plan line (or why there is none)."""
        if self.error is not None:
            return f"; no time estimate ({self.error})"
        if not self.run_seconds:
            return ": nothing left to train"
        line = f": estimated {clock(self.sweep_seconds(n_slots))}"
        if self.timed < self.models:
            line += f" ({self.timed} of {self.models} models timed, the others scaled by depth)"
        if n_slots > 1:
            line += f" with {n_slots} runs at a time"
            line += ", if the runs sharing a GPU do not slow each other" if assumed else ""
        return line


def clock(seconds: float) -> str:
    """``45 s``, ``3 min 20 s``, ``2 h 05 min``."""
    s = max(round(seconds), 1)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def estimate_runs(
    jobs: Sequence[Job],
    *,
    key: Callable[[Job], Hashable],
    threads: int | None = None,
    steps: int = 2,
    budget_s: float = PROBE_BUDGET_S,
) -> Estimate:
    """Probe each distinct model (by ``key``) of the unfinished ``jobs`` and cost every one of them.

    ``threads``: the CPU threads each run will get when runs share the CPU (their ``num_threads`` wins).
    Probes go shallowest, deepest, then the others; once they have taken ``budget_s`` (a loaded machine),
    the models not yet timed are costed from the timed one nearest in depth, scaled by depth.
    """
    started, out = time.perf_counter(), Estimate()
    todo = [(job, state) for job in jobs if (state := run_state(job)) not in ("finished", "diverged")]
    first: dict[Hashable, Job] = {}
    for job, _ in todo:
        first.setdefault(key(job), job)
    by_depth = sorted(first, key=lambda k: first[k].depth)
    order = list(dict.fromkeys([*by_depth[:1], *by_depth[-1:], *by_depth]))  # shallowest, deepest, the rest
    costs: dict[Hashable, RunCost] = {}
    data: Any = None
    for k in order:
        if costs and time.perf_counter() - started > budget_s:
            break
        with Probe(_probe_config(first[k].config, threads), data=data) as probe:
            data = (probe.specs.data, probe.data)
            costs[k] = probe.cost(steps)
        out.peak_bytes = max(out.peak_bytes or 0, costs[k].peak_bytes or 0) or None
    out.timed, out.models = len(costs), len(first)
    for k in order:
        if k not in costs:
            costs[k] = _scaled(costs, first, k)
    for job, state in todo:
        cost = costs[key(job)]
        out.run_seconds[job.index] = cost.seconds(from_step=_done_steps(job) if state != "new" else 0)
    out.probe_seconds = time.perf_counter() - started
    return out


def _scaled(costs: dict[Hashable, RunCost], first: dict[Hashable, Job], k: Hashable) -> RunCost:
    """The cost of model ``k`` from the timed one nearest in depth: steps and evaluations ~ depth."""
    near = min(costs, key=lambda t: abs(first[t].depth - first[k].depth))
    ratio = first[k].depth / max(first[near].depth, 1)
    c = costs[near]
    return replace(c, step_s=c.step_s * ratio, eval_image_s=c.eval_image_s * ratio)


def _probe_config(cfg: TrainConfig, threads: int | None) -> TrainConfig:
    if cfg.num_threads is None and threads is not None:
        cfg = replace(cfg, num_threads=threads)
    return replace(cfg, out=None, overwrite=False)


def _done_steps(job: Job) -> int:
    """The iteration of an interrupted run's newest checkpoint (0 without one)."""
    kept = list_checkpoints(job.run_dir)
    try:
        return int(kept[0].name.rpartition("-")[2]) if kept else 0
    except ValueError:
        return 0


def auto_gpu_slots(
    jobs: Sequence[Job], estimate: Estimate | None, *, measure: bool
) -> tuple[tuple[str, ...] | None, str]:
    """``--runs-per-device auto`` on CUDA without ``--devices``: the slots, and how the count was chosen."""
    import torch

    count = max(torch.cuda.device_count(), 1)
    want = min(AUTO_MAX_RUNS_PER_GPU, math.ceil(len(jobs) / count))
    free = None
    if estimate is not None and estimate.peak_bytes is not None:
        free = int(torch.cuda.mem_get_info(0)[0])
    n = fit_by_memory(free, estimate.peak_bytes if estimate else None, want)
    how = f"{n} per GPU: at most {AUTO_MAX_RUNS_PER_GPU}, as many as fit in memory"
    if measure and n > 1 and estimate is not None and not estimate.error:
        from reslab.experiments.scheduler import measure_concurrency

        shallowest = min(jobs, key=lambda j: (j.depth, j.index))
        counts = [c for c in (1, 2, 4, 8) if c <= n]
        rates = measure_concurrency(replace(shallowest.config, out=None), "cuda:0", counts)
        n = choose_count(rates)
        estimate.slowdown = n * rates[1] / rates[n]  # each run's time when n share a GPU, over alone
        shown = ", ".join(f"{c}: {r:.0f}" for c, r in sorted(rates.items()))
        how = f"{n} per GPU, measured (steps/s of {shallowest.model} side by side: {shown})"
    devices = gpus(count, n)
    return (devices if len(devices) > 1 else None), how


def plan_sweep(
    cfg: Any, jobs: Sequence[Job], *, key: Callable[[Job], Hashable]
) -> tuple[tuple[str, ...] | None, str]:
    """The slots a resolved sweep config trains ``jobs`` on, and what its plan line adds: the estimate, and
    how ``auto`` chose the runs per GPU. Estimating never stops a sweep: a failed probe is a note."""
    from reslab.engine.devices.runtime import resolve_device
    from reslab.experiments.scheduler import cpu_share

    todo = [j for j in jobs if cfg.run_index is None or j.index == cfg.run_index]
    devices = tuple(cfg.devices) if cfg.devices else None
    estimate = None
    if cfg.estimate and cfg.progress != "off":
        threads = cpu_share(devices) if devices and set(devices) == {"cpu"} else None
        try:
            estimate = estimate_runs(todo, key=key, threads=threads)
        except Exception as err:  # advice only: the sweep goes on (and meets a run's own error itself)
            estimate = Estimate(error=(str(err).strip().splitlines() or [type(err).__name__])[0])
    kind = resolve_device(cfg.first_run().device).type
    auto = kind == "cuda" and devices is None and runs_per_device(cfg.runs_per_device) is None
    how = ""
    if auto and cfg.run_index is None and len(todo) > 1:
        serial = estimate.sweep_seconds(1) if estimate is not None and estimate.error is None else 0.0
        devices, how = auto_gpu_slots(todo, estimate, measure=serial >= MEASURE_ABOVE_S)
    n = len(devices) if devices else 1
    shared = kind == "cuda" and devices is not None and len(set(devices)) < len(devices)
    text = estimate.text(n, assumed=shared and estimate.slowdown == 1.0) if estimate is not None else ""
    return devices, text + (f" ({how})" if how and n > 1 else "")
