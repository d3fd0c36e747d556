"""Weights in: load a state dict saved by reslab, torchvision, timm or akamaster's CIFAR nets into a model.

A source is a reslab run directory (its ``model.safetensors``), a ``.safetensors`` file, or a PyTorch file
(``.pt``, ``.pth``, ``.th``, ``.pth.tar``) read with ``torch.load(weights_only=True)``: tensors and plain data
only, never code. Wrappers ``{"state_dict" | "model_state_dict" | "model" | "net": ...}`` and the key prefixes
``module.`` (DataParallel / DDP) and ``_orig_mod.`` (torch.compile) are removed first. Then the layout is read
from the keys and mapped to reslab's names by the explicit tables of :mod:`reslab.models.layouts`
(reslab = torchvision = timm's plain ResNets: no renaming; akamaster/pytorch_resnet_cifar10: ``linear`` ->
``fc``, option B ``shortcut`` -> ``downsample``). A timm ``num_classes=0`` file has no classifier: the model
keeps its own head.

Conventions that no key shows: akamaster's option A pads ``planes//4`` zero channels on *both* sides of the
identity (reslab appends them) and its head pools with ``F.avg_pool2d`` (reslab with the adaptive pool, which
rounds differently). A model built with ``shortcut_pad="both", global_pool="window"`` gives bit-identical
outputs; :func:`inspect_weights` says which ``build_model`` keywords a file needs, and :func:`load_weights`
refuses a model built otherwise. A classifier with another class count is not loaded: the model keeps its
fresh head and the report (and ``warn``) says so. Any other mismatch is a one-line ``CheckpointError`` that
names the first offending key.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pickle
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reslab.errors import CheckpointError
from reslab.files import MAX_JSON_BYTES, check_regular_file, open_regular, read_bounded, read_text_bounded
from reslab.models.blocks import PadShortcut
from reslab.models.layouts import (
    HEAD,
    LAYOUT_NAMES,
    TIMM_VARIANT,
    Layout,
    convert_state_dict,
    detect_layout,
    guess_model,
)
from reslab.models.nets import WindowAvgPool
from reslab.resources import available_host_memory, format_bytes

Source = str | PathLike[str] | Mapping[str, torch.Tensor]

RUN_WEIGHTS = "model.safetensors"  # what a reslab run directory keeps its latest weights in
RUN_CONFIG = "config.json"
WRAPPERS = ("state_dict", "model_state_dict", "model", "net")  # torch.save({"state_dict": sd, ...}) and kin
PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile

# Conventions without parameters: reslab's defaults, and what akamaster's resnet.py does.
DEFAULT_CONVENTIONS = {"shortcut_pad": "after", "global_pool": "adaptive"}
AKAMASTER_CONVENTIONS = {"shortcut_pad": "both", "global_pool": "window"}


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights source holds, read from its keys and shapes (and a run's ``config.json``)."""

    source: str  # what was asked for, for messages
    path: Path | None  # the file read; None for an in-memory state dict
    layout: Layout
    model: str | None  # the reslab model name the keys describe, e.g. "resnet20"; None if unknown
    num_classes: int | None  # rows of the classifier; None when the file has none
    in_channels: int | None  # input channels of the stem conv
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # build_model keywords the weights need
    conventions: dict[str, str] | None = None  # shortcut_pad / global_pool trained with; None: not known
    notes: tuple[str, ...] = ()  # what was unwrapped and renamed

    def build_call(self) -> str:
        """The ``build_model(...)`` call that builds a model this file loads into, or "" if unknown."""
        if self.model is None:
            return ""
        kwargs = {"num_classes": self.num_classes, "in_channels": self.in_channels, **self.model_kwargs}
        args = "".join(f", {k}={v!r}" for k, v in kwargs.items() if v is not None)
        return f"build_model({self.model!r}{args})"

    def describe(self) -> str:
        """One line: layout, what was renamed, and what the file looks like."""
        looks = f"; looks like {self.model}" if self.model else ""
        extra = f" ({', '.join(self.notes)})" if self.notes else ""
        return f"{LAYOUT_NAMES[self.layout]} layout{extra}{looks}"


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did."""

    info: WeightsInfo
    loaded: int  # tensors copied into the model
    head_reinitialised: bool  # True: the model kept its own (fresh) classifier
    message: str | None  # the head message also given to ``warn``; None when the head was loaded

    def __str__(self) -> str:
        head = f"; {self.message}" if self.message else ""
        return f"loaded {self.loaded} tensors from {self.info.source}: {self.info.describe()}{head}"


def read_state_dict(source: str | PathLike[str]) -> tuple[dict[str, torch.Tensor], Path, list[str]]:
    """(state dict minus wrappers and prefixes, the file read, notes) of a run directory or weights file."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not os.path.lexists(path / RUN_WEIGHTS):
            raise CheckpointError(
                f"{path} has no {RUN_WEIGHTS}: pass a reslab run directory that has saved weights, "
                "a .safetensors file or a .pt/.pth state dict"
            )
        path = path / RUN_WEIGHTS
    elif not os.path.lexists(path):
        raise CheckpointError(
            f"{path} does not exist; pass a reslab run directory, a .safetensors file "
            "or a .pt/.pth state dict"
        )
    # the one bounded reader: a FIFO or a device is "not a regular file" (never opened, never waited on)
    size = check_regular_file(path, "weights file", max_bytes=MAX_WEIGHTS_BYTES, error=CheckpointError)
    _check_memory(path, size)
    with open_regular(path, "weights file", max_bytes=MAX_WEIGHTS_BYTES, error=CheckpointError) as f:
        try:
            head = f.read(9)
        except OSError as err:
            raise CheckpointError(f"cannot read weights file {path}: {err.strerror or err}") from None
    # safetensors: an 8-byte header length, then the JSON header; anything else goes to torch.load
    obj = _read_safetensors(path) if path.suffix == ".safetensors" or head[8:] == b"{" else _read_torch(path)
    notes: list[str] = []
    return _unwrap(obj, str(path), notes), path, notes


