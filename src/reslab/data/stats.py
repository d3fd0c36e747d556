"""Normalisation statistics, computed on the train split only (never on the test split).

All figures are on the [0, 1] scale (uint8 / 255): the loader normalises ``x / 255`` with them, either
per channel (mean/std) or by subtracting the per-pixel mean image, the paper's CIFAR preset (sec. 4.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from reslab.data.types import ArrayDataset

_CHUNK = 4096  # images per chunk: bounds the float64 working memory on 50k CIFAR images
_CHUNK_BYTES = 1 << 26  # float64 bytes per slice of a chunk: large images come a few at a time


@dataclass(frozen=True)
class DatasetStats:
    """Per-channel mean and std ``(C,)`` and the per-pixel mean image ``(C, H, W)``, float32 in [0, 1]."""

    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)
    pixel_mean: torch.Tensor  # (C, H, W)


def dataset_stats(ds: ArrayDataset) -> DatasetStats:
    """Statistics of ``ds.train_x`` (uint8 ``(N, C, H, W)``)."""
    x = ds.train_x
    return stats_of_chunks(x[i : i + _CHUNK] for i in range(0, x.shape[0], _CHUNK))


def _bounded(images: torch.Tensor) -> Iterable[torch.Tensor]:
    """``images`` in slices whose float64 copy stays near :data:`_CHUNK_BYTES` (large images: few at once)."""
    per_image = 8 * max(1, images[0].numel()) if images.shape[0] else 8
    step = max(1, _CHUNK_BYTES // per_image)
    return (images[i : i + step] for i in range(0, images.shape[0], step))


def stats_of_chunks(chunks: Iterable[torch.Tensor]) -> DatasetStats:
    """Statistics of images that come in chunks of uint8 ``(n, C, H, W)`` (a split streamed from disk)."""
    pix_sum: torch.Tensor | None = None
    sq_sum: torch.Tensor | None = None
    n = 0
    for images in chunks:
        for part in _bounded(images):
            chunk = part.to(torch.float64) / 255.0
            if pix_sum is None or sq_sum is None:  # the first chunk sizes both sums
                pix_sum = torch.zeros(chunk.shape[1:], dtype=torch.float64)  # (C, H, W)
                sq_sum = torch.zeros(chunk.shape[1], dtype=torch.float64)  # (C,)
            pix_sum += chunk.sum(0)
            sq_sum += chunk.square().sum((0, 2, 3))
            n += chunk.shape[0]
    if pix_sum is None or sq_sum is None:
        raise ValueError("no images to compute statistics of")
    _, h, w = pix_sum.shape
    pixel_mean = pix_sum / n
    mean = pixel_mean.mean((1, 2))
    var = (sq_sum / (n * h * w) - mean.square()).clamp_min(0.0)
    std = var.sqrt().clamp_min(1e-6)  # a constant channel must not divide by zero
    return DatasetStats(mean.float(), std.float(), pixel_mean.float())


def channel_mean_std(ds: ArrayDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(mean, std)`` of the train split, each ``(C,)`` in [0, 1]."""
    s = dataset_stats(ds)
    return s.mean, s.std


def pixel_mean(ds: ArrayDataset) -> torch.Tensor:
    """The per-pixel mean image ``(C, H, W)`` of the train split, in [0, 1]."""
    return dataset_stats(ds).pixel_mean
