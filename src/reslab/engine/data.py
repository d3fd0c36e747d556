"""The run's data: the splits as batches on the device, resident (the default) or streamed from disk.

A ``folder:PATH`` whose decoded images (uint8, both splits) exceed the memory budget streams from disk
through DataLoader workers (:mod:`reslab.data.streaming`); every other dataset, and a folder that fits, is
one uint8 tensor on the device. The budget is ``--data-memory-gib``, by default half of the host memory
free when the run starts (:func:`reslab.resources.available_host_memory`; where that is unknown, nothing
streams unless a budget is given).

A streamed run gets the batches a resident one would (same order, crops, flips and pixels) and resumes as
exactly. Its normalisation statistics are those of the train split, or, above :data:`STATS_IMAGES` training
images, of a seeded sample of that many (a full pass over ImageNet would cost as much as an epoch).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from reslab.data.arrays import stratified_holdout
from reslab.data.folder import FolderPlan, plan_folder
from reslab.data.loader import DeviceLoader, Normalization
from reslab.data.stats import stats_of_chunks
from reslab.data.streaming import FolderImages, StreamLoader, quiet_generator
from reslab.engine.devices.runtime import Runtime
from reslab.engine.specs import DataSpec
from reslab.errors import ConfigError
from reslab.resources import GiB, available_host_memory, format_bytes

BUDGET_FRACTION = 0.5  # of the free host memory: the model, the optimizer and the decoding need the rest
STATS_IMAGES = 10_000  # training images the statistics of a streamed split are computed on, at most
MAX_WORKERS = 8


@dataclass
class RunData:
    """The splits on the device and what config.json records about them (a streamed folder's loaders are
    StreamLoaders, with the same interface)."""

    train: DeviceLoader  # shuffled, augmented, this rank's shard of every global batch
    eval_train: DeviceLoader  # the whole train split, in order, no augmentation (the paper's training error)
    eval_test: DeviceLoader
    norm: Normalization
    augment: str
    classes: list[str]
    image_shape: tuple[int, int, int]
    source: str


def load_data(spec: DataSpec, rt: Runtime) -> RunData:
    """The dataset as uint8 tensors on the device, or streamed from disk when a folder exceeds the memory
    budget; normalisation statistics from the train split only."""
    from reslab.data import load_dataset

    streamed = streamed_splits(spec, rt)  # a folder too large for the memory budget: read from disk
    if streamed is not None:
        return streamed
    ds = load_dataset(
        spec.dataset, spec.data_dir, download=spec.download, seed=spec.split_seed, val_split=spec.val_split,
        image_size=spec.image_size,
    )  # fmt: skip
    if ds.train_x.shape[0] < spec.batch_size:
        raise ConfigError(
            f"--batch-size {spec.batch_size} exceeds the {ds.train_x.shape[0]} training images of "
            f"{spec.dataset}; use a smaller --batch-size"
        )
    norm = Normalization.from_dataset(ds, spec.normalize)
    augment = ds.augment if spec.augment == "auto" else spec.augment
    common: dict[str, Any] = dict(
        batch_size=spec.batch_size, norm=norm, device=rt.device, channels_last=rt.channels_last
    )
    shard = dict(rank=rt.rank, world_size=rt.world_size)
    train = DeviceLoader(
        ds.train_x,
        ds.train_y,
        shuffle=True,
        augment=augment,
        seed=spec.seed,
        drop_last=True,
        **common,
        **shard,
    )
    # Evaluation loaders share the device copies; under DDP each rank evaluates a disjoint shard.
    return RunData(
        train=train,
        eval_train=DeviceLoader(train.images, train.labels, **common, **shard),
        eval_test=DeviceLoader(ds.test_x, ds.test_y, **common, **shard),
        norm=norm,
        augment=augment,
        classes=list(ds.classes),
        image_shape=ds.image_shape,
        source=ds.source,
    )


def memory_budget(spec: DataSpec) -> int | None:
    """Bytes a decoded dataset may take before it streams; None: unknown (then it never streams)."""
    if spec.memory_gib is not None:
        return int(spec.memory_gib * GiB)
    free = available_host_memory()
    return None if free is None else int(free * BUDGET_FRACTION)


def _folder_plan(spec: DataSpec) -> FolderPlan | None:
    """The folder's plan when it must stream (a folder dataset larger than the budget), else None."""
    kind, _, arg = spec.dataset.strip().partition(":")
    if kind.lower() != "folder" or not arg:
        return None
    budget = memory_budget(spec)
    if budget is None:
        return None
    plan = plan_folder(arg, seed=spec.split_seed, image_size=spec.image_size, name=spec.dataset.strip())
    return plan if plan.decoded_bytes > budget else None


def _holdout(plan: FolderPlan, n: int, seed: int) -> tuple[list[Any], list[Any]]:
    """``--val-split N``: N training images (seeded, stratified) as the test split, as ``holdout`` does."""
    keep, hold = stratified_holdout(np.array([lab for _, lab in plan.train]), n, seed)
    return [plan.train[i] for i in keep], [plan.train[i] for i in hold]


def _stats_norm(images: FolderImages, spec: DataSpec, workers: int) -> Normalization:
    """Normalisation from the train split (a seeded sample of it above STATS_IMAGES images)."""
    n = len(images)
    if n > STATS_IMAGES:
        pick = np.sort(np.random.default_rng(spec.split_seed).choice(n, STATS_IMAGES, replace=False))
        images = FolderImages([images.items[i] for i in pick], images.size, images.mode, crop=images.crop)
    batches = DataLoader(images, batch_size=256, num_workers=workers, generator=quiet_generator())
    return Normalization.from_stats(stats_of_chunks(x for x, _ in batches), spec.normalize)


def streamed_splits(spec: DataSpec, rt: Runtime) -> RunData | None:
    """The train / evaluation loaders of a folder streamed from disk, or None when the data fits in memory."""
    plan = _folder_plan(spec)
    if plan is None:
        return None
    train, test = (
        _holdout(plan, spec.val_split, spec.split_seed) if spec.val_split else (plan.train, plan.test)
    )
    if len(train) < spec.batch_size:
        raise ConfigError(
            f"--batch-size {spec.batch_size} exceeds the {len(train)} training images of {spec.dataset}; "
            "use a smaller --batch-size"
        )
    workers = spec.workers if spec.workers is not None else min(MAX_WORKERS, os.cpu_count() or 1)
    images = {
        split: FolderImages(items, plan.size, plan.mode, crop=plan.crop)
        for split, items in (("train", train), ("test", test))
    }
    norm = _stats_norm(images["train"], spec, workers)
    augment = plan.augment if spec.augment == "auto" else spec.augment
    common: dict[str, Any] = dict(
        batch_size=spec.batch_size, norm=norm, device=rt.device, channels_last=rt.channels_last,
        rank=rt.rank, world_size=rt.world_size, workers=workers,
    )  # fmt: skip
    if rt.is_main and spec.announce:
        sys.stderr.write(
            f"reslab: {plan.name}: {len(train) + len(test):,} images, {format_bytes(plan.decoded_bytes)} "
            f"decoded, more than the {format_bytes(memory_budget(spec) or 0)} memory budget: streaming from "
            f"disk with {workers} worker(s)\n"
        )
    return RunData(
        train=StreamLoader(
            images["train"], shuffle=True, augment=augment, seed=spec.seed, drop_last=True, **common
        ),
        eval_train=StreamLoader(images["train"], **common),
        eval_test=StreamLoader(images["test"], **common),
        norm=norm,
        augment=augment,
        classes=list(plan.classes),
        image_shape=plan.shape,
        source=str(plan.root),
    )
