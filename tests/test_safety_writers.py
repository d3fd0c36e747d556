"""Writers under concurrency and hostile folders: the lock is taken before anything is deleted, nothing is
written or deleted through a link, only reslab's exact names are pruned, and a full disk is one line."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers import exit_code, one_line_error, tiny
from reslab import files
from reslab.engine import TrainConfig, train
from reslab.engine.store import rundir
from reslab.engine.store.checkpoint import list_checkpoints, save_checkpoint
from reslab.errors import ConfigError, StorageError

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = [
    "train", "--model", "resnet8", "--dataset", "synthetic:1x12x12", "--iterations", "2", "--progress", "off",
]  # fmt: skip
SWEEP = [
    "--family", "mlp", "--depths", "1", "--dataset", "synthetic:1x12x12", "--iterations", "2",
    "--batch-size", "64", "--device", "cpu", "--precision", "fp32", "--num-threads", "1", "--progress", "off",
]  # fmt: skip


@pytest.fixture()
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared tiny run (checkpoints at 4 and 8) that a test may damage."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


@contextmanager
def held_by_another_process(folder: Path) -> Iterator[subprocess.Popen[str]]:
    """``folder``'s run lock, held by a live second process (as a training run holds it) for the block."""
    code = (
        "import pathlib, time, reslab.engine.store.rundir as r\n"
        f"with r.RunLock(pathlib.Path({str(folder)!r})):\n    print('locked', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. lock first: a second writer refuses before deleting anything -------------------------------------


def test_overwrite_of_a_live_run_refuses_before_deleting_anything(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(run)
    with held_by_another_process(run) as holder:
        assert exit_code([*TRAIN, "--out", str(run), "--overwrite"]) == 2
        assert f"being written by process {holder.pid}" in one_line_error(capsys)
    after = _snapshot(run)
    assert {k: v for k, v in after.items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"
    }


def test_a_second_run_index_on_an_unfinished_run_refuses_before_deleting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    assert exit_code(["compare", *SWEEP, "--out", str(out), "--run-index", "0"]) == 0
    live = out / "plainmlp1-s0"
    # as it is seconds after it started: config.json written, no checkpoint, no summary yet
    shutil.rmtree(live / "checkpoints")
    (live / "summary.json").unlink()
    capsys.readouterr()
    with held_by_another_process(live) as holder:
        assert exit_code(["compare", *SWEEP, "--out", str(out), "--run-index", "0"]) == 2
        assert f"being written by process {holder.pid}" in one_line_error(capsys)
    assert (live / "config.json").is_file() and (live / "metrics.jsonl").is_file()


def test_new_run_dir_clears_only_under_the_lock_and_keeps_it(run: Path) -> None:
    with (
        held_by_another_process(run),
        pytest.raises(ConfigError, match="being written by process"),
        rundir.new_run_dir(run, overwrite=True),
    ):
        pass
    assert (run / "config.json").is_file() and list_checkpoints(run)
    with rundir.new_run_dir(run, overwrite=True) as opened:
        assert opened == run and not (run / "config.json").exists() and not list_checkpoints(run)
        errors: list[BaseException] = []

        def second_writer() -> None:  # another thread of this process is another writer too
            try:
                with rundir.RunLock(run):
                    pass
            except ConfigError as err:
                errors.append(err)

        t = threading.Thread(target=second_writer)
        t.start()
        t.join()
        assert errors, "the lock must stay held for the whole block"
    with rundir.RunLock(run):  # and be released after it
        pass


def test_pruning_and_metrics_rewrites_refuse_while_another_process_holds_the_run(run: Path) -> None:
    names = [p.name for p in list_checkpoints(run)]
    metrics = (run / "metrics.jsonl").read_bytes()
    with held_by_another_process(run):
        with pytest.raises(ConfigError, match="being written by process"):
            save_checkpoint(run, 12, b"not reached", {})
        with pytest.raises(ConfigError, match="being written by process"):
            rundir.truncate_metrics(run, 0)
    assert [p.name for p in list_checkpoints(run)] == names
    assert (run / "metrics.jsonl").read_bytes() == metrics


# --- 2. one writer that refuses links; deletes by exact name only ---------------------------------------


def test_pruning_and_overwrite_delete_only_the_exact_checkpoint_names(run: Path) -> None:
    backup = run / "checkpoints" / "ckpt-00000001-backup"
    backup.mkdir()
    (backup / "notes.txt").write_text("why iteration 1 was interesting")
    (run / "checkpoints" / "ckpt-old").mkdir()
    resume = TrainConfig(resume=str(run), iterations=16, progress="off", num_threads=1)
    train(resume)  # two more checkpoints (12, 16): 4 and 8 are pruned
    assert [p.name for p in list_checkpoints(run)] == ["ckpt-00000016", "ckpt-00000012"]
    assert (backup / "notes.txt").read_text() == "why iteration 1 was interesting"
    train(tiny(run, overwrite=True))
    assert (backup / "notes.txt").is_file() and (run / "checkpoints" / "ckpt-old").is_dir()
    assert [p.name for p in list_checkpoints(run)] == ["ckpt-00000012", "ckpt-00000008"]


def test_overwrite_removes_the_old_tensorboard_events_and_csv(run: Path) -> None:
    (run / "tb").mkdir()
    old = run / "tb" / "events.out.tfevents.1.host.1.0"
    old.write_bytes(b"old run")
    (run / "tb" / "my-notes.txt").write_text("mine")
    (run / "metrics.csv").write_text("iteration\n99\n")
    train(tiny(run, overwrite=True))
    assert not old.exists() and (run / "tb" / "my-notes.txt").is_file()
    assert not (run / "metrics.csv").exists()


def test_the_writer_never_writes_through_a_link(tmp_path: Path) -> None:
    mine = tmp_path / "mine.txt"
    mine.write_text("the user's file")
    link = tmp_path / "results.json"
    link.symlink_to(mine)
    with pytest.raises(StorageError, match="symbolic link"):
        files.write_atomic(link, b"{}")
    with pytest.raises(StorageError, match="symbolic link"):
        files.append_bytes(link, b"{}\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(StorageError, match="FIFO"):
        files.append_bytes(fifo, b"x")  # refused at once, never waiting for a reader
    assert mine.read_text() == "the user's file" and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "mine.txt", "results.json"]


def test_sweep_outputs_and_run_folders_are_never_written_through_links(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "plainmlp1-s0").symlink_to(user)  # a run folder that is a link to the user's folder
    assert exit_code(["compare", *SWEEP, "--out", str(out)]) == 2
    assert "symbolic link" in one_line_error(capsys)
    assert sorted(p.name for p in user.iterdir()) == ["thesis.tex"]
    (out / "plainmlp1-s0").unlink()
    (out / "results.json").symlink_to(user / "thesis.tex")  # an output that is a link to the user's file
    assert exit_code(["compare", *SWEEP, "--out", str(out)]) == 2
    assert "symbolic link" in one_line_error(capsys)
    assert (user / "thesis.tex").read_text() == "years of work"


def test_an_analysis_json_that_is_a_link_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine.json"
    mine.write_text("{}")
    out = tmp_path / "g"
    out.mkdir()
    (out / "gradients.json").symlink_to(mine)
    argv = ["gradients", "plainmlp1", "resmlp1", "--dataset", "synthetic:1x12x12", "--out", str(out)]
    assert exit_code([*argv, "--batch-size", "16", "--steps", "0"]) == 2
    assert "symbolic link" in one_line_error(capsys)
    assert mine.read_text() == "{}"


def test_checkpoints_folder_that_is_a_link_is_never_written_into(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "ckpt-00000004").mkdir()  # a name reslab prunes, in the folder the link points to
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").symlink_to(user)
    assert exit_code(["train", "--resume", str(run), "--iterations", "16", "--progress", "off"]) == 2
    assert "symbolic link" in one_line_error(capsys)
    assert [p.name for p in user.iterdir()] == ["ckpt-00000004"]


# --- a full disk under an export: one line, exit 2, no C++ abort, nothing left ----------------------------


@pytest.mark.parametrize("fmt", ["torch-export", "torchscript"])
def test_export_to_a_full_disk_is_one_line_and_leaves_nothing(
    tiny_run: Path, tmp_path: Path, fmt: str
) -> None:
    full = tmp_path / "full"
    full.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)]).returncode
    ):
        pytest.skip("needs a tiny tmpfs (root) to fill")
    try:
        argv = ["-m", "reslab", "export", str(tiny_run), "--format", fmt, "--out", str(full / "m.out")]
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("reslab")]
        assert proc.returncode == 2, proc.stderr[-2000:]  # not 134: torch's C++ writer never sees the disk
        assert len(errors) == 1 and "No space left on device; free some disk space" in errors[0]
        assert os.listdir(full) == []
    finally:
        subprocess.run(["umount", str(full)], check=False)


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model.pt2"
    target.write_bytes(b"old")
    real = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match="No space left on device; free some disk space"):
        files.write_atomic(target, b"new" * 1000, "export file")
    monkeypatch.setattr(os, "fsync", real)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.pt2"]
