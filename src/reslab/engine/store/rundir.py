"""The run directory on disk: atomic writes, creation rules, and the metrics log.

Layout of a run directory::

    config.json          everything needed to rerun (TrainConfig, data facts, versions)
    metrics.jsonl        one JSON line per evaluation point
    model.safetensors    the latest weights (for eval / predict / export / analysis)
    summary.json         final figures, written when the run finishes
    diverged.json        where and how the run stopped on NaN/inf (instead of summary.json)
    report.html          the run's page: figures, curves, every evaluation, settings
    best.safetensors     --keep-best: the weights of the lowest held-out error
    class_errors.json, confusion.png    per-class errors, from reslab eval
    checkpoints/ckpt-<iteration:08d>/{model.safetensors, state.pt, manifest.json}   the last two
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reslab.engine.specs import OutputSpec
from reslab.errors import ConfigError, StorageError
from reslab.files import MAX_METRICS_BYTES, read_bounded

CONFIG = "config.json"
METRICS = "metrics.jsonl"
WEIGHTS = "model.safetensors"
SUMMARY = "summary.json"
DIVERGED = "diverged.json"  # written instead of summary.json when the run stopped on NaN/inf
CKPT_DIR = "checkpoints"
# Written beside them: report.html (reslab.reports), class_errors.json + confusion.png (reslab eval),
# best.safetensors (--keep-best, reslab.engine.store.best).
RUN_FILES = (CONFIG, METRICS, WEIGHTS, SUMMARY, DIVERGED)
RUN_FILES += ("report.html", "class_errors.json", "confusion.png", "best.safetensors")


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def storage_error(path: str | Path, err: OSError) -> StorageError:
    """One line for a failed write: what, why, and the fix (a full disk and a read-only one differ)."""
    reason = err.strerror or type(err).__name__
    full = err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    fix = "free some disk space" if full else "make it writable"
    return StorageError(
        f"cannot write {path}: {reason}; {fix} or choose another --out (the earlier checkpoints are kept)"
    )


def file_mode() -> int:
    """Permissions for a new file under the user's umask (mkstemp's 0600 would hide a run from a group)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


_UMASK_LOCK = threading.Lock()


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """``write(tmp_name)`` beside ``path``, fsync, then rename over it: readers see the old or the new file.

    The file gets the user's umask permissions. A failure (full disk, read-only, an exporter's error) leaves
    the old file as it was and no temporary file behind; OSError becomes :class:`StorageError`.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise storage_error(path, err) from None
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise storage_error(path, err) from None
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _finite_only(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite_only(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_only(v) for v in obj]
    return obj


def strict_json(obj: Any) -> str:
    """Indented JSON with NaN/inf written as null: json.dumps would write NaN, which readers reject."""
    return json.dumps(_finite_only(obj), indent=2, allow_nan=False) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one line; a crash can at worst leave a torn last line, which :func:`read_jsonl` skips."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise storage_error(path, err) from None


# What a metrics.jsonl record holds: the iteration, and numbers (or null for a figure that was not finite).
_METRIC_NUMBERS = (
    "epoch", "lr", "train_loss", "train_error", "test_loss", "test_error", "test_top5_error", "images_per_s",
    "seconds",
)  # fmt: skip


def _valid_metrics(rec: Any) -> bool:
    if not isinstance(rec, dict):
        return False
    it = rec.get("iteration")
    if isinstance(it, bool) or not isinstance(it, int) or it < 0:
        return False
    return all(
        rec.get(k) is None or (isinstance(rec[k], int | float) and not isinstance(rec[k], bool))
        for k in _METRIC_NUMBERS
    )


def read_jsonl(path: str | Path, *, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The valid records of a metrics.jsonl, bounded and never raising on its content.

    A line that is not UTF-8, not JSON or not a metrics record (an ``iteration`` that is not a count, a
    figure that is not a number) is dropped with one warning for the file: metrics are recomputable, a crash
    over them is not acceptable. A torn last line (a crash mid-append) is dropped silently.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = read_bounded(path, MAX_METRICS_BYTES, "metrics file", error=StorageError)
    lines = data.split(b"\n")
    records, bad = [], 0
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            rec = None
        if _valid_metrics(rec):
            records.append(rec)
        elif i < len(lines) - 1:  # not the torn last line of a crash
            bad += 1
    if bad:
        (warn or _warn)(f"dropped {bad} invalid line(s) of {path} (they are recomputable)")
    return records


def _warn(text: str) -> None:
    sys.stderr.write(f"reslab: warning: {text}\n")


def truncate_metrics(run_dir: Path, iteration: int) -> list[dict[str, Any]]:
    """Drop metrics past ``iteration`` (after falling back to an older checkpoint); returns what is kept."""
    kept = [r for r in read_jsonl(run_dir / METRICS) if int(r.get("iteration", 0)) <= iteration]
    atomic_write_bytes(run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in kept).encode())
    return kept


def default_run_dir(model: str, dataset: str, root: str | Path = "runs") -> Path:
    """``runs/<model>-<dataset>-<timestamp>``, with characters unsafe in file names replaced."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model}-{dataset}").strip("_.") or "run"
    return Path(root) / f"{safe}-{stamp}"


