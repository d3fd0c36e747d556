"""Data passed to ``train(data=..., test_data=...)`` as Python objects: arrays, tensors or a torch Dataset.

:class:`PassedData` holds what was passed and gives the engine one of two forms:

- **resident** (:meth:`PassedData.resident`): the :class:`~reslab.data.ArrayDataset` of
  :func:`~reslab.data.in_memory_dataset`, converted once and kept (the runs of a sweep share it). Arrays and
  tensors are always resident: they are in memory already.
- **streamed** (:meth:`PassedData.streamed`): a map-style ``torch.utils.data.Dataset`` whose images (as
  uint8, both splits) exceed the run's memory budget is not stacked: DataLoader workers read it item by
  item, as a folder too large for memory streams from disk. Each item is converted to uint8 ``(C, H, W)`` by
  the rule of :mod:`reslab.data.memory`, decided on a seeded sample of the training split (values beyond the
  sample's range are clipped). Labels come from the Dataset's ``.targets`` when it has them, else from one
  pass over it. reslab augments batches itself: give a Dataset without random transforms, or a resumed run
  is no longer exact.

A run records ``dataset = "memory:<name>"`` and a fingerprint of the data (SHA-256 of the uint8 images and
labels; for a streamed Dataset, of its labels and shape) in config.json: resuming it needs the same data
passed again, and other data is refused.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reslab.data.arrays import stratified_fraction
from reslab.data.memory import (
    TEST_FRACTION,
    Layout,
    Warn,
    class_names,
    dataset_classes,
    in_memory_dataset,
    is_dataset,
    item_image,
    item_label,
    labels_array,
    pixel_map,
)
from reslab.data.streaming import Images, quiet_generator
from reslab.data.types import ArrayDataset, Augment
from reslab.errors import ConfigError, DataError, warn_line

PREFIX = "memory:"
RULE_SAMPLE = 256  # training items whose pixel range decides a streamed Dataset's conversion to uint8


def is_passed(dataset: str) -> bool:
    """True for ``memory:NAME``: a dataset that only exists as the objects passed to ``train``."""
    return dataset.strip().lower().startswith(PREFIX)


class PassedData:
    """The objects passed as ``data=`` / ``test_data=`` (see the module's docstring).

    Args:
        train: ``(images, labels)`` (numpy arrays or torch tensors), a ``torch.utils.data.Dataset`` of
            ``(image, label)`` pairs, or an :class:`~reslab.data.ArrayDataset` (its own test split then).
        test: the same for the test split; None holds out a stratified 20% of ``train`` (seeded).
        name: the dataset's name in the run (``memory:<name>``); default ``arrays``, a Dataset's class name,
            or an ArrayDataset's own name.
    """

    def __init__(
        self,
        train: Any,
        test: Any = None,
        *,
        name: str | None = None,
        classes: Sequence[str] | None = None,
        layout: Layout = "auto",
    ) -> None:
        if isinstance(train, ArrayDataset) and test is not None:
            raise ConfigError("an ArrayDataset holds its own test split; pass test_data=None")
        self.train, self.test = train, test
        self.name = _plain(name or _default_name(train))
        self.classes, self.layout = (list(classes) if classes is not None else None), layout
        self._resident: dict[int, ArrayDataset] = {}  # by seed: the held-out 20% depends on it
        self._prints: dict[int, str] = {}

    def renamed(self, name: str) -> PassedData:
        """The same data (and its converted copies) under another name."""
        if name == self.name:
            return self
        other = copy.copy(self)  # shares the converted copies
        other.name = _plain(name)
        return other

    @property
    def dataset(self) -> str:
        """What config.json records as the run's dataset."""
        return PREFIX + self.name

    def decoded_bytes(self) -> int | None:
        """Bytes of both splits as uint8 images, for a map-style Dataset (from its first image's shape);
        None for arrays, tensors and datasets without a length (they are kept resident)."""
        if not (is_dataset(self.train) and _sized(self.train)) or len(self.train) == 0:
            return None
        if self.test is not None and not (is_dataset(self.test) and _sized(self.test)):
            return None
        c, h, w = item_image(self.train[0][0], "train", 0).shape
        return (len(self.train) + (len(self.test) if self.test is not None else 0)) * c * h * w

    def fingerprint(self, *, seed: int = 0, budget: int | None = None) -> str:
        """The data's fingerprint (see the module's doc): of the resident data, or, for a Dataset larger
        than ``budget`` bytes, of its labels and shape."""
        size = self.decoded_bytes()
        if size is not None and budget is not None and size > budget:
            return self.streamed(seed=seed).fingerprint
        if seed not in self._prints:
            self._prints[seed] = fingerprint(self.resident(seed=seed))
        return self._prints[seed]

    def resident(self, *, seed: int = 0, warn: Warn | None = None) -> ArrayDataset:
        """The data as an ArrayDataset, converted once per ``seed`` (the held-out 20% depends on it)."""
        if isinstance(self.train, ArrayDataset):
            return self.train
        if seed not in self._resident:
            self._resident[seed] = in_memory_dataset(
                self.train, self.test, classes=self.classes, name=self.dataset, layout=self.layout, seed=seed,
                warn=warn,
            )  # fmt: skip
        return self._resident[seed]

    def streamed(self, *, seed: int = 0, workers: int = 0, warn: Warn | None = None) -> StreamedData:
        """The train and test splits as :class:`DatasetImages`, read item by item (see the module's doc)."""
        say = warn or warn_line
        train_labels = _dataset_labels(self.train, "train", workers)
        if self.test is None:
            keep, hold = stratified_fraction(train_labels, TEST_FRACTION, seed)
            test_source, test_index, test_labels = self.train, hold, train_labels[hold]
            train_index, train_labels = keep, train_labels[keep]
        else:
            test_labels = _dataset_labels(self.test, "test", workers)
            test_source, test_index = self.test, np.arange(len(test_labels))
            train_index = np.arange(len(train_labels))
        names = self.classes if self.classes is not None else dataset_classes(self.train)
        names = class_names(names, train_labels, test_labels, say)
        c, h, w = item_image(self.train[int(train_index[0])][0], "train", 0).shape  # item_image: always CHW
        shape = (int(c), int(h), int(w))
        rule = _pixel_rule(self.train, train_index, seed, say)
        train = DatasetImages(self.train, train_index, train_labels, shape, rule, "train")
        test = DatasetImages(test_source, test_index, test_labels, shape, rule, "test")
        digest = hashlib.sha256(repr((shape, len(train), len(test))).encode())
        for labels in (train_labels, test_labels):
            digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
        augment: Augment = "crop_flip" if shape[0] == 3 else "none"
        return StreamedData(train, test, names, augment, f"labels-sha256:{digest.hexdigest()}")


class StreamedData:
    """A streamed Dataset's two splits, class names, default augmentation and fingerprint."""

    def __init__(
        self, train: Images, test: Images, classes: list[str], augment: Augment, fingerprint: str
    ) -> None:
        self.train, self.test, self.classes = train, test, classes
        self.augment, self.fingerprint = augment, fingerprint

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.train.shape


class DatasetImages(Images):
    """Item ``i``: the source Dataset's item ``indices[i]`` as ``(uint8 (C, H, W), label)``.

    ``rule`` is ``(scale, shift)`` for float pixels (``round(x * scale + shift)``, clipped to 0..255), or
    None when the items are integers in 0..255 already.
    """

    def __init__(
        self,
        source: Any,
        indices: np.ndarray,
        labels: np.ndarray,
        shape: tuple[int, int, int],
        rule: tuple[float, float] | None,
        split: str,
    ) -> None:
        self.source, self.indices, self._labels = source, np.asarray(indices), np.asarray(labels)
        self.rule, self.split, self._shape = rule, split, shape

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return self._shape

    @property
    def labels(self) -> np.ndarray:
        """(N,) labels, in order."""
        return self._labels

    def subset(self, positions: np.ndarray) -> DatasetImages:
        """The items at ``positions`` of this one (a held-out split)."""
        pos = np.asarray(positions)
        return DatasetImages(
            self.source, self.indices[pos], self._labels[pos], self.shape, self.rule, self.split
        )

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        index = int(self.indices[i])
        image = item_image(self.source[index][0], self.split, index)  # (C, H, W), its own dtype
        if image.shape != self.shape:
            raise DataError(
                f"{self.split} Dataset image {index} is {image.shape} but image 0 is {self.shape}; resize "
                "them to one size (e.g. torchvision's Resize) first"
            )
        if image.dtype != np.uint8:
            x = image.astype(np.float64)
            if self.rule is not None:
                x = np.round(x * self.rule[0] + self.rule[1])
            image = np.clip(x, 0, 255).astype(np.uint8)
        return torch.from_numpy(np.ascontiguousarray(image)), int(self._labels[i])


def passed_data(data: Any, test_data: Any = None) -> PassedData | None:
    """``data=`` / ``test_data=`` of ``train``, ``compare``, ``ablate`` and the studies as one PassedData
    (None when neither is given; a PassedData passes through)."""
    if data is None:
        if test_data is not None:
            raise ConfigError("test_data= needs the training data too; pass data=(x_train, y_train)")
        return None
    if isinstance(data, PassedData):
        if test_data is not None:
            raise ConfigError("a PassedData holds its own test split; pass test_data=None")
        return data
    return PassedData(data, test_data)


def fingerprint(ds: ArrayDataset) -> str:
    """SHA-256 of a dataset's uint8 images and labels, both splits: the same data, or not."""
    digest = hashlib.sha256()
    for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
        digest.update(repr(tuple(t.shape)).encode())
        digest.update(t.contiguous().numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def _plain(name: str) -> str:
    """A data name fit for ``memory:<name>`` and a run directory's name."""
    if not name or any(c in name for c in "/\\:\n"):
        raise ConfigError(f"data name {name!r} is not a plain name; pass e.g. dataset='memory:digits'")
    return name


def _default_name(train: Any) -> str:
    if isinstance(train, ArrayDataset):
        return train.name.removeprefix(PREFIX)
    return type(train).__name__ if is_dataset(train) else "arrays"


def _sized(ds: Any) -> bool:
    try:
        len(ds)
    except TypeError:
        return False
    return True


class _Labels(Dataset[int]):
    """The labels of a Dataset, read item by item (its images decoded and dropped)."""

    def __init__(self, ds: Any, split: str) -> None:
        self.ds, self.split = ds, split

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Any:
        item = self.ds[i]
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise DataError(f"{self.split} Dataset item {i} is not an (image, label) pair; make it yield two")
        return item_label(item[1], self.split, i)


def _dataset_labels(ds: Any, split: str, workers: int) -> np.ndarray:
    """(N,) int64 class indices: the Dataset's ``.targets`` when it has one per item, else one pass."""
    if not (is_dataset(ds) and _sized(ds)):
        raise DataError(f"{split} data must be a map-style torch Dataset (with a length) to stream")
    targets = getattr(ds, "targets", None)
    if targets is not None and _sized(targets) and len(targets) == len(ds):
        return labels_array(
            targets if isinstance(targets, np.ndarray | torch.Tensor) else np.array(targets), split
        )
    batches = DataLoader(_Labels(ds, split), batch_size=256, num_workers=workers, generator=quiet_generator())
    values = [v for b in batches for v in (b.tolist() if isinstance(b, torch.Tensor) else b)]
    return labels_array(np.array(values), split)


def _pixel_rule(ds: Any, indices: np.ndarray, seed: int, warn: Warn) -> tuple[float, float] | None:
    """How a streamed Dataset's pixels become uint8: decided on a seeded sample of its training items."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(indices), min(RULE_SAMPLE, len(indices)), replace=False)
    lo, hi, kinds = np.inf, -np.inf, set()
    for p in pick:
        image = item_image(ds[int(indices[p])][0], "train", int(indices[p]))
        kinds.add(image.dtype.kind)
        if image.dtype.kind == "f" and not np.isfinite(image).all():
            raise DataError(f"train Dataset image {int(indices[p])} holds NaN or inf values; fix or drop it")
        lo, hi = min(lo, float(image.min())), max(hi, float(image.max()))
    if not kinds <= set("uif"):
        raise DataError(
            f"train Dataset images are of kind {sorted(kinds)}; yield uint8, integer or float images"
        )
    if "f" not in kinds:
        if lo < 0 or hi > 255:
            raise DataError("integer images must lie in 0..255; scale them to 0..255 or pass floats")
        return None
    return pixel_map(lo, hi, warn)
