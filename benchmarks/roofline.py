"""The machine's measured limit: the best FLOP/s of its matrix and convolution kernels, per precision.

A "% of peak" is only meaningful against a denominator the machine has shown it can reach. Before the
contenders, this times large matrix multiplies and a large 3x3 convolution (forward alone, and forward +
both backward convolutions, as a training step runs them) at each precision, on the same threads and device
as the contenders. The roofline of a precision is the best rate any of its probes reached over all
repeats. A training or inference step runs the same kernels plus memory-bound work (BN, ReLU, adds, the
optimizer), so it cannot reach a higher rate: :meth:`Roofline.fraction` asserts a contender's fraction is
at most 1, and a failure means the FLOP count or the probes are wrong, never a fast contender.

Not part of the package: the benchmark scripts import it from their own folder, next to ``benchlib``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class ProbeShape:
    """Sizes of the probes. CPU: ~0.1 s per call in fp32 on 2 cores; GPU: large enough to fill an H200."""

    gemm: int  # n of the square (n, n) @ (n, n) matmul: 2 n^3 flops
    conv: tuple[int, int, int]  # (batch, channels in = out, height = width) of the 3x3 convolution


CPU_SHAPE = ProbeShape(gemm=2048, conv=(8, 256, 56))  # resnet50's layer1/layer2 widths at its batch 8
GPU_SHAPE = ProbeShape(gemm=8192, conv=(256, 256, 56))
# Code-path checks (``gpu.py --tiny`` on a CPU, the smoke test): seconds, and still a ceiling for tiny nets.
SMALL_SHAPE = ProbeShape(gemm=1024, conv=(4, 128, 28))


@dataclass
class Probe:
    """One kernel at one precision: its flops per call and the GFLOP/s of each timed repeat."""

    name: str
    precision: str  # fp32 | bf16
    flops: float  # per call
    gflops: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        """The best repeat: a ceiling is estimated from the fastest run, noise only ever slows a run."""
        return max(self.gflops)


class RooflineExceeded(AssertionError):
    """A contender above the measured roofline: the FLOP count or the probes are wrong."""


@dataclass
class Roofline:
    """The probes of one run and the per-precision ceiling they give."""

    device: str
    threads: int
    probes: list[Probe]
    seconds: float = 0.0

    def peak(self, precision: str) -> float:
        """GFLOP/s: the best rate of any probe of ``precision`` (GEMM or convolution, fwd or fwd+bwd)."""
        rates = [p.best for p in self.probes if p.precision == precision]
        if not rates:
            raise KeyError(f"no {precision} probe was measured")
        return max(rates)

    def fraction(self, gflops: float, precision: str, *, what: str = "a contender") -> float:
        """``gflops`` as a fraction of the ``precision`` roofline; asserts it is at most 1."""
        peak = self.peak(precision)
        frac = gflops / peak
        if frac > 1.0:
            raise RooflineExceeded(
                f"{what}: {gflops:.1f} GFLOP/s is {100 * frac:.1f}% of the measured {precision} roofline "
                f"({peak:.1f} GFLOP/s); a step cannot outrun its own kernels, so the FLOP count or the "
                "probes are wrong (or the machine was busy while the probes ran: rerun alone)"
            )
        return frac

    def describe(self) -> str:
        lines = [
            f"measured roofline ({self.device}, {self.threads} threads, {self.seconds:.0f} s of probes):"
        ]
        for p in self.probes:
            lines.append(
                f"  {p.precision} {p.name:44} best {p.best:8.1f} GFLOP/s over {len(p.gflops)} repeats"
            )
        for prec in dict.fromkeys(p.precision for p in self.probes):
            lines.append(
                f"  {prec} roofline = {self.peak(prec):.1f} GFLOP/s (the best probe of that precision)"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "threads": self.threads,
            "seconds": self.seconds,
            "peaks_gflops": {
                prec: self.peak(prec) for prec in dict.fromkeys(p.precision for p in self.probes)
            },
            "probes": [
                {
                    "name": p.name,
                    "precision": p.precision,
                    "flops": p.flops,
                    "gflops": p.gflops,
                    "best": p.best,
                }
                for p in self.probes
            ],
        }


def _rate(fn: Callable[[], Any], flops: float, timer: Any, *, repeats: int, min_s: float) -> list[float]:
    """GFLOP/s of ``repeats`` timed batches of calls, each batch lasting at least ``min_s``."""
    timer.measure(fn, 1)  # warm-up: oneDNN primitive creation, cuBLAS/cuDNN heuristics, allocator
    t = max(timer.measure(fn, 1), 1e-9)
    calls = max(1, round(min_s / t))
    return [calls * flops / max(timer.measure(fn, calls), 1e-12) / 1e9 for _ in range(repeats)]


def _gemm(n: int, dtype: torch.dtype, device: torch.device) -> tuple[str, float, Callable[[], Any]]:
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    return f"gemm {n}x{n}x{n}", 2.0 * n**3, lambda: torch.mm(a, b)


def _conv(
    shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device, *, channels_last: bool, train: bool
) -> tuple[str, float, Callable[[], Any]]:
    """A 3x3, stride 1, pad 1 convolution (B, C, S, S) -> (B, C, S, S); ``train`` adds both backward convs."""
    b, c, s = shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(b, c, s, s, generator=g).to(device, dtype, memory_format=fmt)
    w = (torch.randn(c, c, 3, 3, generator=g) * 0.05).to(device, dtype, memory_format=fmt)
    macs = b * c * s * s * c * 9  # output elements x fan-in
    layout = "channels_last" if channels_last else "NCHW"
    name = f"conv3x3 {b}x{c}x{s}x{s} {layout}" + (" fwd+bwd" if train else " fwd")
    if not train:
        return name, 2.0 * macs, lambda: F.conv2d(x, w, padding=1)
    x.requires_grad_(True)
    w.requires_grad_(True)
    grad = torch.ones(b, c, s, s, device=device, dtype=dtype).to(memory_format=fmt)

    def step() -> None:
        x.grad = w.grad = None
        F.conv2d(x, w, padding=1).backward(grad)  # forward, then grad of input and of weight

    return name, 3 * 2.0 * macs, step


def probe_list(
    device: torch.device, precisions: tuple[str, ...], shape: ProbeShape
) -> list[tuple[str, Callable[[], tuple[str, float, Callable[[], Any]]]]]:
    """(precision, builder) of every probe: GEMM, then the 3x3 conv in both layouts, forward and training."""
    out = []
    for prec in precisions:
        dtype = PRECISIONS[prec]
        out.append((prec, lambda d=dtype: _gemm(shape.gemm, d, device)))
        for cl in (False, True):
            for train in (False, True):
                out.append(
                    (
                        prec,
                        lambda d=dtype, cl=cl, tr=train: _conv(
                            shape.conv, d, device, channels_last=cl, train=tr
                        ),
                    )
                )
    return out


def measure_roofline(
    device: torch.device,
    timer: Any,
    *,
    precisions: tuple[str, ...] = ("fp32", "bf16"),
    shape: ProbeShape = CPU_SHAPE,
    repeats: int = 5,
    min_s: float = 0.25,
    log: Callable[[str], None] = print,
) -> Roofline:
    """Time every probe ``repeats`` times on the current threads; see the module docstring for why."""
    t0 = time.perf_counter()
    probes = []
    for prec, build in probe_list(device, precisions, shape):
        name, flops, fn = build()
        probe = Probe(name, prec, flops, _rate(fn, flops, timer, repeats=repeats, min_s=min_s))
        log(f"  probe {prec} {name}: best {probe.best:.1f} GFLOP/s")
        probes.append(probe)
        del fn
    return Roofline(str(device), torch.get_num_threads(), probes, time.perf_counter() - t0)
