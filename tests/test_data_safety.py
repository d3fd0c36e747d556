"""No code from data: the restricted unpickler and safe tar extraction."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from reslab.data import load_dataset
from reslab.data.archives import safe_extract
from reslab.data.safety import safe_unpickle
from reslab.errors import DataError

try:
    from tests.test_data_builders import cifar_py_bytes, make_cifar_py, py2_cifar_pickle, tar_dir
except ImportError:
    from test_data_builders import cifar_py_bytes, make_cifar_py, py2_cifar_pickle, tar_dir  # type: ignore[no-redef]


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def _crafted(module: str, name: str, arg: str) -> bytes:
    # protocol-0 GLOBAL + REDUCE, the classic shape of a malicious pickle
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


def test_unpickler_refuses_os_system_and_never_runs_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "data_batch_1"
    evil.write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": [0]}))
    with pytest.raises(
        DataError, match=r"refusing to unpickle (posix|os|nt)\.system from .*not a CIFAR batch"
    ):
        safe_unpickle(evil)
    assert not marker.exists()


@pytest.mark.parametrize(
    "module,name",
    [("builtins", "eval"), ("builtins", "exec"), ("subprocess", "call"), ("os", "system"), ("numpy", "load")],
)
def test_unpickler_refuses_any_other_global(tmp_path: Path, module: str, name: str) -> None:
    marker = tmp_path / "pwned"
    f = tmp_path / "batch"
    f.write_bytes(_crafted(module, name, f"open('{marker}', 'w')"))
    with pytest.raises(DataError, match=f"refusing to unpickle {module}.{name}"):
        safe_unpickle(f)
    assert not marker.exists()


def test_unpickler_builds_arrays_dicts_lists_bytes_numbers(tmp_path: Path) -> None:
    obj = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2.5, True, None], "b": b"x"}
    for proto in (3, 4):
        f = tmp_path / f"p{proto}"
        f.write_bytes(pickle.dumps(obj, protocol=proto))
        out = safe_unpickle(f)
        assert np.array_equal(out[b"data"], obj[b"data"]) and out["labels"] == obj["labels"]


def test_unpickler_reads_python2_cifar_pickles(tmp_path: Path) -> None:
    # The official files were written by Python 2 (protocol 2, numpy.core.multiarray, str data).
    data = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    raw = py2_cifar_pickle(data, [1, 0, 9])
    assert pickle.loads(raw, encoding="latin1")["labels"] == [1, 0, 9]  # the emulation is a valid pickle
    f = tmp_path / "data_batch_1"
    f.write_bytes(raw)
    out = safe_unpickle(f)
    assert np.array_equal(out["data"], data) and out["data"].dtype == np.uint8


def test_cifar_dir_with_evil_batch_is_refused(tmp_path: Path) -> None:
    d = make_cifar_py(tmp_path, "cifar10")
    marker = tmp_path / "pwned"
    (d / "data_batch_2").write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": []}))
    with pytest.raises(DataError, match="data_batch_2"):
        load_dataset("cifar10", tmp_path, download=False)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- tar


def _add(tar: tarfile.TarFile, info: tarfile.TarInfo, payload: bytes = b"") -> None:
    info.size = len(payload) if info.isfile() else 0
    tar.addfile(info, io.BytesIO(payload) if info.isfile() else None)


def _member(kind: str, outside: Path) -> list[tarfile.TarInfo]:
    ok = tarfile.TarInfo("cifar-10-batches-py/readme.txt")
    if kind == "dotdot":
        bad = tarfile.TarInfo(f"cifar-10-batches-py/../../{outside.name}")
    elif kind == "absolute":
        bad = tarfile.TarInfo(str(outside))
    elif kind == "symlink":
        bad = tarfile.TarInfo("cifar-10-batches-py/link")
        bad.type, bad.linkname = tarfile.SYMTYPE, str(outside.parent)
    elif kind == "symlink_relative":
        bad = tarfile.TarInfo("cifar-10-batches-py/link")
        bad.type, bad.linkname = tarfile.SYMTYPE, "../../"
    elif kind == "hardlink":
        bad = tarfile.TarInfo("cifar-10-batches-py/hard")
        bad.type, bad.linkname = tarfile.LNKTYPE, str(outside)
    elif kind == "chardev":
        bad = tarfile.TarInfo("cifar-10-batches-py/null")
        bad.type, bad.devmajor, bad.devminor = tarfile.CHRTYPE, 1, 3
    elif kind == "blockdev":
        bad = tarfile.TarInfo("cifar-10-batches-py/sda")
        bad.type, bad.devmajor, bad.devminor = tarfile.BLKTYPE, 8, 0
    else:
        bad = tarfile.TarInfo("cifar-10-batches-py/fifo")
        bad.type = tarfile.FIFOTYPE
    # after the bad member, a file that would land outside through the link if it were followed
    through = tarfile.TarInfo(f"cifar-10-batches-py/link/{outside.name}")
    return [ok, bad, through]


KINDS = ["dotdot", "absolute", "symlink", "symlink_relative", "hardlink", "chardev", "blockdev", "fifo"]


@pytest.mark.parametrize("kind", KINDS)
def test_unsafe_tar_members_refused_and_nothing_written(tmp_path: Path, kind: str) -> None:
    sandbox = tmp_path / "sandbox"
    data = sandbox / "data"
    data.mkdir(parents=True)
    outside = sandbox / "escaped.txt"
    archive = data / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for info in _member(kind, outside):
            _add(tar, info, b"owned")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(DataError, match=r"refusing to extract .*cifar-10-python\.tar\.gz"):
        safe_extract(archive, data, files=["cifar-10-batches-py/readme.txt"])
    with pytest.raises(DataError, match="refusing to extract"):
        load_dataset("cifar10", data, download=False)
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before  # nothing written anywhere: not outside, not even inside
    assert not outside.exists()


def test_safe_extract_writes_regular_files(tmp_path: Path) -> None:
    src = make_cifar_py(tmp_path / "build", "cifar10", n=2)
    archive = tar_dir(tmp_path / "a.tar.gz", src)
    dest = tmp_path / "dest"
    wanted = ["cifar-10-batches-py/test_batch", "cifar-10-batches-py/batches.meta"]
    assert safe_extract(archive, dest, files=wanted) == sorted(wanted)
    assert (dest / "cifar-10-batches-py" / "test_batch").read_bytes() == (src / "test_batch").read_bytes()
    assert [p.name for p in dest.iterdir()] == ["cifar-10-batches-py"]  # no temporary folder left
    assert sorted(p.name for p in (dest / "cifar-10-batches-py").iterdir()) == ["batches.meta", "test_batch"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_archive_is_data_error(tmp_path: Path, damage: str) -> None:
    src = make_cifar_py(tmp_path / "build", "cifar10", n=2)
    archive = tar_dir(tmp_path / "cifar-10-python.tar.gz", src)
    raw = archive.read_bytes()
    archive.write_bytes({"truncated": raw[: len(raw) // 2], "garbage": os.urandom(500), "empty": b""}[damage])
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz"):
        safe_extract(archive, tmp_path / "out", files=["cifar-10-batches-py/test_batch"])
    assert not (tmp_path / "out").exists()  # refused before anything was created


def test_plain_bytes_pickle_is_not_a_batch(tmp_path: Path) -> None:
    f = tmp_path / "b"
    f.write_bytes(cifar_py_bytes()[:-1])  # drop the STOP opcode
    with pytest.raises(DataError, match="not a valid CIFAR batch"):
        safe_unpickle(f)
