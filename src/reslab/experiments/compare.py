"""``run_compare(cfg) -> CompareResult``: the degradation experiment (He et al. 2015, Fig. 1 and Fig. 6).

For each depth x kind (plain, residual) x seed, train one ordinary run directory ``<out>/<model>-s<seed>``
with the same recipe, initialisation scheme and seed for both twins; then write the figures and tables.
Re-running reuses finished runs (``summary.json`` present, same config) and resumes interrupted ones from
their last checkpoint, so a sweep killed halfway loses at most the run in progress since its last
evaluation point. ``compare.json`` holds the sweep's settings; another sweep in the same --out is refused.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from reslab.errors import CheckpointError, ConfigError
from reslab.experiments.config import CompareConfig, comparable, model_name, run_cost
from reslab.experiments.results import (
    Checks,
    Row,
    RunRecord,
    aggregate,
    checks,
    markdown_table,
    verdict,
    write_results,
)

SWEEP_FILE = "compare.json"

OnRun = Callable[[RunRecord, str], None]  # (record, "trained" | "resumed" | "reused")


@dataclass
class CompareResult:
    """What :func:`run_compare` returns; the same figures are in ``results.json`` / ``results.md``."""

    out: Path
    config: CompareConfig  # resolved: no None left where the preset has a value
    runs: list[RunRecord]
    rows: list[Row]  # mean ± std per depth and kind
    table: str  # the Markdown table of results.md
    verdict: str  # one line on the degradation effect
    checks: Checks | None  # issue 4's (a)-(c); None with fewer than two depths
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of this invocation (reused runs cost ~0)


@dataclass(frozen=True)
class _Job:
    kind: str
    depth: int
    seed: int
    model: str
    run_dir: Path


def plan(cfg: CompareConfig, out: Path) -> list[_Job]:
    """The sweep's runs in training order: seed by seed, shallow to deep, plain then residual twin.

    Seed-major, so that an interrupted multi-seed sweep already has a whole first picture; twins next to
    each other, so the ETA learns both kinds' speed early.
    """
    jobs = []
    for seed in range(cfg.seeds):
        for depth in cfg.depths or ():
            for residual in (False, True):
                model = model_name(cfg.family, depth, residual=residual)
                kind = "residual" if residual else "plain"
                jobs.append(_Job(kind, depth, seed, model, out / f"{model}-s{seed}"))
    return jobs


def _check_sweep_file(out: Path, cfg: CompareConfig) -> None:
    """Write ``compare.json``, or refuse when --out holds a sweep with other settings."""
    path = out / SWEEP_FILE
    settings = cfg.settings()
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(
                f"{path} is not a reslab sweep file; remove it or choose another --out"
            ) from None
        diff = [k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
        if diff:
            k = diff[0]
            raise ConfigError(
                f"--out {out} holds a sweep with {k}={old.get(k)!r}, not {settings.get(k)!r}; rerun with the "
                "same settings to resume it, or choose another --out"
            )
        return
    from reslab import __version__
    from reslab.train.rundir import atomic_write_json

    atomic_write_json(path, {"settings": settings, "reslab": __version__})


def _run_state(job: _Job, want: dict[str, Any]) -> str:
    """``new`` | ``interrupted`` | ``finished``; refuses a run dir trained with other settings."""
    from reslab.train.rundir import CONFIG, SUMMARY
    from reslab.train.runs import read_run_config

    if not (job.run_dir / CONFIG).is_file():
        return "new"
    try:
        saved = read_run_config(job.run_dir / CONFIG)["config"]
    except CheckpointError:
        return "new"  # a config.json torn before the first checkpoint: nothing to keep
    saved, want = comparable(saved), comparable(want)
    for key in sorted(set(saved) | set(want)):
        if saved.get(key) != want.get(key):
            raise ConfigError(
                f"{job.run_dir} was trained with {key}={saved.get(key)!r}, not {want.get(key)!r}; "
                "delete that run directory or choose another --out"
            )
    return "finished" if (job.run_dir / SUMMARY).is_file() else "interrupted"


def _record(job: _Job, summary: dict[str, Any], history: list[dict[str, Any]]) -> RunRecord:
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


def _reuse(job: _Job) -> RunRecord | None:
    """The finished run's record, or None when its summary.json is unreadable (it is then resumed)."""
    from reslab.train.rundir import METRICS, SUMMARY, read_jsonl

    try:
        summary = json.loads((job.run_dir / SUMMARY).read_text(encoding="utf-8"))
        return _record(job, summary, read_jsonl(job.run_dir / METRICS))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _train(job: _Job, tcfg: Any, state: str, say: Callable[[str], None]) -> tuple[RunRecord, str]:
    """Train (or resume) one run; an interrupted run without a usable checkpoint starts over."""
    from dataclasses import replace

    from reslab.train import train
    from reslab.train.checkpoint import list_checkpoints

    how = "trained"
    if state == "interrupted" and list_checkpoints(job.run_dir):
        try:
            result = train(replace(tcfg, out=None, resume=str(job.run_dir)))
            how = "resumed"
        except CheckpointError as err:
            say(f"  cannot resume ({err}); training {job.model} from the start")
            result = train(replace(tcfg, overwrite=True))
    else:  # overwrite: a run directory of this sweep that holds no usable run (our own files only)
        result = train(replace(tcfg, overwrite=True))
    summary = {k: getattr(result, k) for k in ("params", "seconds", "iterations")}
    summary.update({k: getattr(result, k) for k in _ERROR_KEYS})
    return _record(job, summary, result.history), how


