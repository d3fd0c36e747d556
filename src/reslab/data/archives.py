"""Unpacking a dataset archive without ever destroying or replacing a file of the user's.

:func:`safe_extract` is the only way reslab unpacks a tar archive (plain, gzip, bzip2 or xz). In order:

1. **Read every header first, bounded.** The decompressed stream is capped (so a gzip bomb, or a pax header
   that claims gigabytes, stops at the cap instead of filling memory or the disk), as are the member count
   and the total size of the members. Any unsafe member (absolute path, ``..``, link, device, FIFO, sparse
   file, a name that appears twice, a name that is both a file and a folder) refuses the whole archive.
   Nothing has been written yet.
2. **Extract only what the dataset needs** (its list of files; everything else in the archive is skipped)
   into a fresh temporary folder inside the destination, with the tarfile ``data`` filter as a second line
   of defence.
3. **Check every target before placing any.** A target that already exists is fine if it holds the same
   bytes; anything else there (a different file, a folder, a link, a FIFO) refuses the extraction with one
   line naming it. Folders on the way that are links are refused too: nothing is written through a link.
4. **Place each file without replacing anything**: a hard link that fails if the target appeared in the
   meantime (a no-clobber rename), then the temporary copy goes. If placing fails half-way, the files placed
   so far (all created by this call) are removed again.

The temporary folder is removed on success, on refusal and on any error (not after SIGKILL: a leftover
``.extract-*`` folder in the data folder can be deleted by hand).
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import io
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Collection
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

from reslab.errors import DataError
from reslab.files import GiB, MiB, free_disk_bytes, open_regular

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

DEFAULT_MAX_BYTES = 1 * GiB  # total size of all members once unpacked, when the caller knows no better
DEFAULT_MAX_MEMBERS = 1000  # the official dataset archives hold 8 to 9 members
_HEADER_SLACK = 4096  # bytes of headers (ustar + pax/long-name) allowed per member in the stream cap


class _CappedReader(io.RawIOBase):
    """A read-only, seekable view of a decompressed stream that refuses to go past ``cap`` bytes.

    tarfile reads a long-name or pax header whole (``read(size)``): the request is refused before it is
    served, so a header claiming 8 GiB costs nothing.
    """

    def __init__(self, f: io.BufferedIOBase | BinaryIO, cap: int, archive: Path) -> None:
        self._f, self._cap, self._archive = f, cap, archive

    def _refuse(self) -> DataError:
        return DataError(
            f"refusing to extract {self._archive}: it unpacks (or a header in it claims to unpack) to more "
            f"than {self._cap:,} bytes, far more than the dataset; it is not an official dataset archive"
        )

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0:
            raise io.UnsupportedOperation("only absolute seeks")
        if pos > self._cap:
            raise self._refuse()
        return self._f.seek(pos)

    def read(self, n: int | None = -1) -> bytes:
        pos = self._f.tell()
        if n is None or n < 0:  # "all of it": at most up to the cap, and one byte to see if there is more
            data = self._f.read(max(0, self._cap - pos) + 1)
            if pos + len(data) > self._cap:
                raise self._refuse()
            return data
        if pos + n > self._cap:  # refused on the request, before a buffer of n bytes exists
            raise self._refuse()
        return self._f.read(n)

    def readinto(self, b: WriteableBuffer) -> int:
        view = memoryview(b).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


def _decompressed(raw: BinaryIO) -> io.BufferedIOBase | BinaryIO:
    """The tar stream inside ``raw``: gzip, bzip2 and xz by their magic bytes, else plain tar."""
    head = raw.read(6)
    raw.seek(0)
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head[:3] == b"BZh":
        return bz2.BZ2File(raw, mode="rb")
    if head == b"\xfd7zXZ\x00":
        import lzma

        return lzma.LZMAFile(raw, mode="rb")
    return raw


def _refuse(archive: Path, why: str) -> DataError:
    return DataError(f"refusing to extract {archive}: {why}; it is not an official dataset archive")


def _normalised(member: tarfile.TarInfo, archive: Path) -> str:
    """The member's path relative to the archive root (``a/./b/`` -> ``a/b``), or a refusal if unsafe."""
    name = member.name
    posix = PurePosixPath(name)
    what = None
    if not name or name.startswith("/") or posix.is_absolute():
        what = "has an absolute path" if name else "has an empty name"
    elif "\\" in name or (len(name) > 1 and name[1] == ":"):  # a Windows path: C:\..., dir\file
        what = "has a Windows path"
    elif ".." in posix.parts:
        what = "points outside the archive (..)"
    elif member.issym() or member.islnk():
        what = f"is a link to {member.linkname!r}"
    elif member.isdev() or member.isfifo():
        what = "is a device or fifo"
    elif member.issparse():
        what = "is a sparse file"
    elif not (member.isfile() or member.isdir()):
        what = "is not a regular file or directory"
    elif member.isfile() and (str(posix) == "." or name.endswith("/")):
        what = "is a file named like a folder"
    if what is not None:
        raise _refuse(archive, f"member {name!r} {what}")
    return str(posix)


