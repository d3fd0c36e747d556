"""A training process started by reslab itself: ``python -m reslab.engine.devices.worker CONFIG_JSON``.

``reslab train --nproc N`` has torchrun start this module once per rank; each gets the already checked
:class:`TrainConfig` as JSON, so every process runs exactly what was validated once. Exit codes are the
CLI's: 0 done, 2 bad input, 3 training failed, 130 interrupted. Under torchrun, errors every rank hits alike
are printed by rank 0 only.

Sweeps that train several runs at once start it as ``... worker --serve``: one process per slot of a device,
which trains the runs sent to it one after another (:func:`serve`), so that a sweep of short runs pays the
start of Python, torch and the GPU context once per slot, not once per run.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
from collections.abc import Sequence
from typing import IO, Any

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


def serve(requests: IO[str], replies: IO[str]) -> int:
    """Answer one JSON line on ``replies`` per request line on ``requests``, until they end.

    ``{"config": {...}}`` trains that config: ``{"code": 0}``, or the run's exit code and one-line error. A
    ``{"probe": {...}, "seconds": S}`` request builds that run's step (:class:`~reslab.engine.probe.Probe`),
    says ``{"ready": true}``, waits for a ``go`` line (so that probes on one device run side by side) and
    answers ``{"steps_per_s": ...}`` after about S seconds of steps. Anything printed while training goes to
    stderr: stdout carries the replies only. An error that is not reslab's (a bug, a broken GPU context)
    is answered, then the process ends (its caller starts a fresh one for the next run).
    """
    while line := requests.readline():  # readline, not iteration: a probe reads its "go" line too
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            with contextlib.redirect_stdout(sys.stderr):
                reply = _probe(request, requests, replies) if "probe" in request else _train(request)
        except KeyboardInterrupt:
            _reply(replies, {"code": 130, "error": "interrupted"})
            return 130
        except Exception as err:  # not reslab's: answered, then this process ends (see above)
            first = (str(err).strip().splitlines() or [""])[0]
            _reply(replies, {"code": 1, "error": f"{type(err).__name__}: {first}", "fatal": True})
            return 1
        finally:
            _release_memory()
        _reply(replies, reply)
    return 0


def _train(request: dict[str, Any]) -> dict[str, Any]:
    try:
        train(TrainConfig.from_dict(request["config"], where="worker config", strict=True))
    except ReslabError as err:
        return {"code": err.exit_code, "error": str(err)}
    return {"code": 0}


def _probe(request: dict[str, Any], requests: IO[str], replies: IO[str]) -> dict[str, Any]:
    from reslab.engine.probe import Probe

    cfg = TrainConfig.from_dict(request["probe"], where="worker probe", strict=True)
    with Probe(cfg) as probe:
        probe.warm()
        _reply(replies, {"ready": True})
        if requests.readline().strip() != "go":
            return {"code": 1, "error": "probe: expected 'go'"}
        return {"code": 0, "steps_per_s": probe.steps_for(float(request.get("seconds", 2.0)))}


def _reply(replies: IO[str], reply: dict[str, Any]) -> None:
    replies.write(json.dumps(reply) + "\n")
    replies.flush()


def _release_memory() -> None:
    """Between runs: what the last run held goes back (on a GPU, to the other processes sharing it)."""
    gc.collect()
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--serve"]:
        return serve(sys.stdin, sys.stdout)
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
