"""Running a sweep of runs: reuse what is finished, resume what was interrupted, record what diverged.

A sweep (the depth comparison, the ablations) is a list of :class:`Job` s, each an ordinary run directory
``<out>/<model>-s<seed>`` with its own :class:`~reslab.engine.TrainConfig`. :func:`run_jobs` trains them in
order (or one per device at a time), and:

- reuses a finished run (``summary.json`` present, same settings) and resumes an interrupted one from its
  last checkpoint, so a sweep killed halfway loses at most the run in progress since its last evaluation;
- records a run that stopped on NaN/inf as *diverged* (``diverged.json``) and goes on; re-running reuses it
  as finished unless ``retry_diverged``;
- refuses a run directory trained with other settings, and another sweep in the same ``out``
  (``sweep.json`` holds the sweep's settings);
- can train a single run of the sweep (``only=I``), so the runs can be spread over processes or machines
  sharing the folder, and a later full call gathers them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO, TypeVar

from reslab.engine import TrainConfig, train
from reslab.engine.store import rundir as rd
from reslab.engine.store.checkpoint import list_checkpoints
from reslab.engine.store.runs import read_run_config
from reslab.errors import CheckpointError, ConfigError, DivergedError
from reslab.experiments.results import RunRecord
from reslab.files import MAX_JSON_BYTES, read_text_bounded, refuse_link
from reslab.settings import fields_of

OnRun = Callable[[RunRecord, str], None]  # (record, "trained" | "resumed" | "reused" | "diverged")
Say = Callable[[str], None]
_R = TypeVar("_R")


def in_sweep_folder(cfg: Any, stream: TextIO | None, what: str, body: Callable[[Path, Say], _R]) -> _R:
    """``body(out, say)`` with the sweep's folder checked writable and locked (one full sweep per folder at a
    time; a single ``--run-index`` run locks its own run directory only); ``say`` writes the sweep's
    progress lines to ``stream`` (stderr) unless ``cfg.progress`` is "off"."""
    stream = stream or sys.stderr

    def say(text: str) -> None:
        if cfg.progress != "off":
            stream.write(text + "\n")
            stream.flush()

    out = Path(cfg.out)
    rd.check_writable(out)
    with contextlib.ExitStack() as hold:
        if cfg.run_index is None:
            hold.enter_context(rd.RunLock(out, what=what))
        return body(out, say)


@dataclass(frozen=True)
class Job:
    """One run of a sweep: its place in the grid, its model and its run directory and settings."""

    index: int  # 0-based position in the sweep (``--run-index``)
    kind: str  # "plain" | "residual", or a variant's name
    depth: int
    seed: int
    model: str
    config: TrainConfig  # with ``out`` = the run directory
    label: str = ""  # what progress lines call the run; default the model's name

    @property
    def run_dir(self) -> Path:
        return Path(str(self.config.out))

    @property
    def name(self) -> str:
        return self.label or self.model


def free_fields() -> tuple[str, ...]:
    """TrainConfig fields that may differ between re-runs of a sweep: where and how visibly a run goes."""
    return (*(f.name for f in fields_of(TrainConfig) if not f.metadata["sweep"]), "model", "seed")


def comparable(train_settings: dict[str, Any]) -> dict[str, Any]:
    """A TrainConfig dict without :func:`free_fields`, with fields of newer versions at their defaults."""
    full = TrainConfig.from_dict(train_settings).to_dict()
    free = free_fields()
    return {k: v for k, v in full.items() if k not in free}


def check_sweep_file(out: Path, settings: dict[str, Any], name: str) -> None:
    """Write ``out/<name>``, or refuse when ``out`` holds a sweep with other settings."""
    from reslab.version import __version__

    path = out / name
    if os.path.lexists(path):
        # the one bounded reader: a FIFO, a device, a link or a 10 GiB file is one line, never read
        text = read_text_bounded(path, MAX_JSON_BYTES, "sweep file", follow_symlinks=False, error=ConfigError)
        try:
            old = json.loads(text)["settings"]
            keys = sorted(set(old) | set(settings))
        except (ValueError, KeyError, TypeError, RecursionError):
            raise ConfigError(
                f"{path} is not a reslab sweep file; remove it or choose another --out"
            ) from None
        diff = [k for k in keys if old.get(k) != settings.get(k)]
        if diff:
            k = diff[0]
            raise ConfigError(
                f"--out {out} holds a sweep with {k}={old.get(k)!r}, not {settings.get(k)!r}; rerun with the "
                "same settings to resume it, or choose another --out"
            )
        return
    rd.atomic_write_json(path, {"settings": settings, "reslab": __version__})


def run_state(job: Job) -> str:
    """``new`` | ``interrupted`` | ``finished`` | ``diverged``; refuses a run trained with other settings, and
    a run folder that is a symbolic link (the sweep names and makes its run folders: a link there would
    have it train into, and overwrite, whatever folder it points to)."""
    refuse_link(job.run_dir, "sweep run folder", error=ConfigError)
    if not (job.run_dir / rd.CONFIG).is_file():
        return "new"
    try:
        saved = comparable(read_run_config(job.run_dir / rd.CONFIG)["config"])
    except CheckpointError as err:
        raise ConfigError(f"{err}; delete {job.run_dir} to retrain it") from None
    want = comparable(job.config.to_dict())
    for key in sorted(set(saved) | set(want)):
        if saved.get(key) != want.get(key):
            raise ConfigError(
                f"{job.run_dir} was trained with {key}={saved.get(key)!r}, not {want.get(key)!r}; "
                "delete that run directory or choose another --out"
            )
    if (job.run_dir / rd.SUMMARY).is_file():
        return "finished"
    return "diverged" if (job.run_dir / rd.DIVERGED).is_file() else "interrupted"


def record_of(job: Job, summary: dict[str, Any], history: list[dict[str, Any]]) -> RunRecord:
    return RunRecord(
        kind=job.kind,
        depth=job.depth,
        seed=job.seed,
        model=job.model,
        params=int(summary["params"]),
        final_train_error=float(summary["final_train_error"]),
        final_test_error=float(summary["final_test_error"]),
        final_train_loss=float(summary["final_train_loss"]),
        final_test_loss=float(summary["final_test_loss"]),
        seconds=float(summary["seconds"]),
        iterations=int(summary["iterations"]),
        path=str(job.run_dir),
        history=history,
    )


def reuse(job: Job) -> RunRecord | None:
    """The finished run's record, or None when its summary.json is unreadable (it is then resumed)."""
    from reslab.engine.store.runs import read_run_result

    try:
        result = read_run_result(job.run_dir)
    except CheckpointError:
        return None
    return record_of(job, result.__dict__, result.history)


