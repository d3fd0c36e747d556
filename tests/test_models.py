"""reslab.models: the block equations, exact parameter counts, torchvision keys and every registered model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from reslab.errors import ConfigError
from reslab.models import (
    BasicBlock,
    Bottleneck,
    ModelSpec,
    PadShortcut,
    PreActBasicBlock,
    PreActBottleneck,
    ResidualDenseBlock,
    ResidualMLP,
    build_model,
    cifar_resnet,
    count_parameters,
    list_models,
    model_info,
    register_model,
)
from reslab.models.registry import _REGISTRY, parameter_count

# He et al. 2015, section 4.2 (option A, 3 input channels, 10 classes); shared/REFERENCE.md.
CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
# torchvision's counts (option B, 1000 classes).
IMAGENET_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors on a shared 2-core machine: one thread avoids OpenMP contention (10-100x faster here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- the lecture's dense block -------------------------------------------------------------------


def _hand_block(residual: bool) -> ResidualDenseBlock:
    block = ResidualDenseBlock(2, residual=residual)
    with torch.no_grad():
        block.fc1.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.0]]))
        block.fc1.bias.copy_(torch.tensor([0.0, 1.0]))
        block.fc2.weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, 0.0]]))
        block.fc2.bias.copy_(torch.tensor([-1.0, 0.0]))
    return block


def test_dense_block_matches_hand_computation() -> None:
    # x = [1, 2]: z1 = [1-2+0, 2+0+1] = [-1, 3], a1 = [0, 3], z2 = [0+3-1, 0+0+0] = [2, 0]
    #   residual: relu(z2 + x) = relu([3, 2]) = [3, 2];  plain: relu(z2) = [2, 0]
    # x = [-3, 1]: z1 = [-4, -5], a1 = [0, 0], z2 = [-1, 0]
    #   residual: relu([-4, 1]) = [0, 1];                plain: relu([-1, 0]) = [0, 0]
    x = torch.tensor([[1.0, 2.0], [-3.0, 1.0]])
    torch.testing.assert_close(_hand_block(True)(x), torch.tensor([[3.0, 2.0], [0.0, 1.0]]))
    torch.testing.assert_close(_hand_block(False)(x), torch.tensor([[2.0, 0.0], [0.0, 0.0]]))


def test_residual_mlp_shapes_and_norm() -> None:
    mlp = ResidualMLP(3, width=8, in_features=12, num_classes=5, norm="batch")
    x = torch.randn(4, 3, 2, 2)  # flattened to 12 features
    assert mlp(x).shape == (4, 5)
    assert mlp.forward_features(x).shape == (4, 8)
    assert len(list(mlp.blocks())) == 3
    assert isinstance(mlp.layer1[0].bn1, nn.BatchNorm1d)
    plain = ResidualMLP(3, width=8, in_features=12, num_classes=5, residual=False)
    assert not any(b.residual for b in plain.blocks())


# ---- a zero branch makes a residual block the identity -------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda r: BasicBlock(8, 8, residual=r),
        lambda r: Bottleneck(32, 8, residual=r),
        lambda r: PreActBasicBlock(8, 8, residual=r),
        lambda r: PreActBottleneck(32, 8, residual=r),
        lambda r: ResidualDenseBlock(8, residual=r),
        lambda r: ResidualDenseBlock(8, residual=r, norm="batch"),
    ],
)
def test_zero_branch_residual_block_is_identity(make) -> None:
    torch.manual_seed(0)
    residual, plain = make(True), make(False)
    plain.load_state_dict(residual.state_dict())  # identical shapes: same branch layers
    for block in (residual, plain):
        block.zero_init_last()
        block.eval()
    shape = (3, 8) if isinstance(residual, ResidualDenseBlock) else (3, residual.conv1.in_channels, 5, 5)
    x = torch.rand(shape)  # non-negative, as the output of a ReLU
    with torch.no_grad():
        assert torch.equal(residual(x), x)
        assert not torch.allclose(plain(x), x)


def test_branch_out_hook_sees_branch_before_addition() -> None:
    model = build_model("resnet20")
    model.eval()
    seen: list[torch.Tensor] = []
    for block in model.blocks():
        block.branch_out.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
        block = model.layer1[0]
        inp = model.relu(model.bn1(model.conv1(x)))
        branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(inp)))))
    assert len(seen) == 9
    torch.testing.assert_close(seen[0], branch)
    assert (seen[0] < 0).any()  # before the final ReLU


# ---- shortcuts and plain twins -------------------------------------------------------------------


def test_shortcut_a_has_no_parameters_and_pads() -> None:
    pad = PadShortcut(16, 32, 2)
    assert count_parameters(pad) == 0 and len(pad.state_dict()) == 0
    x = torch.randn(1, 16, 7, 7)
    y = pad(x)
    assert y.shape == (1, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()
    a, b = BasicBlock(16, 32, 2, shortcut="A"), BasicBlock(16, 32, 2, shortcut="B")
    assert count_parameters(a) == count_parameters(BasicBlock(16, 32, 2, residual=False))
    assert count_parameters(b) - count_parameters(a) == 16 * 32 + 2 * 32
    assert count_parameters(BasicBlock(16, 16, shortcut="C")) > count_parameters(BasicBlock(16, 16))


def test_plain_twin_differs_only_by_the_addition() -> None:
    torch.manual_seed(0)
    res, plain = build_model("resnet20"), build_model("plain20")
    assert list(res.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(res.state_dict(), strict=True)
    assert all(b.downsample is None and not b.residual for b in plain.blocks())
    x = torch.randn(2, 3, 32, 32)
    res.eval(), plain.eval()
    with torch.no_grad():
        assert not torch.allclose(res(x), plain(x))
        for b in res.blocks():
            b.residual = False  # the one difference
        torch.testing.assert_close(res(x), plain(x))


# ---- exact parameter counts ----------------------------------------------------------------------


@pytest.mark.parametrize("depth", list(CIFAR_PARAMS))
def test_cifar_parameter_counts(depth: int) -> None:
    expected = CIFAR_PARAMS[depth]
    for name in (f"resnet{depth}", f"plain{depth}"):
        assert parameter_count(name) == expected
        if depth < 1000:  # the built 1202-layer nets are counted in test_every_registered_model_forward
            assert count_parameters(build_model(name, device="meta")) == expected
    option_b = build_model(f"resnet{depth}", shortcut="B", device="meta")
    assert count_parameters(option_b) == expected + 2_752


@pytest.mark.parametrize("depth", list(IMAGENET_PARAMS))
def test_imagenet_parameter_counts(depth: int) -> None:
    assert count_parameters(build_model(f"resnet{depth}", device="meta")) == IMAGENET_PARAMS[depth]
    v1 = build_model(f"resnet{depth}", device="meta", stride_in_1x1=depth >= 50 or None)
    assert count_parameters(v1) == IMAGENET_PARAMS[depth]


def test_preact_parameter_counts() -> None:
    # He et al. 2016 quote 10.2M for ResNet-1001 (1.7M for 164): that is the count without BN's scale and
    # shift; with them (as the nets are built) it is 10,327,706.
    for name, exact, quoted in (
        ("preact_resnet164", 1_703_258, 1.7),
        ("preact_resnet1001", 10_327_706, 10.2),
    ):
        model = build_model(name, device="meta")
        assert count_parameters(model) == exact
        bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
        assert round((exact - bn) / 1e6, 1) == quoted


# ---- torchvision compatibility -------------------------------------------------------------------


def _torchvision_keys(block: str, layers: tuple[int, ...]) -> list[str]:
    """state_dict keys of torchvision.models.resnet, in order, written out from its resnet.py."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight", *(f"bn1.{k}" for k in bn)]
    convs = 2 if block == "basic" else 3
    for stage, n in enumerate(layers, start=1):
        for j in range(n):
            p = f"layer{stage}.{j}"
            for c in range(1, convs + 1):
                keys += [f"{p}.conv{c}.weight", *(f"{p}.bn{c}.{k}" for k in bn)]
            if j == 0 and (stage > 1 or block == "bottleneck"):
                keys += [f"{p}.downsample.0.weight", *(f"{p}.downsample.1.{k}" for k in bn)]
    return [*keys, "fc.weight", "fc.bias"]


