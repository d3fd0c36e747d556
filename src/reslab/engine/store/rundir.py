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
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reslab.engine.specs import OutputSpec
from reslab.errors import ConfigError, StorageError
from reslab.files import (
    MAX_METRICS_BYTES,
    append_bytes,
    check_regular_file,
    file_mode,
    fsync_dir,
    read_bounded,
    refuse_link,
    write_atomic,
)

CONFIG = "config.json"
METRICS = "metrics.jsonl"
WEIGHTS = "model.safetensors"
SUMMARY = "summary.json"
DIVERGED = "diverged.json"  # written instead of summary.json when the run stopped on NaN/inf
CKPT_DIR = "checkpoints"
# Written beside them: report.html (reslab.reports), class_errors.json + confusion.png (reslab eval),
# best.safetensors (--keep-best, reslab.engine.store.best).
RUN_FILES: tuple[str, ...] = (CONFIG, METRICS, WEIGHTS, SUMMARY, DIVERGED)
RUN_FILES += ("report.html", "class_errors.json", "confusion.png", "best.safetensors")


def storage_error(path: str | Path, err: OSError) -> StorageError:
    """One line for a failed write: what, why, and the fix (a full disk and a read-only one differ)."""
    reason = err.strerror or type(err).__name__
    full = err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    fix = "free some disk space" if full else "make it writable"
    return StorageError(
        f"cannot write {path}: {reason}; {fix} or choose another --out (the earlier checkpoints are kept)"
    )


KEPT = " (the earlier checkpoints are kept)"


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """``write(tmp_name)`` beside ``path``, fsync, then rename over it: readers see the old or the new file.

    Through the one writer, :func:`reslab.files.write_atomic`: a link or a non-file at ``path`` is refused,
    the file gets the user's umask permissions, and a failure leaves the old file as it was and no temporary
    file behind (OSError becomes :class:`StorageError`).
    """
    write_atomic(path, write, "run file", kept=KEPT)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    write_atomic(path, data, "run file", kept=KEPT)


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
    """``obj`` as strict JSON (NaN/inf as null: a figure that was not measured is no number)."""
    atomic_write_bytes(path, strict_json(obj).encode())


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one line (NaN/inf as null); a crash can at worst leave a torn last line, which
    :func:`read_jsonl` skips. Never through a link (see :func:`reslab.files.append_bytes`)."""
    line = json.dumps(_finite_only(record), allow_nan=False) + "\n"
    append_bytes(path, line.encode(), "metrics file")


# What a metrics.jsonl record holds: the iteration, and numbers (or null for a figure that was not finite).
_METRIC_NUMBERS = (
    "epoch", "lr", "train_loss", "train_error", "test_loss", "test_error", "test_top5_error", "images_per_s",
    "seconds",
)  # fmt: skip


MAX_COUNT = 2**63 - 1  # an iteration (or any count) beyond int64 is no count reslab wrote


def _number(v: Any) -> bool:
    """A figure a record may hold: null, a float (NaN/inf read as null later) or an int within int64."""
    if v is None or isinstance(v, float):
        return True
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_COUNT


def _valid_metrics(rec: Any) -> bool:
    if not isinstance(rec, dict):
        return False
    it = rec.get("iteration")
    if isinstance(it, bool) or not isinstance(it, int) or not 0 <= it <= MAX_COUNT:
        return False
    return all(_number(rec.get(k)) for k in _METRIC_NUMBERS)


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
            records.append(_finite_only(rec))  # a NaN figure of an older reslab is "not measured": null
        elif i < len(lines) - 1:  # not the torn last line of a crash
            bad += 1
    if bad:
        (warn or _warn)(f"dropped {bad} invalid line(s) of {path} (they are recomputable)")
    return records


def _warn(text: str) -> None:
    sys.stderr.write(f"reslab: warning: {text}\n")


def truncate_metrics(run_dir: Path, iteration: int) -> list[dict[str, Any]]:
    """Drop metrics past ``iteration`` (after falling back to an older checkpoint); returns what is kept.

    A rewrite of the run's log: done holding the run's lock (taken here unless this thread holds it).
    """
    with RunLock(run_dir, what="training", join=True):
        kept = [r for r in read_jsonl(run_dir / METRICS) if int(r.get("iteration", 0)) <= iteration]
        atomic_write_bytes(run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in kept).encode())
    return kept


def default_run_dir(model: str, dataset: str, root: str | Path = "runs") -> Path:
    """``runs/<model>-<dataset>-<timestamp>``, with characters unsafe in file names replaced."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model}-{dataset}").strip("_.") or "run"
    return Path(root) / f"{safe}-{stamp}"


