"""Extraction never destroys user data, and is bounded.

An archive is unpacked into a temporary folder inside the data folder; only the files the dataset needs are
moved into place, never over a file that differs; an archive that would unpack to far more than the dataset
(by bytes or by member count) is refused before anything is written; every refusal leaves no trace.
"""

from __future__ import annotations

import errno
import io
import os
import tarfile
from pathlib import Path

import pytest

from reslab.data import cifar, load_dataset
from reslab.errors import DataError

try:
    from tests.test_data_builders import make_cifar_py
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    from test_data_builders import make_cifar_py  # type: ignore[no-redef]

PY_DIR = "cifar-10-batches-py"


def snapshot(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every path under ``root`` -> (kind, content): files by bytes, links by target; links never followed."""
    out: dict[str, tuple[str, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p).encode())
            elif p.is_dir():
                out[rel] = ("dir", b"")
            elif p.is_file():
                out[rel] = ("file", p.read_bytes())
            else:
                out[rel] = ("other", b"")
    return out


def add_file(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def cifar_archive(path: Path, build: Path, extra: dict[str, bytes] | None = None, n: int = 2) -> Path:
    """A CIFAR-10 python archive (the official layout) plus ``extra`` members (name -> bytes)."""
    src = make_cifar_py(build, "cifar10", n=n)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src, arcname=PY_DIR)
        for name, payload in (extra or {}).items():
            add_file(tar, name, payload)
    return path


def no_temp_left(data: Path) -> bool:
    return not list(data.glob(".extract-*"))


def test_extra_top_level_members_never_touch_user_files(tmp_path: Path) -> None:
    # the example: a valid archive that also holds mydata/ and notes.txt
    data = tmp_path / "data"
    (data / "mydata").mkdir(parents=True)
    (data / "mydata" / "thesis.tex").write_text("years of work")
    (data / "notes.txt").write_text("my notes")
    extra = {"mydata/evil.txt": b"x", "notes.txt": b"overwritten", "other/new.txt": b"y"}
    cifar_archive(data / "cifar-10-python.tar.gz", tmp_path / "build", extra)
    before = snapshot(data)
    ds = load_dataset("cifar10", data, download=False)
    assert ds.train_x.shape == (10, 3, 32, 32)
    after = snapshot(data)
    assert {k: v for k, v in after.items() if k in before} == before  # every user path as it was
    new = set(after) - set(before)
    assert new == {PY_DIR} | {f"{PY_DIR}/{f}" for f in [*cifar.LAYOUTS["cifar10"].py_train, "test_batch"]} | {
        f"{PY_DIR}/batches.meta"
    }  # only what the dataset needs: no mydata/evil.txt, no other/
    assert no_temp_left(data)


def test_existing_target_that_differs_is_refused_and_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cifar_archive(data / "cifar-10-python.tar.gz", tmp_path / "build")
    (data / PY_DIR).mkdir()
    (data / PY_DIR / "data_batch_1").write_bytes(b"the user's own file")  # the folder is incomplete
    before = snapshot(data)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data, download=False)
    msg = str(err.value)
    assert "\n" not in msg and str(data / PY_DIR / "data_batch_1") in msg
    assert "differs" in msg and "move it away" in msg
    assert snapshot(data) == before  # refused before placing anything: not even the missing files
    assert no_temp_left(data)


def test_identical_existing_files_are_fine_and_missing_ones_filled_in(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cifar_archive(data / "cifar-10-python.tar.gz", tmp_path / "build")
    (data / PY_DIR).mkdir()
    same = (tmp_path / "build" / PY_DIR / "test_batch").read_bytes()
    (data / PY_DIR / "test_batch").write_bytes(same)
    (data / PY_DIR / "README.mine").write_text("kept")
    ds = load_dataset("cifar10", data, download=False)
    assert ds.test_x.shape == (2, 3, 32, 32)
    assert (data / PY_DIR / "README.mine").read_text() == "kept"
    assert (data / PY_DIR / "data_batch_5").is_file() and no_temp_left(data)


@pytest.mark.parametrize("kind", ["symlink_folder", "folder_is_file", "target_is_dir", "target_is_link"])
def test_targets_that_are_not_plain_files_are_refused(tmp_path: Path, kind: str) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("do not touch")
    cifar_archive(data / "cifar-10-python.tar.gz", tmp_path / "build")
    if kind == "symlink_folder":  # writing through it would land in elsewhere/
        (data / PY_DIR).symlink_to(elsewhere, target_is_directory=True)
    elif kind == "folder_is_file":
        (data / PY_DIR).write_text("a file where the folder goes")
    elif kind == "target_is_dir":
        (data / PY_DIR / "data_batch_2").mkdir(parents=True)
    else:
        (data / PY_DIR).mkdir()
        (data / PY_DIR / "data_batch_2").symlink_to(elsewhere / "precious")
    before, outside = snapshot(data), snapshot(elsewhere)
    with pytest.raises(DataError, match=r"refusing to extract .*cifar-10-python\.tar\.gz: .*move it away"):
        load_dataset("cifar10", data, download=False)
    assert snapshot(data) == before and snapshot(elsewhere) == outside and no_temp_left(data)


def test_size_bomb_refused_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 8 MiB of zeros is ~8 kB compressed; the cap is lowered so the test stays small (real cap: 512 MiB)
    monkeypatch.setattr(cifar, "ARCHIVE_MAX_BYTES", 1 << 20)
    data = tmp_path / "data"
    cifar_archive(data / "cifar-10-python.tar.gz", tmp_path / "build", {f"{PY_DIR}/zeros": bytes(8 << 20)})
    assert (data / "cifar-10-python.tar.gz").stat().st_size < 100_000
    before = snapshot(data)
    with pytest.raises(DataError, match=r"refusing to extract .*unpack to more than 1,048,576 bytes"):
        load_dataset("cifar10", data, download=False)
    assert snapshot(data) == before and no_temp_left(data)


def test_member_count_bomb_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    many = {f"junk/{i}": b"" for i in range(cifar.ARCHIVE_MAX_MEMBERS + 10)}
    cifar_archive(data / "cifar-10-python.tar.gz", tmp_path / "build", many)
    before = snapshot(data)
    with pytest.raises(
        DataError, match=rf"refusing to extract .*more than {cifar.ARCHIVE_MAX_MEMBERS} members"
    ):
        load_dataset("cifar10", data, download=False)
    assert snapshot(data) == before and no_temp_left(data)


def test_header_that_claims_gigabytes_is_refused_before_reading(tmp_path: Path) -> None:
    # a pax header is read whole by tarfile: one claiming 4 GiB must be refused, not read into memory
    from reslab.data.archives import safe_extract

    info = tarfile.TarInfo("pax")
    info.type = tarfile.XHDTYPE
    info.size = 4 << 30
    raw = info.tobuf(format=tarfile.GNU_FORMAT) + bytes(1 << 16)
    archive = tmp_path / "cifar-10-python.tar"
    archive.write_bytes(raw)
    with pytest.raises(DataError, match=r"claims to unpack\) to more than"):
        safe_extract(archive, tmp_path / "out", files=[f"{PY_DIR}/test_batch"], max_bytes=1 << 20)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("when", ["extract", "place"])
def test_full_disk_names_the_disk_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    from reslab.data import archives

    data = tmp_path / "data"
    cifar_archive(data / "cifar-10-python.tar.gz", tmp_path / "build")
    (data / "notes.txt").write_text("mine")
    before = snapshot(data)
    calls = {"n": 0}

    def full(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if when == "extract" or calls["n"] > 3:  # placing: fail after three files went in
            raise OSError(errno.ENOSPC, "No space left on device")
        real_place(*args, **kwargs)

    real_place = archives._place
    monkeypatch.setattr(archives, "_place" if when == "place" else "_extract", full)
    with pytest.raises(DataError, match=r"no space left on the disk of .*data while extracting"):
        load_dataset("cifar10", data, download=False)
    assert snapshot(data) == before  # the files (and the folder) placed so far were removed again
    assert no_temp_left(data)


def test_duplicate_and_file_folder_members_refused(tmp_path: Path) -> None:
    from reslab.data.archives import safe_extract

    for extra in ({f"{PY_DIR}/test_batch": b"second copy"}, {f"{PY_DIR}/test_batch/inner": b"x"}):
        data = tmp_path / f"d{len(str(extra))}"
        archive = cifar_archive(tmp_path / "a.tar.gz", tmp_path / "build", extra)
        with pytest.raises(
            DataError, match=r"refusing to extract .*(appears twice|both a file and a folder)"
        ):
            safe_extract(archive, data, files=[f"{PY_DIR}/test_batch"])
        assert not data.exists()
