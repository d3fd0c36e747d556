"""Training and inference throughput of reslab's settings against plain PyTorch and torchvision, A/B.

    python benchmarks/throughput.py                      # the default cases (~10 min on a quiet 2-core CPU)
    python benchmarks/throughput.py --quick              # smoke check: tiny cases, no compile (~1 min)
    python benchmarks/throughput.py --case resnet50:224:8 --mode train --repeats 5
    python benchmarks/throughput.py --loader             # loader-only images/s and its share of a step

Contenders per case (same architecture, same initial weights, the same synthetic images):
- ``baseline``: the straightforward loop: a DataLoader over a TensorDataset of normalised float NCHW images,
  fp32, torch's default SGD, ``loss.item()`` each step;
- ``torchvision fp32`` / ``torchvision bf16+CL`` (ImageNet models, when torchvision imports): the same
  weights loaded strictly into torchvision's model, outputs checked equal before
  timing, fed like the baseline;
- ``reslab <precision>-<layout>[-compile]``: the engine's step (``benchmarks/benchlib.engine_step``) fed by
  :class:`reslab.data.loader.DeviceLoader` (crop + flip on the device at CIFAR sizes).
Each is warmed up (compile included), then timed in ``--repeats`` rounds whose order rotates; a ratio is the
median of per-round ratios. GFLOP/s = 2 x (3 x MACs - the stem's MACs) x images/s for training (the image's
gradient is never computed), 2 x MACs x images/s for inference.

The limit is measured first, in the same process on the same threads (:mod:`roofline`: large GEMMs and a
large 3x3 convolution in fp32 and bf16); "%roof" is each contender's GFLOP/s against the roofline of its own
precision, and is asserted to be at most 100%.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

import benchlib as bl
import roofline
from reslab.data.loader import DeviceLoader, Normalization
from reslab.engine.devices.runtime import Runtime
from reslab.models import build_model, summarize

DEFAULT_CASES = ("resnet20:32:128", "resnet56:32:128", "resnet18:224:8", "resnet50:224:8")
QUICK_CASES = ("resnet20:32:32", "resnet18:64:4")
SETTINGS = {  # name -> (precision, channels_last, compile)
    "fp32-nchw": ("fp32", False, False),
    "fp32-cl": ("fp32", True, False),
    "bf16-nchw": ("bf16", False, False),
    "bf16-cl": ("bf16", True, False),
    "fp32-nchw-compile": ("fp32", False, True),
    "fp32-cl-compile": ("fp32", True, True),
    "bf16-nchw-compile": ("bf16", False, True),
    "bf16-cl-compile": ("bf16", True, True),
}
# Compiling costs ~1-3 min per graph on 2 cores: by default only the setting that wins eagerly is compiled,
# and only for training (--compile-infer adds inference).
DEFAULT_SETTINGS = ("fp32-nchw", "fp32-cl", "bf16-nchw", "bf16-cl", "bf16-cl-compile")


@dataclass(frozen=True)
class Case:
    model: str
    size: int
    batch: int

    @classmethod
    def parse(cls, text: str) -> Case:
        """``NAME[:SIZE[:BATCH]]``; defaults 32/128 for CIFAR nets and 224/8 for ImageNet nets."""
        parts = text.split(":")
        imagenet = parts[0] in bl.IMAGENET
        size = int(parts[1]) if len(parts) > 1 else (224 if imagenet else 32)
        batch = int(parts[2]) if len(parts) > 2 else (8 if imagenet else 128)
        return cls(parts[0], size, batch)

    @property
    def imagenet(self) -> bool:
        return self.model in bl.IMAGENET

    @property
    def classes(self) -> int:
        return 1000 if self.imagenet else 10

    def __str__(self) -> str:
        return f"{self.model} {self.size}x{self.size} batch {self.batch}"


def _model(case: Case, device: torch.device, channels_last: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)  # every contender starts from the same weights
    m = build_model(case.model, num_classes=case.classes, in_channels=3)
    return m.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _data(case: Case, device: torch.device, n_batches: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    n = case.batch * n_batches
    images = torch.randint(0, 256, (n, 3, case.size, case.size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, case.classes, (n,), generator=g)
    return images, labels


NORM = Normalization("channel", torch.full((3, 1, 1), 0.5), torch.full((3, 1, 1), 0.25))


def _device_loader(
    case: Case, data: tuple[torch.Tensor, torch.Tensor], rt: Runtime, *, train: bool, augment: str
) -> DeviceLoader:
    return DeviceLoader(
        data[0],
        data[1],
        batch_size=case.batch,
        norm=NORM,
        device=rt.device,
        shuffle=train,
        augment=augment if train else "none",  # type: ignore[arg-type]
        drop_last=True,
        channels_last=rt.channels_last,
    )


def build_runners(
    case: Case, args: argparse.Namespace, device: torch.device, *, train: bool
) -> tuple[list[bl.Runner], dict[str, Any]]:
    """The contenders for one case; also returns facts to record (torchvision check, augmentation)."""
    data = _data(case, device)
    augment = args.augment if args.augment != "auto" else ("crop_flip" if case.size <= 64 else "none")
    facts: dict[str, Any] = {"augment_reslab": augment if train else "none", "augment_baseline": "none"}
    runners: list[bl.Runner] = []

    def add(name: str, group: str, settings: dict[str, Any], make: Any) -> None:
        t0 = time.perf_counter()
        step = make()
        runners.append(bl.Runner(name, step, case.batch, group, settings, time.perf_counter() - t0))

    def baseline() -> Any:
        m = _model(case, device)
        batches = bl.plain_loader(*data, NORM, case.batch)
        if train:
            return bl.plain_step(m, bl.plain_sgd(m), batches, device=device)
        return bl.plain_infer(m, batches, device=device)

    add("baseline", "baseline", {"precision": "fp32", "channels_last": False, "compile": False}, baseline)

    tv_check = _model(case, device)
    probe = NORM.apply(data[0][:2]).to(device)
    twin = bl.torchvision_twin(case.model, tv_check, probe) if case.imagenet and args.torchvision else None
    facts["torchvision_outputs_match"] = twin is not None or None
    if twin is not None:
        del twin
        tv_variants = [
            ("torchvision fp32", None, False, False),
            ("torchvision bf16+CL", torch.bfloat16, True, False),
        ]
        if args.compile_baselines:
            tv_variants.append(("torchvision bf16+CL-compile", torch.bfloat16, True, True))
        for name, amp, cl, comp in tv_variants:

            def make(amp: Any = amp, cl: bool = cl, comp: bool = comp) -> Any:
                m = bl.torchvision_twin(case.model, _model(case, device), probe)
                assert m is not None
                m = m.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
                fwd = torch.compile(m) if comp else m
                batches = bl.plain_loader(*data, NORM, case.batch)
                if train:
                    return bl.plain_step(
                        fwd, bl.plain_sgd(m), batches, device=device, amp=amp, channels_last=cl
                    )
                return bl.plain_infer(fwd, batches, device=device, amp=amp, channels_last=cl)

            prec = "bf16" if amp is not None else "fp32"
            add(name, "torchvision", {"precision": prec, "channels_last": cl, "compile": comp}, make)
    del tv_check

    for setting in args.settings:
        precision, cl, comp = SETTINGS[setting]
        if comp and not (args.compile and (train or args.compile_infer)):
            continue

        def make(precision: str = precision, cl: bool = cl, comp: bool = comp) -> Any:
            rt = Runtime(device, precision, cl)
            m = _model(case, device, cl)
            fwd = torch.compile(m) if comp else m
            batches = bl.cycle(_device_loader(case, data, rt, train=train, augment=augment))
            if train:
                opt = bl.make_sgd(m)
                return bl.engine_step(fwd, opt, rt, batches)
            return bl.engine_infer(fwd, rt, batches)

        add(
            f"reslab {setting}",
            "reslab",
            {"precision": precision, "channels_last": cl, "compile": comp},
            make,
        )
    return runners, facts


def _same_settings(t: bl.Timing, timings: list[bl.Timing]) -> bl.Timing | None:
    """The torchvision row with t's precision and layout (compile aside: that is what reslab adds)."""
    for o in timings:
        s = o.settings
        same = (s["precision"], s["channels_last"]) == (t.settings["precision"], t.settings["channels_last"])
        if o.group == "torchvision" and not s["compile"] and same:
            return o
    return None


