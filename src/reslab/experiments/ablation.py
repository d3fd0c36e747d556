"""``ablate(cfg) -> AblateResult``: the ablations of He et al. 2016, "Identity Mappings", sections 3-4.

At one depth, train the residual CIFAR net once per variant and seed (a shortcut function of Fig. 2 /
Table 1, or an order of BN and ReLU of Fig. 4 / Table 2) with the same recipe, seeds and initialisation
scheme; then write the figures and tables, with the paper's error beside each variant it reports. Each run is
an ordinary run directory ``<out>/<variant>-s<seed>``; running, reuse, resume and divergence are
:mod:`reslab.experiments.sweep`'s. :class:`AblateConfig` holds the sweep's own settings and, derived from
:class:`~reslab.engine.TrainConfig`, every training setting as an optional override of the preset.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from reslab.data.passed import PassedData
from reslab.engine import TrainConfig
from reslab.errors import ConfigError
from reslab.evidence import ONE_SEED, separate
from reslab.experiments.degradation import model_name
from reslab.experiments.paper_tables import paper_error, paper_note
from reslab.experiments.planning import plan_sweep
from reslab.experiments.results import Row, RunRecord, SweepResult, aggregate, write_results
from reslab.experiments.sweep import Job, OnRun, Say, check_sweep_file, in_sweep_folder, run_jobs
from reslab.experiments.sweep_config import SweepSettings, start_sweep
from reslab.files import write_atomic
from reslab.settings import setting

SWEEP_FILE = "ablate.json"

# Each variant is build_model options on the residual CIFAR net (He et al. 2016; the figure it draws).
VARIANTS: dict[str, dict[str, Any]] = {
    "identity": {},  # Fig. 2(a) = Fig. 4(a): y = relu(x + F(x)), the original unit
    "scaling": {"shortcut_kind": "scaling"},  # Fig. 2(b): relu(0.5x + 0.5F(x))
    "exclusive_gate": {"shortcut_kind": "exclusive_gate"},  # Fig. 2(c): relu((1-g)x + gF(x)), b_g = -6
    "shortcut_gate": {"shortcut_kind": "shortcut_gate"},  # Fig. 2(d): relu((1-g)x + F(x)), b_g = -6
    "conv1x1": {"shortcut_kind": "conv1x1"},  # Fig. 2(e): relu(BN(W_s x) + F(x)) on every unit
    "dropout": {"shortcut_kind": "dropout"},  # Fig. 2(f): relu(m⊙x + F(x)), dropout 0.5
    "bn_after_add": {"placement": "bn_after_add"},  # Fig. 4(b)
    "relu_before_add": {"placement": "relu_before_add"},  # Fig. 4(c)
    "relu_preact": {"placement": "relu_preact"},  # Fig. 4(d)
    "full_preact": {"placement": "full_preact"},  # Fig. 4(e)
}

# The CPU default shows, over seeds, the identity beating constant scaling and the dropout shortcut on final
# training error within a 10-minute budget on a 2-core CPU. Depth 20 and 6 epochs: deeper nets are not
# trained in the epochs that budget allows, and their seed noise hides the scaled shortcut; at 20 layers the
# identity fits the training set while the variants stay above it on every seed. Every calibration run, with
# its command and table: benchmarks/calibration/ablate/ABLATE.md.
PRESETS: dict[str, dict[str, Any]] = {
    # mnist5k on a laptop CPU: identity vs constant scaling vs dropout shortcut, 3 seeds.
    "default": {
        "recipe": "default",
        "dataset": "mnist5k",
        "depth": 20,
        "widen": 1.0,
        "seeds": 3,
        "variants": ("identity", "scaling", "dropout"),
        "epochs": 6,
        "train": {"batch_size": 128, "label_smoothing": 0.0, "eval_every": 16},
    },
    # The protocol of Tables 1 and 2: ResNet-110 on CIFAR-10, the paper recipe, median of 5 runs. The tables
    # are on the CIFAR-10 test set, so every run trains on all 50k training images (no 45k/5k split).
    "paper": {
        "recipe": "paper",
        "dataset": "cifar10",
        "depth": 110,
        "widen": 1.0,
        "seeds": 5,
        # Table 1's rows, then Table 2's (the gates at the paper's best b_g = -6, and b_g = 0 for the
        # shortcut-only gate); the exclusive gate at b_g = 0 to -5 "fails" in the paper.
        "variants": (
            *("identity", "scaling", "scaling:scale_branch=false", "exclusive_gate", "shortcut_gate"),
            *("shortcut_gate:gate_bias=0", "conv1x1", "dropout", "bn_after_add", "relu_before_add"),
            *("relu_preact", "full_preact"),
        ),
        "epochs": None,  # the recipe's 64k iterations
        "train": {"val_split": None},
    },
}


@dataclass(kw_only=True)
class AblateGrid:
    """The ablation sweep's own settings: which variants of which net, how many seeds."""

    variants: tuple[str, ...] | None = setting(
        None,
        help=f"NAME[:KEY=VALUE...], the first is the baseline; names: {', '.join(VARIANTS)}; options are "
        "build_model's, e.g. shortcut_gate:gate_bias=0 (paper preset: the rows of Tables 1-2)",
        metavar="V,V",
    )
    depth: int | None = setting(None, help="layers of the resnet, 6n+2 (paper preset: 110)", metavar="D")
    widen: float | None = setting(None, help="channel multiplier k: stages of 16k/32k/64k", metavar="K")
    seeds: int | None = setting(
        None, help="seeds 0..N-1 per variant: mean ± std over them (paper preset: 5)", metavar="N"
    )
    preset: str = setting("default", help="default: mnist5k, minutes on a CPU; paper: Tables 1-2 on cifar10")
    out: str | None = setting(
        None, help="default: runs/ablate-resnet<d>-<dataset>-<hash of the settings>", metavar="DIR"
    )