def check_writable(path: Path) -> None:
    """Create ``path`` if needed and prove it takes a file, so a bad --out fails before training."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(
            f"cannot write to output directory {path}: {reason}; choose another --out"
        ) from None


def check_free_space(path: Path, need: int) -> None:
    """Refuse to start a run whose checkpoints will not fit on the disk, rather than fail hours into it."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:  # no answer from the file system: the first write will tell
        return
    if free < need:
        raise StorageError(
            f"{path} has {free / 2**20:.1f} MiB free but this run's checkpoints need "
            f"~{need / 2**20:.1f} MiB; free some disk space or choose another --out"
        )


def open_run_dir(spec: OutputSpec, *, is_main: bool = True, model: str, dataset: str) -> Path:
    """The run directory: the resumed one, or a new one (refused when it holds a run, unless overwrite)."""
    if spec.resume is not None:
        run = Path(spec.resume).expanduser()
        if is_main:
            check_writable(run)
        return run
    out = Path(spec.out).expanduser() if spec.out else default_run_dir(model, dataset)
    return prepare_new_run_dir(out, overwrite=spec.overwrite) if is_main else out


def prepare_new_run_dir(path: Path, *, overwrite: bool) -> Path:
    """Create the directory of a new run; refuse one that already holds a run unless ``overwrite``.

    With ``overwrite``, everything is checked before anything is deleted, links are never followed, and only
    reslab's own files go: a link in their place is refused, the rest of the directory is left alone.
    """
    if path.resolve() == Path(path.anchor or "/").resolve() or path.resolve() == Path.home().resolve():
        raise ConfigError(f"--out {path} is not a run directory of its own; choose e.g. --out runs/my-run")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a directory; choose another --out")
    existing = [p for p in (*RUN_FILES, CKPT_DIR) if (path / p).exists() or (path / p).is_symlink()]
    if existing and not overwrite:
        raise ConfigError(
            f"{path} already holds a run ({existing[0]}); use --resume {path} to continue it, "
            "--overwrite to replace it, or another --out"
        )
    links = [name for name in existing if (path / name).is_symlink()]
    if links:
        raise ConfigError(
            f"{path / links[0]} is a symbolic link; --overwrite never deletes through links: remove it "
            "yourself or choose another --out"
        )
    check_writable(path)
    for name in existing:  # --overwrite: reslab's own files only, never anything else in the directory
        target = path / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    if existing:
        fsync_dir(path)
    return path


LOCK = ".lock"


class RunLock:
    """One writer per run directory: an advisory lock on ``<dir>/.lock`` held for the run's life.

    ``flock`` is released by the kernel when its holder dies, so a lock left by a killed process is taken
    over (with a message naming it); a live holder makes a second writer fail with one line naming its pid.
    """

    def __init__(
        self, directory: Path, *, what: str = "run", say: Callable[[str], None] | None = None
    ) -> None:
        self.path = directory / LOCK
        self.what, self.say = what, say or _warn
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), file_mode())
        except OSError as err:
            raise storage_error(self.path, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise ConfigError(
                f"{self.path.parent} is being written by {who} (another reslab {self.what}); wait for it to "
                "finish, or stop it, or choose another --out"
            ) from None
        previous = _read_pid(fd)
        if previous and previous != os.getpid() and not _alive(previous):
            gone = f"process {previous}, which is no longer running"
            self.say(f"taking over the lock of {self.path.parent} from {gone}")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode().strip()
        return int(text) if text else None
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but another user's
        return True
    return True
