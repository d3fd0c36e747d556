"""Reads and sizes bounded before the work: files a user can touch go through the one bounded reader (never
a hang, never read whole before a size and memory check), and every configuration value is sized before it
is expanded (YAML aliases, depths, input shapes, synthetic shapes)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import exit_code, one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")
GiB = 1 << 30


@pytest.fixture()
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared tiny run that a test may damage."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def reslab(*argv: str, timeout: float = 90, memory: int | None = None) -> tuple[int, list[str], float]:
    """``reslab ARGV`` in its own process, killed past ``timeout`` seconds (a read that blocks must fail the
    test, not hang it) and past ``memory`` bytes of address space: (exit code, its error lines, seconds)."""

    def limit() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "reslab", *argv], capture_output=True, text=True, timeout=timeout,
            preexec_fn=limit, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"reslab {' '.join(argv)} was still running after {timeout} s")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return proc.returncode, lines, time.monotonic() - started


def assert_one_line(code: int, lines: list[str], *needles: str) -> None:
    assert code == 2 and len(lines) == 1 and lines[0].startswith("reslab"), lines[-20:]
    for needle in needles:
        assert needle in lines[0], lines[0]


TRAIN = [
    "train",
    "--model",
    "resnet8",
    "--dataset",
    "synthetic:1x12x12",
    "--iterations",
    "2",
    "--progress",
    "off",
]


# --- 3. the one bounded reader --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_init_from_a_run_whose_config_is_a_fifo_or_dev_zero_is_one_line(
    run: Path, tmp_path: Path, kind: str
) -> None:
    (run / "config.json").unlink()
    if kind == "fifo":
        os.mkfifo(run / "config.json")
    else:
        (run / "config.json").symlink_to("/dev/zero")
    code, lines, _ = reslab(*TRAIN, "--out", str(tmp_path / "new"), "--init-from", str(run))
    assert_one_line(code, lines, "not a regular file")
    assert not (tmp_path / "new").exists()


def test_a_fifo_is_called_not_a_regular_file_not_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "weights.safetensors"
    os.mkfifo(fifo)
    assert exit_code([*TRAIN, "--out", str(tmp_path / "r"), "--init-from", str(fifo)]) == 2
    err = one_line_error(capsys)
    assert "FIFO (named pipe), not a regular file" in err and "does not exist" not in err
    assert exit_code(["export", str(fifo)]) == 2
    err = one_line_error(capsys)
    assert "not a regular file" in err and "does not exist" not in err


def test_huge_weights_are_refused_from_their_size_before_a_byte_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import reslab.models.weights as weights

    huge = tmp_path / "huge.safetensors"
    with open(huge, "wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB that take no disk
    monkeypatch.setattr(weights, "available_host_memory", lambda: 16 << 20)
    read: list[Path] = []
    real = weights.read_bounded
    monkeypatch.setattr(
        weights, "read_bounded", lambda path, *a, **k: read.append(path) or real(path, *a, **k)
    )
    assert exit_code([*TRAIN, "--out", str(tmp_path / "r"), "--init-from", str(huge)]) == 2
    err = one_line_error(capsys)
    assert "is 64.0 MiB: reading it needs ~128.0 MiB of memory but only 16.0 MiB is free" in err
    assert read == []


@pytest.mark.parametrize("kind", ["huge", "fifo"])
def test_a_huge_or_blocking_sweep_file_is_one_line(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "sweep"
    out.mkdir()
    if kind == "huge":
        with open(out / "compare.json", "wb") as f:
            f.truncate(10 * GiB)  # sparse
    else:
        os.mkfifo(out / "compare.json")
    argv = ["--family", "mlp", "--depths", "1", "--dataset", "synthetic:1x12x12", "--iterations", "2"]
    code, lines, _ = reslab("compare", *argv, "--out", str(out), "--progress", "off", memory=8 * GiB)
    assert_one_line(code, lines, "sweep file", "more than" if kind == "huge" else "not a regular file")


def test_a_diverged_marker_that_is_a_fifo_does_not_hang_the_gather(tmp_path: Path) -> None:
    from helpers import tiny
    from reslab.engine import train
    from reslab.experiments.sweep import Job, diverged_record

    run_dir = tmp_path / "r"
    train(tiny(run_dir, iterations=4))
    os.mkfifo(run_dir / "diverged.json")
    job = Job(0, "plain", 8, 0, "resnet8", tiny(run_dir))
    records: list[object] = []
    reader = threading.Thread(target=lambda: records.append(diverged_record(job)), daemon=True)
    reader.start()
    reader.join(30)  # a blocked read would leave this thread waiting for a writer forever
    assert records, "diverged_record blocked on a FIFO"
    assert records[0].diverged_at == 5  # type: ignore[attr-defined]  # the last metrics line says where


# --- 4. sizes before expansion --------------------------------------------------------------------------

# A "billion laughs": nine levels of ten aliases, 10^9 items once expanded, in under 600 bytes.
BOMB = "model: resnet8\nmodel_kwargs:\n  l0: &l0 [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]\n" + "".join(
    f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9)
)


@pytest.mark.parametrize(
    "argv",
    [["train", "--print-config"], ["compare", "--print-config"], ["ablate", "--list-runs"], ["compare"]],
    ids=["train-print-config", "compare-print-config", "ablate-list-runs", "compare"],
)
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path, argv: list[str]) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB.replace("model: resnet8\n", "") if argv[0] != "train" else BOMB)
    code, lines, seconds = reslab(*argv, "--config", str(bomb), "--out", str(tmp_path / "o"), memory=4 * GiB)
    assert_one_line(code, lines, str(bomb))
    assert seconds < 30 and not (tmp_path / "o").exists()


def test_yaml_values_on_the_command_line_are_bounded_too() -> None:
    from reslab.errors import ConfigError
    from reslab.models.options import parse_entry
    from reslab.settings import load_yaml

    flow = "[" + ", ".join(f"&a{i} [{', '.join([f'*a{i - 1}'] * 10) if i else '1'}]" for i in range(12)) + "]"
    with pytest.raises(ConfigError, match="more than 100 YAML aliases"):
        parse_entry(f"resnet8:widen={flow}")
    deep = "[" * 40 + "]" * 40
    with pytest.raises(ConfigError, match="deeper than 32 levels"):
        load_yaml(deep, "--model-kwargs x")
    assert load_yaml("{shortcut: B, widen: 0.5}", "x") == {"shortcut": "B", "widen": 0.5}


def test_a_huge_depth_is_refused_before_anything_grows_with_it() -> None:
    code, lines, seconds = reslab("ablate", "--depth", "6000002", "--list-runs", memory=4 * GiB)
    assert_one_line(code, lines, "6,000,002", "10,000 layers")
    code, lines, _ = reslab("summary", "resnet" + "9" * 5000)
    assert_one_line(code, lines, "beyond the 10,000 layers")
    assert seconds < 30


def test_a_config_json_with_a_huge_input_shape_is_refused_before_export_builds_anything(run: Path) -> None:
    meta = json.loads((run / "config.json").read_text())
    meta["data"]["input_shape"] = [1, 100_000, 100_000]
    (run / "config.json").write_text(json.dumps(meta))
    code, lines, _ = reslab("export", str(run), "--out", str(run.parent / "m.pt2"), memory=4 * GiB)
    assert_one_line(code, lines, "data.input_shape 1x100000x100000")
    assert not (run.parent / "m.pt2").exists()


def test_a_huge_synthetic_shape_is_refused_before_minutes_of_work(tmp_path: Path) -> None:
    argv = ["train", "--dataset", "synthetic:3x2000x2000", "--model", "resnet8", "--iterations", "2"]
    code, lines, seconds = reslab(*argv, "--out", str(tmp_path / "r"), "--progress", "off")
    assert_one_line(code, lines, "synthetic:3x2000x2000")
    assert seconds < 30 and not (tmp_path / "r").exists()


def test_dataset_statistics_work_in_bounded_slices() -> None:
    # 512 images of 3x512x512 (384 MiB as uint8): the float64 statistics pass must not copy them whole (3 GiB)
    code = (
        "import resource, torch\nfrom reslab.data.stats import stats_of_chunks\n"
        "x = torch.full((512, 3, 512, 512), 7, dtype=torch.uint8)\n"
        "s = stats_of_chunks([x])\nassert abs(float(s.mean[0]) - 7 / 255) < 1e-6\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.strip()) * 1024 < 2 * GiB  # ru_maxrss is in KiB; a whole float64 copy: 6.5 GiB
