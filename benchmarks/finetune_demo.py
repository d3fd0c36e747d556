"""Fine-tune demo: ResNet-18 weights trained by reslab on one image folder, fine-tuned on a small other one.

Generates two folders of drawn shapes (40x32 RGB PNGs, noisy backgrounds, random colours, sizes and places):
``source`` (6 shapes x 150 images) and ``target`` (3 other shapes x 30 images), then measures:

1. pre-training resnet18 on ``source`` (``--image-size 32``: scale + center-crop);
2. fine-tuning it on ``target`` with ``--init-from`` the source run, ``--freeze layer2``, ``--head-lr``:
   the loss of the starting model and after, test error, time; and training the same net from scratch;
3. the frozen stages bit-identical after fine-tuning;
4. the same fine-tune streamed from disk (``--data-memory-gib`` tiny): its weights against the resident run;
5. ``reslab export`` (torch.export, ONNX) with ``--uint8-input`` against ``reslab predict``.

    python benchmarks/finetune_demo.py --out runs/finetune-demo

Numbers, not assertions: this is a demo for the README, not a test.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

SOURCE = ("circle", "square", "triangle", "plus", "ring", "bar")
TARGET = ("diamond", "cross", "hexagon")
SIZE = (40, 32)  # (width, height): wider than the 32x32 the nets see, so --image-size crops


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "triangle":
        angles = [90, 210, 330]
    elif kind == "diamond":
        angles = [0, 90, 180, 270]
    elif kind == "hexagon":
        angles = [0, 60, 120, 180, 240, 300]
    else:
        raise ValueError(kind)
    return [(cx + r * math.cos(math.radians(a)), cy - r * math.sin(math.radians(a))) for a in angles]


def draw_shape(kind: str, rng: np.random.Generator) -> Image.Image:
    """One image: noise background, one shape of a random colour, size and place in the central square."""
    w, h = SIZE
    background = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(background)
    d = ImageDraw.Draw(img)
    r = rng.uniform(6, 11)
    cx, cy = w / 2 + rng.uniform(-4, 4), h / 2 + rng.uniform(-4, 4)
    color = tuple(int(v) for v in rng.integers(140, 256, 3))
    t = max(2, int(r / 3))  # stroke width
    if kind == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
    elif kind == "ring":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=color, width=t)
    elif kind == "square":
        d.rectangle((cx - r, cy - r, cx + r, cy + r), fill=color)
    elif kind == "bar":
        d.rectangle((cx - r, cy - t, cx + r, cy + t), fill=color)
    elif kind == "plus":
        d.rectangle((cx - r, cy - t, cx + r, cy + t), fill=color)
        d.rectangle((cx - t, cy - r, cx + t, cy + r), fill=color)
    elif kind == "cross":
        d.line((cx - r, cy - r, cx + r, cy + r), fill=color, width=2 * t)
        d.line((cx - r, cy + r, cx + r, cy - r), fill=color, width=2 * t)
    else:
        d.polygon(_polygon(kind, cx, cy, r), fill=color)
    return img


def make_folder(root: Path, classes: tuple[str, ...], per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for kind in classes:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_shape(kind, rng).save(root / kind / f"{i:04d}.png")
    return root


def main() -> None:
    from safetensors.torch import load_file

    from reslab.engine import TrainConfig, export_run, predict, train

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/finetune-demo")
    args = p.parse_args()
    out = Path(args.out)
    source = make_folder(out / "data" / "source", SOURCE, 150, seed=0)
    target = make_folder(out / "data" / "target", TARGET, 30, seed=1)
    common = dict(model="resnet18", image_size=32, progress="off", overwrite=True)

    t = time.perf_counter()
    pre = train(TrainConfig(dataset=f"folder:{source}", epochs=6, out=str(out / "source"), **common))
    print(f"pre-training on {len(SOURCE)} shapes: test error {pre.final_test_error:.2%}, {pre.seconds:.1f} s")
    ft_cfg = TrainConfig(
        dataset=f"folder:{target}", init_from=str(out / "source"), freeze="layer2", lr=0.01, head_lr=0.1,
        batch_size=16, epochs=15, logger=("csv", "tensorboard"), out=str(out / "finetune"), **common,
    )  # fmt: skip
    start = train(ft_cfg.with_changes(freeze="layer4", head_lr=0.0, iterations=1, out=str(out / "start")))
    tuned = train(ft_cfg)
    scratch_cfg = TrainConfig(dataset=f"folder:{target}", batch_size=16, epochs=15, **common)
    scratch = train(scratch_cfg.with_changes(out=str(out / "scratch")))  # the default lr, 0.1
    slow = train(scratch_cfg.with_changes(lr=0.01, out=str(out / "scratch-lr0.01")))
    runs = [("start (frozen, new head)", start), ("fine-tuned", tuned)]
    for name, r in [*runs, ("from scratch, lr 0.1", scratch), ("from scratch, lr 0.01", slow)]:
        print(
            f"{name}: train loss {r.final_train_loss:.4f}, train error {r.final_train_error:.2%}, "
            f"test loss {r.final_test_loss:.4f}, test error {r.final_test_error:.2%}, {r.seconds:.1f} s"
        )
    src, after = (
        load_file(out / "source" / "model.safetensors"),
        load_file(out / "finetune" / "model.safetensors"),
    )
    frozen = [k for k in src if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2")]
    same = all(torch.equal(src[k], after[k]) for k in frozen)
    print(f"frozen tensors bit-identical after fine-tuning: {same} ({len(frozen)} tensors)")

    streamed = train(ft_cfg.with_changes(data_memory_gib=1e-6, out=str(out / "streamed")))
    resident_w, streamed_w = after, load_file(out / "streamed" / "model.safetensors")
    identical = all(torch.equal(resident_w[k], streamed_w[k]) for k in resident_w)
    print(
        f"streamed from disk: {streamed.seconds:.1f} s (resident {tuned.seconds:.1f} s), "
        f"weights identical to the resident run: {identical}"
    )

    images = sorted((target / "diamond").glob("*.png"))[:4] + sorted((target / "hexagon").glob("*.png"))[:4]
    _export_diffs(out, images, export_run, predict)
    print(f"total {time.perf_counter() - t:.0f} s")


def _export_diffs(out: Path, images: list[Path], export_run, predict) -> None:  # type: ignore[no-untyped-def]
    from reslab.data.images import read_image_chw
    from reslab.engine import load_run

    run = out / "finetune"
    _, info = load_run(run)
    pixels = torch.stack([torch.from_numpy(read_image_chw(p, info.input_shape, crop=True)) for p in images])

    def reference(precision: str | None) -> np.ndarray:
        preds = predict(run, images, top_k=len(info.classes), precision=precision)
        return np.array([[dict(p.top)[c] for c in info.classes] for p in preds])

    pt2 = export_run(run, format="torch-export", uint8_input=True, overwrite=True).path
    with torch.no_grad():
        probs = {"torch.export .pt2": torch.export.load(str(pt2)).module()(pixels).softmax(1).numpy()}
    try:
        import onnxruntime as ort

        onnx = export_run(run, format="onnx", uint8_input=True, overwrite=True).path
        session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        probs["ONNX (onnxruntime)"] = (
            torch.from_numpy(session.run(None, {"images": pixels.numpy()})[0]).softmax(1).numpy()
        )
    except ImportError:
        print("onnxruntime not installed: ONNX skipped")
    for precision in ("fp32", None):
        ref = reference(precision)
        label = precision or f"the run's own ({info.precision})"
        for name, p in probs.items():
            diff = np.abs(p - ref).max()
            print(f"{name} vs reslab predict in {label}: max abs diff of probabilities {diff:.2e}")


if __name__ == "__main__":
    main()
