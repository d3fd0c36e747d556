"""``reslab train --nproc N``: data-parallel training on N local processes through torchrun.

:func:`launch_torchrun` runs torchrun's own launcher (``torch.distributed.run``: the elastic agent, a
standalone c10d rendezvous on a free port, ``--max-restarts 0``) in this process, with the workers running
:mod:`reslab.engine.devices.worker` on the checked config. It is exactly::

    torchrun --standalone --nproc-per-node N --max-restarts 0 -m reslab.engine.devices.worker CONFIG_JSON

When a worker dies, the agent stops the others (SIGTERM, then SIGKILL) and we print one line naming the rank.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from reslab.engine.config import TrainConfig
from reslab.engine.devices.distributed import local_batch
from reslab.errors import ConfigError

if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

# Worker exit codes of the reslab CLI that carry meaning (2 = bad input, 3 = training failed, 130 = Ctrl-C).
_CLI_CODES = (2, 3, 130)


def torchrun_args(cfg: TrainConfig, nproc: int) -> list[str]:
    """Arguments of ``torchrun`` (or ``python -m torch.distributed.run``) for ``nproc`` local workers."""
    return [
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "--max-restarts",
        "0",  # a dead worker ends the job: a restart would only replay the same failure
        "-m",
        "reslab.engine.devices.worker",
        json.dumps(cfg.to_dict()),
    ]


def describe_failure(failures: Mapping[int, ProcessFailure]) -> tuple[str, int]:
    """(one line, exit code) for torchrun's ``ChildFailedError.failures`` ({rank: ProcessFailure})."""
    # torchrun SIGTERMs the survivors itself: the root cause is a failure other than that, the earliest.
    causes = [r for r in failures if getattr(failures[r], "exitcode", 1) != -15] or list(failures)
    first = min(causes, key=lambda r: (getattr(failures[r], "timestamp", 0), r))
    code = int(getattr(failures[first], "exitcode", 1))
    if code < 0:
        how = f"was killed by signal {-code}"
        with contextlib.suppress(Exception):
            how = f"was killed by {failures[first].signal_name()}"
        return f"rank {first} {how}; torchrun stopped the other ranks", 1
    others = "" if len(failures) == 1 else f" ({len(failures) - 1} other rank(s) failed too)"
    line = f"rank {first} exited with code {code}{others}; torchrun stopped the job (its message is above)"
    return line, code if code in _CLI_CODES else 1


def launch_torchrun(cfg: TrainConfig, nproc: int) -> int:
    """Run ``cfg`` data-parallel on ``nproc`` local processes through torchrun; return the exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args
    from torch.distributed.run import run as torchrun

    if nproc < 1:
        raise ConfigError(f"--nproc must be a positive integer, got {nproc}")
    cfg.validate()
    if cfg.batch_size is not None:  # unset: the small-data rule picks a multiple of the process count
        local_batch(cfg.batch_size, nproc)  # refuse an uneven split here, before any process starts
    # torchrun's default (1 thread per worker) without its banner; an explicit --num-threads still wins.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # The agent's log (rendezvous, worker groups, "failed (exitcode: -9)") is replaced by our one line.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        torchrun(parse_args(torchrun_args(cfg, nproc)))
    except ChildFailedError as err:
        line, code = describe_failure(err.failures)
        if code not in _CLI_CODES:  # a reslab error already said what happened, in the rank's own line
            sys.stderr.write(f"reslab: error: {line}\n")
        return code
    except (SignalException, KeyboardInterrupt):
        sys.stderr.write("reslab: interrupted\n")
        return 130
    return 0
