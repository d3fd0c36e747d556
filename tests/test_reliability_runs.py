"""Run directories under careless and hostile use: NaN never called good, one writer per run, tampered
run files as one line, unbounded or blocking reads refused, nothing of the user's deleted, memory first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import exit_code, one_line_error, tiny
from reslab.engine import train
from reslab.engine.store.checkpoint import list_checkpoints, load_checkpoint, weights_bytes
from reslab.engine.store.rundir import RunLock
from reslab.errors import CheckpointError, ConfigError, DivergedError
from reslab.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared tiny run that a test may damage."""
    import shutil

    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


# --- NaN is never a result ---------------------------------------------------------------------------------


def test_a_buffer_gone_to_inf_under_a_finite_loss_is_not_checkpointed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reslab.engine.graphs as steps  # the loop's step (eager here, on a CPU) calls train_step there

    real = steps.train_step

    def poisoned(state, x, y, *, lr, iteration):  # type: ignore[no-untyped-def]
        out = real(state, x, y, lr=lr, iteration=iteration)
        if iteration == 6:  # BN running_var overflows; the loss stays finite
            bn = next(m for m in state.forward.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))
        return out

    monkeypatch.setattr(steps, "train_step", poisoned)
    with pytest.raises(DivergedError, match=r"at iteration 8; .*the last good checkpoint \(ckpt-00000004\)"):
        train(tiny(tmp_path / "r", iterations=12, eval_every=4))
    [ckpt] = list_checkpoints(tmp_path / "r")
    weights, _ = load_checkpoint(ckpt)
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    assert json.loads((tmp_path / "r" / "diverged.json").read_text())["iteration"] == 8


def test_eval_and_predict_refuse_nan_weights_with_exit_3(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_model("resnet8", input_shape=(1, 12, 12), num_classes=10)
    with torch.no_grad():
        model.fc.weight.fill_(float("nan"))
    (run / "model.safetensors").write_bytes(weights_bytes(model))  # a valid checksum over NaN weights
    assert exit_code(["eval", str(run)]) == 3
    assert "NaN/inf outputs" in one_line_error(capsys)


def test_a_flipped_bit_in_the_runs_weights_is_caught_by_their_checksum(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-3] ^= 0x40  # a bit of the last tensor's data: still a valid safetensors file
    (run / "model.safetensors").write_bytes(bytes(data))
    assert exit_code(["eval", str(run)]) == 0  # falls back to the verified checkpoint, and says so
    assert "fails its checksum" in capsys.readouterr().err
    alone = run.parent / "weights.safetensors"  # the file on its own (a config beside it): refused
    alone.write_bytes(bytes(data))
    (run.parent / "weights.json").write_text((run / "config.json").read_text())
    assert exit_code(["eval", str(alone)]) == 2
    assert "fails its checksum" in one_line_error(capsys)


def test_a_config_with_std_0_is_refused_on_load(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = json.loads((run / "config.json").read_text())
    meta["data"]["normalization"]["std"] = [[[0.0]]]
    (run / "config.json").write_text(json.dumps(meta))
    assert exit_code(["eval", str(run)]) == 2
    assert "data.normalization.std" in one_line_error(capsys)


# --- one writer per run directory -------------------------------------------------------------------------


def test_a_second_writer_gets_one_line_naming_the_holder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import time, reslab.engine.store.rundir as r, pathlib\n"
         f"with r.RunLock(pathlib.Path({str(out)!r})):\n    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        argv = ["train", "--model", "resnet8", "--dataset", "synthetic:1x12x12", "--iterations", "2"]
        assert exit_code([*argv, "--out", str(out), "--progress", "off", "--overwrite"]) == 2
        assert f"being written by process {holder.pid}" in one_line_error(capsys)
        assert not (out / "config.json").exists()  # refused before writing anything
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{dead.pid}\n")
    with RunLock(tmp_path):
        pass
    assert f"from process {dead.pid}, which is no longer running" in capsys.readouterr().err


def test_two_compares_on_one_folder(tmp_path: Path) -> None:
    with (
        RunLock(tmp_path, what="compare sweep"),
        pytest.raises(ConfigError, match="being written by process"),
    ):
        from reslab.experiments import compare

        compare(family="mlp", depths=(1,), dataset="synthetic:1x12x12", iterations=2, out=str(tmp_path))


def test_two_ablates_on_one_folder(tmp_path: Path) -> None:
    from reslab.experiments import ablate

    with (
        RunLock(tmp_path, what="ablate sweep"),
        pytest.raises(ConfigError, match="being written by process"),
    ):
        ablate(depth=8, seeds=1, dataset="synthetic:1x12x12", iterations=2, out=str(tmp_path))
    assert not list(tmp_path.glob("*-s0"))  # nothing trained


# --- tampered run files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"lr": None}, "lr must not be null"),
        ({"lr": "0.1"}, "lr must be a number"),
        ({"iterations": -3}, "config.json: --iterations must be a positive integer"),
        ({"model_kwargs": ["x"]}, "model_kwargs must be a mapping"),
    ],
)
def test_a_tampered_config_is_one_line_on_resume(
    run: Path, capsys: pytest.CaptureFixture[str], change: dict, needle: str
) -> None:
    meta = json.loads((run / "config.json").read_text())
    meta["config"].update(change)
    (run / "config.json").write_text(json.dumps(meta))
    assert exit_code(["train", "--resume", str(run)]) == 2
    err = one_line_error(capsys)
    assert needle in err


