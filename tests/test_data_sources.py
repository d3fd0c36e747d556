"""load_dataset by name: the embedded mnist5k, synthetic data, val_split and the statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reslab.data import dataset_stats, holdout, list_datasets, load_dataset
from reslab.errors import ConfigError


@pytest.fixture(scope="module")
def mnist5k():
    return load_dataset("mnist5k")


def test_list_datasets() -> None:
    assert list_datasets()[0] == "mnist5k"
    for name in ("synthetic", "mnist", "fashion-mnist", "cifar10", "cifar100", "signs", "folder:PATH"):
        assert name in list_datasets()


def test_mnist5k_shapes_split_and_balance(mnist5k) -> None:
    ds = mnist5k
    assert ds.train_x.shape == (4000, 1, 28, 28) and ds.test_x.shape == (1000, 1, 28, 28)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert torch.bincount(ds.train_y, minlength=10).tolist() == [400] * 10
    assert torch.bincount(ds.test_y, minlength=10).tolist() == [100] * 10
    assert ds.classes == [str(i) for i in range(10)] and ds.augment == "none" and ds.source == "embedded"
    # real digits: dark background, bright strokes, some ink in every image
    assert 0.08 < ds.train_x.float().mean().item() / 255 < 0.2
    assert (ds.train_x.flatten(1).amax(1) > 200).all()


def test_mnist5k_split_is_fixed_and_disjoint(mnist5k) -> None:
    from importlib import resources

    with resources.files("reslab.data").joinpath("assets/mnist5k.npz").open("rb") as f:
        z = np.load(f, allow_pickle=False)
        tr, te = z["train_idx"], z["test_idx"]
    assert len(np.intersect1d(tr, te)) == 0 and len(np.union1d(tr, te)) == 5000
    again = load_dataset("mnist5k", seed=123)  # the seed never moves the fixed split
    assert torch.equal(again.test_x, mnist5k.test_x) and torch.equal(again.train_y, mnist5k.train_y)


def test_val_split_holds_out_stratified_train_images(mnist5k) -> None:
    ds = holdout(mnist5k, 1000, seed=0)
    assert ds.train_x.shape[0] == 3000 and ds.test_x.shape[0] == 1000
    assert torch.bincount(ds.test_y, minlength=10).tolist() == [100] * 10
    # the held-out images come from the train split, never from the original test split
    train_rows = {bytes(r) for r in mnist5k.train_x.flatten(1).numpy()}
    assert all(bytes(r) in train_rows for r in ds.test_x.flatten(1).numpy()[:50])
    assert torch.equal(holdout(mnist5k, 1000, seed=0).test_x, ds.test_x)
    assert not torch.equal(holdout(mnist5k, 1000, seed=1).test_x, ds.test_x)
    assert "val_split" in ds.meta
    via_api = load_dataset("synthetic", val_split=100)
    assert via_api.test_x.shape[0] == 100 and via_api.train_x.shape[0] == 412


@pytest.mark.parametrize("n", [0, 4000, -5])
def test_val_split_out_of_range(mnist5k, n: int) -> None:
    with pytest.raises(ConfigError, match="val_split"):
        holdout(mnist5k, n)


def test_synthetic_default_deterministic_and_learnable_shape() -> None:
    a, b, c = load_dataset("synthetic"), load_dataset("synthetic"), load_dataset("synthetic", seed=1)
    assert a.train_x.shape == (512, 1, 28, 28) and a.test_x.shape == (128, 1, 28, 28)
    assert a.num_classes == 10 and a.augment == "none"
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.train_x, c.train_x)
    # class-dependent: nearest class-mean classifier beats chance by far
    x, y = a.train_x.flatten(1).float(), a.train_y
    means = torch.stack([x[y == k].mean(0) for k in range(10)])
    pred = torch.cdist(a.test_x.flatten(1).float(), means).argmin(1)
    assert (pred == a.test_y).float().mean() > 0.5


def test_synthetic_shape_option() -> None:
    ds = load_dataset("synthetic:3x16x20")
    assert ds.image_shape == (3, 16, 20) and ds.augment == "crop_flip"
    with pytest.raises(ConfigError, match="CxHxW"):
        load_dataset("synthetic:big")


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'imagenet'; choose one of: mnist5k"):
        load_dataset("imagenet")


def test_aliases() -> None:
    assert load_dataset("MNIST_5K").name == "mnist5k"


def test_stats_on_train_split_only(mnist5k) -> None:
    s = dataset_stats(mnist5k)
    x = mnist5k.train_x.double() / 255
    assert s.mean.shape == (1,) and s.std.shape == (1,) and s.pixel_mean.shape == (1, 28, 28)
    assert torch.allclose(s.mean.double(), x.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(s.std.double(), x.std((0, 2, 3), unbiased=False), atol=1e-5)
    assert torch.allclose(s.pixel_mean.double(), x.mean(0), atol=1e-6)
    assert abs(s.mean.item() - 0.13) < 0.01  # MNIST's well-known mean (0.1307 on the full set)
