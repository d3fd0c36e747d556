"""The training engine on tiny data: learning, determinism, exact resume, run files, NaN, corruption."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reslab.engine import TrainConfig, load_run, train
from reslab.engine.inference import evaluate_model
from reslab.engine.store.checkpoint import list_checkpoints, load_checkpoint
from reslab.errors import CheckpointError, ConfigError, TrainingError

try:
    from tests.helpers import tiny
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    from helpers import tiny  # type: ignore[no-redef]

METRIC_KEYS = {
    "iteration",
    "epoch",
    "lr",
    "train_loss",
    "train_error",
    "test_loss",
    "test_error",
    "images_per_s",
}


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted reference run that resume tests must match bit for bit."""
    out = tmp_path_factory.mktemp("straight") / "run"
    train(tiny(out))
    return out


def test_loss_goes_down(tmp_path: Path) -> None:
    result = train(tiny(tmp_path / "r", iterations=48, eval_every=8, lr=0.05))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.final_train_error < 0.5  # 10 classes: chance is 0.9


def test_same_seed_gives_identical_weights(tmp_path: Path, straight: Path) -> None:
    train(tiny(tmp_path / "again"))
    assert_same_weights(straight, tmp_path / "again")
    train(tiny(tmp_path / "other", seed=1))
    assert not torch.equal(weights(straight)["fc.weight"], weights(tmp_path / "other")["fc.weight"])


def _stop_at(iteration: int, *, with_signal: bool = False):
    def callback(metrics: dict) -> None:
        if metrics["iteration"] == iteration:
            if with_signal:  # a real Ctrl-C: the guard finishes the step, checkpoints, then interrupts
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize("with_signal", [False, True])
def test_interrupt_then_resume_is_bit_exact(tmp_path: Path, straight: Path, with_signal: bool) -> None:
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(tiny(run), callback=_stop_at(4, with_signal=with_signal))  # mid-epoch 0 (8 steps/epoch)
    assert [p.name for p in list_checkpoints(run)] == ["ckpt-00000004"]
    assert not (run / "summary.json").exists()
    result = train(replace(tiny(run), resume=str(run), out=None))
    assert result.iterations == 12
    assert [h["iteration"] for h in result.history] == [4, 8, 12]
    assert_same_weights(straight, run)


def test_corrupted_newest_checkpoint_falls_back_to_previous(
    tmp_path: Path, straight: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(tiny(run), callback=_stop_at(8))
    newest = run / "checkpoints" / "ckpt-00000008" / "state.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as by a dying disk
    with pytest.raises(CheckpointError, match=r"state\.pt"):
        load_checkpoint(newest.parent)
    result = train(replace(tiny(run), resume=str(run), out=None))
    assert "ckpt-00000008" in capsys.readouterr().err  # the warning names the broken file
    assert [h["iteration"] for h in result.history] == [4, 8, 12]  # metrics past iteration 4 were redone
    assert_same_weights(straight, run)


def test_run_directory_files(straight: Path) -> None:
    meta = json.loads((straight / "config.json").read_text())
    assert meta["config"]["model"] == "resnet8" and meta["config"]["resume"] is None
    assert meta["data"]["input_shape"] == [1, 12, 12] and len(meta["data"]["classes"]) == 10
    assert meta["data"]["normalization"]["mode"] == "channel"
    assert {"reslab", "torch"} <= set(meta["versions"])
    lines = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [4, 8, 12] and all(set(m) >= METRIC_KEYS for m in lines)
    assert lines[1]["epoch"] == 1.0
    summary = json.loads((straight / "summary.json").read_text())
    for key in (
        "final_train_error",
        "final_test_error",
        "final_train_loss",
        "params",
        "seconds",
        "iterations",
    ):
        assert key in summary
    assert summary["iterations"] == 12
    assert [p.name for p in list_checkpoints(straight)] == ["ckpt-00000012", "ckpt-00000008"]  # the last two
    model, info = load_run(straight)
    assert set(weights(straight)) == set(model.state_dict())
    assert info.input_shape == (1, 12, 12) and info.config.model == "resnet8"


def test_final_figures_match_evaluate(straight: Path) -> None:
    from reslab.data import load_dataset
    from reslab.data.loader import DeviceLoader

    model, info = load_run(straight)
    ds = load_dataset("synthetic:1x12x12")
    res = evaluate_model(model, DeviceLoader(ds.test_x, ds.test_y, batch_size=50, norm=info.norm))
    summary = json.loads((straight / "summary.json").read_text())
    assert res.n == 128 and res.top5_error <= res.error
    assert res.error == pytest.approx(summary["final_test_error"], abs=1e-6)


def test_existing_run_dir_is_refused_and_overwrite_replaces(tmp_path: Path, straight: Path) -> None:
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tiny(straight))
    (tmp_path / "keep.txt").write_text("mine")
    train(tiny(tmp_path, iterations=4))
    train(tiny(tmp_path, iterations=4, overwrite=True))
    assert (tmp_path / "keep.txt").read_text() == "mine"  # --overwrite only touches reslab's files


