"""CIFAR-10 and CIFAR-100 from the official archives (Krizhevsky, 2009; https://www.cs.toronto.edu/~kriz/).

Both the "python version" (pickled dicts, read through :func:`reslab.data.safety.safe_unpickle`) and the
"binary version" (fixed-size records) are read, packed (``.tar.gz``) or already unpacked. Images are
``(N, 3, 32, 32)`` uint8; the default augmentation is the paper's 4-pixel pad + random crop + flip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reslab.data.archives import safe_extract
from reslab.data.arrays import to_dataset
from reslab.data.download import fetch_dataset
from reslab.data.safety import safe_unpickle
from reslab.data.types import ArrayDataset
from reslab.errors import DataError
from reslab.files import MAX_CIFAR_BATCH_BYTES, MAX_META_BYTES, MiB, read_bounded, read_text_bounded
from reslab.resources import check_host_memory

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
_PIXELS = 3 * 32 * 32  # one image, stored channel-major (R plane, G plane, B plane)
# The four official archives unpack to 178-185 MB in 8-9 members: refuse anything far beyond that.
ARCHIVE_MAX_BYTES = 512 * MiB
ARCHIVE_MAX_MEMBERS = 256


@dataclass(frozen=True)
class _Layout:
    num_classes: int
    py_dir: str
    py_archive: str
    py_train: tuple[str, ...]
    py_test: str
    py_meta: str
    py_meta_key: str
    py_label_key: str
    bin_dir: str
    bin_archive: str
    bin_train: tuple[str, ...]
    bin_test: str
    bin_meta: str
    bin_label_bytes: int  # CIFAR-100 records start with (coarse, fine); we use the fine label


LAYOUTS = {
    "cifar10": _Layout(
        10, "cifar-10-batches-py", "cifar-10-python.tar.gz",
        tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta", "label_names", "labels",
        "cifar-10-batches-bin", "cifar-10-binary.tar.gz",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin", "batches.meta.txt", 1,
    ),
    "cifar100": _Layout(
        100, "cifar-100-python", "cifar-100-python.tar.gz",
        ("train",), "test", "meta", "fine_label_names", "fine_labels",
        "cifar-100-binary", "cifar-100-binary.tar.gz",
        ("train.bin",), "test.bin", "fine_label_names.txt", 2,
    ),
}  # fmt: skip


def _key(k: Any) -> Any:
    return k.decode("latin1") if isinstance(k, bytes) else k


def read_python_batch(path: str | Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch -> ``(images (N,3,32,32) uint8, labels (N,) int64)``.

    Raises:
        DataError: the file is not a CIFAR batch (wrong structure, types, sizes or labels).
    """
    obj = safe_unpickle(path, max_bytes=MAX_CIFAR_BATCH_BYTES)
    bad = f"{path} is not a CIFAR batch"
    if not isinstance(obj, dict):
        raise DataError(f"{bad} (holds a {type(obj).__name__}, not a dict); re-download the archive")
    d = {_key(k): v for k, v in obj.items()}
    data, labels = d.get("data"), d.get(label_key)
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != _PIXELS
    ):
        raise DataError(f"{bad} ('data' is not an (N, {_PIXELS}) uint8 array); re-download the archive")
    if not isinstance(labels, (list, np.ndarray)):
        raise DataError(f"{bad} (no '{label_key}' list); re-download the archive")
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError) as e:
        raise DataError(f"{bad} ('{label_key}' is not a list of integers); re-download the archive") from e
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(data):
        raise DataError(f"{bad} ({len(data)} images but '{label_key}' does not match); re-download it")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{bad} (labels outside 0..{num_classes - 1}); re-download the archive")
    return data.reshape(-1, 3, 32, 32), y.astype(np.int64)


