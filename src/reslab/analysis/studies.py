"""The why-tools as plain functions: ``gradients``, ``responses`` and ``landscape``, each config -> result.

Each takes a typed config (or the same settings as keyword arguments), loads its subjects (run directories
or fresh models by name, with ``model_kwargs`` for the fresh ones), computes, writes ``<out>/<name>.json``
and ``<out>/<name>.png`` and returns a result with the table the CLI prints, the files and the matplotlib
figures; in Jupyter a result displays its table and figure inline.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from reslab.analysis.defaults import (
    DEFAULT_GRADIENTS,
    GRID,
    PAIR_GRID,
    PAIR_SEEDS,
    PAIR_TEXT,
    default_pair,
)
from reslab.analysis.gradient_flow import (
    EXPLODING_ABOVE,
    VANISHING_BELOW,
    GradientProfile,
    gradient_profile,
    gradient_verdict,
    ratio_table,
)
from reslab.analysis.layer_responses import (
    ResponseProfile,
    response_profile,
    response_table,
    response_verdict,
)
from reslab.analysis.loss_surface import Landscape, grid_coords, loss_landscape, progress_bar
from reslab.analysis.outputs import out_dir, write_json
from reslab.analysis.subjects import Subject, fixed_batch, load_subjects, open_dataset, split_entries
from reslab.errors import ConfigError
from reslab.settings import api_config, check_range, setting

_C = TypeVar("_C", bound="_StudyConfig")


@dataclass(kw_only=True)
class _StudyConfig:
    """What every study shares: where the data comes from and how fresh models are built."""

    dataset: str | None = setting(None, help="default: the first run's dataset, else mnist5k")
    data_dir: str | None = setting(None, help="where file-based datasets live", metavar="DIR")
    image_size: int | None = setting(
        None,
        help="folder:PATH: scale the shorter side to N and center-crop NxN; default the first run's own",
        metavar="N",
    )
    download: bool = setting(True, help="fetch a missing dataset archive into --data-dir")
    model_kwargs: dict[str, Any] = setting(
        factory=dict, help="build_model keyword arguments for models given by name", metavar="KEY=VALUE"
    )
    batch_size: int = setting(256, help="images per forward pass", metavar="B")
    seed: int = setting(0, help="fresh models' initialisation and the fixed image subset")

    def _check_sizes(self, least: dict[str, int] | None = None, **sizes: int) -> None:
        """Each size at least 1 (or its ``least``): one line naming the flag otherwise."""
        for name, value in {"batch_size": self.batch_size, **sizes}.items():
            low = (least or {}).get(name, 1)
            if value < low:
                what = "a positive integer" if low == 1 else f"an integer >= {low}"
                raise ConfigError(f"--{name.replace('_', '-')} must be {what}, got {value}")


@dataclass(kw_only=True)
class GradientsConfig(_StudyConfig):
    """``reslab gradients``: gradient norm per layer at the start and after ``steps`` SGD steps."""

    entries: tuple[str, ...] = setting(
        (),
        help="model names (fresh; NAME:KEY=VALUE adds options) or run directories, e.g. plain20 resnet20; "
        f"none: {', '.join(DEFAULT_GRADIENTS)} at initialisation",
        flag="entries",
        metavar="MODEL",
    )
    models: tuple[str, ...] | None = setting(
        None, help="deprecated: pass the models as positional arguments instead", metavar="NAME,NAME"
    )
    steps: int = setting(20, help="SGD steps after the first snapshot", metavar="K")
    seeds: int = setting(
        1, help="initialisations per fresh model (seed .. seed+N-1); the verdict needs 2 or more", metavar="N"
    )
    batch_size: int = setting(64, help="probe and step batch", metavar="B")
    lr: float = setting(0.01, help="SGD learning rate (momentum 0.9)", metavar="LR")
    warmup_steps: int = setting(
        0, help="the lr rises linearly to --lr over this many of the K steps, as in training", metavar="W"
    )
    grad_clip: float | None = setting(
        None, help="clip the gradient's global norm to this in the K steps, as --grad-clip in training "
        "(0: no clipping)",
        metavar="NORM",
    )  # fmt: skip
    out: str = setting("analysis/gradients", help="output directory", metavar="DIR")


@dataclass(kw_only=True)
class ResponsesConfig(_StudyConfig):
    """``reslab responses``: std of each block's branch output (He et al. 2015, Fig. 7)."""

    entries: tuple[str, ...] = setting(
        (),
        help=f"run directories (trained) or model names (fresh); none: {PAIR_TEXT}, seeds 0 and 1",
        flag="entries",
        metavar="RUN",
    )
    samples: int = setting(512, help="training images used", metavar="N")
    out: str = setting("analysis/responses", help="output directory", metavar="DIR")