@dataclass(kw_only=True)
class AblateConfig(SweepSettings, AblateGrid):
    """One ablation sweep: its grid, the sweep flags, then every TrainConfig setting as an override of the
    preset (None = the preset's value; see PRESETS)."""

    def resolve(self) -> AblateConfig:
        """Validate and fill every ``None`` from the preset; raises :class:`ConfigError` (one line)."""
        preset, recipe, seeds = self._preset_choices(PRESETS, self.preset)
        epochs, iterations = self.epochs, self.iterations
        if epochs is None and iterations is None:
            epochs = preset["epochs"]
        cfg = replace(
            self,
            variants=tuple(self.variants if self.variants is not None else preset["variants"]),
            depth=preset["depth"] if self.depth is None else self.depth,
            widen=preset["widen"] if self.widen is None else self.widen,
            seeds=seeds,
            **self._slots(preset),
            dataset=self.dataset or preset["dataset"],
            recipe=recipe,
            epochs=epochs,
            iterations=iterations,
        )
        unit = sorted(
            {"shortcut_kind", "placement"} & set(cfg.train_config_overrides().get("model_kwargs", {}))
        )
        if unit:
            raise ConfigError(
                f"--model-kwargs {unit[0]}=... would change every variant, the baseline too; give it per "
                "variant instead, e.g. --variants identity,scaling:shortcut_scale=0.8"
            )
        check_variants(cfg.variant_names, cfg.depth, cfg.widen)
        cfg._check_resolved(len(cfg.variant_names) * seeds)
        return replace(cfg, out=cfg.out or cfg.default_out(f"ablate-{cfg.model}"))

    @property
    def variant_names(self) -> tuple[str, ...]:
        """The variants, the baseline first (call on a resolved config: the preset's when none were given)."""
        return tuple(self.variants or ())

    @property
    def model(self) -> str:
        """The registry name of the net every variant modifies (call on a resolved config)."""
        return model_name("cifar", int(self.depth or 0), residual=True)

    def build_options(self, variant: str) -> dict[str, Any]:
        """build_model options of one variant: the preset's and --model-kwargs, widen, then the variant's."""
        name, options = variant_options(variant)
        given = self.train_config_overrides().get("model_kwargs", {})
        widen = {} if self.widen in (None, 1.0) else {"widen": self.widen}
        return {**given, **widen, **VARIANTS[name], **options}

    def train_config_overrides(self) -> dict[str, Any]:
        """The preset's training settings with every TrainConfig setting given on top."""
        return self.training(PRESETS[self.preset]["train"])

    def train_config(self, variant: str, *, seed: int, out: str) -> TrainConfig:
        """The :class:`~reslab.engine.TrainConfig` of one run of the sweep (call on a resolved config)."""
        given = {**self.train_config_overrides(), "model_kwargs": self.build_options(variant)}
        return TrainConfig.from_recipe(
            self.recipe or "default", model=self.model, seed=seed, out=out, **given
        )

    def first_run(self) -> TrainConfig:
        return self.train_config(self.variants[0] if self.variants else "identity", seed=0, out=".")

    def grid(self) -> dict[str, Any]:
        variants = list(self.variants or ())
        return {"depth": self.depth, "widen": self.widen, "variants": variants, "seeds": self.seeds}

    def effective(self) -> AblateConfig:
        # The baseline's own variant options stay in --variants, not in every run's model options.
        return replace(super().effective(), model_kwargs=self.model_kwargs)


