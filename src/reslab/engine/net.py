"""The run's network: built on the device after the memory check, from its starting weights, frozen in part.

- :func:`build_net` builds the model for the run's data (class count, input shape), refuses a batch that
  cannot fit in memory before the first step (a CPU run past its RAM dies silently), and moves it to the
  device in the run's memory format.
- ``--init-from SOURCE`` (a run directory, ``.safetensors``, or a torchvision / timm / akamaster ``.pt``):
  :func:`load_init` copies the weights into the built model, before the optimizer, DDP and ``torch.compile``
  see it (the build keywords those weights need were added to the run's ``model_kwargs`` when the config was
  resolved, :func:`reslab.engine.specs.resolve`). A classifier of another class count stays freshly
  initialised, and a warning says so. A resumed run takes its weights from its checkpoint instead.
- ``--freeze STAGE``: the stem and the stages up to and including STAGE get ``requires_grad=False`` and are
  left out of the optimizer (no update, no weight decay). Their BatchNorm layers stay in eval mode for the
  whole run (torchvision's ``FrozenBatchNorm2d`` and timm's ``freeze`` do the same): they normalise with the
  running statistics of the weights they came with, and never update them. So every parameter *and* buffer
  of a frozen stage stays bit-identical, and the frozen features are the ones the source model computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from reslab.engine.devices.memory import (
    MemoryEstimate,
    available_memory,
    check_fits,
    estimate_training_memory,
    return_freed_memory_promptly,
)
from reslab.engine.devices.runtime import Runtime
from reslab.engine.specs import NetSpec
from reslab.errors import ConfigError

TIGHT = 0.5  # a CPU run whose estimate exceeds this share of free memory trades speed for a smaller peak
_EVAL_ONLY: dict[type[_BatchNorm], type[_BatchNorm]] = {}


def load_init(model: nn.Module, source: str | None, input_shape: tuple[int, ...] = ()) -> list[str]:
    """Copy the weights of ``source`` into ``model``; returns the lines to print at the start (with one when
    a reslab run was trained on images of another size than ``input_shape``)."""
    if source is None:
        return []
    from reslab.models import load_weights

    heads: list[str] = []
    report = load_weights(model, source, warn=heads.append)
    line = f"init from {source}: {report.loaded} tensors loaded ({report.info.describe()})"
    trained = _trained_shape(source)
    if trained is not None and input_shape and trained != tuple(input_shape):
        was, now = ("x".join(map(str, s)) for s in (trained, input_shape))
        heads.append(
            f"{source} was trained on {was} images, this run's are {now}: its weights start at another "
            "resolution (--image-size N sets this run's)"
        )
    return [line, *(f"warning: {m}" for m in heads)]


def _trained_shape(source: str) -> tuple[int, ...] | None:
    """(C, H, W) a reslab run (directory, or weights file beside its config.json) was trained on."""
    from pathlib import Path

    from reslab.engine.store.rundir import CONFIG
    from reslab.engine.store.runs import read_run_config
    from reslab.errors import CheckpointError

    path = Path(source).expanduser()
    config = path / CONFIG if path.is_dir() else path.parent / CONFIG
    if not config.is_file():
        return None
    try:
        return tuple(read_run_config(config)["data"]["input_shape"])
    except CheckpointError:
        return None


def _eval_only(cls: type[_BatchNorm]) -> type[_BatchNorm]:
    """A subclass of the BatchNorm class ``cls`` whose ``train()`` always leaves it in eval mode."""
    if cls not in _EVAL_ONLY:

        def train(self: _BatchNorm, mode: bool = True) -> _BatchNorm:
            return super(frozen, self).train(False)  # running statistics fixed, as FrozenBatchNorm2d

        frozen: type[_BatchNorm] = type(
            f"Frozen{cls.__name__}", (cls,), {"train": train, "__module__": __name__}
        )
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


@dataclass
class Net:
    """The built network, its memory estimate, and the lines that describe its start."""

    model: nn.Module
    memory: MemoryEstimate | None
    notes: list[str]


def build_net(
    spec: NetSpec, rt: Runtime, *, num_classes: int, input_shape: tuple[int, ...], world_size: int = 1
) -> Net:
    """The model on the device, its starting weights loaded and its frozen stages frozen.

    Refuses (ConfigError) a batch that cannot fit in memory, before anything is allocated for real.
    """
    from reslab.models import build_model

    def build() -> nn.Module:
        kwargs = {"activation_checkpointing": spec.activation_checkpointing, **spec.model_kwargs}
        return build_model(spec.model, num_classes=num_classes, input_shape=input_shape, **kwargs)

    model = build()
    per_rank = max(spec.batch_size // world_size, 1)
    mem = estimate_training_memory(build, input_shape, per_rank, amp_dtype=rt.amp_dtype)
    free = available_memory(rt.device)
    if rt.device.type == "cpu" and mem is not None and free is not None and mem.total > TIGHT * free:
        # Only where memory is short: it halves peak RSS but costs page faults, so a run with room to
        # spare does not pay (BENCHMARKS.md, "resnet1202 on a laptop").
        return_freed_memory_promptly()
    quiet = None if rt.is_main else (lambda _: None)
    check_fits(
        mem, free, batch_size=spec.batch_size, device=rt.device,
        checkpointing=spec.activation_checkpointing, warn=quiet,
    )  # fmt: skip
    # torch's stubs omit Module.to(memory_format=...), which torch has
    model = model.to(  # type: ignore[call-overload]
        rt.device, memory_format=torch.channels_last if rt.channels_last else torch.preserve_format
    )
    notes = [] if spec.resumed else load_init(model, spec.init_from, input_shape)  # before optimizer, DDP
    frozen = freeze(model, spec.freeze)
    if frozen:
        notes.append(describe_freeze(model, frozen))
        if spec.init_from is None and not spec.resumed:
            notes.append("warning: --freeze without --init-from keeps those stages at their random init")
    return Net(model, mem, notes)
