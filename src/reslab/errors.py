"""The project's one error type.

Every problem a user can cause (bad input, a missing file, an impossible depth) is raised as a
``ReslabError`` whose message names the problem *and* the fix. The CLI turns it into one line on stderr
and exit code 2; a traceback is a bug.
"""

from __future__ import annotations


class ReslabError(Exception):
    """A user-facing error: ``str(err)`` is one line that says what is wrong and how to fix it."""

    exit_code: int = 2


class ConfigError(ReslabError):
    """Bad arguments: unknown model or dataset, impossible depth, negative sizes, unknown device."""


class DataError(ReslabError):
    """A missing, truncated or corrupted dataset file, a failed download or checksum, an unsafe archive."""


class CheckpointError(ReslabError):
    """A missing, truncated or incompatible checkpoint / weights file."""


class StorageError(ReslabError):
    """The run directory cannot be written: a full disk, a read-only file system, no permission."""


class TrainingError(ReslabError):
    """Training cannot go on: NaN/inf loss, out of memory. The last good checkpoint is kept."""

    exit_code: int = 3


class DivergedError(TrainingError):
    """The loss, a gradient or a weight became NaN/inf at ``iteration``: the run diverged.

    A single run stops on it (exit 3); a sweep records the run as diverged and goes on.
    """

    def __init__(self, message: str, *, iteration: int, run_dir: object = None) -> None:
        super().__init__(message)
        self.iteration = iteration
        self.run_dir = run_dir


class NonFiniteError(ReslabError):
    """A model's outputs are NaN/inf (broken or diverged weights): never reported as a figure."""

    exit_code: int = 3


def one_line(err: BaseException) -> str:
    """``err``'s message as one line. A reslab error raised in a DataLoader worker comes back wrapped in the
    worker's traceback ("Caught DataError in DataLoader worker process 0. Original Traceback ..."): its own
    message is the traceback's last line, after the exception's dotted name."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(err).__name__
    name, sep, message = lines[-1].partition(": ")
    return message if sep and name.replace(".", "").replace("_", "").isalnum() else lines[-1]


def report(err: ReslabError) -> int:
    """Print ``err`` as the one line a user sees on stderr; return its exit code (CLI and worker share it)."""
    import sys

    sys.stderr.write(f"reslab: error: {one_line(err)}\n")
    return err.exit_code


def warn_line(text: str) -> None:
    """Print ``text`` as a one-line warning on stderr (what a ``warn=`` parameter left unset does)."""
    import sys

    sys.stderr.write(f"reslab: warning: {text}\n")
