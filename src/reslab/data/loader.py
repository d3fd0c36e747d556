"""Device-resident batches: the whole split is one uint8 tensor on the training device (airbench style).

Per batch, on the device: gather the batch, optionally pad-4 random-crop + horizontal flip (one gather for
the whole batch, no per-sample Python), then normalise with statistics computed once on the train split.
Epoch ``e``'s order and augmentation depend only on ``(seed, e)``, so a resumed run sees exactly the batches
an uninterrupted one would, and under DDP every rank derives the same plan and takes a disjoint slice of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from reslab.data.stats import DatasetStats, dataset_stats
from reslab.data.types import ArrayDataset

NormalizeMode = Literal["channel", "pixel"]
Augmentation = Literal["none", "crop", "crop_flip"]  # a loader's; a dataset's default is one of the first two


@dataclass
class Normalization:
    """``x_norm = (x / 255 - mean) / std``; mean is (C, 1, 1) per channel or (C, H, W) per pixel."""

    mode: NormalizeMode
    mean: torch.Tensor  # (C, 1, 1) or (C, H, W), float32, in [0, 1] units
    std: torch.Tensor  # (C, 1, 1), float32

    @classmethod
    def from_dataset(cls, ds: ArrayDataset, mode: NormalizeMode = "channel") -> Normalization:
        """Statistics of the train split only (never the test split)."""
        return cls.from_stats(dataset_stats(ds), mode)

    @classmethod
    def from_stats(cls, stats: DatasetStats, mode: NormalizeMode = "channel") -> Normalization:
        """From the train split's statistics (see :func:`reslab.data.stats.dataset_stats`)."""
        c = stats.mean.shape[0]
        if mode == "pixel":
            # He et al. 2015, Sec. 4.2: "the per-pixel mean subtracted", and no scaling.
            return cls("pixel", stats.pixel_mean, torch.ones(c, 1, 1))
        return cls("channel", stats.mean.view(c, 1, 1), stats.std.view(c, 1, 1))

    def scale_shift(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) so that ``x_uint8 * scale + shift`` is the normalised image: one fused pass."""
        scale = 1.0 / (255.0 * self.std)
        return scale.to(device), (-self.mean / self.std).to(device)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise uint8 (N, C, H, W) images on their own device; used by predict and tests."""
        scale, shift = self.scale_shift(images.device)
        return images.float() * scale + shift

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        return cls(data["mode"], torch.tensor(data["mean"], dtype=torch.float32), torch.tensor(data["std"]))


