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

from reslab.data.passed import PREFIX, PassedData, is_passed
from reslab.engine.config import DEFAULT_BATCH, DEFAULT_EPOCHS, Augment, Normalize, TrainConfig
from reslab.errors import ConfigError
from reslab.settings import field_default, fields_of


@dataclass(frozen=True)
class DataSpec:
    """What the run learns from, and how it is fed."""

    dataset: str  # a registered name, or folder:PATH / synthetic:CxHxW
    data_dir: str | None
    download: bool
    val_split: int | None  # N training images held out as the test split
    split_seed: int
    image_size: int | None  # folders: shorter side scaled to N, then an NxN centre crop
    normalize: Normalize
    augment: Augment  # auto: the dataset's own default
    batch_size: int  # global batch, split over processes
    batch_auto: bool  # left at its default in a new run: the small-data rule may lower it (engine.sizing)
    resumed: bool  # a resumed run: its batch and splits are the run's own, said when it started
    seed: int  # the epoch order and the augmentation
    memory_gib: float | None  # a decoded folder larger than this streams from disk
    workers: int | None  # decoding processes when a folder streams
    announce: bool  # say so in one line when the data streams
    keep_best: bool  # hold out training images to choose the best weights by (--keep-best)
    best_split: int | None  # how many; None: BEST_FRACTION of the training split
    fingerprint: str | None = None  # resuming a run on data passed in memory: the data it trained on


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
    grad_clip: float | None  # None: no clipping (a config's 0 too)
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
    passed: PassedData | None = None  # data passed to train(data=...): the run's dataset is memory:<name>

    def sized(self, *, batch_size: int, epochs: int | None) -> RunSpecs:
        """These specs with the batch and length the data called for (:mod:`reslab.engine.sizing`), in every
        spec that holds them and in the config that config.json records."""
        cfg = dataclasses.replace(self.config, batch_size=batch_size, epochs=epochs)
        return dataclasses.replace(
            self, config=cfg, data=dataclasses.replace(self.data, batch_size=batch_size),
            net=dataclasses.replace(self.net, batch_size=batch_size),
            optim=dataclasses.replace(self.optim, epochs=epochs),
            runtime=dataclasses.replace(self.runtime, batch_size=batch_size),
        )  # fmt: skip


def resolve(cfg: TrainConfig, *, passed: PassedData | None = None) -> RunSpecs:
    """Validate ``cfg``, apply ``--resume``, the data ``passed`` in memory and ``--init-from``'s build
    keywords and image size, and split it into specs.

    Raises ConfigError (bad or contradictory settings, a resume that changes a frozen setting) and
    CheckpointError (an unreadable ``--init-from`` source), each one line.
    """
    from reslab.engine.store.resume import resume_settings

    cfg = dataclasses.replace(cfg).validate()
    notes: list[str] = []
    trained_on = None
    if cfg.resume is not None:
        cfg, saved, notes = resume_settings(cfg)
        trained_on = (saved.get("data") or {}).get("fingerprint")
    cfg, passed = with_passed(cfg, passed)
    cfg, size_notes = with_init_image_size(cfg)
    cfg = with_init_kwargs(cfg)
    return RunSpecs(
        config=cfg,
        data=dataclasses.replace(data_spec(cfg), fingerprint=trained_on),
        net=NetSpec(
            model=cfg.model,
            model_kwargs=dict(cfg.model_kwargs),
            activation_checkpointing=cfg.activation_checkpointing,
            init_from=cfg.init_from,
            resumed=cfg.resume is not None,
            freeze=cfg.freeze,
            batch_size=cfg.batch_size or DEFAULT_BATCH,
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
        notes=(*notes, *size_notes),
        passed=passed,
    )


def with_passed(cfg: TrainConfig, passed: PassedData | None) -> tuple[TrainConfig, PassedData | None]:
    """``cfg`` with data passed in memory as its dataset, ``memory:<name>`` (``dataset="memory:NAME"`` names
    it); checked both ways: a ``memory:`` dataset needs the data, and the data needs no other dataset. For a
    resumed run, call it on the run's own settings (after :func:`~.store.resume.resume_settings`)."""
    memory = is_passed(cfg.dataset)
    if cfg.resume is not None and memory != (passed is not None):
        if memory:
            raise ConfigError(
                f"--resume {cfg.resume}: the run trained on data passed in memory ({cfg.dataset}); resume it "
                "from Python with the same data: reslab.train(resume=RUN, data=(x, y), test_data=...)"
            )
        raise ConfigError(f"--resume {cfg.resume}: the run trained on {cfg.dataset}; drop data=")
    if passed is None:
        if memory:
            raise ConfigError(
                f"--dataset {cfg.dataset} names data passed in memory: pass it with reslab.train(..., "
                "data=(x, y)) (the command line cannot), or choose another --dataset"
            )
        return cfg, None
    if memory:
        return cfg, passed.renamed(cfg.dataset.strip()[len(PREFIX) :])
    if cfg.dataset != field_default(next(f for f in fields_of(TrainConfig) if f.name == "dataset")):
        raise ConfigError(
            f"data= and dataset={cfg.dataset!r} both name the training data; drop dataset= (or name the "
            "data with dataset='memory:NAME')"
        )
    return dataclasses.replace(cfg, dataset=passed.dataset), passed


def with_init_image_size(cfg: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """A new run on a folder from ``--init-from RUN`` trained with ``--image-size N``, and no ``--image-size``
    of its own, takes N (the weights were learned at NxN), and says so in one line."""
    if cfg.init_from is None or cfg.resume is not None or cfg.image_size is not None:
        return cfg, []
    if not cfg.dataset.strip().lower().startswith("folder:"):
        return cfg, []
    from pathlib import Path

    from reslab.engine.store.rundir import CONFIG
    from reslab.engine.store.runs import read_run_config

    run = Path(cfg.init_from).expanduser()
    if not (run / CONFIG).is_file():
        return cfg, []
    size = read_run_config(run / CONFIG)["config"].get("image_size")
    if not isinstance(size, int) or isinstance(size, bool):
        return cfg, []
    note = (
        f"--init-from {cfg.init_from} was trained with --image-size {size}: this run takes it too "
        "(--image-size sets another)"
    )
    return dataclasses.replace(cfg, image_size=size), [note]


def data_spec(cfg: TrainConfig) -> DataSpec:
    """The data part of ``cfg``."""
    resumed = cfg.resume is not None
    return DataSpec(
        dataset=cfg.dataset, data_dir=cfg.data_dir, download=cfg.download, val_split=cfg.val_split,
        split_seed=cfg.split_seed, image_size=cfg.image_size, normalize=cfg.normalize, augment=cfg.augment,
        batch_size=cfg.batch_size or DEFAULT_BATCH, batch_auto=not resumed and cfg.batch_size is None,
        resumed=resumed, seed=cfg.seed, memory_gib=cfg.data_memory_gib, workers=cfg.data_workers,
        announce=cfg.progress != "off", keep_best=cfg.keep_best, best_split=cfg.best_split,
    )  # fmt: skip


def optim_spec(cfg: TrainConfig) -> OptimSpec:
    """The optimisation part of ``cfg``."""
    return OptimSpec(
        lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
        head_lr=cfg.head_lr, label_smoothing=cfg.label_smoothing, epochs=cfg.epochs,
        grad_clip=cfg.grad_clip or None,  # 0: no clipping (turns a preset's clip off)
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
        dist_timeout_s=cfg.dist_timeout_s, batch_size=cfg.batch_size or DEFAULT_BATCH,
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
