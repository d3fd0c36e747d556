"""``compare(cfg) -> CompareResult``: the degradation experiment (He et al. 2015, Fig. 1 and Fig. 6).

For each depth x kind (plain, residual) x seed, train one ordinary run directory ``<out>/<model>-s<seed>``
with the same recipe, initialisation scheme and seed for both twins; then write the figures and tables.
:class:`CompareConfig` holds the sweep's own settings and, derived from
:class:`~reslab.engine.TrainConfig`, every training setting as an optional override of the preset.
Running, reuse, resume and divergence are :mod:`reslab.experiments.sweep`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TextIO

from reslab.data.passed import PassedData
from reslab.engine import TrainConfig
from reslab.errors import ConfigError
from reslab.experiments.planning import plan_sweep
from reslab.experiments.results import (
    Checks,
    RunRecord,
    SweepResult,
    aggregate,
    checks,
    markdown_table,
    verdict,
    write_results,
)
from reslab.experiments.sweep import Job, OnRun, Say, check_sweep_file, in_sweep_folder, run_jobs
from reslab.experiments.sweep_config import SweepSettings, start_sweep
from reslab.files import write_atomic
from reslab.settings import setting

Family = Literal["cifar", "mlp", "imagenet"]
FAMILIES: tuple[str, ...] = ("cifar", "mlp", "imagenet")
IMAGENET_DEPTHS = (18, 34, 50, 101, 152)  # He et al. 2015, Table 1
SWEEP_FILE = "compare.json"

# The default sweep finishes in under 5 minutes on a 2-core CPU and shows the degradation effect on the
# embedded mnist5k: depths 20, 38, 44 (below 20 the plain net lacks capacity; 20 -> 32 is within seed noise;
# 44 is the deepest both twins' numbers clear in 5 epochs), batch 128 (the paper's; faster than 64 on a CPU),
# no label smoothing (the plotted training error is the plain cross-entropy fit the paper shows).
DEFAULT_EPOCHS = 5

# One recipe for both twins that trains the residual nets at every depth, 20 to 1,202 layers, at the paper's
# widths: the train default (SGD lr 0.1, Nesterov, 1-epoch warm-up, cosine) with the gradient's global norm
# clipped to 1. Without the clip, a deep residual net's first steps, at losses and gradients that grow with
# depth, throw it far from where it trains (resnet110: 28.6% training error after 5 epochs, resnet1202: no
# training at all). Every candidate recipe, measured on both twins: benchmarks/calibration/WIDTHS.md.
FULL_WIDTH = {"grad_clip": 1.0}
FULL_EPOCHS = 10  # resnet1202 has not fitted the digits after 5 epochs of this recipe (WIDTHS.md)

# The lecture's dense nets run with ReZero's scalar on each residual branch (the lecture's equations diverge
# past a few dozen blocks; plain twins have no branch to scale), in fp32 on one thread (tiny matrices: a
# second thread costs more than it gives). benchmarks/calibration/NOTES.md has the measurements.
MLP = {"precision": "fp32", "num_threads": 1, "model_kwargs": {"branch_scale": "rezero"}}

# The deep preset shows all three claims of the lecture at once: narrow CIFAR nets (widen 0.25: 4/8/16
# channels) so that capacity matters, at 20, 56 and 110 layers, two seeds, 8 epochs, two runs at a time in
# two one-thread processes (benchmarks/calibration/NOTES.md).
PRESETS: dict[str, dict[str, Any]] = {
    # mnist5k on a laptop CPU: the README's main command (see the notes above).
    "default": {
        "recipe": "default",
        "dataset": "mnist5k",
        "depths": {"cifar": (20, 38, 44), "mlp": (1, 4, 16, 64, 500), "imagenet": (18, 34)},
        "epochs": {"cifar": DEFAULT_EPOCHS, "mlp": 10, "imagenet": DEFAULT_EPOCHS},
        # eval every 16 steps (~half an epoch): 10 points per curve for ~8% more time (1,000 test images)
        "train": {"batch_size": 128, "label_smoothing": 0.0, "eval_every": 16},
        "family_train": {"cifar": FULL_WIDTH, "mlp": MLP},
    },
    # The lecture's three claims at once: plain error rises with depth, residual error falls with depth,
    # 100+ layers train (see the note above).
    "deep": {
        "recipe": "default",
        "dataset": "mnist5k",
        "depths": {"cifar": (20, 56, 110), "mlp": (1, 4, 16, 64, 500), "imagenet": (18, 34)},
        "epochs": {"cifar": 8, "mlp": 10, "imagenet": 8},
        "seeds": 2,
        "cpu_processes": 2,  # on a CPU: two runs at a time, each in its own process (threads split evenly)
        "train": {"batch_size": 128, "label_smoothing": 0.0},
        "family_train": {"cifar": {"model_kwargs": {"widen": 0.25}}, "mlp": MLP},
    },
    # The lecture's three claims at the paper's widths, 20 to 1,202 layers: the full-width recipe for as long
    # as resnet1202 needs to fit the digits. A GPU job (its CPU times: benchmarks/calibration/WIDTHS.md).
    "full": {
        "recipe": "default",
        "dataset": "mnist5k",
        "depths": {
            "cifar": (20, 56, 110, 1202),
            "mlp": (1, 4, 16, 64, 500),
            "imagenet": (18, 34, 50, 101, 152),
        },
        "epochs": {"cifar": FULL_EPOCHS, "mlp": 10, "imagenet": FULL_EPOCHS},
        "train": {"batch_size": 128, "label_smoothing": 0.0, "eval_every": 16},
        "family_train": {"cifar": FULL_WIDTH, "mlp": MLP},
    },
    # He et al. 2015, Fig. 6 on CIFAR-10: the paper recipe (64k iterations, 45k/5k split, step lr).
    "paper": {
        "recipe": "paper",
        "dataset": "cifar10",
        "depths": {"cifar": (20, 32, 44, 56, 110), "mlp": (1, 2, 4, 16), "imagenet": (18, 34)},
        "epochs": {"cifar": None, "mlp": None, "imagenet": None},  # None: the recipe's 64k iterations
        "train": {},
    },
}


@dataclass(kw_only=True)
class CompareGrid:
    """The depth sweep's own settings: which nets, at which depths, how many seeds."""

    family: Family = setting(
        "cifar", help="cifar: plain<d>/resnet<d> (6n+2); mlp: plainmlp<d>/resmlp<d>; imagenet"
    )
    depths: tuple[int, ...] | None = setting(
        None,
        help="default: cifar 20,38,44; mlp 1,4,16,64,500; imagenet 18,34 (paper preset 20,32,44,56,110)",
        metavar="D,D",
    )
    seeds: int | None = setting(
        None, help="seeds 0..N-1 per depth and kind: mean ± std over them", metavar="N"
    )
    preset: Literal["default", "deep", "full", "paper"] = setting(
        "default",
        help="default: mnist5k, full width, minutes on a CPU; deep: narrow nets, all three claims; full: "
        "full width to 1,202 layers (a GPU job); paper: Fig. 6 on cifar10",
    )
    out: str | None = setting(
        None, help="default: runs/compare-<family>-<dataset>-<hash of the settings>", metavar="DIR"
    )


