"""``export_run``: a trained run as a model file for other runtimes (TorchScript or ONNX).

The exported model takes normalised float images (B, C, H, W) and returns logits (B, K); the normalisation
statistics and class names are in the run's config.json. A failed export never leaves half a file.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from reslab.engine.rundir import CKPT_DIR, CONFIG, LOCK, RUN_FILES, atomic_write
from reslab.engine.runs import load_run
from reslab.errors import ConfigError

FORMATS = ("torchscript", "onnx")
SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx"}
ONNX_HINT = 'ONNX export needs the optional onnx and onnxscript packages: pip install "reslab[onnx]"'


def _refuse_run_file(target: Path) -> None:
    """An export never replaces a file a run directory lives by (its config, weights, checkpoints...)."""
    parent = target.resolve().parent
    in_checkpoints = any((p / CONFIG).is_file() for p in parent.parents if p.name != CKPT_DIR) and (
        CKPT_DIR in parent.parts
    )
    if in_checkpoints or ((parent / CONFIG).is_file() and target.name in (*RUN_FILES, LOCK)):
        raise ConfigError(f"--out {target} is a file of the run itself; choose another name, e.g. model.pt2")


@dataclass(frozen=True)
class Exported:
    """What :func:`export_run` wrote."""

    path: Path
    format: str
    input_shape: tuple[int, int, int]  # (C, H, W) of the normalised float images it takes

    def __str__(self) -> str:
        shape = ", ".join(map(str, self.input_shape))
        return f"wrote {self.path} ({self.format}; input (B, {shape}) normalised)"


def export_run(
    run: str | Path,
    *,
    format: str = "torchscript",
    out: str | Path | None = None,
    overwrite: bool = False,
) -> Exported:
    """Write ``run``'s model as ``format`` to ``out`` (default: model.pt / model.onnx beside the weights)."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == "onnx" and importlib.util.find_spec("onnx") is None:
        raise ConfigError(ONNX_HINT)
    model, info = load_run(run, device="cpu")
    target = Path(out) if out else info.weights.parent / f"model{SUFFIXES[format]}"
    _refuse_run_file(target)
    if target.exists() and not overwrite:
        raise ConfigError(f"{target} already exists; use --overwrite or another --out")
    if not target.parent.is_dir():
        raise ConfigError(f"directory {target.parent} does not exist; create it or choose another --out")
    example = torch.zeros(1, *info.input_shape)  # (1, C, H, W)

    def torchscript(tmp: str) -> None:
        # TorchScript is deprecated upstream but still the one file format C++/mobile runtimes load.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(model, example)
        traced.save(tmp)

    def onnx(tmp: str) -> None:
        torch.onnx.export(
            model,
            (example,),
            tmp,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            external_data=False,  # one self-contained file: weights beside a temp name would be orphaned
        )

    try:
        atomic_write(target, torchscript if format == "torchscript" else onnx)
    except ModuleNotFoundError as err:  # the new exporter also wants onnxscript
        raise ConfigError(f"{ONNX_HINT} (missing module {err.name})") from None
    return Exported(target, format, info.input_shape)