WEIGHTS_CHECKSUM = "reslab_sha256"  # header metadata of the weights reslab writes: SHA-256 of the tensor data
MAX_WEIGHTS_BYTES = 64 << 30  # far beyond any ResNet (ResNet-152: 0.23 GiB in fp32), short of filling a disk


READ_OVERHEAD = 2  # reading weights holds the file's bytes and the tensors made of them at once


def _check_memory(path: Path, size: int) -> None:
    """Refuse, before a byte is read, a weights file that cannot fit in the free host memory."""
    free = available_host_memory()
    need = READ_OVERHEAD * size
    if free is not None and need > free:
        raise CheckpointError(
            f"weights file {path} is {format_bytes(size)}: reading it needs ~{format_bytes(need)} of memory "
            f"but only {format_bytes(free)} is free; check that it is the right file, or free some memory"
        )


def tensor_data_sha256(data: bytes) -> str:
    """SHA-256 of a safetensors file's tensor data (everything after its 8-byte length and JSON header)."""
    header = int.from_bytes(data[:8], "little")
    return hashlib.sha256(memoryview(data)[8 + header :]).hexdigest()


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    data = read_bounded(path, MAX_WEIGHTS_BYTES, "weights file", error=CheckpointError)
    try:
        state = load(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    except Exception as err:  # safetensors raises its own error types on malformed headers
        raise CheckpointError(f"weights file {path} is truncated or corrupted: {_first_line(err)}") from None
    want = (header.get("__metadata__") or {}).get(WEIGHTS_CHECKSUM) if isinstance(header, dict) else None
    if want is not None and want != tensor_data_sha256(data):
        raise CheckpointError(
            f"weights file {path} fails its checksum: it was corrupted after it was written"
        )
    return state


def _read_torch(path: Path) -> Any:
    # argparse.Namespace is plain data: timm's and torchvision's training scripts save their args with it.
    allow = getattr(torch.serialization, "safe_globals", None)
    try:
        with allow([argparse.Namespace]) if allow else contextlib.nullcontext():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None:  # not a refused object: a text file, another format
            raise CheckpointError(f"{path} is not a readable PyTorch weights file ({_detail(err)})") from None
        raise CheckpointError(
            f"{path} holds pickled Python objects ({found.group(1)}), not only tensors, and reslab never "
            "unpickles code (torch.load weights_only=True); if you trust the file, re-save its state dict "
            "alone with torch.save(state_dict, 'weights.pt') or as .safetensors"
        ) from None
    except Exception as err:  # a truncated zip, a pickle of another protocol
        raise CheckpointError(f"{path} is not a readable PyTorch weights file ({_first_line(err)})") from None


def _detail(err: BaseException) -> str:
    """The informative line of torch.load's weights_only message (the rest is advice about trusting files)."""
    text = str(err).split("WeightsUnpickler error:")[-1]
    boiler = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(boiler)]
    return lines[0] if lines else type(err).__name__


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def _unwrap(obj: Any, name: str, notes: list[str]) -> dict[str, torch.Tensor]:
    # 1. Descend through wrapper dicts ({"state_dict": ..., "epoch": ...}) to the dict of tensors.
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        key = next(
            (k for k in WRAPPERS if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping)), None
        )
        if key is None:
            raise CheckpointError(
                f"{name} holds no state dict: expected a dict of tensors, or one under "
                f"{', '.join(repr(k) for k in WRAPPERS)}"
            )
        obj = obj[key]
        notes.append(f"unwrapped {key!r}")
    # 2. Remove the prefixes that wrappers of the model add to every key.
    state: dict[str, torch.Tensor] = {}
    stripped: set[str] = set()
    for key, value in obj.items():
        new = str(key)
        while new.startswith(PREFIXES):
            prefix = next(p for p in PREFIXES if new.startswith(p))
            stripped.add(prefix)
            new = new[len(prefix) :]
        if new in state:
            raise CheckpointError(f"{name} has key {new!r} twice (with and without a prefix); save it again")
        state[new] = value
    notes.extend(f"prefix {p!r} removed" for p in sorted(stripped))
    return state


