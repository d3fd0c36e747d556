"""One prepared GPU check (at most 9 minutes on one H200): CUDA graphs, runs per GPU, sweep times.

    bash benchmarks/gpu.sh                               # on the GPU machine (535 s timeout, JSON to $OUT)
    python benchmarks/gpu.py --tiny --device cpu         # the same code path on a CPU in seconds (no compile)

Sections, in order; each starts only if the budget left covers its own need plus the needs of the sections
after it (else it is skipped, and says so), and its optional parts (compiled contenders, a second sweep) run
only on time to spare:

0. the limit, measured (:mod:`roofline`): bf16 GEMM and 3x3 convolutions; printed beside the data sheet.
1. equivalence: resnet20, 30 steps from the same weights and batches, captured step vs eager, against eager
   vs eager (cuDNN's own run-to-run noise): the losses and final weights within that noise.
2. throughput: resnet56 and resnet1202 at batch 128 (bf16 + channels_last, CIFAR-shaped data on the device),
   the engine's step eager, captured as one CUDA graph, and compiled with ``mode="reduce-overhead"``
   (compile time counted, and predicted for 1202 from 56's before it is tried), A/B rounds in one process:
   images/s and each one's ratio to eager.
3. ``reslab compare --preset full --device cuda`` (full width, 20 to 1,202 layers): its table, figures and
   wall time (copied beside the JSON, in widths/).
4. ``reslab compare --preset deep --device cuda``: wall time (runs per GPU: auto), and its printed estimate;
   on time to spare the same with ``--runs-per-device 1``.
5. the paper preset's Fig. 6 sweep (10 runs of 64k steps): its estimate from timed steps of each depth (on
   CIFAR-shaped synthetic data: no download here) and from the measured throughput of 1, 2 and 4 runs side
   by side (:func:`reslab.experiments.scheduler.measure_concurrency`), with the count ``auto`` would choose.
6. resnet50 at 224, batch ``--batch``, bf16 + channels_last: reslab's engine step vs torchvision's resnet50
   (same weights, outputs checked; skipped without torchvision), eager and captured; compiled on time to
   spare. Images/s, "%roof" against the measured bf16 roofline (asserted <= 100%), MFU against 989 TFLOP/s.
A section that raises is recorded (its error and traceback in the JSON) and the next one starts.
Timing: CUDA events with synchronisation (perf_counter on a CPU); warm-up (capture, compile) before timing.
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

import benchlib as bl
import gpu_sweeps
import roofline
from gpu_sweeps import NORM, data, loader
from reslab.engine.devices.runtime import Runtime
from reslab.models import build_model, summarize

DATASHEET_BF16_TFLOPS = 989.0  # H100/H200 SXM dense bf16 (no sparsity): printed beside the measured roofline
# Seconds each section needs to start on an H200 (0 with --tiny): measured sections are sized to fit.
# Ordered by what the issues need most: the full-width sweep to 1,202 layers comes right after the step's
# own checks, resnet50 (a comparison with torchvision) last.
NEEDS = {
    "equivalence": 25,
    "throughput": 110,
    "widths": 125,
    "deep": 75,
    "paper": 60,
    "resnet50": 100,
}


class Budget:
    """Wall-clock guard: a section starts only if the time left covers it and every section after it."""

    def __init__(self, seconds: float, needs: dict[str, float]) -> None:
        self.start, self.seconds, self.needs = time.perf_counter(), seconds, needs
        self.skipped: list[str] = []

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def after(self, name: str) -> float:
        names = list(self.needs)
        return sum(self.needs[n] for n in names[names.index(name) + 1 :])

    def spare(self, name: str) -> float:
        """Seconds this section may spend beyond its own need without cutting into the later ones."""
        return self.left() - self.after(name) - self.needs[name]

    def allows(self, name: str, need: float | None = None) -> bool:
        need = self.needs.get(name, 0) if need is None else need
        reserve = self.after(name) if name in self.needs else 0.0
        if self.left() >= need + reserve:
            return True
        self.skipped.append(name)
        print(
            f"-- skipped {name}: {self.left():.0f} s left of the budget, ~{need:.0f} s needed "
            f"(+{reserve:.0f} s kept for the sections after it)",
            flush=True,
        )
        return False


def macs(name: str, size: int) -> tuple[int, int]:
    """(multiply-adds per image, those of the layer that reads the image): what :func:`bl.gflops` needs."""
    meta = build_model(name, device="meta")
    return summarize(meta, (3, size, size)).total_macs, bl.first_layer_macs(meta, (3, size, size))


def report(
    title: str,
    runners: list[bl.Runner],
    cost: tuple[int, int],
    args: argparse.Namespace,
    device: torch.device,
    roof: roofline.Roofline,
    *,
    steps: int | None = None,
    repeats: int | None = None,
) -> dict[str, Any]:
    """A/B rounds of ``runners``; a row each with img/s, ratios to eager and torchvision, %roof, memory."""
    print(f"\n== {title}", flush=True)
    timings = bl.ab_rounds(
        runners, device=device, warmup=args.warmup, repeats=repeats or args.repeats, steps=steps or args.steps
    )
    mem = {r.name: bl.peak_step_bytes(r.step, device) for r in runners}
    eager = next((t for t in timings if t.settings.get("step") == "eager" and t.group == "reslab"), None)
    tv = next((t for t in timings if t.group == "torchvision"), None)
    head = f"{'contender':34} {'img/s':>9} {'spread':>7} {'x eager':>7} {'x tv':>6} {'%roof':>6} {'MFU':>6}"
    print(head + f" {'setup s':>7}")
    rows = []
    for t in timings:
        gf = bl.gflops(cost[0], t.median, train=True, input_macs=cost[1])
        frac = roof.fraction(gf, "bf16", what=f"{title} {t.name}")  # asserts <= 1
        mfu = gf / 1000 / DATASHEET_BF16_TFLOPS
        vs_eager = t.ratio_to(eager) if eager is not None else None
        same = next((u for u in timings if u.group == "torchvision" and u.settings == t.settings), tv)
        vs_tv = t.ratio_to(same) if same is not None and t.group != "torchvision" else None
        rows.append(
            bl.timing_record(
                t,
                tflops=gf / 1000,
                of_roofline=frac,
                mfu=mfu,
                vs_eager=vs_eager,
                vs_torchvision=vs_tv,
                memory_bytes=mem[t.name],
            )
        )
        shown = [("-" if v is None else f"{v:.2f}") for v in (vs_eager, vs_tv)]
        print(
            f"{t.name:34} {t.median:9.1f} {bl.spread_pct(t):6.0f}% {shown[0]:>7} {shown[1]:>6} "
            f"{100 * frac:5.1f}% {100 * mfu:5.1f}% {t.setup_s:7.1f}"
        )
    return {"title": title, "macs_per_image": cost[0], "input_layer_macs_per_image": cost[1], "rows": rows}


def cifar_runner(name: str, batch: int, mode: str, device: torch.device, images: Any) -> bl.Runner:
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(name).to(device, memory_format=torch.channels_last)
    rt = Runtime(device, "bf16", True)
    step = bl.engine_stepper(model, bl.make_sgd(model), rt, bl.cycle(loader(*images, batch, device)), mode)
    settings = {"precision": "bf16", "channels_last": True, "step": mode, "batch": batch}
    return bl.Runner(
        f"reslab {name} b{batch} {mode}", step, batch, "reslab", settings, time.perf_counter() - t0
    )


def throughput_section(
    args: argparse.Namespace, device: torch.device, roof: roofline.Roofline, budget: Budget
) -> dict[str, Any]:
    """resnet56 and resnet1202 at batch 128: eager, captured, compiled (reduce-overhead) when time allows."""
    images = data(256 if args.tiny else 50_000, 32, 10)
    batch = 8 if args.tiny else 128
    out: dict[str, Any] = {}
    compile56_s = None
    for name, steps, repeats in (("resnet56", None, None), ("resnet1202", 2 if args.tiny else 4, 3)):
        name = "resnet8" if args.tiny and name == "resnet56" else "resnet14" if args.tiny else name
        runners = [cifar_runner(name, batch, m, device, images) for m in ("eager", "capture")]
        depth = int("".join(ch for ch in name if ch.isdigit()))
        predicted = None if compile56_s is None else compile56_s * depth / 56
        if args.compile and (predicted is None or predicted < budget.spare("throughput")):
            t0 = time.perf_counter()
            runners.append(cifar_runner(name, batch, "compile", device, images))
            runners[-1].step()  # the compile, timed on its own (and counted in setup_s)
            runners[-1].setup_s += time.perf_counter() - t0
            compile56_s = compile56_s or runners[-1].setup_s
        elif args.compile:
            print(f"-- skipped {name} compiled: ~{predicted:.0f} s of compile predicted from resnet56's")
        cost = macs(name, 32)
        out[name] = report(
            f"{name} 32x32 batch {batch} (CIFAR-shaped, on the device)",
            runners,
            cost,
            args,
            device,
            roof,
            steps=steps,
            repeats=repeats,
        )
        del runners
        _free(device)
    return out


def resnet50_section(
    args: argparse.Namespace, device: torch.device, roof: roofline.Roofline, budget: Budget
) -> dict[str, Any]:
    size, batch = (64, 2) if args.tiny else (224, args.batch)
    rt = Runtime(device, "bf16", True)
    images = data(2 * batch, size, 1000)
    torch.manual_seed(0)
    cpu_model = build_model("resnet50")
    # Same weights into torchvision's model; checked on the CPU in fp32 (no TF32 there) before anything runs.
    twin = bl.torchvision_twin("resnet50", cpu_model, NORM.apply(images[0][:2]))
    modes = ["eager", "capture"]
    if args.compile and budget.spare("resnet50") > (0 if args.tiny else 120):
        modes.append("compile")
    elif args.compile:
        print("-- skipped resnet50 compiled: no time to spare for two compiles")
    runners: list[bl.Runner] = []
    for mode in modes:
        for name, src in (("reslab", cpu_model), ("torchvision", twin)):
            if src is None:
                continue
            t0 = time.perf_counter()
            m = copy.deepcopy(src).to(device, memory_format=torch.channels_last)
            step = bl.engine_stepper(m, bl.make_sgd(m), rt, bl.cycle(loader(*images, batch, device)), mode)
            settings = {"precision": "bf16", "channels_last": True, "step": mode}
            runners.append(
                bl.Runner(f"{name} bf16+CL {mode}", step, batch, name, settings, time.perf_counter() - t0)
            )
    return report(
        f"resnet50 {size}x{size} batch {batch}", runners, macs("resnet50", size), args, device, roof
    )


def measure_limit(args: argparse.Namespace, device: torch.device) -> roofline.Roofline:
    """The bf16 roofline of this device, measured now; printed beside the data sheet's figure."""
    print("\n== the limit: bf16 GEMM and 3x3 convolution, best of the repeats", flush=True)
    roof = roofline.measure_roofline(
        device,
        bl.Timer(device),
        precisions=("bf16",),
        shape=roofline.SMALL_SHAPE if args.tiny else roofline.GPU_SHAPE,
        repeats=2 if args.tiny else 5,
        min_s=0.02 if args.tiny else 0.2,
    )
    print(roof.describe())
    gemm = next(p.best for p in roof.probes if p.name.startswith("gemm"))
    print(
        f"bf16 GEMM measured {gemm / 1000:.1f} TFLOP/s = {gemm / 10 / DATASHEET_BF16_TFLOPS:.0f}% of the "
        f"data sheet's {DATASHEET_BF16_TFLOPS:.0f} TFLOP/s (H100/H200 SXM dense bf16); %roof: vs the measured"
    )
    return roof


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=256, help="resnet50 batch (256 fills an H200 comfortably)")
    p.add_argument(
        "--tiny", action="store_true", help="tiny shapes and sweeps, no compile: the code path on a CPU"
    )
    p.add_argument("--compile", dest="compile", action="store_true", default=None)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--warmup", type=int, default=6, help="untimed steps per contender (capture, compile)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="steps per contender per round")
    p.add_argument(
        "--budget-s", type=float, default=510, help="the whole check; sections that do not fit are skipped"
    )
    p.add_argument("--json", default="bench-results/gpu.json")
    args = p.parse_args(argv)
    if args.compile is None:
        args.compile = not args.tiny
    if args.tiny:
        args.warmup, args.repeats, args.steps = 5, 2, 1  # 5: the eager steps and the capture come first
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("no CUDA GPU here; run with --tiny --device cpu to check the code path", file=sys.stderr)
            return 2
        # Fastest conv algorithms for fixed shapes; TF32 for the few fp32 GEMMs outside autocast.
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    env = bl.environment(sys.argv)
    env["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{env['device_name']}; torch {env['torch']}, torchvision {env['torchvision']}; {env['date']}")
    budget = Budget(args.budget_s, {k: 0 if args.tiny else v for k, v in NEEDS.items()})
    payload: dict[str, Any] = {
        "environment": env,
        "args": vars(args),
        "datasheet_bf16_tflops": DATASHEET_BF16_TFLOPS,
    }
    roof = measure_limit(args, device)
    payload["roofline"] = roof.to_dict()
    keep = Path(args.json).parent  # the sweeps' tables and figures are copied beside the JSON
    sections = {
        "equivalence": lambda: gpu_sweeps.equivalence_section(args, device),
        "throughput": lambda: throughput_section(args, device, roof, budget),
        "widths": lambda: gpu_sweeps.widths_section(args, budget, keep=keep / "widths"),
        "deep": lambda: gpu_sweeps.deep_section(args, budget, keep=keep / "deep"),
        "paper": lambda: gpu_sweeps.paper_section(args, device),
        "resnet50": lambda: resnet50_section(args, device, roof, budget),
    }
    assert list(sections) == list(NEEDS)
    for name, run in sections.items():
        if budget.allows(name):
            t0 = time.perf_counter()
            try:
                payload[name] = run()
            except Exception as exc:  # one section's failure must not cost the others' device time
                traceback.print_exc()
                payload[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            payload[name]["section_seconds"] = round(time.perf_counter() - t0, 1)
            _free(device)
            bl.write_json(args.json, payload)  # what is measured so far survives a kill
    payload["skipped"] = budget.skipped
    payload["seconds"] = time.perf_counter() - budget.start
    print(f"\n{payload['seconds']:.0f} s; JSON: {bl.write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