def variant_options(variant: str) -> tuple[str, dict[str, Any]]:
    """``"shortcut_gate:gate_bias=0"`` -> ``("shortcut_gate", {"gate_bias": 0})``; unknown names refused."""
    from reslab.models.options import parse_entry
    from reslab.settings import closest

    name, options = parse_entry(variant)
    if name not in VARIANTS:
        raise ConfigError(f"unknown variant {name!r} in --variants{closest(name, list(VARIANTS))}")
    return name, options


def check_variants(variants: tuple[str, ...], depth: Any, widen: Any) -> None:
    """Every variant must build at ``depth`` (one-line ConfigError naming it); at least one, no repeats."""
    from reslab.models import build_model

    if not variants:
        raise ConfigError("--variants is empty; give e.g. --variants identity,scaling,dropout")
    if len(set(variants)) != len(variants):
        raise ConfigError(f"--variants repeats a variant: {','.join(variants)}; list each once")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"--depth must be a positive integer 6n+2 such as 20, 56 or 110, got {depth!r}")
    name = model_name("cifar", depth, residual=True)
    for v in variants:
        base, options = variant_options(v)
        kwargs = {**VARIANTS[base], **options, "widen": widen}
        try:
            build_model(name, device="meta", **kwargs)  # the registry checks depth and every option
        except ConfigError as err:
            raise ConfigError(f"variant {v!r}: {err}") from None


def run_dir_name(variant: str, seed: int) -> str:
    """``<variant>-s<seed>``, the variant's options kept readable: ``shortcut_gate_gate_bias=0-s1``."""
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", variant) + f"-s{seed}"


def ablate_runs(cfg: AblateConfig) -> list[Job]:
    """The sweep's runs in training order (call on a resolved config): seed by seed, the variants in the
    order given, so an interrupted multi-seed sweep already has a whole first picture."""
    jobs: list[Job] = []
    for seed in range(cfg.seed_count):
        for variant in cfg.variant_names:
            out = str(Path(cfg.out or ".") / run_dir_name(variant, seed))
            tcfg = cfg.train_config(variant, seed=seed, out=out)
            label = f"{cfg.model} {variant}"
            jobs.append(Job(len(jobs), variant, cfg.depth or 0, seed, cfg.model, tcfg, label=label))
    return jobs


@dataclass(frozen=True)
class Separation:
    """One variant against the baseline on final training error, over seeds."""

    variant: str
    verdict: str  # "worse" | "better" | "no clear difference" | "diverged" | "one seed"
    gap: float  # mean(variant) - mean(baseline), in error fraction (nan if diverged)


