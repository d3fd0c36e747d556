"""Starting from weights and fine-tuning: --init-from (reslab runs, torchvision / akamaster files), --freeze
and --head-lr, on tiny nets, a generated image folder and the embedded digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from helpers import exit_code, one_line_error, tiny
from reslab.engine import TrainConfig, train
from reslab.engine.net import freeze
from reslab.engine.optim import param_groups, set_lr
from reslab.engine.specs import optim_spec, with_init_kwargs
from reslab.errors import ConfigError
from reslab.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def color_folder(root: Path, per_class: int = 16, size: tuple[int, int] = (40, 32)) -> Path:
    """Three classes told apart by their dominant colour, with noise: learnable in a few steps."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("red", "green", "blue")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 90, (size[1], size[0], 3), dtype=np.uint8)
            img[..., c] = rng.integers(150, 256, (size[1], size[0]), dtype=np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def test_init_from_a_run_directory_with_everything_frozen_keeps_every_tensor(
    tiny_run: Path, tmp_path: Path
) -> None:
    # every stage frozen and a head learning rate of 0: the weights must come out exactly as they went in
    out = tmp_path / "ft"
    train(tiny(out, iterations=4, init_from=str(tiny_run), freeze="layer3", head_lr=0.0))
    before, after = load_file(tiny_run / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_embedded_digits_run_is_a_source_and_resume_never_rereads_it(tmp_path: Path, capsys) -> None:
    src, ft = tmp_path / "digits", tmp_path / "ft"
    train(tiny(src, dataset="mnist5k", iterations=2, eval_every=2))
    copy = tmp_path / "weights.safetensors"
    copy.write_bytes((src / "model.safetensors").read_bytes())
    argv = ["train", "--model", "resnet8", "--dataset", "mnist5k", "--iterations", "2", "--device", "cpu"]
    argv += ["--precision", "fp32", "--progress", "lines", "--num-threads", "1", "--out", str(ft)]
    assert exit_code([*argv, "--init-from", str(copy)]) == 0
    err = capsys.readouterr().err
    assert f"init from {copy}: 44 tensors loaded (reslab/torchvision/timm layout; looks like resnet8)" in err
    assert "head re-initialised" not in err
    copy.unlink()  # a resumed run takes its weights from its checkpoint, not from SOURCE
    assert exit_code(["train", "--resume", str(ft), "--iterations", "4", "--progress", "off"]) == 0
    assert exit_code(["train", "--resume", str(ft), "--init-from", str(src)]) == 2  # frozen on resume
    assert "init_from" in one_line_error(capsys)


def pretrained_like(name: str) -> torch.nn.Module:
    """A net whose BatchNorm statistics match its activations, as a trained net's do (the frozen stages then
    normalise in eval mode as they would with real pretrained weights); random weights otherwise."""
    torch.manual_seed(1)
    model = build_model(name)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a plain average over the calibration batches
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(16, 3, 32, 32))
    return model.eval()


def test_resnet18_fine_tune_from_a_state_dict_lowers_the_loss_with_frozen_stages_bit_identical(
    tmp_path: Path, capsys
) -> None:
    source = pretrained_like("resnet18")  # 1000 classes, torchvision's keys
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    folder = color_folder(tmp_path / "colors")
    cfg = TrainConfig(
        model="resnet18", dataset=f"folder:{folder}", image_size=32, init_from=str(tmp_path / "resnet18.pth"),
        freeze="layer2", head_lr=0.05, lr=0.01, label_smoothing=0.0, batch_size=12, iterations=9,
        warmup_iters=0, augment="none", precision="fp32", device="cpu", progress="lines",
    )  # fmt: skip
    # The starting point: the same run with nothing that learns (every stage frozen, head lr 0).
    start = train(cfg.with_changes(freeze="layer4", head_lr=0.0, iterations=1, out=str(tmp_path / "start")))
    capsys.readouterr()
    tuned = train(cfg.with_changes(out=str(tmp_path / "ft")))
    err = capsys.readouterr().err
    assert "the file's classifier has 1000 classes, the model's 3" in err and "head re-initialised" in err
    assert "frozen: stem (conv1, bn1, relu, maxpool), layer1, layer2, BatchNorm in eval mode" in err
    assert tuned.final_train_loss < 0.5 * start.final_train_loss  # eval mode, the whole train split
    src, after = source.state_dict(), load_file(tmp_path / "ft" / "model.safetensors")
    frozen = [k for k in src if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2")]
    assert len(frozen) == 60 and all(torch.equal(src[k], after[k]) for k in frozen)  # weights and BN buffers
    assert not torch.equal(src["layer3.0.conv1.weight"], after["layer3.0.conv1.weight"])
    print(f"resnet18 fine-tune: train loss {start.final_train_loss:.4f} -> {tuned.final_train_loss:.4f}")


def _akamaster_file(tmp_path: Path) -> Path:
    sd = {
        k.replace("fc.", "linear.", 1): v
        for k, v in build_model("resnet8", in_channels=1).state_dict().items()
    }
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "aka.th")
    return tmp_path / "aka.th"


def test_init_kwargs_record_the_file_conventions_and_refuse_a_contradiction(tmp_path: Path) -> None:
    path = str(_akamaster_file(tmp_path))
    cfg = with_init_kwargs(TrainConfig(model="resnet8", init_from=path))
    assert cfg.model_kwargs == {"shortcut_pad": "both", "global_pool": "window"}
    with pytest.raises(ConfigError, match="trained with shortcut_pad='both' but --model-kwargs gives"):
        with_init_kwargs(TrainConfig(model="resnet8", init_from=path, model_kwargs={"shortcut_pad": "after"}))
    out = tmp_path / "run"
    train(tiny(out, iterations=2, init_from=path))
    assert '"shortcut_pad": "both"' in (out / "config.json").read_text()


def test_freeze_names_the_stages_and_keeps_frozen_batchnorm_in_eval_mode() -> None:
    model = build_model("resnet8", num_classes=10)
    with pytest.raises(ConfigError, match="choose one of stem, layer1, layer2, layer3"):
        freeze(model, "layer4")
    assert freeze(model, "layer1") == ["conv1", "bn1", "relu", "layer1"]
    model.train()
    assert not model.bn1.training and not model.layer1[0].bn1.training and model.layer2[0].bn1.training
    assert isinstance(model.bn1, torch.nn.BatchNorm2d)
    assert not any(p.requires_grad for p in model.layer1.parameters())


def test_head_lr_is_a_second_group_on_the_same_schedule() -> None:
    model = build_model("resnet8", num_classes=10)
    cfg = TrainConfig(lr=0.1, head_lr=0.4)
    opt = torch.optim.SGD(param_groups(model, optim_spec(cfg)), lr=cfg.lr)
    set_lr(opt, 0.05)  # the schedule's value at some step
    assert [g["lr"] for g in opt.param_groups] == [0.05, pytest.approx(0.2)]
    assert opt.param_groups[1]["params"] == list(model.fc.parameters())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--init-from", "{tmp}/nope.pth"], "nope.pth does not exist"),
        (["--init-from", "{tmp}/short.pt"], "the model's 'layer2.0.conv1.weight' is missing from the file"),
        (["--init-from", "{tmp}/code.pt"], "reslab never unpickles code"),
        (
            ["--freeze", "layer9"],
            "--freeze 'layer9' is not a stage of this model; choose one of stem, layer1",
        ),
        (["--head-lr", "-1"], "--head-lr must be in [0, inf)"),
        (["--image-size", "0"], "--image-size must be a positive integer"),
        (["--data-memory-gib", "0"], "--data-memory-gib must be in (0, inf)"),
        (["--logger", "mlflow"], "unknown --logger 'mlflow'; choose from tensorboard, csv, wandb"),
    ],
)
def test_bad_fine_tune_flags_are_one_line_before_the_run_exists(
    tmp_path: Path, capsys, flags: list[str], message: str
) -> None:
    state = build_model("resnet8", num_classes=3, in_channels=3).state_dict()
    torch.save({k: v for k, v in state.items() if k != "layer2.0.conv1.weight"}, tmp_path / "short.pt")
    torch.save({"weights": Path("x")}, tmp_path / "code.pt")  # a pickled object, not a tensor
    folder = color_folder(tmp_path / "f", per_class=4)
    out = tmp_path / "run"
    argv = ["train", "--model", "resnet8", "--dataset", f"folder:{folder}", "--image-size", "12"]
    argv += ["--batch-size", "4", "--iterations", "1", "--progress", "off", "--out", str(out)]
    assert exit_code(argv + [f.format(tmp=tmp_path) for f in flags]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()  # refused before --out was created