def crop_flip(
    images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, pad: int
) -> torch.Tensor:
    """Pad-``pad`` random crop + horizontal flip of a whole batch in one gather.

    images (B, C, H, W); dy, dx (B,) integer offsets in [0, 2*pad]; flip (B,) bool. Offset ``pad`` with no
    flip returns the images unchanged. Returns (B, C, H, W) with channels_last strides (a permuted view).
    """
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C), zeros = black
    ar_h = torch.arange(h, device=images.device)
    ar_w = torch.arange(w, device=images.device)
    rows = dy.view(b, 1) + ar_h  # (B, H)
    # A flipped crop reads its columns right to left: output column j <- crop column W-1-j.
    cols = dx.view(b, 1) + torch.where(flip.view(b, 1), (w - 1) - ar_w, ar_w)  # (B, W)
    batch = torch.arange(b, device=images.device).view(b, 1, 1)
    out = padded[batch, rows.view(b, h, 1), cols.view(b, 1, w)]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def epoch_plan(
    n: int, *, seed: int, epoch: int, shuffle: bool, pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(order, dy, dx, flip) of one epoch, each (N,) on the CPU: a function of (seed, epoch) only.

    Every loader (device-resident or streamed from disk), device type and rank derives the same plan.
    """
    if not shuffle:
        order = torch.arange(n)
        zeros = torch.full((n,), pad, dtype=torch.int64)
        return order, zeros, zeros.clone(), order.bool()
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))  # CPU: same on every device
    order = torch.randperm(n, generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.randint(0, 2, (n,), generator=gen).bool()
    return order, dy, dx, flip


def shard_slice(step: int, n: int, batch_size: int, rank: int, world_size: int) -> slice:
    """This rank's slice of the epoch order at ``step``; a short last batch is split evenly over ranks."""
    start = step * batch_size
    size = min(batch_size, n - start)
    if size == batch_size:
        local = batch_size // world_size
        lo = start + rank * local
        return slice(lo, lo + local)
    base, extra = divmod(size, world_size)
    lo = start + rank * base + min(rank, extra)
    return slice(lo, lo + base + (1 if rank < extra else 0))


def augment_batch(
    x: torch.Tensor, augment: Augmentation, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, pad: int
) -> torch.Tensor:
    """A batch of uint8 (b, C, H, W) with the epoch plan's crop (and flip) applied, on its device."""
    if augment == "crop_flip":
        return crop_flip(x, dy, dx, flip, pad)
    if augment == "crop":  # shifts only: a mirrored digit is another symbol
        return crop_flip(x, dy, dx, torch.zeros_like(flip), pad)
    return x


class Batching:
    """What the resident and the streamed loaders share: the epoch's plan, its sharding over ranks, the
    normalisation on the device, and the number of steps per epoch."""

    n: int
    batch_size: int
    drop_last: bool

    def _init_batching(
        self,
        n: int,
        *,
        batch_size: int,
        norm: Normalization,
        device: torch.device | str,
        shuffle: bool,
        augment: Augmentation,
        seed: int,
        drop_last: bool,
        rank: int,
        world_size: int,
        channels_last: bool,
        pad: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if batch_size <= 0 or batch_size % world_size:
            raise ValueError(
                f"batch size {batch_size} must be a positive multiple of world size {world_size}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.device = torch.device(device)
        self.n = n
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.shuffle, self.augment, self.seed, self.pad = shuffle, augment, seed, pad
        self.drop_last, self.dtype = drop_last, dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.norm = norm
        self._scale, self._shift = norm.scale_shift(self.device)  # (C,1,1)|(C,H,W) each
        self._epoch = 0

    def __len__(self) -> int:
        """Steps per epoch (the same on every rank)."""
        steps = self.n / self.batch_size
        return math.floor(steps) if self.drop_last else math.ceil(steps)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (b, C, H, W) on the device -> normalised, in the run's dtype and memory format."""
        return (x.float() * self._scale + self._shift).to(self.dtype, memory_format=self.memory_format)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch; successive ``iter()`` calls walk successive epochs (``set_epoch`` to jump)."""
        epoch = self._epoch
        self._epoch += 1
        return self.epoch(epoch)


class DeviceLoader(Batching):
    """Batches of one split, resident on ``device``. Yields ``(x float (B, C, H, W), y int64 (B,))``.

    ``batch_size`` is the global batch; with ``world_size`` ranks each rank gets ``batch_size // world_size``
    images per step: at step s, rank r takes positions ``[s*G + r*b, s*G + (r+1)*b)`` of the epoch's order, so
    the union over ranks is exactly the single-process batch (shards are disjoint and cover the epoch).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        norm: Normalization,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        augment: Augmentation = "none",
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        pad: int = 4,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self._init_batching(
            int(images.shape[0]), batch_size=batch_size, norm=norm, device=device, shuffle=shuffle,
            augment=augment, seed=seed, drop_last=drop_last, rank=rank, world_size=world_size,
            channels_last=channels_last, pad=pad, dtype=dtype,
        )  # fmt: skip
        self.images = images.to(self.device)  # (N, C, H, W) uint8, moved once
        self.labels = labels.to(self.device, torch.int64)  # (N,)
        self.local_batch = batch_size // world_size

    def plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Epoch ``epoch``'s (order, dy, dx, flip), each (N,) on the device; a function of (seed, epoch)."""
        plan = epoch_plan(self.n, seed=self.seed, epoch=epoch, shuffle=self.shuffle, pad=self.pad)
        order, dy, dx, flip = (t.to(self.device, non_blocking=True) for t in plan)
        return order, dy, dx, flip

    def _positions(self, step: int) -> slice:
        return shard_slice(step, self.n, self.batch_size, self.rank, self.world_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of epoch ``epoch`` from step ``start`` on (resume mid-epoch)."""
        order, dy, dx, flip = self.plan(epoch)
        for step in range(start, len(self)):
            pos = self._positions(step)
            idx = order[pos]  # (b,)
            x = augment_batch(self.images[idx], self.augment, dy[pos], dx[pos], flip[pos], self.pad)
            yield self._normalise(x), self.labels[idx]
