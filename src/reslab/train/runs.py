"""Reading a finished (or running) run back: ``load_run`` for eval, predict, export and analysis."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reslab.data.loader import Normalization
from reslab.errors import CheckpointError, ReslabError
from reslab.train.checkpoint import load_latest_checkpoint, load_weights
from reslab.train.config import TrainConfig
from reslab.train.rundir import CONFIG, WEIGHTS


@dataclass
class RunInfo:
    """What a model needs around it to be used: its config, classes, input shape and normalisation."""

    config: TrainConfig
    classes: list[str]
    input_shape: tuple[int, int, int]  # (C, H, W) the model was trained on
    norm: Normalization  # apply to uint8 images before the model
    run_dir: Path | None  # None for a bare weights file with a sidecar config
    weights: Path  # the file the weights came from


def run_metadata(
    cfg: TrainConfig,
    *,
    classes: list[str],
    input_shape: tuple[int, int, int],
    norm: Normalization,
    augment: str,
    source: str,
    runtime: dict[str, Any],
    params: int,
) -> dict[str, Any]:
    """The content of ``config.json``: the config plus the data facts predict needs, plus versions."""
    from reslab import __version__

    return {
        "config": cfg.to_dict(),
        "data": {
            "dataset": cfg.dataset,
            "classes": list(classes),
            "input_shape": list(input_shape),
            "augment": augment,
            "source": source,
            "normalization": norm.to_dict(),
        },
        "runtime": runtime,
        "params": params,
        "versions": {"reslab": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def read_run_config(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
        meta["config"], meta["data"]["classes"], meta["data"]["normalization"]
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist; is this a reslab run directory?") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path} is not a valid reslab run config") from None
    return meta


def _locate(path: Path) -> tuple[Path, Path | None, Path | None]:
    """(config.json, weights file or None = the run's own, run dir or None) of a run dir or weights file."""
    if path.is_dir():
        return path / CONFIG, (path / WEIGHTS if (path / WEIGHTS).exists() else None), path
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; pass a run directory or a weights file")
    for sidecar in (path.with_suffix(".json"), path.parent / CONFIG):
        if sidecar.is_file():
            return sidecar, path, (path.parent if sidecar.name == CONFIG else None)
    raise CheckpointError(
        f"no config next to {path} (looked for {path.with_suffix('.json').name} and {CONFIG}); "
        "pass the run directory instead"
    )


def build_from_meta(meta: dict[str, Any]) -> tuple[torch.nn.Module, TrainConfig]:
    from reslab.models import build_model

    cfg = TrainConfig.from_dict(meta["config"])
    data = meta["data"]
    model = build_model(
        cfg.model,
        num_classes=len(data["classes"]),
        input_shape=tuple(data["input_shape"]),
        **cfg.model_kwargs,
    )
    return model, cfg


def load_run(
    path: str | Path, *, device: torch.device | str = "cpu", warn: Any = None
) -> tuple[torch.nn.Module, RunInfo]:
    """Rebuild a trained model in eval mode from a run directory or a weights file with a sidecar config.

    Accepts ``RUN_DIR`` (its ``model.safetensors``, else its newest good checkpoint), ``X.safetensors`` and
    ``X.pt``/``X.pth`` (read with ``torch.load(weights_only=True)``) next to ``config.json`` or ``X.json``.
    """
    path = Path(path).expanduser()
    cfg_path, weights_path, run_dir = _locate(path)
    meta = read_run_config(cfg_path)
    model, cfg = build_from_meta(meta)
    state: dict[str, torch.Tensor]
    if weights_path is not None:
        try:
            state = load_weights(weights_path)
        except CheckpointError as err:
            if run_dir is None or weights_path != run_dir / WEIGHTS:
                raise
            (warn or (lambda m: sys.stderr.write(f"reslab: warning: {m}\n")))(
                f"{err}; using the last checkpoint"
            )
            weights_path = None
    if weights_path is None:
        assert run_dir is not None
        ckpt, state, _ = load_latest_checkpoint(run_dir, warn)
        weights_path = ckpt / WEIGHTS
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ReslabError) as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(f"{weights_path} does not fit model {cfg.model}: {first}") from None
    data = meta["data"]
    info = RunInfo(
        config=cfg,
        classes=list(data["classes"]),
        input_shape=tuple(data["input_shape"]),  # type: ignore[arg-type]
        norm=Normalization.from_dict(data["normalization"]),
        run_dir=run_dir,
        weights=weights_path,
    )
    return model.to(device).eval(), info
