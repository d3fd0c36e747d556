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
import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from reslab.confusion import ClassErrors
from reslab.engine.config import DEFAULT_BATCH
from reslab.engine.devices.runtime import AMP_DTYPES, resolve_device
from reslab.engine.store.runs import RunInfo, load_run
from reslab.errors import ConfigError, NonFiniteError

TOP5_ABOVE = 5  # classes: with 5 or fewer, top-5 error is 0 whatever the model does


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean cross-entropy (no label smoothing: comparable across runs)
    error: float  # top-1 error in [0, 1]
    top5_error: float  # top-5 error (top-k with k = min(5, classes))
    n: int  # images evaluated
    confusion: list[list[int]] | None = None  # (K, K) counts, rows true class, columns predicted (if asked)


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    amp_dtype: torch.dtype | None = None,
    distributed: bool = False,
    num_classes: int | None = None,
) -> EvalResult:
    """Evaluate in eval mode (BN running statistics); restores the model's train/eval mode afterwards.

    ``distributed``: every rank calls this with its own disjoint shard of the split (and the plain model, not
    the DDP wrapper); it evaluates rank 0's buffers and returns the figures of the whole split on every rank.
    ``num_classes``: also count the confusion matrix of the same top-1 predictions (one process only).
    """
    if distributed:
        from reslab.engine.devices.distributed import broadcast_buffers

        broadcast_buffers(model)
    was_training = model.training
    model.eval()
    sums: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # loss, top-1 hits, top-5 hits
    counts: torch.Tensor | None = None
    n = 0
    try:
        for x, y in loader:
            if y.numel() == 0:  # a rank's shard of a split smaller than the world size
                continue
            with _autocast(x.device, amp_dtype):
                logits = model(x)  # (B, K)
            logits = logits.float()
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices  # (B, k)
            hits = top == y.view(-1, 1)  # (B, k)
            # Accumulate on the device: no .item() per batch.
            batch = (F.cross_entropy(logits, y, reduction="sum"), hits[:, 0].sum(), hits.any(1).sum())
            sums = batch if sums is None else (sums[0] + batch[0], sums[1] + batch[1], sums[2] + batch[2])
            if num_classes is not None:  # matrix[true][predicted], flattened: one bincount per batch
                flat = torch.bincount(y * num_classes + top[:, 0], minlength=num_classes * num_classes)
                counts = flat if counts is None else counts + flat
            n += int(y.shape[0])
    finally:
        model.train(was_training)
    if distributed:
        loss_sum, correct1, correct5, n = _over_ranks(model, sums, n)
    elif sums is None:  # no image (n is 0)
        loss_sum, correct1, correct5 = 0.0, 0, 0
    else:
        loss_sum, correct1, correct5 = float(sums[0]), int(sums[1]), int(sums[2])
    if n == 0:
        return EvalResult(float("nan"), float("nan"), float("nan"), 0)
    matrix = counts.view(num_classes, num_classes).tolist() if counts is not None and num_classes else None
    return EvalResult(
        loss=loss_sum / n,
        error=(n - correct1) / n,  # not 1 - c/n: no 0.025000000000000022 in the logs
        top5_error=(n - correct5) / n,
        n=n,
        confusion=matrix,
    )