@dataclass(kw_only=True)
class CompareConfig(SweepSettings, CompareGrid):
    """One depth sweep: its grid, the sweep flags, then every TrainConfig setting as an override of the
    preset (None = the preset's value; see PRESETS)."""

    def resolve(self) -> CompareConfig:
        """Validate and fill every ``None`` from the preset; raises :class:`ConfigError` (one line)."""
        if self.family not in FAMILIES:
            raise ConfigError(f"unknown --family {self.family!r}; choose one of {', '.join(FAMILIES)}")
        preset, recipe, seeds = self._preset_choices(PRESETS, self.preset)
        depths = tuple(self.depths) if self.depths is not None else preset["depths"][self.family]
        check_depths(self.family, depths)
        epochs, iterations = self.epochs, self.iterations
        if epochs is None and iterations is None:
            epochs = preset["epochs"][self.family]
        cfg = replace(
            self,
            seeds=seeds,
            **self._slots(preset),
            depths=tuple(sorted(depths)),
            dataset=self.dataset or preset["dataset"],
            recipe=recipe,
            epochs=epochs,
            iterations=iterations,
        )
        cfg._check_resolved(len(depths) * 2 * seeds)
        return replace(cfg, out=cfg.out or cfg.default_out(f"compare-{cfg.family}"))

    def train_config(self, model: str, *, seed: int, out: str) -> TrainConfig:
        """The :class:`~reslab.engine.TrainConfig` of one run of the sweep (call on a resolved config): the
        recipe, the preset's settings (and its family's), then the settings given (model options merged)."""
        preset = PRESETS[self.preset]
        given = self.training({**preset["train"], **preset.get("family_train", {}).get(self.family, {})})
        return TrainConfig.from_recipe(self.recipe or "default", model=model, seed=seed, out=out, **given)

    def first_run(self) -> TrainConfig:
        depth = self.depths[0] if self.depths else 0  # resolved: the depths are set
        return self.train_config(model_name(self.family, depth, residual=True), seed=0, out=".")

    def settings_run(self) -> TrainConfig:
        return self.train_config("model", seed=0, out=".")

    def grid(self) -> dict[str, Any]:
        return {"family": self.family, "depths": list(self.depths or ()), "seeds": self.seeds}


