"""``reslab models``: every registered model with its family, depth, kind and parameter count."""

from __future__ import annotations

import argparse

from reslab.models import list_models, model_info
from reslab.models.registry import FAMILIES, parameter_count

# What each family is, for the table (paper and section).
FAMILY_NOTES: dict[str, str] = {
    "mlp": "dense blocks (the lecture), 784 -> 64 wide -> 10",
    "cifar": "CIFAR basic blocks, 6n+2, option A (He et al. 2015, sec. 4.2)",
    "cifar_preact": "CIFAR pre-activation bottlenecks, 9n+2 (He et al. 2016)",
    "imagenet": "ImageNet, option B, v1.5 (He et al. 2015, Table 1; torchvision keys)",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list every registered model", description=__doc__)
    p.add_argument("--family", choices=FAMILIES, help="only this family")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