@dataclass(kw_only=True)
class LandscapeConfig(_StudyConfig):
    """``reslab landscape``: the loss on a 2D grid around the weights (Li et al. 2018)."""

    entries: tuple[str, ...] = setting(
        (),
        help=f"run directories (or model names: fresh weights); none: {PAIR_TEXT}, seed 0",
        flag="entries",
        metavar="RUN",
    )
    grid: int | None = setting(
        None, help=f"G x G points, odd; default {GRID}, or {PAIR_GRID} for the default pair", metavar="G"
    )
    span: float = setting(1.0, help="coordinates run over [-span, span]")
    samples: int = setting(256, help="fixed training images per point", metavar="N")
    out: str = setting("analysis/landscape", help="output directory", metavar="DIR")


@dataclass
class StudyResult:
    """What a study returns: the printed table and verdict, the files written and the figure."""

    out: Path
    table: str
    verdict: str
    files: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)  # name -> matplotlib Figure

    def __str__(self) -> str:
        wrote = " and ".join(str(p) for p in self.files.values())
        return "\n".join(line for line in (self.table, self.verdict, f"wrote {wrote}") if line)

    def _repr_html_(self) -> str:
        from reslab.reports import study_html

        return study_html(self)


@dataclass
class GradientsResult(StudyResult):
    profiles: list[GradientProfile] = field(default_factory=list)


@dataclass
class ResponsesResult(StudyResult):
    profiles: list[ResponseProfile] = field(default_factory=list)


@dataclass
class LandscapeResult(StudyResult):
    maps: list[Landscape] = field(default_factory=list)


def _config(cls: type[_C], cfg: _C | None, settings: dict[str, Any]) -> _C:
    """``cfg`` with ``settings`` on top, or a new ``cls(**settings)``, types checked at the edge (one-line
    ConfigError); names may be given comma-separated, as one string."""
    lists = ("models", "entries")
    settings = {k: (v,) if k in lists and isinstance(v, str) else v for k, v in settings.items()}
    if isinstance(cfg, cls):
        one: dict[str, Any] = {n: (getattr(cfg, n),) for n in lists if isinstance(getattr(cfg, n, None), str)}
        cfg = replace(cfg, **one)
    checked: _C = api_config(cls, cfg, settings, f"{cls.__name__.removesuffix('Config').lower()}()")
    split: dict[str, Any] = {}
    for name in lists:
        value = getattr(checked, name, None)
        if value is not None:
            split[name] = tuple(split_entries([value] if isinstance(value, str) else list(value)))
    return replace(checked, **split)


def _say(text: str) -> None:
    sys.stderr.write(f"reslab: {text}\n")


def _subjects(cfg: _StudyConfig, entries: list[str], out: str, data: Any) -> tuple[Any, list[Subject], Path]:
    from reslab.data.passed import passed_data

    if data is not None and cfg.dataset is not None:
        raise ConfigError("data= and dataset= both say what to study on; pass one of them")
    if cfg.image_size is not None and cfg.image_size <= 0:
        raise ConfigError(f"--image-size must be a positive integer, got {cfg.image_size}")
    ds = open_dataset(
        cfg.dataset, entries, cfg.data_dir, download=cfg.download, image_size=cfg.image_size,
        passed=passed_data(data),
    )  # fmt: skip
    subjects = load_subjects(entries, ds, seed=cfg.seed, model_kwargs=cfg.model_kwargs)
    for s in subjects:
        _check_memory(s, ds, cfg.batch_size)
    return ds, subjects, out_dir(out)


def _check_memory(s: Subject, ds: Any, batch_size: int) -> None:
    """Refuse a batch whose forward and backward would not fit in host memory, before any work (an upper
    bound for the forward-only studies); MLPs run in float64 here, twice the bytes."""
    from reslab.engine.devices.memory import estimate_training_memory
    from reslab.models import build_model
    from reslab.resources import check_host_memory

    def twin() -> Any:
        return build_model(
            s.model_name, num_classes=ds.num_classes, input_shape=ds.image_shape, **s.model_kwargs
        )

    est = estimate_training_memory(twin, ds.image_shape, batch_size)
    if est is not None:
        scale = 2 if s.family == "mlp" else 1
        fix = "use a smaller --batch-size (or --samples)"
        check_host_memory(scale * est.total, what=f"{s.label} at batch {batch_size}", fix=fix)