def _over_ranks(
    model: torch.nn.Module, sums: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, n: int
) -> tuple[float, int, int, int]:
    """Sums over ranks of (loss, top-1 hits, top-5 hits, images), in one all_reduce."""
    from reslab.engine.devices.distributed import all_reduce_sum

    zero = torch.zeros((), device=next(iter(model.parameters())).device)
    parts = [zero, zero, zero] if sums is None else list(sums)
    local = torch.stack([p.double() for p in parts] + [zero.double() + n])
    total = all_reduce_sum(local).tolist()
    return total[0], round(total[1]), round(total[2]), round(total[3])


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> Any:
    """Autocast to ``amp_dtype`` on ``device``, or nothing (fp32)."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


@dataclass(frozen=True)
class EvalReport:
    """What :func:`evaluate` returns: the figures, the per-class errors and the files written."""

    model: str
    dataset: str
    split: str  # "test" | "train" | "data" (images passed as data=)
    n: int  # images evaluated
    loss: float  # mean cross-entropy
    error: float  # top-1 error in [0, 1]
    top5_error: float
    precision: str  # fp32 | bf16 | fp16
    class_errors: ClassErrors | None = None  # per-class errors and the confusion matrix (reslab.confusion)
    weights: str = ""  # the weights file evaluated (model.safetensors, best.safetensors, ...)
    files: dict[str, Path] = field(default_factory=dict)  # class_errors.json, confusion.png

    @property
    def num_classes(self) -> int | None:
        return len(self.class_errors.classes) if self.class_errors is not None else None

    def __str__(self) -> str:
        top5 = self.num_classes is None or self.num_classes > TOP5_ABOVE  # 0 by design with <= 5 classes
        which = f" ({self.weights})" if self.weights else ""
        what = "the data passed" if self.split == "data" else f"{self.dataset} {self.split} split"
        lines = [
            f"{self.model}{which} on {what} ({self.n} images, {self.precision}): "
            f"loss {self.loss:.4f}, error {self.error:.2%}"
            + (f", top-5 error {self.top5_error:.2%}" if top5 else "")
        ]
        if self.class_errors is not None:
            lines += ["per-class errors (worst first):", self.class_errors.table()]
        if self.files:
            lines.append("wrote " + ", ".join(str(p) for p in self.files.values()))
        return "\n".join(lines)


def evaluate(
    run: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    data: Any = None,
    weights: str | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str | None = None,
    download: bool = True,
    out: str | Path | None = None,
    save: bool = True,
) -> EvalReport:
    """Loss, error, top-5 error, per-class errors and the confusion matrix of a trained run on a split.

    Args:
        run: a run directory, or a weights file with a config beside it.
        dataset: default the run's own (with its validation split, so "test" means what it meant there, and
            for a folder its --image-size).
        split: "test" or "train" (the paper's training error: the whole split, eval mode, no augmentation).
        data: ``(images, labels)`` arrays or tensors, or a torch Dataset, instead of a split (how a run
            trained on data passed in memory is evaluated).
        weights: ``last`` (default: the run's latest) or ``best`` (``--keep-best``'s best.safetensors).
        batch_size: default the run's own; with its precision, this reproduces its reported figures.
        precision: fp32 | bf16 | fp16; default the run's own.
        out: where ``class_errors.json`` and ``confusion.png`` go; default the run directory (whose
            report.html is then written again with them). ``save=False`` writes nothing.
    """
    from reslab.data.loader import DeviceLoader
    from reslab.engine.store.best import select_weights

    _check_eval_args(split, batch_size, precision, data is not None and dataset is not None)
    model, info = load_run(select_weights(run, weights), device=(dev := resolve_device(device)))
    cfg = info.config
    if data is not None:
        name, split = "data passed in memory", "data"  # what EvalReport says: "on the data passed"
        x, y = _passed_split(info, data)
    else:
        name = dataset or cfg.dataset
        x, y = _split(info, name, cfg.data_dir if data_dir is None else data_dir, split, download)
    prec, batch = precision or info.precision, batch_size or cfg.batch_size or DEFAULT_BATCH
    loader = DeviceLoader(
        x, y, batch_size=batch, norm=info.norm, device=dev, channels_last=info.channels_last
    )
    res = evaluate_model(
        _as_trained(model, info), loader, amp_dtype=AMP_DTYPES[prec], num_classes=len(info.classes)
    )
    if not all(math.isfinite(v) for v in (res.loss, res.error)):
        raise NonFiniteError(
            f"{cfg.model} gives NaN/inf outputs on {name}: its weights are broken or diverged; "
            "evaluate an earlier checkpoint or retrain"
        )
    classes = ClassErrors(list(info.classes), res.confusion or [], split)
    report = EvalReport(
        cfg.model, name, split, res.n, res.loss, res.error, res.top5_error, prec, classes, info.weights.name
    )
    return dataclasses.replace(report, files=_save_class_errors(report, info, out)) if save else report


def _check_eval_args(split: str, batch_size: int | None, precision: str | None, both: bool) -> None:
    if split not in ("test", "train"):
        raise ConfigError(f"unknown split {split!r}; choose test or train")
    if batch_size is not None and batch_size <= 0:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size}")
    if precision is not None and precision not in AMP_DTYPES:
        raise ConfigError(f"unknown --precision {precision!r}; choose one of {', '.join(AMP_DTYPES)}")
    if both:
        raise ConfigError("data= and dataset= both say what to evaluate on; pass one of them")


def _save_class_errors(report: EvalReport, info: RunInfo, out: str | Path | None) -> dict[str, Path]:
    """class_errors.json and confusion.png in ``out`` (or the run directory, whose report.html then shows
    them); a run directory that cannot be written costs a warning, an ``out`` that cannot is an error."""
    from reslab.confusion import write_class_errors
    from reslab.errors import ReslabError, StorageError, warn_line

    assert report.class_errors is not None
    where = Path(out).expanduser() if out is not None else (info.run_dir or info.weights.parent)
    title = f"{report.model} ({report.weights}) on {report.dataset}, {report.split} split"
    try:
        files = write_class_errors(report.class_errors, where, title=title)
    except OSError as err:
        if out is not None:
            raise StorageError(
                f"cannot write to {where}: {err.strerror or err}; choose another --out"
            ) from None
        warn_line(
            f"class_errors.json not written to {where}: {err.strerror or err} (--out DIR writes elsewhere)"
        )
        return {}
    if out is None and info.run_dir is not None:
        from reslab.reports import write_run_report

        with contextlib.suppress(ReslabError, OSError):
            files["report.html"] = write_run_report(info.run_dir)
    return files


def _passed_split(info: RunInfo, data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of data passed in memory, checked to fit the run's model."""
    from reslab.data.memory import labelled_images

    x, y = labelled_images(data, classes=info.classes)
    if tuple(x.shape[1:]) != tuple(info.input_shape):
        raise ConfigError(
            f"the data holds {tuple(x.shape[1:])} images, but the model takes {tuple(info.input_shape)}; "
            "pass images of the run's shape"
        )
    return x, y


def _split(
    info: RunInfo, name: str, data_dir: str | None, split: str, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of ``split`` of dataset ``name``, checked to fit the run's model."""
    from reslab.data import load_dataset
    from reslab.data.passed import is_passed

    cfg = info.config
    if is_passed(name):
        raise ConfigError(
            f"{name} is data passed in memory to train(); evaluate on it with reslab.evaluate(RUN, "
            "data=(x_test, y_test)), or choose a --dataset"
        )
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
    if same and split == "train" and cfg.keep_best:  # the images the run trained on: not the held-out ones
        from reslab.engine.data import best_holdout

        keep, _ = best_holdout(y.numpy(), cfg.best_split, cfg.split_seed)
        x, y = x[keep], y[keep]
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
    weights: str | None = None,
) -> list[Prediction]:
    """The ``top_k`` classes of each image file, with the run's preprocessing (mode, size, statistics);
    ``weights="best"``: ``--keep-best``'s best weights."""
    from reslab.data.images import read_image_chw
    from reslab.engine.store.best import select_weights

    if top_k <= 0:
        raise ConfigError(f"--top-k must be a positive integer, got {top_k}")
    if not images:
        raise ConfigError("no images given; pass one or more PNG or JPEG files")
    dev = resolve_device(device)
    model, info = load_run(select_weights(run, weights), device=dev)
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
        # torch's stubs omit Module.to(memory_format=...), which torch has
        return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model