def diverged_record(job: Job) -> RunRecord:
    """A diverged run's record: the iteration it stopped at and its last finite figures (or NaN)."""
    nan = float("nan")
    history = rd.read_jsonl(job.run_dir / rd.METRICS)
    try:
        marker = read_text_bounded(job.run_dir / rd.DIVERGED, MAX_JSON_BYTES, "marker", error=ConfigError)
        at = json.loads(marker)["iteration"]
        if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at <= rd.MAX_COUNT:
            raise ValueError(at)
    except (ConfigError, ValueError, KeyError, TypeError, RecursionError):
        at = int(history[-1]["iteration"]) + 1 if history else 0
    last = history[-1] if history else {}
    params = read_run_config(job.run_dir / rd.CONFIG).get("params", 0)
    params = params if isinstance(params, int) and 0 <= params <= rd.MAX_COUNT else 0
    figures = {
        "params": params,
        "final_train_error": last.get("train_error", nan),
        "final_test_error": last.get("test_error", nan),
        "final_train_loss": last.get("train_loss", nan),
        "final_test_loss": last.get("test_loss", nan),
        "seconds": last.get("seconds", 0.0),
        "iterations": at,
    }
    figures = {k: nan if v is None else v for k, v in figures.items()}
    return replace(record_of(job, figures, history), status="diverged", diverged_at=at)


def train_job(job: Job, state: str, say: Say, data: Any = None) -> tuple[RunRecord, str]:
    """Train (or resume) one run (on ``data`` passed in memory, if given); an interrupted run without a
    usable checkpoint starts over."""
    try:
        if state == "interrupted" and list_checkpoints(job.run_dir):
            try:
                result = train(replace(job.config, out=None, resume=str(job.run_dir)), data=data)
                how = "resumed"
            except CheckpointError as err:
                say(f"  cannot resume ({err}); training {job.name} from the start")
                result, how = train(replace(job.config, overwrite=True), data=data), "trained"
        else:  # overwrite: a run directory of this sweep that holds no usable run (our own files only)
            result, how = train(replace(job.config, overwrite=True), data=data), "trained"
    except DivergedError as err:
        say(f"  {job.name} (seed {job.seed}) diverged at iteration {err.iteration}; the sweep goes on")
        return diverged_record(job), "diverged"
    return record_of(job, result.__dict__, result.history), how


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


