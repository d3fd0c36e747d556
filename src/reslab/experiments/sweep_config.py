"""What the configs of every sweep share (``compare``'s depths, ``ablate``'s variants).

A sweep config holds its own grid (declared by the subclass) and, added by
:func:`reslab.settings.overrides_class`, every :class:`~reslab.engine.TrainConfig` setting as an optional
override of a preset. This base declares the sweep settings both sweeps take, checks a preset's choice of
recipe, seeds and length, and derives from a resolved config: the TrainConfig of each run, the settings that
fix the results (kept in the sweep's JSON file, hashed into the default ``--out``), and the effective
settings that ``--print-config`` shows.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reslab.engine import RECIPES, TrainConfig
from reslab.errors import ConfigError
from reslab.experiments.sweep import comparable
from reslab.settings import fields_of, setting

# Set per run by the sweep itself, so not overridable.
PER_RUN = ("model", "seed", "out", "resume", "overwrite")


@dataclass(kw_only=True)
class SweepFlags:
    """The settings of every sweep besides its grid, placed after it (``overrides_class(..., then=)``)."""

    recipe: str | None = setting(None, help="training recipe under the preset's settings (default, paper)")
    devices: tuple[str, ...] | None = setting(
        None,
        help="train one run per device at a time, e.g. cuda:0,cuda:1 (each in its own process)",
        metavar="DEV,DEV",
    )
    retry_diverged: bool = setting(
        False, help="train again the runs that diverged (off: keep them as results)"
    )
    run_index: int | None = setting(
        None,
        help="train only run I of the sweep (see --list-runs); a later full call gathers them",
        metavar="I",
    )


class SweepSettings:
    """What every sweep config does (a mixin of its dataclass, which declares ``preset``, ``seeds``,
    ``out`` and its grid; :class:`SweepFlags` and the training settings are added after those)."""

    recipe: str | None
    devices: tuple[str, ...] | None
    run_index: int | None

    def _preset_choices(self, presets: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], str, int]:
        """The chosen preset, recipe and number of seeds, after the checks every sweep makes."""
        preset_name: str = self.preset  # type: ignore[attr-defined]
        if preset_name not in presets:
            raise ConfigError(f"unknown --preset {preset_name!r}; choose one of {', '.join(presets)}")
        preset = presets[preset_name]
        recipe = self.recipe or preset["recipe"]
        if recipe not in RECIPES:
            raise ConfigError(f"unknown --recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
        seeds = self.seeds if self.seeds is not None else preset.get("seeds", 1)  # type: ignore[attr-defined]
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ConfigError(f"--seeds must be a positive integer, got {seeds}")
        if self.epochs is not None and self.iterations is not None:  # type: ignore[attr-defined]
            raise ConfigError("give at most one of --epochs or --iterations")
        if self.devices is not None and (not self.devices or not all(self.devices)):
            raise ConfigError("--devices is empty; give e.g. --devices cuda:0,cuda:1")
        return preset, recipe, seeds

    def _finish(self, prefix: str, runs: int) -> Any:
        """A resolved config: the first run's TrainConfig validated, the default ``--out``
        (``runs/<prefix>-<dataset>-<hash of the settings>``) filled in, ``--run-index`` checked."""
        self.first_run().validate()
        cfg = self
        if cfg.out is None:  # type: ignore[attr-defined]
            safe = str(cfg.dataset).replace(":", "_").replace("/", "_")  # type: ignore[attr-defined]
            cfg = replace(cfg, out=str(Path("runs") / f"{prefix}-{safe}-{cfg.settings_hash()}"))  # type: ignore[call-arg]
        if cfg.run_index is not None and not 0 <= cfg.run_index < runs:
            raise ConfigError(
                f"--run-index {cfg.run_index} is outside this sweep's runs 0..{runs - 1}; see --list-runs"
            )
        return cfg

    def training(self, base: dict[str, Any]) -> dict[str, Any]:
        """``base`` (a preset's training settings) with every TrainConfig setting given on top; model
        options are merged key by key, the given ones winning."""
        given = copy.deepcopy(base)
        for f in fields_of(TrainConfig):
            value = getattr(self, f.name, None) if f.name not in PER_RUN else None
            if f.name == "model_kwargs" and value is not None:
                value = {**given.get("model_kwargs", {}), **value}
            if value is not None:
                given[f.name] = value
        return given

    def first_run(self) -> TrainConfig:
        """The TrainConfig of the sweep's first run (call on a resolved config)."""
        raise NotImplementedError

    def settings_run(self) -> TrainConfig:
        """The TrainConfig whose settings are kept in the sweep's JSON file (by default the first run's)."""
        return self.first_run()

    def grid(self) -> dict[str, Any]:
        """The sweep's own axes, as kept in its JSON file."""
        raise NotImplementedError

    def effective(self) -> Any:
        """This resolved config with every training setting at the value each run of the sweep gets (the
        preset's included): what ``--print-config`` shows, and a config file that gives the same sweep."""
        run = self.first_run()
        fields = {f.name: getattr(run, f.name) for f in fields_of(TrainConfig) if f.name not in PER_RUN}
        return replace(self, **fields)  # type: ignore[arg-type]

    def settings(self) -> dict[str, Any]:
        """What fixes the results (call on a resolved config): the grid and the effective training config.

        Kept in the sweep's JSON file; a re-run in the same --out must match. Built from the effective
        TrainConfig, so ``--batch-size 128`` given explicitly equals the preset's 128.
        """
        return {**self.grid(), **comparable(self.settings_run().to_dict())}

    def settings_hash(self) -> str:
        return hashlib.sha1(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:8]