def check_depths(family: str, depths: tuple[int, ...]) -> None:
    """Every depth must exist in the family; at least one depth, no repeats."""
    if not depths:
        raise ConfigError("--depths is empty; give e.g. --depths 20,32,44,56")
    if len(set(depths)) != len(depths):
        raise ConfigError(f"--depths repeats a depth: {','.join(map(str, depths))}; list each once")
    from reslab.models import model_info

    for d in depths:
        # The registry owns the depth rules (6n+2, 9n+2, >= 1 block, Table 1's depths): ask it.
        spec = model_info(model_name(family, d, residual=True))  # ConfigError naming the valid depths
        if spec.family != family:  # e.g. imagenet --depths 20 resolves to the CIFAR resnet20
            raise ConfigError(
                f"depth {d} is not an ImageNet ResNet; choose from {','.join(map(str, IMAGENET_DEPTHS))}"
            )


def model_name(family: str, depth: int, *, residual: bool) -> str:
    """Registry name of one twin: resnet20 / plain20, resmlp16 / plainmlp16, resnet18 / plain18."""
    if family == "mlp":
        return f"{'res' if residual else 'plain'}mlp{depth}"
    kind = "resnet" if residual else "plain"
    if family == "cifar" and depth in IMAGENET_DEPTHS:  # 50 and 152 are 6n+2 too: force the CIFAR net
        return f"cifar_{kind}{depth}"
    return f"{kind}{depth}"


def run_cost(job: Job) -> float:
    """Relative time of one run, for the ETA: conv nets ~ depth; an MLP's input layer weighs ~6 blocks."""
    return job.depth + 6.0 if job.model.endswith(f"mlp{job.depth}") else float(job.depth)


def compare_runs(cfg: CompareConfig) -> list[Job]:
    """The sweep's runs in training order (call on a resolved config): seed by seed, shallow to deep, plain
    then residual twin. Seed-major, so an interrupted multi-seed sweep already has a whole first picture."""
    jobs: list[Job] = []
    for seed in range(cfg.seed_count):
        for depth in cfg.depths or ():
            for residual in (False, True):
                model = model_name(cfg.family, depth, residual=residual)
                tcfg = cfg.train_config(model, seed=seed, out=str(Path(cfg.out or ".") / f"{model}-s{seed}"))
                kind = "residual" if residual else "plain"
                jobs.append(Job(len(jobs), kind, depth, seed, model, tcfg))
    return jobs


@dataclass(kw_only=True)
class CompareResult(SweepResult):
    """What :func:`compare` returns: rows per depth and kind, and the checks of the lecture's claims."""

    checks: Checks | None = None  # None with fewer than two depths

    def _repr_html_(self) -> str:
        from reslab.reports import compare_html

        return compare_html(self)


