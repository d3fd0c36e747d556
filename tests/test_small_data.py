"""The small-data rule (reslab.engine.sizing): a batch and length left unset adapt to a small training split,
one set is kept with a line saying what to change, the images each epoch leaves out are said; and a folder
of 72 drawn images learns with the defaults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers import exit_code, tiny
from reslab.engine import TrainConfig, train
from reslab.engine.sizing import auto_batch, auto_epochs, batch_notes, length_notes

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_rule_halves_the_default_batch_and_lengthens_the_default_run() -> None:
    # 1) the batch: halved while an epoch is under 20 steps, down to 8; a batch the user set is kept
    assert auto_batch(72, 64, auto=True) == 8  # 64 -> 32 -> 16 -> 8: 9 steps per epoch
    assert auto_batch(600, 64, auto=True) == 16  # 600 // 16 = 37 steps: enough
    assert auto_batch(4000, 64, auto=True) == 64  # mnist5k: 62 steps, unchanged
    assert auto_batch(72, 64, auto=False) == 64
    assert auto_batch(5, 64, auto=True) == 5  # fewer images than the smallest batch: one step of all
    assert auto_batch(72, 64, auto=True, world_size=3) == 9  # a multiple of the processes
    # 2) the length: the default 8 epochs, or as many as give 200 steps; a length the user set is kept
    assert auto_epochs(9, epochs=None, iterations=None) == 23  # 207 steps
    assert auto_epochs(62, epochs=None, iterations=None) is None  # 496 steps: the default stands
    assert auto_epochs(9, epochs=2, iterations=None) == 2
    assert auto_epochs(9, epochs=None, iterations=12) is None


def test_the_rule_says_what_it_did_and_what_to_change() -> None:
    adapted = batch_notes(72, 8, default=64, auto=True)
    assert adapted == [
        "72 training images: batch 8 instead of 64, 9 steps per epoch (the small-data rule; --batch-size "
        "sets it)"
    ]
    kept = batch_notes(72, 64, default=64, auto=False)
    assert "1 step(s) per epoch" in kept[0] and "--batch-size 8: 9" in kept[0]
    assert "the last 8 of its shuffled order (11%)" in kept[1]  # 72 = 64 + 8 left out of each epoch
    assert batch_notes(4000, 64, default=64, auto=False) == []  # 32 left out: 0.8% of the split, no line
    assert "23 epochs instead of 8" in length_notes(9, 207, epochs=23, adapted=True)[0]
    assert "--epochs 23" in length_notes(9, 18, epochs=2, adapted=False)[0]
    assert length_notes(9, 12, epochs=None, adapted=False) == []  # a length in iterations is taken as meant
    assert length_notes(62, 62, epochs=1, adapted=False) == []  # not a small split
    assert length_notes(9, 18, epochs=2, adapted=False, from_scratch=False) == []  # a fine-tune


def _draw_shapes(root: Path, per_class: int = 30, size: int = 24, seed: int = 0) -> Path:
    """Three classes of shapes (disc, square, triangle) of random colour, size and place on noise."""
    rng = np.random.default_rng(seed)
    for kind in ("disc", "square", "triangle"):
        (root / kind).mkdir(parents=True)
        for i in range(per_class):
            img = Image.fromarray(rng.integers(0, 110, (size, size + 6, 3), dtype=np.uint8))
            d = ImageDraw.Draw(img)
            r, cx, cy = rng.uniform(5, 8), size / 2 + 3 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3)
            color = tuple(int(v) for v in rng.integers(140, 256, 3))
            if kind == "disc":
                d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
            elif kind == "square":
                d.rectangle((cx - r, cy - r, cx + r, cy + r), fill=color)
            else:
                d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
            img.save(root / kind / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _draw_shapes(tmp_path_factory.mktemp("shapes") / "shapes")


def test_a_72_image_folder_learns_with_the_default_batch_and_length(
    shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """72 training / 18 test images: batch 64 and 8 epochs would be 8 steps at chance (66.67% error)."""
    out = tmp_path / "run"
    argv = ["train", "--dataset", f"folder:{shapes}", "--image-size", "16", "--model", "resnet8"]
    assert exit_code([*argv, "--num-threads", "1", "--device", "cpu", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "72 training images: batch 8 instead of 64, 9 steps per epoch" in err
    assert "23 epochs instead of 8: 207 steps" in err
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert (cfg["batch_size"], cfg["epochs"]) == (8, 23)  # recorded: a resume continues the same run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 207 and summary["final_test_error"] < 0.3  # chance is 0.667


def test_a_batch_and_length_set_are_kept_with_a_line_and_resume_keeps_the_choice(
    shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = dict(dataset=f"folder:{shapes}", image_size=16, model="resnet8", device="cpu", num_threads=1)
    kept = train(TrainConfig(**common, batch_size=64, epochs=2, progress="lines", out=str(tmp_path / "a")))
    assert kept.iterations == 2
    err = capsys.readouterr().err
    assert "1 step(s) per epoch; a smaller --batch-size gives more (--batch-size 8: 9)" in err
    assert "the last 8 of its shuffled order" in err and "--epochs 200" in err
    # an adapted run stopped early resumes with its own batch and length, and says nothing new
    run = tmp_path / "b"

    def stop(m: dict) -> None:
        if m["iteration"] == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**common, out=str(run), progress="off", eval_every=9), callback=stop)
    resumed = train(TrainConfig(resume=str(run), progress="lines", iterations=18))
    assert resumed.iterations == 18 and resumed.epochs == 2.0  # 9 steps per epoch: batch 8 kept
    assert "instead of" not in capsys.readouterr().err


def test_an_explicit_batch_equal_to_the_default_is_kept(tmp_path: Path) -> None:
    run = train(tiny(tmp_path / "run"))  # batch_size=64 given: 512 images are 8 steps per epoch, as asked
    assert run.epochs == pytest.approx(12 / 8)


def test_a_folder_of_mixed_sizes_says_the_size_it_chose(tmp_path: Path, capsys) -> None:
    root = tmp_path / "mixed"
    rng = np.random.default_rng(0)
    for k, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            h, w = (12, 10) if i % 2 else (20, 16 + k)
            Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(root / cls / f"{i}.png")
    run = train(
        TrainConfig(dataset=f"folder:{root}", model="resnet8", iterations=1, progress="lines",
                    device="cpu", out=str(tmp_path / "run"), batch_size=4)
    )  # fmt: skip
    err = capsys.readouterr().err
    said = "images of 3 sizes (10x12 to 17x20), each stretched to the first one's, 16x20"
    assert f"folder:{root}: {said}" in err
    assert json.loads((run.run_dir / "config.json").read_text())["data"]["input_shape"] == [1, 20, 16]