def test_bad_metrics_lines_are_dropped_with_a_warning(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = (run / "metrics.jsonl").read_bytes()
    (run / "metrics.jsonl").write_bytes(b'{"iteration": "abc"}\n\xff\xfe not utf-8\n' + good)
    assert exit_code(["train", "--resume", str(run), "--iterations", "12"]) == 0
    assert "dropped 2 invalid line(s)" in capsys.readouterr().err
    its = [json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert its == sorted(its) and its[-1] == 12


# --- bounded, non-blocking reads of run files -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "directory"])
def test_run_files_that_are_not_regular_files_are_refused_without_hanging(
    run: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    target = run / "config.json"
    target.unlink()
    if kind == "dev_zero":
        target.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    started = time.monotonic()
    assert exit_code(["train", "--resume", str(run)]) == 2
    assert time.monotonic() - started < 30
    assert "config" in one_line_error(capsys)


def test_a_manifest_that_is_a_fifo_falls_back_to_the_older_checkpoint(run: Path) -> None:
    newest = list_checkpoints(run)[0]
    (newest / "manifest.json").unlink()
    os.mkfifo(newest / "manifest.json")
    with pytest.raises(CheckpointError, match="manifest"):
        load_checkpoint(newest)


# --- nothing of the user's destroyed; smaller classes -----------------------------------------------------


def test_overwrite_never_deletes_through_a_link(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    import shutil

    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").symlink_to(precious)
    argv = [
        "train",
        "--model",
        "resnet8",
        "--dataset",
        "synthetic:1x12x12",
        "--iterations",
        "2",
        "--overwrite",
    ]
    assert exit_code([*argv, "--out", str(run), "--progress", "off"]) == 2
    assert "symbolic link" in one_line_error(capsys)
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert (run / "config.json").is_file() and (run / "summary.json").is_file()  # nothing deleted first


@pytest.mark.parametrize("argv", [["--out", "/"], ["--model", "nosuchnet"], ["--dataset", "nosuchset"]])
def test_a_rejected_train_leaves_no_out_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list
) -> None:
    out = tmp_path / "never"
    base = ["train", "--iterations", "2", "--progress", "off"]
    args = [*base, *argv] if argv[0] == "--out" else [*base, *argv, "--out", str(out)]
    assert exit_code(args) == 2
    one_line_error(capsys)
    assert not out.exists()


def test_a_run_killed_before_its_first_checkpoint_restarts_on_resume(tmp_path: Path, capsys) -> None:
    out = tmp_path / "early"
    train(tiny(out, iterations=4, eval_every=4))
    for p in (out / "checkpoints", out / "summary.json", out / "model.safetensors"):
        import shutil

        shutil.rmtree(p) if p.is_dir() else p.unlink()
    assert exit_code(["train", "--resume", str(out)]) == 0
    assert "starting the run over from iteration 0" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["iterations"] == 4


def test_export_refuses_to_replace_the_runs_own_files(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (run / "config.json").read_bytes()
    assert exit_code(["export", str(run), "--out", str(run / "config.json"), "--overwrite"]) == 2
    assert "file of the run itself" in one_line_error(capsys)
    assert (run / "config.json").read_bytes() == before


def test_seeds_beyond_64_bits_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["train", "--seed", str(2**64), "--iterations", "1"]) == 2
    assert "--seed must be in" in one_line_error(capsys)


def test_studies_check_memory_and_their_output_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["gradients", "resnet1202", "--batch-size", "1000000", "--out", str(tmp_path / "g")]
    assert exit_code(argv) == 2
    assert "use a smaller --batch-size" in one_line_error(capsys)
    assert not (tmp_path / "g").exists()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        argv = ["gradients", "resmlp2", "--steps", "0", "--out", str(ro / "out")]
        if os.geteuid() != 0:  # root writes anywhere: the permission case cannot be shown as root
            assert exit_code(argv) == 2
            assert "cannot write" in one_line_error(capsys)
    finally:
        ro.chmod(0o700)
    (tmp_path / "file").write_text("x")
    assert exit_code(["gradients", "resmlp2", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in one_line_error(capsys)


def test_predict_names_a_directory_or_fifo_as_such(run: Path, tmp_path: Path, capsys) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for path, needle in ((tmp_path, "directory"), (fifo, "FIFO")):
        assert exit_code(["predict", str(run), str(path)]) == 2
        assert needle in one_line_error(capsys)


def test_top_level_weights_round_trip_with_their_checksum(run: Path) -> None:
    state = load_file(str(run / "model.safetensors"))
    from safetensors import safe_open

    with safe_open(str(run / "model.safetensors"), "pt") as f:
        assert len(f.metadata()["reslab_sha256"]) == 64
    assert state.keys()
