"""Metric loggers beside metrics.jsonl: TensorBoard, CSV and Weights & Biases (``--logger a,b``).

Each logger is fed the same records as ``metrics.jsonl``, at the same evaluation points (iteration, epoch,
lr, train/test loss and error, top-5 error, images/s, seconds), by the main process only. Each is an
optional extra: a logger whose package is missing is refused before training starts, with the
``pip install`` line that fixes it.

- ``csv``: ``metrics.csv`` in the run directory, one row per record; rewritten from the kept records when a
  run resumes, so it always matches ``metrics.jsonl``.
- ``tensorboard``: event files under ``tb/`` in the run directory (``tensorboard --logdir runs``); a resumed
  run purges the events past its checkpoint (``purge_step``), as metrics.jsonl drops its lines.
- ``wandb``: offline (files under the run directory, ``wandb sync`` uploads them) unless ``WANDB_MODE`` is
  set; the wandb run id is derived from the run directory, so a resumed run continues the same wandb run.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from reslab.engine.store.rundir import CSV_FILE, TB_DIR  # names --overwrite knows as reslab's own
from reslab.errors import ConfigError

# name -> (the module it needs, the extra that installs it)
LOGGERS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "csv": (None, None),
    "wandb": ("wandb", "wandb"),
}
SCALARS = (  # what goes to TensorBoard / wandb: every figure of a record, grouped as the viewers show them
    ("train_loss", "loss/train"),
    ("test_loss", "loss/test"),
    ("train_error", "error/train"),
    ("test_error", "error/test"),
    ("test_top5_error", "error/test_top5"),
    ("lr", "opt/lr"),
    ("images_per_s", "speed/images_per_s"),
    ("epoch", "progress/epoch"),
    ("seconds", "progress/seconds"),
)


def check_loggers(names: Sequence[str]) -> tuple[str, ...]:
    """The logger names, checked: known, each once, and its package installed (else the install line)."""
    out: list[str] = []
    for name in names:
        key = name.strip().lower()
        if key not in LOGGERS:
            raise ConfigError(f"unknown --logger {name!r}; choose from {', '.join(LOGGERS)}")
        module, extra = LOGGERS[key]
        if module is not None and importlib.util.find_spec(module) is None:
            raise ConfigError(f'--logger {key} needs the {module} package: pip install "reslab[{extra}]"')
        if key not in out:
            out.append(key)
    return tuple(out)


def check_logger_paths(names: Sequence[str], run_dir: Path) -> None:
    """Refuse, before the run writes anything, what is in the way of the loggers' files: a file or a link
    named ``tb`` where TensorBoard keeps its folder, a link or a folder named ``metrics.csv``."""
    from reslab.files import check_output_file, refuse_link

    for name in check_loggers(names):
        if name == "tensorboard":
            tb = run_dir / TB_DIR
            refuse_link(tb, "TensorBoard folder", error=ConfigError)
            if os.path.lexists(tb) and not tb.is_dir():
                raise ConfigError(
                    f"TensorBoard folder {tb} is a file, not a folder; remove it or choose another --out"
                )
        elif name == "csv":
            check_output_file(run_dir / CSV_FILE, "metrics table", error=ConfigError)


class MetricLogger(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class CsvLogger:
    """``metrics.csv``: a header of the record's keys, then one row per evaluation point."""

    def __init__(self, run_dir: Path, history: Sequence[dict[str, Any]]) -> None:
        from reslab.engine.store.rundir import atomic_write_bytes

        self.path = run_dir / CSV_FILE
        self.fields: list[str] | None = list(history[0]) if history else None
        buf = io.StringIO()
        if self.fields is not None:
            writer = csv.DictWriter(buf, self.fields, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(history)
        atomic_write_bytes(self.path, buf.getvalue().encode())  # the kept records only, as metrics.jsonl

    def log(self, record: dict[str, Any]) -> None:
        from reslab.files import append_bytes

        header = self.fields is None
        if header:
            self.fields = list(record)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.fields or [], extrasaction="ignore", lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerow(record)
        append_bytes(self.path, buf.getvalue().encode(), "metrics table")  # never through a link

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Scalars under ``tb/`` with the iteration as the step; flushed at every record (records are rare)."""

    def __init__(self, run_dir: Path, iteration: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        from reslab.files import own_folder

        # tb/ is reslab's folder: a user's file or a link of that name is one line, never written through
        own_folder(run_dir / TB_DIR, "TensorBoard folder", error=ConfigError)
        # purge_step: events a crashed session wrote past the checkpoint we resume from are discarded
        # the record at ``iteration`` itself is kept, as in metrics.jsonl
        self.writer = SummaryWriter(str(run_dir / TB_DIR), purge_step=iteration + 1 if iteration else None)

    def log(self, record: dict[str, Any]) -> None:
        step = int(record["iteration"])
        for key, tag in SCALARS:
            if record.get(key) is not None:
                self.writer.add_scalar(tag, float(record[key]), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A wandb run in the run directory: offline unless ``WANDB_MODE`` says otherwise."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        import wandb

        run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "reslab"),
            name=run_dir.name,
            id=run_id,
            dir=str(run_dir),
            config=config,
            mode=os.environ.get("WANDB_MODE", "offline"),  # never the network unless the user asks
            resume="allow",
        )

    def log(self, record: dict[str, Any]) -> None:
        data = {tag: record[key] for key, tag in SCALARS if record.get(key) is not None}
        self.run.log(data, step=int(record["iteration"]))

    def close(self) -> None:
        self.run.finish()


class Loggers:
    """The loggers of one run (none on other ranks than the main one): ``log`` each record, then ``close``."""

    def __init__(self, loggers: Sequence[MetricLogger] = ()) -> None:
        self.loggers = list(loggers)

    def log(self, record: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(record)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
        self.loggers = []


def open_loggers(
    names: Sequence[str],
    run_dir: Path,
    *,
    history: Sequence[dict[str, Any]] = (),
    iteration: int = 0,
    config: dict[str, Any] | None = None,
    is_main: bool = True,
) -> Loggers:
    """The loggers ``names`` for ``run_dir``, continuing after ``history`` (a resumed run's kept records)."""
    if not is_main:
        return Loggers()
    out: list[MetricLogger] = []
    for name in check_loggers(names):
        if name == "csv":
            out.append(CsvLogger(run_dir, history))
        elif name == "tensorboard":
            out.append(TensorBoardLogger(run_dir, iteration))
        else:
            out.append(WandbLogger(run_dir, config or {}))
    return Loggers(out)
