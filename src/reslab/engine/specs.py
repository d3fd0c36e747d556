"""A run's settings, resolved once and split along the engine's seams into small frozen specs.

:func:`resolve` is the one step from a :class:`~reslab.engine.config.TrainConfig` (what a user gives) to what
the engine runs: it validates the config, applies ``--resume`` (the run's own settings plus the changes
given), adds the build keywords ``--init-from``'s weights need, and hands each part of the engine only its
own spec:

- :class:`DataSpec`: the dataset and how it is batched (:mod:`reslab.engine.data`);
- :class:`NetSpec`: the network and its starting weights (:mod:`reslab.engine.net`);
- :class:`OptimSpec`: SGD, the learning-rate schedule and the run length (:mod:`reslab.engine.optim`);
- :class:`OutputSpec`: the run directory, checkpoints, evaluation points, display (:mod:`~.store`);
- :class:`RuntimeSpec`: device, precision, threads and processes (:mod:`reslab.engine.devices`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reslab.engine.config import DEFAULT_EPOCHS, TrainConfig
from reslab.errors import ConfigError


@dataclass(frozen=True)
class DataSpec:
    """What the run learns from, and how it is fed."""

    dataset: str  # a registered name, or folder:PATH / synthetic:CxHxW
    data_dir: str | None
    download: bool
    val_split: int | None  # N training images held out as the test split
    split_seed: int
    image_size: int | None  # folders: shorter side scaled to N, then an NxN centre crop
    normalize: str  # channel | pixel
    augment: str  # auto | none | crop | crop_flip
    batch_size: int  # global batch, split over processes
    seed: int  # the epoch order and the augmentation
    memory_gib: float | None  # a decoded folder larger than this streams from disk
    workers: int | None  # decoding processes when a folder streams
    announce: bool  # say so in one line when the data streams


@dataclass(frozen=True)
class NetSpec:
    """The network, and the weights it starts from."""

    model: str
    model_kwargs: Mapping[str, Any]  # build_model's keywords, --init-from's included
    activation_checkpointing: bool
    init_from: str | None  # the starting weights (not read on resume: the checkpoint holds them)
    resumed: bool
    freeze: str | None  # the stem and stages up to this one
    batch_size: int  # for the memory estimate of one process


@dataclass(frozen=True)
class OptimSpec:
    """SGD (He et al. 2015, Sec. 3.4), the learning-rate schedule, and how long the run is."""

    lr: float  # peak learning rate
    momentum: float
    nesterov: bool
    weight_decay: float
    head_lr: float | None  # the classifier's own peak lr (fine-tuning)
    label_smoothing: float
    grad_clip: float | None
    epochs: int | None
    iterations: int | None  # wins over epochs
    schedule: str  # step | cosine | onecycle
    milestones: tuple[float, ...]
    gamma: float
    warmup: str  # linear | constant | adaptive
    warmup_epochs: float | None
    warmup_iters: int | None  # wins over warmup_epochs
    warmup_lr: float
    warmup_until_error: float  # adaptive: the running training error that ends the warm-up
    warmup_min_depth: int  # nets shallower than this have no warm-up

    def run_length(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run."""
        if self.iterations is not None:
            return self.iterations
        return (self.epochs or DEFAULT_EPOCHS) * steps_per_epoch


@dataclass(frozen=True)
class OutputSpec:
    """Where the run is written and what it shows while it trains."""

    out: str | None  # the run directory; None: runs/<model>-<dataset>-<time>
    resume: str | None  # continue this run directory
    overwrite: bool
    eval_every: int | None  # steps between evaluations (and checkpoints); None: one epoch
    progress: str  # auto | bar | lines | off
    logger: tuple[str, ...]  # tensorboard, csv, wandb


@dataclass(frozen=True)
class RuntimeSpec:
    """Where and how the run executes."""

    device: str  # auto | cpu | cuda | mps
    precision: str  # auto | fp32 | bf16 | fp16
    channels_last: bool | None  # None: on for cpu and cuda
    compile: bool
    cuda_graphs: bool  # the step as one CUDA graph where it applies (reslab.engine.graphs.graph_plan)
    num_threads: int | None
    sync_bn: bool
    dist_timeout_s: float
    batch_size: int  # global batch: every process must get an equal share


@dataclass(frozen=True)
class RunSpecs:
    """One run, resolved: the config to record in config.json, each part's spec, and what resolving said."""

    config: TrainConfig  # validated, resumed and completed: what config.json records
    data: DataSpec
    net: NetSpec
    optim: OptimSpec
    output: OutputSpec
    runtime: RuntimeSpec
    notes: tuple[str, ...] = ()  # a resume's changes, to show at the start


