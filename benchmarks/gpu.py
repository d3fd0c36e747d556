"""One prepared GPU check (< 8 min on an H200): measured roofline, resnet50/56 training throughput, loader.

    bash benchmarks/gpu.sh                               # on the GPU machine (wraps this file, 470 s timeout)
    python benchmarks/gpu.py --tiny --device cpu         # the same code path on a CPU in seconds (no compile)

Sections (each skipped, and said so, once ``--budget-s`` is spent):
0. The limit, measured (:mod:`roofline`): a bf16 GEMM (8192^3) and a bf16 3x3 convolution (256x256x56x56,
   forward and forward + backward, both layouts), best of 5; printed beside the data-sheet 989 TFLOP/s.
1. resnet50 at 224, bf16 autocast + channels_last + ``torch.compile``, batch ``--batch`` (256 fills an H200's
   memory comfortably): reslab's engine step vs torchvision's resnet50 (same weights, outputs checked) under
   the same settings, eager and compiled, alternating A/B; images/s, "%roof" against the measured bf16
   roofline (asserted <= 100%), MFU against the data sheet's 989 TFLOP/s dense bf16, peak memory.
2. resnet56 on CIFAR-shaped synthetic data (50,000 images 3x32x32 on the GPU, crop + flip there): images/s and
   seconds per 50k-image epoch at batch 128 (the paper's) and 512.
3. Loader only: DeviceLoader's images/s at both shapes, and its share of a step.
Timing: CUDA events with synchronisation (perf_counter on a CPU); warm-up (compile included) before timing.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from typing import Any

import torch

import benchlib as bl
import roofline
from reslab.data.loader import DeviceLoader, Normalization
from reslab.engine.devices.runtime import Runtime
from reslab.models import build_model, summarize

DATASHEET_BF16_TFLOPS = 989.0  # H100/H200 SXM dense bf16 (no sparsity): printed beside the measured roofline
NORM = Normalization("channel", torch.full((3, 1, 1), 0.5), torch.full((3, 1, 1), 0.25))


class Budget:
    """Wall-clock guard: a section that would start after the budget is spent is skipped, not cut."""

    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def allows(self, name: str, need: float) -> bool:
        if self.left() >= need:
            return True
        print(f"-- skipped {name}: {self.left():.0f} s left of the budget, ~{need:.0f} s needed", flush=True)
        return False


def _loader(images: torch.Tensor, labels: torch.Tensor, batch: int, device: torch.device) -> DeviceLoader:
    return DeviceLoader(
        images,
        labels,
        batch_size=batch,
        norm=NORM,
        device=device,
        shuffle=True,
        augment="crop_flip",
        drop_last=True,
        channels_last=True,
    )


def _data(n: int, size: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)  # (N, 3, S, S)
    return images, torch.randint(0, classes, (n,), generator=g)


def _compiled(m: torch.nn.Module, on: bool) -> torch.nn.Module:
    # dynamic=False: each batch size gets its own static graph (no symbolic shapes in the kernels).
    return torch.compile(m, dynamic=False) if on else m  # type: ignore[return-value]


def resnet50_section(
    args: argparse.Namespace, device: torch.device, roof: roofline.Roofline
) -> dict[str, Any]:
    size, batch = (64, 2) if args.tiny else (224, args.batch)
    rt = Runtime(device, "bf16", True)
    data = _data(2 * batch, size, 1000)
    torch.manual_seed(0)
    cpu_model = build_model("resnet50")
    # Same weights into torchvision's model; checked on the CPU in fp32 (no TF32 there) before anything runs.
    twin = bl.torchvision_twin("resnet50", cpu_model, NORM.apply(data[0][:2]))
    runners: list[bl.Runner] = []
    for compiled in (False, True) if args.compile else (False,):
        tag = "compile" if compiled else "eager"
        for name, src in (("reslab", cpu_model), ("torchvision", twin)):
            if src is None:
                continue
            t0 = time.perf_counter()
            m = _clone(src).to(device, memory_format=torch.channels_last)
            # torchvision gets torch's default SGD (foreach on CUDA): what a torchvision user gets.
            opt = bl.make_sgd(m) if name == "reslab" else bl.plain_sgd(m)
            step = bl.engine_step(_compiled(m, compiled), opt, rt, bl.cycle(_loader(*data, batch, device)))
            settings = {"precision": "bf16", "channels_last": True, "compile": compiled}
            group = "reslab" if name == "reslab" else "torchvision"
            runners.append(
                bl.Runner(f"{name} bf16+CL {tag}", step, batch, group, settings, time.perf_counter() - t0)
            )
    title = f"resnet50 {size}x{size} batch {batch}"
    return _time_and_report(title, runners, _macs("resnet50", size), args, device, roof)


def _macs(name: str, size: int) -> tuple[int, int]:
    """(multiply-adds per image, those of the layer that reads the image): what :func:`bl.gflops` needs."""
    meta = build_model(name, device="meta")
    return summarize(meta, (3, size, size)).total_macs, bl.first_layer_macs(meta, (3, size, size))


def _clone(m: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(m)


def _time_and_report(
    title: str,
    runners: list[bl.Runner],
    macs: tuple[int, int],
    args: argparse.Namespace,
    device: torch.device,
    roof: roofline.Roofline,
) -> dict[str, Any]:
    print(f"\n== {title}", flush=True)
    timings = bl.ab_rounds(runners, device=device, warmup=args.warmup, repeats=args.repeats, steps=args.steps)
    mem = {r.name: bl.peak_step_bytes(r.step, device) for r in runners}
    ref = next((t for t in timings if t.group == "torchvision" and t.settings["compile"]), None)
    ref = ref or next((t for t in timings if t.group == "torchvision"), None)
    head = f"{'contender':32} {'img/s':>9} {'spread':>7} {'x tv':>6} {'TFLOP/s':>8} {'%roof':>6} {'MFU':>6}"
    print(head + f" {'mem GiB':>8} {'setup s':>7}")
    rows = []
    for t in timings:
        gf = bl.gflops(macs[0], t.median, train=True, input_macs=macs[1])
        frac = roof.fraction(gf, "bf16", what=f"{title} {t.name}")  # asserts <= 1
        mfu = gf / 1000 / DATASHEET_BF16_TFLOPS
        vs = t.ratio_to(ref) if ref is not None else None
        rows.append(
            bl.timing_record(
                t, tflops=gf / 1000, of_roofline=frac, mfu=mfu, vs_torchvision=vs, memory_bytes=mem[t.name]
            )
        )
        print(
            f"{t.name:32} {t.median:9.1f} {bl.spread_pct(t):6.0f}% {('-' if vs is None else f'{vs:.2f}'):>6} "
            f"{gf / 1000:8.2f} {100 * frac:5.1f}% {100 * mfu:5.1f}% {mem[t.name] / 2**30:8.2f} "
            f"{t.setup_s:7.1f}"
        )
    return {"title": title, "macs_per_image": macs[0], "input_layer_macs_per_image": macs[1], "rows": rows}


def resnet56_section(
    args: argparse.Namespace, device: torch.device, roof: roofline.Roofline
) -> dict[str, Any]:
    n = 256 if args.tiny else 50_000
    data = _data(n, 32, 10)
    rt = Runtime(device, "bf16", True)
    runners: list[bl.Runner] = []
    for batch in (8, 32) if args.tiny else (128, 512):
        t0 = time.perf_counter()
        torch.manual_seed(0)
        m = build_model("resnet56").to(device, memory_format=torch.channels_last)
        opt = bl.make_sgd(m)
        step = bl.engine_step(_compiled(m, args.compile), opt, rt, bl.cycle(_loader(*data, batch, device)))
        settings = {"precision": "bf16", "channels_last": True, "compile": args.compile, "batch": batch}
        runners.append(
            bl.Runner(f"reslab resnet56 b{batch}", step, batch, "reslab", settings, time.perf_counter() - t0)
        )
    out = _time_and_report(
        "resnet56 32x32 (CIFAR-shaped, 50k synthetic)", runners, _macs("resnet56", 32), args, device, roof
    )
    for row in out["rows"]:
        row["seconds_per_50k_epoch"] = 50_000 / row["median"]
        print(f"{row['name']}: {row['seconds_per_50k_epoch']:.2f} s per 50k-image epoch")
    return out


def loader_section(
    args: argparse.Namespace, device: torch.device, steps: dict[str, float]
) -> list[dict[str, Any]]:
    rows = []
    timer = bl.Timer(device)
    for label, size, batch in (
        ("224", 64 if args.tiny else 224, 4 if args.tiny else args.batch),
        ("32", 32, 512),
    ):
        data = _data(4 * batch, size, 10)
        batches = bl.cycle(_loader(*data, batch, device))

        def step(batches: Any = batches) -> None:
            next(batches)

        timer.measure(step, 2)
        seconds = timer.measure(step, 20)
        ips = 20 * batch / seconds
        share = steps.get(label, 0.0) / ips if steps.get(label) else None
        print(
            f"loader only {size}x{size} batch {batch} (crop+flip): {ips:,.0f} img/s"
            + (f" = {100 * share:.2f}% of the best step" if share else "")
        )
        rows.append(
            {"shape": f"3x{size}x{size}", "batch": batch, "images_per_s": ips, "share_of_step": share}
        )
    return rows


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=256, help="resnet50 batch (256 fills an H200 comfortably)")
    p.add_argument(
        "--tiny", action="store_true", help="tiny shapes, no compile: checks the code path on a CPU"
    )
    p.add_argument("--compile", dest="compile", action="store_true", default=None)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per contender (compile happens here)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="steps per contender per round")
    p.add_argument("--budget-s", type=float, default=450, help="skip sections that would start after this")
    p.add_argument("--json", default="bench-results/gpu.json")
    args = p.parse_args(argv)
    if args.compile is None:
        args.compile = not args.tiny
    if args.tiny:
        args.warmup, args.repeats, args.steps = 1, 2, 1
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
    budget = Budget(args.budget_s)
    roof = measure_limit(args, device)
    payload: dict[str, Any] = {
        "environment": env,
        "args": vars(args),
        "datasheet_bf16_tflops": DATASHEET_BF16_TFLOPS,
        "roofline": roof.to_dict(),
    }
    step_ips: dict[str, float] = {}
    if budget.allows("resnet50", 0 if args.tiny else 200):
        payload["resnet50"] = r50 = resnet50_section(args, device, roof)
        step_ips["224"] = max(r["median"] for r in r50["rows"] if r["group"] == "reslab")
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if budget.allows("resnet56", 0 if args.tiny else 100):
        payload["resnet56"] = r56 = resnet56_section(args, device, roof)
        step_ips["32"] = max(
            r["median"] for r in r56["rows"] if r["settings"]["batch"] == (32 if args.tiny else 512)
        )
    if budget.allows("loader", 0 if args.tiny else 10):
        payload["loader"] = loader_section(args, device, step_ips)
    payload["seconds"] = time.perf_counter() - budget.start
    print(f"\n{payload['seconds']:.0f} s; JSON: {bl.write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
