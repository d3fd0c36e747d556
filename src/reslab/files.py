"""Reading files reslab did not write itself (regular files only, never blocking, never more than a cap),
and writing every file reslab makes (never through a link, atomically).

A path handed to reslab can be anything: a symlink to ``/dev/zero`` (reads forever), a FIFO (``open()`` waits
for a writer that never comes), a directory, a device, or a file far larger than its kind ever is. Every data
file, and every file the engine reads back from a run directory, is opened here:

1. ``os.stat`` first: anything but a regular file is refused before it is opened (opening a device or a FIFO
   can itself block or have side effects);
2. ``os.open`` with ``O_NONBLOCK`` (a FIFO swapped in after step 1 cannot hang the open) and ``O_NOFOLLOW``
   when links are not to be followed, then ``fstat`` on the open descriptor: the check that counts, since the
   path may have changed since step 1;
3. the descriptor's size against the cap, then at most ``max_bytes + 1`` bytes read, so a file that grows
   while it is read (or a ``/proc`` file that reports size 0) is still caught.

The caps, one per kind of file, are the largest real file of that kind times a wide margin: they exist to turn
"reads until memory runs out" into one line, not to police sizes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from reslab.errors import DataError, ReslabError, StorageError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
CHUNK = 16 * MiB  # bytes per read of a bounded file

# Run files (for the engine: config.json, summary.json, a checkpoint's manifest.json are a few kB each).
MAX_JSON_BYTES = 16 * MiB
# metrics.jsonl: ~300 bytes per evaluation, so even 64k iterations evaluated every 10 steps is ~2 MB.
MAX_METRICS_BYTES = 256 * MiB
# One PNG/JPEG: a 64-Mpixel image (the pixel cap of reslab.data.images) is at most ~200 MB as an RGB PNG.
MAX_IMAGE_BYTES = 256 * MiB
# One CIFAR batch: the largest, CIFAR-100's train, is 161 MB pickled and 154 MB binary.
MAX_CIFAR_BATCH_BYTES = 512 * MiB
# Small text or pickled side files: CIFAR's batches.meta, fine_label_names.txt (< 2 kB).
MAX_META_BYTES = 16 * MiB
# One idx file, gzipped or not: MNIST's largest is 47 MB raw; EMNIST's biggest split is 550 MB.
MAX_IDX_BYTES = 2 * GiB
# One HDF5 file of the signs dataset: the course's are 2.5 MB and 0.6 MB.
MAX_HDF5_BYTES = 1 * GiB

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _refuse_mode(path: Path, what: str, mode: int, error: type[ReslabError]) -> None:
    if not stat.S_ISREG(mode):
        raise error(f"{what} {path} is {_kind(mode)}, not a regular file; give the path of the file itself")


def _refuse_size(path: Path, what: str, size: int, max_bytes: int | None, error: type[ReslabError]) -> None:
    if max_bytes is not None and size > max_bytes:
        raise error(
            f"{what} {path} is {size:,} bytes, more than the {max_bytes:,} such a file can be; "
            "it is not the right file, replace it"
        )


def _os_error(path: Path, what: str, e: OSError, error: type[ReslabError]) -> ReslabError:
    if e.errno == errno.ENOENT:
        return error(f"{what} {path} does not exist; check the path")
    if e.errno == errno.ELOOP:
        return error(
            f"{what} {path} is a symbolic link, which reslab does not follow here; put the file itself"
        )
    return error(f"cannot read {what} {path}: {e.strerror or e}; check the file and its permissions")


def check_regular_file(
    path: str | Path,
    what: str,
    *,
    max_bytes: int | None = None,
    follow_symlinks: bool = True,
    error: type[ReslabError] = DataError,
) -> int:
    """Refuse ``path`` unless it is a regular file of at most ``max_bytes``; return its size in bytes.

    For readers that must be given a path (``safetensors``, ``h5py`` by name); prefer :func:`open_regular`,
    which checks the descriptor it reads from and so cannot be fooled by a path swapped in between.

    Raises:
        error (DataError by default): missing, not a regular file (directory, FIFO, device, socket; or a
            symbolic link when ``follow_symlinks`` is False), too large, or unreadable. One line, naming
            ``what`` and the path.
    """
    path = Path(path)
    try:
        st = os.stat(path, follow_symlinks=follow_symlinks)
    except OSError as e:
        raise _os_error(path, what, e, error) from None
    except ValueError as e:  # a NUL byte in the path
        raise error(f"{what} path {str(path)!r} is not a valid path ({e}); check it") from None
    if not follow_symlinks and stat.S_ISLNK(st.st_mode):
        raise error(
            f"{what} {path} is a symbolic link, which reslab does not follow here; put the file itself"
        )
    _refuse_mode(path, what, st.st_mode, error)
    _refuse_size(path, what, st.st_size, max_bytes, error)
    return st.st_size


def open_regular(
    path: str | Path,
    what: str,
    *,
    max_bytes: int,
    follow_symlinks: bool = True,
    error: type[ReslabError] = DataError,
) -> BinaryIO:
    """Open ``path`` for binary reading if, and only if, it is a regular file of at most ``max_bytes``.

    Never blocks (a FIFO is refused, not waited on) and never reads a device. The caller owns the returned
    file object (use it in a ``with``); reading it past ``max_bytes`` is the caller's business, so read with
    :func:`read_bounded` when the whole file is wanted.

    Raises:
        error (DataError by default): see :func:`check_regular_file`.
    """
    path = Path(path)
    check_regular_file(path, what, max_bytes=max_bytes, follow_symlinks=follow_symlinks, error=error)
    flags = (
        os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    )
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise _os_error(path, what, e, error) from None
    try:
        st = os.fstat(fd)  # the file we actually hold, whatever the path points to now
        _refuse_mode(path, what, st.st_mode, error)
        _refuse_size(path, what, st.st_size, max_bytes, error)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(
    path: str | Path,
    max_bytes: int,
    what: str,
    *,
    follow_symlinks: bool = True,
    error: type[ReslabError] = DataError,
) -> bytes:
    """The whole content of the regular file ``path``, refused beyond ``max_bytes``.

    The one way reslab reads a small file whole. Intended caps: :data:`MAX_JSON_BYTES` for config.json,
    summary.json and manifest.json, :data:`MAX_METRICS_BYTES` for metrics.jsonl, and the data caps above.

    Raises:
        error (DataError by default): see :func:`check_regular_file`; also a file that grew past the cap
            while it was read.
    """
    path = Path(path)
    with open_regular(path, what, max_bytes=max_bytes, follow_symlinks=follow_symlinks, error=error) as f:
        chunks, total = [], 0
        try:  # in chunks: read(n) would first allocate n bytes, the whole cap
            while total <= max_bytes:
                chunk = f.read(min(CHUNK, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        except OSError as e:
            raise _os_error(path, what, e, error) from None
        data = b"".join(chunks)
    _refuse_size(path, what, len(data), max_bytes, error)
    return data


def read_text_bounded(
    path: str | Path,
    max_bytes: int,
    what: str,
    *,
    follow_symlinks: bool = True,
    error: type[ReslabError] = DataError,
) -> str:
    """:func:`read_bounded` decoded as UTF-8; a file that is not UTF-8 text is one more one-line error."""
    data = read_bounded(path, max_bytes, what, follow_symlinks=follow_symlinks, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(
            f"{what} {path} is not UTF-8 text (byte {e.start}: {data[e.start : e.start + 1]!r}); replace it"
        ) from None


def free_disk_bytes(folder: str | Path) -> int | None:
    """Bytes free for this user on the file system holding ``folder`` (or its nearest existing parent)."""
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    with contextlib.suppress(OSError):
        return shutil.disk_usage(p).free
    return None


# --- writing: the one writer of every file reslab makes -------------------------------------------------
#
# Every output (run files, checkpoints, sweep tables, figures, analysis JSON, exports) is written here:
# 1. the target is looked at without following links (``lstat``): a symbolic link, a directory, a FIFO or a
#    device in its place is refused, so nothing is ever written through a link onto a file it points to;
# 2. the bytes go to a fresh hidden file beside it (``mkstemp``: O_EXCL, never a link), are fsynced, given
#    the user's umask permissions, and renamed over the target: a reader sees the old file or the new one,
#    and a full disk leaves the old file and no temporary file behind;
# 3. an OSError becomes one line (a full disk and a read-only place name their own fix).


def _write_error(path: Path, err: OSError, error: type[ReslabError], kept: str) -> ReslabError:
    reason = err.strerror or type(err).__name__
    full = err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    fix = "free some disk space" if full else "make it writable"
    return error(f"cannot write {path}: {reason}; {fix} or choose another --out{kept}")


def refuse_link(path: str | Path, what: str, *, error: type[ReslabError] = StorageError) -> None:
    """Refuse ``path`` when it is a symbolic link (its final component; ``lstat``, never followed)."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise _os_error(path, what, e, error) from None
    if stat.S_ISLNK(st.st_mode):
        raise error(
            f"{what} {path} is a symbolic link; reslab never writes or deletes through a link: "
            "remove the link or choose another --out"
        )


