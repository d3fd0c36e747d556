"""Fuzzing the file loaders: every malformed input ends in DataError, never anything else.

Each loader gets >= 200 generated inputs: random bytes, truncations, single-byte mutations and trailing
junk of a valid file, plus format-specific lies (wrong magic, wrong sizes, wrong structure). A mutation
may leave the file valid; then the loader must return well-formed arrays.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reslab.data.cifar import read_binary_batch, read_python_batch
from reslab.data.folder import load_folder
from reslab.data.idx import read_idx
from reslab.errors import DataError

try:
    from tests.test_data_builders import (
        cifar_bin_bytes,
        cifar_py_bytes,
        idx_bytes,
        image_bytes,
        py2_cifar_pickle,
    )
except ImportError:
    from test_data_builders import (  # type: ignore[no-redef]
        cifar_bin_bytes,
        cifar_py_bytes,
        idx_bytes,
        image_bytes,
        py2_cifar_pickle,
    )

try:
    from tests.helpers import FUZZ
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    from helpers import FUZZ  # type: ignore[no-redef]


def malformed(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, truncations, one-byte mutations and trailing junk of ``valid``."""
    n = len(valid)
    return st.one_of(
        st.binary(max_size=2048),
        st.integers(0, n - 1).map(lambda k: valid[:k]),
        st.tuples(st.integers(0, n - 1), st.integers(0, 255)).map(
            lambda t: valid[: t[0]] + bytes([t[1]]) + valid[t[0] + 1 :]
        ),
        st.tuples(st.integers(0, min(n - 1, 300)), st.binary(min_size=1, max_size=8)).map(
            lambda t: valid[: t[0]] + t[1] + valid[t[0] + len(t[1]) :]  # overwrite inside the header
        ),
        st.binary(min_size=1, max_size=64).map(lambda b: valid + b),
    )


def expect_data_error_or_valid(fn, check) -> None:  # type: ignore[no-untyped-def]
    try:
        out = fn()
    except DataError as e:
        assert str(e) and "\n" not in str(e)  # one CLI-ready line
        return
    check(out)


def _check_batch(out: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = out
    assert x.dtype == np.uint8 and x.shape[1:] == (3, 32, 32) and y.dtype == np.int64 and len(x) == len(y)


# ---------------------------------------------------------------------------------------------- CIFAR python

_VALID_PY = cifar_py_bytes(n=2)
_VALID_PY2 = py2_cifar_pickle(np.zeros((2, 3072), np.uint8), [1, 2])
_leaf = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.binary(max_size=20),
    st.text(max_size=5),
    st.none(),
)
_arrays = st.builds(
    lambda shape, dt: np.zeros(shape, dtype=dt),
    st.sampled_from([(), (0,), (2,), (3072,), (2, 3072), (1, 3071), (0, 3072), (2, 3, 32, 32), (2, 3072, 1)]),
    st.sampled_from([np.uint8, np.int64, np.float32, np.bool_, object]),
)
_structures = st.recursive(
    st.one_of(_leaf, _arrays),
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.dictionaries(st.sampled_from([b"data", b"labels", "data", "labels"]), kids),
    ),
    max_leaves=8,
).map(lambda obj: pickle.dumps(obj, protocol=4))


@FUZZ
@given(raw=st.one_of(malformed(_VALID_PY), malformed(_VALID_PY2), _structures))
def test_fuzz_cifar_python(tmp_path: Path, raw: bytes) -> None:
    f = tmp_path / "data_batch_1"
    f.write_bytes(raw)
    expect_data_error_or_valid(lambda: read_python_batch(f, "labels", 10), _check_batch)


# ---------------------------------------------------------------------------------------------- CIFAR binary

_VALID_BIN = cifar_bin_bytes(n=2)


@FUZZ
@given(raw=malformed(_VALID_BIN), label_bytes=st.sampled_from([1, 2]))
def test_fuzz_cifar_binary(tmp_path: Path, raw: bytes, label_bytes: int) -> None:
    f = tmp_path / "data_batch_1.bin"
    f.write_bytes(raw)
    expect_data_error_or_valid(lambda: read_binary_batch(f, label_bytes, 10), _check_batch)


# ---------------------------------------------------------------------------------------------- idx

