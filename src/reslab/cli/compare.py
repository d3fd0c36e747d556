"""``reslab compare``: the degradation experiment; plain vs residual twins over depths, figures and tables."""

from __future__ import annotations

import argparse
from typing import Any

# Flags whose value goes straight into the CompareConfig field of the same name (dest).
_FIELDS = (
    "family", "depths", "seeds", "preset", "dataset", "data_dir", "download", "mlp_norm", "recipe", "epochs",
    "iterations", "lr", "batch_size", "warmup_epochs", "weight_decay", "eval_every", "device", "precision",
    "channels_last", "compile", "num_threads", "devices", "out", "progress",
)  # fmt: skip


def _depths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected depths like 20,32,44,56, got {text!r}") from None


def register(subparsers: Any) -> None:
    from reslab.cli.train import add_runtime_flags

    p = subparsers.add_parser(
        "compare",
        help="the degradation experiment: plain vs residual nets over depths (He et al. 2015, Fig. 6)",
        description=(
            "For each depth, train a plain net and its residual twin with the same recipe, init and seeds; "
            "write curves.png, error_vs_depth.png, results.json/.csv/.md to --out and print the table. "
            "With no arguments: CIFAR-style nets of 20, 38 and 44 layers on the embedded mnist5k digits, "
            "5 epochs each, about 5 minutes on a 2-core CPU. Re-running the same command reuses finished "
            "runs and resumes an interrupted one."
        ),
    )
    p.add_argument(
        "--family",
        help="cifar (default: plain<d>/resnet<d>, d = 6n+2), mlp (plainmlp<d>/resmlp<d>, no norm), "
        "imagenet (plain18/resnet18 ...)",
    )
    p.add_argument(
        "--depths",
        type=_depths,
        metavar="D,D,...",
        help="default: cifar 20,38,44 (paper preset 20,32,44,56,110); mlp 1,2,4,16; imagenet 18,34",
    )
    p.add_argument("--seeds", type=int, metavar="N", help="seeds per depth and kind: mean ± std (default 1)")
    p.add_argument(
        "--preset",
        choices=("default", "paper"),
        help="default: mnist5k, 5 epochs, batch 128; paper: Fig. 6 on cifar10 (64k iterations, 45k/5k split)",
    )
    p.add_argument("--dataset", help="default: mnist5k (paper preset: cifar10); see `reslab train --help`")
    p.add_argument("--data-dir", metavar="DIR", help="where file-based datasets live / are downloaded to")
    p.add_argument("--no-download", dest="download", action="store_false", default=None, help="stay offline")
    p.add_argument("--mlp-norm", action="store_true", default=None, help="mlp: batch norm in each block")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, metavar="E", help="per run (default 5; mlp 10)")
    length.add_argument("--iterations", type=int, metavar="N", help="optimizer steps per run")
    p.add_argument("--lr", type=float, metavar="LR", help="peak learning rate (default 0.1)")
    p.add_argument("--batch-size", type=int, metavar="B", help="default 128")
    p.add_argument("--warmup-epochs", type=float, metavar="W", help="linear warm-up (default 1)")
    p.add_argument("--weight-decay", type=float, metavar="WD")
    p.add_argument(
        "--eval-every", type=int, metavar="N", help="iterations between curve points; default 1 epoch"
    )
    add_runtime_flags(p)
    p.add_argument(
        "--devices",
        type=lambda text: tuple(d.strip() for d in text.split(",") if d.strip()),
        metavar="DEV,DEV,...",
        help="run the sweep one run per device at a time, e.g. cuda:0,cuda:1 (each run in its own process)",
    )
    p.add_argument(
        "--out", metavar="DIR", help="default: runs/compare-<family>-<dataset>-<hash of the settings>"
    )
    p.add_argument("--progress", choices=("auto", "bar", "lines", "off"), help="the current run's display")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> Any:
    """The CompareConfig: its defaults (= the preset's) with the flags that were given on top."""
    from reslab.experiments import CompareConfig

    given = {k: getattr(args, k) for k in _FIELDS if getattr(args, k, None) is not None}
    return CompareConfig(**given)


def run(args: argparse.Namespace) -> int:
    from reslab.experiments import run_compare

    result = run_compare(config_from_args(args))
    print(result.table)
    print(result.verdict)
    print(f"outputs in {result.out}: " + ", ".join(sorted(result.files)))
    return 0