def _scan(tar: tarfile.TarFile, archive: Path, max_bytes: int, max_members: int) -> list[tarfile.TarInfo]:
    """Every member, checked: safe, no duplicates, within the member count and the total size."""
    members: list[tarfile.TarInfo] = []
    files: set[str] = set()
    seen: set[str] = set()
    folders: set[str] = set()
    total = 0
    while (m := tar.next()) is not None:
        if len(members) == max_members:
            raise _refuse(archive, f"it holds more than {max_members:,} members")
        norm = _normalised(m, archive)
        if norm in seen and norm != ".":
            raise _refuse(archive, f"member {norm!r} appears twice")
        seen.add(norm)
        if m.isfile():
            files.add(norm)
            total += m.size
            if total > max_bytes:
                raise _refuse(archive, f"its members unpack to more than {max_bytes:,} bytes")
        else:
            folders.add(norm)
        folders.update(str(p) for p in PurePosixPath(norm).parents)
        members.append(m)
    clash = sorted(files & folders)
    if clash:
        raise _refuse(archive, f"{clash[0]!r} is both a file and a folder in it")
    if not members:
        raise DataError(f"{archive} is an empty archive; delete it and download it again")
    return members


def _extract(tar: tarfile.TarFile, members: list[tarfile.TarInfo], root: Path) -> None:
    if hasattr(tarfile, "data_filter"):
        tar.extractall(root, members=members, filter="data")
        return
    for m in members:  # pragma: no cover - Pythons without PEP 706: write the checked regular files ourselves
        out = root / PurePosixPath(m.name)
        out.parent.mkdir(parents=True, exist_ok=True)
        src = tar.extractfile(m)
        if src is None:
            raise tarfile.TarError(f"cannot read member {m.name!r}")
        with src, open(out, "xb") as f:
            shutil.copyfileobj(src, f)


def _conflict(archive: Path, target: Path, what: str) -> DataError:
    return DataError(
        f"refusing to extract {archive}: {target} {what}; reslab never replaces a file it did not create, "
        "move it away and run again"
    )


def _same_bytes(existing: Path, extracted: Path, size: int) -> bool:
    # the existing file is the user's: opened without following links and never blocking on a FIFO
    with (
        open_regular(existing, "existing file", max_bytes=size, follow_symlinks=False) as fa,
        open(extracted, "rb") as fb,
    ):
        while True:
            ca, cb = fa.read(MiB), fb.read(MiB)
            if ca != cb:
                return False
            if not ca:
                return True


def _check_target(archive: Path, dest: Path, rel: str, extracted: Path) -> bool:
    """True if ``dest/rel`` must be placed, False if it already holds the same bytes; else refuse."""
    target = dest / rel
    for parent in reversed(target.relative_to(dest).parents):  # dest/a, dest/a/b, ... (not dest itself)
        p = dest / parent
        if str(parent) == ".":
            continue
        try:
            mode = os.lstat(p).st_mode
        except FileNotFoundError:
            return True  # the folder is missing, so is the file: both will be created
        if stat.S_ISLNK(mode):
            raise _conflict(archive, p, "is a symbolic link, and extraction never writes through links")
        if not stat.S_ISDIR(mode):
            raise _conflict(archive, p, "already exists and is not a folder")
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return True
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise _conflict(archive, target, f"already exists and is {kind}")
    if st.st_size == extracted.stat().st_size and _same_bytes(target, extracted, st.st_size):
        return False
    raise _conflict(archive, target, "already exists and differs from the archive's copy")


def _place(src: Path, target: Path) -> None:
    """Move ``src`` to ``target`` unless ``target`` exists (FileExistsError): never replaces."""
    try:
        os.link(src, target)  # fails with EEXIST instead of replacing: a no-clobber rename
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links (FAT, some network shares)
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
        os.rename(src, target)
        return
    src.unlink()