def check_output_file(path: str | Path, what: str, *, error: type[ReslabError] = StorageError) -> None:
    """Refuse to put a file at ``path`` when something other than a regular file is there (a link, a
    directory, a FIFO, a device): one line naming it. A missing or regular file is fine."""
    path = Path(path)
    refuse_link(path, what, error=error)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise _os_error(path, what, e, error) from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path} is {_kind(st.st_mode)}, not a file; remove it or choose another --out")


def own_folder(path: str | Path, what: str, *, error: type[ReslabError] = StorageError) -> Path:
    """The folder ``path`` that reslab names and makes (a sweep's run folder, ``checkpoints/``), created if
    missing; a link or a file in its place is refused, so nothing is written into a folder it points to."""
    path = Path(path)
    refuse_link(path, what, error=error)
    try:
        path.mkdir(exist_ok=True)
    except FileExistsError:
        raise error(f"{what} {path} is a file, not a folder; remove it or choose another --out") from None
    except OSError as e:
        raise _write_error(path, e, error, "") from None
    return path


_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """Permissions for a new file under the user's umask (mkstemp's 0600 would hide a run from a group)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(
    path: str | Path,
    data: bytes | Callable[[str], None],
    what: str = "output file",
    *,
    error: type[ReslabError] = StorageError,
    kept: str = "",
) -> Path:
    """Write ``data`` (bytes, or ``data(tmp_name)`` that writes the file by name) to ``path`` atomically.

    Refuses a link or a non-file at ``path`` (see the steps above); ``kept`` ends the full-disk message
    (e.g. " (the earlier checkpoints are kept)"). Returns ``path``.

    Raises:
        error (StorageError by default): a link or a non-file in the way, a full disk, a read-only place.
    """
    path = Path(path)
    check_output_file(path, what, error=error)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _write_error(path, err, error, kept) from None
    try:
        if isinstance(data, bytes | bytearray | memoryview):
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        else:
            os.close(fd)
            data(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)  # replaces the directory entry: never follows a link put there meanwhile
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise _write_error(path, err, error, kept) from None
        raise
    fsync_dir(path.parent)
    return path


def append_bytes(
    path: str | Path, data: bytes, what: str = "log file", *, error: type[ReslabError] = StorageError
) -> None:
    """Append ``data`` to ``path`` (created if missing) and fsync; a link or a non-file there is refused.

    ``O_NOFOLLOW`` makes the open itself refuse a link put in place after the check, ``O_NONBLOCK`` keeps a
    FIFO from blocking it, and ``fstat`` checks what was opened.
    """
    path = Path(path)
    check_output_file(path, what, error=error)
    flags = (
        os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    )
    try:
        fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0), file_mode())
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENXIO):
            check_output_file(path, what, error=error)
        raise _write_error(path, err, error, "") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{what} {path} is not a regular file; remove it or choose another --out")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as err:
        raise _write_error(path, err, error, "") from None
    finally:
        os.close(fd)
