"""A model's figures on a split, during training (:func:`evaluate_model`) and of a trained run afterwards:
``evaluate`` it on a dataset split and ``predict`` the classes of image files.

``evaluate`` and ``predict`` rebuild the model from its run directory
(:func:`~reslab.engine.store.runs.load_run`) and feed it images normalised with the run's own statistics.
By default they run in the run's own precision and memory format, so ``evaluate`` gives the figures the run
reported (results.md, summary.json). Non-finite outputs are an error (:class:`~reslab.errors.NonFiniteError`,
exit 3), never a figure.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from reslab.engine.devices.runtime import AMP_DTYPES, resolve_device
from reslab.engine.store.runs import RunInfo, load_run
from reslab.errors import ConfigError, NonFiniteError


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean cross-entropy (no label smoothing: comparable across runs)
    error: float  # top-1 error in [0, 1]
    top5_error: float  # top-5 error (top-k with k = min(5, classes))
    n: int  # images evaluated


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    amp_dtype: torch.dtype | None = None,
    distributed: bool = False,
) -> EvalResult:
    """Evaluate in eval mode (BN running statistics); restores the model's train/eval mode afterwards.

    ``distributed``: every rank calls this with its own disjoint shard of the split (and the plain model, not
    the DDP wrapper); it evaluates rank 0's buffers and returns the figures of the whole split on every rank.
    """
    if distributed:
        from reslab.engine.devices.distributed import broadcast_buffers

        broadcast_buffers(model)
    was_training = model.training
    model.eval()
    loss_sum = correct1 = correct5 = None
    n = 0
    try:
        for x, y in loader:
            if y.numel() == 0:  # a rank's shard of a split smaller than the world size
                continue
            ctx = (
                torch.autocast(device_type=x.device.type, dtype=amp_dtype)
                if amp_dtype is not None
                else contextlib.nullcontext()
            )
            with ctx:
                logits = model(x)  # (B, K)
            logits = logits.float()
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices  # (B, k)
            hits = top == y.view(-1, 1)  # (B, k)
            # Accumulate on the device: no .item() per batch.
            batch = (F.cross_entropy(logits, y, reduction="sum"), hits[:, 0].sum(), hits.any(1).sum())
            if loss_sum is None:
                loss_sum, correct1, correct5 = batch
            else:
                loss_sum, correct1, correct5 = loss_sum + batch[0], correct1 + batch[1], correct5 + batch[2]
            n += int(y.shape[0])
    finally:
        model.train(was_training)
    if distributed:  # sums over ranks (loss, top-1 hits, top-5 hits, images) in one all_reduce
        from reslab.engine.devices.distributed import all_reduce_sum

        zero = torch.zeros((), device=next(iter(model.parameters())).device)
        parts = [zero, zero, zero] if loss_sum is None else [loss_sum, correct1, correct5]
        local = torch.stack([p.double() for p in parts] + [zero.double() + n])
        total = all_reduce_sum(local).tolist()
        loss_sum, correct1, correct5, n = total[0], round(total[1]), round(total[2]), round(total[3])
    if n == 0 or loss_sum is None:
        return EvalResult(float("nan"), float("nan"), float("nan"), 0)
    return EvalResult(
        loss=float(loss_sum) / n,
        error=(n - int(correct1)) / n,  # not 1 - c/n: no 0.025000000000000022 in the logs
        top5_error=(n - int(correct5)) / n,
        n=n,
    )


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