def _os_failure(archive: Path, dest: Path, e: OSError, need: int) -> DataError | None:
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return DataError(
            f"no space left on the disk of {dest} while extracting {archive.name} (it needs {need:,} bytes); "
            "free some space or use another data folder"
        )
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DataError(
            f"cannot write in {dest} to extract {archive.name}: {e.strerror}; "
            "check its permissions or use another data folder"
        )
    if e.errno is not None and not isinstance(e, gzip.BadGzipFile):  # the disk, not the archive
        return DataError(
            f"cannot extract {archive.name} into {dest}: {e.strerror or e}; check the disk and the folder"
        )
    return None


def safe_extract(
    archive: str | Path,
    dest: str | Path,
    *,
    files: Collection[str],
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> list[str]:
    """Unpack the members of ``archive`` listed in ``files`` into ``dest``; see the module docstring.

    Args:
        archive: a tar archive, plain or gzip/bzip2/xz compressed.
        dest: the folder to unpack into (created if missing).
        files: the paths, relative to the archive root (``cifar-10-batches-py/data_batch_1``), of the files
            the dataset needs; other members are checked but not unpacked. A listed file the archive lacks is
            simply not placed: the caller checks that the dataset is complete.
        max_bytes: refuse an archive whose members (all of them) unpack to more than this.
        max_members: refuse an archive with more members than this.

    Returns:
        The listed files now in ``dest`` from the archive (placed, or already there with the same bytes).

    Raises:
        DataError: the archive is corrupt, unsafe or too large, a target exists and differs, or the disk is
            full or read-only. Nothing of the user's has been changed, and no temporary folder is left.
    """
    archive, dest = Path(archive), Path(dest)
    wanted = {str(PurePosixPath(f)) for f in files}
    stream_cap = max_bytes + max_members * _HEADER_SLACK + MiB
    with open_regular(archive, "archive", max_bytes=stream_cap) as raw:
        try:
            with (
                _decompressed(raw) as stream,
                tarfile.open(fileobj=_CappedReader(stream, stream_cap, archive), mode="r:") as tar,
            ):
                members = _scan(tar, archive, max_bytes, max_members)
                chosen = [m for m in members if m.isfile() and _normalised(m, archive) in wanted]
                need = sum(m.size for m in chosen)
                free = free_disk_bytes(dest)
                if free is not None and need > free:
                    raise DataError(
                        f"extracting {archive.name} needs {need:,} bytes but only {free:,} are free on the "
                        f"disk of {dest}; free some space or use another data folder"
                    )
                return _extract_and_place(tar, archive, dest, chosen, need)
        except DataError:
            raise
        except OSError as e:
            failure = _os_failure(archive, dest, e, 0)
            if failure is not None:
                raise failure from e
            raise _corrupt(archive, e) from e
        except (tarfile.TarError, EOFError, zlib.error, ValueError, io.UnsupportedOperation) as e:
            raise _corrupt(archive, e) from e


def _corrupt(archive: Path, e: BaseException) -> DataError:
    return DataError(
        f"cannot extract {archive} ({type(e).__name__}: {e}); the archive is truncated or corrupt, "
        "delete it and download it again"
    )


def _extract_and_place(
    tar: tarfile.TarFile, archive: Path, dest: Path, chosen: list[tarfile.TarInfo], need: int
) -> list[str]:
    if dest.exists() and not dest.is_dir():
        raise DataError(f"cannot extract {archive.name} into {dest}: it is not a folder; pass a folder")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    placed: list[Path] = []
    made: list[Path] = []
    try:
        try:
            _extract(tar, chosen, tmp)
        except OSError as e:
            failure = _os_failure(archive, dest, e, need)
            if failure is not None:
                raise failure from e
            raise _corrupt(archive, e) from e
        rels = sorted(_normalised(m, archive) for m in chosen)
        todo = [rel for rel in rels if _check_target(archive, dest, rel, tmp / rel)]
        try:
            for rel in todo:
                target = dest / rel
                for parent in reversed(PurePosixPath(rel).parents):
                    d = dest / parent
                    if str(parent) != "." and not os.path.lexists(d):
                        d.mkdir()
                        made.append(d)
                try:
                    _place(tmp / rel, target)
                except FileExistsError:
                    raise _conflict(archive, target, "appeared while extracting") from None
                placed.append(target)
        except BaseException as e:
            for p in reversed(placed):  # only what this call created
                with contextlib.suppress(OSError):
                    p.unlink()
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    d.rmdir()  # only if still empty
            if isinstance(e, OSError):
                failure = _os_failure(archive, dest, e, need)
                if failure is not None:
                    raise failure from e
            raise
        return rels
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
