"""Image folders that scale: --image-size (scale + center crop), and a folder over the memory budget that
streams from disk through DataLoader workers with the batches of the resident path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from helpers import tiny
from reslab.data import load_dataset
from reslab.data.images import center_box, read_image, read_image_chw
from reslab.engine import evaluate, predict, train

pytestmark = pytest.mark.usefixtures("one_thread")


def striped_folder(root: Path, per_class: int = 20, size: tuple[int, int] = (30, 18)) -> Path:
    """Two classes of wide RGB images: noise, plus a class colour in the middle third of the width."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            img[:, size[0] // 3 : 2 * size[0] // 3, c] = 255
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def test_center_box_is_the_shorter_side_scaled_then_the_middle_cut_out(tmp_path: Path) -> None:
    assert center_box(30, 18, (6, 6)) == (6.0, 0.0, 24.0, 18.0)  # wide: full height, middle 18 columns
    assert center_box(10, 40, (5, 5)) == (0.0, 15.0, 10.0, 25.0)  # tall: full width, middle 10 rows
    img = np.zeros((18, 30, 3), dtype=np.uint8)
    img[:, :6] = (255, 0, 0)  # red borders that a center crop to 18x18 cuts away
    img[:, -6:] = (255, 0, 0)
    img[:, 6:-6] = (0, 255, 0)
    Image.fromarray(img).save(tmp_path / "x.png")
    cropped = read_image(tmp_path / "x.png", mode="RGB", size=(9, 9), crop=True)
    # the bilinear filter blends the edge columns with their outside neighbours, as resize-then-crop does
    assert cropped.shape == (9, 9, 3) and cropped[:, 1:-1, 0].max() == 0 and cropped[:, :, 0].max() < 64
    stretched = read_image(tmp_path / "x.png", mode="RGB", size=(9, 9))
    assert stretched[:, 0, 0].min() == 255  # the old behaviour, kept without --image-size


def test_image_size_is_honoured_in_training_and_predict(tmp_path: Path) -> None:
    folder = striped_folder(tmp_path / "f")
    out = tmp_path / "run"
    dataset = f"folder:{folder}"
    run = train(tiny(out, dataset=dataset, image_size=10, iterations=2, batch_size=8, warmup_iters=0))
    assert '"input_shape": [\n      3,\n      10,\n      10\n    ]' in (out / "config.json").read_text()
    ds = load_dataset(dataset, image_size=10)
    first = folder / "a" / "0.png"
    assert torch.equal(ds.train_x[0], torch.from_numpy(read_image_chw(first, (3, 10, 10), crop=True)))
    assert run.iterations == 2
    [top] = predict(out, [first], top_k=2)
    assert {c for c, _ in top.top} == {"a", "b"}
    # eval reads the folder at the run's --image-size, its own folder and another of the same classes
    own = evaluate(out)
    assert own.n == ds.test_x.shape[0] and own.error == pytest.approx(run.final_test_error)
    other = striped_folder(tmp_path / "other", per_class=5, size=(14, 40))  # tall images, another size
    assert evaluate(out, dataset=f"folder:{other}", split="train").n == 8


def _stream_cfg(tmp_path: Path, folder: Path, name: str, **kw: object):  # type: ignore[no-untyped-def]
    return tiny(
        tmp_path / name, dataset=f"folder:{folder}", image_size=12, iterations=6, batch_size=8, eval_every=3,
        augment="crop_flip", **kw,
    )  # fmt: skip


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_folder_over_the_budget_streams_the_resident_batches_and_resumes_exactly(
    tmp_path: Path, capsys
) -> None:
    folder = striped_folder(tmp_path / "f")  # 32 train images: 4 steps of 8 per epoch
    resident = train(_stream_cfg(tmp_path, folder, "resident"))
    streamed = train(
        _stream_cfg(tmp_path, folder, "streamed", data_memory_gib=1e-6, data_workers=2, progress="lines")
    )
    err = capsys.readouterr().err
    assert "more than the 0.0 MiB memory budget: streaming from disk with 2 worker(s)" in err
    assert _same_weights(tmp_path / "resident", tmp_path / "streamed")  # same pixels, order, crops, flips
    assert [h["train_loss"] for h in resident.history] == [h["train_loss"] for h in streamed.history]
    assert streamed.final_test_error == resident.final_test_error

    def stop_at_3(metrics: dict) -> None:
        if metrics["iteration"] == 3:
            raise KeyboardInterrupt

    cut = _stream_cfg(tmp_path, folder, "cut", data_memory_gib=1e-6, data_workers=0)
    with pytest.raises(KeyboardInterrupt):
        train(cut, callback=stop_at_3)  # mid-epoch 0
    train(cut.with_changes(resume=str(tmp_path / "cut"), out=None))
    assert _same_weights(tmp_path / "resident", tmp_path / "cut")
