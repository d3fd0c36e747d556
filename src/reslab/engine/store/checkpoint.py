"""Checkpoints: safetensors weights + a ``weights_only`` training state, atomic, last two kept.

A checkpoint is a directory ``checkpoints/ckpt-<iteration:08d>/`` holding ``model.safetensors``, ``state.pt``
(optimizer, RNG states, position, interval accumulators) and ``manifest.json`` (sizes and SHA-256 of both).
It is assembled under a temporary name and renamed into place, so it is either whole or absent; the manifest
catches a later truncation or bit flip, and resume then falls back to the previous checkpoint.
Nothing here unpickles arbitrary objects: weights are safetensors, and ``.pt`` files go through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from reslab.engine.store.rundir import (
    CKPT_DIR,
    CKPT_LEFTOVER,
    CKPT_NAME,
    WEIGHTS,
    RunLock,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    storage_error,
)
from reslab.errors import CheckpointError, warn_line
from reslab.files import MAX_JSON_BYTES, own_folder, read_bounded, read_text_bounded
from reslab.models.weights import MAX_WEIGHTS_BYTES, WEIGHTS_CHECKSUM, tensor_data_sha256

STATE = "state.pt"
MANIFEST = "manifest.json"
KEEP = 2  # the newest may be the one a crash or a bad disk broke


def weights_bytes(model: torch.nn.Module) -> bytes:
    """safetensors bytes of the model's parameters and buffers (CPU, contiguous: NCHW on disk), carrying the
    SHA-256 of their data in the header (``reslab_sha256``): the run's top-level ``model.safetensors`` has
    no manifest beside it, so a flipped bit there is caught by this checksum when it is read back."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return st_save(state, metadata={WEIGHTS_CHECKSUM: tensor_data_sha256(st_save(state))})


def _pt_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_checkpoint(run_dir: Path, iteration: int, weights: bytes, state: dict[str, Any]) -> Path:
    """Write checkpoint ``iteration`` and the run's top-level weights; prune to the last :data:`KEEP`.

    Only renames make a checkpoint appear or disappear, so a crash at any instant leaves every visible
    ``ckpt-*`` whole; leftovers of a crash have dot-names that :func:`list_checkpoints` never sees. Pruning
    deletes only the exact names reslab writes (``ckpt-<8+ digits>``), and only under the run's lock (the
    training run's own, or taken here), so a user's ``ckpt-00000012-backup/`` and a live run are safe.
    ``checkpoints/`` as a link is refused: nothing is written into, or pruned from, a folder it points to.
    """
    with RunLock(run_dir, what="training", join=True):
        return _save_locked(run_dir, iteration, weights, state)


def _save_locked(run_dir: Path, iteration: int, weights: bytes, state: dict[str, Any]) -> Path:
    root = run_dir / CKPT_DIR
    final = root / f"ckpt-{iteration:08d}"
    own_folder(root, "checkpoint folder", error=CheckpointError)
    try:
        for stale in root.iterdir():  # a crashed save or prune of an earlier session: exact names only
            if CKPT_LEFTOVER.fullmatch(stale.name) and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".tmp-ckpt-{iteration:08d}"
        tmp.mkdir()
        try:
            files = {WEIGHTS: weights, STATE: _pt_bytes(state)}
            for name, data in files.items():
                atomic_write_bytes(tmp / name, data)
            manifest = {
                n: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()
            }
            atomic_write_json(tmp / MANIFEST, {"iteration": iteration, "files": manifest})
            if os.path.lexists(final):  # re-saving the same iteration (e.g. Ctrl-C right at an eval point)
                _discard(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk must not fill up further with a half copy
            raise
        fsync_dir(root)
        atomic_write_bytes(run_dir / WEIGHTS, weights)
        for old in list_checkpoints(run_dir)[KEEP:]:
            _discard(old)
    except OSError as err:
        raise storage_error(final, err) from None
    return final


def _discard(ckpt: Path) -> None:
    """Rename out of sight, then delete: a crash half-way through rmtree must not leave a torn ckpt-*."""
    if ckpt.is_symlink():  # the link goes, never what it points to
        ckpt.unlink()
        return
    trash = ckpt.with_name(f".old-{ckpt.name}")
    shutil.rmtree(trash, ignore_errors=True)
    ckpt.rename(trash)
    fsync_dir(ckpt.parent)
    shutil.rmtree(trash, ignore_errors=True)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories (exact ``ckpt-<iteration>`` names, real folders, never links), newest first."""
    root = run_dir / CKPT_DIR
    if not root.is_dir() or root.is_symlink():
        return []
    found = [p for p in root.iterdir() if CKPT_NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


def _read_verified(path: Path, expected: dict[str, Any] | None) -> bytes:
    """A checkpoint file, read only up to the size its manifest gives, and checked against its SHA-256."""
    size = expected.get("bytes") if expected is not None else None
    cap = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else MAX_WEIGHTS_BYTES
    try:
        data = read_bounded(path, cap, "checkpoint file", error=CheckpointError)
    except CheckpointError as err:
        raise CheckpointError(f"{err}; the checkpoint is truncated or corrupted") from None
    if expected is not None and (
        len(data) != expected.get("bytes") or hashlib.sha256(data).hexdigest() != expected.get("sha256")
    ):
        raise CheckpointError(f"checkpoint file {path} is truncated or corrupted (size/checksum mismatch)")
    return data


def load_checkpoint(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(weights, training state) of one checkpoint directory; CheckpointError names the broken file."""
    try:
        manifest = json.loads(
            read_text_bounded(ckpt / MANIFEST, MAX_JSON_BYTES, "manifest", error=CheckpointError)
        )
        manifest = manifest["files"]
        # Every file needs its size and checksum: an entry that is absent must not skip verification.
        for name in (WEIGHTS, STATE):
            entry = manifest[name]
            if not (isinstance(entry["bytes"], int) and isinstance(entry["sha256"], str)):
                raise TypeError(name)
    except (CheckpointError, OSError, ValueError, KeyError, TypeError, IndexError):
        raise CheckpointError(f"checkpoint manifest {ckpt / MANIFEST} is missing or corrupted") from None
    weights = _parse_safetensors(_read_verified(ckpt / WEIGHTS, manifest.get(WEIGHTS)), ckpt / WEIGHTS)
    state = _parse_pt(_read_verified(ckpt / STATE, manifest.get(STATE)), ckpt / STATE)
    if not isinstance(state, dict) or "iteration" not in state:
        raise CheckpointError(f"{ckpt / STATE} is not a reslab training state")
    return weights, state


def load_latest_checkpoint(
    run_dir: Path, warn: Callable[[str], None] | None = None
) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]]:
    """Newest checkpoint that loads; a broken newer one is reported through ``warn`` and skipped."""
    say = warn or warn_line
    errors: list[str] = []
    for ckpt in list_checkpoints(run_dir):
        try:
            weights, state = load_checkpoint(ckpt)
        except CheckpointError as err:
            errors.append(str(err))
            say(f"{err}; falling back to the previous checkpoint")
            continue
        return ckpt, weights, state
    detail = f" ({errors[-1]})" if errors else ""
    raise CheckpointError(f"no usable checkpoint in {run_dir / CKPT_DIR}{detail}; start a new run instead")


def _parse_safetensors(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        return st_load(data)
    except Exception as err:  # safetensors raises its own SafetensorError and others on malformed headers
        raise CheckpointError(f"weights file {path} is truncated or corrupted: {err}") from None


def _parse_pt(data: bytes, path: Path) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, or a pickle that wants more than tensors and plain data
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is corrupted or not a plain weights file (weights_only): {first}"
        ) from None
