"""Reading a finished (or running) run back: ``load_run`` for eval, predict, export and analysis."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from reslab.data.images import MAX_PIXELS
from reslab.data.loader import Normalization
from reslab.engine.config import TrainConfig
from reslab.engine.store.checkpoint import load_latest_checkpoint
from reslab.engine.store.rundir import CONFIG, WEIGHTS
from reslab.errors import CheckpointError, ConfigError, ReslabError, warn_line
from reslab.files import MAX_JSON_BYTES, check_regular_file, read_text_bounded
from reslab.models.weights import read_state_dict

if TYPE_CHECKING:
    from reslab.models.nets import StagedNet


@dataclass
class RunInfo:
    """What a model needs around it to be used: its config, classes, input shape and normalisation."""

    config: TrainConfig
    classes: list[str]
    input_shape: tuple[int, int, int]  # (C, H, W) the model was trained on
    norm: Normalization  # apply to uint8 images before the model
    run_dir: Path | None  # None for a bare weights file with a sidecar config
    weights: Path  # the file the weights came from
    precision: str = "fp32"  # what the run trained and evaluated in (its results use it)
    channels_last: bool = False


@dataclass
class RunResult:
    """What :func:`train` returns; the same figures are in ``<run_dir>/summary.json``."""

    run_dir: Path
    model: str
    dataset: str
    final_train_loss: float  # eval mode, whole train split, no augmentation (the paper's training error)
    final_train_error: float
    final_test_loss: float
    final_test_error: float
    final_test_top5_error: float
    params: int
    seconds: float  # wall time of all sessions of this run
    iterations: int
    epochs: float
    history: list[dict[str, Any]] = field(default_factory=list)  # the metrics.jsonl records
    notes: list[str] = field(default_factory=list)  # what a reader of the figures must know (in summary.json)
    num_classes: int | None = None  # None: a run written before reslab recorded it
    best: dict[str, Any] | None = None  # --keep-best: file, iteration, val_error, val_images

    def __post_init__(self) -> None:
        if not self.measured_test and NO_TEST_NOTE not in self.notes:
            self.notes.append(NO_TEST_NOTE)

    @property
    def measured_test(self) -> bool:
        """False when the test split had no images: the test figures are then NaN, never a result (printed
        as "not measured", written as null)."""
        figures = (self.final_test_loss, self.final_test_error, self.final_test_top5_error)
        return all(isinstance(v, int | float) and math.isfinite(v) for v in figures)

    def test_text(self) -> str:
        """The test figures as a phrase, or why there are none; top-5 only above 5 classes (0 by design)."""
        if not self.measured_test:
            return f"no test error: the test split of {self.dataset} has no images (not measured)"
        top5 = self.num_classes is None or self.num_classes > 5
        return f"test error {self.final_test_error:.2%} (loss {self.final_test_loss:.4f})" + (
            f", test top-5 error {self.final_test_top5_error:.2%}" if top5 else ""
        )

    def __str__(self) -> str:
        text = (
            f"run: {self.run_dir}\n"
            f"{self.model} ({self.params:,} params) on {self.dataset}: {self.iterations} iterations "
            f"({self.epochs:g} epoch(s)) in {self.seconds:.1f} s\n"
            f"final training error {self.final_train_error:.2%} (loss {self.final_train_loss:.4f}), "
            + self.test_text()
        )
        if self.best:
            text += (
                f"\nbest weights ({self.best['file']}): iteration {self.best['iteration']}, error "
                f"{self.best['val_error']:.2%} on {self.best['val_images']} held-out training images"
            )
        return text

    def _repr_html_(self) -> str:
        from reslab.reports import run_html

        return run_html(self)


def read_run_result(run_dir: Path) -> RunResult:
    """The :class:`RunResult` of a finished run, from its ``summary.json`` and ``metrics.jsonl``."""
    from reslab.engine.store.rundir import METRICS, SUMMARY, read_jsonl

    path = run_dir / SUMMARY
    try:
        summary = json.loads(read_text_bounded(path, MAX_JSON_BYTES, "run summary", error=ConfigError))
        optional = {"num_classes", "best"}  # absent from the summaries of older runs
        names = {f.name for f in dataclasses.fields(RunResult)} - {"run_dir", "history", "notes"} - optional
        values = {k: _summary_value(k, summary[k]) for k in names}
        extra = {k: summary[k] for k in optional if summary.get(k) is not None}
        if not isinstance(extra.get("num_classes", 0), int) or not isinstance(extra.get("best", {}), dict):
            raise TypeError("num_classes")
        return RunResult(run_dir=run_dir, history=read_jsonl(run_dir / METRICS), **values, **extra)
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    except (ValueError, KeyError, TypeError, RecursionError):
        raise CheckpointError(f"{path} is not a valid reslab run summary") from None


NO_TEST_NOTE = "the test split has no images: the test figures were not measured (null)"
MAX_CHANNELS = 16  # images are grey (1) or RGB (3); anything far beyond is no image reslab trained on
_TEST_FIGURES = ("final_test_loss", "final_test_error", "final_test_top5_error")
MAX_COUNT = 2**63 - 1


def _summary_value(key: str, value: Any) -> Any:
    """A summary.json value checked by type and range: a string for names, a finite number (an int within
    int64) for figures; null only for a test figure that was not measured (no test images), read as NaN."""
    if key in ("model", "dataset"):
        if not isinstance(value, str):
            raise TypeError(key)
        return value
    if value is None and key in _TEST_FIGURES:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(key)
    if isinstance(value, float) and not math.isfinite(value) and key not in _TEST_FIGURES:
        raise ValueError(key)
    if isinstance(value, int) and abs(value) > MAX_COUNT:
        raise ValueError(key)
    return value


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
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """The content of ``config.json``: the config plus the data facts predict needs, plus versions
    (``fingerprint``: of data passed in memory, which a resume must be given again)."""
    from reslab.version import __version__

    data = {
        "dataset": cfg.dataset,
        "classes": list(classes),
        "input_shape": list(input_shape),
        "augment": augment,
        "source": source,
        "normalization": norm.to_dict(),
    }
    if fingerprint is not None:
        data["fingerprint"] = fingerprint
    return {
        "config": cfg.to_dict(),
        "data": data,
        "runtime": runtime,
        "params": params,
        "versions": {"reslab": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def read_run_config(path: Path) -> dict[str, Any]:
    """A run's ``config.json``, validated: settings by type, data facts by shape and range.

    CheckpointError (one line naming the file and the key) for a missing, oversized, non-regular, non-UTF-8,
    non-JSON or tampered file, e.g. ``"lr": "0.1"`` or a normalisation ``std`` of 0.
    """
    try:
        meta = json.loads(read_text_bounded(path, MAX_JSON_BYTES, "run config", error=ConfigError))
    except ConfigError as err:
        raise CheckpointError(f"{err}; is this a reslab run directory?") from None
    except ValueError:
        raise CheckpointError(f"{path} is not valid JSON; is this a reslab run directory?") from None
    try:
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
            raise ValueError("config")
        cfg = TrainConfig.from_dict(meta["config"], where=str(path))
        _check_data_facts(meta.get("data"))
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path}: bad or missing {err.args[0] if err.args else 'data'} entry") from None
    try:
        cfg.validate()  # ranges too: a tampered "iterations": -3 is refused here, naming the file
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return meta


def _check_data_facts(data: Any) -> None:
    """ValueError naming the bad key of the ``data`` section (classes, input_shape, normalization)."""
    if not isinstance(data, dict):
        raise ValueError("data")
    classes = data.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ValueError("data.classes")
    shape = data.get("input_shape")
    if not isinstance(shape, list) or len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise ValueError("data.input_shape")
    c, h, w = shape  # bounded before anything is built from it: a 100,000 x 100,000 input is no image
    if c > MAX_CHANNELS or h * w > MAX_PIXELS:
        too_large = f"over {MAX_CHANNELS} channels or {MAX_PIXELS:,} pixels"
        raise ValueError(f"data.input_shape {c}x{h}x{w} ({too_large})")
    norm = data.get("normalization")
    if not isinstance(norm, dict) or norm.get("mode") not in ("channel", "pixel"):
        raise ValueError("data.normalization.mode")
    for key in ("mean", "std"):
        try:
            values = torch.tensor(norm.get(key), dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"data.normalization.{key}") from None
        ok = values.numel() > 0 and bool(torch.isfinite(values).all())
        if not ok or (key == "std" and not bool((values > 0).all())):
            raise ValueError(f"data.normalization.{key}")


def _locate(path: Path) -> tuple[Path, Path | None, Path | None]:
    """(config.json, weights file or None = the run's own, run dir or None) of a run dir or weights file."""
    if path.is_dir():
        return path / CONFIG, (path / WEIGHTS if (path / WEIGHTS).exists() else None), path
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; pass a run directory or a weights file")
    check_regular_file(path, "weights file", error=CheckpointError)  # a FIFO is "not a regular file"
    for sidecar in (path.with_suffix(".json"), path.parent / CONFIG):
        if sidecar.is_file():
            return sidecar, path, (path.parent if sidecar.name == CONFIG else None)
    raise CheckpointError(
        f"no config next to {path} (looked for {path.with_suffix('.json').name} and {CONFIG}); "
        "pass the run directory instead"
    )


def build_from_meta(meta: dict[str, Any]) -> tuple[StagedNet, TrainConfig]:
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
) -> tuple[StagedNet, RunInfo]:
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
            state, _, _ = read_state_dict(weights_path)
        except CheckpointError as err:
            if run_dir is None or weights_path != run_dir / WEIGHTS:
                raise
            (warn or warn_line)(f"{err}; using the last checkpoint")
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
        input_shape=tuple(data["input_shape"]),
        norm=Normalization.from_dict(data["normalization"]),
        run_dir=run_dir,
        weights=weights_path,
    )
    found = meta.get("runtime")
    runtime: dict[str, Any] = found if isinstance(found, dict) else {}
    if runtime.get("precision") in ("fp32", "bf16", "fp16"):
        info.precision = runtime["precision"]
    info.channels_last = runtime.get("channels_last") is True
    return model.to(device).eval(), info