def resolve(cfg: TrainConfig) -> RunSpecs:
    """Validate ``cfg``, apply ``--resume`` and ``--init-from``'s build keywords, and split it into specs.

    Raises ConfigError (bad or contradictory settings, a resume that changes a frozen setting) and
    CheckpointError (an unreadable ``--init-from`` source), each one line.
    """
    from reslab.engine.store.resume import resume_settings

    cfg = dataclasses.replace(cfg).validate()
    notes: list[str] = []
    if cfg.resume is not None:
        cfg, _, notes = resume_settings(cfg)
    cfg = with_init_kwargs(cfg)
    return RunSpecs(
        config=cfg,
        data=data_spec(cfg),
        net=NetSpec(
            model=cfg.model,
            model_kwargs=dict(cfg.model_kwargs),
            activation_checkpointing=cfg.activation_checkpointing,
            init_from=cfg.init_from,
            resumed=cfg.resume is not None,
            freeze=cfg.freeze,
            batch_size=cfg.batch_size,
        ),
        optim=optim_spec(cfg),
        output=OutputSpec(
            out=cfg.out,
            resume=cfg.resume,
            overwrite=cfg.overwrite,
            eval_every=cfg.eval_every,
            progress=cfg.progress,
            logger=tuple(cfg.logger),
        ),
        runtime=runtime_spec(cfg),
        notes=tuple(notes),
    )


def data_spec(cfg: TrainConfig) -> DataSpec:
    """The data part of ``cfg``."""
    return DataSpec(
        dataset=cfg.dataset, data_dir=cfg.data_dir, download=cfg.download, val_split=cfg.val_split,
        split_seed=cfg.split_seed, image_size=cfg.image_size, normalize=cfg.normalize, augment=cfg.augment,
        batch_size=cfg.batch_size, seed=cfg.seed, memory_gib=cfg.data_memory_gib, workers=cfg.data_workers,
        announce=cfg.progress != "off",
    )  # fmt: skip


def optim_spec(cfg: TrainConfig) -> OptimSpec:
    """The optimisation part of ``cfg``."""
    return OptimSpec(
        lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
        head_lr=cfg.head_lr, label_smoothing=cfg.label_smoothing, grad_clip=cfg.grad_clip, epochs=cfg.epochs,
        iterations=cfg.iterations, schedule=cfg.schedule, milestones=tuple(cfg.milestones), gamma=cfg.gamma,
        warmup=cfg.warmup, warmup_epochs=cfg.warmup_epochs, warmup_iters=cfg.warmup_iters,
        warmup_lr=cfg.warmup_lr, warmup_until_error=cfg.warmup_until_error,
        warmup_min_depth=cfg.warmup_min_depth,
    )  # fmt: skip


def runtime_spec(cfg: TrainConfig) -> RuntimeSpec:
    """The execution part of ``cfg``."""
    return RuntimeSpec(
        device=cfg.device, precision=cfg.precision, channels_last=cfg.channels_last, compile=cfg.compile,
        cuda_graphs=cfg.cuda_graphs, num_threads=cfg.num_threads, sync_bn=cfg.sync_bn,
        dist_timeout_s=cfg.dist_timeout_s, batch_size=cfg.batch_size,
    )  # fmt: skip


def with_init_kwargs(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the build keywords ``--init-from``'s weights need (akamaster's ``shortcut_pad="both",
    global_pool="window"``) merged into ``model_kwargs``, so that config.json records them and the outputs are
    identical. Nothing changes without ``init_from`` or on resume (the run's config.json already has them).

    Raises:
        ConfigError: ``--model-kwargs`` gives another value for a keyword the weights need.
        CheckpointError: the source is missing, unreadable or unsafe (one line naming it).
    """
    if cfg.init_from is None or cfg.resume is not None:
        return cfg
    from reslab.models import inspect_weights

    info = inspect_weights(cfg.init_from)
    merged = dict(cfg.model_kwargs)
    for key, value in info.model_kwargs.items():
        if key in merged and merged[key] != value:
            raise ConfigError(
                f"--init-from {cfg.init_from} was trained with {key}={value!r} but --model-kwargs gives "
                f"{key}={merged[key]!r}; drop {key} from --model-kwargs"
            )
        merged[key] = value
    return dataclasses.replace(cfg, model_kwargs=merged)