def _write(out: Path, name: str, data: dict[str, Any], figure: Any) -> tuple[dict[str, Path], dict[str, Any]]:
    from reslab.plots import save_png

    files = {
        f"{name}.json": write_json(out / f"{name}.json", data),
        f"{name}.png": save_png(figure, out / f"{name}.png"),
    }
    return files, {name: figure}


def gradients(cfg: GradientsConfig | None = None, /, *, data: Any = None, **settings: Any) -> GradientsResult:
    """Gradient norm per weight layer and per block output, at the start and after ``steps`` SGD steps.

    ``gradients(entries=["plainmlp64", "resmlp64"])``, ``gradients(GradientsConfig(...))``, or
    ``gradients()``: plain56 and resnet56 at initialisation. ``models=`` is the deprecated name of
    ``entries=`` (it still works, with a FutureWarning). ``data=(x, y)`` (arrays, tensors or a torch
    Dataset, as ``train`` takes) studies on data in memory instead of a dataset.
    """
    from reslab.plots import gradients_figure

    cfg = _config(GradientsConfig, cfg, settings)
    if cfg.models is not None:
        if cfg.entries:
            raise ConfigError("models given twice, as entries and as --models; pass them as entries only")
        message = "gradients(models=...) is deprecated; pass entries=... (positional on the command line)"
        warnings.warn(message, FutureWarning, stacklevel=2)
        cfg = replace(cfg, entries=cfg.models, models=None)
    sizes = {"steps": cfg.steps, "seeds": cfg.seeds, "warmup_steps": cfg.warmup_steps}
    cfg._check_sizes({"steps": 0, "warmup_steps": 0}, **sizes)  # steps 0: the snapshot at the start only
    if not cfg.lr > 0:
        raise ConfigError(f"--lr must be a positive number, got {cfg.lr}")
    if cfg.grad_clip is not None:
        check_range("--grad-clip", cfg.grad_clip, 0, math.inf)  # as in training: 0 is no clipping
    ds, subjects, out = _subjects(cfg, list(cfg.entries or DEFAULT_GRADIENTS), cfg.out, data)
    subjects = _reseeded(cfg, ds, subjects)
    profiles = []
    for s in subjects:
        # The SGD steps draw from 8 batches' worth of fixed training images: enough for K ~ 20 steps.
        x, y = fixed_batch(ds, s.norm, 8 * cfg.batch_size, seed=cfg.seed)
        profiles.append(
            gradient_profile(
                s.model, x, y, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                warmup_steps=cfg.warmup_steps, grad_clip=cfg.grad_clip or None,
                label=s.label, model_name=s.model_name, residual=s.residual, trained=s.trained,
            )
        )  # fmt: skip
    sentence = gradient_verdict(profiles)
    data = {
        "dataset": ds.name,
        "steps": cfg.steps,
        "seeds": cfg.seeds,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "warmup_steps": cfg.warmup_steps,
        "grad_clip": cfg.grad_clip,
        "seed": cfg.seed,
        "thresholds": {"vanishing_below": VANISHING_BELOW, "exploding_above": EXPLODING_ABOVE},
        "verdict": sentence,
        "models": [dict(p.to_dict(), source=s.source) for p, s in zip(profiles, subjects)],
    }
    # The figure draws the first initialisation of each model; the table and the JSON have every one.
    first = [p for p, s in zip(profiles, subjects) if s.seed_offset == 0]
    files, figures = _write(out, "gradients", data, gradients_figure(first))
    return GradientsResult(out, ratio_table(profiles), sentence, files, figures, profiles)


def _reseeded(cfg: GradientsConfig, ds: Any, subjects: list[Subject]) -> list[Subject]:
    """The subjects, then the fresh ones again at seeds ``seed+1 .. seed+seeds-1`` (labelled by seed)."""
    if cfg.seeds == 1:
        return subjects
    fresh = [s.entry for s in subjects if not s.trained]
    out = list(subjects)
    for k in range(1, cfg.seeds):
        for s in load_subjects(fresh, ds, seed=cfg.seed + k, model_kwargs=cfg.model_kwargs):
            s.seed_offset = k
            out.append(s)
    for s in out:
        if not s.trained:
            s.label = f"{s.label} (seed {cfg.seed + s.seed_offset})"
    return out