def loader_only(case: Case, device: torch.device, *, augment: str, seconds: float = 1.0) -> float:
    """Images/s of DeviceLoader alone (gather + augmentation + normalise), channels_last bf16-ready output."""
    rt = Runtime(device, "bf16", True)
    loader = _device_loader(case, _data(case, device, n_batches=8), rt, train=True, augment=augment)
    timer, batches = bl.Timer(device), bl.cycle(loader)

    def step() -> None:
        next(batches)

    step()
    n, t = 0, 0.0
    while t < seconds:
        t += timer.measure(step, 4)
        n += 4 * case.batch
    return n / t


def report(
    case: Case,
    mode: str,
    timings: list[bl.Timing],
    macs: tuple[int, int],
    roof: roofline.Roofline,
    mem: dict[str, int],
) -> list[dict[str, Any]]:
    """Print one table; return its JSON rows. ``macs``: (per image, of the layer that reads the image)."""
    base = next(t for t in timings if t.name == "baseline")
    tv32 = next((t for t in timings if t.name == "torchvision fp32"), None)
    train = mode == "train"
    print(f"\n{mode}: {case}  ({macs[0] / 1e6:.1f}M multiply-adds per image)")
    head = f"{'contender':30} {'img/s':>8} {'spread':>7} {'x base':>7} {'x tv32':>7} {'x tv same':>9} "
    head += f"{'GFLOP/s':>8} {'%roof':>6} {'mem MB':>7} {'setup s':>7}"
    print(head)
    print("-" * len(head))
    rows = []
    for t in timings:
        same = _same_settings(t, timings) if t.group == "reslab" else None
        gf = bl.gflops(macs[0], t.median, train=train, input_macs=macs[1])
        prec = t.settings["precision"]
        rec = bl.timing_record(
            t,
            mode=mode,
            case=str(case),
            vs_baseline=t.ratio_to(base),
            vs_torchvision_fp32=t.ratio_to(tv32) if tv32 else None,
            vs_torchvision_same_settings=t.ratio_to(same) if same else None,
            gflops=gf,
            roofline_gflops=roof.peak(prec),
            pct_of_roofline=100 * roof.fraction(gf, prec, what=f"{case} {mode} {t.name}"),
            memory_bytes=mem.get(t.name),
        )
        rows.append(rec)

        def f(v: float | None, spec: str = ".2f") -> str:
            return "-" if v is None else format(v, spec)

        m = mem.get(t.name)
        print(
            f"{t.name:30} {t.median:8.1f} {bl.spread_pct(t):6.0f}% {f(rec['vs_baseline']):>7} "
            f"{f(rec['vs_torchvision_fp32']):>7} {f(rec['vs_torchvision_same_settings']):>9} {gf:8.1f} "
            f"{rec['pct_of_roofline']:5.1f}% {f(m / 2**20 if m else None, '.0f'):>7} {t.setup_s:7.1f}"
        )
    return rows


