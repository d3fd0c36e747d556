"""The finite check of the step: exact (no false alarm on large finite values), NaN/inf found anywhere."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reslab.engine.guards import all_finite, finite_all, grads_finite

BAD = (float("nan"), float("inf"), float("-inf"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("n", [1, 7, 16, 17, 33, 64, 1000])
def test_a_bad_value_is_found_at_every_position(dtype: torch.dtype, n: int) -> None:
    # n around the vector widths (8/16/32 lanes): the tail after the last full vector is checked too
    good = [torch.randn(5, dtype=dtype), torch.randn(n, dtype=dtype)]
    assert bool(finite_all(good))
    for bad in BAD:
        for i in range(n):
            t = good[1].clone()
            t[i] = bad
            assert not bool(finite_all([good[0], t])), (bad, i)


def test_large_finite_values_are_finite() -> None:
    # A 2-norm would overflow to inf here (3e38^2); the check must not stop a run that is still finite.
    big = torch.full((1000,), 3.0e38)
    assert bool(finite_all([big, -big, torch.tensor(torch.finfo(torch.float64).max, dtype=torch.float64)]))


def test_grads_finite_reads_only_gradients_that_exist() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    assert bool(grads_finite(model.parameters()))  # no gradients yet
    model(torch.randn(5, 3)).sum().backward()
    model[0].bias.grad = None
    assert bool(grads_finite(model.parameters()))
    model[1].weight.grad[1, 2] = float("-inf")
    assert not bool(grads_finite(model.parameters()))
    empty = nn.Parameter(torch.empty(0))
    empty.grad = torch.empty(0)
    assert bool(grads_finite([empty]))


def test_all_finite_checks_float_buffers_and_skips_integers() -> None:
    state = {"w": torch.ones(3), "running_var": torch.ones(3), "num_batches_tracked": torch.tensor(7)}
    assert all_finite(state) and all_finite({}) and all_finite({"n": torch.tensor(1)})
    state["running_var"][1] = float("inf")
    assert not all_finite(state)


@pytest.mark.parametrize("bad", BAD)
def test_a_bad_value_is_found_in_a_channels_last_tensor(bad: float) -> None:
    # the check reads channels_last tensors in memory order: every position still counts
    t = torch.randn(4, 3, 5, 5).to(memory_format=torch.channels_last)
    assert bool(finite_all([t])) and not t.is_contiguous()
    for idx in [(0, 0, 0, 0), (3, 2, 4, 4), (1, 2, 0, 3), (2, 0, 4, 1)]:
        u = t.clone()
        u[idx] = bad
        assert not bool(finite_all([u])), idx
    sliced = torch.randn(6, 8)[:, ::2].clone()  # a non-dense view is read as it is
    sliced_view = torch.randn(6, 8)[:, ::2]
    sliced_view[5, 3] = bad
    assert bool(finite_all([sliced])) and not bool(finite_all([sliced_view]))
