"""The dense nets at hundreds of blocks: the residual stream's growth and the options that bound it.

Each ``branch_scale`` gets its equation checked against a hand computation, its parameter count checked
three ways, and its effect on the stream of a 256-block net at init.
"""

from __future__ import annotations

import pytest
import torch

from reslab.errors import ConfigError
from reslab.models import ResidualDenseBlock, ResidualMLP, build_model, count_parameters
from reslab.models.registry import parameter_count


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


def _hand_block(**kwargs: object) -> ResidualDenseBlock:
    """The 2-unit block of test_models.py: z2 = [2, 0] for x = [1, 2] and z2 = [-1, 0] for x = [-3, 1]."""
    block = ResidualDenseBlock(2, **kwargs)  # type: ignore[arg-type]
    with torch.no_grad():
        block.fc1.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.0]]))
        block.fc1.bias.copy_(torch.tensor([0.0, 1.0]))
        block.fc2.weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, 0.0]]))
        block.fc2.bias.copy_(torch.tensor([-1.0, 0.0]))
    return block


X = torch.tensor([[1.0, 2.0], [-3.0, 1.0]])


def test_rezero_block_matches_hand_computation() -> None:
    block = _hand_block(branch_scale="rezero")
    assert block.alpha is not None and block.alpha.item() == 0.0 and block.alpha.requires_grad
    # alpha = 0: relu(0 * z2 + x) = relu(x) = [[1, 2], [0, 1]]: the identity on the (non-negative) stream
    torch.testing.assert_close(block(X), torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    with torch.no_grad():
        block.alpha.fill_(0.5)
    # alpha = 0.5: relu(0.5 * [2, 0] + [1, 2]) = [2, 2];  relu(0.5 * [-1, 0] + [-3, 1]) = [0, 1]
    torch.testing.assert_close(block(X), torch.tensor([[2.0, 2.0], [0.0, 1.0]]))
    # d out / d alpha = z2 where the ReLU passes: sum over the outputs = 2 + 0 + 0 (masked) + 0 = 2
    block(X).sum().backward()
    assert block.alpha.grad.item() == pytest.approx(2.0)


def test_sqrt_depth_block_matches_hand_computation() -> None:
    block = _hand_block(branch_scale="sqrt_depth", num_blocks=4)  # 1/sqrt(4) = 0.5, fixed
    # relu(0.5 * [2, 0] + [1, 2]) = [2, 2];  relu(0.5 * [-1, 0] + [-3, 1]) = [0, 1]
    torch.testing.assert_close(block(X), torch.tensor([[2.0, 2.0], [0.0, 1.0]]))
    assert count_parameters(block) == count_parameters(_hand_block())  # a constant, not a parameter
    seen: list[torch.Tensor] = []
    block.branch_out.register_forward_hook(lambda m, i, o: seen.append(o))
    block(X)
    torch.testing.assert_close(seen[0], torch.tensor([[1.0, 0.0], [-0.5, 0.0]]))  # what is added: z2 / 2


def test_lecture_block_unchanged_and_plain_blocks_ignore_the_options() -> None:
    # The default is the lecture's relu(z2 + x) = [[3, 2], [0, 1]]; a plain block is relu(z2) whatever the
    # option, since it has no branch to scale (as zero_init_residual).
    torch.testing.assert_close(_hand_block()(X), torch.tensor([[3.0, 2.0], [0.0, 1.0]]))
    for option in ("rezero", "sqrt_depth", "fixup"):
        plain = _hand_block(residual=False, branch_scale=option, num_blocks=4)
        assert plain.branch_scale is None and plain.alpha is None
        torch.testing.assert_close(plain(X), torch.tensor([[2.0, 0.0], [0.0, 0.0]]))


def test_fixup_init_scales_first_layer_by_inverse_sqrt_depth_and_zeroes_the_last() -> None:
    # Zhang et al. 2019, rules 1-2 with m = 2: first Linear x L^(-1/(2m-2)) = L^(-1/2) = 1/2 for L = 4.
    torch.manual_seed(0)
    ref = ResidualMLP(4, width=8, in_features=12)
    torch.manual_seed(0)
    fix = ResidualMLP(4, width=8, in_features=12, branch_scale="fixup")
    for r, f in zip(ref.blocks(), fix.blocks()):
        torch.testing.assert_close(f.fc1.weight, 0.5 * r.fc1.weight, rtol=0, atol=0)
        torch.testing.assert_close(f.fc1.bias, r.fc1.bias, rtol=0, atol=0)
        assert not f.fc2.weight.any() and not f.fc2.bias.any()
    torch.testing.assert_close(fix.fc_in.weight, ref.fc_in.weight, rtol=0, atol=0)  # outside the branches
    torch.testing.assert_close(fix.fc.weight, ref.fc.weight, rtol=0, atol=0)
    x = torch.randn(5, 12)
    with torch.no_grad():  # every block starts as the identity: the features are a[0]
        torch.testing.assert_close(fix.forward_features(x), torch.relu(fix.fc_in(x)))
    torch.manual_seed(0)
    plain = ResidualMLP(4, width=8, in_features=12, residual=False, branch_scale="fixup")
    torch.manual_seed(0)
    plain_ref = ResidualMLP(4, width=8, in_features=12, residual=False)
    for (k, a), b in zip(plain.state_dict().items(), plain_ref.state_dict().values()):
        assert torch.equal(a, b), k  # a plain twin is the lecture's net whatever the option


OPTIONS = [(o, n) for o in (None, "rezero", "sqrt_depth", "fixup") for n in (None, "batch")]


@pytest.mark.parametrize(("option", "norm"), [c for c in OPTIONS if c != ("fixup", "batch")])  # rejected
@pytest.mark.parametrize("depth", [1, 4, 37])
def test_parameter_counts_with_options(depth: int, option: str | None, norm: str | None) -> None:
    w = 64
    block = 2 * (w * w + 2 * w) if norm else 2 * (w * w + w)  # 2 Linear (+ BN, no bias) layers
    base = 784 * w + w + depth * block + w * 10 + 10
    alpha = depth if option == "rezero" else 0  # one scalar per residual block
    for name, expected in ((f"resmlp{depth}", base + alpha), (f"plainmlp{depth}", base)):
        assert parameter_count(name, norm=norm, branch_scale=option) == expected
        model = build_model(name, norm=norm, branch_scale=option, device="meta")
        assert count_parameters(model) == expected
    if option is None and norm is None and depth == 4:
        assert base == 84_170  # the README's resmlp4


def _stream_rms(model: ResidualMLP, x: torch.Tensor) -> tuple[float, float]:
    """RMS of a[0] (after the input layer) and of the stream after the last block."""
    with torch.no_grad():
        a0 = model.relu(model.fc_in(model.flatten(x)))
        return a0.pow(2).mean().sqrt().item(), model.forward_features(x).pow(2).mean().sqrt().item()


def test_lecture_stream_grows_with_depth_and_each_option_bounds_it() -> None:
    # The diagnosis of resmlp256/500's NaN: with the lecture's equations and PyTorch's default init, each
    # block adds a branch of a few % of the stream's variance, so the RMS grows geometrically (~3% a block
    # measured: x1,000+ over 256 blocks; logits and gradients follow). Each option keeps it O(1) at init.
    x = torch.randn(32, 784)
    torch.manual_seed(0)
    a0, last = _stream_rms(build_model("resmlp256"), x)
    assert last / a0 > 300
    for option in ("rezero", "sqrt_depth", "fixup"):
        torch.manual_seed(0)
        a0, last = _stream_rms(build_model("resmlp256", branch_scale=option), x)
        assert last / a0 < 3, option
    torch.manual_seed(0)
    _, last = _stream_rms(build_model("resmlp256", norm="batch").train(), x)
    assert last < 2 * 256**0.5  # each BN'd branch adds O(1) variance: the RMS grows ~ sqrt(depth), no more


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(name="resmlp4", branch_scale="skipinit"), "branch_scale must be one of rezero"),
        (dict(name="resnet20", branch_scale="rezero"), "apply only to MLPs"),
        (dict(name="resmlp4", branch_scale="fixup", norm="batch"), "without normalisation"),
        (dict(name="resmlp4", branch_scale="rezero", zero_init_residual=True), "freeze"),
    ],
)
def test_option_errors_are_one_line(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as err:
        build_model(**kwargs)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="apply only to MLPs"):
        parameter_count("resnet20", branch_scale="rezero")