@pytest.mark.parametrize(("name", "block", "layers", "n_keys"), [
    ("resnet18", "basic", (2, 2, 2, 2), 122),
    ("resnet50", "bottleneck", (3, 4, 6, 3), 320),
])  # fmt: skip
def test_state_dict_keys_equal_torchvision(
    name: str, block: str, layers: tuple[int, ...], n_keys: int
) -> None:
    sd = build_model(name, device="meta").state_dict()
    expected = _torchvision_keys(block, layers)
    assert len(expected) == n_keys
    assert list(sd) == expected
    for key in (
        "layer2.0.downsample.0.weight",
        "fc.bias",
        "bn1.num_batches_tracked",
        "layer4.1.bn2.running_var",
    ):
        assert key in sd
    if name == "resnet50":
        assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
        assert sd["layer4.2.bn3.running_var"].shape == (2048,)
        assert sd["fc.weight"].shape == (1000, 2048)
    v1 = build_model(name, device="meta", stride_in_1x1=True if block == "bottleneck" else None)
    assert list(v1.state_dict()) == expected


def test_stride_placement_v1_and_v15() -> None:
    v15 = build_model("resnet50", device="meta")
    v1 = build_model("resnet50", device="meta", stride_in_1x1=True)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)


# ---- initialisation, checkpointing ---------------------------------------------------------------