def run_case(
    case: Case, args: argparse.Namespace, roof: roofline.Roofline, device: torch.device
) -> dict[str, Any]:
    meta = build_model(case.model, num_classes=case.classes, device="meta")
    size = (3, case.size, case.size)
    macs = (summarize(meta, size).total_macs, bl.first_layer_macs(meta, size))
    out: dict[str, Any] = {"case": str(case), "model": case.model, "size": case.size, "batch": case.batch}
    out["macs_per_image"], out["input_layer_macs_per_image"] = macs
    best_train_ips = None
    for mode in ("train", "infer") if args.mode == "both" else (args.mode,):
        print(f"\n== {mode}: {case}", flush=True)
        runners, facts = build_runners(case, args, device, train=mode == "train")
        timings = bl.ab_rounds(
            runners, device=device, warmup=args.warmup, repeats=args.repeats, steps=_steps(case, args)
        )
        mem: dict[str, int] = {}
        if args.memory:
            for r in runners:
                mem[r.name] = bl.peak_step_bytes(r.step, device)
        out[mode] = {"facts": facts, "rows": report(case, mode, timings, macs, roof, mem)}
        if mode == "train":
            best_train_ips = (
                max(t.median for t in timings if t.group == "reslab") if len(timings) > 1 else None
            )
        del runners, timings
        gc.collect()
    augment = out.get("train", {}).get("facts", {}).get("augment_reslab", "crop_flip")
    ips = loader_only(case, device, augment=augment)
    share = best_train_ips / ips if best_train_ips else None  # t_loader / t_step per batch
    out["loader"] = {"images_per_s": ips, "augment": augment, "share_of_best_step": share}
    print(
        f"loader only ({augment}): {ips:,.0f} img/s"
        + (f" = {100 * share:.1f}% of the best step" if share else "")
    )
    return out