def compare(
    cfg: CompareConfig | None = None,
    /,
    *,
    data: Any = None,
    test_data: Any = None,
    on_run: OnRun | None = None,
    stream: TextIO | None = None,
    **settings: Any,
) -> CompareResult:
    """Run (or finish) the depth sweep and write its outputs to ``cfg.out``.

    ``compare(CompareConfig(depths=(20, 56)))`` or ``compare(depths=(20, 56), epochs=3)``. ``on_run(record,
    how)`` is called after each run with how it was obtained (trained, resumed, reused, diverged). Sweep
    progress (run k of n, ETA) goes to ``stream`` (stderr) unless ``progress="off"``; the current run shows
    the engine's own bar or lines. Raises ConfigError (exit 2) before any training on bad settings; Ctrl-C
    leaves the run in progress with a checkpoint, and calling again resumes it. ``data=(x, y)`` and
    ``test_data=`` (or a torch Dataset): every run trains on that data, as :func:`~reslab.engine.train`
    takes it, in this process.
    """
    started = time.perf_counter()
    resolved, passed = start_sweep(CompareConfig, cfg, settings, data, test_data, "compare")

    def body(out: Path, say: Say) -> Any:
        return _sweep(resolved, out, say, on_run, started, passed)

    return in_sweep_folder(resolved, stream, "compare sweep", body)


def _sweep(
    cfg: CompareConfig, out: Path, say: Say, on_run: OnRun | None, started: float, passed: PassedData | None
) -> CompareResult:
    check_sweep_file(out, {**cfg.settings(), **cfg.passed_settings(passed)}, SWEEP_FILE)
    jobs = compare_runs(cfg)
    what = (
        f"{cfg.family} depths {','.join(map(str, cfg.depths or ()))} x plain/residual x {cfg.seeds} seed(s)"
    )
    # twins: the same layers' cost; data passed in memory trains in this process, and no probe reaches it
    devices, estimate = (None, "") if passed is not None else plan_sweep(cfg, jobs, key=lambda job: job.depth)
    say(f"compare: {len(jobs)} runs ({what}) on {cfg.dataset} in {out}{estimate}")
    records = run_jobs(
        jobs, say=say, cost=run_cost, devices=devices, retry_diverged=cfg.retry_diverged,
        only=cfg.run_index, on_run=on_run, data=passed,
    )  # fmt: skip
    if cfg.run_index is not None:  # one run of a distributed sweep: the full call gathers and draws
        rows = aggregate(records)
        return CompareResult(
            out=out, config=cfg, runs=records, rows=rows, seconds=time.perf_counter() - started
        )
    return _write_outputs(cfg, out, records, time.perf_counter() - started)


def _write_outputs(cfg: CompareConfig, out: Path, records: list[RunRecord], seconds: float) -> CompareResult:
    """results.json/.csv/.md, curves.png and error_vs_depth.png; the result with the figures."""
    from reslab.plots import compare_curves_figure, error_vs_depth_figure, save_png
    from reslab.reports import write_sweep_report

    rows = aggregate(records)
    label = "dense blocks" if cfg.family == "mlp" else "layers"
    table = markdown_table(rows, layers_label=label)
    line = verdict(rows, layers_label=label)
    files = write_results(out, records)
    title = f"# Plain vs residual: {cfg.family} nets on {cfg.dataset}\n\n"
    files["results.md"] = out / "results.md"
    write_atomic(files["results.md"], (title + table + "\n" + line + "\n").encode(), "results")
    what = f"{cfg.family} nets on {cfg.dataset}"
    figures = {
        "curves": compare_curves_figure(records, subject=what, depth_unit=label),
        "error_vs_depth": error_vs_depth_figure(records, subject=what, depth_label=f"number of {label}"),
    }
    for name, fig in figures.items():
        files[f"{name}.png"] = save_png(fig, out / f"{name}.png")
    result = CompareResult(
        out=out, config=cfg, runs=records, rows=rows, table=table, verdict=line, checks=checks(rows),
        files=files, figures=figures, seconds=round(seconds, 3),
    )  # fmt: skip
    files["report.html"] = write_sweep_report(result, title.removeprefix("# ").strip())
    return result
