"""Bounded, non-blocking reads and downloads.

Every file reslab reads is opened only if it is a regular file, never waited on (a FIFO), never read past a
cap (a link to /dev/zero); a download never writes more than the file's known size, and its failure names
the real cause (a mirror that streams without end, a full disk) instead of the last network error.
"""

from __future__ import annotations

import errno
import hashlib
import http.server
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reslab.errors import CheckpointError, DataError

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and /dev/zero (POSIX)")


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fail (instead of hanging the suite) if the test blocks for more than 10 s, e.g. on a FIFO."""

    def boom(*_: object) -> None:
        raise TimeoutError("blocked for 10 s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _hostile(tmp_path: Path, kind: str) -> Path:
    p = tmp_path / f"{kind}.json"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "dir":
        p.mkdir()
    elif kind == "dev_zero_link":
        p.symlink_to("/dev/zero")
    elif kind == "huge":
        with open(p, "wb") as f:
            f.truncate(64 << 20)  # sparse: 64 MiB of apparent size, no disk
    return p


# ---------------------------------------------------------------------------------------------- read_bounded


@pytest.mark.parametrize(
    "kind,said",
    [
        ("fifo", "is a FIFO"),
        ("dir", "is a directory"),
        ("dev_zero_link", "is a character device"),
        ("huge", "67,108,864 bytes, more than the 1,048,576"),
        ("missing", "does not exist"),
    ],
)
def test_read_bounded_refuses_without_blocking(tmp_path: Path, no_hang: None, kind: str, said: str) -> None:
    from reslab.files import read_bounded

    p = _hostile(tmp_path, kind)
    with pytest.raises(DataError) as err:
        read_bounded(p, 1 << 20, "config.json")
    assert said in str(err.value) and str(p) in str(err.value) and "\n" not in str(err.value)


def test_read_bounded_reads_regular_files_and_links_to_them(tmp_path: Path) -> None:
    from reslab.files import read_bounded, read_text_bounded

    f = tmp_path / "config.json"
    f.write_text('{"lr": 0.1}')
    (tmp_path / "link.json").symlink_to(f)
    assert read_bounded(f, 100, "config.json") == b'{"lr": 0.1}'
    assert read_text_bounded(tmp_path / "link.json", 100, "config.json") == '{"lr": 0.1}'
    with pytest.raises(CheckpointError, match="symbolic link"):  # the engine's own error class, links off
        read_bounded(
            tmp_path / "link.json", 100, "manifest.json", follow_symlinks=False, error=CheckpointError
        )
    f.write_bytes(b"\xff\xfe{}")
    with pytest.raises(DataError, match="is not UTF-8 text"):
        read_text_bounded(f, 100, "metrics.jsonl")


def test_cifar_class_list_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path, no_hang: None) -> None:
    # the loaders find files by name: a FIFO (or a link to /dev/zero) in a dataset folder must not hang
    from reslab.data import load_dataset

    try:
        from tests.test_data_builders import make_cifar_py
    except ImportError:
        from test_data_builders import make_cifar_py  # type: ignore[no-redef]
    d = make_cifar_py(tmp_path, "cifar10", n=2)
    (d / "batches.meta").unlink()
    os.mkfifo(d / "batches.meta")
    with pytest.raises(DataError, match=r"batches\.meta is a FIFO"):
        load_dataset("cifar10", tmp_path, download=False)


@pytest.mark.parametrize("kind", ["fifo", "dir", "dev_zero_link"])
def test_image_reader_refuses_non_files(tmp_path: Path, no_hang: None, kind: str) -> None:
    from reslab.data.images import read_image_chw

    p = _hostile(tmp_path, kind)
    with pytest.raises(DataError, match=r"image .* is (a FIFO|a directory|a character device)"):
        read_image_chw(p, (3, 8, 8))


# ---------------------------------------------------------------------------------------------- downloads

_SAFETY_STOP = 64 << 20  # the "endless" mirror gives up here, so that a broken client cannot fill the disk


class _Mirror:
    """A local HTTP mirror: ``/zeros`` streams zeros without a length, ``/liar`` announces a terabyte,
    ``/ok`` serves ``body``, ``/half`` sends half of it (no length) unless asked for a range. While
    streaming zeros it records the largest ``.part`` size it sees on disk."""

    def __init__(self, body: bytes, part: Path) -> None:
        self.body, self.part, self.largest_part, self.requests = body, part, 0, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if self.path == "/half":  # no length; half the file, then the next request resumes
                    rng = self.headers.get("Range")
                    start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
                    self.send_response(206 if rng else 200)
                    self.end_headers()
                    self.wfile.write(outer.body[start:] if rng else outer.body[: len(outer.body) // 2])
                    return
                if self.path == "/ok":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(outer.body)))
                    self.end_headers()
                    self.wfile.write(outer.body)
                    return
                self.send_response(200)
                if self.path == "/liar":
                    self.send_header("Content-Length", str(10**12))
                self.end_headers()
                sent = 0
                try:
                    while sent < _SAFETY_STOP:
                        with_part = outer.part.stat().st_size if outer.part.exists() else 0
                        outer.largest_part = max(outer.largest_part, with_part)
                        self.wfile.write(bytes(1 << 14))
                        sent += 1 << 14
                except OSError:  # the client hung up: what a bounded client does
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Mirror]:
    from reslab.data import download

    monkeypatch.setattr(download, "RETRY_BACKOFF_S", 0.0)
    m = _Mirror(b"the real file " * 100, tmp_path / "f.bin.part")
    yield m
    m.close()


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


@pytest.mark.parametrize("path", ["/zeros", "/liar"])
def test_endless_mirror_is_cut_at_the_expected_size(tmp_path: Path, mirror: _Mirror, path: str) -> None:
    from reslab.data.download import download_file

    size = len(mirror.body)
    with pytest.raises(DataError) as err:
        download_file([mirror.url + path], tmp_path / "f.bin", md5=_md5(mirror.body), size=size)
    msg = str(err.value)
    assert f"more than the {size:,} expected" in msg or f"more than the {size:,} bytes expected" in msg
    assert "\n" not in msg and "wrong file was deleted" in msg
    assert mirror.largest_part <= size  # never more on disk than the real file
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()
    assert mirror.requests == 1  # a wrong file is not retried


def test_each_mirror_failure_is_named_not_only_the_last(tmp_path: Path, mirror: _Mirror) -> None:
    from reslab.data.download import download_file

    with socket.socket() as s:  # a port nobody listens on: the last mirror fails on the network
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/f.bin"
    size = len(mirror.body)
    with pytest.raises(DataError, match=rf"/zeros sends more than the {size:,} bytes expected.*{dead}"):
        download_file([mirror.url + "/zeros", dead], tmp_path / "f.bin", md5=_md5(mirror.body), size=size)


def test_over_long_part_is_discarded_and_the_file_fetched(tmp_path: Path, mirror: _Mirror) -> None:
    from reslab.data.download import download_file

    (tmp_path / "f.bin.part").write_bytes(bytes(len(mirror.body) + 5))  # cannot be a partial download
    out = download_file(
        [mirror.url + "/ok"], tmp_path / "f.bin", md5=_md5(mirror.body), size=len(mirror.body)
    )
    assert out.read_bytes() == mirror.body and not (tmp_path / "f.bin.part").exists()


def test_connection_cut_without_a_length_is_resumed_not_deleted(tmp_path: Path, mirror: _Mirror) -> None:
    from reslab.data.download import download_file

    out = download_file(
        [mirror.url + "/half"], tmp_path / "f.bin", md5=_md5(mirror.body), size=len(mirror.body)
    )
    assert out.read_bytes() == mirror.body and mirror.requests == 2


def test_full_disk_is_reported_as_such_and_not_retried(
    tmp_path: Path, mirror: _Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reslab.data import download

    class _Full:
        def __enter__(self) -> _Full:
            return self

        def __exit__(self, *args: object) -> None:
            pass

        def write(self, b: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None:
            pass

    monkeypatch.setattr(download, "_open_part", lambda part, append: _Full())
    with pytest.raises(DataError, match=r"no space left on the disk of .* while downloading f\.bin"):
        download.download_file([mirror.url + "/ok"], tmp_path / "f.bin", size=len(mirror.body))
    assert mirror.requests == 1


def test_too_little_free_space_is_refused_before_any_request(
    tmp_path: Path, mirror: _Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reslab.data import download

    monkeypatch.setattr(download, "free_disk_bytes", lambda folder: 100)
    with pytest.raises(DataError, match=r"needs 1,400 more bytes but only 100 are free"):
        download.download_file([mirror.url + "/ok"], tmp_path / "f.bin", size=len(mirror.body))
    assert mirror.requests == 0


def test_every_official_file_has_its_size() -> None:
    from reslab.data.download import RESOURCES

    assert all(isinstance(r.size, int) and r.size > 0 for rs in RESOURCES.values() for r in rs)