def _run_on_devices(
    jobs: list[_Job],
    tcfgs: list[Any],
    states: list[str],
    devices: tuple[str, ...],
    say: Callable[[str], None],
) -> list[str]:
    """Train every unfinished run, one per device at a time (a subprocess each); their state -> "parallel".

    Runs are independent, so this scales a sweep with the number of devices; the deepest runs go first so
    that no device is left with a long run at the end. Finished runs are then read back like reused ones.
    """
    from dataclasses import replace

    from reslab.train.launch import train_on_devices

    todo = sorted((i for i, s in enumerate(states) if s != "finished"), key=lambda i: -jobs[i].depth)
    if not todo:
        return states
    configs = []
    for i in todo:
        resume = states[i] == "interrupted" and _has_checkpoint(jobs[i])
        run = str(jobs[i].run_dir)
        configs.append(replace(tcfgs[i], out=run, resume=run if resume else None, overwrite=not resume))
    say(f"compare: {len(todo)} runs on {len(devices)} devices ({', '.join(devices)}), one run per device")

    def done(k: int, _result: object) -> None:
        say(f"  finished {jobs[todo[k]].model} (seed {jobs[todo[k]].seed})")

    train_on_devices(configs, list(devices), on_done=done)
    return ["parallel" if i in todo else s for i, s in enumerate(states)]  # trained just now


def _has_checkpoint(job: _Job) -> bool:
    from reslab.train.checkpoint import list_checkpoints

    return bool(list_checkpoints(job.run_dir))


_ERROR_KEYS = ("final_train_error", "final_test_error", "final_train_loss", "final_test_loss")


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def run_compare(
    cfg: CompareConfig, *, on_run: OnRun | None = None, stream: TextIO | None = None
) -> CompareResult:
    """Run (or finish) the sweep ``cfg`` and write its outputs to ``cfg.out``.

    ``on_run(record, how)`` is called after each run with how it was obtained (trained, resumed, reused).
    Sweep progress (run k of n, ETA) goes to ``stream`` (stderr), unless ``cfg.progress == "off"``; the
    current run shows the engine's own bar or lines. Raises ConfigError (exit 2) before any training on
    bad settings; Ctrl-C leaves the run in progress with a checkpoint, and re-running resumes it.
    """
    from reslab.plots import compare_curves_figure, error_vs_depth_figure
    from reslab.train.rundir import check_writable

    started = time.perf_counter()
    cfg = cfg.resolve()
    stream = stream or sys.stderr

    def say(text: str) -> None:
        if cfg.progress != "off":
            stream.write(text + "\n")
            stream.flush()

    out = Path(cfg.out or ".").expanduser()
    check_writable(out)
    _check_sweep_file(out, cfg)
    jobs = plan(cfg, out)
    tcfgs = [cfg.train_config(j.model, seed=j.seed, out=str(j.run_dir)) for j in jobs]
    wants = [t.to_dict() for t in tcfgs]
    states = [_run_state(j, w) for j, w in zip(jobs, wants)]  # refuses mismatches before any training
    done = sum(s == "finished" for s in states)
    say(
        f"compare: {len(jobs)} runs ({cfg.family} depths {','.join(map(str, cfg.depths or ()))} x "
        f"plain/residual x {cfg.seeds} seed(s)) on {cfg.dataset} in {out}"
        + (f"; {done} already finished" if done else "")
    )

    if cfg.devices and len(cfg.devices) > 1:
        states = _run_on_devices(jobs, tcfgs, states, cfg.devices, say)
    records: list[RunRecord] = []
    cost_done, seconds_done = 0.0, 0.0  # for the ETA: seconds per unit of depth of finished runs
    for k, (job, tcfg, state) in enumerate(zip(jobs, tcfgs, states), start=1):
        record = _reuse(job) if state in ("finished", "parallel") else None
        how = "trained" if state == "parallel" else "reused"
        if record is None:
            state = "interrupted" if state == "finished" else state  # unreadable summary: redo the ending
            remaining = sum(run_cost(cfg.family, j.depth) for j in jobs[k - 1 :])
            eta = f"ETA {_clock(remaining * seconds_done / cost_done)}" if cost_done else "ETA after run 1"
            verb = "resuming" if state == "interrupted" else "training"
            say(f"[{k}/{len(jobs)}] {verb} {job.model} (seed {job.seed}) -> {job.run_dir} | sweep {eta}")
            try:
                record, how = _train(job, tcfg, state, say)
            except KeyboardInterrupt:
                say(f"compare: interrupted at run {k}/{len(jobs)}; rerun the same command to resume")
                raise
        cost_done += run_cost(cfg.family, job.depth)
        seconds_done += record.seconds
        records.append(record)
        err = f"train err {record.final_train_error:.2%}, test err {record.final_test_error:.2%}"
        say(f"[{k}/{len(jobs)}] {how} {job.model} (seed {job.seed}): {err}, {record.seconds:.0f} s")
        if on_run is not None:
            on_run(record, how)

    rows = aggregate(records)
    label = "dense blocks" if cfg.family == "mlp" else "layers"
    table = markdown_table(rows, layers_label=label)
    line = verdict(rows, layers_label=label)
    files = write_results(out, records)
    title = f"# Plain vs residual: {cfg.family} nets on {cfg.dataset}\n\n"
    files["results.md"] = out / "results.md"
    files["results.md"].write_text(title + table + "\n" + line + "\n", encoding="utf-8")
    what = f"{cfg.family} nets on {cfg.dataset}"
    files["curves.png"] = compare_curves_figure(records, out / "curves.png", subject=what, depth_unit=label)
    files["error_vs_depth.png"] = error_vs_depth_figure(
        records, out / "error_vs_depth.png", subject=what, depth_label=f"number of {label}"
    )
    return CompareResult(
        out=out,
        config=cfg,
        runs=records,
        rows=rows,
        table=table,
        verdict=line,
        checks=checks(rows),
        files=files,
        seconds=round(time.perf_counter() - started, 3),
    )
