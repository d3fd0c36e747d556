"""``export_run``: a trained run as a model file for deployment: torch.export (``.pt2``), ONNX or TorchScript.

- ``torch-export`` (the default; ``pt2`` is the same format by its file's name): an ``ExportedProgram`` saved
  with ``torch.export.save``; load it in plain PyTorch with ``torch.export.load(path).module()``. The batch
  dimension is dynamic, and its outputs do not require grad (the weights are exported frozen).
- ``onnx``: one self-contained ``.onnx`` file (``pip install "reslab[onnx]"``), for onnxruntime & co.
- ``torchscript``: legacy (TorchScript is deprecated upstream), for C++/mobile runtimes that still load it.

By default the model takes normalised float images (B, C, H, W) and returns logits (B, K); the
normalisation statistics and class names are in the run's config.json *and* in the file's metadata
(``reslab.json`` extra file of a ``.pt2`` / TorchScript file, ``metadata_props`` of an ONNX model). With
``uint8_input=True`` (``--uint8-input``) the run's normalisation is part of the graph: it takes raw uint8
images (B, C, H, W), exactly as ``reslab predict`` reads them from image files (same mode, size and crop),
so a deployer feeds decoded pixels and nothing else. A failed export never leaves half a file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reslab.data.loader import Normalization
from reslab.engine.store.rundir import CKPT_DIR, CONFIG, LOCK, RUN_FILES
from reslab.engine.store.runs import RunInfo, load_run
from reslab.errors import ConfigError
from reslab.files import write_atomic

FORMATS = ("torch-export", "onnx", "torchscript")
FORMAT_ALIASES = {"pt2": "torch-export"}  # the name of the file torch.export writes
SUFFIXES = {"torch-export": ".pt2", "onnx": ".onnx", "torchscript": ".pt"}
ONNX_HINT = 'ONNX export needs the optional onnx and onnxscript packages: pip install "reslab[onnx]"'
EXAMPLE_BATCH = 2  # torch.export specialises a dimension whose example size is 0 or 1: keep batch dynamic


class Uint8Input(nn.Module):
    """``model`` behind the run's normalisation: raw uint8 images (B, C, H, W) in, logits (B, K) out.

    The same arithmetic as ``Normalization.apply`` in ``reslab predict`` (``x * scale + shift`` in float32).
    """

    scale: torch.Tensor  # buffers, so typed here: nn.Module's __getattr__ returns Tensor | Module
    shift: torch.Tensor

    def __init__(self, model: nn.Module, norm: Normalization) -> None:
        super().__init__()
        self.model = model
        scale, shift = norm.scale_shift("cpu")
        self.register_buffer("scale", scale)  # (C, 1, 1)
        self.register_buffer("shift", shift)  # (C, 1, 1) per channel, (C, H, W) per pixel

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.float() * self.scale + self.shift)


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
    input_shape: tuple[int, int, int]  # (C, H, W) of the images it takes
    uint8_input: bool = False  # True: raw uint8 pixels, normalised inside; False: normalised float

    def __str__(self) -> str:
        shape = ", ".join(map(str, self.input_shape))
        kind = "uint8, normalised inside" if self.uint8_input else "float32, normalised"
        legacy = " (legacy format)" if self.format == "torchscript" else ""
        return f"wrote {self.path} ({self.format}{legacy}; input (B, {shape}) {kind}; output logits (B, K))"


def export_metadata(info: RunInfo, uint8_input: bool) -> dict[str, Any]:
    """What a deployer needs beside the graph: classes, input layout, normalisation, resize rule."""
    return {
        "model": info.config.model,
        "classes": list(info.classes),
        "input_shape": list(info.input_shape),
        "input": "uint8 (B, C, H, W), 0-255" if uint8_input else "float32 (B, C, H, W), normalised",
        "normalization": info.norm.to_dict(),
        "resize": "shorter side + center crop" if info.config.image_size is not None else "stretch",
        "output": "logits (B, K)",
    }


def _dynamic_batch() -> tuple[dict[int, Any], ...]:
    return ({0: torch.export.Dim("batch", min=1)},)  # dim 0 of the one input: any batch size


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' progress lines and warnings about packages reslab does not use (torchvision ops)."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# Each exporter serialises into memory; the one writer then puts the bytes on disk. torch's C++ file writer
# aborts the process (exit 134) when the disk fills under it; a Python write of finished bytes fails with an
# OSError, which is one line, and leaves nothing behind.


def _torch_export(model: nn.Module, example: torch.Tensor, meta: str) -> bytes:
    with _quiet():
        program = torch.export.export(model, (example,), dynamic_shapes=_dynamic_batch())
    buf = io.BytesIO()
    torch.export.save(program, buf, extra_files={"reslab.json": meta})
    return buf.getvalue()


def _torchscript(model: nn.Module, example: torch.Tensor, meta: str) -> bytes:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example)
    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files={"reslab.json": meta})
    return buf.getvalue()


def _onnx(model: nn.Module, example: torch.Tensor, meta: str) -> bytes:
    import onnx

    with _quiet():
        program = torch.onnx.export(
            model,
            (example,),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=_dynamic_batch(),
            verbose=False,
        )
    assert program is not None  # the dynamo exporter returns its program when given no file
    proto = program.model_proto  # one self-contained model: weights inside, never beside a temp name
    onnx.helper.set_model_props(proto, {"reslab": meta})
    return proto.SerializeToString()


WRITERS = {"torch-export": _torch_export, "onnx": _onnx, "torchscript": _torchscript}


def export_run(
    run: str | Path,
    *,
    format: str = "torch-export",
    out: str | Path | None = None,
    overwrite: bool = False,
    uint8_input: bool = False,
    weights: str | None = None,
) -> Exported:
    """Write ``run``'s model as ``format`` to ``out`` (default: model.pt2 / .onnx / .pt beside the weights;
    best.pt2 ... for ``weights="best"``).

    Args:
        run: a run directory, or a weights file with a config beside it.
        format: ``torch-export`` or ``pt2`` (``.pt2``), ``onnx`` or ``torchscript`` (legacy).
        uint8_input: bake the run's normalisation into the graph, which then takes raw uint8 images.
        weights: ``last`` (default: the run's latest) or ``best`` (``--keep-best``'s best.safetensors).

    Raises:
        ConfigError: unknown format, ONNX packages missing, the file exists (without ``overwrite``) or its
            folder does not.
    """
    from reslab.engine.store.best import select_weights

    format = FORMAT_ALIASES.get(format, format)
    if format not in FORMATS:
        names = ", ".join((*FORMATS, *FORMAT_ALIASES))
        raise ConfigError(f"unknown export format {format!r}; choose one of {names}")
    if format == "onnx" and importlib.util.find_spec("onnx") is None:
        raise ConfigError(ONNX_HINT)
    model, info = load_run(select_weights(run, weights), device="cpu")
    model.requires_grad_(False)  # a deployed model is not trained: its outputs need no autograd graph
    stem = info.weights.stem if info.weights.stem == "best" else "model"
    target = Path(out) if out else info.weights.parent / f"{stem}{SUFFIXES[format]}"
    _refuse_run_file(target)
    if target.exists() and not overwrite:
        raise ConfigError(f"{target} already exists; use --overwrite or another --out")
    if not target.parent.is_dir():
        raise ConfigError(f"directory {target.parent} does not exist; create it or choose another --out")
    example = torch.zeros(EXAMPLE_BATCH, *info.input_shape)  # (B, C, H, W)
    exported: nn.Module = model
    if uint8_input:
        exported, example = Uint8Input(model, info.norm).eval(), example.to(torch.uint8)
    meta = json.dumps(export_metadata(info, uint8_input))
    try:
        data = WRITERS[format](exported, example, meta)
    except ModuleNotFoundError as err:  # the new exporter also wants onnxscript
        raise ConfigError(f"{ONNX_HINT} (missing module {err.name})") from None
    write_atomic(target, data, "export file")  # a full disk: one line, the old file kept, nothing left
    return Exported(target, format, info.input_shape, uint8_input)
