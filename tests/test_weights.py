"""Weights in: reslab, torchvision/timm and akamaster/pytorch_resnet_cifar10 state dicts -> identical outputs.

The foreign models are small local copies of the originals' architectures (nothing is downloaded): akamaster's
``resnet.py`` (option A as a LambdaLayer padding ``planes//4`` channels on both sides, ``linear`` head,
``F.avg_pool2d`` over the last map) and torchvision's ``resnet.py`` (BasicBlock, ``downsample``, ``fc``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from reslab.errors import CheckpointError, ConfigError
from reslab.models import PadShortcut, build_model, inspect_weights, load_weights
from reslab.models.layouts import KEY_MAPS, convert_state_dict, detect_layout, guess_model
from reslab.models.nets import WindowAvgPool

# ---- akamaster/pytorch_resnet_cifar10, as its resnet.py builds it ---------------------------------------


class LambdaLayer(nn.Module):
    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class AkaBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, option: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if option == "A":  # zeros on both sides of the subsampled identity
                self.shortcut = LambdaLayer(
                    lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0)
                )
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class AkaResNet(nn.Module):
    def __init__(self, n: int, num_classes: int = 10, option: str = "A") -> None:
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, n, 1, option)
        self.layer2 = self._make_layer(32, n, 2, option)
        self.layer3 = self._make_layer(64, n, 2, option)
        self.linear = nn.Linear(64, num_classes)

    def _make_layer(self, planes: int, n: int, stride: int, option: str) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(AkaBlock(self.in_planes, planes, s, option))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


# ---- torchvision's ResNet-18, as its resnet.py builds it ----------------------------------------------


class TvBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TvResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, planes in enumerate((64, 128, 256, 512), start=1):
            stride = 1 if i == 1 else 2
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )
            self.add_module(
                f"layer{i}",
                nn.Sequential(TvBlock(inplanes, planes, stride, down), TvBlock(planes, planes, 1, None)),
            )
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---- helpers ------------------------------------------------------------------------------------------


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights *and* BN statistics (eval mode uses them), so every tensor matters to the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (0.3 if t.ndim > 1 else 0.1))
    return model.eval()


def _max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (a.eval()(x) - b.eval()(x)).abs().max().item()


def _save_akamaster(path: Path, model: nn.Module) -> Path:
    """As akamaster's trainer.py saves: DataParallel keys under 'state_dict', next to best_prec1."""
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "best_prec1": torch.tensor(91.73)}, path)
    return path


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


X32 = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


# ---- akamaster -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "name"), [(1, "resnet8"), (3, "resnet20")])
def test_akamaster_checkpoint_gives_identical_outputs(tmp_path: Path, n: int, name: str) -> None:
    torch.manual_seed(0)
    aka = _randomised(AkaResNet(n))
    path = _save_akamaster(tmp_path / f"{name}.th", aka)
    info = inspect_weights(path)
    assert (info.layout, info.model, info.num_classes, info.in_channels) == ("akamaster", name, 10, 3)
    assert info.model_kwargs == {"shortcut_pad": "both", "global_pool": "window"}
    model = build_model(name, **info.model_kwargs)
    report = load_weights(model, path)
    assert report.info.layout == "akamaster" and not report.head_reinitialised
    assert report.loaded == len(aka.state_dict())
    assert "akamaster" in str(report) and "linear -> fc" in str(report)
    assert _max_diff(model, aka, X32) == 0.0  # identical, not close
    # the conventions are what makes it identical: reslab's own padding side moves the identity channels
    after = build_model(name, global_pool="window")
    after.load_state_dict(model.state_dict())
    assert _max_diff(after, aka, X32) > 1e-3


def test_akamaster_plain_state_dict_and_pre_041_files(tmp_path: Path) -> None:
    aka = _randomised(AkaResNet(1), seed=2)
    sd = {
        k: v for k, v in aka.state_dict().items() if not k.endswith("num_batches_tracked")
    }  # PyTorch < 0.4.1
    torch.save(sd, tmp_path / "r8.pth")
    model = build_model("resnet8", shortcut_pad="both", global_pool="window")
    load_weights(model, tmp_path / "r8.pth")
    assert _max_diff(model, aka, X32) == 0.0


