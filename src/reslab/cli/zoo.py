"""``reslab models`` and ``reslab summary MODEL``: the zoo, and one model's Table 1."""

from __future__ import annotations

import argparse
from typing import Any

from reslab.errors import ConfigError
from reslab.models import build_model, list_models, model_info, summarize
from reslab.models.registry import FAMILIES, parameter_count

# What each family is, for the table (paper and section).
FAMILY_NOTES: dict[str, str] = {
    "mlp": "dense blocks (the lecture), 784 -> 64 wide -> 10",
    "cifar": "CIFAR basic blocks, 6n+2, option A (He et al. 2015, sec. 4.2)",
    "cifar_preact": "CIFAR pre-activation bottlenecks, 9n+2 (He et al. 2016)",
    "wrn": "Wide ResNets WRN-d-k, 6n+4, pre-activation, k x 16/32/64 channels (Zagoruyko & Komodakis 2016)",
    "imagenet": "ImageNet, option B, v1.5 (He et al. 2015, Table 1; torchvision keys)",
}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "models",
        help="list every registered model",
        description="Every registered model with its family, depth, kind and parameter count.",
    )
    p.add_argument("--family", choices=FAMILIES, help="only this family")
    p.set_defaults(func=run_models)
    s = sub.add_parser(
        "summary",
        help="per-stage parameters and multiply-adds of a model",
        description="Parameters and multiply-adds per stage, like He et al. 2015, Table 1.",
    )
    s.add_argument(
        "model", help="a name from `reslab models`, or any valid depth (resnet26, preact_resnet47)"
    )
    s.add_argument(
        "--input-size",
        type=int,
        nargs="+",
        metavar="N",
        help="C H W (or F for MLPs); default 3 32 32 (CIFAR), 3 224 224 (ImageNet), 784 (MLP)",
    )
    s.add_argument("--num-classes", type=int, help="classifier outputs (default 10; ImageNet 1000)")
    s.add_argument("--in-channels", type=int, help="input channels of a conv net (default 3)")
    s.add_argument("--shortcut", choices=("A", "B", "C"), help="shortcut option (paper section 3.3)")
    s.add_argument(
        "--stride-in-1x1",
        action="store_true",
        help="bottlenecks: stride in the first 1x1 (paper v1) instead of the 3x3 (v1.5)",
    )
    s.set_defaults(func=run_summary)


def run_models(args: argparse.Namespace) -> int:
    rows = [("name", "family", "depth", "kind", "parameters")]
    for name in list_models():
        spec = model_info(name)
        if args.family and spec.family != args.family:
            continue
        # From the architecture's formula: no model is built, so ResNet-1202 costs nothing.
        rows.append((name, spec.family, str(spec.depth), spec.kind, f"{parameter_count(name):,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        left = f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}"
        print(f"{left}  {r[3]:<{widths[3]}}  {r[4]:>{widths[4]}}")
    print()
    for family, note in FAMILY_NOTES.items():
        if not args.family or args.family == family:
            print(f"{family}: {note}")
    print("Parameters at the default classes (10; ImageNet 1000) and channels. Any depth builds by name,")
    print("e.g. resnet8, plain26, preact_resnet47, resmlp3; `reslab summary NAME` gives the per-stage table.")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    spec = model_info(args.model)
    size = tuple(args.input_size) if args.input_size else None
    if size is not None and len(size) not in (1, 3):
        raise ConfigError(f"--input-size takes C H W (or F for an MLP), got {len(size)} numbers")
    shape_kw: dict[str, object] = {}
    if size is not None:
        shape_kw["input_shape"] = size
    if args.in_channels is not None:
        shape_kw["in_channels"] = args.in_channels
    model = build_model(
        args.model,
        num_classes=args.num_classes,
        shortcut=args.shortcut,
        stride_in_1x1=True if args.stride_in_1x1 else None,
        device="meta",  # shapes only: no memory, no initialisation
        **shape_kw,
    )
    result = summarize(model, size)
    variant = ", stride in 1x1 (v1)" if args.stride_in_1x1 else ""
    title = f"{args.model}: {spec.family}, depth {spec.depth}, {spec.kind}{variant}"
    print(result.table(title))
    return 0
