"""Data-parallel training on PyTorch's own engine: torchrun env -> process group -> DDP, and back down.

One process per device (``cuda:LOCAL_RANK`` with nccl; CPU processes with gloo), launched by ``torchrun`` (or
``reslab train --nproc N``, see :mod:`reslab.engine.devices.launch`). :func:`session` joins the group and
leaves it;
:func:`reslab.engine.train` enters it by itself when it sees torchrun's environment.

The rules, in one place:

1. Global batch = ``cfg.batch_size``, split evenly: rank r takes the r-th slice of every global batch of the
   one seeded epoch order (``DeviceLoader``), so the union of a step's shards is the single-process batch.
2. The lr is *not* rescaled: DDP averages gradients over ranks, so a step sees the same mean gradient as one
   process with the whole global batch. Same ``--batch-size`` and ``--lr`` = same run, any number of ranks.
3. Rank 0 alone writes (run directory, metrics, checkpoints, summary) and shows progress; the run directory
   is agreed by broadcasting rank 0's choice. Every rank reads checkpoints to resume.
4. Evaluation: each rank evaluates a disjoint shard; sums of loss / correct / count are all_reduced.
5. Failures: a collective that cannot complete raises after ``cfg.dist_timeout_s`` (or at once when a peer's
   socket closes) and becomes one :class:`TrainingError` line; torchrun stops the survivors when a rank dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import nn

from reslab.engine.devices.runtime import Runtime, resolve_runtime
from reslab.engine.specs import OutputSpec, RuntimeSpec
from reslab.errors import CheckpointError, ConfigError, DataError, ReslabError, TrainingError

# Errors every rank hits alike (same config, data and files): rank 0 reports them, the others stay quiet.
SHARED_ERRORS: tuple[type[ReslabError], ...] = (ConfigError, DataError, CheckpointError)


@dataclass(frozen=True)
class DistEnv:
    """torchrun's view of this process."""

    rank: int  # global rank, 0 .. world_size-1
    world_size: int  # processes over all nodes
    local_rank: int  # index of this process on its node = its GPU index


def dist_env() -> DistEnv | None:
    """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK), or None outside a launcher."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise ConfigError("RANK/WORLD_SIZE/LOCAL_RANK must be integers; launch with torchrun") from None
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} outside WORLD_SIZE={world}; launch with torchrun")
    return DistEnv(rank, world, local)


def launched_by_torchrun() -> bool:
    """True in a torchrun worker of a job of 2+ processes whose process group is not yet set up."""
    env = dist_env()
    return env is not None and env.world_size > 1 and not (dist.is_available() and dist.is_initialized())


def local_batch(batch_size: int, world_size: int) -> int:
    """Per-rank batch: the global ``batch_size`` split evenly (never rounded: that would change the run)."""
    if batch_size % world_size:
        lo = batch_size - batch_size % world_size
        raise ConfigError(
            f"--batch-size {batch_size} (the global batch) does not split evenly over {world_size} ranks; "
            f"use a multiple of {world_size}, e.g. {lo or world_size} or {lo + world_size}"
        )
    return batch_size // world_size


def is_collective_failure(err: BaseException) -> bool:
    """A failed or timed-out collective (a peer died, hung or lost the network), not a bug of ours."""
    if isinstance(err, dist.DistError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        k in text for k in ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket")
    )


def _first_line(err: BaseException) -> str:
    """The gist of a backend error: first line, without gloo's ``[file.cc:123]`` prefix, first sentence."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    line = re.sub(r"^\[[^\]]*\.(cc|cpp|h|hpp):\d+\]\s*", "", text.splitlines()[0])
    return line.split(". ")[0][:300]


