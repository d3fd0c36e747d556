"""The hand-signs dataset of the deeplearning.ai course exercise (``train_signs.h5`` / ``test_signs.h5``).

Each file holds ``{split}_set_x`` (N, 64, 64, 3) uint8, ``{split}_set_y`` (N,) and ``list_classes`` (the
six classes, 0..5 fingers). Reading HDF5 needs the optional extra ``pip install "reslab[h5]"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reslab.data.arrays import to_dataset
from reslab.data.types import ArrayDataset
from reslab.errors import DataError
from reslab.files import MAX_HDF5_BYTES, open_regular

FILES = {"train": "train_signs.h5", "test": "test_signs.h5"}
_MAX_ELEMENTS = 1 << 31


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as e:
        raise DataError('reading the signs dataset needs h5py; run: pip install "reslab[h5]"') from e
    return h5py


def _read_array(f: Any, key: str, path: Path) -> np.ndarray:
    if key not in f:
        raise DataError(f"{path} has no dataset '{key}'; is it the course's hand-signs file?")
    ds = f[key]
    if not hasattr(ds, "shape") or ds.shape is None:
        raise DataError(f"{path}: '{key}' is not an array; is it the course's hand-signs file?")
    if int(np.prod(ds.shape, dtype=object)) > _MAX_ELEMENTS:
        raise DataError(f"{path}: '{key}' announces shape {ds.shape}, too large; the file is corrupt")
    return np.asarray(ds[()])


def read_signs_file(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One hand-signs file -> ``(images (N,3,H,W) uint8, labels (N,) int64, list_classes)``.

    Raises:
        DataError: h5py missing, the file is not HDF5, truncated, or lacks the expected arrays.
    """
    path = Path(path)
    h5py = _h5py()
    try:
        # h5py reads from the file object we opened: regular files only, size-capped, never a FIFO
        with open_regular(path, "HDF5 file", max_bytes=MAX_HDF5_BYTES) as raw, h5py.File(raw, "r") as f:
            x = _read_array(f, f"{split}_set_x", path)
            y = _read_array(f, f"{split}_set_y", path)
            classes = _read_array(f, "list_classes", path)
    except DataError:
        raise
    except Exception as e:  # h5py raises OSError, KeyError, ValueError, TypeError, RuntimeError...
        raise DataError(
            f"cannot read {path} ({type(e).__name__}: {e}); the file is corrupt, replace it"
        ) from e
    if x.ndim == 3:  # grayscale (N, H, W)
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.dtype.kind not in "iuf":
        raise DataError(f"{path}: '{split}_set_x' has shape {x.shape}, expected (N, H, W, 3) images")
    if x.dtype != np.uint8:
        if x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 255 or np.isnan(x).any()):
            raise DataError(f"{path}: '{split}_set_x' has values outside 0..255; the file is corrupt")
        x = x.astype(np.uint8)
    y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y  # the course stores labels as (N,) or (1, N)
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
        raise DataError(
            f"{path}: '{split}_set_y' has shape {y.shape} for {len(x)} images; the file is corrupt"
        )
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y.astype(np.int64), classes


def load_signs(data_dir: Path) -> ArrayDataset:
    """Load ``signs`` from ``data_dir`` (or ``data_dir/signs``).

    Raises:
        DataError: files missing or corrupt, or h5py not installed.
    """
    for d in (data_dir, data_dir / "signs"):
        if all((d / f).is_file() for f in FILES.values()):
            break
    else:
        raise DataError(
            f"signs not found in {data_dir} (needs {FILES['train']} and {FILES['test']}); "
            "put the course's two files there"
        )
    train_x, train_y, cls = read_signs_file(d / FILES["train"], "train")
    test = read_signs_file(d / FILES["test"], "test")
    if cls.ndim != 1 or len(cls) == 0:
        raise DataError(f"{d / FILES['train']}: 'list_classes' is not a list of classes; the file is corrupt")
    classes = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in cls.tolist()]
    meta = {"format": "hdf5"}
    return to_dataset(
        "signs", (train_x, train_y), test[:2], classes, augment="crop_flip", source=str(d), meta=meta
    )
