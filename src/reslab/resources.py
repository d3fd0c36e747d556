"""Host memory: how much is free, and a one-line refusal before a job that would not fit starts.

Device-agnostic and free of torch, so every layer can import it (data builders, models, analyses, the engine):
the data builders allocate on the host before anything moves to a device, and a raw allocator error (or the
OOM killer) is a worse answer than "needs 22.9 GiB, 20.1 GiB free; use a smaller shape".

On Linux the figure is ``MemAvailable`` from ``/proc/meminfo`` (free memory plus what the kernel can
reclaim at once), lowered to what the memory cgroup of this process (a container's limit) still allows.
Elsewhere it is unknown (None) and nothing is refused: an estimate must never stop a job by failing itself.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from reslab.errors import ConfigError

GiB = 1 << 30
_PROC = Path("/proc")
_CGROUP = Path("/sys/fs/cgroup")
_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a huge number (9223372036854771712)


def _small_read(path: Path) -> str | None:
    # /proc and /sys files report size 0 and are tiny: read a bounded amount, never follow surprises.
    with contextlib.suppress(OSError, ValueError), open(path, "rb") as f:
        return f.read(1 << 16).decode("ascii", "replace")
    return None


def _meminfo_available() -> int | None:
    text = _small_read(_PROC / "meminfo")
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            with contextlib.suppress(ValueError, IndexError):
                return int(line.split()[1]) * 1024  # reported in kB
    return None


def _stat_value(text: str | None, key: str) -> int:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            with contextlib.suppress(ValueError):
                return int(value)
    return 0


def _cgroup_dirs() -> list[Path]:
    """This process's memory cgroup folder and its ancestors (each level's limit applies), v2 or v1."""
    text = _small_read(_PROC / "self" / "cgroup") or ""
    out: list[Path] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":  # cgroup v2 unified hierarchy: "0::/path"
            base = _CGROUP
        elif "memory" in controllers.split(","):
            base = _CGROUP / "memory"
        else:
            continue
        d = base / rel.lstrip("/")
        while True:
            out.append(d)
            if d == base or base not in d.parents:
                break
            d = d.parent
    return out


def _cgroup_available() -> int | None:
    best: int | None = None
    for d in _cgroup_dirs():
        limit_text = _small_read(d / "memory.max") or _small_read(d / "memory.limit_in_bytes")
        usage_text = _small_read(d / "memory.current") or _small_read(d / "memory.usage_in_bytes")
        if not limit_text or not usage_text or limit_text.strip() == "max":
            continue
        try:
            limit, usage = int(limit_text.strip()), int(usage_text.strip())
        except ValueError:
            continue
        if limit >= _UNLIMITED:
            continue
        # Page cache counts as usage but is given back on demand, as MemAvailable assumes too.
        stat_text = _small_read(d / "memory.stat")
        reclaimable = _stat_value(stat_text, "inactive_file")
        free = max(0, limit - usage + reclaimable)
        best = free if best is None else min(best, free)
    return best


def available_host_memory() -> int | None:
    """Bytes of host RAM this process can still allocate, or None where it cannot be known."""
    known = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(known) if known else None


def format_bytes(n: int) -> str:
    """``23_001_000_000`` -> ``"21.42 GiB"``; below 1 GiB in MiB."""
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / (1 << 20):.1f} MiB"


def check_host_memory(need: int, *, what: str, fix: str, available: int | None = None) -> None:
    """Refuse, before allocating, a job that needs ``need`` bytes of host memory when less is free.

    Args:
        need: the estimate, in bytes, of the job's peak.
        what: the job, as the start of the message ("synthetic:3x2000x2000 (640 images)").
        fix: what the user can change ("use a smaller shape").
        available: the free bytes to compare with (default: :func:`available_host_memory`).

    Raises:
        ConfigError: ``need`` exceeds what is free; one line with both figures and ``fix``.
    """
    free = available_host_memory() if available is None else available
    if free is not None and need > free:
        raise ConfigError(
            f"{what} needs ~{format_bytes(need)} of memory but only {format_bytes(free)} is free; {fix}"
        )
