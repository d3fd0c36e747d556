"""Builders of tiny dataset files in the official formats, shared by the tests/test_data_*.py files."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

CIFAR_PY = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels"),
    "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels"),
}
CIFAR_BIN = {
    "cifar10": ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], "test_batch.bin", 1),
    "cifar100": ("cifar-100-binary", ["train.bin"], "test.bin", 2),
}
IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def n_classes(name: str) -> int:
    return 10 if name == "cifar10" else 100


def cifar_py_batch(n: int, num_classes: int, label_key: str, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"testing batch",
        label_key.encode(): [int(v) for v in rng.integers(0, num_classes, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def cifar_py_bytes(n: int = 6, num_classes: int = 10, label_key: str = "labels", seed: int = 0) -> bytes:
    return pickle.dumps(cifar_py_batch(n, num_classes, label_key, seed), protocol=4)


def make_cifar_py(root: Path, name: str = "cifar10", n: int = 6) -> Path:
    """Write an unpacked python-version CIFAR folder under ``root`` and return it."""
    sub, train, test, key = CIFAR_PY[name]
    d = root / sub
    d.mkdir(parents=True, exist_ok=True)
    k = n_classes(name)
    for i, f in enumerate([*train, test]):
        (d / f).write_bytes(cifar_py_bytes(n, k, key, seed=i))
    meta_name, meta_key = (
        ("batches.meta", b"label_names") if name == "cifar10" else ("meta", b"fine_label_names")
    )
    meta = {meta_key: [f"class{i}".encode() for i in range(k)]}
    (d / meta_name).write_bytes(pickle.dumps(meta, protocol=4))
    return d


def cifar_bin_bytes(n: int = 6, label_bytes: int = 1, num_classes: int = 10, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    rec = np.empty((n, label_bytes + 3072), dtype=np.uint8)
    rec[:, :label_bytes] = rng.integers(0, min(num_classes, 20), (n, label_bytes))
    rec[:, label_bytes - 1] = rng.integers(0, num_classes, n)
    rec[:, label_bytes:] = rng.integers(0, 256, (n, 3072))
    return rec.tobytes()


def make_cifar_bin(root: Path, name: str = "cifar10", n: int = 6) -> Path:
    sub, train, test, lb = CIFAR_BIN[name]
    d = root / sub
    d.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate([*train, test]):
        (d / f).write_bytes(cifar_bin_bytes(n, lb, n_classes(name), seed=i))
    names = "\n".join(f"c{i}" for i in range(n_classes(name))) + "\n"
    (d / ("batches.meta.txt" if name == "cifar10" else "fine_label_names.txt")).write_text(names)
    return d


def tar_dir(archive: Path, folder: Path) -> Path:
    """Pack ``folder`` as ``archive`` (.tar.gz) with ``folder.name/`` as its top level, like the originals."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def idx_bytes(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return head + arr.astype(np.uint8).tobytes()


def make_idx(d: Path, n_train: int = 8, n_test: int = 4, gz: bool = True, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    arrays = [
        rng.integers(0, 256, (n_train, 28, 28)),
        rng.integers(0, 10, n_train),
        rng.integers(0, 256, (n_test, 28, 28)),
        rng.integers(0, 10, n_test),
    ]
    for stem, arr in zip(IDX_STEMS, arrays):
        data = idx_bytes(arr)
        if gz:
            (d / f"{stem}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (d / stem).write_bytes(data)
    return d


def make_signs(d: Path, n_train: int = 6, n_test: int = 3) -> Path:
    import h5py

    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        with h5py.File(d / f"{split}_signs.h5", "w") as f:
            f[f"{split}_set_x"] = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
            f[f"{split}_set_y"] = rng.integers(0, 6, n).astype(np.int64)
            f["list_classes"] = np.arange(6, dtype=np.int64)
    return d


def image_bytes(
    fmt: str = "PNG", size: tuple[int, int] = (12, 10), mode: str = "RGB", seed: int = 0
) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    c = 3 if mode == "RGB" else 1
    arr = rng.integers(0, 256, (size[1], size[0], c), dtype=np.uint8)
    img = Image.fromarray(arr[..., 0] if c == 1 else arr, mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def make_folder(
    root: Path, classes: dict[str, int], fmt: str = "PNG", mode: str = "RGB", size=(12, 10)
) -> Path:
    ext = ".png" if fmt == "PNG" else ".jpg"
    for ci, (cls, n) in enumerate(classes.items()):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / cls / f"{i}{ext}").write_bytes(image_bytes(fmt, size, mode, seed=ci * 100 + i))
    return root


def _py2_str(b: bytes) -> bytes:
    # Python 2's str as pickled by protocol 2: SHORT_BINSTRING or BINSTRING
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + len(b).to_bytes(4, "little") + b


def _int(v: int) -> bytes:
    return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + int(v).to_bytes(4, "little", signed=True)


def py2_cifar_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """{'data': uint8 array, 'labels': [...]} exactly as Python 2 + old numpy pickled the real CIFAR files."""
    assert data.dtype == np.uint8 and data.ndim == 2
    dtype = b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R"
    dtype += b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    shape = b"(" + b"".join(_int(s) for s in data.shape) + b"t"
    arr = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b") + b"\x87R"
    arr += b"(K\x01" + shape + dtype + b"\x89" + _py2_str(data.tobytes()) + b"tb"
    labs = b"](" + b"".join(_int(v) for v in labels) + b"e"
    return b"\x80\x02}(" + _py2_str(b"data") + arr + _py2_str(b"labels") + labs + b"u."