def test_akamaster_option_b_and_compressible_names(tmp_path: Path) -> None:
    aka = _randomised(AkaResNet(1, option="B"), seed=3)
    sd = {
        k.replace("conv", "compressible_conv").replace("linear", "compressible_linear"): v
        for k, v in aka.state_dict().items()
    }
    assert "layer2.0.shortcut.0.weight" in sd and "compressible_linear.weight" in sd
    info = inspect_weights(sd)
    assert (info.layout, info.model, info.model_kwargs) == (
        "akamaster",
        "resnet8",
        {"shortcut": "B", "global_pool": "window"},
    )
    model = build_model(info.model, **info.model_kwargs)  # type: ignore[arg-type]
    load_weights(model, sd)
    assert _max_diff(model, aka, X32) == 0.0


def test_akamaster_into_a_default_model_names_the_build_keywords(tmp_path: Path) -> None:
    path = _save_akamaster(tmp_path / "r8.th", _randomised(AkaResNet(1)))
    with pytest.raises(CheckpointError) as err:
        load_weights(build_model("resnet8"), path)
    msg = _one_line(err)
    assert "shortcut_pad='both', global_pool='window'" in msg and "outputs would differ" in msg


def test_akamaster_key_map_is_explicit() -> None:
    keys = [
        "conv1.weight",
        "layer2.0.shortcut.1.running_var",
        "linear.bias",
        "layer1.0.compressible_conv2.weight",
    ]
    assert detect_layout(keys) == "akamaster"
    mapped, notes = convert_state_dict(dict.fromkeys(keys, torch.zeros(1)), "akamaster")
    assert list(mapped) == [
        "conv1.weight",
        "layer2.0.downsample.1.running_var",
        "fc.bias",
        "layer1.0.conv2.weight",
    ]
    assert len(KEY_MAPS["akamaster"]) == 3 and KEY_MAPS["reslab"] == ()
    assert any("linear -> fc" in n for n in notes)
    assert detect_layout(["conv1.weight", "fc.weight"]) == "reslab"


# ---- torchvision / timm / reslab -----------------------------------------------------------------------

X64 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))


def test_torchvision_resnet18_both_ways(tmp_path: Path) -> None:
    tv = _randomised(TvResNet18(), seed=5)
    model = build_model("resnet18")
    assert list(model.state_dict()) == list(tv.state_dict())  # the same names, in the same order
    torch.save(tv.state_dict(), tmp_path / "resnet18-f37072fd.pth")
    report = load_weights(model, tmp_path / "resnet18-f37072fd.pth")
    assert (report.info.layout, report.info.model, report.info.notes) == ("reslab", "resnet18", ())
    assert _max_diff(model, tv, X64) == 0.0
    # and back: reslab -> safetensors -> torchvision's module, strict
    save_file(model.state_dict(), str(tmp_path / "r18.safetensors"))
    tv2 = TvResNet18()
    from safetensors.torch import load_file

    tv2.load_state_dict(load_file(str(tmp_path / "r18.safetensors")), strict=True)
    assert _max_diff(tv2, tv, X64) == 0.0


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_reslab_round_trip(tmp_path: Path, suffix: str) -> None:
    src = _randomised(build_model("resnet18"), seed=6)
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(src.state_dict(), str(path))
    else:  # as torch.compile + DDP leave the keys, inside a training checkpoint with its argparse args
        sd = {f"module._orig_mod.{k}": v for k, v in src.state_dict().items()}
        torch.save({"model": sd, "epoch": 3, "args": argparse.Namespace(lr=0.1, model="resnet18")}, path)
    dst = build_model("resnet18")
    load_weights(nn.DataParallel(dst) if suffix == ".pt" else dst, path)  # a wrapper loads into its model
    assert _max_diff(dst, src, X64) == 0.0
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_six_classes_from_a_1000_class_file_reinitialise_the_head(tmp_path: Path) -> None:
    src = _randomised(build_model("resnet18"), seed=7)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "in1k.pth")
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=6)
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fc.")}
    seen: list[str] = []
    report = load_weights(model, tmp_path / "in1k.pth", warn=seen.append)
    assert report.head_reinitialised and len(seen) == 1 and "\n" not in seen[0]
    assert "head re-initialised" in seen[0] and "1000 classes" in seen[0] and "6" in seen[0]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in fresh.items())  # the model's own head
    body = [k for k in src.state_dict() if not k.startswith("fc.")]
    assert all(torch.equal(model.state_dict()[k], src.state_dict()[k]) for k in body)
    assert report.loaded == len(body)
    with pytest.raises(CheckpointError, match=r"1000 classes.*num_classes=1000"):
        load_weights(build_model("resnet18", num_classes=6), tmp_path / "in1k.pth", strict_head=True)


