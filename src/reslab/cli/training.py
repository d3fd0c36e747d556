"""``reslab train | eval | predict | export``: flags into the library's typed calls, results printed.

``train``'s flags are generated from :class:`~reslab.engine.TrainConfig`; settings come from the recipe,
then ``--config FILE``, then the flags typed. Resume semantics are the library's
(``reslab.engine.store.resume``).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from reslab.cli.options import add_config_flags, add_setting_flags, as_json, from_file, given


def _recipe_default(f: dataclasses.Field[Any]) -> str:
    """The default shown for a TrainConfig flag, and the paper recipe's value where it differs."""
    from reslab.cli.options import _show
    from reslab.engine import RECIPES
    from reslab.engine.config import AUTO_DEFAULTS
    from reslab.settings import field_default

    default = field_default(f)
    text = AUTO_DEFAULTS.get(f.name) or _show(default) or "none"
    paper = RECIPES["paper"].get(f.name, default)
    return text + (f"; --recipe paper: {_show(paper) or 'none'}" if paper != default else "")


def register(sub: Any) -> None:
    from reslab.engine import RECIPES, TrainConfig

    p = sub.add_parser(
        "train",
        help="train a model (default: resnet20 on the embedded mnist5k digits)",
        description="Train a model; writes a run directory (config.json, metrics.jsonl, model.safetensors, "
        "checkpoints/, summary.json). Settings: the recipe, then --config FILE, then the flags given. With "
        "--resume, settings not given are the run's own.",
    )
    p.add_argument("--recipe", choices=tuple(RECIPES), help="the defaults to start from (default: default)")
    add_config_flags(p, what="settings (a run's config.json too)")
    add_setting_flags(p, TrainConfig, default_text=_recipe_default)
    dp = p.add_argument_group("data-parallel (also: torchrun --nproc-per-node N -m reslab train ...)")
    dp.add_argument("--nproc", type=int, metavar="N", help="train on N local processes via torchrun (DDP)")
    p.set_defaults(func=run_train)

    e = sub.add_parser(
        "eval",
        help="evaluate a trained run (or weights file) on a dataset split, per class too",
        description="Print loss, error (top-5 error above 5 classes) and the error of each class, and write "
        "class_errors.json and confusion.png (the confusion matrix) to the run directory, whose report.html "
        "then shows them, or to --out. Images are read as the run read its own (dataset, --image-size, "
        "validation split) and normalised with its statistics, by default in its own precision, so the "
        "figures match the ones the run reported.",
    )
    e.add_argument("run", metavar="RUN_DIR_OR_WEIGHTS", help="run directory or weights file")
    e.add_argument("--dataset", help="default: the dataset the run was trained on")
    e.add_argument("--data-dir", metavar="DIR", help="default: the run's")
    e.add_argument("--split", choices=("test", "train"), default="test", help="(default: test)")
    e.add_argument("--batch-size", type=int, metavar="B", help="(default: the run's own)")
    e.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="(default: auto)")
    e.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="(default: the run's own)")
    e.add_argument("--no-download", dest="download", action="store_false", help="stay offline")
    _weights_flag(e)
    e.add_argument("--out", metavar="DIR", help="for class_errors.json, confusion.png (default: the run)")
    e.set_defaults(func=run_eval)

    pr = sub.add_parser(
        "predict",
        help="classify image files with a trained run",
        description="Each image is converted to the run's mode (grey or RGB), resized to its input size and "
        "normalised with its statistics, as in training.",
    )
    pr.add_argument("run", metavar="RUN_DIR_OR_WEIGHTS")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    pr.add_argument("--top-k", type=int, default=3, metavar="K", help="(default: 3)")
    pr.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="cpu", help="(default: cpu)")
    pr.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="(default: the run's own)")
    _weights_flag(pr)
    pr.set_defaults(func=run_predict)

    _register_export(sub)
    _register_plot(sub)


def _weights_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        choices=("last", "best"),
        default="last",
        help="last: the run's latest weights; best: --keep-best's best.safetensors (default: last)",
    )


