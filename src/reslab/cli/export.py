"""``reslab export RUN_DIR --format torchscript|onnx [--out FILE]``: a model file for other runtimes."""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

ONNX_HINT = 'ONNX export needs the optional onnx and onnxscript packages: pip install "reslab[onnx]"'


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a trained run to TorchScript or ONNX",
        description="The exported model takes normalised float images (B, C, H, W) and returns logits "
        "(B, K); the normalisation statistics and class names are in the run's config.json.",
    )
    p.add_argument("run", metavar="RUN_DIR_OR_WEIGHTS")
    p.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    p.add_argument("--out", metavar="FILE", help="default: model.pt / model.onnx next to the weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def _write_atomically(out: Path, write: Any) -> None:
    """``write(tmp_path)`` then rename, so a failed export never leaves half a file under ``out``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    from reslab.errors import ConfigError
    from reslab.train import load_run

    if args.format == "onnx" and importlib.util.find_spec("onnx") is None:
        raise ConfigError(ONNX_HINT)
    model, info = load_run(args.run, device="cpu")
    suffix = ".pt" if args.format == "torchscript" else ".onnx"
    out = Path(args.out) if args.out else info.weights.parent / f"model{suffix}"
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} already exists; use --overwrite or another --out")
    if not out.parent.is_dir():
        raise ConfigError(f"directory {out.parent} does not exist; create it or choose another --out")
    example = torch.zeros(1, *info.input_shape)  # (1, C, H, W)

    def torchscript(tmp: str) -> None:
        # TorchScript is deprecated upstream but still the one file format C++/mobile runtimes load.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(model, example)
        traced.save(tmp)

    def onnx(tmp: str) -> None:
        torch.onnx.export(
            model, (example,), tmp, input_names=["images"], output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            external_data=False,  # one self-contained file: weights beside a temp name would be orphaned
        )  # fmt: skip

    try:
        _write_atomically(out, torchscript if args.format == "torchscript" else onnx)
    except OSError as err:
        raise ConfigError(f"cannot write {out}: {err.strerror or err}") from None
    except ModuleNotFoundError as err:  # the new exporter also wants onnxscript
        raise ConfigError(f"{ONNX_HINT} (missing module {err.name})") from None
    print(f"wrote {out} ({args.format}; input (B, {', '.join(map(str, info.input_shape))}) normalised)")
    return 0
