"""Will a training run fit in memory? Estimate it before the first step, and explain running out of it.

The estimate counts the bytes autograd keeps for the backward pass (saved tensors) in one training-mode
forward of a twin of the model built on the ``meta`` device: no memory, no real arithmetic, exact batch size,
and the real model's BN running statistics are untouched. Parameters are left out of the count (they exist
anyway); their gradients and SGD momentum buffers are added as two more copies of the parameters.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from reslab.errors import ConfigError, TrainingError

GiB = 2**30
WARN_FRACTION = 0.8  # beyond this share of free memory, allocator slack and workspaces make it a gamble
# What CUDA/MPS ("... out of memory"), the CPU allocator (Linux / Windows) and others say when they give up.
_OOM_TEXT = re.compile(
    r"out of memory|can't allocate memory|not enough memory|failed to allocate", re.IGNORECASE
)


def saved_tensor_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for backward in one forward of ``model`` on ``x`` (train mode).

    Each storage is counted once (a ReLU output saved by the ReLU and by the next conv is one tensor), and
    the model's own parameters are skipped. Works on real tensors and on ``meta`` tensors alike.
    """
    own = {id(p) for p in model.parameters()}
    sizes: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in own:
            # Real tensors share a storage pointer; meta tensors have none, so their identity stands in.
            key = t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t)
            key = key or id(t)
            sizes[key] = max(sizes.get(key, 0), t.numel() * t.element_size())
        return t

    was_training = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.enable_grad():
            model(x)
    finally:
        model.train(was_training)
    return sum(sizes.values())


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training process needs beyond the model and data already on the device."""

    activations: int  # saved for backward at this batch size (the part --activation-checkpointing cuts)
    optimizer: int  # gradients + momentum buffers: two more copies of the parameters

    @property
    def total(self) -> int:
        return self.activations + self.optimizer


def estimate_training_memory(
    build: Callable[[], nn.Module],
    input_shape: Sequence[int],
    batch_size: int,
    *,
    amp_dtype: torch.dtype | None = None,
) -> MemoryEstimate | None:
    """Estimate from a meta-device twin; ``build()`` must build the model inside the current device context.

    Returns None when the model cannot run on ``meta`` (an estimate must never stop a run by itself failing).
    """
    try:
        with torch.device("meta"):
            twin = build()
            x = torch.empty(batch_size, *input_shape)  # (B, C, H, W) or (B, F)
        activations = saved_tensor_bytes(twin, x)
    except Exception:  # any op without a meta kernel: no estimate rather than no training
        return None
    if amp_dtype is not None:  # autocast saves most activations in the half-precision type
        activations = activations * torch.empty((), dtype=amp_dtype).element_size() // 4
    params = sum(p.numel() * p.element_size() for p in twin.parameters())
    return MemoryEstimate(activations=activations, optimizer=2 * params)


def available_memory(device: torch.device) -> int | None:
    """Free bytes for this process on ``device`` (CUDA: the driver's free memory; CPU: the host's, container
    limits included)."""
    if device.type == "cuda":
        with contextlib.suppress(Exception):
            free, _total = torch.cuda.mem_get_info(device)
            return int(free)
        return None
    if device.type == "cpu":
        from reslab.resources import available_host_memory

        return available_host_memory()
    return None  # MPS: nothing to compare against


def check_fits(
    est: MemoryEstimate | None,
    available: int | None,
    *,
    batch_size: int,
    device: torch.device,
    checkpointing: bool,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Refuse a run that cannot fit (ConfigError, before any step), warn about one that barely does."""
    if est is None or available is None:
        return
    hint = "use a smaller --batch-size" + ("" if checkpointing else " or --activation-checkpointing")
    need = (
        f"~{est.total / GiB:.2f} GiB (activations {est.activations / GiB:.2f} GiB at --batch-size "
        f"{batch_size}, gradients + momentum {est.optimizer / GiB:.2f} GiB)"
    )
    if est.total > available:
        raise ConfigError(
            f"training needs {need} but only {available / GiB:.2f} GiB is free on {device}; {hint}"
        )
    if est.total > WARN_FRACTION * available:
        (warn or (lambda m: sys.stderr.write(f"reslab: warning: {m}\n")))(
            f"training needs {need} of the {available / GiB:.2f} GiB free on {device}; "
            f"it may run out of memory; {hint}"
        )


def is_out_of_memory(err: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA), MemoryError (Python), or the RuntimeError of the CPU/MPS allocators."""
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(err, RuntimeError) and bool(_OOM_TEXT.search(str(err)))


def oom_error(
    batch_size: int, device: torch.device, checkpointing: bool, run_dir: Path | None = None
) -> TrainingError:
    """The one line for running out of memory anyway: the fixes, and what is kept, said only when it is so
    (a run that dies before its first checkpoint has none; without ``run_dir`` nothing is promised)."""
    from reslab.engine.store.checkpoint import list_checkpoints

    hint = "try a smaller --batch-size" + ("" if checkpointing else " or --activation-checkpointing")
    kept = list_checkpoints(run_dir) if run_dir is not None else []
    if kept:
        where = f"; the last checkpoint ({kept[0].name}) is kept in {run_dir}"
    elif run_dir is not None:
        where = f"; no checkpoint was written yet in {run_dir}"
    else:
        where = ""
    return TrainingError(f"out of memory at --batch-size {batch_size} on {device}; {hint}{where}")


def return_freed_memory_promptly() -> bool:
    """Make glibc give large freed blocks back to the OS at once (CPU runs whose memory is short).

    glibc raises its mmap threshold each time a large block is freed, up to 32 MiB, so the many 1-30 MiB
    activations of a conv net end up on the heap, which fragments and never shrinks: peak RSS ends up about
    twice the live memory. Pinning ``M_MMAP_THRESHOLD`` at 128 KiB (``mallopt``, the same as the
    ``MALLOC_MMAP_THRESHOLD_`` environment variable) keeps them in mmap'd blocks returned on free.
    Measured on a 2-core CPU, resnet110 at batch 128 with ``--activation-checkpointing``: peak RSS of one
    training step 1,145 MB -> 564 MB (inference alone: 330 MB). It costs page faults, so it is only used
    where memory is the point. Returns False where there is no glibc (macOS, Windows, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold = -3  # <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, 128 * 1024))
    except (OSError, AttributeError):
        return False
