"""Starting from weights and fine-tuning: ``--init-from``, ``--freeze`` and ``--head-lr``.

- ``--init-from SOURCE`` (a run directory, ``.safetensors``, or a torchvision / timm / akamaster ``.pt``):
  :func:`with_init_kwargs` first adds the ``build_model`` keywords the weights need (akamaster's
  ``shortcut_pad="both", global_pool="window"``) to the run's ``model_kwargs``, so config.json records them
  and the outputs are identical; :func:`load_init` then copies the weights into the built model, before the
  optimizer, DDP and ``torch.compile`` see it. A classifier of another class count stays freshly initialised,
  and a warning says so. A resumed run takes its weights from its checkpoint and never reads SOURCE again.
- ``--freeze STAGE``: the stem and the stages up to and including STAGE get ``requires_grad=False`` and are
  left out of the optimizer (no update, no weight decay). Their BatchNorm layers stay in eval mode for the
  whole run (torchvision's ``FrozenBatchNorm2d`` and timm's ``freeze`` do the same): they normalise with the
  running statistics of the weights they came with, and never update them. So every parameter *and* buffer
  of a frozen stage stays bit-identical, and the frozen features are the ones the source model computed.
- ``--head-lr LR``: the classifier ``fc`` trains at LR instead of ``--lr``, on the same schedule (warm-up and
  decay scale both groups by the same factor): the optimizer has a second parameter group whose
  ``lr_scale`` is ``head_lr / lr``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from reslab.engine.config import TrainConfig
from reslab.errors import ConfigError

HEAD = "fc."  # every reslab net's classifier, as torchvision's and timm's
_EVAL_ONLY: dict[type, type] = {}


def with_init_kwargs(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the build keywords that ``cfg.init_from`` needs merged into ``model_kwargs``.

    Nothing changes without ``init_from`` or on resume (the run's config.json already has them).

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


def load_init(model: nn.Module, cfg: TrainConfig) -> list[str]:
    """Copy ``cfg.init_from`` into ``model`` (not on resume); returns the lines to print at the start."""
    if cfg.init_from is None or cfg.resume is not None:
        return []
    from reslab.models import load_weights

    heads: list[str] = []
    report = load_weights(model, cfg.init_from, warn=heads.append)
    line = f"init from {cfg.init_from}: {report.loaded} tensors loaded ({report.info.describe()})"
    return [line, *(f"warning: {m}" for m in heads)]


def _eval_only(cls: type) -> type:
    """A subclass of the BatchNorm class ``cls`` whose ``train()`` always leaves it in eval mode."""
    if cls not in _EVAL_ONLY:

        def train(self: nn.Module, mode: bool = True) -> nn.Module:
            return super(frozen, self).train(False)  # running statistics fixed, as FrozenBatchNorm2d

        frozen = type(f"Frozen{cls.__name__}", (cls,), {"train": train, "__module__": __name__})
        _EVAL_ONLY[cls] = frozen
    return _EVAL_ONLY[cls]


def _frozen_parts(model: nn.Module, stage: str) -> list[str]:
    """The top-level modules ``--freeze stage`` covers: the stem (all before the first stage) and stages."""
    stages = tuple(getattr(model, "stage_names", ()))
    valid = ("stem", *stages)
    if stage not in valid:
        raise ConfigError(
            f"--freeze {stage!r} is not a stage of this model; choose one of {', '.join(valid)}"
        )
    children = [name for name, _ in model.named_children()]
    stem = children[: children.index(stages[0])] if stages else []
    return stem + list(stages[: valid.index(stage)])


def freeze(model: nn.Module, stage: str | None) -> list[str]:
    """Freeze the stem and the stages up to ``stage`` (see the module doc); returns the modules frozen."""
    if stage is None:
        return []
    parts = _frozen_parts(model, stage)
    for name in parts:
        module = getattr(model, name)
        for p in module.parameters():
            p.requires_grad_(False)
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                m.__class__ = _eval_only(type(m))
                m.eval()
    return parts


def describe_freeze(model: nn.Module, parts: list[str]) -> str:
    """One line: what is frozen, and how many parameters still train."""
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stages = tuple(getattr(model, "stage_names", ()))
    stem = [p for p in parts if p not in stages]
    names = [f"stem ({', '.join(stem)})", *(p for p in parts if p in stages)]
    return f"frozen: {', '.join(names)}, BatchNorm in eval mode; {trained:,} of {total:,} parameters train"


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The optimizer's groups: every trainable parameter; with ``head_lr``, ``fc`` in a group of its own.

    Each group's ``lr_scale`` multiplies the scheduled lr (see :func:`reslab.engine.step.set_lr`).
    """
    if cfg.head_lr is None:
        return [{"params": trainable(model), "lr_scale": 1.0}]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = [p for n, p in named if n.startswith(HEAD)]
    if not head:
        raise ConfigError("--head-lr needs a classifier named fc; this model has none")
    body = [p for n, p in named if not n.startswith(HEAD)]
    groups = [{"params": body, "lr_scale": 1.0}] if body else []
    return [*groups, {"params": head, "lr_scale": cfg.head_lr / cfg.lr}]
