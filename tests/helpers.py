"""What several test files import: the tiny training config, the CLI's exit code, the fuzzing settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

from reslab.engine import TrainConfig

# At least 200 generated inputs per fuzz test, reproducible on every run and machine.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same inputs on every run and every machine
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def tiny(out: Path, **overrides: object) -> TrainConfig:
    """resnet8 on 512 synthetic 1x12x12 images: 8 steps per epoch of 64, 12 steps, a checkpoint every 4."""
    base: dict = dict(
        model="resnet8", dataset="synthetic:1x12x12", iterations=12, epochs=None, batch_size=64,
        eval_every=4, warmup_epochs=0.5, precision="fp32", device="cpu", progress="off", num_threads=1,
        out=str(out),
    )  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)


def exit_code(argv: list[str]) -> int:
    """``reslab ARGV``'s exit code: main()'s return value, or argparse's SystemExit for a flag it rejects."""
    from reslab.cli import main

    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def one_line_error(capsys: Any) -> str:
    """The error the last command printed, checked to be exactly one line starting with ``reslab``."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("reslab") and len(err.splitlines()) == 1, err
    return err
