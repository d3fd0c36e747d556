"""The run's data: the splits as batches on the device, resident (the default) or streamed.

Sources: a dataset by name (:func:`reslab.data.load_dataset`), or objects passed to ``train(data=...)``
(:class:`reslab.data.passed.PassedData`, recorded as ``memory:<name>``). A ``folder:PATH`` or a passed
torch Dataset whose images (uint8, both splits) exceed the memory budget streams through DataLoader
workers (:mod:`reslab.data.streaming`); everything else is one uint8 tensor on the device. The budget is
``--data-memory-gib``, by default half of the host memory free when the run starts
(:func:`reslab.resources.available_host_memory`; where that is unknown, nothing streams unless a budget is
given).

Then, in this order: ``--keep-best`` holds out training images to choose the best weights by (never the
test split); the small-data rule picks the batch (:mod:`reslab.engine.sizing`); the normalisation
statistics come from the training images only (above :data:`STATS_IMAGES` of a streamed split, a seeded
sample of that many). A streamed run gets the batches a resident one would (same order, crops, flips and
pixels) and resumes as exactly.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from reslab.data.arrays import stratified_holdout
from reslab.data.folder import plan_folder
from reslab.data.loader import Augmentation, Batching, DeviceLoader, Normalization
from reslab.data.passed import PassedData, is_passed
from reslab.data.stats import stats_of_chunks
from reslab.data.streaming import FolderImages, Images, StreamLoader, quiet_generator
from reslab.engine.devices.runtime import Runtime
from reslab.engine.sizing import auto_batch, batch_notes
from reslab.engine.specs import DataSpec
from reslab.errors import ConfigError
from reslab.resources import GiB, available_host_memory, format_bytes

BUDGET_FRACTION = 0.5  # of the free host memory: the model, the optimizer and the decoding need the rest
STATS_IMAGES = 10_000  # training images the statistics of a streamed split are computed on, at most
MAX_WORKERS = 8
STATS_CHUNK = 4096  # images per chunk of the statistics: bounds their float64 working memory
BEST_FRACTION = 0.1  # of the training split held out for --keep-best, unless --best-split says
BEST_SEED_OFFSET = 1  # the --keep-best split's seed is split_seed + 1: not the --val-split draw


@dataclass
class RunData:
    """The splits on the device and what config.json records about them (the loaders are DeviceLoaders, or
    StreamLoaders for a streamed source: both :class:`~reslab.data.loader.Batching`)."""

    train: Batching  # shuffled, augmented, this rank's shard of every global batch
    eval_train: Batching  # the whole train split, in order, no augmentation (the paper's training error)
    eval_test: Batching
    norm: Normalization
    augment: Augmentation
    classes: list[str]
    image_shape: tuple[int, int, int]
    source: str
    batch_size: int  # the global batch: the run's, or the small-data rule's
    eval_best: Batching | None = None  # --keep-best: the held-out training images, in order
    fingerprint: str | None = None  # data passed in memory: what a resume must be given again
    notes: list[str] = field(default_factory=list)  # lines for the start of the run


def load_data(spec: DataSpec, rt: Runtime, passed: PassedData | None = None) -> RunData:
    """The dataset (or ``passed``) as uint8 tensors on the device, or streamed when it exceeds the memory
    budget; see the module's docstring for the order of the steps. A resumed run on data passed in memory
    must be given the data it trained on (``spec.fingerprint``)."""
    data = _streamed(spec, rt, passed) or _resident(spec, rt, passed)
    if spec.fingerprint is not None and data.fingerprint is not None and data.fingerprint != spec.fingerprint:
        raise ConfigError(
            f"the data passed differs from the data this run trained on (its fingerprint "
            f"{spec.fingerprint[:20]}…, this data's {data.fingerprint[:20]}…); pass the same data, or start "
            "a new run"
        )
    return data


def _resident(spec: DataSpec, rt: Runtime, passed: PassedData | None) -> RunData:
    """The splits as one uint8 tensor each on the device."""
    from reslab.data import load_dataset

    if is_passed(spec.dataset) and passed is None:
        raise ConfigError(
            f"{spec.dataset} is data passed in memory; pass it: reslab.train(..., data=(x, y), "
            "test_data=(x_test, y_test)) (on resume too), or choose another --dataset"
        )
    if passed is not None and spec.image_size is not None:
        raise ConfigError("--image-size applies to folder:PATH datasets only; resize the arrays you pass")
    print_ = None
    if passed is not None:
        ds = passed.resident(seed=spec.split_seed, warn=_warn)
        print_ = passed.fingerprint(seed=spec.split_seed)  # of the data as passed, before any hold-out
        if spec.val_split is not None:
            from reslab.data import holdout

            ds = holdout(ds, spec.val_split, seed=spec.split_seed)
    else:
        ds = load_dataset(
            spec.dataset, spec.data_dir, download=spec.download, seed=spec.split_seed,
            val_split=spec.val_split, image_size=spec.image_size,
        )  # fmt: skip
    notes = [ds.meta["note"]] if ds.meta.get("note") and not spec.resumed else []
    x, y, best = ds.train_x, ds.train_y, None
    if spec.keep_best:
        keep, hold = best_holdout(y.numpy(), spec.best_split, spec.split_seed)
        x, y, best = x[keep], y[keep], (x[hold], y[hold])
    batch = _batch(spec, rt, len(y), notes)
    chunks = (x[i : i + STATS_CHUNK] for i in range(0, len(x), STATS_CHUNK))  # the training images only
    norm = Normalization.from_stats(stats_of_chunks(chunks), spec.normalize)
    augment = ds.augment if spec.augment == "auto" else spec.augment
    common: dict[str, Any] = dict(
        batch_size=batch, norm=norm, device=rt.device, channels_last=rt.channels_last, rank=rt.rank,
        world_size=rt.world_size,
    )  # fmt: skip
    train = DeviceLoader(x, y, shuffle=True, augment=augment, seed=spec.seed, drop_last=True, **common)
    # Evaluation loaders share the device copies; under DDP each rank evaluates a disjoint shard.
    return RunData(
        train=train,
        eval_train=DeviceLoader(train.images, train.labels, **common),
        eval_test=DeviceLoader(ds.test_x, ds.test_y, **common),
        norm=norm,
        augment=augment,
        classes=list(ds.classes),
        image_shape=ds.image_shape,
        source=ds.source,
        batch_size=batch,
        eval_best=DeviceLoader(*best, **common) if best is not None else None,
        fingerprint=print_,
        notes=notes,
    )


def _warn(text: str) -> None:
    sys.stderr.write(f"reslab: warning: {text}\n")


def best_holdout(labels: np.ndarray, count: int | None, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``--keep-best``: (kept, held out) positions of the training split, stratified and seeded; ``count``
    images held out (None: :data:`BEST_FRACTION` of the split)."""
    n = len(labels)
    count = count if count is not None else max(1, round(BEST_FRACTION * n))
    if not 0 < count < n:
        raise ConfigError(
            f"--best-split {count} leaves no training images of {n}; pick a number in 1..{n - 1}"
        )
    return stratified_holdout(labels, count, split_seed + BEST_SEED_OFFSET)


