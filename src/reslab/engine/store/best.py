"""``--keep-best``: the weights with the lowest error on training images held out to choose by.

The held-out images (``--best-split N``, default 10% of the training split, stratified, seeded by
``--split-seed``) are taken out of the training split before the run starts (:mod:`reslab.engine.data`): the
net never trains on them, and the test split is never looked at. At every evaluation point their error is
measured (``val_error`` in metrics.jsonl); a lower one than any before makes those weights the best, written
to ``best.safetensors`` (its header holds the iteration and the error) right after that point's checkpoint.

Resume-safe: each checkpoint holds the best so far (iteration, error). A crash between a checkpoint and the
best weights after it leaves the checkpoint's own weights as the best: restoring writes them again.
``reslab eval | predict | export RUN --weights best`` (``weights="best"``) use the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from reslab.engine.store.rundir import WEIGHTS, atomic_write_bytes
from reslab.errors import CheckpointError, ConfigError
from reslab.models.weights import WEIGHTS_CHECKSUM, tensor_data_sha256

BEST = "best.safetensors"
ITERATION_KEY = "reslab_best_iteration"
ERROR_KEY = "reslab_best_val_error"
WEIGHTS_CHOICES = ("last", "best")


class BestWeights:
    """The best evaluation so far, and its weights on disk (written by the main process only)."""

    def __init__(self, run_dir: Path, *, is_main: bool = True) -> None:
        self.run_dir, self.is_main = run_dir, is_main
        self.iteration: int | None = None
        self.error = math.inf
        self._unsaved = False

    def observe(self, iteration: int, loss: float, error: float) -> dict[str, Any]:
        """Take the held-out figures of an evaluation point; the metrics.jsonl fields they make."""
        if error < self.error:  # strictly lower: the earliest of equal errors stays the best
            self.iteration, self.error, self._unsaved = iteration, error, True
        return {"val_loss": loss, "val_error": error, "best_iteration": self.iteration}

    def save(self, model: torch.nn.Module) -> None:
        """Write the weights of a new best (call after the checkpoint of the same point)."""
        if self._unsaved and self.is_main and self.iteration is not None:
            atomic_write_bytes(self.run_dir / BEST, best_bytes(model, self.iteration, self.error))
        self._unsaved = False

    def to_state(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "error": self.error if math.isfinite(self.error) else None}

    def restore(
        self, state: Any, iteration: int, model: torch.nn.Module, warn: Callable[[str], None]
    ) -> None:
        """The best of the checkpoint at ``iteration``, whose weights ``model`` now holds (module doc)."""
        if not isinstance(state, dict) or state.get("iteration") is None:
            return
        self.iteration, self.error = int(state["iteration"]), float(state["error"])
        on_disk = saved_iteration(self.run_dir / BEST)
        if on_disk == self.iteration:
            return
        if self.iteration == iteration:  # stopped between the checkpoint and the best weights
            self._unsaved = True
            self.save(model)
            return
        warn(
            f"{BEST} does not hold the best weights this checkpoint knows (iteration {self.iteration}); the "
            "best is chosen again from here on"
        )
        self.iteration, self.error = None, math.inf

    def summary(self, images: int) -> dict[str, Any] | None:
        """What summary.json records of the best weights."""
        if self.iteration is None:
            return None
        return {"file": BEST, "iteration": self.iteration, "val_error": self.error, "val_images": images}


def best_bytes(model: torch.nn.Module, iteration: int, error: float) -> bytes:
    """safetensors bytes of ``model``'s state, with the data's SHA-256, the iteration and the error."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {
        WEIGHTS_CHECKSUM: tensor_data_sha256(st_save(state)),
        ITERATION_KEY: str(iteration),
        ERROR_KEY: repr(error),
    }
    return st_save(state, metadata=meta)


def saved_iteration(path: Path) -> int | None:
    """The iteration in a best-weights file's header; None when there is no readable one."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            value = (f.metadata() or {}).get(ITERATION_KEY)
        return int(value) if value is not None else None
    except Exception:  # a torn or foreign file: as if absent
        return None


def select_weights(run: str | Path, weights: str | None) -> Path:
    """The path ``load_run`` should read for ``--weights``: ``last`` (or None) the run (directory or file)
    as given, ``best`` its ``best.safetensors``.

    Raises ConfigError: an unknown choice, or a run without best weights (one line with the fix).
    """
    path = Path(run).expanduser()
    if weights in (None, "last"):
        return path
    if weights not in WEIGHTS_CHOICES:
        raise ConfigError(f"unknown --weights {weights!r}; choose one of {', '.join(WEIGHTS_CHOICES)}")
    run_dir = path if path.is_dir() else path.parent
    best = run_dir / BEST
    if not best.is_file():
        if not (run_dir / WEIGHTS).exists() and not run_dir.is_dir():
            raise CheckpointError(f"{path} does not exist; pass a run directory")
        raise ConfigError(
            f"{run_dir} has no {BEST}: it was trained without --keep-best; use --weights last, or train "
            "with --keep-best"
        )
    return best
