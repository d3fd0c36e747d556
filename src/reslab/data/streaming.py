"""Image folders streamed from disk: batches decoded by DataLoader workers instead of one resident tensor.

For a ``folder:PATH`` whose decoded size exceeds the memory budget. :class:`StreamLoader` has the surface of
:class:`~reslab.data.loader.DeviceLoader` (``len``, ``epoch(e, start)``, iteration) and the same batches:

- the epoch's order, crops and flips come from the same :func:`~reslab.data.loader.epoch_plan` of
  (seed, epoch), and each rank takes the same :func:`~reslab.data.loader.shard_slice` of it;
- the workers only decode (the one image reader, :func:`~reslab.data.images.read_image`, so a streamed image
  has the pixels the resident path would hold); crop, flip and normalisation run on the training device as
  whole-batch ops, exactly as in the resident path.

So a streamed run sees the batches a resident run of the same folder would (bit-identical pixels, same
order), and a resumed run starts mid-epoch at the batch it stopped at: resume stays exact. Only the speed
differs: decoding runs in ``workers`` processes ahead of the step (``prefetch`` batches each).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from reslab.data.images import read_image
from reslab.data.loader import Augmentation, Batching, Normalization, augment_batch, epoch_plan, shard_slice


def quiet_generator() -> torch.Generator:
    """A DataLoader's own generator: drawing its workers' seeds from it leaves the global RNG alone, so a
    streamed run initialises its model exactly as a resident run (the workers draw no random numbers)."""
    return torch.Generator().manual_seed(0)


class Images(Dataset[tuple[torch.Tensor, int]], ABC):
    """What a StreamLoader reads: item i as ``(uint8 (C, H, W), label)``, the shape, the labels, subsets
    (:class:`FolderImages`, and :class:`reslab.data.passed.DatasetImages` for a torch Dataset). A Dataset,
    so a DataLoader's workers can decode it."""

    @abstractmethod
    def __len__(self) -> int: ...
    @abstractmethod
    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]: ...
    @property
    @abstractmethod
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every decoded image."""

    @property
    @abstractmethod
    def labels(self) -> np.ndarray:
        """(N,) int64 labels, in order: what a held-out split is stratified by."""

    @abstractmethod
    def subset(self, positions: np.ndarray) -> Images:
        """The items at ``positions`` (a held-out split, a sample for the statistics)."""


class FolderImages(Images):
    """Item i of a list of (file, label): ``(uint8 (C, H, W), label)``, decoded when asked for."""

    def __init__(
        self, items: Sequence[tuple[Path, int]], size: tuple[int, int], mode: str, *, crop: bool
    ) -> None:
        self.items, self.size, self.mode, self.crop = list(items), size, mode, crop

    def __len__(self) -> int:
        return len(self.items)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every decoded image."""
        return (1 if self.mode == "L" else 3, self.size[1], self.size[0])

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 labels, in order: what a held-out split is stratified by."""
        return np.array([lab for _, lab in self.items], dtype=np.int64)

    def subset(self, positions: Sequence[int] | np.ndarray) -> FolderImages:
        """The items at ``positions`` (a held-out split, a sample for the statistics)."""
        return FolderImages([self.items[int(i)] for i in positions], self.size, self.mode, crop=self.crop)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        arr = read_image(path, mode=self.mode, size=self.size, crop=self.crop)  # (H, W) or (H, W, 3)
        chw = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)
        return torch.from_numpy(chw.copy()), label


class _Batches(Sampler[list[int]]):
    """The batches of the coming pass, set before each pass (the sampler runs in the main process)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StreamLoader(Batching):
    """Batches of a split decoded from disk. Yields ``(x float (B, C, H, W), y int64 (B,))`` on ``device``.

    Arguments as :class:`~reslab.data.loader.DeviceLoader`, with the images as :class:`Images` (a folder's or
    a torch Dataset's);
    ``workers`` decoding processes (0: decode in this process), each ``prefetch`` batches ahead.
    """

    def __init__(
        self,
        images: Images,
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
        workers: int = 0,
        prefetch: int = 2,
        pad: int = 4,
    ) -> None:
        self._init_batching(
            len(images), batch_size=batch_size, norm=norm, device=device, shuffle=shuffle, augment=augment,
            seed=seed, drop_last=drop_last, rank=rank, world_size=world_size, channels_last=channels_last,
            pad=pad,
        )  # fmt: skip
        self.images = images
        self._sampler = _Batches()
        # A training split keeps its workers between epochs; an evaluation pass starts them afresh, so idle
        # evaluation workers hold no memory while the model trains.
        self._loader = DataLoader(
            images,
            batch_sampler=self._sampler,
            num_workers=workers,
            persistent_workers=workers > 0 and shuffle,
            prefetch_factor=prefetch if workers > 0 else None,
            pin_memory=self.device.type == "cuda",
            generator=quiet_generator(),
        )

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of epoch ``epoch`` from step ``start`` on: the DeviceLoader's batches, read from disk."""
        plan = epoch_plan(self.n, seed=self.seed, epoch=epoch, shuffle=self.shuffle, pad=self.pad)
        order, dy, dx, flip = plan  # each (N,) on the CPU
        steps = range(start, len(self))
        slices = [shard_slice(s, self.n, self.batch_size, self.rank, self.world_size) for s in steps]
        batches = [order[pos].tolist() for pos in slices]
        self._sampler.batches = [b for b in batches if b]  # a rank's empty share of a tiny last batch
        decoded = iter(self._loader)
        for pos, batch in zip(slices, batches):
            if not batch:
                empty = torch.empty((0, *self.images.shape), device=self.device)
                yield empty, torch.empty(0, dtype=torch.int64, device=self.device)
                continue
            x, y = next(decoded)
            x = x.to(self.device, non_blocking=True)  # (b, C, H, W) uint8
            dy_b, dx_b, flip_b = (t[pos].to(self.device) for t in (dy, dx, flip))
            x = augment_batch(x, self.augment, dy_b, dx_b, flip_b, self.pad)
            yield self._normalise(x), y.to(self.device, non_blocking=True)
