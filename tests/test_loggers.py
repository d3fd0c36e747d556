"""Logging where users look: --logger csv / tensorboard / wandb fed from the evaluation points, read back;
``reslab plot`` draws runs' curves; downloads show a progress bar on a terminal."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path

import pytest

from helpers import exit_code, one_line_error, tiny
from reslab.engine import TrainConfig, train
from reslab.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def _jsonl(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_csv_and_tensorboard_get_every_figure_of_every_evaluation_point(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(tiny(run, logger=("csv", "tensorboard")))
    records = _jsonl(run)
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [4, 8, 12] == [r["iteration"] for r in records]
    assert all(
        float(row["lr"]) == rec["lr"] and float(row["test_loss"]) == rec["test_loss"]
        for row, rec in zip(rows, records)
    )
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/test", "error/train", "error/test", "opt/lr", "speed/images_per_s"} <= tags
    lr = events.Scalars("opt/lr")
    assert [e.step for e in lr] == [4, 8, 12]
    assert [e.value for e in lr] == pytest.approx([r["lr"] for r in records])
    assert [e.value for e in events.Scalars("speed/images_per_s")] == pytest.approx(
        [r["images_per_s"] for r in records]
    )


def test_a_resumed_run_keeps_metrics_csv_in_step_with_metrics_jsonl(tmp_path: Path) -> None:
    run = tmp_path / "run"

    def stop_at_8(metrics: dict) -> None:
        if metrics["iteration"] == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny(run, logger=("csv",)), callback=stop_at_8)
    train(TrainConfig(resume=str(run), progress="off"))
    with open(run / "metrics.csv") as f:
        assert [int(r["iteration"]) for r in csv.DictReader(f)] == [4, 8, 12]


def test_a_missing_logger_package_is_one_line_naming_the_extra(monkeypatch, capsys) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "tensorboard" else real(n, *a)
    )
    assert exit_code(["train", "--logger", "csv,tensorboard", "--print-config"]) == 2
    assert 'pip install "reslab[tensorboard]"' in one_line_error(capsys)
    with pytest.raises(ConfigError, match="unknown --logger 'mlflow'; choose from tensorboard, csv, wandb"):
        TrainConfig(logger=("mlflow",)).validate()


def test_wandb_logs_offline_into_the_run_directory(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # never the network in a test
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train(tiny(run, iterations=4, logger=("wandb",)))
    assert list((run / "wandb").glob("offline-run-*"))


def test_plot_draws_several_runs(tiny_run: Path, tmp_path: Path, capsys) -> None:
    from reslab.plots import plot_runs

    other = tmp_path / "other"
    train(tiny(other, iterations=8, lr=0.05))
    out = tmp_path / "curves.png"
    assert exit_code(["plot", str(tiny_run), str(other), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {out}" in capsys.readouterr().out
    fig = plot_runs([tiny_run, other])
    assert fig.axes[0].get_legend_handles_labels()[1] == ["run", "other"]  # one colour per run
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]  # then the line-style key
    assert legend[2:] == ["dashed: training (train mode, running)", "solid: test"]
    assert exit_code(["plot", str(tmp_path)]) == 2
    assert "has no metrics.jsonl; pass a reslab run directory" in one_line_error(capsys)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_download_shows_a_progress_bar_on_a_terminal_only(tmp_path: Path, monkeypatch) -> None:
    import hashlib

    from reslab.data import download
    from test_data_download import _Server

    server = _Server()
    try:
        body = bytes(range(256)) * 400
        server.files["/f.bin"] = body
        md5 = hashlib.md5(body).hexdigest()
        tty = _Terminal()
        monkeypatch.setattr("sys.stderr", tty)
        download.download_file([f"{server.url}/f.bin"], tmp_path / "f.bin", md5=md5, size=len(body))
        assert "\rf.bin:" in tty.getvalue() and "/100k" in tty.getvalue()  # tqdm: name, total bytes
        pipe = io.StringIO()
        monkeypatch.setattr("sys.stderr", pipe)
        download.download_file([f"{server.url}/f.bin"], tmp_path / "g.bin", md5=md5, size=len(body))
        assert pipe.getvalue().count("\n") == 1 and "downloading" in pipe.getvalue()  # one line, no bar
    finally:
        server.close()


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("missing/curves.png", "does not exist; create it or choose another --out"),
        ("curves.txt", "is not a .png file name"),
        (".", "is not a .png file name"),
    ],
)
def test_plot_refuses_a_bad_out_in_one_line(
    tiny_run: Path, tmp_path: Path, capsys, out: str, message: str
) -> None:
    assert exit_code(["plot", str(tiny_run), "--out", str(tmp_path / out)]) == 2
    assert message in one_line_error(capsys)