@contextlib.contextmanager
def session(spec: RuntimeSpec) -> Iterator[Runtime]:
    """Join torchrun's process group for one run; yield this rank's :class:`Runtime`; always leave it.

    Backend: nccl with one GPU per process (``cuda:LOCAL_RANK``) when the resolved device is CUDA, else gloo.
    Outside torchrun, or with one process, this is just :func:`resolve_runtime`.
    """
    env = dist_env()
    base = resolve_runtime(spec)
    if env is None or env.world_size == 1:
        yield base
        return
    if base.device.type == "mps":
        raise ConfigError("data-parallel training does not support MPS; use --device cpu or cuda")
    local_batch(spec.batch_size, env.world_size)
    # 1) one device per rank
    if base.device.type == "cuda":
        count = torch.cuda.device_count()
        if env.local_rank >= count:
            raise ConfigError(
                f"local rank {env.local_rank} has no GPU: {count} visible on this node; "
                f"use --nproc-per-node {count} or fewer"
            )
        device, backend = torch.device("cuda", env.local_rank), "nccl"
        torch.cuda.set_device(device)
        # A failed NCCL collective aborts the communicator and raises, instead of hanging the process.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    else:
        device, backend = torch.device("cpu"), "gloo"
    # 2) join: env:// reads MASTER_ADDR/MASTER_PORT; the timeout bounds every later collective too
    try:
        dist.init_process_group(
            backend,
            rank=env.rank,
            world_size=env.world_size,
            timeout=timedelta(seconds=spec.dist_timeout_s),
            device_id=device if backend == "nccl" else None,
        )
    except (RuntimeError, ValueError) as err:
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise TrainingError(
            f"rank {env.rank}: could not join the {env.world_size}-process {backend} group at {where}: "
            f"{_first_line(err)}; check that every node runs the same torchrun command"
        ) from None
    try:
        yield replace(base, device=device, rank=env.rank, world_size=env.world_size)
        # Leave together: a rank tearing its group down while rank 0 still writes the summary can abort
        # in gloo's destructor ("terminate called without an active exception").
        dist.barrier()
    except Exception as err:
        if isinstance(err, ReslabError) or not is_collective_failure(err):
            raise
        raise TrainingError(
            f"rank {env.rank}: lost contact with the other processes ({_first_line(err)}); another rank "
            f"probably failed (see its message) or stalled past --dist-timeout {spec.dist_timeout_s:g} s"
        ) from None
    finally:
        with contextlib.suppress(Exception):  # after a peer's death teardown may fail: exiting matters more
            dist.destroy_process_group()


def leave(code: int) -> NoReturn:
    """End this process with ``code``; a rank of a multi-process job skips the interpreter's finalisation.

    By then the run is over: the group was left (barrier + ``destroy_process_group``), files are closed. What
    is left for finalisation is gloo's own threads and the tensors they hold, whose teardown can still abort
    the process ("terminate called without an active exception", exit code -6) and turn a finished job into
    a failed one under torchrun. Output is flushed first. Malformed RANK/WORLD_SIZE here mean no job was
    joined (a command that trains would have refused them already): a plain exit.
    """
    try:
        env = dist_env()
    except ConfigError:
        env = None
    if env is None or env.world_size == 1:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(code)


def agree_run_dir(
    spec: OutputSpec,
    rt: Runtime,
    open_run_dir: Callable[..., Path],
    stack: contextlib.ExitStack,
    *,
    model: str,
    dataset: str,
) -> Path:
    """Rank 0 opens (creates and locks, on ``stack``) the run directory; the others use the path it
    broadcasts.

    Needed because the default name holds a timestamp that ranks could compute a second apart; and a refusal
    (``--out`` holds a run...) reaches every rank, so none waits forever for rank 0.
    """
    message: list[Any] = [None, None]  # [run_dir, error text]
    run_dir, failure = Path(), None
    if rt.is_main:
        try:
            run_dir = open_run_dir(spec, stack, model=model, dataset=dataset)
            message = [str(run_dir), None]
        except ReslabError as err:
            message, failure = [None, str(err)], err
    dist.broadcast_object_list(message, src=0)
    if failure is not None:
        raise failure
    if message[1] is not None:
        raise ConfigError(message[1])  # ranks > 0 stay quiet on it (SHARED_ERRORS): rank 0 reports it
    if rt.is_main:
        return run_dir
    agreed = spec if spec.resume is not None else replace(spec, out=message[0])
    return open_run_dir(agreed, None, model=model, dataset=dataset)


def prepare_model(model: nn.Module, rt: Runtime, *, sync_bn: bool) -> nn.Module:
    """Before the optimizer: optionally swap BatchNorm for SyncBatchNorm (statistics of the global batch)."""
    if not sync_bn:
        return model
    from reslab.engine.devices.syncbn import convert_sync_batchnorm

    return convert_sync_batchnorm(model, rt.device)


def wrap_ddp(model: nn.Module, rt: Runtime) -> nn.Module:
    """DistributedDataParallel: rank 0's weights broadcast at construction, gradients averaged in backward."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [rt.device.index] if rt.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks, in float64 so that image counts and loss sums stay exact."""
    out = values.to(torch.float64)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BN running stats), so all evaluate the model that rank 0 saves.

    Without SyncBN each rank's last local batch moved its running statistics a little differently.
    """
    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def reduce_interval(interval: Any) -> None:
    """Turn this rank's training figures since the last evaluation into the global ones (in place)."""
    sums = torch.stack(
        [
            interval.loss_sum.double(),
            interval.correct.double(),
            torch.tensor(float(interval.images), dtype=torch.float64, device=interval.loss_sum.device),
        ]
    )
    total = all_reduce_sum(sums)
    interval.loss_sum = total[0].float()
    interval.correct = total[1].round().long()
    interval.images = int(total[2].round())
