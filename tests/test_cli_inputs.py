"""Bad input at the command line: one line on stderr, exit code 2, never a traceback.

The cases already in ``test_cli_train.py::test_bad_inputs_exit_2_with_one_line`` (unknown model and dataset,
resnet7, zero/negative --batch-size, zero --iterations, negative --lr, unknown --device, a batch larger
than the data) and ``test_absent_gpu_exits_2`` are not repeated; this table covers the rest of the issue's
list and the other commands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import exit_code
from reslab.engine import TrainConfig, train

BASE = [
    "--model", "resnet8", "--dataset", "synthetic:1x12x12", "--batch-size", "64", "--precision", "fp32",
    "--device", "cpu", "--progress", "off", "--num-threads", "1",
]  # fmt: skip
ITERS = ["--iterations", "2"]
_MPS = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("inputs") / "run"
    cfg = TrainConfig(
        model="resnet8", dataset="synthetic:1x12x12", iterations=2, epochs=None, batch_size=64,
        precision="fp32", device="cpu", progress="off", num_threads=1, out=str(out),
    )  # fmt: skip
    train(cfg)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("files")
    text = root / "notes.txt"
    text.write_text("not an image\n")
    fake_png = root / "fake.png"
    fake_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # right magic, no image behind it
    return {"text": text, "fake_png": fake_png, "missing": root / "nope", "file": text}


# (case id, argv with {run} {out} {text} {fake_png} {missing} {file} placeholders, text the line must hold)
CASES: list[tuple[str, list[str], str]] = [
    # sizes: zero, negative, not a number, not finite
    ("epochs-0", ["train", *BASE, "--epochs", "0", "--out", "{out}"], "--epochs"),
    ("epochs-neg", ["train", *BASE, "--epochs", "-3", "--out", "{out}"], "--epochs"),
    ("iterations-neg", ["train", *BASE, "--iterations", "-5", "--out", "{out}"], "--iterations"),
    ("lr-0", ["train", *BASE, *ITERS, "--lr", "0", "--out", "{out}"], "--lr"),
    ("lr-nan", ["train", *BASE, *ITERS, "--lr", "nan", "--out", "{out}"], "--lr"),
    ("lr-inf", ["train", *BASE, *ITERS, "--lr", "inf", "--out", "{out}"], "--lr"),
    ("batch-text", ["train", *BASE, *ITERS, "--batch-size", "lots", "--out", "{out}"], "--batch-size"),
    ("eval-every-0", ["train", *BASE, *ITERS, "--eval-every", "0", "--out", "{out}"], "--eval-every"),
    ("threads-0", ["train", *BASE, *ITERS, "--num-threads", "0", "--out", "{out}"], "--num-threads"),
    ("val-split-neg", ["train", *BASE, *ITERS, "--val-split", "-1", "--out", "{out}"], "--val-split"),
    ("grad-clip-negative", ["train", *BASE, *ITERS, "--grad-clip=-1", "--out", "{out}"], "--grad-clip"),
    ("momentum-1", ["train", *BASE, *ITERS, "--momentum", "1", "--out", "{out}"], "--momentum"),
    ("wd-neg", ["train", *BASE, *ITERS, "--weight-decay", "-1", "--out", "{out}"], "--weight-decay"),
    (
        "smoothing-1",
        ["train", *BASE, *ITERS, "--label-smoothing", "1", "--out", "{out}"],
        "--label-smoothing",
    ),
    ("warmup-neg", ["train", *BASE, *ITERS, "--warmup-epochs", "-1", "--out", "{out}"], "--warmup-epochs"),
    ("milestones", ["train", *BASE, *ITERS, "--milestones", "0.9,0.5", "--out", "{out}"], "milestones"),
    # depths that are neither 6n+2 (basic blocks) nor 9n+2 (bottlenecks)
    ("resnet21", ["train", *BASE, *ITERS, "--model", "resnet21", "--out", "{out}"], "6n+2"),
    ("plain33", ["train", *BASE, *ITERS, "--model", "plain33", "--out", "{out}"], "6n+2"),
    ("preact165", ["train", *BASE, *ITERS, "--model", "preact_resnet165", "--out", "{out}"], "9n+2"),
    ("summary-resnet21", ["summary", "resnet21"], "6n+2"),
    # devices
    ("device-tpu", ["train", *BASE, *ITERS, "--device", "tpu", "--out", "{out}"], "--device"),
    ("predict-device", ["predict", "{run}", "{text}", "--device", "gpu"], "--device"),
    # files: not an image, not there, not a run
    ("predict-text", ["predict", "{run}", "{text}"], "notes.txt"),
    ("predict-fake-png", ["predict", "{run}", "{fake_png}"], "fake.png"),
    ("predict-missing-image", ["predict", "{run}", "{missing}"], "nope"),
    ("predict-top-k-0", ["predict", "{run}", "{text}", "--top-k", "0"], "--top-k"),
    ("predict-missing-run", ["predict", "{missing}", "{text}"], "nope"),
    ("predict-not-a-run", ["predict", "{file}", "{text}"], "notes"),
    ("eval-missing-run", ["eval", "{missing}"], "nope"),
    ("eval-batch-0", ["eval", "{run}", "--batch-size", "0"], "--batch-size"),
    ("eval-unknown-dataset", ["eval", "{run}", "--dataset", "nosuchdata"], "nosuchdata"),
    ("resume-missing", ["train", "--resume", "{missing}"], "nope"),
    ("folder-missing", ["train", *BASE, *ITERS, "--dataset", "folder:{missing}", "--out", "{out}"], "nope"),
    (
        "cifar-offline",
        [
            "train",
            *BASE,
            *ITERS,
            "--dataset",
            "cifar10",
            "--data-dir",
            "{missing}",
            "--no-download",
            "--out",
            "{out}",
        ],
        "cifar",
    ),
    ("export-missing-run", ["export", "{missing}", "--out", "{out}"], "nope"),
]
if not torch.cuda.is_available():
    CASES.append(("eval-cuda-absent", ["eval", "{run}", "--device", "cuda"], "CUDA"))
if not _MPS:
    CASES.append(("train-mps-absent", ["train", *BASE, *ITERS, "--device", "mps", "--out", "{out}"], "MPS"))
    CASES.append(("predict-mps-absent", ["predict", "{run}", "{text}", "--device", "mps"], "MPS"))


@pytest.mark.parametrize(("argv", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path,
    run_dir: Path,
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    needle: str,
) -> None:
    subs = {"run": str(run_dir), "out": str(tmp_path / "out"), **{k: str(v) for k, v in files.items()}}
    assert exit_code([a.format(**subs) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reslab") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert needle.lower() in err.lower(), err
    assert not (tmp_path / "out" / "checkpoints").exists()  # refused before any training


@pytest.mark.parametrize(
    "argv",
    [["train", "--model", "resnet21"], ["predict", "{run}", "{text}"]],
    ids=["train-depth", "predict-text"],
)
def test_real_command_prints_exactly_one_line(
    run_dir: Path, files: dict[str, Path], tmp_path: Path, argv: list[str]
) -> None:
    # Through the installed entry point: no warning, log line or traceback from any library slips in.
    subs = {"run": str(run_dir), **{k: str(v) for k, v in files.items()}}
    proc = subprocess.run(
        [sys.executable, "-m", "reslab", *(a.format(**subs) for a in argv)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stdout == ""
