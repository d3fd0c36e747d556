"""``in_memory_dataset``: numpy arrays, torch tensors and torch Datasets in every layout and dtype become the
same uint8 (N, C, H, W) record as load_dataset's; bad input is one DataError line naming the fix."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from reslab.data import ArrayDataset, in_memory_dataset
from reslab.data.loader import DeviceLoader, Normalization
from reslab.errors import DataError

RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, (40, 3, 8, 6), dtype=np.uint8)  # (N, C, H, W): 8 high, 6 wide
Y = np.arange(40) % 4


def quiet(**kw):  # collect the warnings instead of printing them
    notes: list[str] = []
    return notes, {"warn": notes.append, **kw}


def check(ds: ArrayDataset, n_train: int = 40, shape=(3, 8, 6), classes=4) -> None:
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape == (n_train, *shape)
    assert ds.train_y.dtype == torch.int64 and ds.num_classes == classes
    assert ds.test_x.shape[1:] == ds.train_x.shape[1:]


@pytest.mark.parametrize(
    "images",
    [X, X.transpose(0, 2, 3, 1), torch.from_numpy(X), torch.from_numpy(X).permute(0, 2, 3, 1)],
    ids=["numpy NCHW", "numpy NHWC", "tensor NCHW", "tensor NHWC"],
)
def test_layouts_give_the_same_pixels(images) -> None:
    notes, kw = quiet()
    ds = in_memory_dataset((images, Y), (images[:8], Y[:8]), **kw)
    check(ds)
    assert torch.equal(ds.train_x, torch.from_numpy(X)) and torch.equal(ds.test_x, torch.from_numpy(X[:8]))
    assert ds.classes == ["0", "1", "2", "3"] and ds.augment == "crop_flip" and not notes


def test_grey_images_and_class_names_and_a_held_out_split() -> None:
    grey = X[:, 0]  # (N, H, W)
    notes, kw = quiet(classes=["a", "b", "c", "d", "e"], name="mine")
    ds = in_memory_dataset((grey, torch.from_numpy(Y)[:, None]), **kw)  # labels (N, 1); no test split
    assert ds.train_x.shape[1:] == (1, 8, 6) and ds.augment == "none" and ds.name == "mine"
    assert ds.classes == ["a", "b", "c", "d", "e"] and len(ds.train_x) + len(ds.test_x) == 40
    assert sorted(ds.test_y.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]  # a stratified 20%
    assert "held out" in ds.meta["split"] and notes == ["1 class(es) have no training image: e"]


def test_float_images() -> None:
    unit = X.astype(np.float32) / 255  # ToTensor's range, on the 1/255 grid: stored exactly, silently
    notes, kw = quiet()
    ds = in_memory_dataset((unit, Y), (unit[:4], Y[:4]), **kw)
    assert torch.equal(ds.train_x, torch.from_numpy(X)) and not notes
    pixels = X.astype(np.float64)  # floats in 0..255: pixel values already
    notes, kw = quiet()
    assert torch.equal(in_memory_dataset((pixels, Y), (pixels, Y), **kw).train_x, torch.from_numpy(X))
    assert not notes
    smooth = RNG.random((40, 3, 8, 6))  # in [0, 1], off the grid: rounded, and said so
    notes, kw = quiet()
    ds = in_memory_dataset((smooth, Y), (smooth[:4], Y[:4]), **kw)
    assert torch.equal(ds.train_x, torch.from_numpy(np.round(smooth * 255).astype(np.uint8)))
    assert len(notes) == 1 and "rounded by up to 0.20% of the range" in notes[0]
    standard = (smooth - 0.5) * 4  # standardised: [-2, 2]
    notes, kw = quiet()
    ds = in_memory_dataset((standard, Y), (standard[:4] * 2, Y[:4]), **kw)
    assert ds.train_x.min() == 0 and ds.train_x.max() == 255  # the train split's range, mapped onto 0..255
    assert any("mapped linearly onto 0..255" in n for n in notes) and any("clipped" in n for n in notes)
    # per-channel normalisation sees the same data as from the original floats, up to 8-bit rounding
    norm = Normalization.from_dataset(ds)
    x, _ = next(iter(DeviceLoader(ds.train_x, ds.train_y, batch_size=40, norm=norm)))
    ref = torch.from_numpy(standard).float()
    ref = (ref - ref.mean((0, 2, 3), keepdim=True)) / ref.std((0, 2, 3), keepdim=True)
    assert (x - ref).abs().max() < 0.05  # no shuffle: the loader keeps the order


def test_integer_images_in_range() -> None:
    ds = in_memory_dataset((X.astype(np.int64), Y.astype(np.int32)), (X[:2], Y[:2]), **quiet()[1])
    assert torch.equal(ds.train_x, torch.from_numpy(X)) and ds.train_y.dtype == torch.int64


class Pairs(torch.utils.data.Dataset):
    """A torchvision-like Dataset: ``kind`` says how each image comes out."""

    classes: ClassVar[list[str]] = ["zero", "one", "two", "three"]

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int):
        img = X[i]  # (C, H, W) uint8
        if self.kind == "tensor":
            return torch.from_numpy(img).float() / 255, torch.tensor(Y[i])  # ToTensor: CHW float in [0, 1]
        if self.kind == "ndarray":
            return img.transpose(1, 2, 0), int(Y[i])  # HWC uint8
        return Image.fromarray(img.transpose(1, 2, 0)), int(Y[i])  # PIL RGB


@pytest.mark.parametrize("kind", ["tensor", "ndarray", "pil"])
def test_a_torch_dataset(kind: str) -> None:
    notes, kw = quiet()
    ds = in_memory_dataset(Pairs(kind), Pairs(kind), **kw)
    check(ds, 12)
    assert torch.equal(ds.train_x, torch.from_numpy(X[:12])) and ds.train_y.tolist() == Y[:12].tolist()
    assert ds.classes == Pairs.classes and "torch Dataset Pairs" in ds.meta["input"] and not notes


class Iterable(torch.utils.data.IterableDataset):
    def __iter__(self):
        for i in range(10):
            yield torch.from_numpy(X[i, 0]), i % 2  # grey (H, W) tensors


def test_an_iterable_dataset() -> None:
    ds = in_memory_dataset(Iterable(), **quiet()[1])
    assert ds.train_x.shape[1:] == (1, 8, 6) and ds.classes == ["0", "1"] and len(ds.train_x) == 8


class Ragged(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int):
        return torch.zeros(3, 8, 8 + i), 0


@pytest.mark.parametrize(
    ("train", "test", "needle"),
    [
        ((X, Y[:39]), None, "40 images but 39 labels"),
        ((X.reshape(40, -1), Y), None, "reshape them"),
        ((np.zeros((4, 9, 9, 9)), Y[:4]), None, "no axis of 1 to 4 channels"),
        ((X, np.eye(4)[Y]), None, "y.argmax(1)"),
        ((X, Y - 1), None, "labels include -1"),
        ((X, Y + 0.5), None, "non-integer"),
        ((X.astype(np.int16) * 2, Y), None, "must lie in 0..255"),
        (
            (np.where(np.arange(X.size).reshape(X.shape) == 500, np.nan, 0.5), Y),
            None,
            "train image 3 holds NaN",
        ),
        ((X, Y), (X[:, :1], Y), "test images are (1, 8, 6)"),
        ((X[:0], Y[:0]), None, "train split is empty"),
        ((X.tolist(), Y), None, "pass a numpy array or a torch tensor"),
        (Ragged(), None, "image 1 is (3, 8, 9) but image 0 is (3, 8, 8)"),
        ((X, np.zeros(40, dtype=int)), None, "at least two"),
        ("mnist", None, "pass (images, labels)"),
    ],
)
def test_bad_input_is_one_line(train, test, needle) -> None:
    with pytest.raises(DataError, match=None) as err:
        in_memory_dataset(train, test, **quiet()[1])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_class_names_must_cover_the_labels() -> None:
    with pytest.raises(DataError, match="a label is 3 but 2 class names"):
        in_memory_dataset((X, Y), classes=["a", "b"], **quiet()[1])
    with pytest.raises(DataError, match="repeat"):
        in_memory_dataset((X, Y), classes=["a", "a", "b", "c"], **quiet()[1])
