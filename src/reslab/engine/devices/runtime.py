"""Where and how a run executes: device, precision, memory format, seeding, rank (the DDP seam)."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch

from reslab.engine.specs import RuntimeSpec
from reslab.errors import ConfigError

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """The resolved execution settings of one process."""

    device: torch.device
    precision: str  # fp32 | bf16 | fp16, after resolving "auto"
    channels_last: bool
    rank: int = 0  # DDP seam: the distributed set-up fills these; everything else reads them
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only the main process logs, shows progress and writes files."""
        return self.rank == 0

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return AMP_DTYPES[self.precision]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """``auto`` = cuda, then mps, then cpu; an explicit GPU that is absent is a ConfigError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA GPU is available; use --device cpu")
    if name == "mps" and not _mps_available():
        raise ConfigError("--device mps was requested but MPS is not available; use --device cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown --device {name!r}; choose one of auto, cpu, cuda, mps")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls/convs run natively and beat fp32 (1.7x for resnet20 on 2 cores)."""
    cpu = torch.cpu
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        with contextlib.suppress(Exception):
            if fn is not None and fn():
                return True
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` = bf16 where the hardware does it natively, else fp32."""
    if name != "auto":
        if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("this GPU has no bf16; use --precision fp16 or fp32")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def resolve_runtime(spec: RuntimeSpec, *, rank: int = 0, world_size: int = 1) -> Runtime:
    """Device, precision and memory format of one process, "auto" resolved for this machine."""
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    device = resolve_device(spec.device)
    precision = resolve_precision(spec.precision, device)
    channels_last = spec.channels_last if spec.channels_last is not None else device.type in ("cpu", "cuda")
    return Runtime(device, precision, channels_last, rank, world_size)


def seed_everything(seed: int) -> None:
    """The one place where a run is seeded (Python, numpy, torch CPU and all GPUs)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def autocast(rt: Runtime, *, cache: bool = True) -> contextlib.AbstractContextManager[object]:
    """Mixed-precision context for forward passes; a no-op in fp32.

    ``cache=False`` inside a CUDA graph capture, as PyTorch's CUDA graph notes require of autocast there; the
    casts are the same values either way (each weight is cast once per forward in these nets).
    """
    if rt.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=rt.device.type, dtype=rt.amp_dtype, cache_enabled=cache)


class _CpuRngState(TypedDict):
    torch: torch.Tensor  # the CPU generator's state: always there


class RngState(_CpuRngState, total=False):
    """RNG states in a checkpoint: torch's CPU generator, and from a CUDA run each GPU's."""

    cuda: list[torch.Tensor]


def rng_state(device: torch.device) -> RngState:
    """RNG states to save with a checkpoint (tensors only, so ``weights_only`` loading accepts them)."""
    state: RngState = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: RngState, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if device.type == "cuda" and cuda is not None:
        with contextlib.suppress(Exception):  # a different GPU count: keep the fresh states
            torch.cuda.set_rng_state_all(cuda)
