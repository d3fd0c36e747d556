"""``reslab train``: parse flags into a TrainConfig (recipe + the flags given), train, print the summary."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# Flags whose value goes straight into the TrainConfig field of the same name (dest).
_FIELDS = (
    "model", "dataset", "data_dir", "epochs", "iterations", "batch_size", "lr", "momentum", "nesterov",
    "schedule", "milestones", "warmup_epochs", "warmup_iters", "weight_decay", "label_smoothing", "seed",
    "device", "precision", "channels_last", "compile", "out", "overwrite", "eval_every", "grad_clip",
    "val_split", "normalize", "augment", "num_threads", "progress", "download", "activation_checkpointing",
    "sync_bn", "dist_timeout_s",
)  # fmt: skip


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions like 0.5,0.75, got {text!r}") from None


def add_runtime_flags(p: argparse.ArgumentParser) -> None:
    """Device and speed flags, shared with commands that train (e.g. compare)."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="default: auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), help="default: auto")
    p.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, help="NHWC; default: on for cpu/cuda"
    )
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--num-threads", type=int, metavar="N", help="CPU threads for torch")
    p.add_argument("--recipe", choices=("default", "paper"), help="see reslab.train.RECIPES")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model (default: resnet20 on the embedded mnist5k digits)",
        description="Train a model; writes a run directory (config.json, metrics.jsonl, model.safetensors, "
        "checkpoints/, summary.json). Flags not given come from --recipe (or, with --resume, from the run).",
    )
    p.add_argument("--model", help="a name from `reslab models`; default resnet20")
    p.add_argument(
        "--dataset",
        help="mnist5k (default, embedded), cifar10/100, mnist, fashion-mnist, signs, synthetic, folder:PATH",
    )
    p.add_argument("--data-dir", metavar="DIR", help="where file-based datasets live / are downloaded to")
    p.add_argument("--no-download", dest="download", action="store_false", default=None, help="stay offline")
    p.add_argument("--val-split", type=int, metavar="N", help="hold out N training images as the test split")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, metavar="E")
    length.add_argument("--iterations", type=int, metavar="N", help="optimizer steps (the paper: 64000)")
    p.add_argument("--batch-size", type=int, metavar="B")
    p.add_argument("--lr", type=float, metavar="LR", help="peak learning rate")
    p.add_argument("--momentum", type=float)
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction)
    p.add_argument("--schedule", choices=("step", "cosine", "onecycle"))
    p.add_argument("--milestones", type=_fractions, metavar="F,F", help="step schedule: fractions of the run")
    p.add_argument("--warmup-epochs", type=float, metavar="W")
    p.add_argument("--warmup-iters", type=int, metavar="N", help="overrides --warmup-epochs")
    p.add_argument("--weight-decay", type=float, metavar="WD")
    p.add_argument("--label-smoothing", type=float, metavar="S")
    p.add_argument("--grad-clip", type=float, metavar="NORM", help="clip the global gradient norm")
    p.add_argument(
        "--activation-checkpointing",
        action=argparse.BooleanOptionalAction,
        help="recompute each block in the backward pass: far less memory (very deep nets), ~1/3 slower",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--normalize", choices=("channel", "pixel"), help="pixel = per-pixel mean (the paper)")
    p.add_argument(
        "--augment", choices=("auto", "none", "crop", "crop_flip"), help="crop = pad-4 random shifts, no flip"
    )
    p.add_argument("--shortcut", choices=("A", "B", "C"), help="projection shortcut option (paper Sec. 3.3)")
    p.add_argument("--zero-init-residual", action="store_true", default=None)
    add_runtime_flags(p)
    p.add_argument("--out", metavar="RUN_DIR", help="default: runs/<model>-<dataset>-<timestamp>")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace the run in --out")
    p.add_argument("--eval-every", type=int, metavar="N", help="iterations between evals; default 1 epoch")
    p.add_argument("--progress", choices=("auto", "bar", "lines", "off"))
    dp = p.add_argument_group("data-parallel (also: torchrun --nproc-per-node N -m reslab train ...)")
    dp.add_argument("--nproc", type=int, metavar="N", help="train on N local processes via torchrun (DDP)")
    dp.add_argument(
        "--sync-bn", action="store_true", default=None, help="BatchNorm statistics over the global batch"
    )
    dp.add_argument(
        "--dist-timeout",
        dest="dist_timeout_s",
        type=float,
        metavar="S",
        help="collective timeout; default 600",
    )
    # The launcher hands its workers the resolved config (so they all run exactly what was checked once).
    p.add_argument("--config-json", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> Any:
    """The TrainConfig: the recipe (or the resumed run's config) with the flags that were given on top."""
    from reslab.errors import ConfigError
    from reslab.train import TrainConfig
    from reslab.train.rundir import CONFIG
    from reslab.train.runs import read_run_config

    given = {k: getattr(args, k) for k in _FIELDS if getattr(args, k, None) is not None}
    model_kwargs = {}
    if getattr(args, "shortcut", None) is not None:
        model_kwargs["shortcut"] = args.shortcut
    if getattr(args, "zero_init_residual", None):
        model_kwargs["zero_init_residual"] = True
    if getattr(args, "resume", None):
        if args.recipe:
            raise ConfigError("--recipe does not apply with --resume: the run keeps its own settings")
        try:
            base = read_run_config(Path(args.resume) / CONFIG)["config"]
        except Exception as err:  # CheckpointError, or a file that is not ours
            raise ConfigError(f"--resume {args.resume}: {err}") from None
        if given.get("iterations") is not None:
            base["epochs"] = None
        if given.get("epochs") is not None:
            base["iterations"] = None
        base.update(given, resume=args.resume)
        base["out"] = given.get("out")  # the saved out is the run itself; a different --out is refused
        if model_kwargs:
            base["model_kwargs"] = {**base.get("model_kwargs", {}), **model_kwargs}
        return TrainConfig.from_dict(base)
    if model_kwargs:
        given["model_kwargs"] = model_kwargs
    return TrainConfig.from_recipe(args.recipe or "default", **given)


def run(args: argparse.Namespace) -> int:
    import json

    from reslab.errors import ConfigError, ReslabError
    from reslab.train import TrainConfig, train
    from reslab.train.distributed import SHARED_ERRORS, dist_env

    config_json = getattr(args, "config_json", None)
    cfg = TrainConfig.from_dict(json.loads(config_json)) if config_json else config_from_args(args)
    env = dist_env()
    if getattr(args, "nproc", None) is not None:
        if env is not None:
            raise ConfigError(
                "--nproc inside torchrun would launch twice; drop --nproc (torchrun sets the count)"
            )
        from reslab.train.launch import launch_torchrun

        return launch_torchrun(cfg, args.nproc)
    worker = env is not None and env.world_size > 1 and env.rank > 0
    try:
        result = train(cfg)
    except ReslabError as err:
        if not worker:
            raise
        if isinstance(err, SHARED_ERRORS):  # every rank hits it alike; rank 0 prints it once
            return err.exit_code
        if not str(err).startswith("rank "):
            raise type(err)(f"rank {env.rank}: {err}") from None  # type: ignore[union-attr]
        raise
    if worker:
        return 0  # rank 0 reports the run
    print(f"run: {result.run_dir}")
    print(
        f"{result.model} ({result.params:,} params) on {result.dataset}: {result.iterations} iterations "
        f"({result.epochs:g} epoch(s)) in {result.seconds:.1f} s"
    )
    print(
        f"final training error {result.final_train_error:.2%} (loss {result.final_train_loss:.4f}), "
        f"test error {result.final_test_error:.2%} (loss {result.final_test_loss:.4f}), "
        f"test top-5 error {result.final_test_top5_error:.2%}"
    )
    return 0