def read_binary_batch(path: str | Path, label_bytes: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One binary CIFAR batch (records of ``label_bytes`` + 3072 bytes) -> ``(images, labels)``.

    Raises:
        DataError: the file is unreadable, empty, not a whole number of records, or has bad labels.
    """
    path = Path(path)
    rec = label_bytes + _PIXELS
    raw = read_bounded(path, MAX_CIFAR_BATCH_BYTES, "CIFAR batch")
    if not raw or len(raw) % rec:
        raise DataError(
            f"{path} is {len(raw)} bytes, not a whole number of {rec}-byte CIFAR records; "
            "the file is truncated or corrupt, re-download the archive"
        )
    arr = np.frombuffer(raw, dtype=np.uint8).reshape(-1, rec)
    y = arr[:, label_bytes - 1].astype(np.int64)  # the last label byte is the (fine) label
    if y.max() >= num_classes:
        raise DataError(f"{path} has labels outside 0..{num_classes - 1}; re-download the archive")
    return arr[:, label_bytes:].reshape(-1, 3, 32, 32), y


def _python_classes(path: Path, key: str, num_classes: int) -> list[str]:
    if path.exists():
        meta = safe_unpickle(path, max_bytes=MAX_META_BYTES, what="CIFAR class list")
        names = {_key(k): v for k, v in meta.items()}.get(key) if isinstance(meta, dict) else None
        if isinstance(names, list) and len(names) == num_classes:
            return [_key(n) if isinstance(n, (str, bytes)) else str(n) for n in names]
        raise DataError(f"{path} does not list {num_classes} '{key}'; re-download the archive")
    return _default_classes(num_classes)


def _binary_classes(path: Path, num_classes: int) -> list[str]:
    if path.exists():
        text = read_text_bounded(path, MAX_META_BYTES, "CIFAR class list")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if len(lines) == num_classes:
            return lines
        raise DataError(f"{path} lists {len(lines)} class names, not {num_classes}; re-download the archive")
    return _default_classes(num_classes)


def _default_classes(num_classes: int) -> list[str]:
    return list(CIFAR10_CLASSES) if num_classes == 10 else [str(i) for i in range(num_classes)]


def _check_memory(name: str, d: Path, files: tuple[str, ...]) -> None:
    """Refuse before reading batches that will not fit: each is read whole, decoded, then all are joined."""
    try:
        sizes = [(d / f).stat().st_size for f in files]
    except OSError:  # reading them will say what is wrong, in one line
        return
    check_host_memory(
        2 * sum(sizes) + max(sizes),
        what=f"loading {name} from {d}",
        fix="free some memory (close other programs) or use a machine with more",
    )


def _load_python_dir(name: str, lay: _Layout, d: Path) -> ArrayDataset:
    _check_memory(name, d, (*lay.py_train, lay.py_test))
    xs, ys = zip(*(read_python_batch(d / f, lay.py_label_key, lay.num_classes) for f in lay.py_train))
    test = read_python_batch(d / lay.py_test, lay.py_label_key, lay.num_classes)
    classes = _python_classes(d / lay.py_meta, lay.py_meta_key, lay.num_classes)
    train = (np.concatenate(xs), np.concatenate(ys))
    return to_dataset(
        name, train, test, classes, augment="crop_flip", source=str(d), meta={"format": "python"}
    )


def _load_binary_dir(name: str, lay: _Layout, d: Path) -> ArrayDataset:
    _check_memory(name, d, (*lay.bin_train, lay.bin_test))
    xs, ys = zip(*(read_binary_batch(d / f, lay.bin_label_bytes, lay.num_classes) for f in lay.bin_train))
    test = read_binary_batch(d / lay.bin_test, lay.bin_label_bytes, lay.num_classes)
    classes = _binary_classes(d / lay.bin_meta, lay.num_classes)
    train = (np.concatenate(xs), np.concatenate(ys))
    return to_dataset(
        name, train, test, classes, augment="crop_flip", source=str(d), meta={"format": "binary"}
    )


def _complete(d: Path, files: tuple[str, ...]) -> bool:
    return d.is_dir() and all((d / f).is_file() for f in files)


def _extract(archive: Path, root: Path, sub: str, files: tuple[str, ...]) -> None:
    """Unpack only ``sub/FILE`` for ``files`` (batches, class list), never over a user's file."""
    wanted = [f"{sub}/{f}" for f in files]
    safe_extract(archive, root, files=wanted, max_bytes=ARCHIVE_MAX_BYTES, max_members=ARCHIVE_MAX_MEMBERS)


def load_cifar(name: str, data_dir: Path, *, download: bool) -> ArrayDataset:
    """Load ``cifar10`` or ``cifar100`` from ``data_dir`` (or ``data_dir/NAME``), downloading if allowed.

    Order of preference: unpacked python dir, unpacked binary dir, python archive, binary archive,
    download of the python archive.

    Raises:
        DataError: nothing usable was found (the message lists what was looked for), or a file is corrupt.
    """
    lay = LAYOUTS[name]
    py_files = (*lay.py_train, lay.py_test)
    bin_files = (*lay.bin_train, lay.bin_test)
    roots = [data_dir, data_dir / name]
    for root in roots:
        if _complete(root / lay.py_dir, py_files):
            return _load_python_dir(name, lay, root / lay.py_dir)
        if _complete(root / lay.bin_dir, bin_files):
            return _load_binary_dir(name, lay, root / lay.bin_dir)
    for root in roots:
        for archive, sub, files, meta, loader in (
            (lay.py_archive, lay.py_dir, py_files, lay.py_meta, _load_python_dir),
            (lay.bin_archive, lay.bin_dir, bin_files, lay.bin_meta, _load_binary_dir),
        ):
            if (root / archive).is_file():
                _extract(root / archive, root, sub, (*files, meta))
                if not _complete(root / sub, files):
                    raise DataError(
                        f"{root / archive} did not contain {sub}/ with {', '.join(files)}; "
                        "it is not the official archive, re-download it"
                    )
                return loader(name, lay, root / sub)
    if download:
        (fetched,) = fetch_dataset(name, data_dir)
        _extract(fetched, data_dir, lay.py_dir, (*py_files, lay.py_meta))
        if _complete(data_dir / lay.py_dir, py_files):
            return _load_python_dir(name, lay, data_dir / lay.py_dir)
        raise DataError(f"{fetched} did not contain {lay.py_dir}/; delete it and download it again")
    for root in roots:
        for sub, files in ((lay.py_dir, py_files), (lay.bin_dir, bin_files)):
            if (root / sub).is_dir():
                missing = [f for f in files if not (root / sub / f).is_file()]
                raise DataError(
                    f"{root / sub} is incomplete (missing {', '.join(missing)}); delete it and put "
                    f"{lay.py_archive} in {data_dir}, or allow downloads"
                )
    raise DataError(
        f"{name} not found in {data_dir} (looked for {lay.py_dir}/, {lay.bin_dir}/, {lay.py_archive}, "
        f"{lay.bin_archive}); allow downloads or put {lay.py_archive} there yourself"
    )
