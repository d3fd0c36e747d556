"""Which way a dataset reaches the model: resident on the device (the default), or streamed from disk.

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
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from reslab.data.arrays import stratified_holdout
from reslab.data.folder import FolderPlan, plan_folder
from reslab.data.loader import Normalization
from reslab.data.stats import stats_of_chunks
from reslab.data.streaming import FolderImages, StreamLoader, quiet_generator
from reslab.engine.config import TrainConfig
from reslab.engine.runtime import Runtime
from reslab.errors import ConfigError
from reslab.resources import GiB, available_host_memory, format_bytes

BUDGET_FRACTION = 0.5  # of the free host memory: the model, the optimizer and the decoding need the rest
STATS_IMAGES = 10_000  # training images the statistics of a streamed split are computed on, at most
MAX_WORKERS = 8


def memory_budget(cfg: TrainConfig) -> int | None:
    """Bytes a decoded dataset may take before it streams; None: unknown (then it never streams)."""
    if cfg.data_memory_gib is not None:
        return int(cfg.data_memory_gib * GiB)
    free = available_host_memory()
    return None if free is None else int(free * BUDGET_FRACTION)


def _folder_plan(cfg: TrainConfig) -> FolderPlan | None:
    """The folder's plan when it must stream (a folder dataset larger than the budget), else None."""
    kind, _, arg = cfg.dataset.strip().partition(":")
    if kind.lower() != "folder" or not arg:
        return None
    budget = memory_budget(cfg)
    if budget is None:
        return None
    plan = plan_folder(arg, seed=cfg.split_seed, image_size=cfg.image_size, name=cfg.dataset.strip())
    return plan if plan.decoded_bytes > budget else None


def _holdout(plan: FolderPlan, n: int, seed: int) -> tuple[list[Any], list[Any]]:
    """``--val-split N``: N training images (seeded, stratified) as the test split, as ``holdout`` does."""
    keep, hold = stratified_holdout(np.array([lab for _, lab in plan.train]), n, seed)
    return [plan.train[i] for i in keep], [plan.train[i] for i in hold]


def _stats_norm(images: FolderImages, cfg: TrainConfig, workers: int) -> Normalization:
    """Normalisation from the train split (a seeded sample of it above STATS_IMAGES images)."""
    n = len(images)
    if n > STATS_IMAGES:
        pick = np.sort(np.random.default_rng(cfg.split_seed).choice(n, STATS_IMAGES, replace=False))
        images = FolderImages([images.items[i] for i in pick], images.size, images.mode, crop=images.crop)
    batches = DataLoader(images, batch_size=256, num_workers=workers, generator=quiet_generator())
    return Normalization.from_stats(stats_of_chunks(x for x, _ in batches), cfg.normalize)


def streamed_splits(cfg: TrainConfig, rt: Runtime) -> dict[str, Any] | None:
    """The train / evaluation loaders of a folder streamed from disk, or None when the data fits in memory.

    The keys are those of the training loop's data record (train, eval_train, eval_test, norm, ...).
    """
    plan = _folder_plan(cfg)
    if plan is None:
        return None
    train, test = _holdout(plan, cfg.val_split, cfg.split_seed) if cfg.val_split else (plan.train, plan.test)
    if len(train) < cfg.batch_size:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} exceeds the {len(train)} training images of {cfg.dataset}; "
            "use a smaller --batch-size"
        )
    workers = cfg.data_workers if cfg.data_workers is not None else min(MAX_WORKERS, os.cpu_count() or 1)
    images = {
        split: FolderImages(items, plan.size, plan.mode, crop=plan.crop)
        for split, items in (("train", train), ("test", test))
    }
    norm = _stats_norm(images["train"], cfg, workers)
    augment = plan.augment if cfg.augment == "auto" else cfg.augment
    common: dict[str, Any] = dict(
        batch_size=cfg.batch_size, norm=norm, device=rt.device, channels_last=rt.channels_last,
        rank=rt.rank, world_size=rt.world_size, workers=workers,
    )  # fmt: skip
    if rt.is_main and cfg.progress != "off":
        sys.stderr.write(
            f"reslab: {plan.name}: {len(train) + len(test):,} images, {format_bytes(plan.decoded_bytes)} "
            f"decoded, more than the {format_bytes(memory_budget(cfg) or 0)} memory budget: streaming from "
            f"disk with {workers} worker(s)\n"
        )
    return {
        "train": StreamLoader(
            images["train"], shuffle=True, augment=augment, seed=cfg.seed, drop_last=True, **common
        ),
        "eval_train": StreamLoader(images["train"], **common),
        "eval_test": StreamLoader(images["test"], **common),
        "norm": norm,
        "augment": augment,
        "classes": list(plan.classes),
        "image_shape": plan.shape,
        "source": str(plan.root),
    }
