"""The set-up phases of a training run: the data on the device, the model (after the memory check), and the
run directory (created only once everything else was accepted)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reslab.data.loader import DeviceLoader, Normalization
from reslab.engine import distributed, rundir
from reslab.engine.config import TrainConfig
from reslab.engine.memory import (
    MemoryEstimate,
    available_memory,
    check_fits,
    estimate_training_memory,
    return_freed_memory_promptly,
)
from reslab.engine.runtime import Runtime
from reslab.errors import ConfigError

TIGHT = 0.5  # a CPU run whose estimate exceeds this share of free memory trades speed for a smaller peak


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


def load_data(cfg: TrainConfig, rt: Runtime) -> RunData:
    """The dataset as uint8 tensors on the device (or streamed from disk, see :mod:`reslab.engine.feed`);
    statistics from the train split only."""
    from reslab.data import load_dataset
    from reslab.engine.feed import streamed_splits

    streamed = streamed_splits(cfg, rt)  # a folder too large for the memory budget: read from disk
    if streamed is not None:
        return RunData(**streamed)
    ds = load_dataset(
        cfg.dataset, cfg.data_dir, download=cfg.download, seed=cfg.split_seed, val_split=cfg.val_split,
        image_size=cfg.image_size,
    )  # fmt: skip
    if ds.train_x.shape[0] < cfg.batch_size:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} exceeds the {ds.train_x.shape[0]} training images of "
            f"{cfg.dataset}; use a smaller --batch-size"
        )
    norm = Normalization.from_dataset(ds, cfg.normalize)
    augment = ds.augment if cfg.augment == "auto" else cfg.augment
    common: dict[str, Any] = dict(
        batch_size=cfg.batch_size, norm=norm, device=rt.device, channels_last=rt.channels_last
    )
    shard = dict(rank=rt.rank, world_size=rt.world_size)
    train = DeviceLoader(
        ds.train_x,
        ds.train_y,
        shuffle=True,
        augment=augment,
        seed=cfg.seed,
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


def build_model_for(cfg: TrainConfig, rt: Runtime, data: RunData) -> tuple[nn.Module, MemoryEstimate | None]:
    """The model on the device, after refusing a batch that cannot fit (a CPU run past RAM dies silently)."""
    from reslab.models import build_model

    def build() -> nn.Module:
        kwargs = {"activation_checkpointing": cfg.activation_checkpointing, **cfg.model_kwargs}
        return build_model(cfg.model, num_classes=len(data.classes), input_shape=data.image_shape, **kwargs)

    model = build()
    per_rank = max(cfg.batch_size // rt.world_size, 1)
    mem = estimate_training_memory(build, data.image_shape, per_rank, amp_dtype=rt.amp_dtype)
    free = available_memory(rt.device)
    if rt.device.type == "cpu" and mem is not None and free is not None and mem.total > TIGHT * free:
        # Only where memory is short: it halves peak RSS but costs page faults (resnet1202, batch 64, one
        # thread: 14.7 s per step with it, 8.55 s without), so a run with room to spare does not pay.
        return_freed_memory_promptly()
    quiet = None if rt.is_main else (lambda _: None)
    check_fits(
        mem, free, batch_size=cfg.batch_size, device=rt.device,
        checkpointing=cfg.activation_checkpointing, warn=quiet,
    )  # fmt: skip
    model = model.to(
        rt.device, memory_format=torch.channels_last if rt.channels_last else torch.preserve_format
    )
    if rt.world_size > 1:  # SyncBatchNorm swap (--sync-bn) before the optimizer sees the parameters
        model = distributed.prepare_model(model, rt, sync_bn=cfg.sync_bn)
    return model, mem


def open_run_dir(cfg: TrainConfig, *, is_main: bool = True) -> tuple[Path, None]:
    """The run directory: the resumed one, or a new one (refused when it holds a run, unless overwrite)."""
    if cfg.resume is not None:
        run = Path(cfg.resume).expanduser()
        if is_main:
            rundir.check_writable(run)
        return run, None
    out = Path(cfg.out).expanduser() if cfg.out else rundir.default_run_dir(cfg.model, cfg.dataset)
    return (rundir.prepare_new_run_dir(out, overwrite=cfg.overwrite) if is_main else out), None
