"""A training process started by reslab itself: ``python -m reslab.engine.devices.worker CONFIG_JSON``.

``reslab train --nproc N`` has torchrun start this module once per rank, and sweeps that train one run per
device start it once per run; each gets the already checked :class:`TrainConfig` as JSON, so every process
runs exactly what was validated once. Exit codes are the CLI's: 0 done, 2 bad input, 3 training failed,
130 interrupted. Under torchrun, errors every rank hits alike are printed by rank 0 only.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from reslab.engine.config import TrainConfig
from reslab.engine.devices.distributed import SHARED_ERRORS, dist_env, leave
from reslab.engine.loop import RunResult, train
from reslab.errors import ConfigError, ReslabError, report


def train_as_process(cfg: TrainConfig) -> tuple[int, RunResult | None]:
    """Train ``cfg`` in this process, as one rank of a torchrun job or alone; (exit code, result or None).

    Only rank 0 reports (and returns the result): the other ranks return (0, None) on success, and on an
    error that every rank hits alike (bad input) they stay quiet; their own failures name their rank.
    """
    env = dist_env()
    rank = env.rank if env is not None and env.world_size > 1 else 0
    try:
        result = train(cfg)
    except ReslabError as err:
        if rank == 0:
            raise
        if isinstance(err, SHARED_ERRORS):
            return err.exit_code, None
        text = str(err) if str(err).startswith("rank ") else f"rank {rank}: {err}"
        sys.stderr.write(f"reslab: error: {text}\n")
        return err.exit_code, None
    return 0, (result if rank == 0 else None)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(args) != 1:
            raise ConfigError("usage: python -m reslab.engine.devices.worker CONFIG_JSON")
        try:
            data = json.loads(args[0])
        except ValueError:
            raise ConfigError("the worker's CONFIG_JSON argument is not valid JSON") from None
        code, result = train_as_process(TrainConfig.from_dict(data, where="worker config", strict=True))
        if result is not None:  # rank 0 (or the only process) reports the run, as `reslab train` does
            print(result)
        return code
    except ReslabError as err:
        return report(err)
    except KeyboardInterrupt:
        sys.stderr.write("reslab: interrupted\n")
        return 130


if __name__ == "__main__":
    leave(main())
