"""The in-memory dataset every source returns and the training engine consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

Augment = Literal["none", "crop_flip"]


@dataclass
class ArrayDataset:
    """A whole dataset as uint8 image tensors, ready to be moved to the training device once.

    Images are ``(N, C, H, W)`` uint8 in [0, 255]; labels are ``(N,)`` int64 in ``[0, num_classes)``.
    """

    name: str
    train_x: torch.Tensor  # (N_train, C, H, W) uint8
    train_y: torch.Tensor  # (N_train,) int64
    test_x: torch.Tensor  # (N_test, C, H, W) uint8
    test_y: torch.Tensor  # (N_test,) int64
    classes: list[str]
    augment: Augment = "none"  # default augmentation for this kind of data (crop_flip for CIFAR-like)
    source: str = ""  # where the data came from (path, URL or "embedded")
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)