def refuse_shared_folder(path: Path, flag: str = "--out") -> None:
    """``/`` or the home directory is nobody's output folder: every command that writes refuses it."""
    resolved = path.expanduser().resolve()
    if resolved == Path(resolved.anchor or "/") or resolved == Path.home().resolve():
        raise ConfigError(f"{flag} {path} is not a folder of its own; choose e.g. {flag} runs/my-run")


def check_writable(path: Path) -> None:
    """Create ``path`` if needed and prove it takes a file, so a bad --out fails before training.

    ``/`` and the home directory are refused (:func:`refuse_shared_folder`): a sweep, a study or a run writes
    its own names there, and an ``--overwrite`` or a prune would then act among the user's files.
    """
    refuse_shared_folder(path)
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


CKPT_NAME = re.compile(r"ckpt-\d{8,}")  # ckpt-<iteration:08d>: the only checkpoint names reslab writes
CKPT_LEFTOVER = re.compile(r"\.(tmp|old)-ckpt-\d{8,}")  # a save or a prune that a crash interrupted
CSV_FILE = "metrics.csv"  # --logger csv
TB_DIR = "tb"  # --logger tensorboard: event files only
TB_EVENTS = re.compile(r"events\.out\.tfevents\..+")


def _lexists(path: Path) -> bool:
    return os.path.lexists(path)


def _own_entries(path: Path) -> list[Path]:
    """What reslab wrote in run directory ``path``, by exact name: what ``--overwrite`` removes.

    The run files, ``metrics.csv``, the event files in ``tb/``, and the ``ckpt-<8+ digits>`` folders (and a
    crashed save's hidden ones) in ``checkpoints/``: exact names, and of the kind reslab makes (a link or a
    folder of that name is not reslab's); never a user's ``ckpt-00000012-backup/`` or notes.
    """
    found = [path / n for n in (*RUN_FILES, CSV_FILE) if _lexists(path / n)]
    ckpts, tb = path / CKPT_DIR, path / TB_DIR
    if os.path.isdir(ckpts) and not os.path.islink(ckpts):
        found += [
            e for e in sorted(ckpts.iterdir()) if _is_checkpoint_name(e.name) and _is_kind(e, stat.S_ISDIR)
        ]
    if os.path.isdir(tb) and not os.path.islink(tb):
        found += [
            e for e in sorted(tb.iterdir()) if TB_EVENTS.fullmatch(e.name) and _is_kind(e, stat.S_ISREG)
        ]
    return found


def _is_checkpoint_name(name: str) -> bool:
    return bool(CKPT_NAME.fullmatch(name) or CKPT_LEFTOVER.fullmatch(name))


def _is_kind(path: Path, test: Callable[[int], bool]) -> bool:
    with contextlib.suppress(OSError):
        return test(os.lstat(path).st_mode)  # lstat: a link is never the kind it points to
    return False


def _check_removable(path: Path) -> None:
    """Everything ``--overwrite`` would touch is checked before anything goes: never a link, and never a
    folder where reslab writes a file (or a file where it makes a folder)."""
    for name in (*RUN_FILES, CSV_FILE, CKPT_DIR, TB_DIR):
        target = path / name
        if os.path.islink(target):
            raise ConfigError(
                f"{target} is a symbolic link; --overwrite never deletes through links: remove it "
                "yourself or choose another --out"
            )
        if name in (CKPT_DIR, TB_DIR) and _lexists(target) and not os.path.isdir(target):
            raise ConfigError(
                f"{target} is a file where reslab keeps a folder; move it or choose another --out"
            )
        if name not in (CKPT_DIR, TB_DIR) and _lexists(target):
            check_regular_file(target, "run file", error=ConfigError)


def _clear(path: Path) -> None:
    """Delete what reslab wrote in ``path`` (see :func:`_own_entries`) and nothing else; call holding the
    run's lock, so that what a live writer did is seen and nothing of a live run is deleted."""
    _check_removable(path)
    for entry in _own_entries(path):
        shutil.rmtree(entry) if entry.parent.name == CKPT_DIR else entry.unlink()
    for folder in (path / CKPT_DIR, path / TB_DIR):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: a user's file in it keeps it
    fsync_dir(path)


