"""``CompareConfig``: the depth sweep's settings in one typed dataclass, its presets, and the per-run config.

A sweep trains, for each depth x kind (plain, residual) x seed, one ordinary training run whose
:class:`~reslab.train.TrainConfig` is the preset's recipe with the preset's and the user's overrides on top;
the plain and the residual twin of a depth get exactly the same config except the model name.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from reslab.errors import ConfigError

Family = Literal["cifar", "mlp", "imagenet"]
FAMILIES: tuple[str, ...] = ("cifar", "mlp", "imagenet")
IMAGENET_DEPTHS = (18, 34, 50, 101, 152)  # He et al. 2015, Table 1

# The default sweep must finish in <= 5 min on a 2-core CPU and still show the degradation effect on the
# embedded mnist5k (issue 4, (a)-(c)). Calibration (seed 0, bf16 + channels_last, batch 128, lr 0.1
# nesterov, wd 5e-4, 1 epoch linear warm-up then cosine, no label smoothing, 1 CPU thread; final training
# error in %, eval mode, all 4000 training images):
#   5 epochs   depth    20     32     38     44     56
#              plain    0.65   0.88   3.77   8.9    45.6
#              resnet   0.27   -      0.43   0.22   3.0
#   6 epochs   plain-20 1.38, plain-38 2.17, resnet-20 0.07 (coordinator's probe, 2 threads: plain 20/32/44
#              0.5 / 1.32 / 5.97, resnet 0.22 / 0.47 / 0.6)
# Why these choices:
# - depths 20, 38, 44: plain-8 trains *worse* than plain-20 here (too little capacity), so the sweep starts
#   at 20. Plain 20 -> 32 differs by 0.2-0.8 points, within seed noise, so the next depth is 38 (x5 at 5
#   epochs). ResNet-56 still lags at 5 epochs (3.0% vs 0.27% at 20 layers: more than (c)'s 2 points), and
#   6 epochs of 20/38/56 would take ~5.3 min; 44 is the deepest net that both twins' numbers clear.
#   Time ~ depth at ~1,000 img/s for depth 20: 2 x (20+38+44)/20 x ~21 s ~ 3.6 min of training + eval.
# - 5 epochs: fewer steps make deep plain nets lag more, the point of the figure; residual nets up to 44
#   layers have converged by then (0.2-0.4%).
# - batch 128 (paper) rather than the train default 64: half the steps per epoch, higher img/s on a CPU.
# - no label smoothing: the plotted training error is then the plain cross-entropy fit the paper shows.
# - the 1-epoch warm-up is the train default: without it plain-56 does not start training at all.
DEFAULT_EPOCHS = 5

# The lecture's MLPs (no normalisation, PyTorch's default Linear init), same recipe as above, 10 epochs
# (MLPs are cheap: seconds per run). Final training error in %:
#   lr 0.1    blocks   1      2      3      4      16     64
#             plain    0.38   2.8    4.45   90.0   -      -
#             residual 0.0    0.03   -      0.05   0.57   21.2
#   lr 0.02   plain-1 4.1, plain-2 9.3, plain-3 72, plain-4/16/64 90 (chance); resmlp-4 1.3, resmlp-16 0.2
# Each Linear layer shrinks the signal (~1/sqrt(6) per layer with this init), so the plain MLP's gradients
# vanish by 4 blocks (8 hidden layers) and it stays at chance; its residual twin's identity path carries
# the signal. Default depths 1, 2, 4, 16: plain training error rises until it is pinned at chance (90%),
# while the residual twin at 16 blocks (34 Linear layers) still fits the data (0.57%).
PRESETS: dict[str, dict[str, Any]] = {
    # mnist5k on a laptop CPU: the README's main command (see the calibration note above).
    "default": {
        "recipe": "default",
        "dataset": "mnist5k",
        "depths": {"cifar": (20, 38, 44), "mlp": (1, 2, 4, 16), "imagenet": (18, 34)},
        "epochs": {"cifar": DEFAULT_EPOCHS, "mlp": 10, "imagenet": DEFAULT_EPOCHS},
        # eval every 16 steps (~half an epoch): 10 points per curve for ~8% more time (1,000 test images)
        "train": {"batch_size": 128, "label_smoothing": 0.0, "eval_every": 16},
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

# TrainConfig fields that change where or how fast a run goes, or that name the run, not what it learns:
# they may differ between re-runs of a sweep (and between the runs of one sweep).
FREE_FIELDS = (
    "model",
    "seed",
    "out",
    "resume",
    "overwrite",
    "progress",
    "device",
    "num_threads",
    "data_dir",
    "download",
)


@dataclass
class CompareConfig:
    """One depth sweep. ``None`` means "the preset's value" (see :data:`PRESETS`)."""

    # --- what to compare
    family: str = "cifar"  # cifar: plain<d>/resnet<d> (6n+2); mlp: plainmlp<d>/resmlp<d>; imagenet: 18..152
    depths: tuple[int, ...] | None = None  # None = the preset's depths for the family
    seeds: int = 1  # seeds 0..N-1 per depth and kind: mean ± std over them
    preset: str = "default"  # default (mnist5k, minutes on a CPU) | paper (Fig. 6 protocol, CIFAR-10)
    dataset: str | None = None  # None = the preset's (mnist5k / cifar10)
    data_dir: str | None = None
    download: bool = True
    mlp_norm: bool = False  # mlp: batch norm in the dense blocks (off: the lecture's plain equations)
    # --- training: the preset's recipe and overrides, then these (None = leave as is)
    recipe: str | None = None
    epochs: int | None = None
    iterations: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    warmup_epochs: float | None = None
    weight_decay: float | None = None
    eval_every: int | None = None  # iterations between test evaluations (curve points); None = 1 epoch
    # --- hardware
    device: str | None = None
    precision: str | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    num_threads: int | None = None
    # Several devices: one run per device at a time (e.g. ("cuda:0", "cuda:1")). Independent runs finish an
    # N-GPU sweep ~N times sooner; DDP would split a batch of 128 so thin that every GPU is launch-bound.
    devices: tuple[str, ...] | None = None
    # --- output
    out: str | None = None  # None = runs/compare-<family>-<dataset>-<settings hash>: re-runs reuse it
    progress: str = "auto"  # the current run's display: auto = a bar on a terminal, lines otherwise

    def resolve(self) -> CompareConfig:
        """Validate and fill every ``None`` from the preset; raises :class:`ConfigError` (one line)."""
        from reslab.train import RECIPES

        if self.preset not in PRESETS:
            raise ConfigError(f"unknown --preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.family not in FAMILIES:
            raise ConfigError(f"unknown --family {self.family!r}; choose one of {', '.join(FAMILIES)}")
        preset = PRESETS[self.preset]
        recipe = self.recipe or preset["recipe"]
        if recipe not in RECIPES:
            raise ConfigError(f"unknown --recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"--seeds must be a positive integer, got {self.seeds}")
        if self.epochs is not None and self.iterations is not None:
            raise ConfigError("give at most one of --epochs or --iterations")
        depths = tuple(self.depths) if self.depths is not None else preset["depths"][self.family]
        check_depths(self.family, depths)
        epochs, iterations = self.epochs, self.iterations
        if epochs is None and iterations is None:
            epochs = preset["epochs"][self.family]
        if self.devices is not None and (not self.devices or not all(self.devices)):
            raise ConfigError("--devices is empty; give e.g. --devices cuda:0,cuda:1")
        if self.mlp_norm and self.family != "mlp":
            raise ConfigError("--mlp-norm applies to --family mlp only; drop it")
        cfg = replace(
            self,
            depths=tuple(sorted(depths)),
            dataset=self.dataset or preset["dataset"],
            recipe=recipe,
            epochs=epochs,
            iterations=iterations,
        )
        cfg.train_config(model_name(cfg.family, depths[0], residual=True), seed=0, out=".").validate()
        if cfg.out is None:
            safe = str(cfg.dataset).replace(":", "_").replace("/", "_")
            cfg = replace(cfg, out=str(Path("runs") / f"compare-{cfg.family}-{safe}-{cfg.settings_hash()}"))
        return cfg

    def settings(self) -> dict[str, Any]:
        """What fixes the results (call on a resolved config): the grid and the effective training config.

        Kept in ``compare.json``; a re-run in the same --out must match. Built from the effective
        TrainConfig, so ``--batch-size 128`` given explicitly equals the preset's 128.
        """
        train = comparable(self.train_config("model", seed=0, out=".").to_dict())
        grid = {"family": self.family, "depths": list(self.depths or ()), "seeds": self.seeds}
        return {**grid, **train}

    def settings_hash(self) -> str:
        return hashlib.sha1(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:8]

    def train_config(self, model: str, *, seed: int, out: str) -> Any:
        """The :class:`~reslab.train.TrainConfig` of one run of the sweep (call on a resolved config)."""
        from reslab.train import TrainConfig

        given = copy.deepcopy(PRESETS[self.preset]["train"])
        for name in (
            "dataset", "data_dir", "download", "epochs", "iterations", "lr", "batch_size", "warmup_epochs",
            "weight_decay", "eval_every", "device", "precision", "channels_last", "compile", "num_threads",
        ):  # fmt: skip
            value = getattr(self, name)
            if value is not None:
                given[name] = value
        if self.mlp_norm:
            given["model_kwargs"] = {**given.get("model_kwargs", {}), "norm": "batch"}
        return TrainConfig.from_recipe(
            self.recipe or "default", model=model, seed=seed, out=out, progress=self.progress, **given
        )


def comparable(train: dict[str, Any]) -> dict[str, Any]:
    """A TrainConfig dict without :data:`FREE_FIELDS`, with fields of newer versions at their defaults."""
    from reslab.train import TrainConfig

    full = TrainConfig.from_dict(train).to_dict()
    return {k: v for k, v in full.items() if k not in FREE_FIELDS}


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
            valid = ",".join(map(str, IMAGENET_DEPTHS))
            raise ConfigError(f"depth {d} is not an ImageNet ResNet; choose from {valid}")


def model_name(family: str, depth: int, *, residual: bool) -> str:
    """Registry name of one twin: resnet20 / plain20, resmlp16 / plainmlp16, resnet18 / plain18."""
    if family == "mlp":
        return f"{'res' if residual else 'plain'}mlp{depth}"
    kind = "resnet" if residual else "plain"
    if family == "cifar" and depth in IMAGENET_DEPTHS:  # 50 and 152 are 6n+2 too: force the CIFAR net
        return f"cifar_{kind}{depth}"
    return f"{kind}{depth}"


def run_cost(family: str, depth: int) -> float:
    """Relative time of one run, for the ETA: conv nets ~ depth; an MLP's input layer weighs ~6 blocks."""
    return depth + 6.0 if family == "mlp" else float(depth)
