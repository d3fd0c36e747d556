"""Reading one image file the way a trained model expects it: ``read_image(path, (C, H, W))``.

Used by ``predict``. The mode is the model's (grey ``L`` or ``RGB``; transparency is put on white, as a
viewer shows it) and the image is resized to the model's input size.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reslab.errors import DataError


def read_image(path: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """A file as uint8 (C, H, W) in the model's mode and size; DataError for anything that is not an image."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    path = Path(path)
    if not path.exists():
        raise DataError(f"image {path} does not exist")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file; give a PNG or JPEG file")
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
