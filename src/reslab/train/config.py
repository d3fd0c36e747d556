"""``TrainConfig``: every knob of a training run in one typed dataclass, and the recipes as data.

A recipe is a dict of overrides on the dataclass defaults; ``default`` is the dataclass itself (sized so that
resnet20 trains well on the embedded mnist5k in a minute or two on a 2-core CPU) and ``paper`` is the CIFAR
protocol of He et al. 2015, Sec. 4.2.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from reslab.errors import ConfigError

Schedule = Literal["step", "cosine", "onecycle"]
Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Progress = Literal["auto", "bar", "lines", "off"]

SCHEDULES = ("step", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PROGRESS = ("auto", "bar", "lines", "off")
NORMALIZE = ("channel", "pixel")
AUGMENT = ("auto", "none", "crop", "crop_flip")
WARMUP = ("linear", "constant")


@dataclass
class TrainConfig:
    """One training run. Defaults = the ``default`` recipe; see :data:`RECIPES` for ``paper``."""

    # --- what to train on
    model: str = "resnet20"  # any name of reslab.list_models()
    dataset: str = "mnist5k"  # embedded, so the defaults work offline right after install
    data_dir: str | None = None  # where cifar10/mnist/... live (or get downloaded to)
    download: bool = True  # fetch missing archives into data_dir; False = offline only
    val_split: int | None = None  # hold out this many training images as the test split (paper: 5000)
    split_seed: int = 0  # fixed, so runs with different --seed share one validation split
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. shortcut="B", zero_init_residual=True
    # --- how long: exactly one of these two is set
    epochs: int | None = 8  # resnet20 on mnist5k: ~98.2% test accuracy after 8 epochs (496 steps)
    iterations: int | None = None  # the paper counts optimizer steps (64k), not epochs
    # --- optimiser: SGD as in the paper (Sec. 3.4)
    batch_size: int = 64  # global batch (split over ranks under DDP); 64 > 128 on 4k images; paper: 128
    lr: float = 0.1  # peak lr for this batch size, not rescaled; paper: 0.1
    momentum: float = 0.9  # paper: 0.9
    nesterov: bool = True  # a little faster to converge on short schedules; the paper uses plain momentum
    weight_decay: float = 5e-4  # stronger than the paper's 1e-4: short runs on 4k images overfit sooner
    label_smoothing: float = 0.1  # -0.5 pt test error on mnist5k; evaluation always reports plain CE
    grad_clip: float | None = None  # max global grad norm; None = no clipping
    # --- learning-rate schedule (see reslab.train.schedule.lr_at)
    schedule: Schedule = "cosine"  # cosine needs no milestones and ends at 0
    milestones: tuple[float, ...] = (0.5, 0.75)  # step: fractions of the run (paper: 32k, 48k of 64k)
    gamma: float = 0.1  # step: lr multiplier at each milestone (paper: /10)
    warmup_epochs: float | None = None  # None = 1 epoch, at most 20% of the run; deep plain nets need it
    warmup_iters: int | None = None  # overrides warmup_epochs when set (paper: ~400 iterations)
    warmup: Literal["linear", "constant"] = "linear"  # paper: constant 0.01, then jump to 0.1
    warmup_lr: float = 0.0  # linear: start lr; constant: the warm-up lr
    warmup_min_depth: int = 0  # warm up only models at least this deep (paper: 110 layers)
    # --- data pipeline
    normalize: Literal["channel", "pixel"] = "channel"  # pixel = per-pixel mean only, as in the paper
    augment: Literal["auto", "none", "crop", "crop_flip"] = "auto"  # auto = dataset's (none for digits)
    # --- hardware
    seed: int = 0  # one seed for init, shuffling and augmentation
    device: Device = "auto"  # auto = cuda, then mps, then cpu
    precision: Precision = "auto"  # auto = bf16 autocast on CUDA and on CPUs with native bf16, else fp32
    channels_last: bool | None = None  # None = on for cpu/cuda (faster convs there), off for mps
    compile: bool = False  # torch.compile the model; pays off on long runs only
    activation_checkpointing: bool = False  # recompute blocks in backward: far less memory, ~1/3 slower
    num_threads: int | None = None  # torch intra-op threads; None = torch's default
    # --- data-parallel (torchrun / --nproc; see reslab.train.distributed)
    sync_bn: bool = False  # BN statistics over the global batch, not each rank's shard (small shards: on)
    dist_timeout_s: float = 600.0  # a collective waiting longer than this fails the run instead of hanging
    # --- run directory, evaluation and logging
    out: str | None = None  # None = runs/<model>-<dataset>-<timestamp>
    resume: str | None = None  # continue this run directory from its last checkpoint
    overwrite: bool = False  # replace reslab's files in an existing out directory
    eval_every: int | None = None  # iterations between evaluations + checkpoints; None = once per epoch
    progress: Progress = "auto"  # auto = a bar on a terminal, plain lines otherwise

    # 1) validation: one line per problem, naming the fix
    def validate(self) -> TrainConfig:
        """Check every field; raise :class:`ConfigError` with a one-line message. Returns ``self``."""
        _positive_int(self.batch_size, "--batch-size")
        if (self.epochs is None) == (self.iterations is None):
            raise ConfigError("give exactly one of --epochs or --iterations")
        if self.epochs is not None:
            _positive_int(self.epochs, "--epochs")
        if self.iterations is not None:
            _positive_int(self.iterations, "--iterations")
        if self.eval_every is not None:
            _positive_int(self.eval_every, "--eval-every")
        if self.num_threads is not None:
            _positive_int(self.num_threads, "--num-threads")
        if self.val_split is not None:
            _positive_int(self.val_split, "--val-split")
        if not (math.isfinite(self.dist_timeout_s) and self.dist_timeout_s > 0):
            raise ConfigError(
                f"--dist-timeout must be a positive number of seconds, got {self.dist_timeout_s}"
            )
        if self.warmup_iters is not None and self.warmup_iters < 0:
            raise ConfigError(f"--warmup-iters must be >= 0, got {self.warmup_iters}")
        for name, value in (("--lr", self.lr), ("--warmup-epochs", self.warmup_epochs)):
            if value is None and name == "--warmup-epochs":
                continue
            if not math.isfinite(value) or value < 0 or (name == "--lr" and value == 0):
                raise ConfigError(f"{name} must be a positive number, got {value}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov needs momentum > 0; set --momentum or turn nesterov off")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ConfigError(f"--grad-clip must be a positive number, got {self.grad_clip}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"gamma must be in (0, 1], got {self.gamma}")
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ConfigError(
                f"milestones must be increasing fractions in (0, 1), got {list(self.milestones)}"
            )
        for name, value, allowed in (
            ("--schedule", self.schedule, SCHEDULES),
            ("--device", self.device, DEVICES),
            ("--precision", self.precision, PRECISIONS),
            ("--progress", self.progress, PROGRESS),
            ("--normalize", self.normalize, NORMALIZE),
            ("--augment", self.augment, AUGMENT),
            ("warmup", self.warmup, WARMUP),
        ):
            if value not in allowed:
                raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        if not isinstance(self.model_kwargs, dict):
            raise ConfigError("model_kwargs must be a dict of keyword arguments for build_model")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; keys this version does not know are ignored (forward compatibility)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "milestones" in kwargs:
            kwargs["milestones"] = tuple(kwargs["milestones"])
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise ConfigError(f"bad training config: {err}") from None

    @classmethod
    def from_recipe(cls, recipe: str = "default", **overrides: Any) -> TrainConfig:
        """A recipe's config with ``overrides`` on top (``iterations=`` clears ``epochs`` and vice versa)."""
        if recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
        values: dict[str, Any] = dict(RECIPES[recipe])
        if overrides.get("iterations") is not None:
            values["epochs"] = None
        if overrides.get("epochs") is not None:
            values["iterations"] = None
        values.update(overrides)
        return cls(**values)


def _positive_int(value: Any, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{flag} must be a positive integer, got {value}")


# Recipes as data: overrides on the dataclass defaults.
RECIPES: dict[str, dict[str, Any]] = {
    # resnet20 on mnist5k: ~98% test accuracy in 8 epochs, a minute or two on a 2-core CPU. Measured test
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
