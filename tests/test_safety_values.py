"""Bad values are one line, never a traceback, and NaN is never a result: numbers from files and flags are
range-checked, worker errors come back as their own line, a run without test images says so."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import exit_code, one_line_error, tiny
from reslab.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = ["train", "--model", "resnet8", "--iterations", "2", "--progress", "off", "--num-threads", "1"]


@pytest.fixture()
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared tiny run that a test may damage."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def image_folder(root: Path, per_class: int, size: int = 16) -> Path:
    """``root/a`` and ``root/b``, ``per_class`` random PNGs each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


# --- 5. no tracebacks on bad values ---------------------------------------------------------------------


def test_an_iteration_of_ten_to_the_400_in_metrics_is_dropped_not_a_traceback(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"iteration": 10**400, "train_error": 0.5}) + "\n")
        f.write('{"iteration": 9, "train_error": 1e400, "test_error": 0.5}\n')  # 1e400 reads as inf
    out = tmp_path / "curves.png"
    assert exit_code(["plot", str(run), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "dropped 1 invalid line(s)" in err and "Traceback" not in err and out.is_file()


def test_the_sweep_gather_survives_huge_numbers_in_run_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = [
        "compare",
        "--family",
        "mlp",
        "--depths",
        "1",
        "--dataset",
        "synthetic:1x12x12",
        "--iterations",
        "2",
    ]
    sweep += ["--batch-size", "64", "--num-threads", "1", "--progress", "off", "--out", str(tmp_path / "s")]
    assert exit_code(sweep) == 0
    done = tmp_path / "s" / "plainmlp1-s0"
    with open(done / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"iteration": 10**400}) + "\n")
    summary = json.loads((done / "summary.json").read_text())
    (done / "summary.json").write_text(json.dumps({**summary, "seconds": 10**400}))
    assert exit_code(sweep) == 0  # the bad summary is unreadable: the run is finished again, no traceback
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("value", ["1e300", "inf", "nan"])
def test_numbers_beyond_any_setting_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    folder = image_folder(tmp_path / "images", 4)
    argv = [*TRAIN, "--dataset", f"folder:{folder}", "--batch-size", "4", "--out", str(tmp_path / "r")]
    assert exit_code([*argv, "--data-memory-gib", value]) == 2
    assert "--data-memory-gib must be a number (finite, within ±1e+100)" in one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_ranges_are_printed_as_they_are_checked() -> None:
    from reslab.settings import check_range, range_text

    assert range_text(0, math.inf, low_open=True) == "(0, inf)"
    assert range_text(0, 1, high_open=True) == "[0, 1)"
    with pytest.raises(ConfigError, match=r"--lr must be in \(0, inf\), got -1"):
        check_range("--lr", -1, 0, math.inf, low_open=True)
    with pytest.raises(ConfigError, match=r"\(0, inf\), got inf"):
        check_range("--lr", math.inf, 0, math.inf, low_open=True)


def test_a_user_file_named_tb_is_one_line_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "tb").write_text("my notes, not a folder")
    assert (
        exit_code([*TRAIN, "--dataset", "synthetic:1x12x12", "--out", str(out), "--logger", "tensorboard"])
        == 2
    )
    assert "TensorBoard folder" in one_line_error(capsys)
    assert (out / "tb").read_text() == "my notes, not a folder"
    from reslab.engine.loggers import check_logger_paths

    with pytest.raises(ConfigError, match="is a file, not a folder"):  # what a run can ask before it writes
        check_logger_paths(("csv", "tensorboard"), out)


def test_an_unreadable_class_folder_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = image_folder(tmp_path / "images", 4)
    real = Path.iterdir

    def iterdir(self: Path):  # type: ignore[no-untyped-def]
        if self == folder / "b":  # as chmod 000 would, for a user that is not root
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    argv = [*TRAIN, "--dataset", f"folder:{folder}", "--batch-size", "4", "--out", str(tmp_path / "r")]
    assert exit_code(argv) == 2
    assert f"cannot read folder {folder / 'b'}: Permission denied" in one_line_error(capsys)