def _batch(spec: DataSpec, rt: Runtime, n_train: int, notes: list[str]) -> int:
    """The small-data rule's batch for ``n_train`` images (the lines it says go to ``notes``)."""
    batch = auto_batch(n_train, spec.batch_size, auto=spec.batch_auto, world_size=rt.world_size)
    if n_train < batch:
        raise ConfigError(
            f"--batch-size {batch} exceeds the {n_train} training images of {spec.dataset}; "
            "use a smaller --batch-size"
        )
    if not spec.resumed:
        notes.extend(batch_notes(n_train, batch, default=spec.batch_size, auto=spec.batch_auto))
    return batch


def memory_budget(spec: DataSpec) -> int | None:
    """Bytes a decoded dataset may take before it streams; None: unknown (then it never streams)."""
    if spec.memory_gib is not None:
        return int(spec.memory_gib * GiB)
    free = available_host_memory()
    return None if free is None else int(free * BUDGET_FRACTION)


def _workers(spec: DataSpec) -> int:
    return spec.workers if spec.workers is not None else min(MAX_WORKERS, os.cpu_count() or 1)


def _stats_norm(images: Images, spec: DataSpec, workers: int) -> Normalization:
    """Normalisation from the training images (a seeded sample of them above STATS_IMAGES)."""
    n = len(images)
    if n > STATS_IMAGES:
        pick = np.sort(np.random.default_rng(spec.split_seed).choice(n, STATS_IMAGES, replace=False))
        images = images.subset(pick)
    batches = DataLoader(images, batch_size=256, num_workers=workers, generator=quiet_generator())
    return Normalization.from_stats(stats_of_chunks(x for x, _ in batches), spec.normalize)


