"""``reslab gradients | responses | landscape`` end to end on tiny models, synthetic data and a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reslab.cli import main

DATA = ["--dataset", "synthetic:1x8x8"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run made by the engine: resnet8 on synthetic 1x8x8 images, 4 steps."""
    from reslab.engine import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "resnet8-run"
    train(
        TrainConfig(
            model="resnet8", dataset="synthetic:1x8x8", iterations=4, epochs=None, batch_size=64,
            warmup_epochs=0.0, precision="fp32", device="cpu", progress="off", num_threads=1, out=str(out),
        )
    )  # fmt: skip
    return out


def _png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_gradients_cli_writes_png_json_and_table(tmp_path, capsys):
    rc = main(["gradients", "--models", "plainmlp12,resmlp12", *DATA, "--steps", "2", "--batch-size", "16",
               "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    _png(tmp_path / "gradients.png")
    data = json.loads((tmp_path / "gradients.json").read_text())
    assert [m["model_name"] for m in data["models"]] == ["plainmlp12", "resmlp12"]
    for m in data["models"]:
        assert [s["step"] for s in m["snapshots"]] == [0, 2]
        for s in m["snapshots"]:
            assert len(s["weight_grad_norms"]) == len(s["weight_names"]) == 2 * 12 + 2
            assert len(s["block_grad_norms"]) == 12
            assert s["verdict"] in ("vanishing", "healthy", "exploding")
    plain, res = data["models"]
    assert plain["snapshots"][0]["verdict"] == "vanishing" and res["snapshots"][0]["verdict"] == "healthy"
    out = capsys.readouterr().out
    assert "first/last" in out and "vanishing" in out


def test_responses_cli_on_fresh_models_and_a_run(tmp_path, capsys, run_dir):
    rc = main(["responses", "plain8", str(run_dir), *DATA, "--samples", "32", "--out", str(tmp_path)])
    assert rc == 0
    _png(tmp_path / "responses.png")
    data = json.loads((tmp_path / "responses.json").read_text())
    plain, run = data["models"]
    assert plain["trained"] is False and run["trained"] is True and run["source"] == str(run_dir)
    assert len(plain["stds"]) == len(run["stds"]) == len(run["rel_norms"]) == 3
    assert "residual functions respond less" in data["verdict"]
    assert "residual functions respond less" in capsys.readouterr().out


def test_landscape_cli_pair_on_one_scale(tmp_path, run_dir):
    rc = main(["landscape", "plain8", str(run_dir), *DATA, "--grid", "3", "--samples", "16",
               "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    _png(tmp_path / "landscape.png")
    data = json.loads((tmp_path / "landscape.json").read_text())
    assert data["directions_seed"] == 0 and data["grid"] == 3
    for m in data["models"]:
        assert len(m["coords"]) == 3 and [len(r) for r in m["losses"]] == [3, 3, 3]
        assert m["losses"][1][1] == pytest.approx(m["center_loss"])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["gradients", "--models", "resnet21"], "impossible"),
        (["gradients", "--models", "resnett20"], "unknown model"),
        (["responses", "no/such/run"], "does not exist"),
        (["landscape", "plain8", "resnet14", *DATA], "same depth"),
        (["landscape", "plain8", "--grid", "4"], "odd"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