def test_timm_headless_file_keeps_the_model_head_and_variants_are_refused() -> None:
    src = _randomised(build_model("resnet18"), seed=8)
    headless = {k: v for k, v in src.state_dict().items() if not k.startswith("fc.")}  # num_classes=0
    seen: list[str] = []
    report = load_weights(build_model("resnet18", num_classes=3), headless, warn=seen.append)
    assert report.head_reinitialised and "no classifier" in seen[0]
    deep_stem = {"conv1.0.weight": torch.zeros(32, 3, 3, 3), **headless}  # timm resnet18d
    del deep_stem["conv1.weight"]
    with pytest.raises(CheckpointError) as err:
        load_weights(build_model("resnet18"), deep_stem)
    assert "'conv1.weight' is missing" in _one_line(err) and "timm variant" in str(err.value)


# ---- mismatches: one line, the first offending key --------------------------------------------------


def _r8_state(seed: int = 9) -> dict[str, torch.Tensor]:
    return dict(_randomised(build_model("resnet8"), seed=seed).state_dict())


def test_missing_key_names_the_first_one() -> None:
    sd = _r8_state()
    del sd["layer2.0.conv1.weight"], sd["layer3.0.bn1.bias"]
    with pytest.raises(CheckpointError) as err:
        load_weights(build_model("resnet8"), sd)
    msg = _one_line(err)
    assert "'layer2.0.conv1.weight' is missing" in msg and "layer3" not in msg


