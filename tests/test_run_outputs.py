"""What a run leaves and what reads it back: report.html beside every run, per-class errors from eval,
--keep-best's best weights (chosen on held-out training images, resume-safe), --format pt2, top-5 only above
5 classes, and the tools that take a run reading its own data settings (dataset, --image-size)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

import reslab
from helpers import exit_code, one_line_error, read_report, tiny
from reslab.engine import TrainConfig, evaluate, train
from reslab.engine.store.checkpoint import list_checkpoints
from reslab.errors import ConfigError, DivergedError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def best_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("best") / "run"
    train(tiny(out, keep_best=True, iterations=16))
    return out


# --- report.html and the run's known files ------------------------------------------------------------------


def test_every_run_writes_its_report_and_overwrite_removes_the_new_files(best_run: Path, tmp_path) -> None:
    page = read_report(best_run / "report.html")
    assert "finished: final training error" in page.verdict
    best = next(row for row in page.tables[0] if row[0].startswith("best weights (best.safetensors)"))
    assert best[1].startswith("iteration ")
    run = tmp_path / "run"
    train(tiny(run, iterations=4))
    assert evaluate(run).files  # class_errors.json, confusion.png and report.html again
    for name in ("report.html", "class_errors.json", "confusion.png"):
        (run / name).write_bytes(b"stale")  # whatever is there, --overwrite removes it first
    (run / "best.safetensors").write_bytes(b"stale")
    train(tiny(run, iterations=4, overwrite=True))
    assert not any((run / n).exists() for n in ("class_errors.json", "confusion.png", "best.safetensors"))
    assert read_report(run / "report.html").verdict.startswith("finished")


def test_a_diverged_run_writes_its_report(tmp_path: Path, monkeypatch) -> None:
    import reslab.engine.graphs as steps  # the loop's step (eager on a CPU) calls train_step there

    real = steps.train_step

    def poisoned(state, x, y, *, lr, iteration):  # type: ignore[no-untyped-def]
        out = real(state, x, y, lr=lr, iteration=iteration)
        if iteration == 6:
            next(p for p in state.params).data.fill_(float("nan"))
        return out

    monkeypatch.setattr(steps, "train_step", poisoned)
    with pytest.raises(DivergedError):
        train(tiny(tmp_path / "r", iterations=12, eval_every=4))
    assert "diverged at iteration 7" in read_report(tmp_path / "r" / "report.html").verdict


# --- per-class errors ---------------------------------------------------------------------------------------


def test_eval_prints_and_writes_per_class_errors(best_run: Path, tmp_path: Path, capsys) -> None:
    assert exit_code(["eval", str(best_run), "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "top-5 error" in out and "per-class errors (worst first):" in out and "pattern0" in out
    data = json.loads((tmp_path / "ev" / "class_errors.json").read_text())
    assert (tmp_path / "ev" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    counts = data["confusion_matrix"]["counts"]
    report = evaluate(best_run, save=False)
    assert sum(map(sum, counts)) == report.n == 128 and data["error"] == pytest.approx(report.error)
    assert report.class_errors is not None and report.class_errors.matrix == counts
    # without --out: into the run directory, and its report.html shows them
    assert exit_code(["eval", str(best_run)]) == 0
    assert (best_run / "class_errors.json").is_file()
    assert "Per-class errors" in (best_run / "report.html").read_text()


def test_top5_is_shown_only_above_five_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (96, 1, 8, 8), dtype=np.uint8), np.arange(96) % 3
    three = tiny(tmp_path / "three", iterations=2, batch_size=16, dataset="memory:three")
    run = train(three, data=(x, y), test_data=(x, y))
    assert "top-5" not in str(run) and "top-5" not in str(evaluate(run.run_dir, data=(x, y), save=False))
    assert "top-5" in str(train(tiny(tmp_path / "ten", iterations=2)))  # 10 classes
    assert reslab.engine.read_run_result(run.run_dir).num_classes == 3


# --- --keep-best --------------------------------------------------------------------------------------------


def _best_iteration(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return int(f.metadata()["reslab_best_iteration"])


def test_keep_best_chooses_on_held_out_training_images_never_the_test_split(best_run: Path) -> None:
    history = [json.loads(line) for line in (best_run / "metrics.jsonl").read_text().splitlines()]
    errors = [h["val_error"] for h in history]
    first_lowest = history[errors.index(min(errors))]["iteration"]
    summary = json.loads((best_run / "summary.json").read_text())
    assert summary["best"] == {
        "file": "best.safetensors", "iteration": first_lowest, "val_error": min(errors), "val_images": 51,
    }  # fmt: skip
    assert _best_iteration(best_run / "best.safetensors") == first_lowest
    assert history[-1]["best_iteration"] == first_lowest
    # 51 of the 512 training images held out (10%); the 128 test images untouched
    assert evaluate(best_run, split="train", save=False).n == 512 - 51
    assert evaluate(best_run, save=False).n == 128
    best = evaluate(best_run, weights="best", save=False)
    assert best.weights == "best.safetensors"
    if first_lowest != 16:  # other weights than the last: other figures
        assert best.loss != evaluate(best_run, save=False).loss


def test_keep_best_resumes_to_the_same_best_weights(best_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"

    def stop(m: dict) -> None:
        if m["iteration"] == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny(run, keep_best=True, iterations=16), callback=stop)
    if _best_iteration(run / "best.safetensors") == 8:  # a stop between the checkpoint and the best file
        (run / "best.safetensors").unlink()
    train(TrainConfig(resume=str(run), progress="off", num_threads=1))
    a, b = load_file(str(run / "best.safetensors")), load_file(str(best_run / "best.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a) and len(list_checkpoints(run)) == 2


def test_keep_best_refusals(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="--best-split is the hold-out of --keep-best"):
        train(tiny(tmp_path / "a", best_split=10))
    with pytest.raises(ConfigError, match="--best-split 512 leaves no training images"):
        train(tiny(tmp_path / "b", keep_best=True, best_split=512))
    train(tiny(tmp_path / "c", iterations=2, warmup_epochs=0.0))
    assert exit_code(["predict", str(tmp_path / "c"), "x.png", "--weights", "best"]) == 2
    assert "has no best.safetensors: it was trained without --keep-best" in one_line_error(capsys)


# --- export -------------------------------------------------------------------------------------------------


def test_export_takes_pt2_and_its_outputs_need_no_grad(best_run: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "m.pt2"
    argv = ["export", str(best_run), "--format", "pt2", "--weights", "best", "--out", str(target)]
    assert exit_code(argv) == 0
    assert "(torch-export;" in capsys.readouterr().out
    model = torch.export.load(target).module()
    logits = model(torch.zeros(2, 1, 12, 12))
    assert logits.shape == (2, 10) and not logits.requires_grad
    reference, info = reslab.load_run(best_run / "best.safetensors")
    expected = reference(info.norm.apply(torch.zeros(2, 1, 12, 12, dtype=torch.uint8)) * 0)
    assert torch.allclose(logits, expected, atol=1e-5)


def test_train_takes_its_settings_as_keywords(tmp_path: Path) -> None:
    out = str(tmp_path / "kw")
    run = reslab.train(
        model="resnet8", dataset="synthetic", iterations=2, out=out, num_threads=1, progress="off"
    )
    assert (run.model, run.dataset, run.iterations) == ("resnet8", "synthetic", 2)
    with pytest.raises(ConfigError, match="unknown setting 'modle'; did you mean 'model'"):
        reslab.train(modle="resnet8")


def test_warmup_epochs_help_reads_right(capsys) -> None:
    assert exit_code(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--warmup-epochs W warm-up length in epochs (default: 1 epoch, at most 20% of the run)" in text
    assert "--batch-size B global batch (split over processes) (default: 64, halved (to 8 at least)" in text


# --- a run carries its data settings -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cropped_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet8 on a folder of 30x18 images, trained at --image-size 8."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / "imgs" / c).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (18, 30, 3), dtype=np.uint8)).save(
                root / "imgs" / c / f"{i}.png"
            )
    out = root / "run"
    train(
        TrainConfig(model="resnet8", dataset=f"folder:{root / 'imgs'}", image_size=8, iterations=2,
                    batch_size=8, device="cpu", progress="off", num_threads=1, out=str(out))
    )  # fmt: skip
    return out


def test_the_analyses_read_a_run_at_its_own_image_size(cropped_run: Path, tmp_path: Path) -> None:
    run = str(cropped_run)
    assert exit_code(["responses", run, "--samples", "8", "--out", str(tmp_path / "r")]) == 0
    assert (
        exit_code(["gradients", run, "--steps", "1", "--batch-size", "4", "--out", str(tmp_path / "g")]) == 0
    )
    assert exit_code(["gradients", "--models", run, "--steps", "0", "--batch-size", "4",
                      "--out", str(tmp_path / "g2")]) == 0  # fmt: skip
    argv = ["landscape", run, "--grid", "3", "--samples", "8", "--out", str(tmp_path / "l")]
    assert exit_code(argv) == 0
    assert exit_code(["eval", run, "--out", str(tmp_path / "e")]) == 0
    # another size asked for: the run does not fit it, and the line says what to change
    assert exit_code(["responses", run, "--image-size", "12", "--out", str(tmp_path / "x")]) == 2


def test_init_from_a_run_takes_its_image_size_and_a_change_of_resolution_is_said(
    cropped_run: Path, tmp_path: Path, capsys
) -> None:
    folder = json.loads((cropped_run / "config.json").read_text())["config"]["dataset"]
    common = dict(model="resnet8", iterations=1, batch_size=8, device="cpu", progress="lines", num_threads=1)
    run = train(TrainConfig(dataset=folder, init_from=str(cropped_run), out=str(tmp_path / "a"), **common))
    err = capsys.readouterr().err
    assert f"--init-from {cropped_run} was trained with --image-size 8: this run takes it too" in err
    assert json.loads((run.run_dir / "config.json").read_text())["data"]["input_shape"] == [3, 8, 8]
    train(TrainConfig(dataset=folder, image_size=12, init_from=str(cropped_run), out=str(tmp_path / "b"),
                      **common))  # fmt: skip
    err = capsys.readouterr().err
    said = re.search(r"was trained on 3x8x8 images, this run's are 3x12x12", err)
    assert said is not None and "--image-size N sets this run's" in err
