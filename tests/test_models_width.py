"""The width multiplier k of the CIFAR family and the Wide ResNets (Zagoruyko & Komodakis 2016).

Every count is checked three ways: a hand formula written here (independent of the library's), the
library's formula (``parameter_count``) and the built model.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reslab.errors import ConfigError
from reslab.models import (
    ModelSpec,
    PadShortcut,
    PreActBasicBlock,
    WideResNet,
    build_model,
    count_parameters,
    list_models,
    model_info,
    register_model,
    widened,
)
from reslab.models.registry import _REGISTRY, parameter_count

CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}  # shared/REFERENCE.md
# Published WRN counts (3 input channels, 10 classes): the exact figures of public implementations with
# this architecture (osmr/imgclsmob's CIFAR-10 table) and the paper's rounding (Zagoruyko & Komodakis 2016).
WRN_PUBLISHED = {
    (28, 10): (36_479_194, 36.5),
    (16, 8): (None, 11.0),
    (40, 4): (None, 8.9),
    (16, 4): (None, 2.7),
    (22, 8): (17_158_106, 17.2),
    (16, 10): (17_116_634, 17.1),
    (40, 8): (35_748_314, 35.7),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


def _hand_cifar(depth: int, k: float, classes: int = 10) -> int:
    """He et al. 2015 section 4.2 at width k, option A: 3x3 stem + BN, 3 stages of n basic blocks, fc."""
    n = (depth - 2) // 6
    a, b, c = (max(1, math.floor(w * k + 0.5)) for w in (16, 32, 64))  # round half up, at least 1
    block = lambda cin, w: 9 * cin * w + 2 * w + 9 * w * w + 2 * w  # noqa: E731 (conv-BN-conv-BN)
    stem = 3 * a * 9 + 2 * a
    stage1 = n * block(a, a)
    stage2 = block(a, b) + (n - 1) * block(b, b)  # option A: the first block's shortcut pads, no weights
    stage3 = block(b, c) + (n - 1) * block(c, c)
    return stem + stage1 + stage2 + stage3 + c * classes + classes


def _hand_wrn(depth: int, k: int, *, residual: bool = True) -> int:
    """WRN-d-k: 16-channel stem conv, n pre-activation blocks BN-ReLU-conv-BN-ReLU-conv per stage, a 1x1
    projection (no BN) where the channels change, final BN, fc (10 classes)."""
    n = (depth - 4) // 6
    total, cin = 3 * 16 * 9, 16
    for w in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += 2 * cin + 9 * cin * w + 2 * w + 9 * w * w
            if residual and cin != w:  # the stride-2 blocks change channels too (k >= 1)
                total += cin * w
            cin = w
    return total + 2 * cin + cin * 10 + 10


# ---- the width multiplier of the CIFAR family ----------------------------------------------------


def test_widened_rounds_half_up_and_keeps_order() -> None:
    assert [widened(c, 0.25) for c in (16, 32, 64)] == [4, 8, 16]
    assert [widened(c, 0.1) for c in (16, 32, 64)] == [2, 3, 6]  # 1.6, 3.2, 6.4
    assert widened(16, 2.5 / 16) == 3  # 2.5 rounds up, not to even
    assert widened(16, 0.01) == 1  # never 0 channels
    assert [widened(c, 10) for c in (16, 32, 64)] == [160, 320, 640]
    for k in (0.03, 0.07, 0.1, 0.17, 0.3, 0.33, 0.7, 1.3):
        a, b, c = (widened(w, k) for w in (16, 32, 64))
        assert a <= b <= c  # option A can only add channels


@pytest.mark.parametrize("k", [0.1, 0.25, 0.5, 1, 1.5, 2])
@pytest.mark.parametrize("depth", [8, 20, 56, 110])
def test_widened_cifar_parameter_counts(depth: int, k: float) -> None:
    expected = _hand_cifar(depth, k)
    if k == 1 and depth in CIFAR_PARAMS:
        assert expected == CIFAR_PARAMS[depth]  # the hand formula reproduces the paper's nets
    for name in (f"resnet{depth}", f"plain{depth}"):  # option A: the twins have the same count
        assert parameter_count(name, widen=k) == expected
        assert count_parameters(build_model(name, widen=k, device="meta")) == expected


def test_widened_preact_bottleneck_counts_agree() -> None:
    for name in ("preact_resnet47", "preact_plain164"):
        for k in (0.25, 0.5, 2):
            built = count_parameters(build_model(name, widen=k, device="meta"))
            assert built == parameter_count(name, widen=k)
    assert build_model("preact_resnet47", widen=0.5, device="meta").layer3[0].conv3.out_channels == 128


def test_narrow_net_layers_and_forward() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", widen=0.25, input_shape=(1, 28, 28))
    assert model.conv1.out_channels == model.bn1.num_features == 4  # the stem shrinks with the stages
    assert [s[0].conv1.out_channels for s in model.stages] == [4, 8, 16]
    assert isinstance(model.layer2[0].downsample, PadShortcut) and model.layer2[0].downsample.extra == 4
    assert model.fc.in_features == 16
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    odd = build_model("plain8", widen=0.1, device="meta")  # 2/3/6 channels
    assert [s[0].conv2.out_channels for s in odd.stages] == [2, 3, 6]


def test_widen_one_is_the_paper_net() -> None:
    torch.manual_seed(0)
    a = build_model("resnet20")
    torch.manual_seed(0)
    b = build_model("resnet20", widen=1.0)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize("bad", [0, -1, 0.0, float("nan"), float("inf"), True, "2", None])
def test_bad_widen_is_one_line(bad: object) -> None:
    if bad is None:  # None means "the spec's own"; a spec must hold a number
        with pytest.raises(ConfigError, match="widen must be a positive number"):
            register_model("resnet20_none", ModelSpec("cifar", 20, widen=bad))  # type: ignore[arg-type]
        return
    with pytest.raises(ConfigError, match=r"widen must be a (positive )?number") as err:
        build_model("resnet20", widen=bad, device="meta")  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "needle"),
    [("resnet18", "CIFAR families"), ("resmlp4", "width=units"), ("wrn28_10", "from its name")],
)
def test_widen_where_it_does_not_apply(name: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        build_model(name, widen=0.5, device="meta")


def test_register_narrow_variant_as_data() -> None:
    try:
        register_model("resnet110_q", ModelSpec("cifar", 110, widen=0.25))
        assert parameter_count("resnet110_q") == _hand_cifar(110, 0.25) == 109_726
        assert count_parameters(build_model("resnet110_q", device="meta")) == 109_726
    finally:
        _REGISTRY.pop("resnet110_q", None)


# ---- Wide ResNets --------------------------------------------------------------------------------


@pytest.mark.parametrize(("depth", "k"), list(WRN_PUBLISHED))
def test_wrn_parameter_counts_against_hand_count_and_paper(depth: int, k: int) -> None:
    exact, quoted = WRN_PUBLISHED[depth, k]
    name = f"wrn{depth}_{k}"
    expected = _hand_wrn(depth, k)
    assert parameter_count(name) == expected
    assert count_parameters(build_model(name, device="meta")) == expected
    assert round(expected / 1e6, 1) == quoted  # the paper's figure
    if exact is not None:
        assert expected == exact
    plain = f"wrn_plain{depth}_{k}"  # no shortcuts, so no projections
    assert parameter_count(plain) == count_parameters(build_model(plain, device="meta"))
    assert parameter_count(plain) == _hand_wrn(depth, k, residual=False)
    assert expected - parameter_count(plain) == 16 * 16 * k + 16 * k * 32 * k + 32 * k * 64 * k


def test_wrn28_10_is_36_5m_with_projections_where_the_shape_changes() -> None:
    model = build_model("wrn28_10", device="meta")
    assert count_parameters(model) == 36_479_194
    assert all(isinstance(b, PreActBasicBlock) for b in model.blocks())
    assert [len(s) for s in model.stages] == [4, 4, 4]
    assert model.conv1.out_channels == 16  # the stem is not widened (the paper's Table 1)
    firsts = [s[0].downsample for s in model.stages]
    assert [tuple(p[0].weight.shape) for p in firsts] == [(160, 16, 1, 1), (320, 160, 1, 1), (640, 320, 1, 1)]
    assert all(len(p) == 1 for p in firsts)  # 1x1 conv only: it reads the block's BN-ReLU'd input
    assert all(b.downsample is None for s in model.stages for b in list(s)[1:])
    assert isinstance(model.bn, nn.BatchNorm2d) and model.fc.in_features == 640


def test_wrn_registry_names_and_patterns() -> None:
    names = list_models()
    for d, k in ((16, 4), (40, 4), (16, 8), (28, 10)):
        assert f"wrn{d}_{k}" in names and f"wrn_plain{d}_{k}" in names
    assert model_info("wrn22_8") == ModelSpec("wrn", 22, widen=8.0)
    assert model_info("wrn_plain10_2") == ModelSpec("wrn", 10, residual=False, widen=2.0)
    small = build_model("wrn16_0.5", device="meta")
    assert [s[0].conv1.out_channels for s in small.stages] == [8, 16, 32]
    assert small.layer1[0].downsample is not None  # 16 -> 8 channels: a projection (option B)


def test_wrn_forward_train_and_eval() -> None:
    torch.manual_seed(0)
    model = build_model("wrn10_2", dropout=0.3, input_shape=(1, 28, 28))
    x = torch.randn(4, 1, 28, 28)
    assert model(x).shape == (4, 10)
    assert model.forward_features(x).shape == (4, 128)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))  # dropout is off in eval mode


def test_wrn_dropout_sits_between_the_two_convs() -> None:
    # F(x) = conv2(dropout(relu(bn2(conv1(relu(bn1(x))))))), shortcut = 1x1 conv of relu(bn1(x)).
    torch.manual_seed(0)
    block = PreActBasicBlock(4, 6, 2, shortcut="B", dropout=0.5)
    block.train()
    x = torch.randn(2, 4, 6, 6)
    torch.manual_seed(1)
    out = block(x)
    torch.manual_seed(1)  # dropout is the only random op: the same mask
    pre = torch.relu(block.bn1(x))
    mid = nn.functional.dropout(torch.relu(block.bn2(block.conv1(pre))), p=0.5, training=True)
    torch.testing.assert_close(out, block.conv2(mid) + block.downsample(pre))
    assert (mid == 0).any() and mid.max() > 0
    plain = PreActBasicBlock(4, 6, 2, residual=False, dropout=0.5)
    assert plain.downsample is None and isinstance(plain.dropout, nn.Dropout)
    assert isinstance(PreActBasicBlock(4, 4).dropout, nn.Identity)  # off by default: no module, no key


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: build_model("wrn27_10"), r"6n\+4"),
        (lambda: build_model("wrn4_1"), r"6n\+4"),
        (lambda: build_model("wrn28_0"), "widen must be a positive number"),
        (lambda: build_model("wrn16_4", dropout=1.0), r"\[0, 1\)"),
        (lambda: build_model("wrn16_4", dropout=-0.1), r"\[0, 1\)"),
        (lambda: build_model("resnet20", dropout=0.3), "Wide ResNets"),
        (lambda: build_model("wrn16_4", stride_in_1x1=True), "bottleneck"),
        (lambda: build_model("wrn16_4", norm="batch"), "MLPs"),
        (lambda: WideResNet(16, 0.5, shortcut="A"), "cannot shrink"),
    ],
)
def test_wrn_errors_are_one_line(call, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as err:
        call()
    assert "\n" not in str(err.value)