def test_unexpected_key_names_it() -> None:
    sd = {**_r8_state(), "layer3.0.extra.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError) as err:
        load_weights(build_model("resnet8"), sd)
    assert "the file has 'layer3.0.extra.weight'" in _one_line(err)


def test_shape_mismatch_names_the_key_and_the_file_architecture() -> None:
    with pytest.raises(CheckpointError) as err:
        load_weights(build_model("resnet8", in_channels=1), _r8_state())
    msg = _one_line(err)
    assert "'conv1.weight' is (16, 3, 3, 3) in the file but (16, 1, 3, 3) in the model" in msg
    assert "build_model('resnet8', num_classes=10, in_channels=3)" in msg
    with pytest.raises(CheckpointError) as err:  # another depth: the first block the model lacks
        load_weights(build_model("resnet8"), dict(_randomised(build_model("resnet14")).state_dict()))
    assert "the file has 'layer1.1.conv1.weight'" in _one_line(err) and "resnet14" in str(err.value)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_pickled_callable_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"state_dict": _r8_state(), "hook": _Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as err:
        load_weights(build_model("resnet8"), tmp_path / "evil.pt")
    msg = _one_line(err)
    assert "never unpickles code" in msg and "system" in msg
    assert not marker.exists()


def test_unreadable_sources(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(build_model("resnet8"), tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match=r"has no model\.safetensors"):
        load_weights(build_model("resnet8"), tmp_path)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_weights(build_model("resnet8"), tmp_path / "bad.safetensors")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"not a readable PyTorch weights file \(Unsupported operand"):
        load_weights(build_model("resnet8"), tmp_path / "text.pt")
    torch.save(_r8_state(), tmp_path / "whole.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:300])  # a torn download
    with pytest.raises(CheckpointError, match="not a readable PyTorch weights file"):
        load_weights(build_model("resnet8"), tmp_path / "cut.pt")
    torch.save({"epoch": 3}, tmp_path / "nodict.pt")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_weights(build_model("resnet8"), tmp_path / "nodict.pt")


# ---- run directories --------------------------------------------------------------------------------


def test_run_directory_source_and_its_conventions(tmp_path: Path) -> None:
    import json

    src = _randomised(build_model("resnet8", shortcut_pad="both"), seed=10)
    run = tmp_path / "run"
    run.mkdir()
    save_file(src.state_dict(), str(run / "model.safetensors"))
    kwargs = {"shortcut_pad": "both"}
    (run / "config.json").write_text(json.dumps({"config": {"model": "resnet8", "model_kwargs": kwargs}}))
    info = inspect_weights(run)
    assert (info.layout, info.path, info.model_kwargs) == ("reslab", run / "model.safetensors", kwargs)
    model = build_model("resnet8", **info.model_kwargs)
    load_weights(model, run)
    assert _max_diff(model, src, X32) == 0.0
    with pytest.raises(CheckpointError, match="trained with shortcut_pad='both'"):
        load_weights(build_model("resnet8"), run)


def test_a_real_run_directory_loads(tmp_path: Path) -> None:
    try:
        from tests.helpers import tiny
    except ImportError:
        from helpers import tiny  # type: ignore[no-redef]
    from reslab.engine import train

    result = train(tiny(tmp_path / "runs", iterations=4, eval_every=4))
    run = Path(result.run_dir)
    from safetensors.torch import load_file

    saved = load_file(str(run / "model.safetensors"))
    info = inspect_weights(run)
    assert info.model == "resnet8" and info.in_channels == 1
    model = build_model("resnet8", num_classes=info.num_classes, in_channels=1)
    load_weights(model, run)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())


# ---- the model side: option A padding and the window pool ----------------------------------------------


def test_pad_both_centres_the_identity() -> None:
    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(16, 32, 2, pad="both")(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2]) and not y[:, :8].any() and not y[:, 24:].any()
    assert torch.equal(PadShortcut(16, 32, 2)(x)[:, :16], x[:, :, ::2, ::2])  # default: zeros after
    with pytest.raises(ConfigError, match="shortcut_pad"):
        PadShortcut(16, 32, 2, pad="before")  # type: ignore[arg-type]


def test_build_model_conventions() -> None:
    m = build_model("resnet20", shortcut_pad="both", global_pool="window", device="meta")
    assert {b.downsample.pad for b in m.blocks() if isinstance(b.downsample, PadShortcut)} == {"both"}
    assert isinstance(m.avgpool, WindowAvgPool)
    assert list(m.state_dict()) == list(build_model("resnet20", device="meta").state_dict())
    pre = build_model("preact_resnet164", shortcut="A", shortcut_pad="both", device="meta")
    assert {b.downsample.pad for b in pre.blocks() if isinstance(b.downsample, PadShortcut)} == {"both"}
    with pytest.raises(ConfigError, match="apply only to the CIFAR nets"):
        build_model("resnet18", shortcut_pad="both")
    with pytest.raises(ConfigError, match="global_pool"):
        build_model("resnet20", global_pool="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="MLP"):
        build_model("resmlp4", global_pool="window")
    x = torch.randn(3, 64, 8, 8)
    torch.testing.assert_close(WindowAvgPool()(x), nn.AdaptiveAvgPool2d(1)(x))  # same mean, other rounding


@pytest.mark.parametrize(
    ("name", "kwargs", "guess"),
    [
        ("resnet50", {}, ("resnet50", {})),
        ("resnet34", {"shortcut": "C"}, ("resnet34", {"shortcut": "C"})),
        ("resnet20", {"shortcut": "B"}, ("resnet20", {"shortcut": "B"})),
        ("cifar_resnet50", {}, ("cifar_resnet50", {})),
        ("preact_resnet164", {}, ("preact_resnet164", {})),
        ("resmlp4", {}, ("resmlp4", {})),
        ("plainmlp3", {"width": 32, "in_features": 12}, ("resmlp3", {"width": 32, "in_features": 12})),
    ],
)
def test_guess_model(name: str, kwargs: dict, guess: tuple) -> None:
    assert guess_model(build_model(name, device="meta", **kwargs).state_dict()) == guess