def test_zero_init_residual_only_touches_residual_branches() -> None:
    res = build_model("resnet20", zero_init_residual=True)
    assert all(not b.bn2.weight.any() for b in res.blocks())
    assert all(b.bn1.weight.eq(1).all() for b in res.blocks())
    plain = build_model("plain20", zero_init_residual=True)  # would cut the only path: ignored
    assert all(b.bn2.weight.eq(1).all() for b in plain.blocks())
    pre = build_model("preact_resnet164", zero_init_residual=True, device="meta")
    assert pre.layer1[0].conv3.weight.shape == (64, 16, 1, 1)


def test_activation_checkpointing_gives_same_step() -> None:
    torch.manual_seed(0)
    plain_run = cifar_resnet(8)
    ckpt_run = copy.deepcopy(plain_run)
    ckpt_run.activation_checkpointing = True
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    for model in (plain_run, ckpt_run):
        model.train()
        nn.functional.cross_entropy(model(x), y).backward()
    for (name, a), b in zip(plain_run.named_parameters(), ckpt_run.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    for (name, a), b in zip(plain_run.named_buffers(), ckpt_run.buffers()):
        torch.testing.assert_close(a, b, msg=name)  # BN running stats counted once, not twice


# ---- the registry --------------------------------------------------------------------------------


def test_registry_names_and_twins() -> None:
    names = list_models()
    for d in (20, 32, 44, 56, 110, 1202, 18, 34, 50, 101, 152):
        assert f"resnet{d}" in names and f"plain{d}" in names
    for d in (164, 1001):
        assert f"preact_resnet{d}" in names and f"preact_plain{d}" in names
    for d in (4, 8, 16, 32, 64):
        assert f"resmlp{d}" in names and f"plainmlp{d}" in names
    assert model_info("resnet50").family == "imagenet" and model_info("cifar_resnet50").family == "cifar"
    assert model_info("plain26") == ModelSpec("cifar", 26, residual=False)
    assert model_info("preact_resnet47").depth == 47 and model_info("resmlp3").family == "mlp"
    assert len(list(build_model("resnet8", device="meta").blocks())) == 3


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ConfigError, match="resnet56"):
        build_model("resnet65x")
    with pytest.raises(ConfigError, match="reslab models"):
        build_model("nosuchnet")


@pytest.mark.parametrize(
    ("name", "needle"), [("resnet21", "6n+2"), ("preact_resnet100", "9n+2"), ("plain7", "20, 32")]
)
def test_impossible_depth_says_valid_depths(name: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("+", r"\+")):
        build_model(name)


