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
    rc = main(["gradients", "plainmlp12", "resmlp12", *DATA, "--steps", "2", "--batch-size", "16",
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
    # one model of each kind: the numbers, and no claim
    assert "one seed: not tested against noise" in data["verdict"] and data["holds"] is None
    assert "respond less" not in capsys.readouterr().out


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
        (["gradients", "resnet21"], "impossible"),
        (["gradients", "resnett20"], "unknown model"),
        (["responses", "no/such/run"], "does not exist"),
        (["landscape", "plain8", "resnet14", *DATA], "same depth"),
        (["landscape", "plain8", "--grid", "4"], "odd"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_gradients_old_flag_still_works_with_a_one_line_warning(tmp_path, capsys):
    argv = ["gradients", "--models", "plainmlp4,resmlp4", *DATA, "--steps", "0", "--out", str(tmp_path)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "--models is deprecated" in err
        and "reslab gradients plainmlp4 resmlp4" in err
    )
    assert [m["model_name"] for m in json.loads((tmp_path / "gradients.json").read_text())["models"]] == [
        "plainmlp4",
        "resmlp4",
    ]
    assert main(["gradients", "plainmlp4", "--models", "resmlp4", *DATA, "--out", str(tmp_path)]) == 2
    assert "given twice" in capsys.readouterr().err


def test_gradients_bare_is_plain56_against_resnet56_and_seeds_test_the_verdict(tmp_path, capsys):
    assert main(["gradients", *DATA, "--steps", "0", "--out", str(tmp_path / "bare")]) == 0
    data = json.loads((tmp_path / "bare" / "gradients.json").read_text())
    assert [m["model_name"] for m in data["models"]] == ["plain56", "resnet56"]
    assert "one seed: not tested against noise" in data["verdict"]
    capsys.readouterr()
    argv = ["gradients", "plainmlp16", "resmlp16", *DATA, "--steps", "0", "--seeds", "3"]
    assert main([*argv, "--out", str(tmp_path / "seeds")]) == 0
    data = json.loads((tmp_path / "seeds" / "gradients.json").read_text())
    assert [m["label"] for m in data["models"]][:3] == [
        "plainmlp16 (seed 0)",
        "resmlp16 (seed 0)",
        "plainmlp16 (seed 1)",
    ]
    assert len(data["models"]) == 6 and "the residual nets' is closer to 1" in data["verdict"]
    assert data["verdict"] in capsys.readouterr().out


def test_bare_responses_and_landscape_study_the_default_pair(tmp_path, monkeypatch, run_dir, capsys):
    import reslab.analysis.studies as studies

    asked = []

    def pair(seeds, say):
        asked.append(seeds)
        say("no runs given: the default pair (here the tiny run, twice)")
        return [str(run_dir)] * 2 * seeds

    monkeypatch.setattr(studies, "default_pair", pair)
    assert main(["responses", "--samples", "16", "--out", str(tmp_path / "r")]) == 0
    assert main(["landscape", "--samples", "8", "--out", str(tmp_path / "l")]) == 0
    assert asked == [2, 1]  # responses: seeds 0 and 1; landscape: seed 0's twins
    assert len(json.loads((tmp_path / "r" / "responses.json").read_text())["models"]) == 4
    assert json.loads((tmp_path / "l" / "landscape.json").read_text())["grid"] == 9  # the bare grid
    assert "no runs given" in capsys.readouterr().err


def test_the_default_pair_is_a_compare_sweep_trained_once(tmp_path, monkeypatch):
    from reslab.analysis.defaults import default_pair

    monkeypatch.chdir(tmp_path)
    tiny = dict(dataset="synthetic:1x8x8", epochs=None, iterations=2, batch_size=32, eval_every=2,
                device="cpu", precision="fp32", num_threads=1, progress="off", depths=(8,))  # fmt: skip
    said: list[str] = []
    first = default_pair(1, said.append, **tiny)
    assert [Path(p).name for p in first] == ["plain8-s0", "resnet8-s0"]
    assert not (Path(first[0]).parent / "plain8-s1").exists()  # only the seeds asked for are trained
    stamp = (Path(first[0]) / "summary.json").stat().st_mtime_ns
    both = default_pair(2, said.append, **tiny)
    assert [Path(p).name for p in both] == ["plain8-s0", "resnet8-s0", "plain8-s1", "resnet8-s1"]
    assert (Path(first[0]) / "summary.json").stat().st_mtime_ns == stamp  # reused, not retrained
    assert said[0].startswith("no runs given: studying the default pair")
