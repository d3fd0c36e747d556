"""The installed version, read from the package metadata: pyproject.toml is its one source."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed_version

try:
    __version__ = _installed_version("reslab")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
