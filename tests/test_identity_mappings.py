"""He et al. 2016, "Identity Mappings": each shortcut function (Fig. 2) and each BN/ReLU order (Fig. 4)
against its equation computed by hand, the parameter formula against the built nets and a hand count, the
option checks, and the gradient of the scaled shortcut falling as λ^k."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from reslab.errors import ConfigError
from reslab.models import BasicBlock, build_model, count_parameters, model_info, parameter_count
from reslab.models.identity_mappings import (
    PLACEMENTS,
    SHORTCUT_KINDS,
    ReorderedBasicBlock,
    ShortcutVariant,
)
from reslab.models.specs import count_parameters_of

# One-channel blocks whose 3x3 convs only have a centre tap act pointwise, so every equation is a line of
# arithmetic on the input values. BNs are in eval mode with mean 0 and var 1-eps: BN(z) = gamma*z + beta.
C1, C2 = 1.5, -0.8  # conv1, conv2 centre taps
BN1, BN2 = (0.7, 0.2), (1.3, -0.1)  # (gamma, beta)
X = torch.tensor([[[[1.0, -2.0, 0.5], [3.0, 0.0, -0.3]]]])  # (1, 1, 2, 3)


def relu(t: torch.Tensor) -> torch.Tensor:
    return t.clamp(min=0)


def bn(t: torch.Tensor, p: tuple[float, float]) -> torch.Tensor:
    return p[0] * t + p[1]


def set_pointwise(block: nn.Module) -> nn.Module:
    """Centre-tap convs C1, C2 and eval-mode BNs BN1, BN2 (whichever the block has)."""
    with torch.no_grad():
        for name, tap in (("conv1", C1), ("conv2", C2)):
            conv = getattr(block, name)
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = tap
        for name, (gamma, beta) in (("bn1", BN1), ("bn2", BN2)):
            norm = getattr(block, name, None)
            if norm is not None:
                norm.weight.fill_(gamma)
                norm.bias.fill_(beta)
                norm.running_mean.zero_()
                norm.running_var.fill_(1 - norm.eps)
    return block.eval()


def branch(x: torch.Tensor) -> torch.Tensor:
    """F(x) of the original unit, Fig. 4(a): BN2(conv2(relu(BN1(conv1 x))))."""
    return bn(C2 * relu(bn(C1 * x, BN1)), BN2)


def basic(variant: ShortcutVariant | None = None, **kwargs: object) -> BasicBlock:
    return set_pointwise(BasicBlock(1, 1, shortcut="A", variant=variant, **kwargs))  # type: ignore[return-value]


def set_gate(block: nn.Module, w: float, b: float) -> None:
    with torch.no_grad():
        block.modulation.gate.weight.fill_(w)
        block.modulation.gate.bias.fill_(b)


# --- Fig. 2 / Table 1: the shortcut functions -----------------------------------------------------------


def test_identity_is_the_original_unit_with_no_extra_module() -> None:
    block = basic(ShortcutVariant("identity"))
    assert block.modulation is None
    torch.testing.assert_close(block(X), relu(X + branch(X)))


@pytest.mark.parametrize("lam", [0.5, 0.8])
def test_constant_scaling(lam: float) -> None:
    # Fig. 2(b), Table 1's "frozen gating": y = relu(λx + (1-λ)F(x))
    block = basic(ShortcutVariant("scaling", scale=lam))
    torch.testing.assert_close(block(X), relu(lam * X + (1 - lam) * branch(X)))
    # the F-unscaled row of Table 1: y = relu(λx + F(x))
    block = basic(ShortcutVariant("scaling", scale=lam, scale_branch=False))
    torch.testing.assert_close(block(X), relu(lam * X + branch(X)))


def test_exclusive_gating() -> None:
    # Fig. 2(c): g = sigmoid(w x + b); y = relu((1-g) x + g F(x))
    block = basic(ShortcutVariant("exclusive_gate"))
    set_gate(block, 0.9, -1.0)
    g = torch.sigmoid(0.9 * X - 1.0)
    torch.testing.assert_close(block(X), relu((1 - g) * X + g * branch(X)))


def test_shortcut_only_gating() -> None:
    # Fig. 2(d): y = relu((1-g) x + F(x))
    block = basic(ShortcutVariant("shortcut_gate"))
    set_gate(block, -0.4, 2.0)
    g = torch.sigmoid(-0.4 * X + 2.0)
    torch.testing.assert_close(block(X), relu((1 - g) * X + branch(X)))


def test_conv1x1_shortcut_is_a_projection_on_every_block() -> None:
    # Fig. 2(e) = option C: y = relu(BN_s(w_s x) + F(x)), even where the shape does not change
    net = build_model("resnet8", shortcut_kind="conv1x1", in_channels=1)
    block = set_pointwise(net.layer1[0])
    assert isinstance(block.downsample, nn.Sequential)
    proj, norm = block.downsample
    with torch.no_grad():
        proj.weight.fill_(0.0)
        proj.weight[:, :, 0, 0] = torch.eye(proj.weight.shape[0]) * 0.6
        norm.weight.fill_(2.0), norm.bias.fill_(0.25), norm.running_mean.zero_()
        norm.running_var.fill_(1 - norm.eps)
    # every channel of a 16-channel block acts on its own channel: feed the same map to each
    x16 = X.expand(1, 16, 2, 3)
    with torch.no_grad():
        for name in ("conv1", "conv2"):
            w = getattr(block, name).weight
            tap = w[0, 0, 1, 1].item()
            w.zero_()
            w[:, :, 1, 1] = torch.eye(16) * tap
    torch.testing.assert_close(block(x16), relu(2.0 * 0.6 * x16 + 0.25 + branch(x16)))


def test_dropout_shortcut_keeps_unscaled_elements_in_training_and_halves_in_evaluation() -> None:
    # Fig. 2(f): y = relu(m*x + F(x)), m ~ Bernoulli(1-p), no 1/(1-p) rescaling; evaluation: relu((1-p)x + F)
    block = basic(ShortcutVariant("dropout"))
    torch.testing.assert_close(block(X), relu(0.5 * X + branch(X)))
    x = torch.rand(1, 1, 64, 64) + 0.5
    with torch.no_grad():
        block.bn2.bias.fill_(5.0)  # F(x) in [3.1, 4.3]: no ReLU hides the shortcut, kept and dropped differ
    f = bn(C2 * relu(bn(C1 * x, BN1)), (BN2[0], 5.0))
    block.train()
    block.bn1.eval(), block.bn2.eval()  # the BNs' running statistics, so F(x) is the hand-computed one
    torch.manual_seed(0)
    y = block(x)
    kept, dropped = x + f, f
    is_kept = torch.isclose(y, kept)
    assert torch.all(is_kept | torch.isclose(y, dropped))
    assert 0.45 < is_kept.float().mean().item() < 0.55  # p = 0.5 over 4,096 elements: ±0.05 is 6 sigma


def test_variants_act_on_the_shortcut_of_a_downsampling_block() -> None:
    # stride 2 and 16 -> 32 channels: h(x) is option A's subsampled, zero-padded x, then scaled
    net = build_model("resnet14", shortcut_kind="scaling", shortcut_scale=0.25, in_channels=1).eval()
    block = net.layer2[0]
    x = torch.randn(2, 16, 8, 8).abs()
    out = {}
    block.branch_out.register_forward_hook(lambda _m, _i, f: out.__setitem__("F", f))
    y = block(x)
    h = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 16, 4, 4)], dim=1)
    torch.testing.assert_close(y, relu(0.25 * h + 0.75 * out["F"]))


def test_gate_bias_is_initialised_and_gates_start_nearly_shut() -> None:
    for bias in (-6.0, 0.0, -3.5):
        net = build_model("resnet8", shortcut_kind="exclusive_gate", gate_bias=bias)
        gates = [m.modulation.gate for m in net.blocks()]
        assert all(torch.all(g.bias == bias) for g in gates)
    net = build_model("resnet8", shortcut_kind="shortcut_gate")  # default: the paper's best, -6
    assert all(torch.all(m.modulation.gate.bias == -6.0) for m in net.blocks())


# --- Fig. 4 / Table 2: where BN and ReLU go ---------------------------------------------------------


def _expected(placement: str, x: torch.Tensor, *, after_stem: bool = False) -> torch.Tensor:
    if placement == "original":  # (a) relu(F(x) + x)
        return relu(branch(x) + x)
    if placement == "bn_after_add":  # (b) relu(BN2(conv2(relu(BN1(conv1 x))) + x))
        return relu(bn(C2 * relu(bn(C1 * x, BN1)) + x, BN2))
    if placement == "relu_before_add":  # (c) relu(F(x)) + x
        return relu(branch(x)) + x
    if placement == "relu_preact":  # (d) BN2(conv2(relu(BN1(conv1(relu x))))) + x
        return bn(C2 * relu(bn(C1 * relu(x), BN1)), BN2) + x
    pre = x if after_stem else relu(bn(x, BN1))  # (e) conv2(relu(BN2(conv1(relu(BN1 x))))) + x
    return C2 * relu(bn(C1 * pre, BN2)) + x


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_placement_equation(placement: str) -> None:
    block = set_pointwise(ReorderedBasicBlock(1, 1, placement=placement, shortcut="A"))  # type: ignore[arg-type]
    torch.testing.assert_close(block(X), _expected(placement, X))


def test_first_preactivation_unit_reads_the_stems_activation() -> None:
    # appendix: the first unit's activation is the stem's, "before splitting into two paths"
    block = ReorderedBasicBlock(1, 1, placement="full_preact", after_stem=True, shortcut="A")
    assert not hasattr(block, "bn1") and block.bn2.num_features == 1
    torch.testing.assert_close(set_pointwise(block)(X), _expected("full_preact", X, after_stem=True))


def test_original_placement_is_basic_block() -> None:
    torch.manual_seed(0)
    a = BasicBlock(4, 8, 2, shortcut="A")
    b = ReorderedBasicBlock(4, 8, 2, placement="original", shortcut="A")
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 4, 6, 6)
    torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_preactivation_nets_activate_after_the_last_unit() -> None:
    full = build_model("resnet14", placement="full_preact")
    assert isinstance(full.bn, nn.BatchNorm2d) and full.bn.num_features == 64
    assert not hasattr(full.layer1[0], "bn1")  # the first unit's activation is the stem's
    assert full.layer1[1].bn1.num_features == 16 and full.layer2[0].bn1.num_features == 16  # its input's
    relu_only = build_model("resnet8", placement="relu_preact").eval()
    feats = relu_only.forward_features(torch.randn(2, 3, 16, 16))
    assert not hasattr(relu_only, "bn") and feats.min() >= 0  # the extra ReLU before pooling


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_zero_init_residual_makes_every_order_start_at_zero_branch(placement: str) -> None:
    net = build_model("resnet8", placement=placement, zero_init_residual=True).eval()
    out = []
    for m in net.blocks():
        m.branch_out.register_forward_hook(lambda _m, _i, f: out.append(f))
    net(torch.randn(2, 3, 16, 16))
    assert all(torch.count_nonzero(f) == 0 for f in out)


# --- parameter counts ---------------------------------------------------------------------------------


def _hand_count(depth: int, kind: str = "identity", placement: str = "original") -> int:
    """Parameters of the CIFAR net with He et al. 2016's options, by hand (3 input channels, 10 classes)."""
    n = (depth - 2) // 6
    total = 3 * 16 * 9 + 2 * 16  # stem conv + BN (every order keeps it)
    cin = 16
    for planes in (16, 32, 64):
        for j in range(n):
            total += 9 * cin * planes + 9 * planes * planes  # two 3x3 convs
            if placement == "full_preact":  # BN on the input (not in the first unit), BN between the convs
                total += (0 if (planes, j) == (16, 0) else 2 * cin) + 2 * planes
            else:
                total += 4 * planes
            if kind == "conv1x1":
                total += cin * planes + 2 * planes  # 1x1 conv + BN on every shortcut
            if kind in ("exclusive_gate", "shortcut_gate"):
                total += cin * planes + planes  # the gate's 1x1 conv and its bias
            cin = planes
    return total + (2 * 64 if placement == "full_preact" else 0) + 64 * 10 + 10


