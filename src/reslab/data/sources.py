"""``load_dataset(name)``: every dataset by name, and the held-out validation split.

Names: ``mnist5k`` (embedded, the default), ``synthetic[:CxHxW]``, ``mnist``, ``fashion-mnist``,
``cifar10``, ``cifar100``, ``signs``, ``folder:PATH``. File-based datasets are looked up in ``data_dir``
(default: ``$RESLAB_DATA_DIR``, else ``~/.cache/reslab/data``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from reslab.data.arrays import stratified_holdout, to_dataset
from reslab.data.types import ArrayDataset
from reslab.errors import ConfigError

DATA_DIR_ENV = "RESLAB_DATA_DIR"
DATASETS = ("mnist5k", "synthetic", "mnist", "fashion-mnist", "cifar10", "cifar100", "signs", "folder:PATH")
_ALIASES = {
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "mnist-5k": "mnist5k",
    "mnist_5k": "mnist5k",
}


def list_datasets() -> list[str]:
    """The dataset names :func:`load_dataset` accepts (``folder:PATH`` takes a path)."""
    return list(DATASETS)


def default_data_dir() -> Path:
    """``$RESLAB_DATA_DIR`` if set, else ``~/.cache/reslab/data``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "reslab" / "data"


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    seed: int = 0,
    val_split: int | None = None,
    image_size: int | None = None,
) -> ArrayDataset:
    """Load a dataset by name as uint8 ``(N, C, H, W)`` tensors on the CPU.

    Args:
        name: one of :func:`list_datasets` (``folder:PATH`` for your own images).
        data_dir: where file-based datasets live and downloads go (see :func:`default_data_dir`).
        download: fetch missing ``cifar10``/``cifar100``/``mnist``/``fashion-mnist`` archives.
        seed: seeds generated data (``synthetic``), the ``folder`` 80/20 split and ``val_split``.
        val_split: hold out this many training images (seeded, stratified) as the test split, as the
            paper's 45k/5k CIFAR protocol (sec. 4.2); the original test split is then not returned.
        image_size: ``folder:PATH`` only: resize images to ``image_size x image_size``.

    Raises:
        ConfigError: unknown name or bad option.
        DataError: files missing (and not downloadable), corrupt or unsafe.
    """
    ds = _load(name.strip(), data_dir, download=download, seed=seed, image_size=image_size)
    if val_split is not None:
        ds = holdout(ds, val_split, seed=seed)
    return ds


def _load(
    name: str, data_dir: str | Path | None, *, download: bool, seed: int, image_size: int | None
) -> ArrayDataset:
    kind, _, arg = name.partition(":")
    kind = _ALIASES.get(kind.lower(), kind.lower())
    if image_size is not None and kind != "folder":
        raise ConfigError(f"image_size applies to folder:PATH datasets only, not {name}; drop it")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if kind == "mnist5k" and not arg:
        from reslab.data.mnist5k import load_mnist5k

        return load_mnist5k()
    if kind == "synthetic":
        from reslab.data.synthetic import make_synthetic, parse_shape

        return make_synthetic(seed=seed, shape=parse_shape(arg)) if arg else make_synthetic(seed=seed)
    if kind in ("mnist", "fashion-mnist") and not arg:
        from reslab.data.idx import load_idx

        return load_idx(kind, root, download=download)
    if kind in ("cifar10", "cifar100") and not arg:
        from reslab.data.cifar import load_cifar

        return load_cifar(kind, root, download=download)
    if kind == "signs" and not arg:
        from reslab.data.signs import load_signs

        return load_signs(root)
    if kind == "folder":
        if not arg:
            raise ConfigError("folder datasets need a path: folder:PATH, e.g. folder:~/my_images")
        from reslab.data.folder import load_folder

        return load_folder(arg, seed=seed, image_size=image_size, name=name)
    raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


def holdout(ds: ArrayDataset, n: int, *, seed: int = 0) -> ArrayDataset:
    """Replace the test split by ``n`` training images held out (seeded, stratified by class).

    Raises:
        ConfigError: ``n`` is not in ``1 .. len(train) - 1``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ConfigError(f"val_split must be a number of images, got {n!r}")
    keep, hold = stratified_holdout(ds.train_y.numpy(), int(n), seed)
    x, y = ds.train_x.numpy(), ds.train_y.numpy()
    meta = {**ds.meta, "val_split": f"{n} train images held out as test (seed {seed})"}
    return to_dataset(
        ds.name,
        (x[keep], y[keep]),
        (x[hold], y[hold]),
        ds.classes,
        augment=ds.augment,
        source=ds.source,
        meta=meta,
    )
