"""The engine's SGD: torch's update rule exactly, on channels_last tensors read in memory order."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from reslab.engine.sgd import DenseSGD, make_sgd, memory_order

KW = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


def test_memory_order_views_the_storage_in_order() -> None:
    t = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    cl = t.to(memory_format=torch.channels_last)
    flat = memory_order(cl)
    assert flat is not None and flat.data_ptr() == cl.data_ptr()  # a view, not a copy
    assert torch.equal(flat, t.permute(0, 2, 3, 1).reshape(-1))  # NHWC order
    assert memory_order(t) is not None and torch.equal(memory_order(t), t.reshape(-1))
    assert memory_order(torch.randn(4, 6)[:, ::2]) is None  # not dense: no view
    assert memory_order(torch.randn(4, 6).t()) is not None  # a transpose is dense


def _model(channels_last: bool) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 4, 1),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
    )
    return m.to(memory_format=torch.channels_last) if channels_last else m


def _count_fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[torch.optim.SGD]:
    """Records the optimizer each time torch's own SGD.step runs (for DenseSGD: a fallback)."""
    calls: list[torch.optim.SGD] = []
    own = torch.optim.SGD.step

    def counted(self: torch.optim.SGD, closure: object = None) -> object:
        calls.append(self)
        return own(self, closure)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.optim.SGD, "step", counted)
    return calls


def _train(m: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(4, 3, 8, 8, generator=g).to(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        m(x).square().mean().backward()
        opt.step()


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_dense_sgd_is_torch_sgd_on_channels_last_weights(
    momentum: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    kw = {**KW, "momentum": momentum, "nesterov": momentum > 0}
    ref, ours = _model(True), _model(True)
    opt_ref = torch.optim.SGD(ref.parameters(), **kw)  # torch's per-parameter loop, the reference
    opt = make_sgd(ours.parameters(), **kw)
    assert isinstance(opt, DenseSGD)
    _train(ref, opt_ref, 5)
    fallbacks = _count_fallbacks(monkeypatch)
    _train(ours, opt, 5)
    assert fallbacks == []  # every step took DenseSGD's own path
    for a, b in zip(ref.parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert a.stride() == b.stride()  # the update left the layout alone
    if momentum:
        for p in ours.parameters():
            buf = opt.state[p]["momentum_buffer"]
            assert buf.shape == p.shape and buf.stride() == p.stride()
            torch.testing.assert_close(
                buf,
                opt_ref.state[dict(zip(ours.parameters(), ref.parameters()))[p]]["momentum_buffer"],
                rtol=1e-5,
                atol=1e-6,
            )


def _saved(state: dict) -> dict:
    """Through a checkpoint file's bytes (load_state_dict alone would share the buffers)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_checkpoints_move_between_dense_sgd_and_torch_sgd() -> None:
    a, b = _model(True), _model(True)
    opt_a = make_sgd(a.parameters(), **KW)
    _train(a, opt_a, 2)
    b.load_state_dict(_saved(a.state_dict()))
    opt_b = torch.optim.SGD(b.parameters(), **KW)
    opt_b.load_state_dict(_saved(opt_a.state_dict()))  # our state into torch's
    _train(a, opt_a, 3)
    _train(b, opt_b, 3)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    opt_c = make_sgd(a.parameters(), **KW)
    opt_c.load_state_dict(_saved(opt_b.state_dict()))  # and torch's into ours
    _train(a, opt_c, 1)
    _train(b, opt_b, 1)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def _close(a: nn.Module, b: nn.Module) -> None:
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kw",
    [
        dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=1e-3),  # dampening: the first step differs
        dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True),
    ],
)
def test_other_settings_follow_torch(kw: dict) -> None:
    ref, ours = _model(True), _model(True)
    _train(ref, torch.optim.SGD(ref.parameters(), foreach=False, **kw), 4)
    _train(ours, DenseSGD(ours.parameters(), fused=True, **kw), 4)
    _close(ref, ours)


def test_gradients_and_buffers_laid_out_unlike_the_parameters_are_still_paired_right() -> None:
    # A run trained NCHW and resumed with channels_last: its momentum buffers are contiguous while the weights
    # are channels_last. torch's fused CPU kernel pairs elements by memory position, so they must be re-laid.
    ref, ours = _model(True), _model(True)
    opt_ref = torch.optim.SGD(ref.parameters(), foreach=False, **KW)
    opt = make_sgd(ours.parameters(), **KW)
    _train(ref, opt_ref, 2)
    _train(ours, opt, 2)
    for o in (opt_ref, opt):
        for state in o.state.values():
            state["momentum_buffer"] = state["momentum_buffer"].contiguous()
    x = torch.randn(4, 3, 8, 8)
    for m, o in ((ref, opt_ref), (ours, opt)):
        o.zero_grad(set_to_none=True)
        m(x).square().mean().backward()
        for p in m.parameters():
            p.grad = p.grad.contiguous()  # a gradient strided unlike its parameter too
        o.step()
    _close(ref, ours)
    w = ours[0].weight
    assert not w.is_contiguous() and opt.state[w]["momentum_buffer"].stride() == w.stride()  # re-laid once


def test_missing_gradients_late_buffers_and_other_layouts(monkeypatch: pytest.MonkeyPatch) -> None:
    def build() -> nn.Module:
        m = _model(True)
        m[-1].weight = nn.Parameter(m[-1].weight.detach().t().contiguous().t())  # transposed: another layout
        return m

    ref, ours = build(), build()
    head = [ours[-1].bias]
    body = [p for p in ours.parameters() if all(p is not h for h in head)]
    opt_ref = torch.optim.SGD(
        [{"params": [p for p in ref.parameters() if p is not ref[-1].bias]}, {"params": [ref[-1].bias]}],
        foreach=False,
        **KW,
    )
    opt = make_sgd([{"params": body}, {"params": head, "lr_scale": 0.5}], **KW)
    fallbacks = _count_fallbacks(monkeypatch)
    x = torch.randn(4, 3, 8, 8)
    for step in range(4):
        for m, o in ((ref, opt_ref), (ours, opt)):
            o.zero_grad(set_to_none=True)
            m(x).square().mean().backward()
            if step < 2:  # the first conv's bias gets no gradient at first: its buffer starts late
                m[0].bias.grad = None
            o.step()
        _close(ref, ours)
    assert not any(o is opt for o in fallbacks)  # none of it needed torch's own step
