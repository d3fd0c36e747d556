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
