"""``reslab train / eval / predict / export`` end to end on a tiny run, and their bad-input table."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from helpers import exit_code, one_line_error
from reslab.cli import main

TINY = [
    "--model", "resnet8", "--dataset", "synthetic:1x12x12", "--iterations", "8", "--batch-size", "64",
    "--eval-every", "4", "--precision", "fp32", "--device", "cpu", "--progress", "off", "--num-threads", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def test_train_writes_a_run_and_prints_a_summary(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *TINY, "--out", str(run_dir.parent / "second")]) == 0
    out = capsys.readouterr().out
    assert "final training error" in out and "test error" in out
    assert {"config.json", "metrics.jsonl", "model.safetensors", "summary.json", "checkpoints"} <= {
        p.name for p in run_dir.iterdir()
    }
    assert json.loads((run_dir / "summary.json").read_text())["iterations"] == 8


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--model", "resnet7"], "resnet7"),
        (["--model", "nosuchnet"], "nosuchnet"),
        (["--dataset", "nosuchdata"], "nosuchdata"),
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "-4"], "--batch-size"),
        (["--iterations", "0"], "--iterations"),
        (["--lr", "-1"], "--lr"),
        (["--device", "tpu"], "--device"),
        (["--schedule", "sometimes"], "--schedule"),
        (["--batch-size", "100000"], "--batch-size"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert exit_code(["train", *TINY, "--out", str(tmp_path / "r"), *argv]) == 2
    assert needle in one_line_error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_absent_gpu_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *TINY, "--out", str(tmp_path / "r"), "--device", "cuda"]) == 2
    assert "CUDA" in one_line_error(capsys)


def test_existing_run_dir_refused(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (run_dir / "model.safetensors").read_bytes()
    assert main(["train", *TINY, "--out", str(run_dir)]) == 2
    assert "--resume" in one_line_error(capsys)
    assert (run_dir / "model.safetensors").read_bytes() == before  # nothing was overwritten


def test_unwritable_out_exits_2_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["train", *TINY, "--out", str(blocker / "run")]) == 2
    assert "cannot write" in one_line_error(capsys)


def test_resume_with_other_model_exits_2(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", str(run_dir), "--model", "plain8"]) == 2
    assert "model" in one_line_error(capsys)


def test_resume_shorter_than_the_run_is_refused_and_changes_nothing(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != ".lock"}
    assert main(["train", "--resume", str(run_dir), "--iterations", "4"]) == 2
    assert "already at iteration 8, past the 4 asked for" in one_line_error(capsys)
    assert {p: (run_dir / p).read_bytes() for p in files} == files  # config.json keeps its length


def test_ctrl_c_checkpoints_exits_130_and_cli_resume_matches(
    tmp_path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reslab.engine.loop as engine

    real = engine.evaluate_model
    calls = []

    def evaluate_then_ctrl_c(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C during the first evaluation
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate_model", evaluate_then_ctrl_c)
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 130
    assert (out / "checkpoints" / "ckpt-00000004").is_dir() and not (out / "summary.json").exists()
    monkeypatch.setattr(engine, "evaluate_model", real)
    assert main(["train", "--resume", str(out)]) == 0  # flags come from the run's config.json
    a, b = load_file(str(run_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", *TINY, "--out", str(tmp_path / "r"), "--lr", "1e30", "--warmup-epochs", "0"]
    assert main(argv) == 3
    assert "NaN" in one_line_error(capsys)


def test_eval_prints_loss_error_top5(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "loss" in out and "error" in out and "top-5 error" in out
    assert main(["eval", str(run_dir / "model.safetensors"), "--dataset", "synthetic:1x12x12"]) == 0
    assert main(["eval", str(run_dir), "--dataset", "synthetic:3x12x12"]) == 2  # wrong input shape
    assert main(["eval", str(run_dir.parent / "missing")]) == 2


def test_predict_images(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rgb = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 20, 3), dtype=np.uint8)).save(rgb)
    grey = tmp_path / "digit.png"
    Image.fromarray(np.zeros((12, 12), dtype=np.uint8), mode="L").save(grey)
    assert main(["predict", str(run_dir), str(rgb), str(grey), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(rgb)) and lines[0].count("%") == 2
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert main(["predict", str(run_dir), str(text)]) == 2
    assert "notes.png" in one_line_error(capsys)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_export_torchscript(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    assert main(["export", str(run_dir), "--format", "torchscript", "--out", str(out)]) == 0
    scripted = torch.jit.load(str(out))
    assert scripted(torch.zeros(2, 1, 12, 12)).shape == (2, 10)
    assert main(["export", str(run_dir), "--format", "torchscript", "--out", str(out)]) == 2  # no overwrite


def test_export_onnx_without_onnx_says_how_to_install(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    assert main(["export", str(run_dir), "--format", "onnx"]) == 2
    assert 'pip install "reslab[onnx]"' in one_line_error(capsys)


def test_export_onnx_is_one_self_contained_file(run_dir: Path, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    out = tmp_path / "m.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no external-data file left beside it
    onnx.checker.check_model(onnx.load(str(out)))


def test_a_warm_up_covering_the_run_is_one_line_at_the_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *TINY, "--warmup-iters", "8", "--out", str(tmp_path / "w")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("reslab: warning: the warm-up (8 iterations) covers the whole run of 8")