def separation(base: Row, row: Row, base_errors: list[float], errors: list[float]) -> Separation:
    """The variant against the baseline under reslab's one rule (:func:`reslab.evidence.separate`): clearly
    worse (better) when every seed of it is above (below) every seed of the baseline and the gap of the
    means exceeds 2 standard errors, sqrt(s_v²/n_v + s_b²/n_b)."""
    if row.diverged:
        return Separation(row.kind, "diverged", float("nan"))
    gap = row.train_error.mean - base.train_error.mean
    word = {"above": "worse", "below": "better", "overlap": "no clear difference", "one seed": "one seed"}
    return Separation(row.kind, word[separate(errors, base_errors)], gap)


def separations(rows: list[Row], records: list[RunRecord]) -> list[Separation]:
    """Each variant after the first (the baseline) against it."""
    errors = {
        r.kind: [x.final_train_error for x in records if x.kind == r.kind and x.status != "diverged"]
        for r in rows
    }
    base = rows[0]
    return [separation(base, r, errors[base.kind], errors[r.kind]) for r in rows[1:]]


def verdict(cfg: AblateConfig, rows: list[Row], seps: list[Separation]) -> str:
    """One line: each variant's final training error against the baseline's, and whether it separates."""
    if not rows or rows[0].train_error.n == 0:
        return "verdict: the baseline did not train (diverged); nothing to compare against"
    seeds = max(r.train_error.n + r.diverged for r in rows)
    parts = [f"{rows[0].kind} {rows[0].train_error.pct()}%"]
    for row, sep in zip(rows[1:], seps):
        if sep.verdict == "diverged":
            parts.append(f"{row.kind} {row.cell('train_error')}")
        else:
            parts.append(f"{row.kind} {row.train_error.pct()}% ({sep.verdict})")
    spread = f"mean ± std over {seeds} seeds" if seeds > 1 else f"{ONE_SEED}; use --seeds 3"
    head = f"verdict: final training error at {cfg.depth} layers ({spread}): "
    rule = "; 'worse' = every seed above every baseline seed and the gap above 2 standard errors"
    return head + "; ".join(parts) + (rule if seeds > 1 else "")


def markdown_table(cfg: AblateConfig, rows: list[Row]) -> str:
    """Mean ± std (%) over seeds, one line per variant, with the paper's figure for it where it has one, and
    where those figures come from."""
    head = (
        "| variant | params | train err (%) | test err (%) | paper: ResNet-110, CIFAR-10 test err (%) "
        "| paper source | time per run (s) |"
    )
    lines = [head, "|:---|---:|---:|---:|---:|:---|---:|"]
    for r in rows:
        paper = paper_error(cfg.build_options(r.kind))
        figure, source = paper if paper else ("–", "not in the paper")
        lines.append(
            f"| {r.kind} | {r.params:,} | {r.cell('train_error')} | {r.cell('test_error')} | {figure} "
            f"| {source} | {r.seconds.mean:.0f} |"
        )
    seeds = max((r.train_error.n + r.diverged for r in rows), default=0)
    note = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed (use --seeds N for mean ± std)"
    note += "; training error in eval mode on the whole training split."
    return "\n".join(lines) + f"\n{note}\n{paper_note()}\n"


@dataclass(kw_only=True)
class AblateResult(SweepResult):
    """What :func:`ablate` returns: rows per variant (the baseline first), each variant against it."""

    separations: list[Separation] = field(default_factory=list)

    def _repr_html_(self) -> str:
        from reslab.reports import ablate_html

        return ablate_html(self)