@pytest.mark.parametrize("kind", SHORTCUT_KINDS)
@pytest.mark.parametrize("depth", [8, 20, 110])
def test_shortcut_kind_parameter_count(kind: str, depth: int) -> None:
    expected = _hand_count(depth, kind=kind)
    assert parameter_count(f"resnet{depth}", shortcut_kind=kind) == expected  # type: ignore[arg-type]
    built = build_model(f"resnet{depth}", shortcut_kind=kind, device="meta")
    assert count_parameters(built) == expected


@pytest.mark.parametrize("placement", list(PLACEMENTS))
@pytest.mark.parametrize("depth", [8, 20, 110])
def test_placement_parameter_count(placement: str, depth: int) -> None:
    expected = _hand_count(depth, placement=placement)
    assert parameter_count(f"resnet{depth}", placement=placement) == expected  # type: ignore[arg-type]
    assert count_parameters(build_model(f"resnet{depth}", placement=placement, device="meta")) == expected


def test_known_counts() -> None:
    assert _hand_count(20) == 269_722 == parameter_count("resnet20")  # the paper's 0.27M
    assert parameter_count("resnet20", shortcut_kind="exclusive_gate") == 269_722 + 13_904
    assert parameter_count("resnet20", shortcut_kind="conv1x1") == 269_722 + 14_240
    assert parameter_count("resnet110", shortcut_kind="scaling") == 1_727_962  # scaling adds nothing