def test_build_model_argument_errors() -> None:
    with pytest.raises(ConfigError, match="unknown option 'drop_path'; did you mean 'dropout'"):
        build_model("resnet20", drop_path=0.5)
    with pytest.raises(ConfigError, match="widen must be a number"):
        build_model("resnet20", widen="wide")
    with pytest.raises(ConfigError, match="MLP"):
        build_model("resnet20", norm="batch")
    with pytest.raises(ConfigError, match="shortcut"):
        build_model("resnet20", shortcut="D")
    with pytest.raises(ConfigError, match="in_features"):
        build_model("resmlp4", in_channels=3)
    with pytest.raises(ConfigError, match="bottleneck"):
        build_model("resnet18", stride_in_1x1=True)
    assert build_model("resmlp4", input_shape=(3, 8, 8)).fc_in.in_features == 192
    assert build_model("resnet20", input_shape=(1, 28, 28), device="meta").conv1.in_channels == 1


def test_register_model_one_line() -> None:
    try:
        register_model("resnet20_b", ModelSpec("cifar", 20, shortcut="B"))
        assert "resnet20_b" in list_models()
        assert count_parameters(build_model("resnet20_b", device="meta")) == CIFAR_PARAMS[20] + 2_752
        with pytest.raises(ConfigError, match="already registered"):
            register_model("resnet20_b", ModelSpec("cifar", 20))
        with pytest.raises(ConfigError, match="6n\\+2"):
            register_model("resnet21_x", ModelSpec("cifar", 21))
    finally:
        _REGISTRY.pop("resnet20_b", None)


# ---- every registered model runs -----------------------------------------------------------------


def _small_input(name: str) -> torch.Tensor:
    spec = model_info(name)
    if spec.family == "mlp":
        return torch.randn(2, 1, 28, 28)
    if spec.family == "imagenet":
        return torch.randn(2, 3, 32, 32)  # (2, 512|2048, 1, 1) after layer4: BN in train mode needs 2 samples
    if spec.family == "wrn":
        return torch.randn(2, 3, 16, 16)  # WRN-28-10 has 36.5M parameters: keep the forward small
    return torch.randn(1, 3, 16, 16) if spec.depth >= 1000 else torch.randn(2, 3, 32, 32)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_forward(name: str) -> None:
    torch.manual_seed(0)
    spec = model_info(name)
    model = build_model(name)
    assert count_parameters(model) == parameter_count(name)
    if spec.family == "cifar" or (spec.family == "imagenet" and spec.residual):
        exact = CIFAR_PARAMS if spec.family == "cifar" else IMAGENET_PARAMS
        assert count_parameters(model) == exact[spec.depth]
    # Train mode: BN normalises with batch statistics. In eval mode a fresh 1202-layer net overflows, since
    # its running statistics are still (0, 1) and each residual addition doubles the variance.
    model.train()
    x = _small_input(name)
    with torch.no_grad():
        feats = model.forward_features(x)  # (B, F)
        out = model.fc(feats)  # (B, K)
    assert feats.shape == (x.shape[0], model.fc.in_features)
    assert out.shape == (x.shape[0], spec.default_num_classes) and torch.isfinite(out).all()
    n_blocks = len(list(model.blocks()))
    expected_blocks = {
        "mlp": spec.depth,
        "cifar": (spec.depth - 2) // 2,
        "cifar_preact": (spec.depth - 2) // 3,
        "wrn": (spec.depth - 4) // 2,
    }
    if spec.family in expected_blocks:
        assert n_blocks == expected_blocks[spec.family]
    assert sum(len(s) for s in model.stages) == n_blocks
    assert all(hasattr(b, "branch_out") and b.residual == spec.residual for b in model.blocks())


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 224, 224)])
@pytest.mark.parametrize("name", ["resnet8", "resnet18", "resmlp4"])
def test_models_work_on_small_and_imagenet_inputs(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(name, num_classes=5, input_shape=shape)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, *shape))
    assert out.shape == (1, 5)
