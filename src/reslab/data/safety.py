"""Reading untrusted dataset files without running code hidden in them.

Two guards live here (see docs/SAFETY.md, "No code from data" and "Safe extraction"):

- :func:`safe_unpickle` loads a CIFAR python batch through a restricted :class:`pickle.Unpickler` that can
  only build numpy arrays, dicts, lists, bytes, strings and numbers. Any other global a pickle asks for
  (``os.system``, ``builtins.eval``, ...) is refused *before* it is looked up, so it never runs.
- :func:`safe_extract` unpacks a tar archive after checking every member (no absolute paths, no ``..``,
  no links, no devices or fifos) and then extracts with the tarfile ``data`` filter as a second line of
  defence. Anything odd refuses the whole archive before a single byte is written.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from reslab.errors import DataError

# numpy 2 moved numpy.core to numpy._core; pickles name either, we resolve both to the live function
# without importing the deprecated alias.
try:  # pragma: no cover - depends on the installed numpy
    from numpy._core.multiarray import _reconstruct as _np_reconstruct  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    from numpy.core.multiarray import _reconstruct as _np_reconstruct  # type: ignore[no-redef]

# (module, name) -> object. This is the complete list: what a pickled ndarray needs and nothing else.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` knows only the numpy array constructors."""

    def __init__(self, file: io.BytesIO, source: str) -> None:
        super().__init__(file, encoding="latin1")  # CIFAR batches were pickled by Python 2
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle {module}.{name} from {self._source}: not a CIFAR batch; "
                "re-download the official archive"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"refusing to unpickle a persistent id from {self._source}: not a CIFAR batch")


def safe_unpickle(path: str | Path, *, max_bytes: int = 1 << 30) -> Any:
    """Unpickle ``path`` allowing only numpy arrays, dicts, lists, bytes, strings and numbers.

    Raises:
        DataError: the file is missing, too large, malformed, or asks for any other class or function.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise DataError(f"{path} is {size} bytes, too large for a CIFAR batch; check the file")
        # Read it whole first: a hostile length field then hits the end of a buffer, not a huge read().
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}; check the file and its permissions") from e
    try:
        return _RestrictedUnpickler(io.BytesIO(data), str(path)).load()
    except DataError:
        raise
    except RecursionError as e:
        raise DataError(f"{path} is not a valid CIFAR batch (nested too deeply); re-download it") from e
    except Exception as e:  # any malformed pickle: UnpicklingError, EOFError, ValueError, TypeError, ...
        raise DataError(
            f"{path} is not a valid CIFAR batch ({type(e).__name__}: {e}); re-download the archive"
        ) from e


# ---------------------------------------------------------------------------------------------- tar


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = member.name
    posix = PurePosixPath(name.replace("\\", "/"))
    what = None
    if name.startswith(("/", "\\")) or posix.is_absolute() or (len(name) > 1 and name[1] == ":"):
        what = "has an absolute path"
    elif ".." in posix.parts:
        what = "points outside the archive (..)"
    elif member.issym() or member.islnk():
        what = f"is a link to {member.linkname!r}"
    elif member.isdev() or member.isfifo():
        what = "is a device or fifo"
    elif not (member.isfile() or member.isdir()):
        what = "is not a regular file or directory"
    if what is not None:
        raise DataError(
            f"refusing to extract {archive}: member {name!r} {what}; this is not an official dataset archive"
        )


def safe_extract(archive: str | Path, dest: str | Path) -> list[str]:
    """Extract the tar archive ``archive`` into ``dest`` safely and return the top-level names written.

    Every member is checked before anything is written; the extraction goes to a fresh temporary folder
    inside ``dest`` and each top-level entry is then moved into place, so an interrupted or refused
    extraction never leaves a half-written dataset folder behind.

    Raises:
        DataError: the archive is truncated or corrupt, or holds an unsafe member.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                if not members:
                    raise DataError(f"{archive} is an empty archive; re-download it")
                for m in members:
                    _check_member(m, archive)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - Python without PEP 706: write checked regular files ourselves
                    _extract_plain(tar, members, tmp)
        except DataError:
            raise
        except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError) as e:
            raise DataError(
                f"cannot extract {archive} ({type(e).__name__}: {e}); the archive is truncated or corrupt, "
                "delete it and download it again"
            ) from e
        tops = sorted(p.name for p in tmp.iterdir())
        for top in tops:
            target = dest / top
            if target.is_dir() and not target.is_symlink():  # a stale, incomplete copy from before
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(tmp / top, target)
        return tops
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract_plain(tar: tarfile.TarFile, members: list[tarfile.TarInfo], root: Path) -> None:
    # pragma: no cover - only on Pythons whose tarfile lacks the data filter
    for m in members:
        out = root / PurePosixPath(m.name)
        if m.isdir():
            out.mkdir(parents=True, exist_ok=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        src = tar.extractfile(m)
        if src is None:
            raise tarfile.TarError(f"cannot read member {m.name!r}")
        with src, open(out, "wb") as f:
            shutil.copyfileobj(src, f)