@pytest.mark.parametrize("option", [None, "B", "C"])
@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_formula_matches_built_nets_with_projections_widths_and_channels(
    option: str | None, placement: str
) -> None:
    for kind in ("identity", "shortcut_gate", "conv1x1"):
        if kind == "conv1x1" and option == "B":
            continue
        kw = {} if option is None else {"shortcut": option}
        built = build_model(
            "resnet14", placement=placement, shortcut_kind=kind, widen=0.5, in_channels=1, num_classes=7,
            device="meta", **kw,
        )  # fmt: skip
        spec = replace(
            model_info("resnet14"), shortcut=option, placement=placement, shortcut_kind=kind, widen=0.5
        )
        assert count_parameters(built) == count_parameters_of(spec, in_channels=1, num_classes=7)


# --- options: one-line errors for what does not apply ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "says"),
    [
        ("resnet20", {"shortcut_scale": 0.8}, "shortcut_scale applies to shortcut_kind=scaling"),
        ("resnet20", {"shortcut_kind": "dropout", "gate_bias": -2}, "gate_bias applies to"),
        ("resnet20", {"shortcut_kind": "scaling", "shortcut_scale": -1.0}, "shortcut_scale must be"),
        ("resnet20", {"shortcut_kind": "dropout", "shortcut_dropout": 1.0}, "shortcut_dropout must be"),
        ("resnet20", {"shortcut_kind": "conv1x1", "shortcut": "A"}, "option C"),
        ("plain20", {"shortcut_kind": "scaling"}, "plain twin"),
        ("plain20", {"placement": "full_preact"}, "plain twin"),
        ("preact_resnet164", {"placement": "relu_preact"}, "CIFAR basic-block nets"),
        ("resnet18", {"shortcut_kind": "scaling"}, "CIFAR basic-block nets"),
        ("resnet20", {"shortcut_kind": "gating"}, "shortcut_kind must be one of"),
    ],
)
def test_option_errors(name: str, options: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as err:
        build_model(name, **options)
    assert "\n" not in str(err.value)


def test_model_kwargs_of_a_run_rebuild_the_variant(tiny_run: object) -> None:
    from helpers import tiny
    from reslab.engine import load_run, train

    del tiny_run
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        kwargs = {"shortcut_kind": "shortcut_gate", "gate_bias": -2.0, "placement": "relu_preact"}
        run = train(tiny(Path(tmp) / "run", iterations=2, eval_every=2, model_kwargs=kwargs))
        model, _ = load_run(run.run_dir)
        assert isinstance(model.layer1[0], ReorderedBasicBlock) and model.layer1[0].modulation is not None


# --- gradients: the scaled shortcut carries λ per block (eq. 8) ------------------------------------------


def test_gradients_show_the_scaled_shortcut_falling_as_lambda_to_the_k(
    tmp_path: object, one_thread: None
) -> None:
    """With the branches zeroed at initialisation (zero_init_residual: every F(x) = 0 and dF/dx = 0), the
    shortcut is the only path, and eq. 8's factor is all there is: dL/dx_l = λ · mask ⊙ dL/dx_(l+1). The ReLU
    mask is the same at every unit of a stage (relu(λx) is zero where x is), so the gradient norm at block
    l is exactly λ times that at block l+1, λ^k over k blocks: float rounding is the only tolerance (1e-4).
    (A stage's first unit subsamples, so the law holds within each stage.) The identity keeps the norm
    (ratio 1), and one reslab gradients call compares the same net with different options by name.
    With the default initialisation (BN gamma = 1) the branches carry the gradient instead and the block
    gradients of the scaled net do not fall (benchmarks/calibration/ablate/ABLATE.md); the shortcut's own
    factor is what falls."""
    import reslab

    zero = ":zero_init_residual=true"
    models = (
        f"resnet26{zero}",
        f"resnet26:shortcut_kind=scaling{zero}",
        f"resnet26:shortcut_kind=scaling:shortcut_scale=0.8{zero}",
    )
    result = reslab.gradients(
        entries=models, dataset="synthetic:1x12x12", steps=0, batch_size=32, out=str(tmp_path)
    )
    assert [p.label.split(":")[0] for p in result.profiles] == ["resnet26"] * 3
    assert "shortcut_kind=scaling" in result.table
    n = 4  # blocks per stage of a 26-layer net
    for profile, lam in zip(result.profiles, (1.0, 0.5, 0.8)):
        norms = profile.snapshots[0].block_grad_norms
        for stage in range(3):
            g = norms[stage * n : (stage + 1) * n]  # input side -> output side
            if stage == 2:
                g = g[:-1]  # the net's last output gets its gradient from the pooling, not yet ReLU-masked
            for k in range(len(g)):
                assert g[k] / g[-1] == pytest.approx(lam ** (len(g) - 1 - k), rel=1e-4)


def test_gradients_cli_takes_one_net_with_different_options(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers import exit_code

    argv = ["gradients", "resnet8", "resnet8:shortcut_kind=scaling", "--steps", "0"]
    argv += ["--dataset", "synthetic:1x12x12", "--batch-size", "16", "--out", str(tmp_path)]
    assert exit_code(argv) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:4]]
    assert rows == ["resnet8", "resnet8:shortcut_kind=scaling"]
