"""reslab.analysis: recorded shapes, the vanishing-gradient property, the identity property, the landscape."""

from __future__ import annotations

import math

import pytest
import torch

from reslab.analysis import (
    branch_relative_norm,
    filter_normalized_direction,
    gradient_profile,
    gradient_snapshot,
    is_identity_block,
    loss_landscape,
    response_profile,
    zero_branch,
)
from reslab.analysis.gradient_flow import verdict, weight_layers
from reslab.analysis.loss_surface import mean_loss
from reslab.models import BasicBlock, Bottleneck, PreActBasicBlock, ResidualDenseBlock, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp(name: str, depth_seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(depth_seed)
    model = build_model(name, input_shape=(16,), width=32)
    return model


def _data(n: int = 16, features: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, features, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_gradient_snapshot_has_one_entry_per_layer_in_depth_order():
    model = build_model("resnet8", input_shape=(1, 8, 8))
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    snap = gradient_snapshot(model, x, y)
    names = [n for n, _ in weight_layers(model)]
    assert names[0] == "conv1.weight" and names[-1] == "fc.weight"
    assert len(names) == 8  # resnet8: stem + 3 blocks x 2 convs + fc, the paper's depth count
    assert snap.weight_names == names
    assert len(snap.weight_grad_norms) == 8 and len(snap.block_grad_norms) == 3
    assert all(v > 0 and math.isfinite(v) for v in snap.weight_grad_norms + snap.block_grad_norms)
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind


def test_shortcut_projections_are_not_depth_layers():
    model = build_model("resnet8", input_shape=(1, 8, 8), shortcut="B")
    assert len(weight_layers(model)) == 8


def test_plain_mlp_gradients_vanish_and_residual_do_not():
    """The lecture's picture on a small instance: depth 40, width 32, 16 samples, no normalisation."""
    x, y = _data()
    ratios = {}
    for name in ("plainmlp40", "resmlp40"):
        p = gradient_profile(_mlp(name), x, y, steps=2, batch_size=16, lr=0.01, residual=name[0] == "r")
        assert [s.step for s in p.snapshots] == [0, 2]
        assert len(p.snapshots[0].weight_grad_norms) == 2 * 40 + 2  # fc_in, 40 blocks x 2, fc
        assert len(p.snapshots[0].block_grad_norms) == 40
        ratios[name] = p.snapshots[0].ratio
    assert ratios["plainmlp40"] < 1e-6  # orders of magnitude: the first layer barely learns
    assert 1e-2 < ratios["resmlp40"] < 1e2
    assert verdict(ratios["plainmlp40"]) == "vanishing" and verdict(ratios["resmlp40"]) == "healthy"


def test_gradient_profile_leaves_the_model_untouched():
    model = _mlp("resmlp3")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gradient_profile(model, *_data(), steps=3, batch_size=8)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_gradient_profile_records_each_step_and_follows_the_recipe():
    """Each step's loss and global gradient norm are recorded; a clip bounds the steps (a clip of 1e-9 leaves
    the weights where they were), the warm-up ramps the lr, and without either the loss falls."""
    x, y = _data(64)
    free = gradient_profile(_mlp("resmlp3"), x, y, steps=8, batch_size=16, lr=0.05)
    clipped = gradient_profile(_mlp("resmlp3"), x, y, steps=8, batch_size=16, lr=0.05, grad_clip=1e-9)
    for p in (free, clipped):
        assert len(p.losses) == len(p.grad_norms) == 8 and all(n > 0 for n in p.grad_norms)
    assert free.losses[0] == clipped.losses[0]  # the same first batch, before any update
    start, after = clipped.snapshots
    assert after.loss == pytest.approx(start.loss, rel=1e-6)
    assert free.snapshots[1].loss < free.snapshots[0].loss
    warm = gradient_profile(_mlp("resmlp3"), x, y, steps=8, batch_size=16, lr=0.05, warmup_steps=1000)
    assert abs(warm.snapshots[1].loss - start.loss) < abs(free.snapshots[1].loss - start.loss)


def test_verdict_thresholds():
    assert verdict(1e-3) == "vanishing" and verdict(1e3) == "exploding" and verdict(0.5) == "healthy"
    assert verdict(float("nan")) == "undefined"


@pytest.mark.parametrize(
    "make",
    [
        lambda r: BasicBlock(8, 8, residual=r),
        lambda r: Bottleneck(16, 4, residual=r),
        lambda r: ResidualDenseBlock(8, residual=r, norm="batch"),
        lambda r: ResidualDenseBlock(8, residual=r),
        lambda r: PreActBasicBlock(8, 8, residual=r),
    ],
    ids=["basic", "bottleneck", "dense-bn", "dense", "preact"],
)
def test_zeroed_residual_block_is_exactly_identity_and_plain_block_is_not(make):
    torch.manual_seed(0)
    shape = (3, 8) if isinstance(make(True), ResidualDenseBlock) else (3, make(True).conv1.in_channels, 6, 6)
    x = torch.rand(shape) + 0.01  # non-negative, as the output of the previous block's ReLU
    res, plain = zero_branch(make(True)).eval(), zero_branch(make(False)).eval()
    assert is_identity_block(res, x)
    assert branch_relative_norm(res, x) == 0.0
    assert not is_identity_block(plain, x)
    assert not is_identity_block(make(True).eval(), x)  # an untouched branch is not zero


def test_zero_init_last_bn_gamma_makes_the_identity():
    """The issue's wording: only the last BN's gamma zeroed (beta is 0 at init), eval mode."""
    torch.manual_seed(0)
    res, plain = BasicBlock(8, 8), BasicBlock(8, 8, residual=False)
    res.zero_init_last()
    torch.nn.init.zeros_(plain.bn2.weight)
    x = torch.rand(2, 8, 5, 5)
    assert is_identity_block(res.eval(), x)
    assert not is_identity_block(plain.eval(), x)


def test_responses_have_one_entry_per_block_and_restore_bn_statistics():
    model = build_model("plain8", input_shape=(1, 8, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    p = response_profile(
        model,
        torch.randn(10, 1, 8, 8),
        label="p",
        model_name="plain8",
        residual=False,
        trained=False,
        batch_size=4,
    )
    assert len(p.stds) == len(p.rel_norms) == 3
    assert all(s > 0 for s in p.stds)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_filter_normalised_direction_matches_each_filter_norm_and_skips_1d():
    w = [torch.randn(4, 3, 3, 3), torch.randn(5), torch.randn(6, 7)]
    d = filter_normalized_direction(w, torch.Generator().manual_seed(0))
    assert torch.allclose(d[0].flatten(1).norm(dim=1), w[0].flatten(1).norm(dim=1), rtol=1e-5)
    assert torch.count_nonzero(d[1]) == 0
    assert torch.allclose(d[2].norm(dim=1), w[2].norm(dim=1), rtol=1e-5)


def test_landscape_3x3_center_is_the_loss_at_w0_and_weights_are_restored():
    torch.manual_seed(0)
    model = build_model("resnet8", input_shape=(1, 8, 8)).eval()
    x, y = torch.randn(12, 1, 8, 8), torch.randint(0, 10, (12,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    land = loss_landscape(model, x, y, grid=3, span=0.5, batch_size=5, progress=calls.append)
    assert len(land.coords) == 3 and len(land.losses) == 3 and all(len(r) == 3 for r in land.losses)
    assert land.coords[1] == 0.0 and len(calls) == 9
    w0_loss = mean_loss(model, [(x[:5], y[:5]), (x[5:10], y[5:10]), (x[10:], y[10:])])
    assert land.losses[1][1] == pytest.approx(w0_loss, rel=1e-6) == land.center_loss
    assert land.slice_1d == land.losses[1]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # bit-exact restore
    assert max(map(max, land.losses)) > land.center_loss  # the directions do move the weights