def _register_export(sub: Any) -> None:
    x = sub.add_parser(
        "export",
        help="export a trained run for deployment: torch.export (.pt2), ONNX or TorchScript (legacy)",
        description="The exported model returns logits (B, K). It takes normalised float images "
        "(B, C, H, W), or with --uint8-input raw uint8 images that it normalises itself. Class names and "
        "normalisation are in the run's config.json and in the file's metadata. Load a .pt2 with "
        "torch.export.load(path).module(), an .onnx with onnxruntime.InferenceSession(path).",
    )
    x.add_argument("run", metavar="RUN_DIR_OR_WEIGHTS")
    x.add_argument(
        "--format",
        choices=("torch-export", "pt2", "onnx", "torchscript"),
        default="torch-export",
        help="torch-export (or pt2, its file's name): torch.export ExportedProgram (.pt2); onnx (pip "
        'install "reslab[onnx]"); torchscript: legacy, deprecated upstream (default: torch-export)',
    )
    x.add_argument(
        "--uint8-input",
        action="store_true",
        help="bake the run's input normalisation into the graph: it takes raw uint8 images (B, C, H, W), "
        "as decoded from PNG/JPEG (resized as the run was trained)",
    )
    x.add_argument("--out", metavar="FILE", help="default: model.pt2 / .onnx / .pt next to the weights")
    x.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _weights_flag(x)
    x.set_defaults(func=run_export)


def _register_plot(sub: Any) -> None:
    pl = sub.add_parser(
        "plot",
        help="draw runs' training curves (error and loss vs iterations) from their metrics.jsonl",
        description="Training (dashed) and test (solid) error and loss of one or more runs against "
        "iterations, one colour per run, from each run's metrics.jsonl (a running run too).",
    )
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    pl.add_argument("--out", metavar="FILE.png", help="default: curves.png in the first run directory")
    pl.add_argument("--overwrite", action="store_true", help="replace an existing --out FILE.png")
    pl.set_defaults(func=run_plot)


def train_config(args: argparse.Namespace) -> Any:
    """The TrainConfig: the recipe, then --config, then the flags typed (with --resume: changes to a run)."""
    from reslab.engine import TrainConfig
    from reslab.errors import ConfigError

    typed = given(args, TrainConfig)
    if args.resume is not None and args.recipe:
        raise ConfigError("--recipe does not apply with --resume: the run keeps its own settings")
    cfg = TrainConfig.from_recipe(args.recipe or "default")
    return cfg.with_changes(**from_file(args, TrainConfig)).with_changes(**typed)


def run_train(args: argparse.Namespace) -> int:
    from reslab.engine.devices.distributed import dist_env
    from reslab.engine.devices.worker import train_as_process
    from reslab.engine.store.resume import resume_settings
    from reslab.errors import ConfigError

    cfg = train_config(args)
    if args.print_config:
        print(as_json(resume_settings(cfg.validate())[0] if cfg.resume else cfg.validate()))
        return 0
    if args.nproc is not None:
        if dist_env() is not None:
            raise ConfigError(
                "--nproc inside torchrun would launch twice; drop --nproc (torchrun sets the count)"
            )
        from reslab.engine.devices.launch import launch_torchrun

        return launch_torchrun(cfg, args.nproc)
    code, result = train_as_process(cfg)
    if result is None:
        return code  # another rank of a data-parallel job: rank 0 reports the run
    print(result)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from reslab.engine import evaluate

    report = evaluate(
        args.run, dataset=args.dataset, data_dir=args.data_dir, split=args.split, batch_size=args.batch_size,
        device=args.device, precision=args.precision, download=args.download, weights=args.weights,
        out=args.out,
    )  # fmt: skip
    print(report)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from reslab.engine import predict

    for prediction in predict(
        args.run, args.images, top_k=args.top_k, device=args.device, precision=args.precision,
        weights=args.weights,
    ):  # fmt: skip
        print(prediction)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from reslab.engine import export_run

    exported = export_run(
        args.run, format=args.format, out=args.out, overwrite=args.overwrite, uint8_input=args.uint8_input,
        weights=args.weights,
    )  # fmt: skip
    print(exported)
    return 0


def run_plot(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from reslab.errors import ConfigError
    from reslab.files import write_atomic
    from reslab.plots import plot_runs, png_bytes

    fig = plot_runs(args.runs)  # every run checked before anything is written
    out = Path(args.out).expanduser() if args.out else Path(args.runs[0]).expanduser() / "curves.png"
    if out.suffix.lower() != ".png" or out.is_dir():
        raise ConfigError(f"--out {out} is not a .png file name; pass e.g. --out curves.png")
    if not out.parent.is_dir():
        raise ConfigError(f"directory {out.parent} does not exist; create it or choose another --out")
    # a file of the user's is never replaced unasked; the run directory's own curves.png is reslab's
    if args.out and os.path.lexists(out) and not args.overwrite:
        raise ConfigError(f"{out} already exists; use --overwrite to replace it, or another --out")
    write_atomic(out, png_bytes(fig), "figure")  # never through a link; a read-only place is one line
    print(f"wrote {out}")
    return 0
