"""What the configs of every sweep share (``compare``'s depths, ``ablate``'s variants).

A sweep config is a dataclass of three parts, in this order: its own grid (declared by the sweep), the
:class:`SweepFlags` every sweep takes, and :class:`TrainOverrides`, every
:class:`~reslab.engine.TrainConfig` setting (but the per-run ones) as an optional override of a preset.
:class:`SweepSettings` checks a preset's choice of recipe, seeds and length, and derives from a resolved
config: the TrainConfig of each run, the settings that fix the results (kept in the sweep's JSON file, hashed
into the default ``--out``), and the effective settings that ``--print-config`` shows.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from reslab.data.passed import PassedData, is_passed, passed_data
from reslab.engine import RECIPES, TrainConfig
from reslab.engine.config import Augment, Device, Normalize, Precision, Progress, Schedule, Warmup
from reslab.errors import ConfigError
from reslab.experiments.sweep import comparable
from reslab.settings import api_config, field_default, fields_of, setting

# Set per run by the sweep itself, so not overridable.
PER_RUN = ("model", "seed", "out", "resume", "overwrite")


def override(name: str) -> Any:
    """A sweep's optional override of the TrainConfig setting ``name`` (None: the preset's value), with
    TrainConfig's own help, flag and rules (the help shows TrainConfig's default)."""
    f = next(f for f in fields_of(TrainConfig) if f.name == name)
    return dataclasses.field(default=None, metadata={**f.metadata, "train_default": field_default(f)})


@dataclass(kw_only=True)
class TrainOverrides:
    """Every :class:`~reslab.engine.TrainConfig` setting but the per-run ones (``PER_RUN``), None = the
    preset's value. The same names and types as TrainConfig's, each optional; a test keeps them in step."""

    dataset: str | None = override("dataset")
    model_kwargs: dict[str, Any] | None = override("model_kwargs")
    data_dir: str | None = override("data_dir")
    download: bool | None = override("download")
    val_split: int | None = override("val_split")
    split_seed: int | None = override("split_seed")
    keep_best: bool | None = override("keep_best")
    best_split: int | None = override("best_split")
    epochs: int | None = override("epochs")
    iterations: int | None = override("iterations")
    batch_size: int | None = override("batch_size")
    lr: float | None = override("lr")
    momentum: float | None = override("momentum")
    nesterov: bool | None = override("nesterov")
    weight_decay: float | None = override("weight_decay")
    label_smoothing: float | None = override("label_smoothing")
    grad_clip: float | None = override("grad_clip")
    schedule: Schedule | None = override("schedule")
    milestones: tuple[float, ...] | None = override("milestones")
    gamma: float | None = override("gamma")
    warmup_epochs: float | None = override("warmup_epochs")
    warmup_iters: int | None = override("warmup_iters")
    warmup: Warmup | None = override("warmup")
    warmup_lr: float | None = override("warmup_lr")
    warmup_until_error: float | None = override("warmup_until_error")
    warmup_min_depth: int | None = override("warmup_min_depth")
    normalize: Normalize | None = override("normalize")
    augment: Augment | None = override("augment")
    image_size: int | None = override("image_size")
    data_memory_gib: float | None = override("data_memory_gib")
    data_workers: int | None = override("data_workers")
    init_from: str | None = override("init_from")
    freeze: str | None = override("freeze")
    head_lr: float | None = override("head_lr")
    device: Device | None = override("device")
    precision: Precision | None = override("precision")
    channels_last: bool | None = override("channels_last")
    compile: bool | None = override("compile")
    cuda_graphs: bool | None = override("cuda_graphs")
    activation_checkpointing: bool | None = override("activation_checkpointing")
    num_threads: int | None = override("num_threads")
    sync_bn: bool | None = override("sync_bn")
    dist_timeout_s: float | None = override("dist_timeout_s")
    eval_every: int | None = override("eval_every")
    progress: Progress | None = override("progress")
    logger: tuple[str, ...] | None = override("logger")


@dataclass(kw_only=True)
class SweepFlags:
    """The settings of every sweep besides its grid and the training settings."""

    recipe: str | None = setting(None, help="training recipe under the preset's settings (default, paper)")
    devices: tuple[str, ...] | None = setting(
        None,
        help="train one run per device at a time, e.g. cuda:0,cuda:1 (each in its own process; "
        "--runs-per-device N: N per device)",
        metavar="DEV,DEV",
    )
    runs_per_device: str | None = setting(
        None,
        help="runs at a time on each device, each in its own process: N, or auto (CPU: the preset's "
        "processes; CUDA: as many as fit, up to 4, measured on long sweeps); on CUDA without --devices, on "
        "every visible GPU (default: auto)",
        metavar="N|auto",
    )
    estimate: bool = setting(
        True, help="time a few steps of each model first and print the sweep's estimated time with its plan"
    )
    retry_diverged: bool = setting(
        False, help="train again the runs that diverged (off: keep them as results)"
    )
    run_index: int | None = setting(
        None,
        help="train only run I of the sweep (see --list-runs); a later full call gathers them",
        metavar="I",
    )


_S = TypeVar("_S", bound="SweepSettings")


class SweepSettings(TrainOverrides, SweepFlags):
    """What every sweep config does. A sweep declares ``class XConfig(SweepSettings, XGrid)`` with
    ``@dataclass(kw_only=True)``: the fields then come in the order grid, sweep flags, training settings
    (that of ``--help``)."""

    seeds: int | None  # the grid's: seeds 0..N-1 of every point
    out: str | None  # the grid's: the sweep folder

    @property
    def seed_count(self) -> int:
        """Seeds 0..N-1 of every point (call on a resolved config: the preset's when none was given)."""
        return self.seeds or 1

    def _preset_choices(
        self, presets: dict[str, dict[str, Any]], preset_name: str
    ) -> tuple[dict[str, Any], str, int]:
        """The chosen preset, recipe and number of seeds, after the checks every sweep makes."""
        if preset_name not in presets:
            raise ConfigError(f"unknown --preset {preset_name!r}; choose one of {', '.join(presets)}")
        preset = presets[preset_name]
        recipe = self.recipe or preset["recipe"]
        if recipe not in RECIPES:
            raise ConfigError(f"unknown --recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
        seeds = self.seeds if self.seeds is not None else preset.get("seeds", 1)
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ConfigError(f"--seeds must be a positive integer, got {seeds}")
        if self.epochs is not None and self.iterations is not None:
            raise ConfigError("give at most one of --epochs or --iterations")
        if self.devices is not None and (not self.devices or not all(self.devices)):
            raise ConfigError("--devices is empty; give e.g. --devices cuda:0,cuda:1")
        return preset, recipe, seeds

    def _slots(self, preset: dict[str, Any]) -> dict[str, Any]:
        """``devices`` as the slots the settings fix (``--devices`` x ``--runs-per-device``, the preset's CPU
        processes), with ``runs_per_device`` then spent (resolving twice gives the same sweep); CUDA's
        ``auto`` is left to the sweep's start (:func:`reslab.experiments.planning.plan_sweep`)."""
        from reslab.engine.devices.runtime import resolve_device
        from reslab.experiments.planning import runs_per_device, static_devices

        kind = resolve_device(self.device or "auto").type
        gpu_count = 0
        if kind == "cuda":
            import torch

            gpu_count = torch.cuda.device_count()
        given = runs_per_device(self.runs_per_device)
        devices = static_devices(
            self.devices, self.runs_per_device, kind=kind, gpu_count=gpu_count,
            cpu_processes=preset.get("cpu_processes"),
        )  # fmt: skip
        fixed = given is not None or bool(self.devices) or kind != "cuda"
        return {"devices": devices, "runs_per_device": None if fixed else self.runs_per_device}

    def _check_resolved(self, runs: int) -> None:
        """The first run's TrainConfig validated and ``--run-index`` checked (call on a resolved config)."""
        self.first_run().validate()
        if self.run_index is not None and not 0 <= self.run_index < runs:
            raise ConfigError(
                f"--run-index {self.run_index} is outside this sweep's runs 0..{runs - 1}; see --list-runs"
            )

    def default_out(self, prefix: str) -> str:
        """``runs/<prefix>-<dataset>-<hash of the settings>``: a new folder whenever results would differ."""
        safe = str(self.dataset).replace(":", "_").replace("/", "_")
        return str(Path("runs") / f"{prefix}-{safe}-{self.settings_hash()}")

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

    def resolve(self: _S) -> _S:
        """Validate and fill every ``None`` from the preset (each sweep's own); one-line ConfigError."""
        raise NotImplementedError

    def first_run(self) -> TrainConfig:
        """The TrainConfig of the sweep's first run (call on a resolved config)."""
        raise NotImplementedError

    def settings_run(self) -> TrainConfig:
        """The TrainConfig whose settings are kept in the sweep's JSON file (by default the first run's)."""
        return self.first_run()

    def grid(self) -> dict[str, Any]:
        """The sweep's own axes, as kept in its JSON file."""
        raise NotImplementedError

    def effective(self: _S) -> _S:
        """This resolved config with every training setting at the value each run of the sweep gets (the
        preset's included): what ``--print-config`` shows, and a config file that gives the same sweep."""
        run = self.first_run()
        fields = {f.name: getattr(run, f.name) for f in fields_of(TrainConfig) if f.name not in PER_RUN}
        return replace(self, **fields)

    def settings(self) -> dict[str, Any]:
        """What fixes the results (call on a resolved config): the grid and the effective training config.

        Kept in the sweep's JSON file; a re-run in the same --out must match. Built from the effective
        TrainConfig, so ``--batch-size 128`` given explicitly equals the preset's 128.
        """
        return {**self.grid(), **comparable(self.settings_run().to_dict())}

    def settings_hash(self) -> str:
        return hashlib.sha1(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:8]

    def on_passed(self: _S, passed: PassedData | None) -> tuple[_S, PassedData | None]:
        """This (unresolved) config on data passed in memory: its dataset ``memory:<name>``
        (``dataset="memory:NAME"`` names it). Its runs train in this process: explicit ``devices`` (other
        processes, which the data cannot reach) are refused."""
        if passed is None:
            return self, None
        if self.dataset is not None and not is_passed(self.dataset):
            raise ConfigError(
                f"data= and dataset={self.dataset!r} both name the training data; drop dataset= (or name "
                "the data with dataset='memory:NAME')"
            )
        if self.dataset is not None:
            passed = passed.renamed(self.dataset.strip()[len("memory:") :])
        if self.devices is not None and len(self.devices) > 1:
            raise ConfigError(
                "devices= trains each run in a process of its own, which data passed in memory cannot "
                "reach; drop devices="
            )
        return replace(self, dataset=passed.dataset), passed

    def in_process(self: _S, passed: PassedData | None) -> _S:
        """This resolved config with its runs in this process when they train on data passed in memory (a
        preset's parallel CPU processes could not reach it)."""
        if passed is None or not self.devices or len(self.devices) < 2:
            return self
        # SweepSettings is no dataclass itself (each sweep's config is): a type checker reads replace()'s
        # keywords off its first dataclass base, TrainOverrides, so this SweepFlags field goes by name.
        return replace(self, **{"devices": None})

    def passed_settings(self, passed: PassedData | None) -> dict[str, Any]:
        """What the sweep file records of data passed in memory (call on a resolved config): its
        fingerprint, so that a sweep folder is never reused for other data under the same name."""
        if passed is None:
            return {}
        from reslab.engine.data import memory_budget
        from reslab.engine.specs import data_spec

        budget = memory_budget(data_spec(self.first_run()))
        return {"data_fingerprint": passed.fingerprint(seed=self.first_run().split_seed, budget=budget)}


def start_sweep(
    cls: type[_S], cfg: _S | None, settings: dict[str, Any], data: Any, test_data: Any, name: str
) -> tuple[_S, PassedData | None]:
    """What a Python call of sweep ``name`` asked for: ``cfg`` with ``settings`` on top, types checked at the
    edge, resolved; with data passed in memory, its runs in this process, and that data."""
    given = api_config(cls, cfg, settings, f"{name}()")
    given, passed = given.on_passed(passed_data(data, test_data))
    return given.resolve().in_process(passed), passed
