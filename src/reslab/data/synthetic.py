"""``synthetic``: a tiny generated dataset for tests and smoke runs, deterministic from the seed.

Each class has a fixed random low-frequency pattern (an 7x7 grid upsampled to H x W). A sample is its
class pattern, shifted by up to 2 pixels, mixed with uniform noise: a small convnet learns it in a few
hundred steps, while a constant predictor stays at chance.
"""

from __future__ import annotations

import numpy as np

from reslab.data.arrays import to_dataset
from reslab.data.types import ArrayDataset, Augment
from reslab.errors import ConfigError
from reslab.resources import check_host_memory

_GRID = 7
_MAX_SHIFT = 2
_SIGNAL = 0.6  # share of the class pattern in each pixel; the rest is noise
_CHUNK_BYTES = 1 << 26  # float32 working set per block of samples: the peak is the uint8 output plus this
MAX_SIDE = 512  # ImageNet's 224 with room; 3x512x512 takes ~20 s to make (2 cores), 3x2000x2000 minutes
_FLOATS_PER_PIXEL = 4  # pattern, noise, mix, rounded: float32 arrays alive at once for one block


def _block(c: int, h: int, w: int) -> int:
    """Samples per block, so that one block's float32 arrays stay near ``_CHUNK_BYTES``."""
    return max(1, _CHUNK_BYTES // (_FLOATS_PER_PIXEL * 4 * c * h * w))


def _samples(rng: np.random.Generator, templates: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    k, c, h, w = templates.shape
    y = np.arange(n) % k  # balanced classes, 1. in order ...
    rng.shuffle(y)  # ... 2. then shuffled
    shifts = rng.integers(-_MAX_SHIFT, _MAX_SHIFT + 1, size=(n, 2))
    out = np.empty((n, c, h, w), dtype=np.uint8)  # (N, C, H, W)
    step = _block(c, h, w)
    for lo in range(0, n, step):  # 3. in blocks: the noise stream is the same as one draw of all n
        hi = min(n, lo + step)
        x = templates[y[lo:hi]]  # (B, C, H, W) float32
        for i, (dy, dx) in enumerate(shifts[lo:hi]):
            x[i] = np.roll(x[i], (int(dy), int(dx)), axis=(1, 2))
        noise = rng.random((hi - lo, c, h, w), dtype=np.float32)
        out[lo:hi] = np.round((_SIGNAL * x + (1 - _SIGNAL) * noise) * 255)
    return out, y.astype(np.int64)


def synthetic_bytes(num_classes: int, shape: tuple[int, int, int], n_train: int, n_test: int) -> int:
    """Peak host memory of :func:`make_synthetic`: the uint8 images, the class patterns and one block."""
    c, h, w = shape
    pixels = c * h * w
    block = min(max(n_train, n_test), _block(c, h, w))
    return (n_train + n_test) * pixels + 4 * num_classes * pixels + _FLOATS_PER_PIXEL * 4 * block * pixels


def make_synthetic(
    *,
    num_classes: int = 10,
    shape: tuple[int, int, int] = (1, 28, 28),
    n_train: int = 512,
    n_test: int = 128,
    seed: int = 0,
) -> ArrayDataset:
    """Generate the ``synthetic`` dataset: ``n_train``/``n_test`` images of ``shape`` (C, H, W), balanced.

    Raises:
        ConfigError: a non-positive size, fewer than 2 classes, images smaller than 8x8, or a dataset that
            does not fit in the free memory (checked before anything is allocated).
    """
    c, h, w = shape
    if num_classes < 2 or n_train < num_classes or n_test < 1 or c not in (1, 3) or min(h, w) < 8:
        raise ConfigError(
            f"synthetic needs >= 2 classes, n_train >= classes, n_test >= 1, C in (1, 3) and H, W >= 8; "
            f"got {num_classes} classes, {n_train}/{n_test} images of {shape}"
        )
    check_host_memory(
        synthetic_bytes(num_classes, shape, n_train, n_test),
        what=f"synthetic:{c}x{h}x{w} ({n_train + n_test:,} images)",
        fix="use a smaller shape, e.g. synthetic:3x32x32",
    )
    if max(h, w) > MAX_SIDE:  # sized before anything is generated: a smoke-test dataset, not a memory test
        raise ConfigError(
            f"synthetic:{c}x{h}x{w} is larger than the {MAX_SIDE}x{MAX_SIDE} images synthetic makes; use "
            "e.g. synthetic:3x224x224, or folder:PATH for real large images"
        )
    rng = np.random.default_rng(seed)
    grid = rng.random((num_classes, c, _GRID, _GRID), dtype=np.float32)
    rows = np.linspace(0, _GRID - 1, h).round().astype(int)
    cols = np.linspace(0, _GRID - 1, w).round().astype(int)
    templates = grid[:, :, rows][:, :, :, cols]  # nearest-neighbour upsample: (K, C, H, W)
    train = _samples(rng, templates, n_train)
    test = _samples(rng, templates, n_test)
    classes = [f"pattern{k}" for k in range(num_classes)]
    augment: Augment = "crop_flip" if c == 3 else "none"
    meta = {"format": "synthetic", "seed": str(seed)}
    return to_dataset("synthetic", train, test, classes, augment=augment, source="generated", meta=meta)


def parse_shape(spec: str) -> tuple[int, int, int]:
    """``"3x32x32"`` -> ``(3, 32, 32)``.

    Raises:
        ConfigError: not three positive integers joined by ``x``.
    """
    try:
        c, h, w = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise ConfigError(
            f"bad synthetic shape {spec!r}; write it as CxHxW, e.g. synthetic:3x32x32"
        ) from None
    return c, h, w
