"""Resume semantics, in one place for Python and the command line.

``train(TrainConfig(resume=RUN, ...))`` and ``reslab train --resume RUN ...`` both come here. The run's saved
settings are the base; every setting given with a value other than its default is a change:

- ``frozen`` settings (model, dataset, batch, seed, data split and pipeline) fix what the network learns
  from: a different value is refused;
- ``inherit`` settings (schedule length, lr and optimiser, precision, device, ...) may change; each change
  is announced, and a new length recomputes the lr schedule over the new total from where the run is;
- ``session`` settings (progress, threads, out, overwrite) are this call's own and never taken from the run.

A setting left at its default is taken from the run (so ``TrainConfig(resume=RUN)`` continues the run as it
was, whatever the run's model); to set one back to its default value, start a new run instead.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from reslab.engine.config import TrainConfig
from reslab.engine.store import rundir
from reslab.engine.store.runs import read_run_config
from reslab.errors import CheckpointError, ConfigError
from reslab.settings import field_default, fields_of, flag_of


def given_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The non-session settings of ``cfg`` that differ from their defaults: what a resume changes."""
    out = {}
    for f in fields_of(TrainConfig):
        if f.metadata["resume"] != "session" and getattr(cfg, f.name) != field_default(f):
            out[f.name] = getattr(cfg, f.name)
    return out


def resume_settings(cfg: TrainConfig) -> tuple[TrainConfig, dict[str, Any], list[str]]:
    """For ``cfg.resume = RUN``: (the settings to continue with, the run's config.json, the changes made).

    Raises ConfigError: no run there, a frozen setting changed, or ``out``/``overwrite`` that contradict it.
    """
    assert cfg.resume is not None
    run = Path(cfg.resume).expanduser()
    if cfg.overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces one; drop one of them")
    if cfg.out and Path(cfg.out).expanduser().resolve() != run.resolve():
        raise ConfigError(
            f"--out {cfg.out} differs from --resume {cfg.resume}; drop --out to resume in place"
        )
    if not (run / rundir.CONFIG).is_file():
        raise ConfigError(f"--resume {run}: no {rundir.CONFIG} there; is it a reslab run directory?")
    try:
        saved = read_run_config(run / rundir.CONFIG)
    except CheckpointError as err:
        raise ConfigError(f"--resume {run}: {err}") from None
    old = TrainConfig.from_dict(saved["config"], where=str(run / rundir.CONFIG))
    changes = given_settings(cfg)
    notes = []
    for f in fields_of(TrainConfig):
        if f.name not in changes or changes[f.name] == getattr(old, f.name):
            continue
        if f.metadata["resume"] == "frozen":
            raise ConfigError(
                f"--resume {run}: the run used {f.name}={getattr(old, f.name)!r}, not {changes[f.name]!r}; "
                f"resume with the same {flag_of(f)} or start a new run"
            )
        notes.append(f"{f.name} {getattr(old, f.name)!r} -> {changes[f.name]!r}")
    session = {
        f.name: getattr(cfg, f.name) for f in fields_of(TrainConfig) if f.metadata["resume"] == "session"
    }
    merged = old.with_changes(**changes)
    merged = dataclasses.replace(merged, **session)
    merged = dataclasses.replace(merged, resume=str(run), out=None, overwrite=False)
    return merged.validate(), saved, notes
