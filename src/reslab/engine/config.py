"""``TrainConfig``: every setting of a training run, declared once, and the recipes as data.

Each field is one :func:`~reslab.settings.setting` line: its default, its help (shown by ``reslab train
--help``), its flag and its resume rule. The command line, config files, ``reslab compare`` and resume are
derived from these lines. A recipe is a dict of overrides on the defaults; ``default`` is the dataclass
itself (sized so that resnet20 trains well on the embedded mnist5k in about half a minute on a 2-core CPU)
and ``paper`` is the CIFAR protocol of He et al. 2015, Sec. 4.2.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from reslab.errors import ConfigError
from reslab.settings import (
    check_range,
    check_value,
    closest,
    fields_of,
    from_mapping,
    read_config_file,
    setting,
)

Schedule = Literal["step", "cosine", "onecycle"]
Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Progress = Literal["auto", "bar", "lines", "off"]
Normalize = Literal["channel", "pixel"]
Augment = Literal["auto", "none", "crop", "crop_flip"]
Warmup = Literal["linear", "constant", "adaptive"]

MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer
MAX_TIMEOUT_S = 1e6  # torch's process-group timeout (a timedelta) overflows long before the settings' 1e100
DEFAULT_EPOCHS = 8  # resnet20 on mnist5k: ~98.2% test accuracy after 8 epochs (496 steps)
DEFAULT_BATCH = 64  # 64 beats 128 on mnist5k's 4,000 training images
# What a setting left unset means, where that is not one value: shown by --help as its default.
AUTO_DEFAULTS = {
    "epochs": f"{DEFAULT_EPOCHS}, more when that is under 200 steps",
    "batch_size": f"{DEFAULT_BATCH}, halved (to 8 at least) while an epoch is under 20 steps",
    "warmup_epochs": "1 epoch, at most 20% of the run",
    "best_split": "10% of the training split",
}


@dataclass
class TrainConfig:
    """One training run. Defaults = the ``default`` recipe; see :data:`RECIPES` for ``paper``."""

    # --- what to train on (frozen on resume: the network and its data)
    model: str = setting("resnet20", help="a name from `reslab models`", resume="frozen")
    dataset: str = setting(
        "mnist5k",
        help="mnist5k (embedded), cifar10, cifar100, mnist, fashion-mnist, signs, synthetic, folder:PATH; "
        "memory:NAME names arrays or a torch Dataset passed to train(data=...)",
        resume="frozen",
    )
    model_kwargs: dict[str, Any] = setting(
        factory=dict,
        help="keyword arguments of build_model, e.g. shortcut=B zero_init_residual=true",
        flag="--model-kwargs",
        metavar="KEY=VALUE",
        resume="frozen",
    )
    data_dir: str | None = setting(
        None, help="where file-based datasets live or are downloaded to", metavar="DIR", sweep=False
    )
    download: bool = setting(
        True, help="fetch missing archives into --data-dir", resume="session", sweep=False
    )
    val_split: int | None = setting(
        None, help="hold out N training images as the test split", metavar="N", resume="frozen"
    )
    split_seed: int = setting(
        0,
        help="seed of the validation split, the same for runs of any --seed",
        metavar="SEED",
        resume="frozen",
    )
    keep_best: bool = setting(
        False,
        help="also keep the weights of the lowest error on images held out of the training split (never the "
        "test split): best.safetensors",
        resume="frozen",
    )
    best_split: int | None = setting(
        None, help="--keep-best: training images held out to choose the best weights by", metavar="N",
        resume="frozen",
    )  # fmt: skip
    # --- how long: at most one of these two is set
    epochs: int | None = setting(
        None,
        help="passes over the training split (--iterations, when given, wins)",
        metavar="E",
    )
    iterations: int | None = setting(None, help="optimizer steps, instead of epochs", metavar="N")
    # --- optimiser: SGD as in the paper (Sec. 3.4)
    batch_size: int | None = setting(
        None,
        help="global batch (split over processes)",
        metavar="B",
        resume="frozen",
    )
    lr: float = setting(0.1, help="peak learning rate, used as given", metavar="LR")
    momentum: float = setting(0.9, help="SGD momentum", metavar="M")
    nesterov: bool = setting(True, help="Nesterov momentum: converges faster on short schedules")
    weight_decay: float = setting(5e-4, help="L2 penalty; 4k images overfit sooner than CIFAR", metavar="WD")
    label_smoothing: float = setting(
        0.1, help="-0.5 pt test error on mnist5k; evaluation reports plain cross-entropy", metavar="S"
    )
    grad_clip: float | None = setting(
        None, help="clip the global gradient norm to this; 0: no clipping", metavar="NORM"
    )
    # --- learning-rate schedule (see reslab.engine.optim.lr_at)
    schedule: Schedule = setting("cosine", help="cosine needs no milestones and ends near 0")
    milestones: tuple[float, ...] = setting(
        (0.5, 0.75), help="step schedule: fractions of the run (the paper's 32k, 48k of 64k)", metavar="F,F"
    )
    gamma: float = setting(0.1, help="step schedule: lr multiplier at each milestone", metavar="G")
    warmup_epochs: float | None = setting(None, help="warm-up length in epochs", metavar="W")
    warmup_iters: int | None = setting(
        None, help="warm-up in iterations (wins over --warmup-epochs)", metavar="N"
    )
    warmup: Warmup = setting(
        "linear",
        help="linear: a ramp; constant: the paper's low lr, then the jump; adaptive: the low lr until the "
        "training error falls below --warmup-until-error (the warm-up length is then its longest)",
    )
    warmup_lr: float = setting(
        0.0, help="linear: the start lr; constant and adaptive: the warm-up lr", metavar="LR"
    )
    warmup_until_error: float = setting(
        0.8,
        help="adaptive: the warm-up ends once the training error of the last 10 batches is below this",
        metavar="E",
    )
    warmup_min_depth: int = setting(0, help="warm up only models at least this deep", metavar="D")
    # --- data pipeline (frozen: the network learned this input)
    normalize: Normalize = setting(
        "channel", help="pixel = per-pixel mean only, as the paper", resume="frozen"
    )
    augment: Augment = setting(
        "auto", help="auto = the dataset's (none for digits); crop = pad-4 random shifts", resume="frozen"
    )
    seed: int = setting(
        0, help="one seed for initialisation, shuffling and augmentation", metavar="SEED", resume="frozen"
    )
    image_size: int | None = setting(
        None,
        help="folder:PATH: scale the shorter side to N, then center-crop NxN; default: stretch every image "
        "to the first one's size",
        metavar="N",
        resume="frozen",
    )
    data_memory_gib: float | None = setting(
        None,
        help="folder:PATH: a decoded dataset larger than this streams from disk; default half the free RAM",
        metavar="GIB",
        resume="session",
        sweep=False,
    )
    data_workers: int | None = setting(
        None,
        help="processes that decode images when a folder streams; default min(8, CPU cores)",
        metavar="N",
        resume="session",
        sweep=False,
    )
    # --- starting weights and fine-tuning (frozen on resume: the checkpoint holds the weights since)
    init_from: str | None = setting(
        None,
        help="start from these weights: a run directory, .safetensors, or .pt/.pth state dict "
        "(torchvision, timm, akamaster); a head of another class count is re-initialised",
        metavar="SOURCE",
        resume="frozen",
    )
    freeze: str | None = setting(
        None,
        help="freeze the stem and the stages up to this one (stem, layer1, ...); their BN stays in eval mode",
        metavar="STAGE",
        resume="frozen",
    )
    head_lr: float | None = setting(
        None, help="learning rate of the classifier fc, on the same schedule; default --lr", metavar="LR",
        resume="frozen",
    )  # fmt: skip
    # --- hardware
    device: Device = setting("auto", help="auto = cuda, then mps, then cpu", sweep=False)
    precision: Precision = setting("auto", help="auto = bf16 autocast on CUDA and CPUs with native bf16")
    channels_last: bool | None = setting(None, help="NHWC memory format; default on for cpu and cuda")
    compile: bool = setting(False, help="torch.compile the model; pays off on long runs only")
    cuda_graphs: bool = setting(
        True,
        help="CUDA, one process, bf16/fp32: capture the whole training step as one CUDA graph and replay it "
        "(with --compile: torch.compile's reduce-overhead graphs instead); elsewhere the step runs eagerly",
        resume="session",
        sweep=False,
    )
    activation_checkpointing: bool = setting(
        False, help="recompute blocks in the backward pass: far less memory, ~1/3 slower"
    )
    num_threads: int | None = setting(
        None, help="torch CPU threads; default torch's", metavar="N", resume="session", sweep=False
    )
    # --- data-parallel (torchrun / --nproc; see reslab.engine.devices.distributed)
    sync_bn: bool = setting(False, help="BatchNorm statistics over the global batch (small shards: on)")
    dist_timeout_s: float = setting(
        600.0,
        help="a collective waiting longer fails the run",
        flag="--dist-timeout",
        metavar="S",
        resume="session",
        sweep=False,
    )
    # --- run directory, evaluation and display
    out: str | None = setting(
        None,
        help="run directory; default runs/<model>-<dataset>-<time>",
        metavar="DIR",
        resume="session",
        sweep=False,
    )
    resume: str | None = setting(
        None,
        help="continue this run directory from its last checkpoint",
        metavar="RUN",
        resume="session",
        sweep=False,
    )
    overwrite: bool = setting(
        False, help="replace reslab's files in an existing --out", resume="session", sweep=False
    )
    eval_every: int | None = setting(
        None, help="iterations between evaluations; default 1 epoch", metavar="N"
    )
    progress: Progress = setting(
        "auto", help="auto = a bar on a terminal or notebook, lines otherwise", resume="session", sweep=False
    )
    logger: tuple[str, ...] = setting(
        (),
        help="also log each evaluation to tensorboard (tb/), csv (metrics.csv) or wandb (offline unless "
        "WANDB_MODE is set); several with commas",
        metavar="NAME,NAME",
        sweep=False,
    )

    # 1) validation: one line per problem, naming the fix
    def validate(self) -> TrainConfig:
        """Check every field's type and range; raise :class:`ConfigError` (one line). Returns ``self``."""
        for f in fields_of(TrainConfig):
            setattr(self, f.name, check_value(TrainConfig, f.name, getattr(self, f.name)))
        if self.epochs is not None and self.iterations is not None:
            raise ConfigError("give at most one of --epochs or --iterations")
        for name in (
            "batch_size", "epochs", "iterations", "eval_every", "num_threads", "val_split", "image_size",
            "best_split",
        ):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if not 0 <= self.seed <= MAX_SEED or not 0 <= self.split_seed <= MAX_SEED:
            raise ConfigError(f"--seed must be in [0, 2**63 - 1], got {self.seed}")
        if self.warmup_iters is not None and self.warmup_iters < 0:
            raise ConfigError(f"--warmup-iters must be >= 0, got {self.warmup_iters}")
        if self.warmup_min_depth < 0:
            raise ConfigError(f"--warmup-min-depth must be >= 0, got {self.warmup_min_depth}")
        check_range("--lr", self.lr, 0, math.inf, low_open=True)
        check_range("--warmup-lr", self.warmup_lr, 0, math.inf)
        check_range("--warmup-until-error", self.warmup_until_error, 0, 1, low_open=True)
        check_range("--dist-timeout", self.dist_timeout_s, 0, MAX_TIMEOUT_S, low_open=True)
        check_range("--weight-decay", self.weight_decay, 0, math.inf)
        check_range("--momentum", self.momentum, 0, 1, high_open=True)
        check_range("--label-smoothing", self.label_smoothing, 0, 1, high_open=True)
        check_range("--gamma", self.gamma, 0, 1, low_open=True)
        if self.warmup_epochs is not None:
            check_range("--warmup-epochs", self.warmup_epochs, 0, math.inf)
        if self.grad_clip is not None:
            check_range("--grad-clip", self.grad_clip, 0, math.inf)
        if self.head_lr is not None:
            check_range("--head-lr", self.head_lr, 0, math.inf)
        if self.data_memory_gib is not None:
            check_range("--data-memory-gib", self.data_memory_gib, 0, math.inf, low_open=True)
        if self.data_workers is not None and self.data_workers < 0:
            raise ConfigError(f"--data-workers must be >= 0, got {self.data_workers}")
        from reslab.engine.loggers import check_loggers

        self.logger = check_loggers(self.logger)
        if self.best_split is not None and not self.keep_best:
            raise ConfigError("--best-split is the hold-out of --keep-best; add --keep-best or drop it")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov needs momentum > 0; set --momentum or --no-nesterov")
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ConfigError(
                f"--milestones must be increasing fractions in (0, 1), got {list(self.milestones)}"
            )
        return self

    # 2) conversions: dicts (config.json, config files) and changes
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "config", strict: bool = False) -> TrainConfig:
        """Inverse of :meth:`to_dict`, every value type-checked (one-line ConfigError naming ``where``).

        ``strict=False`` ignores keys this version does not know (a run written by a newer reslab).
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: the settings must be a mapping of names to values")
        return cls(**from_mapping(cls, data, where=where, strict=strict))

    def with_changes(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; giving ``iterations`` clears ``epochs`` and vice versa. An unknown name is
        a one-line ConfigError naming the closest setting."""
        names = [f.name for f in dataclasses.fields(TrainConfig)]
        for name in changes:
            if name not in names:
                raise ConfigError(f"unknown setting {name!r}{closest(name, names)}")
        if changes.get("iterations") is not None and "epochs" not in changes:
            changes["epochs"] = None
        if changes.get("epochs") is not None and "iterations" not in changes:
            changes["iterations"] = None
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_recipe(cls, recipe: str = "default", **overrides: Any) -> TrainConfig:
        """A recipe's config with ``overrides`` on top."""
        if recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
        return cls(**RECIPES[recipe]).with_changes(**overrides)

    @classmethod
    def from_file(cls, path: str | Path, *, recipe: str | None = None, **overrides: Any) -> TrainConfig:
        """Settings from a JSON / YAML / TOML file (or a run's config.json), on top of ``recipe``.

        The file's own ``recipe`` key picks the recipe when none is passed; ``overrides`` win over the file.
        """
        data = read_config_file(path)
        recipe = recipe or data.pop("recipe", None) or "default"
        data.pop("recipe", None)
        given = from_mapping(cls, data, where=str(path))
        return cls.from_recipe(recipe, **given).with_changes(**overrides)


