"""Using a trained run: ``evaluate`` it on a dataset split and ``predict`` the classes of image files.

Both rebuild the model from its run directory (:func:`~reslab.engine.runs.load_run`) and feed it images
normalised with the run's own statistics. By default they run in the run's own precision and memory format,
so ``evaluate`` gives the figures the run reported (results.md, summary.json). Non-finite outputs are an
error (:class:`~reslab.errors.NonFiniteError`, exit 3), never a figure.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from reslab.engine.evaluation import evaluate_model
from reslab.engine.runs import RunInfo, load_run
from reslab.engine.runtime import AMP_DTYPES, resolve_device
from reslab.errors import ConfigError, NonFiniteError


@dataclass(frozen=True)
class EvalReport:
    """What :func:`evaluate` returns."""

    model: str
    dataset: str
    split: str  # "test" | "train"
    n: int  # images evaluated
    loss: float  # mean cross-entropy
    error: float  # top-1 error in [0, 1]
    top5_error: float
    precision: str  # fp32 | bf16 | fp16

    def __str__(self) -> str:
        return (
            f"{self.model} on {self.dataset} {self.split} split ({self.n} images, {self.precision}): "
            f"loss {self.loss:.4f}, error {self.error:.2%}, top-5 error {self.top5_error:.2%}"
        )


def evaluate(
    run: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    batch_size: int | None = None,
    device: str = "auto",
    precision: str | None = None,
    download: bool = True,
) -> EvalReport:
    """Loss, error and top-5 error of a trained run (or weights file) on a split of a dataset.

    Args:
        run: a run directory, or a weights file with a config beside it.
        dataset: default the run's own (with its validation split, so "test" means what it meant there).
        split: "test" or "train" (the paper's training error: the whole split, eval mode, no augmentation).
        batch_size: default the run's own; with its precision, this reproduces its reported figures.
        precision: fp32 | bf16 | fp16; default the run's own.
    """
    from reslab.data.loader import DeviceLoader

    if split not in ("test", "train"):
        raise ConfigError(f"unknown split {split!r}; choose test or train")
    if batch_size is not None and batch_size <= 0:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size}")
    if precision is not None and precision not in AMP_DTYPES:
        raise ConfigError(f"unknown --precision {precision!r}; choose one of {', '.join(AMP_DTYPES)}")
    dev = resolve_device(device)
    model, info = load_run(run, device=dev)
    cfg = info.config
    name = dataset or cfg.dataset
    x, y = _split(info, name, data_dir if data_dir is not None else cfg.data_dir, split, download)
    prec = precision or info.precision
    model = _as_trained(model, info)
    batch = batch_size or cfg.batch_size
    loader = DeviceLoader(
        x, y, batch_size=batch, norm=info.norm, device=dev, channels_last=info.channels_last
    )
    res = evaluate_model(model, loader, amp_dtype=AMP_DTYPES[prec])
    if not all(math.isfinite(v) for v in (res.loss, res.error)):
        raise NonFiniteError(
            f"{cfg.model} gives NaN/inf outputs on {name}: its weights are broken or diverged; "
            "evaluate an earlier checkpoint or retrain"
        )
    return EvalReport(cfg.model, name, split, res.n, res.loss, res.error, res.top5_error, prec)


def _split(
    info: RunInfo, name: str, data_dir: str | None, split: str, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of ``split`` of dataset ``name``, checked to fit the run's model."""
    from reslab.data import load_dataset

    cfg = info.config
    same = name == cfg.dataset  # the run's own dataset keeps its validation split: "test" means the same
    # A folder is read as the run read its own: scaled and centre-cropped to its --image-size, if it had one.
    size = cfg.image_size if name.strip().startswith("folder:") else None
    ds = load_dataset(
        name, data_dir, download=download, seed=cfg.split_seed, val_split=cfg.val_split if same else None,
        image_size=size,
    )  # fmt: skip
    if ds.image_shape != info.input_shape or ds.num_classes != len(info.classes):
        raise ConfigError(
            f"{name} has {ds.num_classes} classes of {ds.image_shape} images, but the model expects "
            f"{len(info.classes)} classes of {info.input_shape}; pick a matching --dataset"
        )
    x, y = (ds.test_x, ds.test_y) if split == "test" else (ds.train_x, ds.train_y)
    if x.shape[0] == 0:
        raise ConfigError(f"{name} has no {split} images")
    return x, y


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, most likely first."""

    path: str
    top: list[tuple[str, float]]  # (class name, probability)

    def __str__(self) -> str:
        return f"{self.path}: " + ", ".join(f"{c} ({p:.1%})" for c, p in self.top)


def predict(
    run: str | Path,
    images: Sequence[str | Path],
    *,
    top_k: int = 3,
    device: str = "cpu",
    precision: str | None = None,
) -> list[Prediction]:
    """The ``top_k`` classes of each image file, with the run's preprocessing (mode, size, statistics)."""
    from reslab.data.images import read_image_chw

    if top_k <= 0:
        raise ConfigError(f"--top-k must be a positive integer, got {top_k}")
    if not images:
        raise ConfigError("no images given; pass one or more PNG or JPEG files")
    dev = resolve_device(device)
    model, info = load_run(run, device=dev)
    crop = info.config.image_size is not None  # trained with --image-size: scale + center-crop, as then
    batch = torch.stack(
        [torch.from_numpy(read_image_chw(p, info.input_shape, crop=crop).copy()) for p in images]
    )  # (N, C, H, W) uint8
    amp = AMP_DTYPES[precision or info.precision]
    ctx = torch.autocast(dev.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        logits = _as_trained(model, info)(info.norm.apply(batch.to(dev)))
    probs = logits.float().softmax(1)  # (N, K)
    if not bool(torch.isfinite(probs).all()):
        raise NonFiniteError(
            f"{info.config.model} gives NaN/inf outputs: its weights are broken or diverged; "
            "retrain or use an earlier checkpoint"
        )
    top = probs.topk(min(top_k, probs.shape[1]), dim=1)
    return [
        Prediction(str(path), [(info.classes[i], p) for p, i in zip(values, indices)])
        for path, values, indices in zip(images, top.values.tolist(), top.indices.tolist())
    ]


def _as_trained(model: torch.nn.Module, info: RunInfo) -> torch.nn.Module:
    """The model in the memory format it was trained in (convolutions pick their kernels by it)."""
    if info.channels_last and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        return model.to(memory_format=torch.channels_last)
    return model