def responses(cfg: ResponsesConfig | None = None, /, *, data: Any = None, **settings: Any) -> ResponsesResult:
    """Std of each block's branch output F(x) over fixed training images, and ||F(x)||/||x|| (Fig. 7);
    ``data=``: the training images of data in memory (as ``train`` takes them) instead of a dataset."""
    from reslab.plots import responses_figure

    cfg = _config(ResponsesConfig, cfg, settings)
    cfg._check_sizes(samples=cfg.samples)
    entries = list(cfg.entries) or default_pair(PAIR_SEEDS, _say)
    ds, subjects, out = _subjects(cfg, entries, cfg.out, data)
    profiles = []
    for s in subjects:
        x, _ = fixed_batch(ds, s.norm, cfg.samples, seed=cfg.seed)
        profiles.append(
            response_profile(
                s.model, x, label=s.label, model_name=s.model_name, residual=s.residual, trained=s.trained,
                batch_size=cfg.batch_size,
            )
        )  # fmt: skip
    holds, sentence = response_verdict(profiles)
    data = {
        "dataset": ds.name,
        "samples": cfg.samples,
        "holds": holds,
        "verdict": sentence,
        "models": [dict(p.to_dict(), source=s.source) for p, s in zip(profiles, subjects)],
    }
    files, figures = _write(out, "responses", data, responses_figure(profiles))
    return ResponsesResult(out, response_table(profiles), sentence, files, figures, profiles)


def landscape(cfg: LandscapeConfig | None = None, /, *, data: Any = None, **settings: Any) -> LandscapeResult:
    """The training loss at ``w0 + a*d1 + b*d2`` on a grid, filter-normalised directions (Li et al. 2018).

    Plain and residual runs must have the same depth (they are drawn side by side on one colour scale).
    ``data=``: the training images of data in memory (as ``train`` takes them) instead of a dataset.
    """
    import torch

    from reslab.plots import landscape_figure

    cfg = _config(LandscapeConfig, cfg, settings)
    grid = cfg.grid if cfg.grid is not None else (GRID if cfg.entries else PAIR_GRID)
    cfg = replace(cfg, grid=grid)
    grid_coords(grid, cfg.span)  # validate before any loading
    cfg._check_sizes(samples=cfg.samples)
    entries = list(cfg.entries) or default_pair(1, _say)
    ds, subjects, out = _subjects(cfg, entries, cfg.out, data)
    if len({s.residual for s in subjects}) == 2 and len({s.depth for s in subjects}) > 1:
        depths = ", ".join(f"{s.label}={s.depth}" for s in subjects)
        raise ConfigError(
            f"plain and residual runs must have the same depth to be compared ({depths}); "
            "pass twins such as plain20 and resnet20"
        )
    maps, lines = [], []
    for s in subjects:
        model = s.model
        if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
            # faster CPU convs; torch's stubs omit Module.to(memory_format=...)
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x, y = fixed_batch(ds, s.norm, cfg.samples, seed=cfg.seed)
        update, close = progress_bar(grid**2, s.label)
        try:
            m = loss_landscape(
                model, x, y, grid=grid, span=cfg.span, seed=cfg.seed, batch_size=cfg.batch_size,
                label=s.label, model_name=s.model_name, residual=s.residual, depth=s.depth, progress=update,
            )  # fmt: skip
        finally:
            close()
        lo, hi = min(map(min, m.losses)), max(map(max, m.losses))
        lines.append(
            f"{s.label}: loss at w0 {m.center_loss:.4g}, min {lo:.4g}, max {hi:.4g} "
            f"on {cfg.grid}x{cfg.grid} points, {m.seconds:.1f}s"
        )
        maps.append(m)
    data = {
        "dataset": ds.name,
        "grid": cfg.grid,
        "span": cfg.span,
        "samples": cfg.samples,
        "directions_seed": cfg.seed,
        "models": [m.to_dict() for m in maps],
    }
    files, figures = _write(out, "landscape", data, landscape_figure(maps))
    return LandscapeResult(out, "\n".join(lines), "", files, figures, maps)
