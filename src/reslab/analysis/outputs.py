"""Where analysis results go: an output directory and strict JSON (non-finite numbers become null)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from reslab.errors import ConfigError


def out_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) if needed; a file in the way is a ConfigError."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {p} is a file; pass a directory")
    p.mkdir(parents=True, exist_ok=True)
    return p


def _clean(obj: Any) -> Any:
    # json.dumps would write NaN/Infinity, which is not JSON: readers (jq, browsers) reject it.
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented, strict JSON."""
    path.write_text(json.dumps(_clean(data), indent=2, allow_nan=False) + "\n")
    return path
