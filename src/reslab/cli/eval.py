"""``reslab eval RUN_DIR_OR_WEIGHTS [--dataset D]``: loss, error and top-5 error of a trained model."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a trained run (or weights file) on a dataset split",
        description="Print loss, error and top-5 error. Images are normalised with the run's own statistics.",
    )
    p.add_argument("run", metavar="RUN_DIR_OR_WEIGHTS", help="run directory or weights file")
    p.add_argument("--dataset", help="default: the dataset the run was trained on")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--batch-size", type=int, default=256, metavar="B")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--no-download", dest="download", action="store_false", help="stay offline")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reslab.data import load_dataset
    from reslab.data.loader import DeviceLoader
    from reslab.errors import ConfigError
    from reslab.train import evaluate, load_run
    from reslab.train.runtime import resolve_device

    if args.batch_size <= 0:
        raise ConfigError(f"--batch-size must be a positive integer, got {args.batch_size}")
    device = resolve_device(args.device)
    model, info = load_run(args.run, device=device)
    cfg = info.config
    name = args.dataset or cfg.dataset
    same = name == cfg.dataset
    # The run's own dataset keeps its validation split, so "test" means what it meant in training.
    ds = load_dataset(
        name,
        args.data_dir if args.data_dir is not None else cfg.data_dir,
        download=args.download,
        seed=cfg.split_seed,
        val_split=cfg.val_split if same else None,
    )
    if ds.image_shape != info.input_shape or ds.num_classes != len(info.classes):
        raise ConfigError(
            f"{name} has {ds.num_classes} classes of {ds.image_shape} images, but the model expects "
            f"{len(info.classes)} classes of {info.input_shape}; pick a matching --dataset"
        )
    x, y = (ds.test_x, ds.test_y) if args.split == "test" else (ds.train_x, ds.train_y)
    if x.shape[0] == 0:
        raise ConfigError(f"{name} has no {args.split} images")
    loader = DeviceLoader(x, y, batch_size=args.batch_size, norm=info.norm, device=device)
    res = evaluate(model, loader)
    print(
        f"{cfg.model} on {name} {args.split} split ({res.n} images): loss {res.loss:.4f}, "
        f"error {res.error:.2%}, top-5 error {res.top5_error:.2%}"
    )
    return 0
