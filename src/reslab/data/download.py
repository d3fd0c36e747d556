"""Download dataset archives: mirrors, resume, retry, size cap, checksum, atomic rename.

A file is fetched to ``FILE.part``; an existing ``.part`` is resumed with an HTTP ``Range`` request;
transient network failures are retried with exponential backoff; the finished file must match its published
MD5 (the checksums torchvision also lists) before it is renamed into place. A file that fails its checksum is
deleted and never used. On a terminal a progress bar shows the bytes received; pipes and logs get only the
one "downloading" line.

Bounded: every official file has a known size, and no more bytes than that are ever written (a mirror that
streams without end, or announces more, is cut off and its bytes deleted), so ``FILE.part`` never exceeds
the real file. The disk's free space is checked before the first byte. Failures name their real cause: a
full disk or an unwritable folder stops at once with that message (no retry, nothing blamed on the network),
a wrong file (too large, bad checksum) moves on to the next mirror.

Mirrors can be overridden for tests or air-gapped sites:

- ``MIRRORS[dataset]`` is a list of base URLs, each joined as ``base + filename``;
- the environment variable ``RESLAB_MIRROR`` (a base URL) is tried first, as ``$RESLAB_MIRROR/DATASET/FILE``;
- :func:`download_file` and :func:`fetch_dataset` take explicit URLs / mirrors.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from reslab.errors import DataError
from reslab.files import GiB, free_disk_bytes

MIRROR_ENV = "RESLAB_MIRROR"
RETRIES = 3  # attempts per URL before moving to the next mirror
RETRY_BACKOFF_S = 1.0  # sleep before retry k is RETRY_BACKOFF_S * 2**k; tests set it to 0
TIMEOUT_S = 30.0  # socket timeout per request
MAX_DOWNLOAD_BYTES = 1 * GiB  # cap for a file whose size is not known (every official file's is)
_CHUNK = 1 << 20
SHOW_PROGRESS = True  # a progress bar on a terminal (never in a pipe or a log file)


@dataclass(frozen=True)
class Resource:
    """One file of a dataset: its name on the server, its MD5, its sub-folder and its size in bytes."""

    filename: str
    md5: str
    subdir: str = ""  # relative to data_dir; idx datasets share file names, so each gets its own folder
    size: int | None = None  # exact bytes of the official file: the download stops there


MIRRORS: dict[str, list[str]] = {
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
    "cifar100": ["https://www.cs.toronto.edu/~kriz/"],
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}

# Published MD5s of the official files (the same figures as torchvision/datasets/{cifar,mnist}.py) and their
# sizes in bytes (as the servers send them).
RESOURCES: dict[str, list[Resource]] = {
    "cifar10": [Resource("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "", 170_498_071)],
    "cifar100": [Resource("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", "", 169_001_437)],
    "mnist": [
        Resource("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", "mnist", 9_912_422),
        Resource("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", "mnist", 28_881),
        Resource("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", "mnist", 1_648_877),
        Resource("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", "mnist", 4_542),
    ],
    "fashion-mnist": [
        Resource(
            "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "fashion-mnist", 26_421_880
        ),
        Resource("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", "fashion-mnist", 29_515),
        Resource("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", "fashion-mnist", 4_422_102),
        Resource("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", "fashion-mnist", 5_148),
    ],
}


def md5sum(path: str | Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def mirror_urls(dataset: str, filename: str, mirrors: Sequence[str] | None = None) -> list[str]:
    """The URLs tried for ``filename`` of ``dataset``, in order."""
    urls: list[str] = []
    env = os.environ.get(MIRROR_ENV, "").strip()
    if env:
        urls.append(f"{env.rstrip('/')}/{dataset}/{filename}")
    for base in MIRRORS.get(dataset, []) if mirrors is None else mirrors:
        urls.append(base if base.endswith(filename) else base.rstrip("/") + "/" + filename)
    return urls


class _WrongFile(Exception):
    """The mirror sent the wrong file (too large, bad checksum): its bytes are deleted, no retry helps."""


class _LocalError(Exception):
    """Writing the file here failed (full disk, no permission): no mirror can fix that."""

    def __init__(self, err: OSError) -> None:
        super().__init__(str(err))
        self.err = err


def _open_part(part: Path, append: bool) -> BinaryIO:
    """Open our ``.part`` file for writing, never through a link and never anything but a regular file."""
    with_part = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(part, with_part | (os.O_APPEND if append else os.O_TRUNC), 0o644)
    except OSError as e:
        raise _LocalError(e) from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # pragma: no cover - O_NOFOLLOW and the lstat check stop it
        os.close(fd)
        raise _LocalError(OSError(errno.EINVAL, "not a regular file", str(part)))
    return os.fdopen(fd, "ab" if append else "wb")


def _part_size(part: Path) -> int:
    try:
        st = os.lstat(part)
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(st.st_mode):
        raise DataError(
            f"{part} is not a regular file (a link, folder or FIFO); reslab keeps its partial downloads "
            "there, remove it and run again"
        )
    return st.st_size


class _NoBar:
    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def _bar(total: int | None, initial: int, name: str) -> Iterator[Any]:
    """A tqdm bar of the bytes received when stderr is a terminal; nothing in logs, pipes and CI."""
    isatty = getattr(sys.stderr, "isatty", None)
    if not SHOW_PROGRESS or isatty is None or not isatty():
        yield _NoBar()
        return
    from tqdm import tqdm

    with tqdm(
        total=total, initial=initial, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
        file=sys.stderr, leave=False, dynamic_ncols=True,
    ) as bar:  # fmt: skip
        yield bar


def _fetch_once(url: str, part: Path, cap: int) -> None:
    """Fetch ``url`` into ``part``, resuming when the server honours Range; never past ``cap`` bytes."""
    have = _part_size(part)
    if have >= cap:  # complete (the caller checks the checksum), or a stale over-long part
        return
    req = urllib.request.Request(url, headers={"User-Agent": "reslab"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part is already complete (or longer than the file): check it
            return
        raise
    with resp:
        status = getattr(resp, "status", 200)
        resumed = bool(have) and status == 206
        start = have if resumed else 0  # 200: the server ignored Range, start over
        written = start
        announced = resp.headers.get("Content-Length")
        if announced is not None and announced.isdigit() and written + int(announced) > cap:
            raise _WrongFile(
                f"{url} sends {written + int(announced):,} bytes, more than the {cap:,} expected"
            )
        total = start + int(announced) if announced is not None and announced.isdigit() else None
        with _open_part(part, append=resumed) as f, _bar(total, start, part.name[: -len(".part")]) as bar:
            while chunk := resp.read(min(_CHUNK, cap - written + 1)):
                if written + len(chunk) > cap:  # never write past the expected size
                    raise _WrongFile(f"{url} sends more than the {cap:,} bytes expected")
                try:
                    f.write(chunk)
                    f.flush()
                except OSError as e:
                    raise _LocalError(e) from e
                written += len(chunk)
                bar.update(len(chunk))
        if announced is not None and announced.isdigit() and written - start != int(announced):
            # a dropped connection: resume on the next try
            raise http.client.IncompleteRead(b"", int(announced) - (written - start))


def _local_failure(err: OSError, dest: Path, size: int | None) -> DataError:
    need = f" (it needs {size:,} bytes)" if size else ""
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return DataError(
            f"no space left on the disk of {dest.parent} while downloading {dest.name}{need}; "
            "free some space and run again (the download resumes), or use another data folder"
        )
    return DataError(
        f"cannot write {dest.name} in {dest.parent}: {err.strerror or err}; check the folder's permissions "
        "or use another data folder"
    )


def download_file(
    urls: Sequence[str], dest: str | Path, *, md5: str | None = None, size: int | None = None
) -> Path:
    """Download the first URL of ``urls`` that works into ``dest`` and verify its size and MD5.

    ``dest`` is left untouched if it already exists. A ``dest.part`` from an earlier attempt is resumed.
    No more than ``size`` bytes (:data:`MAX_DOWNLOAD_BYTES` if unknown) are ever written.

    Raises:
        DataError: the disk is full or the folder unwritable (at once, naming that cause); or every URL
            failed: the last error of each is named (network, HTTP status, too large, checksum mismatch;
            a wrong file is deleted).
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    cap = size if size is not None else MAX_DOWNLOAD_BYTES
    part = _prepare_part(dest, size, cap)
    errors: dict[str, str] = {}  # url -> its last error
    wrong_file = False
    for url in urls:
        for attempt in range(RETRIES):
            try:
                _download_once(url, part, dest, cap=cap, size=size, md5=md5)
                return dest
            except _LocalError as e:
                raise _local_failure(e.err, dest, size) from None
            except _WrongFile as e:
                part.unlink(missing_ok=True)
                errors[url], wrong_file = str(e), True
                break  # a wrong file will not become right on retry; try the next mirror
            except urllib.error.HTTPError as e:
                errors[url] = f"{url}: HTTP {e.code}"
                if e.code < 500:
                    break
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
                errors[url] = f"{url}: {getattr(e, 'reason', e)}"
            if attempt + 1 < RETRIES:
                time.sleep(RETRY_BACKOFF_S * 2**attempt)
    summary = "; ".join(errors.values()) if errors else "no URL to try"
    where = urls[0] if urls else "(no mirror)"
    fix = "the wrong file was deleted, put a verified copy" if wrong_file else "put the files"
    raise DataError(
        f"could not download {dest.name} from {where} ({summary}); {fix} in {dest.parent} yourself"
    )


