"""In-place ReLU in the blocks: same numbers as out of place, and a hook's saved F(x) is never overwritten
(by a ReLU or by the residual sum)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reslab.models import build_model
from reslab.models.blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck


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


def test_a_global_hook_also_keeps_the_sum_out_of_place() -> None:
    torch.manual_seed(0)
    block = BasicBlock(16, 16)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep(m: nn.Module, _i: object, out: torch.Tensor) -> None:
        if m is block.branch_out:
            seen.append((out, out.detach().clone()))

    handle = nn.modules.module.register_module_forward_hook(keep)
    try:
        block(torch.randn(2, 16, 8, 8))
    finally:
        handle.remove()
    held, copy = seen[0]
    assert torch.equal(held, copy)  # the tensor the hook holds is still F(x)


@pytest.mark.parametrize(
    "cls,layer",
    [(BasicBlock, "bn2"), (Bottleneck, "bn3"), (PreActBasicBlock, "conv2"), (PreActBottleneck, "conv3")],
)
def test_a_hook_on_the_layer_that_makes_f_x_keeps_its_tensor(cls: type[nn.Module], layer: str) -> None:
    torch.manual_seed(0)
    block = cls(16, 16 // cls.expansion)  # type: ignore[call-arg]
    held: list[tuple[torch.Tensor, torch.Tensor]] = []
    getattr(block, layer).register_forward_hook(lambda _m, _i, out: held.append((out, out.detach().clone())))
    block(torch.randn(2, 16, 8, 8))
    assert torch.equal(*held[0])


@pytest.mark.parametrize("where", ["branch_out", "bn2", "block", "global"])
@pytest.mark.parametrize("pre", [False, True])
def test_full_backward_hooks_still_work(where: str, pre: bool) -> None:
    # A full backward hook wraps a module's outputs in views that must not be modified in place. A global one
    # wraps every module's: the post-activation blocks' in-place ReLUs refuse that, as in torchvision, so the
    # global case uses a pre-activation block, whose sum is its last op.
    torch.manual_seed(0)
    block = PreActBasicBlock(16, 16) if where == "global" else BasicBlock(16, 16)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    calls: list[int] = []
    if where == "global":
        register = (
            nn.modules.module.register_module_full_backward_pre_hook
            if pre
            else (nn.modules.module.register_module_full_backward_hook)
        )
        handle = register(lambda *_a: calls.append(1))  # type: ignore[arg-type]
    else:
        m = block if where == "block" else getattr(block, where)
        register = m.register_full_backward_pre_hook if pre else m.register_full_backward_hook
        handle = register(lambda *_a: calls.append(1))  # type: ignore[arg-type]
    try:
        block(x).sum().backward()
    finally:
        handle.remove()
    assert calls and x.grad is not None


def test_fx_symbolic_trace_sees_the_sum_out_of_place() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(traced(x), model(x))
