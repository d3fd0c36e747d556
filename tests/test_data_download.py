"""The download path against a local HTTP server on 127.0.0.1 serving archives the tests build."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reslab.data import download, load_dataset
from reslab.data.download import Resource, download_file
from reslab.errors import DataError

try:
    from tests.test_data_builders import IDX_STEMS, make_cifar_py, make_idx, tar_dir
except ImportError:
    from test_data_builders import IDX_STEMS, make_cifar_py, make_idx, tar_dir  # type: ignore[no-redef]


class _Server:
    """Serves ``files`` (URL path -> bytes) with Range support; records each request's Range header."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges: list[str | None] = []
        self.fail_first = 0  # answer this many requests with 503 first
        self.honour_range = True
        self.cut_first = False  # send half of the first response, then drop the connection
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.ranges.append(self.headers.get("Range"))
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    self.send_error(503)
                    return
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                if rng and outer.honour_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                    body = body[start:]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut_first:
                    outer.cut_first = False
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    monkeypatch.setattr(download, "RETRY_BACKOFF_S", 0.0)
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    s = _Server()
    yield s
    s.close()


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def _cifar_archive(tmp_path: Path) -> bytes:
    src = make_cifar_py(tmp_path / "build", "cifar10", n=3)
    return tar_dir(tmp_path / "build" / "cifar-10-python.tar.gz", src).read_bytes()


def test_cifar_download_checksum_match_loads(tmp_path: Path, server: _Server, monkeypatch) -> None:
    body = _cifar_archive(tmp_path)
    server.files["/kriz/cifar-10-python.tar.gz"] = body
    monkeypatch.setitem(download.MIRRORS, "cifar10", [f"{server.url}/kriz/"])
    monkeypatch.setitem(download.RESOURCES, "cifar10", [Resource("cifar-10-python.tar.gz", _md5(body))])
    data = tmp_path / "data"
    ds = load_dataset("cifar10", data)
    assert ds.train_x.shape == (15, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
    assert (data / "cifar-10-python.tar.gz").read_bytes() == body
    assert not list(data.glob("*.part"))
    n = len(server.ranges)
    load_dataset("cifar10", data)  # second time: no network at all
    assert len(server.ranges) == n


def test_checksum_mismatch_is_data_error_and_leaves_no_file(
    tmp_path: Path, server: _Server, monkeypatch
) -> None:
    body = _cifar_archive(tmp_path)
    server.files["/kriz/cifar-10-python.tar.gz"] = body
    monkeypatch.setitem(download.MIRRORS, "cifar10", [f"{server.url}/kriz/"])
    monkeypatch.setitem(download.RESOURCES, "cifar10", [Resource("cifar-10-python.tar.gz", "0" * 32)])
    data = tmp_path / "data"
    with pytest.raises(DataError, match=r"could not download cifar-10-python\.tar\.gz .*checksum mismatch"):
        load_dataset("cifar10", data)
    assert not data.exists() or not any(data.rglob("*"))


def test_mnist_download_via_env_mirror(tmp_path: Path, server: _Server, monkeypatch) -> None:
    src = make_idx(tmp_path / "build", n_train=5, n_test=3, gz=True)
    res = []
    for stem in IDX_STEMS:
        body = (src / f"{stem}.gz").read_bytes()
        server.files[f"/mirror/mnist/{stem}.gz"] = body
        res.append(Resource(f"{stem}.gz", _md5(body), "mnist"))
    monkeypatch.setitem(download.RESOURCES, "mnist", res)
    monkeypatch.setitem(download.MIRRORS, "mnist", [])
    monkeypatch.setenv(download.MIRROR_ENV, f"{server.url}/mirror")
    ds = load_dataset("mnist", tmp_path / "data")
    assert ds.train_x.shape == (5, 1, 28, 28) and ds.test_y.shape == (3,)
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(
        f"{s}.gz" for s in IDX_STEMS
    )


def test_partial_file_resumed_with_range(tmp_path: Path, server: _Server) -> None:
    body = bytes(range(256)) * 40
    server.files["/f.bin"] = body
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(body[:3000])
    assert download_file([f"{server.url}/f.bin"], dest, md5=_md5(body)) == dest
    assert dest.read_bytes() == body and not (tmp_path / "f.bin.part").exists()
    assert server.ranges == ["bytes=3000-"]


def test_dropped_connection_is_retried_and_resumed(tmp_path: Path, server: _Server) -> None:
    body = bytes(range(256)) * 64
    server.files["/f.bin"] = body
    server.cut_first = True
    download_file([f"{server.url}/f.bin"], tmp_path / "f.bin", md5=_md5(body))
    assert (tmp_path / "f.bin").read_bytes() == body
    assert server.ranges == [None, f"bytes={len(body) // 2}-"]


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path, server: _Server) -> None:
    body = b"abcdef" * 1000
    server.files["/f.bin"] = body
    server.honour_range = False
    (tmp_path / "f.bin.part").write_bytes(b"XXXX")  # stale bytes that must not end up in the file
    download_file([f"{server.url}/f.bin"], tmp_path / "f.bin", md5=_md5(body))
    assert (tmp_path / "f.bin").read_bytes() == body


def test_complete_part_file_416_is_verified(tmp_path: Path, server: _Server) -> None:
    body = b"0123456789" * 10
    server.files["/f.bin"] = body
    (tmp_path / "f.bin.part").write_bytes(body)
    download_file([f"{server.url}/f.bin"], tmp_path / "f.bin", md5=_md5(body))
    assert (tmp_path / "f.bin").read_bytes() == body


def test_retry_after_server_errors_and_next_mirror(tmp_path: Path, server: _Server) -> None:
    body = b"payload" * 100
    server.files["/good/f.bin"] = body
    server.fail_first = 2  # two 503s, then success on the third attempt
    download_file([f"{server.url}/good/f.bin"], tmp_path / "f.bin", md5=_md5(body))
    assert len(server.ranges) == 3
    # a 404 on the first mirror moves on to the second
    download_file(
        [f"{server.url}/missing/g.bin", f"{server.url}/good/f.bin"], tmp_path / "g.bin", md5=_md5(body)
    )
    assert (tmp_path / "g.bin").read_bytes() == body


def test_server_down_is_data_error_naming_url_and_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(download, "RETRY_BACKOFF_S", 0.0)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"
    monkeypatch.setitem(download.MIRRORS, "cifar10", [f"http://127.0.0.1:{port}/"])
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    data = tmp_path / "data"
    with pytest.raises(
        DataError, match=rf"could not download cifar-10-python\.tar\.gz from {url} .*put the files in"
    ):
        load_dataset("cifar10", data)
    assert not list(data.rglob("*.tar.gz"))


def test_no_download_flag_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="allow downloads"):
        load_dataset("fashion-mnist", tmp_path, download=False)