def _prepare_part(dest: Path, size: int | None, cap: int) -> Path:
    """The ``.part`` file to (re)start from, after checking the disk has room; creates the folder."""
    part = dest.with_name(dest.name + ".part")
    have = _part_size(part)
    if have > cap:  # longer than the file can be: not a partial download of it (and reslab's own name)
        part.unlink()
        have = 0
    free = free_disk_bytes(dest.parent)
    if size is not None and free is not None and size - have > free:
        raise DataError(
            f"downloading {dest.name} needs {size - have:,} more bytes but only {free:,} are free on the "
            f"disk of {dest.parent}; free some space or use another data folder"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _local_failure(e, dest, size) from e
    return part


def _download_once(url: str, part: Path, dest: Path, *, cap: int, size: int | None, md5: str | None) -> None:
    """One attempt: fetch (resuming ``part``), check size and MD5, move into place."""
    print(f"reslab: downloading {url} -> {dest}", file=sys.stderr)
    _fetch_once(url, part, cap)
    got = _part_size(part)
    if size is not None and got < size:  # cut short without saying so: resume on the next try
        raise http.client.IncompleteRead(b"", size - got)
    if md5 is not None and md5sum(part) != md5.lower():
        raise _WrongFile(f"checksum mismatch from {url}")
    os.replace(part, dest)


def fetch_dataset(dataset: str, data_dir: str | Path, *, mirrors: Sequence[str] | None = None) -> list[Path]:
    """Download every missing file of ``dataset`` into ``data_dir`` and return their paths.

    Raises:
        DataError: the dataset cannot be downloaded, or a download failed (see :func:`download_file`).
    """
    if dataset not in RESOURCES:
        raise DataError(f"{dataset} cannot be downloaded; put its files in {data_dir} yourself")
    todo = [(res, Path(data_dir) / res.subdir / res.filename) for res in RESOURCES[dataset]]
    need = sum(res.size or 0 for res, dest in todo if not dest.exists())
    free = free_disk_bytes(data_dir)
    if free is not None and need > free:
        raise DataError(
            f"downloading {dataset} needs {need:,} bytes but only {free:,} are free on the disk of "
            f"{data_dir}; free some space or use another data folder"
        )
    return [
        download_file(mirror_urls(dataset, res.filename, mirrors), dest, md5=res.md5, size=res.size)
        for res, dest in todo
    ]