_VALID_IDX3 = idx_bytes(np.arange(2 * 5 * 4).reshape(2, 5, 4) % 256)
_VALID_IDX1 = idx_bytes(np.arange(7) % 10)
_lying_headers = st.builds(
    lambda typ, dims, body: bytes([0, 0, typ, len(dims)]) + np.asarray(dims, ">u4").tobytes() + body,
    st.sampled_from([0x08, 0x09, 0x0B, 0x0D]),
    st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 6), max_size=4),
    st.binary(max_size=200),
)
_idx_inputs = st.one_of(malformed(_VALID_IDX3), malformed(_VALID_IDX1), _lying_headers)


@FUZZ
@given(raw=_idx_inputs, gz=st.sampled_from(["raw", "gz", "gz_truncated"]), ndim=st.sampled_from([1, 3]))
def test_fuzz_idx(tmp_path: Path, raw: bytes, gz: str, ndim: int) -> None:
    if gz == "raw":
        f = tmp_path / "train-images-idx3-ubyte"
        f.write_bytes(raw)
    else:
        f = tmp_path / "train-images-idx3-ubyte.gz"
        packed = gzip.compress(raw, mtime=0)
        f.write_bytes(packed if gz == "gz" else packed[: max(1, len(packed) // 2)])

    def check(a: np.ndarray) -> None:
        assert a.dtype == np.uint8 and a.ndim == ndim

    expect_data_error_or_valid(lambda: read_idx(f, ndim), check)


# ---------------------------------------------------------------------------------------------- HDF5


def _h5_bytes(x: np.ndarray, y: np.ndarray, classes: np.ndarray, key: str = "train") -> bytes:
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f[f"{key}_set_x"] = x
        f[f"{key}_set_y"] = y
        f["list_classes"] = classes
    return buf.getvalue()


@pytest.fixture(scope="module")
def valid_h5() -> bytes:
    pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    return _h5_bytes(rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8), np.array([0, 5, 2]), np.arange(6))


_h5_structures = st.builds(
    lambda xs, xdt, ys, key: (np.ones(xs, dtype=xdt), np.ones(ys, dtype=np.int64), key),
    st.lists(st.integers(0, 5), max_size=5).map(tuple),
    st.sampled_from([np.uint8, np.float32, np.int64, np.bool_]),
    st.lists(st.integers(0, 5), max_size=2).map(tuple),
    st.sampled_from(["train", "test"]),
)


@FUZZ
@given(data=st.data())
def test_fuzz_hdf5(tmp_path: Path, valid_h5: bytes, data: st.DataObject) -> None:
    from reslab.data.signs import read_signs_file

    if data.draw(st.booleans()):
        raw = data.draw(malformed(valid_h5))
    else:
        x, y, key = data.draw(_h5_structures)
        raw = _h5_bytes(x, y, np.arange(6), key)
    f = tmp_path / "train_signs.h5"
    f.write_bytes(raw)

    def check(out: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        x, y, _ = out
        assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[1] in (1, 3) and len(y) == len(x)

    expect_data_error_or_valid(lambda: read_signs_file(f, "train"), check)


# ---------------------------------------------------------------------------------------------- folder

_VALID_PNG = image_bytes("PNG", (9, 7))
_VALID_JPG = image_bytes("JPEG", (9, 7))


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    for cls in ("a", "b"):
        (root / cls).mkdir()
        (root / cls / "good.png").write_bytes(_VALID_PNG)
    return root


@FUZZ
@given(raw=st.one_of(malformed(_VALID_PNG), malformed(_VALID_JPG)), ext=st.sampled_from([".png", ".jpg"]))
def test_fuzz_image_folder(image_tree: Path, raw: bytes, ext: str) -> None:
    for old in image_tree.glob("b/fuzz.*"):
        old.unlink()
    (image_tree / "b" / f"fuzz{ext}").write_bytes(raw)

    def check(ds) -> None:  # type: ignore[no-untyped-def]
        assert ds.train_x.shape[1:] == (3, 7, 9) and len(ds.train_x) + len(ds.test_x) == 3

    expect_data_error_or_valid(lambda: load_folder(image_tree), check)


# ---------------------------------------------------------------------------------------------- archives
# Tar archives built from members that collide with the user's files, escape, link, repeat, nest a file
# under a file, or exceed the caps; compressed four ways, sometimes truncated. Whatever happens, the user's
# files are exactly as they were, nothing appears outside the data folder, the only new paths are the wanted
# files (and their folders), and no temporary folder is left.

_WANTED = ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"]
_NAMES = [
    *_WANTED,
    "cifar-10-batches-py",
    "cifar-10-batches-py/",
    "./cifar-10-batches-py/test_batch",
    "cifar-10-batches-py//data_batch_1",
    "cifar-10-batches-py/test_batch/inner",
    "cifar-10-batches-py/test_batch/",
    "cifar-10-batches-py\\test_batch",
    "C:cifar-10-batches-py/test_batch",
    "notes.txt",
    "mydata",
    "mydata/thesis.tex",
    "../outside.txt",
    "cifar-10-batches-py/../../outside.txt",
    "/tmp/absolute.txt",
    ".",
    "",
]
_SAFE_NAMES = [*_WANTED, "cifar-10-batches-py", "./cifar-10-batches-py/test_batch", "notes.txt", "mydata/a"]
_USER_FILES = {"notes.txt": b"my notes", "mydata/thesis.tex": b"years of work"}
_KINDS = ["file", "dir", "symlink", "hardlink", "fifo", "chardev"]
_pad = st.one_of(st.just(0), st.integers(0, 3000))
# three in four members are plain files or folders with ordinary names, so that many archives get as far as
# placing files; the rest are anything at all
_member = st.one_of(
    st.tuples(st.sampled_from(_SAFE_NAMES), st.just("file"), st.binary(max_size=64), _pad),
    st.tuples(st.sampled_from(_SAFE_NAMES), st.just("file"), st.binary(max_size=64), _pad),
    st.tuples(st.sampled_from(_SAFE_NAMES), st.sampled_from(["file", "dir"]), st.binary(max_size=64), _pad),
    st.tuples(st.sampled_from(_NAMES), st.sampled_from(_KINDS), st.binary(max_size=64), _pad),
)


def _tar_bytes(members: list[tuple[str, str, bytes, int]], compression: str) -> bytes:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, payload, pad in members:
            info = tarfile.TarInfo(name)
            data = payload + bytes(pad)  # zeros: a size bomb in miniature when pad is large
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
                "chardev": tarfile.CHRTYPE,
            }[kind]
            info.linkname = "../../outside.txt" if kind == "symlink" else "notes.txt"
            tar.addfile(info)
    raw = buf.getvalue()
    if compression == "gz":
        return gzip.compress(raw, mtime=0)
    if compression == "bz2":
        import bz2

        return bz2.compress(raw)
    if compression == "xz":
        import lzma

        return lzma.compress(raw)
    return raw


def _tree(root: Path) -> dict[str, bytes | str]:
    import os

    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            out[rel] = "link:" + os.readlink(p) if p.is_symlink() else "dir" if p.is_dir() else p.read_bytes()
    return out


@FUZZ
@given(
    members=st.one_of(  # names mostly distinct (so that many get as far as placing), or repeated
        st.lists(_member, max_size=6, unique_by=lambda m: str(PurePosixPath(m[0]))),
        st.lists(_member, max_size=6),
    ),
    compression=st.sampled_from(["", "gz", "bz2", "xz"]),
    cut=st.sampled_from([None, None, None, 0.5, 0.9]),
    preexisting=st.sampled_from(["none", "same", "different"]),
)
def test_fuzz_archive_extraction_keeps_user_files(
    tmp_path_factory: pytest.TempPathFactory,
    members: list[tuple[str, str, bytes, int]],
    compression: str,
    cut: float | None,
    preexisting: str,
) -> None:
    from reslab.data.archives import safe_extract

    sandbox = tmp_path_factory.mktemp("archive")
    data = sandbox / "data"
    (data / "mydata").mkdir(parents=True)
    for rel, content in _USER_FILES.items():
        (data / rel).write_bytes(content)
    raw = _tar_bytes(members, compression)
    if cut is not None:
        raw = raw[: int(len(raw) * cut)]
    archive = data / "cifar-10-python.tar.gz"
    archive.write_bytes(raw)
    if preexisting != "none":  # the user already has one of the wanted files, equal to the archive's or not
        (data / "cifar-10-batches-py").mkdir()
        first = next((p + bytes(n) for name, k, p, n in members if name == _WANTED[1] and k == "file"), b"")
        (data / _WANTED[1]).write_bytes(first if preexisting == "same" else first + b"user")
    before = _tree(sandbox)
    try:
        placed = safe_extract(archive, data, files=_WANTED, max_bytes=4096, max_members=8)
    except DataError as e:
        assert str(e) and "\n" not in str(e)
        assert _tree(sandbox) == before  # a refusal leaves everything exactly as it was
        return
    after = _tree(sandbox)
    assert set(placed) <= set(_WANTED)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing of the user's changed
    new = set(after) - set(before)
    assert new <= {"data/cifar-10-batches-py", *(f"data/{w}" for w in _WANTED)}
