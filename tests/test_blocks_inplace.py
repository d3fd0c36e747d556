"""In-place ReLU in the blocks: same numbers as out of place, and a hook's saved F(x) is never overwritten."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reslab.models import build_model
from reslab.models.blocks import BasicBlock, Bottleneck


def _out_of_place(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model


@pytest.mark.parametrize("name,size", [("resnet20", 16), ("resnet18", 32), ("resnet50", 32)])
def test_in_place_relu_gives_the_same_outputs_and_gradients(name: str, size: int) -> None:
    classes = 10 if name == "resnet20" else 5
    torch.manual_seed(0)
    a = build_model(name, num_classes=classes)
    b = _out_of_place(build_model(name, num_classes=classes))
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(2, 3, size, size), torch.tensor([0, 1])
    for m in (a, b):
        nn.functional.cross_entropy(m(x), y).backward()
    assert torch.equal(a(x), b(x))
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), n


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("cls", [BasicBlock, Bottleneck])
def test_a_saved_branch_output_is_not_overwritten(cls: type[nn.Module], residual: bool) -> None:
    torch.manual_seed(0)
    block = cls(16, 16 // cls.expansion, residual=residual)  # type: ignore[call-arg]
    seen: list[torch.Tensor] = []
    block.branch_out.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    x = torch.randn(2, 16, 8, 8)
    saved_copy = []
    block.branch_out.register_forward_hook(lambda _m, _i, out: saved_copy.append(out.detach().clone()))
    out = block(x)
    assert (seen[0] < 0).any()  # F(x) has negative values a ReLU in place would have zeroed
    assert torch.equal(seen[0], saved_copy[0])
    assert torch.equal(out, torch.relu(saved_copy[0] + (x if residual else 0)))