@dataclass
class _Eta:
    """Sweep time left, from the seconds per unit of cost of the runs done so far."""

    cost: Callable[[Job], float]
    cost_done: float = 0.0
    seconds_done: float = 0.0

    def text(self, remaining: Sequence[Job]) -> str:
        if not self.cost_done:
            return "ETA after run 1"
        return f"ETA {_clock(sum(map(self.cost, remaining)) * self.seconds_done / self.cost_done)}"

    def done(self, job: Job, seconds: float) -> None:
        self.cost_done += self.cost(job)
        self.seconds_done += seconds


def run_jobs(
    jobs: Sequence[Job],
    *,
    say: Say,
    cost: Callable[[Job], float],
    devices: Sequence[str] | None = None,
    retry_diverged: bool = False,
    only: int | None = None,
    on_run: OnRun | None = None,
    data: Any = None,
) -> list[RunRecord]:
    """Train (or reuse) every job, in order; returns their records. ``only``: train just that job; ``data``:
    data passed in memory that every run trains on (in this process)."""
    todo = [j for j in jobs if only is None or j.index == only]
    states = {j.index: run_state(j) for j in todo}  # refuses mismatches before any training
    if retry_diverged:
        states = {i: "new" if s == "diverged" else s for i, s in states.items()}
    if devices and len(devices) > 1:
        _run_on_devices(
            [j for j in todo if states[j.index] not in ("finished", "diverged")], states, devices, say
        )
    eta, records = _Eta(cost), []
    for k, job in enumerate(todo, start=1):
        record, how = _obtain(
            job, states[job.index], say, f"[{k}/{len(todo)}]", eta.text(todo[k - 1 :]), data
        )
        eta.done(job, record.seconds if how != "reused" else 0.0)
        records.append(record)
        if record.status == "diverged":
            outcome = f"diverged at iteration {record.diverged_at}"
        else:
            test = record.final_test_error
            shown = f"{test:.2%}" if math.isfinite(test) else "not measured (no test images)"
            outcome = f"train err {record.final_train_error:.2%}, test err {shown}"
        say(f"[{k}/{len(todo)}] {how} {job.name} (seed {job.seed}): {outcome}, {record.seconds:.0f} s")
        if on_run is not None:
            on_run(record, how)
    return records


def _obtain(job: Job, state: str, say: Say, counter: str, eta: str, data: Any) -> tuple[RunRecord, str]:
    """The job's record: reused from disk when it is done, else trained or resumed now."""
    if state == "diverged":
        return diverged_record(job), "reused"
    record = reuse(job) if state in ("finished", "parallel") else None
    if record is not None:
        return record, "trained" if state == "parallel" else "reused"
    state = "interrupted" if state in ("finished", "parallel") else state  # unreadable summary: redo the end
    verb = "resuming" if state == "interrupted" else "training"
    say(f"{counter} {verb} {job.name} (seed {job.seed}) -> {job.run_dir} | sweep {eta}")
    try:
        return train_job(job, state, say, data)
    except KeyboardInterrupt:
        say(f"interrupted at run {counter}; rerun the same command to resume")
        raise


def _run_on_devices(todo: list[Job], states: dict[int, str], devices: Sequence[str], say: Say) -> None:
    """Train the unfinished jobs one per device at a time (a subprocess each), deepest first, so that no
    device is left with a long run at the end; their states become "parallel" (or "diverged")."""
    from reslab.experiments.scheduler import train_on_devices

    if not todo:
        return
    todo = sorted(todo, key=lambda j: -j.depth)
    configs = []
    for j in todo:
        resume = states[j.index] == "interrupted" and bool(list_checkpoints(j.run_dir))
        run = str(j.run_dir)
        configs.append(replace(j.config, out=run, resume=run if resume else None, overwrite=not resume))
    say(f"sweep: {len(todo)} runs, {len(devices)} at a time ({', '.join(devices)}), each in its own process")
    started = time.perf_counter()

    def done(k: int, _result: object) -> None:
        say(f"  finished {todo[k].name} (seed {todo[k].seed}) at {_clock(time.perf_counter() - started)}")

    train_on_devices(configs, list(devices), on_done=done)
    for j in todo:
        states[j.index] = "diverged" if (j.run_dir / rd.DIVERGED).is_file() else "parallel"
