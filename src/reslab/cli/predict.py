"""``reslab predict RUN_DIR_OR_WEIGHTS IMAGE... [--top-k K]``: top-k classes of PNG/JPEG images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict",
        help="classify image files with a trained run",
        description="Each image is converted to the run's mode (grey or RGB), resized to its input size and "
        "normalised with its statistics, as in training.",
    )
    p.add_argument("run", metavar="RUN_DIR_OR_WEIGHTS")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files")
    p.add_argument("--top-k", type=int, default=3, metavar="K")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="cpu")
    p.set_defaults(func=run)


def read_image(path: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """A file as uint8 (C, H, W) in the model's mode and size; DataError for anything that is not an image."""
    from PIL import Image, UnidentifiedImageError

    from reslab.errors import DataError

    c, h, w = shape
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {path} does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "P", "PA"):  # transparency: put it on white, as a viewer shows it
                rgba = img.convert("RGBA")
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            img = img.convert("L" if c == 1 else "RGB")
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except UnidentifiedImageError:
        raise DataError(f"{path} is not an image reslab can read; give a PNG or JPEG file") from None
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}; give a PNG or JPEG file") from None
    return data.view(h, w, c).permute(2, 0, 1).contiguous()  # (C, H, W)


def run(args: argparse.Namespace) -> int:
    from reslab.errors import ConfigError
    from reslab.train import load_run
    from reslab.train.runtime import resolve_device

    if args.top_k <= 0:
        raise ConfigError(f"--top-k must be a positive integer, got {args.top_k}")
    device = resolve_device(args.device)
    model, info = load_run(args.run, device=device)
    batch = torch.stack([read_image(p, info.input_shape) for p in args.images])  # (N, C, H, W) uint8
    with torch.no_grad():
        probs = model(info.norm.apply(batch.to(device))).float().softmax(1)  # (N, K)
    k = min(args.top_k, probs.shape[1])
    top = probs.topk(k, dim=1)
    for path, values, indices in zip(args.images, top.values.tolist(), top.indices.tolist()):
        guesses = ", ".join(f"{info.classes[i]} ({p:.1%})" for p, i in zip(values, indices))
        print(f"{path}: {guesses}")
    return 0