def _run_conventions(path: Path) -> dict[str, str] | None:
    """shortcut_pad / global_pool of a reslab run, from its config.json; None if there is none to read."""
    config = path.parent / RUN_CONFIG
    if not os.path.lexists(config):
        return None
    # bounded: a config.json that is a FIFO or a link to /dev/zero is one line, never a hang or MemoryError
    text = read_text_bounded(config, MAX_JSON_BYTES, "run config", error=CheckpointError)
    try:
        kwargs = json.loads(text)["config"].get("model_kwargs") or {}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    if not isinstance(kwargs, dict):
        return None
    return {k: str(kwargs.get(k, v)) for k, v in DEFAULT_CONVENTIONS.items()}


def _prepare(source: Source) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    if isinstance(source, Mapping):
        notes: list[str] = []
        raw, path, name = _unwrap(source, "the state dict", notes), None, "the state dict"
    else:
        raw, path, notes = read_state_dict(source)
        name = str(source)
    layout = detect_layout(raw)
    state, renames = convert_state_dict(raw, layout)
    model, kwargs = guess_model(state)
    conventions: dict[str, str] | None = None
    if layout == "akamaster":
        conventions = dict(AKAMASTER_CONVENTIONS)
    elif path is not None and path.name == RUN_WEIGHTS:
        conventions = _run_conventions(path)
    for key, value in (conventions or {}).items():
        pads = key == "shortcut_pad" and kwargs.get("shortcut", "A") == "A"  # pads exist only with option A
        if value != DEFAULT_CONVENTIONS[key] and (pads or key == "global_pool"):
            kwargs[key] = value
    fc, stem = state.get(HEAD + "weight"), state.get("conv1.weight")
    info = WeightsInfo(
        source=name,
        path=path,
        layout=layout,
        model=model,
        num_classes=int(fc.shape[0]) if fc is not None and fc.ndim == 2 else None,
        in_channels=int(stem.shape[1]) if stem is not None and stem.ndim == 4 else None,
        model_kwargs=kwargs,
        conventions=conventions,
        notes=(*notes, *renames),
    )
    return state, info


def inspect_weights(source: Source) -> WeightsInfo:
    """Read a source and say what it holds, without a model: layout, model name, classes, build keywords.

    ``build_model(info.model, num_classes=..., **info.model_kwargs)`` builds a model that loads it with
    identical outputs (``model_kwargs`` carries e.g. ``shortcut_pad="both", global_pool="window"``).
    """
    return _prepare(source)[1]


def _model_conventions(model: nn.Module) -> dict[str, str]:
    found: dict[str, str] = {}
    pads = {m.pad for m in model.modules() if isinstance(m, PadShortcut)}
    if pads:
        found["shortcut_pad"] = pads.pop() if len(pads) == 1 else "mixed"
    pool = getattr(model, "avgpool", None)
    if isinstance(pool, WindowAvgPool | nn.AdaptiveAvgPool2d):
        found["global_pool"] = "window" if isinstance(pool, WindowAvgPool) else "adaptive"
    return found


def _mismatch_error(info: WeightsInfo, state: Mapping[str, torch.Tensor]) -> Callable[[str], CheckpointError]:
    """A maker of one-line errors: the problem, what the file looks like, and the fix."""
    variant = next((k for k in state if TIMM_VARIANT.search(k)), None)
    if variant:
        fix = (
            f"its key {variant!r} belongs to a timm variant (deep stem, average-pool downsample, SE or "
            "anti-aliasing) that reslab does not build; use plain resnet18…152 weights"
        )
    elif info.model:
        fix = f"the file looks like {info.model}: load it into {info.build_call()}"
    else:
        fix = "build the architecture the file was saved from"
    layout = LAYOUT_NAMES[info.layout]
    return lambda problem: CheckpointError(
        f"{info.source} does not fit the model: {problem} (keys read as {layout} layout); {fix}"
    )


