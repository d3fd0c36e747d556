"""MNIST and Fashion-MNIST from their idx files, gzipped or not.

MNIST: LeCun, Cortes and Burges, http://yann.lecun.com/exdb/mnist/ (CC BY-SA 3.0).
Fashion-MNIST: Xiao, Rasul and Vollgraf, 2017, https://github.com/zalandoresearch/fashion-mnist (MIT).

An idx file is a big-endian header ``0x00 0x00 TYPE NDIM`` followed by ``NDIM`` uint32 sizes and the
data. We accept only unsigned bytes (``TYPE = 0x08``): 3-D for images, 1-D for labels, and check that the
file holds exactly the announced number of bytes.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from reslab.data.arrays import to_dataset
from reslab.data.download import fetch_dataset
from reslab.data.types import ArrayDataset
from reslab.errors import DataError
from reslab.files import MAX_IDX_BYTES, open_regular
from reslab.resources import check_host_memory

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_TORCHVISION_DIR = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_MAX_BYTES = 1 << 31  # far above the 47 MB of MNIST's train images; stops a lying header early
_CHUNK = 1 << 20


def _read_exact(f: io.BufferedIOBase | BinaryIO, n: int) -> bytes:
    # Read in chunks so a header that announces gigabytes costs nothing until the bytes really exist.
    parts, got = [], 0
    while got < n:
        chunk = f.read(min(_CHUNK, n - got))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte idx file with ``ndim`` dimensions (``.gz`` is decompressed on the fly).

    Raises:
        DataError: unreadable, not gzip when named ``.gz``, wrong magic, wrong rank, or wrong size.
    """
    path = Path(path)
    try:
        with (
            open_regular(path, "idx file", max_bytes=MAX_IDX_BYTES) as raw,
            gzip.GzipFile(fileobj=raw, mode="rb") if path.suffix == ".gz" else raw as f,
        ):
            head = _read_exact(f, 4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise DataError(f"{path} is not an idx file (bad magic number); re-download it")
            if head[2] != 0x08 or head[3] != ndim:
                raise DataError(
                    f"{path} has idx type 0x{head[2]:02x} with {head[3]} dims, expected unsigned bytes with "
                    f"{ndim} dims; is it the right file?"
                )
            dims_raw = _read_exact(f, 4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{path} is truncated (header cut short); re-download it")
            dims = [int(d) for d in np.frombuffer(dims_raw, dtype=">u4")]
            count = int(np.prod(dims, dtype=object))
            if count > _MAX_BYTES:
                raise DataError(f"{path} announces {dims}, too large to be a dataset; re-download it")
            # the bytes, then the dataset's own copy of them: check before reading, not at the allocator
            check_host_memory(
                2 * count, what=f"reading {path} ({dims})", fix="free some memory or use a machine with more"
            )
            data = _read_exact(f, count)
            if len(data) < count:
                raise DataError(f"{path} is truncated ({len(data)} of {count} data bytes); re-download it")
            if f.read(1):
                raise DataError(f"{path} has bytes after the {dims} array it announces; re-download it")
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, ValueError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(
            f"cannot read {path} ({type(e).__name__}: {e}); the file is corrupt, re-download it"
        ) from e
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _find(d: Path, stem: str) -> Path | None:
    for cand in (d / stem, d / f"{stem}.gz"):
        if cand.is_file():
            return cand
    return None


def _locate(name: str, data_dir: Path) -> dict[str, Path] | None:
    for d in (data_dir / name, data_dir / _TORCHVISION_DIR[name] / "raw", data_dir):
        found = {k: path for k, stem in FILES.items() if (path := _find(d, stem)) is not None}
        if len(found) == len(FILES):
            return found
    return None


def load_idx(name: str, data_dir: Path, *, download: bool) -> ArrayDataset:
    """Load ``mnist`` or ``fashion-mnist`` from ``data_dir/NAME`` (or torchvision's layout, or
    ``data_dir`` itself), downloading into ``data_dir/NAME`` if allowed.

    Raises:
        DataError: files missing (and no download), corrupt, or images and labels that disagree.
    """
    files = _locate(name, data_dir)
    if files is None and download:
        fetch_dataset(name, data_dir)
        files = _locate(name, data_dir)
    if files is None:
        wanted = ", ".join(f"{s}[.gz]" for s in FILES.values())
        raise DataError(
            f"{name} not found in {data_dir / name} (needs {wanted}); allow downloads or put the files there"
        )
    splits = []
    for split in ("train", "test"):
        x = read_idx(files[f"{split}_x"], 3)
        y = read_idx(files[f"{split}_y"], 1)
        if len(x) != len(y):
            raise DataError(
                f"{files[f'{split}_x']} has {len(x)} images but {files[f'{split}_y']} has {len(y)} labels; "
                "the files do not belong together"
            )
        splits.append((x[:, None], y))  # (N, H, W) -> (N, 1, H, W)
    classes = MNIST_CLASSES if name == "mnist" else FASHION_CLASSES
    src = str(files["train_x"].parent)
    return to_dataset(name, splits[0], splits[1], classes, augment="none", source=src, meta={"format": "idx"})