# Recipes as data: overrides on the dataclass defaults.
RECIPES: dict[str, dict[str, Any]] = {
    # resnet20 on mnist5k: ~98% test accuracy in 8 epochs, about half a minute on a 2-core CPU. Measured test
    # accuracy (seed 0, no augmentation, wd 5e-4 unless said): batch 128: 97.5%; batch 128 + smoothing 0.1 +
    # wd 1e-3: 97.9%; batch 64 + smoothing 0.1: 98.2%.
    "default": {},
    # He et al. 2015, Sec. 4.2 (CIFAR-10): SGD 0.1, momentum 0.9, wd 1e-4, batch 128, lr/10 at 32k and 48k,
    # stop at 64k; 45k/5k train/val split; per-pixel mean subtraction; pad-4 crop + flip; for 110 layers
    # "0.01 to warm up the training until the training error is below 80% (about 400 iterations)".
    "paper": {
        "epochs": None,
        "iterations": 64_000,
        "batch_size": 128,
        "label_smoothing": 0.0,
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 1e-4,
        "schedule": "step",
        "milestones": (0.5, 0.75),
        "gamma": 0.1,
        "warmup": "constant",
        "warmup_iters": 400,
        "warmup_lr": 0.01,
        "warmup_min_depth": 110,
        "val_split": 5000,
        "normalize": "pixel",
        "augment": "crop_flip",
        "eval_every": 1000,
    },
}
