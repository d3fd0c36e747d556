"""Reading untrusted dataset files without running code hidden in them.

See docs/SAFETY.md, "No code from data": :func:`safe_unpickle` loads a CIFAR python batch through a
restricted :class:`pickle.Unpickler` that can only build numpy arrays, dicts, lists, bytes, strings and
numbers. Any other global a pickle asks for (``os.system``, ``builtins.eval``, ...) is refused *before* it is
looked up, so it never runs.

Archives are unpacked by :func:`reslab.data.archives.safe_extract` (re-exported here): bounded, checked member
by member, and never replacing a file of the user's.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from reslab.data.archives import safe_extract
from reslab.errors import DataError
from reslab.files import MAX_CIFAR_BATCH_BYTES, read_bounded

__all__ = ["safe_extract", "safe_unpickle"]

# numpy 2 moved numpy.core to numpy._core; pickles name either, we resolve both to the live function
# without importing the deprecated alias. Looked up by module name: the type checker sees only one numpy.
try:  # pragma: no cover - depends on the installed numpy
    _np_reconstruct = importlib.import_module("numpy._core.multiarray")._reconstruct
except (ImportError, AttributeError):  # pragma: no cover
    _np_reconstruct = importlib.import_module("numpy.core.multiarray")._reconstruct

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


def safe_unpickle(
    path: str | Path, *, max_bytes: int = MAX_CIFAR_BATCH_BYTES, what: str = "CIFAR batch"
) -> Any:
    """Unpickle ``path`` allowing only numpy arrays, dicts, lists, bytes, strings and numbers.

    Raises:
        DataError: the file is missing, not a regular file, too large, malformed, or asks for any other
            class or function.
    """
    path = Path(path)
    # Read it whole first (bounded, regular files only): a hostile length field then hits the end of a
    # buffer, not a huge read().
    data = read_bounded(path, max_bytes, what)
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