def test_an_unreadable_class_folder_is_one_line_for_real(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a folder whatever its mode; the test above simulates it")
    folder = image_folder(tmp_path / "images", 4)
    (folder / "b").chmod(0)
    try:
        argv = [*TRAIN, "--dataset", f"folder:{folder}", "--batch-size", "4", "--out", str(tmp_path / "r")]
        assert exit_code(argv) == 2
        assert "Permission denied" in one_line_error(capsys)
    finally:
        (folder / "b").chmod(0o755)


def test_a_truncated_image_in_a_streamed_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = image_folder(tmp_path / "images", 10)
    broken = folder / "a" / "3.png"
    broken.write_bytes(broken.read_bytes()[:100])
    argv = [*TRAIN, "--dataset", f"folder:{folder}", "--batch-size", "4", "--out", str(tmp_path / "r")]
    assert exit_code([*argv, "--data-memory-gib", "0.000001", "--data-workers", "1"]) == 2  # streamed
    err = one_line_error(capsys)
    assert f"cannot read image {broken}" in err and "Traceback" not in err and "worker" not in err


def test_the_one_line_of_an_error_raised_in_a_worker() -> None:
    from reslab.errors import DataError, one_line

    wrapped = DataError(
        "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise DataError(...)\n'
        "reslab.errors.DataError: cannot read image a.png (OSError: truncated); replace or remove it\n"
    )
    assert one_line(wrapped) == "cannot read image a.png (OSError: truncated); replace or remove it"
    assert one_line(DataError("plain")) == "plain"


# --- 6. no NaN as a result ------------------------------------------------------------------------------


def _no_nan(text: str) -> object:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in a file reslab wrote")

    return json.loads(text, parse_constant=refuse)


def test_a_run_with_no_test_images_says_so_and_writes_no_nan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = image_folder(tmp_path / "two", 1)  # two images: the 80/20 split leaves none for the test split
    out = tmp_path / "r"
    assert exit_code([*TRAIN, "--dataset", f"folder:{folder}", "--batch-size", "1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "nan" not in (captured.out + captured.err).lower()
    assert "no test error: the test split of" in captured.out
    summary = _no_nan((out / "summary.json").read_text())
    assert isinstance(summary, dict) and summary["final_test_error"] is None
    assert any("no images" in note for note in summary["notes"])
    for line in (out / "metrics.jsonl").read_text().splitlines():
        assert _no_nan(line)["test_error"] is None  # type: ignore[index]
    from reslab.engine.store.runs import read_run_result

    again = read_run_result(out)  # a finished run without test figures still reads back (a sweep reuses it)
    assert not again.measured_test and "nan" not in str(again).lower()


# --- minor ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["compare", "gradients"])
def test_the_root_or_home_folder_is_no_out_for_any_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    args = {
        "compare": ["--family", "mlp", "--depths", "1", "--iterations", "2", "--progress", "off"],
        "gradients": ["plainmlp1", "resmlp1", "--steps", "0"],
    }[command]
    assert exit_code([command, *args, "--dataset", "synthetic:1x12x12", "--out", str(home)]) == 2
    assert "is not a folder of its own" in one_line_error(capsys)
    assert list(home.iterdir()) == []
    from reslab.engine.store.rundir import refuse_shared_folder

    with pytest.raises(ConfigError, match="--out / is not a folder of its own"):
        refuse_shared_folder(Path("/"))


def test_plot_never_replaces_a_users_png_unasked(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "holiday.png"
    mine.write_bytes(b"\x89PNG my holiday")
    assert exit_code(["plot", str(tiny_run), "--out", str(mine)]) == 2
    assert "already exists; use --overwrite" in one_line_error(capsys)
    assert mine.read_bytes() == b"\x89PNG my holiday"
    assert exit_code(["plot", str(tiny_run), "--out", str(mine), "--overwrite"]) == 0
    assert mine.read_bytes() != b"\x89PNG my holiday"


def test_the_out_of_memory_line_promises_only_a_checkpoint_that_exists(run: Path, tmp_path: Path) -> None:
    import torch

    from reslab.engine.devices.memory import oom_error

    cpu = torch.device("cpu")
    assert "(ckpt-00000008) is kept" in str(oom_error(64, cpu, False, run_dir=run))
    (tmp_path / "fresh").mkdir()
    assert "no checkpoint was written yet" in str(oom_error(64, cpu, False, run_dir=tmp_path / "fresh"))
    assert "is kept" not in str(oom_error(64, cpu, False))


def test_wrong_types_to_the_python_api_are_one_line_at_the_edge(tmp_path: Path) -> None:
    import reslab
    from reslab.settings import require_config

    calls = {
        "compare(): depths must be a list of integers, got '8'": lambda: reslab.compare(depths="8"),
        "compare(): epochs must be an integer, got '3'": lambda: reslab.compare(epochs="3"),
        "compare() takes a CompareConfig": lambda: reslab.compare("resnet20"),
        "ablate(): depth must be an integer, got '20'": lambda: reslab.ablate(depth="20"),
        "gradients(): steps must be an integer, got '2'": lambda: reslab.gradients(
            models="resmlp1", steps="2"
        ),
        "train() takes a TrainConfig, got dict": lambda: require_config(
            {"model": "x"}, reslab.TrainConfig, "train()"
        ),
    }
    for message, call in calls.items():
        with pytest.raises(ConfigError) as err:
            call()
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not list(Path.cwd().glob("runs/compare-*-8*"))
    train_cfg = tiny(tmp_path / "r", lr="0.1")
    with pytest.raises(ConfigError, match=r"--lr must be a number, got '0\.1'"):
        reslab.train(train_cfg)
