"""Reading one image file: the one reader for training images (``folder:PATH``) and for ``reslab predict``.

One reader means one set of guards and one conversion, so an image gives the same pixels in training and at
prediction:

- **the file**: a regular file of at most :data:`~reslab.files.MAX_IMAGE_BYTES`, opened once (a
  directory, a FIFO, a device or a link to ``/dev/zero`` is a one-line error, never a hang or endless read);
- **the format**: PNG or JPEG only, so no rarely used decoder ever sees untrusted bytes;
- **the size**: taken from the header and refused above :data:`MAX_PIXELS` *before* decoding, and PIL's own
  decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``: a warning, then an error at twice that) is turned into
  the same one-line error: a 1 kB PNG that claims 100,000 x 100,000 pixels costs nothing;
- **transparency** is composited onto white, as an image viewer shows it; then the image is converted to
  ``L`` (grey) or ``RGB`` and resized (bilinear) if a size is asked for: stretched to it, or, with
  ``crop=True`` (``--image-size``), its shorter side scaled to fit and the centre cut out, in one resize of
  the centre box (:func:`center_box`): the same pixels in every process, for training and for predict.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from reslab.errors import DataError
from reslab.files import MAX_IMAGE_BYTES, open_regular

FORMATS = ("PNG", "JPEG")  # what PIL may try; extend here to accept more formats everywhere at once
SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_PIXELS = 1 << 26  # 64 Mpixel, below PIL's own 89 Mpixel warning: refuse before decoding
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes that hold no colour
_ALPHA_MODES = ("RGBA", "LA", "P", "PA")


def _pil() -> Any:
    from PIL import Image

    return Image


@contextmanager
def _opened(path: Path) -> Iterator[Any]:
    """The PIL image of ``path``, header read and size checked, nothing decoded yet."""
    Image = _pil()
    with open_regular(path, "image", max_bytes=MAX_IMAGE_BYTES) as f:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(f, formats=FORMATS)
        except Image.UnidentifiedImageError:
            raise DataError(f"{path} is not a PNG or JPEG image; give a PNG or JPEG file") from None
        except Exception as e:  # DecompressionBomb*, a broken header (OSError, SyntaxError, ValueError...)
            raise _unreadable(path, e) from None
        with img:
            w, h = img.size
            if w < 1 or h < 1 or w * h > MAX_PIXELS:
                raise DataError(
                    f"image {path} claims to be {w}x{h} pixels (at most {MAX_PIXELS:,} are read); "
                    "replace or remove it"
                )
            yield img


def _unreadable(path: Path, e: BaseException) -> DataError:
    if type(e).__name__.startswith("DecompressionBomb"):
        return DataError(f"image {path} is too large to decode safely ({e}); replace or remove it")
    return DataError(f"cannot read image {path} ({type(e).__name__}: {e}); replace or remove it")


def probe_image(path: str | Path) -> tuple[tuple[int, int], str]:
    """``((width, height), PIL mode)`` of an image, from its header only (nothing is decoded).

    Raises:
        DataError: see :func:`read_image`.
    """
    path = Path(path)
    with _opened(path) as img:
        return img.size, img.mode


def center_box(width: int, height: int, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The centred box of an image ``width x height`` with the aspect ratio of ``size = (w, h)``: resizing it
    to ``size`` is "scale the shorter side to fit, then center-crop" (torchvision's Resize + CenterCrop)."""
    tw, th = size
    if width * th > height * tw:  # wider than the target: full height, the middle columns
        w = height * tw / th
        return (width - w) / 2, 0.0, (width + w) / 2, float(height)
    h = width * th / tw  # taller (or the same shape): full width, the middle rows
    return 0.0, (height - h) / 2, float(width), (height + h) / 2


def read_image(
    path: str | Path, *, mode: str, size: tuple[int, int] | None = None, crop: bool = False
) -> np.ndarray:
    """Decode one PNG/JPEG as uint8: ``(H, W)`` for ``mode="L"``, ``(H, W, 3)`` for ``mode="RGB"``.

    Args:
        path: the image file.
        mode: ``"L"`` (grey) or ``"RGB"``; transparent pixels are first put on white.
        size: ``(width, height)`` to resize to (bilinear); None keeps the image's own size.
        crop: keep the aspect ratio: resize the centre box (:func:`center_box`) instead of stretching.

    Raises:
        DataError: one line naming the path: missing, not a regular file (directory, FIFO, device), larger
            than ``MAX_IMAGE_BYTES``, not a PNG/JPEG, more than ``MAX_PIXELS`` pixels (a decompression
            bomb), or truncated/corrupt.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', not {mode!r}")
    path = Path(path)
    Image = _pil()
    with _opened(path) as img:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img.load()
                out = img
                if out.mode in _ALPHA_MODES:  # transparency: put it on white, as a viewer shows it
                    rgba = out.convert("RGBA")
                    out = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
                out = out.convert(mode)
                if size is not None and out.size != tuple(size):
                    width, height = out.size
                    box = center_box(width, height, size) if crop else None
                    out = out.resize(tuple(size), Image.Resampling.BILINEAR, box=box)
                return np.asarray(out, dtype=np.uint8)
        except DataError:
            raise
        except Exception as e:  # OSError (truncated), DecompressionBomb*, SyntaxError, ValueError...
            raise _unreadable(path, e) from None


def read_image_chw(path: str | Path, shape: tuple[int, int, int], *, crop: bool = False) -> np.ndarray:
    """An image as the model sees it: uint8 ``(C, H, W)`` for ``shape = (C, H, W)``, C in (1, 3).

    ``crop``: center-crop to the shape's aspect ratio (a run trained with ``--image-size``) instead of
    stretching.

    What ``reslab predict`` needs: ``torch.from_numpy(read_image_chw(path, info.input_shape))``.

    Raises:
        DataError: see :func:`read_image`.
    """
    c, h, w = shape
    arr = read_image(path, mode="L" if c == 1 else "RGB", size=(w, h), crop=crop)
    return np.ascontiguousarray(arr[None] if c == 1 else arr.transpose(2, 0, 1))  # (C, H, W)
