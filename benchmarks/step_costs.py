"""What each part of the engine's step costs, beside the whole step: line-level timing, one process.

    python benchmarks/step_costs.py            # resnet50 224 batch 8, resnet20/56 32 batch 128
    python benchmarks/step_costs.py --case resnet50:224:8 --precision bf16 --channels-last

The whole step is ``benchlib.engine_step`` (what ``reslab train`` runs per batch). Each part is then timed
alone, many times, on tensors of the step's own shapes: the lr assignment, label smoothing (cross-entropy
forward + backward with 0.1 against 0.0), the device-side sums of loss and correct counts (``Interval.add``),
the finite check of the gradients (``grads_finite``, and the inf-norm it replaced), the host read of the
flag, the next batch from ``DeviceLoader`` (normalisation, memory format and augmentation included), the
fused SGD update against torch's default per-parameter loop, and the Python cost of ``StagedNet``'s stage
walk and ``branch_out`` calls. A part's share is its median time over the step's median time.

``--relu-ab N``: the whole step with the blocks' ReLUs in place (the default) against the same model with
every ReLU out of place, alternating for N rounds in this process; the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import benchlib as bl
import throughput as tp
from reslab.engine.devices.runtime import Runtime
from reslab.engine.guards import FiniteWatch, grads_finite
from reslab.engine.optim import set_lr
from reslab.engine.step import Interval

DEFAULT_CASES = ("resnet50:224:8", "resnet20:32:128", "resnet56:32:128")


def _median_s(fn: Callable[[], Any], *, calls: int, rounds: int = 7) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def _old_finite(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """The check before: the inf-norm of all gradients (not vectorised on a CPU)."""
    grads = [p.grad for p in params if p.grad is not None]
    return torch.isfinite(torch.nn.utils.get_total_norm(grads, norm_type=float("inf")))


def _stage_walk_s(model: torch.nn.Module, calls: int) -> float:
    """Python cost of walking the stages and calling each block's ``branch_out`` (an ``nn.Identity``)."""
    x = torch.zeros(1)
    ids = [b.branch_out for b in model.blocks()]  # type: ignore[operator]

    def walk() -> None:
        for _stage in model.stages:  # type: ignore[attr-defined]
            pass
        for m in ids:
            m(x)

    return _median_s(walk, calls=calls)


def parts(case: tp.Case, rt: Runtime, steps: int) -> tuple[float, dict[str, float]]:
    """(median seconds of a whole step, seconds of each part)."""
    dev = rt.device
    data = tp._data(case, dev)
    model = tp._model(case, dev, rt.channels_last)
    opt = bl.make_sgd(model)
    augment = "crop_flip" if case.size <= 64 else "none"
    loader = tp._device_loader(case, data, rt, train=True, augment=augment)
    step = bl.engine_step(model, opt, rt, bl.cycle(loader))
    for _ in range(2):
        step()
    whole = _median_s(step, calls=steps, rounds=5)
    params = list(model.parameters())  # gradients of the last step are still there
    batches = bl.cycle(loader)
    logits = torch.randn(case.batch, case.classes, device=dev, requires_grad=True)
    y = data[1][: case.batch].to(dev)
    interval = Interval.zeros(dev)
    watch = FiniteWatch(dev)
    flag = grads_finite(params)

    def ce(ls: float) -> Callable[[], None]:
        return lambda: F.cross_entropy(logits, y, label_smoothing=ls).backward()

    plain = bl.plain_sgd(model)
    out = {
        "lr assignment (set_lr)": _median_s(lambda: set_lr(opt, 1e-3), calls=2000),
        "cross-entropy fwd+bwd, label smoothing 0.1": _median_s(ce(0.1), calls=200),
        "cross-entropy fwd+bwd, no smoothing": _median_s(ce(0.0), calls=200),
        "loss + correct sums (Interval.add)": _median_s(
            lambda: interval.add(logits.detach()[0, 0], logits.detach(), y), calls=200
        ),
        "finite check of the gradients (aminmax)": _median_s(lambda: grads_finite(params), calls=10),
        "finite check, the inf-norm it replaced": _median_s(lambda: _old_finite(params), calls=5),
        "host read of the flag (FiniteWatch.push)": _median_s(lambda: watch.push(1, flag), calls=2000),
        f"next batch (DeviceLoader, {augment})": _median_s(lambda: next(batches), calls=20),
        "SGD update, fused (the engine's)": _median_s(opt.step, calls=10),
        "SGD update, torch's default loop": _median_s(plain.step, calls=5),
        "stage walk + branch_out calls": _stage_walk_s(model, 2000),
    }
    return whole, out