def ablate(
    cfg: AblateConfig | None = None,
    /,
    *,
    data: Any = None,
    test_data: Any = None,
    on_run: OnRun | None = None,
    stream: TextIO | None = None,
    **settings: Any,
) -> AblateResult:
    """Run (or finish) the ablation sweep and write its outputs to ``cfg.out``.

    ``ablate(AblateConfig(variants=("identity", "scaling")))`` or ``ablate(depth=56, seeds=2)``. ``on_run``,
    ``stream``, progress, Ctrl-C, resume and ``data=`` / ``test_data=`` behave as in
    :func:`~reslab.experiments.compare`.
    """
    started = time.perf_counter()
    resolved, passed = start_sweep(AblateConfig, cfg, settings, data, test_data, "ablate")

    def body(out: Path, say: Say) -> Any:
        return _sweep(resolved, out, say, on_run, started, passed)

    return in_sweep_folder(resolved, stream, "ablate sweep", body)


def _sweep(
    cfg: AblateConfig, out: Path, say: Say, on_run: OnRun | None, started: float, passed: PassedData | None
) -> AblateResult:
    check_sweep_file(out, {**cfg.settings(), **cfg.passed_settings(passed)}, SWEEP_FILE)
    jobs = ablate_runs(cfg)
    what = f"{cfg.model}, {len(cfg.variant_names)} variants x {cfg.seeds} seed(s)"
    # one probe per variant; data passed in memory trains in this process, and no probe reaches it
    devices, estimate = (None, "") if passed is not None else plan_sweep(cfg, jobs, key=lambda job: job.kind)
    say(f"ablate: {len(jobs)} runs ({what}) on {cfg.dataset} in {out}{estimate}")
    records = run_jobs(
        jobs, say=say, cost=lambda _job: 1.0, devices=devices, retry_diverged=cfg.retry_diverged,
        only=cfg.run_index, on_run=on_run, data=passed,
    )  # fmt: skip
    rows = aggregate(records, kinds=tuple(cfg.variant_names))
    if cfg.run_index is not None:  # one run of a distributed sweep: the full call gathers and draws
        return AblateResult(
            out=out, config=cfg, runs=records, rows=rows, seconds=time.perf_counter() - started
        )
    return _write_outputs(cfg, out, records, rows, time.perf_counter() - started)


def _write_outputs(
    cfg: AblateConfig, out: Path, records: list[RunRecord], rows: list[Row], seconds: float
) -> AblateResult:
    """results.json/.csv/.md, curves.png and errors.png; the result with the figures."""
    from reslab.plots import ablation_bars_figure, ablation_curves_figure, save_png
    from reslab.reports import write_sweep_report

    seps = separations(rows, records)
    table, line = markdown_table(cfg, rows), verdict(cfg, rows, seps)
    variants = [
        {"variant": v, "build_model": cfg.build_options(v), "paper": _paper_entry(cfg.build_options(v))}
        for v in cfg.variant_names
    ]
    files = write_results(out, records, extra={"model": cfg.model, "variants": variants})
    title = f"# Shortcut and activation ablations (He et al. 2016): {cfg.model} on {cfg.dataset}\n\n"
    files["results.md"] = out / "results.md"
    text = title + table + "\n" + line + "\n"
    write_atomic(files["results.md"], text.encode(), "results")
    what = f"{cfg.model} on {cfg.dataset}"
    figures = {
        "curves": ablation_curves_figure(records, baseline=cfg.variant_names[0], subject=what),
        "errors": ablation_bars_figure(records, order=list(cfg.variant_names), subject=what),
    }
    for name, fig in figures.items():
        files[f"{name}.png"] = save_png(fig, out / f"{name}.png")
    result = AblateResult(
        out=out, config=cfg, runs=records, rows=rows, table=table, verdict=line, separations=seps,
        files=files, figures=figures, seconds=round(seconds, 3),
    )  # fmt: skip
    files["report.html"] = write_sweep_report(result, title.removeprefix("# ").strip())
    return result


def _paper_entry(options: dict[str, Any]) -> dict[str, str] | None:
    paper = paper_error(options)
    return None if paper is None else {"test_error": paper[0], "source": paper[1]}
