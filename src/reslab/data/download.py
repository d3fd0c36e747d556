"""Download dataset archives: mirrors, resume, retry, checksum, atomic rename.

A file is fetched to ``FILE.part``; an existing ``.part`` is resumed with an HTTP ``Range`` request;
transient failures are retried with exponential backoff; the finished file must match its published MD5
(the checksums torchvision also lists) before it is renamed into place. A file that fails its checksum is
deleted and never used.

Mirrors can be overridden for tests or air-gapped sites:

- ``MIRRORS[dataset]`` is a list of base URLs, each joined as ``base + filename``;
- the environment variable ``RESLAB_MIRROR`` (a base URL) is tried first, as ``$RESLAB_MIRROR/DATASET/FILE``;
- :func:`download_file` and :func:`fetch_dataset` take explicit URLs / mirrors.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reslab.errors import DataError

MIRROR_ENV = "RESLAB_MIRROR"
RETRIES = 3  # attempts per URL before moving to the next mirror
RETRY_BACKOFF_S = 1.0  # sleep before retry k is RETRY_BACKOFF_S * 2**k; tests set it to 0
TIMEOUT_S = 30.0  # socket timeout per request
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Resource:
    """One file of a dataset: its name on the server, its MD5, and the sub-folder it goes to."""

    filename: str
    md5: str
    subdir: str = ""  # relative to data_dir; idx datasets share file names, so each gets its own folder


MIRRORS: dict[str, list[str]] = {
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
    "cifar100": ["https://www.cs.toronto.edu/~kriz/"],
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}

# Published MD5s of the official files (the same figures as torchvision/datasets/{cifar,mnist}.py).
RESOURCES: dict[str, list[Resource]] = {
    "cifar10": [Resource("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")],
    "cifar100": [Resource("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")],
    "mnist": [
        Resource("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", "mnist"),
        Resource("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", "mnist"),
        Resource("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", "mnist"),
        Resource("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", "mnist"),
    ],
    "fashion-mnist": [
        Resource("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "fashion-mnist"),
        Resource("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", "fashion-mnist"),
        Resource("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", "fashion-mnist"),
        Resource("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", "fashion-mnist"),
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


class _ChecksumError(Exception):
    pass


def _fetch_once(url: str, part: Path) -> None:
    """Fetch ``url`` into ``part``, resuming from its current size when the server honours Range."""
    have = part.stat().st_size if part.exists() else 0
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
        mode = "ab" if have and status == 206 else "wb"  # 200: the server ignored Range, start over
        written = 0
        with open(part, mode) as f:
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                written += len(chunk)
        expected = resp.headers.get("Content-Length")
        if expected is not None and written != int(expected):  # a dropped connection: resume next try
            raise http.client.IncompleteRead(b"", int(expected) - written)


def download_file(urls: Sequence[str], dest: str | Path, *, md5: str | None = None) -> Path:
    """Download the first URL of ``urls`` that works into ``dest`` and verify its MD5.

    ``dest`` is left untouched if it already exists. A ``dest.part`` from an earlier attempt is resumed.

    Raises:
        DataError: every URL failed, or the file failed its checksum (the bad file is deleted).
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors: list[str] = []
    for url in urls:
        for attempt in range(RETRIES):
            try:
                print(f"reslab: downloading {url} -> {dest}", file=sys.stderr)
                _fetch_once(url, part)
                if md5 is not None and md5sum(part) != md5.lower():
                    part.unlink(missing_ok=True)
                    raise _ChecksumError(f"checksum mismatch from {url}")
                os.replace(part, dest)
                return dest
            except _ChecksumError as e:
                errors.append(str(e))
                break  # a wrong file will not become right on retry; try the next mirror
            except urllib.error.HTTPError as e:
                errors.append(f"{url}: HTTP {e.code}")
                if e.code < 500:
                    break
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
                reason = getattr(e, "reason", e)
                errors.append(f"{url}: {reason}")
            if attempt + 1 < RETRIES:
                time.sleep(RETRY_BACKOFF_S * 2**attempt)
    last = errors[-1] if errors else "no URL to try"
    where = urls[0] if urls else "(no mirror)"
    if any("checksum" in e for e in errors):
        raise DataError(
            f"could not download {dest.name} from {where} ({last}); the file was deleted, "
            f"put a verified copy in {dest.parent} yourself"
        )
    raise DataError(
        f"could not download {dest.name} from {where} ({last}); put the files in {dest.parent} yourself"
    )


def fetch_dataset(dataset: str, data_dir: str | Path, *, mirrors: Sequence[str] | None = None) -> list[Path]:
    """Download every missing file of ``dataset`` into ``data_dir`` and return their paths.

    Raises:
        DataError: the dataset cannot be downloaded, or a download failed (see :func:`download_file`).
    """
    if dataset not in RESOURCES:
        raise DataError(f"{dataset} cannot be downloaded; put its files in {data_dir} yourself")
    out = []
    for res in RESOURCES[dataset]:
        dest = Path(data_dir) / res.subdir / res.filename
        out.append(download_file(mirror_urls(dataset, res.filename, mirrors), dest, md5=res.md5))
    return out