def _check_new_run_dir(path: Path, overwrite: bool) -> None:
    refuse_shared_folder(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a directory; choose another --out")
    existing = [p for p in (*RUN_FILES, CKPT_DIR) if _lexists(path / p)]
    if existing and not overwrite:
        raise ConfigError(
            f"{path} already holds a run ({existing[0]}); use --resume {path} to continue it, "
            "--overwrite to replace it, or another --out"
        )
    if overwrite and path.is_dir():
        _check_removable(path)  # everything checked before anything is deleted


def prepare_new_run_dir(path: Path, *, overwrite: bool) -> Path:
    """Create the directory of a new run; refuse one that already holds a run unless ``overwrite``.

    With ``overwrite``, everything is checked before anything is deleted, links are never followed, only
    reslab's own files go (exact names, see :func:`_own_entries`), and lock first: the deleting happens
    holding the run's lock, so a run training there makes this refuse, naming it, before anything goes.
    Prefer :func:`new_run_dir`, which keeps the lock from the clearing to the end of the run.
    """
    _check_new_run_dir(path, overwrite)
    check_writable(path)
    if overwrite and _own_entries(path):
        with RunLock(path, what="training"):
            _clear(path)
    return path


@contextlib.contextmanager
def new_run_dir(path: Path, *, overwrite: bool, what: str = "training") -> Iterator[Path]:
    """The directory of a new run, locked for the ``with`` block: checked, created, locked, *then* cleared
    (``--overwrite``) under the lock, which stays held until the block ends: there is no moment between
    clearing the directory and owning it."""
    _check_new_run_dir(path, overwrite)
    check_writable(path)
    with RunLock(path, what=what):
        if overwrite:
            _clear(path)
        yield path


def open_run_dir(spec: OutputSpec, stack: contextlib.ExitStack | None, *, model: str, dataset: str) -> Path:
    """The run directory, locked on ``stack`` for the session (the writer, rank 0) or only named (``None``,
    the other ranks of a data-parallel run): the resumed one, or a new one (checked, created, locked, and
    only then cleared with ``--overwrite``; refused when it holds a run otherwise)."""
    if spec.resume is not None:
        run = Path(spec.resume).expanduser()
        if stack is not None:
            check_writable(run)
            stack.enter_context(RunLock(run, what="training"))
        return run
    out = Path(spec.out).expanduser() if spec.out else default_run_dir(model, dataset)
    if stack is not None:
        stack.enter_context(new_run_dir(out, overwrite=spec.overwrite, what="training"))
    return out


LOCK = ".lock"


@dataclass
class _Held:
    fd: int
    thread: int
    count: int = 1


_HELD: dict[str, _Held] = {}  # run directory (real path) -> the lock this process holds on it
_HELD_LOCK = threading.Lock()


class RunLock:
    """One writer per run directory: an advisory lock on ``<dir>/.lock`` held for the run's life.

    ``flock`` is released by the kernel when its holder dies, so a lock left by a killed process is taken
    over (with a message naming it); a live holder makes a second writer fail with one line naming its pid.
    ``join=True`` is for the destructive steps (``--overwrite``, a prune, a metrics rewrite): each takes the
    lock itself, joining the one its own thread already holds (the training run's) for free, and refusing
    when anyone else holds it. A plain ``RunLock`` is a writer's own and refuses any other holder, this
    process included.
    """

    def __init__(
        self,
        directory: Path,
        *,
        what: str = "run",
        say: Callable[[str], None] | None = None,
        join: bool = False,
    ) -> None:
        self.path = directory / LOCK
        self.what, self.say = what, say or _warn
        self.fd: int | None = None
        self._key = os.path.realpath(directory)
        self._join = join

    def __enter__(self) -> RunLock:
        with _HELD_LOCK:
            held = _HELD.get(self._key)
            if self._join and held is not None and held.thread == threading.get_ident():
                held.count += 1
                self.fd = held.fd
                return self
        self.fd = self._acquire()
        with _HELD_LOCK:
            _HELD.setdefault(self._key, _Held(self.fd, threading.get_ident()))
        return self

    def _acquire(self) -> int:
        import fcntl

        refuse_link(self.path, "lock file", error=StorageError)
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
        return fd

    def __exit__(self, *exc: object) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        with _HELD_LOCK:
            held = _HELD.get(self._key)
            if held is not None and held.fd == fd:
                held.count -= 1
                if held.count > 0:
                    return  # an outer holder in this thread keeps it
                del _HELD[self._key]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing releases the flock


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
