"""Fixtures shared by the test files: one CPU thread for tiny tensors, and one tiny trained run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors: a second (shared) core only adds hand-off overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run directory, read-only for the tests: resnet8 on 12x12 synthetic images, 8 steps."""
    from helpers import tiny
    from reslab.engine import train

    out = tmp_path_factory.mktemp("shared") / "run"
    train(tiny(out, iterations=8))
    return out
