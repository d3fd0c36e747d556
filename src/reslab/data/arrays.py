"""Small numpy helpers shared by the sources: building an ArrayDataset and stratified splits."""

from __future__ import annotations

import numpy as np
import torch

from reslab.data.types import ArrayDataset, Augment
from reslab.errors import ConfigError, DataError


def to_dataset(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    classes: list[str],
    *,
    augment: Augment,
    source: str,
    meta: dict[str, str] | None = None,
) -> ArrayDataset:
    """Wrap ``(images (N,C,H,W) uint8, labels (N,))`` pairs as an :class:`ArrayDataset` (checked)."""
    parts = []
    for split, (x, y) in (("train", train), ("test", test)):
        if x.dtype != np.uint8 or x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0] or 0 in x.shape[1:]:
            raise DataError(
                f"{name} {split} split from {source} has images {x.shape} {x.dtype} and labels {y.shape}; "
                "the files are corrupt, replace them"
            )
        if y.size and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataError(
                f"{name} {split} split from {source} has labels outside 0..{len(classes) - 1}; "
                "the files are corrupt, replace them"
            )
        # A copy only where needed (frombuffer/h5py arrays can be read-only, torch wants writable C memory):
        # the builders make their images once, so a second full copy would double the peak for nothing.
        parts.append(torch.from_numpy(np.require(x, dtype=np.uint8, requirements=["C", "W"])))
        parts.append(torch.from_numpy(np.array(y, dtype=np.int64)))
    if parts[0].shape[0] == 0:
        raise DataError(f"{name} from {source} has no training images; check the files")
    if parts[0].shape[1:] != parts[2].shape[1:] and parts[2].shape[0] > 0:
        raise DataError(
            f"{name} from {source}: train images are {tuple(parts[0].shape[1:])} but test images are "
            f"{tuple(parts[2].shape[1:])}; the files do not belong together"
        )
    return ArrayDataset(
        name=name,
        train_x=parts[0],
        train_y=parts[1],
        test_x=parts[2],
        test_y=parts[3],
        classes=list(classes),
        augment=augment,
        source=source,
        meta=dict(meta or {}),
    )


def stratified_holdout(labels: np.ndarray, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``0..len(labels)-1`` into ``(keep, holdout)`` with ``len(holdout) == n_holdout``.

    Each class gives the holdout a share proportional to its size (to within one image): the indices are
    shuffled with ``seed``, ranked within their class, and the ``n_holdout`` lowest relative ranks are
    held out. Both outputs are sorted.
    """
    n = len(labels)
    if not 0 < n_holdout < n:
        raise ConfigError(f"cannot hold out {n_holdout} of {n} training images; pick 0 < val_split < {n}")
    labels = np.asarray(labels)
    perm = np.random.default_rng(seed).permutation(n)
    lab = labels[perm]
    rank = np.zeros(n, dtype=np.float64)
    for c in np.unique(lab):
        where = np.flatnonzero(lab == c)
        rank[where] = (np.arange(len(where)) + 0.5) / len(where)  # 1. relative position within class
    order = np.argsort(rank, kind="stable")  # 2. ties keep the shuffled order
    hold = np.sort(perm[order[:n_holdout]])
    keep = np.setdiff1d(np.arange(n), hold)
    return keep, hold


def stratified_fraction(labels: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``round(frac * count)`` images of every class (none from a class with one image)."""
    rng = np.random.default_rng(seed)
    keep, hold = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = round(frac * len(idx)) if len(idx) > 1 else 0
        k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
        hold.append(idx[:k])
        keep.append(idx[k:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(hold))