def _ab(a: Callable[[], None], b: Callable[[], None], rounds: int) -> tuple[float, float, float]:
    """(median s of a, median s of b, median per-round ratio b / a): 2 steps each, alternating order."""
    a()
    b()
    times: list[list[float]] = [[], []]
    for r in range(rounds):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            t0 = time.perf_counter()
            (a, b)[i]()
            (a, b)[i]()
            times[i].append((time.perf_counter() - t0) / 2)
    ratio = statistics.median(o / i for i, o in zip(*times, strict=True))
    return statistics.median(times[0]), statistics.median(times[1]), ratio


def _engine_step(
    case: tp.Case,
    rt: Runtime,
    data: Any,
    *,
    edit: Callable[[torch.nn.Module], None] = lambda _m: None,
) -> Callable[[], None]:
    """The engine's whole step on a fresh model of ``case``, which ``edit`` may change first."""
    m = tp._model(case, rt.device, rt.channels_last)
    edit(m)
    loader = tp._device_loader(case, data, rt, train=True, augment="none")
    return bl.engine_step(m, bl.make_sgd(m), rt, bl.cycle(loader))


def _relus_out_of_place(model: torch.nn.Module) -> None:
    for mod in model.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False


def relu_ab(case: tp.Case, rt: Runtime, rounds: int) -> tuple[float, float, float]:
    """(median s in place, median s out of place, median per-round ratio out / in) of a whole step."""
    data = tp._data(case, rt.device)
    return _ab(_engine_step(case, rt, data), _engine_step(case, rt, data, edit=_relus_out_of_place), rounds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--case", action="append", help=f"NAME[:SIZE[:BATCH]] (default: {' '.join(DEFAULT_CASES)})"
    )
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--steps", type=int, default=2, help="steps per timed round of the whole step")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = physical cores)")
    p.add_argument("--relu-ab", type=int, default=0, help="rounds of in-place vs out-of-place ReLU (0: none)")
    args = p.parse_args(argv)
    machine = bl.detect_machine()
    torch.set_num_threads(args.threads or machine.physical_cores)
    env = bl.environment(sys.argv)
    print(f"torch {env['torch']}, {torch.get_num_threads()} threads, {env['date']}")
    rt = Runtime(torch.device("cpu"), args.precision, args.channels_last)
    for spec in args.case or DEFAULT_CASES:
        case = tp.Case.parse(spec)
        whole, costs = parts(case, rt, args.steps)
        print(f"\n{case}, {args.precision}{' channels_last' if args.channels_last else ' NCHW'}: ", end="")
        print(f"whole engine step {1000 * whole:.1f} ms ({case.batch / whole:.1f} img/s)")
        for name, s in costs.items():
            print(f"  {name:50} {1000 * s:9.3f} ms  {100 * s / whole:6.2f}% of the step")
        if args.relu_ab:
            inp, outp, ratio = relu_ab(case, rt, args.relu_ab)
            print(
                f"  ReLU in place {1000 * inp:.1f} ms vs out of place {1000 * outp:.1f} ms per step: "
                f"in place is {ratio:.3f}x as fast (median of {args.relu_ab} A/B rounds)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