def test_resume_with_another_model_is_refused(straight: Path) -> None:
    with pytest.raises(ConfigError, match="model"):
        train(replace(tiny(straight), model="plain8", resume=str(straight), out=None))


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    # 4 steps at a sane constant lr (checkpoints at 2 and 4), then an absurd one.
    cfg = tiny(
        tmp_path, lr=1e30, warmup="constant", warmup_iters=4, warmup_lr=0.01, eval_every=2, iterations=40
    )
    with pytest.raises(TrainingError, match=r"NaN/inf at iteration \d+; try a lower --lr") as err:
        train(cfg)
    bad = int(str(err.value).split("iteration ")[1].split(";")[0])
    assert bad >= 5
    newest = list_checkpoints(tmp_path)[0]
    state_weights, state = load_checkpoint(newest)
    assert state["iteration"] < bad and all(torch.isfinite(t.float()).all() for t in state_weights.values())
    assert not (tmp_path / "summary.json").exists()


def test_grad_clip_and_bf16_run(tmp_path: Path) -> None:
    result = train(tiny(tmp_path, iterations=4, grad_clip=1.0, precision="bf16", channels_last=True))
    assert result.iterations == 4 and torch.isfinite(torch.tensor(result.final_train_loss))


def test_progress_bar_and_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train(tiny(tmp_path / "bar", iterations=4, progress="bar"))
    err = capsys.readouterr().err
    assert "4/4" in err and "test err" in err  # tqdm's counter, and the evaluation line above it
    train(tiny(tmp_path / "lines", iterations=4, progress="lines"))
    err = capsys.readouterr().err
    assert "iter 4 | epoch 0.50 | train loss" in err and "img/s" in err


def test_paper_recipe_runs_with_pixel_mean_crop_flip_and_a_validation_split(tmp_path: Path) -> None:
    cfg = TrainConfig.from_recipe(
        "paper", model="resnet8", dataset="synthetic:3x16x16", iterations=4, batch_size=32, val_split=64,
        eval_every=2, precision="fp32", device="cpu", progress="off", num_threads=1, out=str(tmp_path / "p"),
    )  # fmt: skip
    result = train(cfg)
    meta = json.loads((tmp_path / "p" / "config.json").read_text())
    assert meta["data"]["augment"] == "crop_flip" and meta["data"]["normalization"]["mode"] == "pixel"
    assert torch.tensor(meta["data"]["normalization"]["mean"]).shape == (3, 16, 16)
    assert result.history[-1]["lr"] == pytest.approx(0.001)  # /10 at 50% and 75% of the run
    _, info = load_run(tmp_path / "p")
    assert info.norm.mode == "pixel" and info.config.val_split == 64
