"""``reslab summary MODEL``: parameters and multiply-adds per stage, like He et al. 2015, Table 1."""

from __future__ import annotations

import argparse

from reslab.errors import ConfigError
from reslab.models import build_model, model_info, summarize


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "summary", help="per-stage parameters and multiply-adds of a model", description=__doc__
    )
    p.add_argument(
        "model", help="a name from `reslab models`, or any valid depth (resnet26, preact_resnet47)"
    )
    p.add_argument(
        "--input-size",
        type=int,
        nargs="+",
        metavar="N",
        help="C H W (or F for MLPs); default 3 32 32 (CIFAR), 3 224 224 (ImageNet), 784 (MLP)",
    )
    p.add_argument("--num-classes", type=int, help="classifier outputs (default 10; ImageNet 1000)")
    p.add_argument("--in-channels", type=int, help="input channels of a conv net (default 3)")
    p.add_argument("--shortcut", choices=("A", "B", "C"), help="shortcut option (paper section 3.3)")
    p.add_argument(
        "--stride-in-1x1",
        action="store_true",
        help="bottlenecks: stride in the first 1x1 (paper v1) instead of the 3x3 (v1.5)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
        **shape_kw,  # type: ignore[arg-type]
    )
    result = summarize(model, size)
    variant = ", stride in 1x1 (v1)" if args.stride_in_1x1 else ""
    title = f"{args.model}: {spec.family}, depth {spec.depth}, {spec.kind}{variant}"
    print(result.table(title))
    return 0
