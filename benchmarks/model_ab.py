"""Model-only A/B: reslab's ImageNet ResNet against torchvision's, same weights, the same plain SGD loop.

Isolates the model from the engine: every contender runs the identical loop (forward, cross-entropy,
backward, torch's default SGD) in alternating order over several rounds. Contenders: torchvision's model
(when torchvision imports: ``pip install -e ".[bench]"``), reslab's, and reslab's with the residual sum
forced out of place (a no-op hook on every ``branch_out``, as an analysis would register).
``--profile``: two steps of each under ``torch.profiler``, and the ops whose self CPU time differs most
between each reslab contender and torchvision: how the fp32 gap to torchvision was found.

    PYTHONPATH=src python benchmarks/model_ab.py [--model resnet50] [--rounds 6] [--batch 8] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import reslab


def contenders(name: str) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    ours = reslab.build_model(name)
    nets: dict[str, nn.Module] = {"reslab": ours}
    try:
        import torchvision.models as tvm
    except ImportError:
        tvm = None
    if tvm is not None:
        nets["torchvision"] = getattr(tvm, name)()
        nets["torchvision"].load_state_dict(ours.state_dict(), strict=True)
    observed = reslab.build_model(name)
    observed.load_state_dict(ours.state_dict(), strict=True)
    for block in observed.blocks():  # type: ignore[operator]
        block.branch_out.register_forward_hook(lambda _m, _i, _out: None)
    nets["reslab, sum out of place"] = observed
    return nets


def stepper(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()

    def step() -> None:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def op_times(step: Callable[[], None]) -> dict[str, float]:
    """Self CPU time (ms) per op over two steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
        step()
    return {e.key: e.self_cpu_time_total / 1000 for e in prof.key_averages()}


def print_profile(steps: dict[str, Callable[[], None]], rows: int) -> None:
    """Each reslab contender against the reference (torchvision, else reslab): the ops that differ most."""
    ref = "torchvision" if "torchvision" in steps else "reslab"
    theirs = op_times(steps[ref])
    for name in (k for k in steps if k != ref):
        ours = op_times(steps[name])
        print(
            f"\nself CPU ms over 2 steps: {name} {sum(ours.values()):.1f}, {ref} {sum(theirs.values()):.1f}"
        )
        keys = sorted(set(ours) | set(theirs), key=lambda k: -abs(ours.get(k, 0) - theirs.get(k, 0)))
        for k in keys[:rows]:
            a, b = ours.get(k, 0.0), theirs.get(k, 0.0)
            print(f"  {k[:48]:48s} {a:9.2f} vs {b:9.2f}  diff {a - b:+8.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50", help="an ImageNet ResNet: resnet18 ... resnet152")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="per-op self CPU time against torchvision")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    nets = contenders(args.model)
    x = torch.randn(args.batch, 3, args.size, args.size)  # (B, C, H, W)
    y = torch.randint(0, 1000, (args.batch,))
    steps = {k: stepper(m, x, y) for k, m in nets.items()}
    for step in steps.values():  # warm-up: oneDNN primitive caches, allocator
        step()
    rates: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(args.rounds):
        for k in list(steps) if r % 2 == 0 else list(steps)[::-1]:
            t = time.perf_counter()
            steps[k]()
            steps[k]()
            rates[k].append(2 * args.batch / (time.perf_counter() - t))
    ref = "torchvision" if "torchvision" in rates else "reslab"
    base = rates[ref]
    for k, v in rates.items():
        ratio = statistics.median(a / b for a, b in zip(v, base, strict=True))
        print(
            f"{k:26s} {statistics.median(v):7.2f} img/s  x {ref} {ratio:.3f} "
            f"(median of {args.rounds} per-round ratios)"
        )
    if args.profile:
        print_profile(steps, rows=12)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