def _head_mismatch(target: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str | None:
    """Why the file's classifier cannot serve the model's (none, or another class count); None if it can."""
    if not any(k.startswith(HEAD) for k in state):
        return "the file has no classifier"
    fw, mw = state.get(HEAD + "weight"), target.get(HEAD + "weight")
    if fw is None or mw is None or fw.ndim != 2 or mw.ndim != 2 or fw.shape[1] != mw.shape[1]:
        return None  # another architecture: the key checks name the problem
    if fw.shape[0] != mw.shape[0]:  # same features, other classes: a new task's head
        return f"the file's classifier has {fw.shape[0]} classes, the model's {mw.shape[0]}"
    return None


def _unwrapped(model: nn.Module) -> nn.Module:
    """The model inside a compiled or data-parallel wrapper (whose keys carry a prefix)."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile
        if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            inner = model.module
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _split_head(
    target: Mapping[str, torch.Tensor], state: dict[str, torch.Tensor], info: WeightsInfo, strict_head: bool
) -> tuple[dict[str, torch.Tensor], str | None]:
    """The classifier: another class count (or none in the file) keeps the model's own fresh head."""
    head = [k for k in target if k.startswith(HEAD)]
    message = _head_mismatch(target, state) if head else None
    if message is None:
        return state, None
    if strict_head:
        fix = f"build the model with num_classes={info.num_classes} or " if info.num_classes else ""
        raise CheckpointError(f"{info.source}: {message}; {fix}allow a new head (strict_head=False)")
    state = {k: v for k, v in state.items() if not k.startswith(HEAD)}
    return state, f"head re-initialised: {message}; {', '.join(head)} keep the model's fresh initialisation"


def _check_keys(
    target: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    mismatch: Callable[[str], CheckpointError],
    *,
    skip_head: bool,
) -> None:
    """Every key, in the model's order, then the file's: the first mismatch is the error."""
    for key, want in target.items():
        if skip_head and key.startswith(HEAD):
            continue
        if key not in state:
            if key.endswith(".num_batches_tracked"):  # files of PyTorch < 0.4.1 lack it; a counter only
                continue
            raise mismatch(f"the model's {key!r} is missing from the file")
        got = state[key]
        if tuple(got.shape) != tuple(want.shape):
            raise mismatch(f"{key!r} is {tuple(got.shape)} in the file but {tuple(want.shape)} in the model")
    for key in state:
        if key not in target:
            raise mismatch(f"the file has {key!r}, which the model has not")


def _check_conventions(model: nn.Module, info: WeightsInfo) -> None:
    """Conventions without parameters: the same weights give other outputs under another convention."""
    have = _model_conventions(model)
    wrong = {k: v for k, v in (info.conventions or {}).items() if k in have and have[k] != v}
    if wrong:
        kw = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
        theirs = ", ".join(f"{k}={have[k]!r}" for k in wrong)
        raise CheckpointError(
            f"{info.source} was trained with {kw}, the model is built with {theirs}: outputs would differ; "
            f"build the model with build_model(..., {kw})"
        )


def load_weights(
    model: nn.Module,
    source: Source,
    *,
    strict_head: bool = False,
    warn: Callable[[str], None] | None = None,
) -> LoadReport:
    """Copy the weights of ``source`` into ``model`` (in place), mapping the key layout; see the module doc.

    Args:
        model: a reslab net (its classifier is ``fc``) or any module with reslab/torchvision key names.
        source: a reslab run directory, a ``.safetensors`` file, a ``.pt``/``.pth`` state dict (read with
            ``weights_only=True``), or an in-memory state dict.
        strict_head: True refuses a file whose classifier has another class count (or none) instead of
            keeping the model's own fresh head.
        warn: called with the head re-initialisation message; default: a warning line on stderr.

    Returns:
        A :class:`LoadReport` (layout, tensors loaded, whether and why the head was re-initialised).

    Raises:
        CheckpointError: unreadable or unsafe file, or a mismatch: one line naming the first missing,
            unexpected or misshapen key (or the shortcut / pooling convention) and the fix.
    """
    state, info = _prepare(source)
    model = _unwrapped(model)
    target = model.state_dict()
    state, message = _split_head(target, state, info, strict_head)
    _check_keys(target, state, _mismatch_error(info, state), skip_head=message is not None)
    _check_conventions(model, info)
    # 4. Copy (load_state_dict casts dtypes and fills a missing num_batches_tracked from the model).
    model.load_state_dict(state, strict=False)
    if message is not None:
        (warn or (lambda m: sys.stderr.write(f"reslab: warning: {m}\n")))(f"{info.source}: {message}")
    return LoadReport(info=info, loaded=len(state), head_reinitialised=message is not None, message=message)