def _steps(case: Case, args: argparse.Namespace) -> int:
    return args.steps or max(1, math.ceil(16 / case.batch))  # >= 16 images per timed round


def loader_mode(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Loader-only images/s and its share of the step of reslab's best eager setting (bf16 + CL)."""
    rows = []
    for spec, augment in (
        ("resnet20:28:64", "none"),
        ("resnet20:32:128", "crop_flip"),
        ("resnet50:224:8", "crop_flip"),
    ):
        case = Case.parse(spec)
        ips = loader_only(case, device, augment=augment)
        args_one = argparse.Namespace(**{**vars(args), "settings": ["bf16-cl"], "compile": False})
        runners, _ = build_runners(case, args_one, device, train=True)
        runners = [r for r in runners if r.group == "reslab"]
        t = bl.ab_rounds(runners, device=device, warmup=1, repeats=args.repeats, steps=_steps(case, args))[0]
        share = t.median / ips
        print(
            f"{case}: loader {ips:,.0f} img/s ({augment}); step {t.median:.1f} img/s; "
            f"loader = {100 * share:.1f}% of a step"
        )
        rows.append(
            {
                "case": str(case),
                "augment": augment,
                "loader_images_per_s": ips,
                "step_images_per_s": t.median,
                "loader_share": share,
            }
        )
    return {"loader": rows}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--case",
        action="append",
        help=f"NAME[:SIZE[:BATCH]], repeatable (default: {' '.join(DEFAULT_CASES)})",
    )
    p.add_argument("--mode", choices=("train", "infer", "both"), default="both")
    p.add_argument("--settings", nargs="+", choices=[*SETTINGS, "all"], default=list(DEFAULT_SETTINGS))
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the compiled settings")
    p.add_argument("--compile-baselines", action="store_true", help="also time torchvision bf16+CL compiled")
    p.add_argument("--compile-infer", action="store_true", help="also compile for inference (one more graph)")
    p.add_argument("--no-torchvision", dest="torchvision", action="store_false")
    p.add_argument(
        "--augment",
        choices=("auto", "none", "crop", "crop_flip"),
        default="auto",
        help="reslab's device-side augmentation; auto = crop_flip at <= 64 px, none at 224",
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per contender (compile happens here)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds")
    p.add_argument("--steps", type=int, default=0, help="steps per contender per round (0 = >= 16 images)")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory step")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = physical cores)")
    p.add_argument("--probe-repeats", type=int, default=5, help="timed repeats of each roofline probe")
    p.add_argument("--device", default="cpu")
    p.add_argument("--loader", action="store_true", help="only the loader-only measurement")
    p.add_argument("--quick", action="store_true", help="tiny cases, no compile, 2 rounds: a smoke check")
    p.add_argument("--json", default="bench-results/throughput.json")
    args = p.parse_args(argv)
    if "all" in args.settings:
        args.settings = list(SETTINGS)
    if args.quick:
        args.case = args.case or list(QUICK_CASES)
        args.compile, args.repeats, args.warmup = False, 2, 1
    args.case = [Case.parse(c) for c in (args.case or DEFAULT_CASES)]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    machine = bl.detect_machine()
    torch.set_num_threads(args.threads or machine.physical_cores)  # one thread per core: SMT adds nothing
    machine.torch_threads = torch.get_num_threads()
    print(machine.describe())
    env = bl.environment(sys.argv)
    print(f"torch {env['torch']}, torchvision {env['torchvision']}, {env['date']}")
    started = time.perf_counter()
    roof = roofline.measure_roofline(
        device,
        bl.Timer(device),
        repeats=2 if args.quick else args.probe_repeats,
        min_s=0.1 if args.quick else 0.25,
    )
    print(roof.describe())
    payload: dict[str, Any] = {
        "environment": env,
        "machine": asdict(machine),
        "roofline": roof.to_dict(),
        "args": {k: (list(map(str, v)) if k == "case" else v) for k, v in vars(args).items()},
    }
    if args.loader:
        payload.update(loader_mode(args, device))
    else:
        payload["cases"] = [run_case(c, args, roof, device) for c in args.case]
    payload["seconds"] = time.perf_counter() - started
    path = bl.write_json(args.json, payload)
    print(f"\n{payload['seconds']:.0f} s; JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