def _streamed(spec: DataSpec, rt: Runtime, passed: PassedData | None) -> RunData | None:
    """The loaders of a source streamed item by item, or None when it fits the memory budget."""
    budget = memory_budget(spec)
    if budget is None:
        return None
    workers, notes = _workers(spec), []
    if passed is not None:
        size = passed.decoded_bytes()
        if size is None or size <= budget:
            return None
        data = passed.streamed(seed=spec.split_seed, workers=workers, warn=_warn)
        train, test = data.train, data.test
        classes, augment, source, print_ = data.classes, data.augment, "memory (streamed)", data.fingerprint
        what, where = f"{spec.dataset}: {len(train) + len(test):,} images", "from the Dataset"
    else:
        kind, _, arg = spec.dataset.strip().partition(":")
        if kind.lower() != "folder" or not arg:
            return None
        plan = plan_folder(arg, seed=spec.split_seed, image_size=spec.image_size, name=spec.dataset.strip())
        if plan.decoded_bytes <= budget:
            return None
        size = plan.decoded_bytes
        train, test = (FolderImages(s, plan.size, plan.mode, crop=plan.crop) for s in (plan.train, plan.test))
        classes, augment, source, print_ = list(plan.classes), plan.augment, str(plan.root), None
        what, where = f"{plan.name}: {len(plan.train) + len(plan.test):,} images", "from disk"
        notes += [plan.resize_note] if plan.resize_note and not spec.resumed else []
    if spec.val_split:  # N training images (seeded, stratified) as the test split, as ``holdout`` does
        keep, hold = stratified_holdout(train.labels, spec.val_split, spec.split_seed)
        train, test = train.subset(keep), train.subset(hold)
    best: Images | None = None
    if spec.keep_best:
        keep, hold = best_holdout(train.labels, spec.best_split, spec.split_seed)
        train, best = train.subset(keep), train.subset(hold)
    batch = _batch(spec, rt, len(train), notes)
    norm = _stats_norm(train, spec, workers)
    chosen = augment if spec.augment == "auto" else spec.augment
    common: dict[str, Any] = dict(
        batch_size=batch, norm=norm, device=rt.device, channels_last=rt.channels_last,
        rank=rt.rank, world_size=rt.world_size, workers=workers,
    )  # fmt: skip
    if rt.is_main and spec.announce:
        sys.stderr.write(
            f"reslab: {what}, {format_bytes(size)} decoded, more than the {format_bytes(budget)} memory "
            f"budget: streaming {where} with {workers} worker(s)\n"
        )
    return RunData(
        train=StreamLoader(train, shuffle=True, augment=chosen, seed=spec.seed, drop_last=True, **common),
        eval_train=StreamLoader(train, **common),
        eval_test=StreamLoader(test, **common),
        norm=norm,
        augment=chosen,
        classes=classes,
        image_shape=train.shape,
        source=source,
        batch_size=batch,
        eval_best=StreamLoader(best, **common) if best is not None else None,
        fingerprint=print_,
        notes=notes,
    )
