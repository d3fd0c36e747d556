"""Where analysis results go: an output directory and strict JSON (non-finite numbers become null)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reslab.engine.store.rundir import check_writable, strict_json
from reslab.errors import ConfigError
from reslab.files import write_atomic


def out_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) if needed and prove it takes a file: a file in the way, a read-only
    place or a read-only working directory is a one-line ConfigError, not a traceback after the work."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {p} is a file; pass a directory")
    check_writable(p)
    return p


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented, strict JSON (readers such as jq and browsers reject NaN), through the one
    writer (atomic, never through a link)."""
    return write_atomic(path, strict_json(data).encode(), "results")
