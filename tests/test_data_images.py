"""The one image reader shared by ``folder:PATH`` and ``predict``.

Decompression bombs, non-images, truncated files and non-files are one-line DataErrors; a transparent image
gives the same pixels to training (the folder loader) as to prediction (``read_image_chw``).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from reslab.data import load_dataset
from reslab.errors import DataError

try:
    from tests.test_data_builders import image_bytes, make_folder
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    from test_data_builders import image_bytes, make_folder  # type: ignore[no-redef]


def bomb_png(width: int, height: int) -> bytes:
    """A 100-byte PNG whose header claims ``width x height`` RGB pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [100_000, 9_000])  # past PIL's own bomb error; past our 64 Mpixel cap only
def test_decompression_bomb_is_one_line_before_decoding(tmp_path: Path, side: int) -> None:
    from reslab.data.images import MAX_PIXELS, read_image_chw

    p = tmp_path / "bomb.png"
    p.write_bytes(bomb_png(side, side))
    assert side * side > MAX_PIXELS
    with pytest.raises(DataError) as err:
        read_image_chw(p, (3, 32, 32))
    assert str(p) in str(err.value) and "\n" not in str(err.value)
    assert f"{side}x{side}" in str(err.value) or "too large to decode safely" in str(err.value)


def test_pil_bomb_guard_becomes_the_same_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from reslab.data.images import read_image

    p = tmp_path / "x.png"
    p.write_bytes(image_bytes("PNG", (12, 10)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # PIL warns above 50 and raises above 100 pixels
    with pytest.raises(DataError, match=r"image .*x\.png is too large to decode safely"):
        read_image(p, mode="RGB")


def test_bomb_in_a_folder_dataset_is_the_same_error(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "b" / "bomb.png").write_bytes(bomb_png(100_000, 100_000))
    with pytest.raises(DataError, match=r"bomb\.png"):
        load_dataset(f"folder:{tmp_path}")


@pytest.mark.parametrize(
    "content,said",
    [
        (b"hello, not an image", "is not a PNG or JPEG image"),
        ("gif", "is not a PNG or JPEG image"),  # a real image, in a format reslab does not decode
        ("truncated", "cannot read image"),
    ],
)
def test_non_images_are_one_line(tmp_path: Path, content: bytes | str, said: str) -> None:
    from PIL import Image

    from reslab.data.images import read_image_chw

    p = tmp_path / "x.png"
    if content == "gif":
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format="GIF")
        p.write_bytes(buf.getvalue())
    elif content == "truncated":
        p.write_bytes(image_bytes("PNG", (40, 30))[:-60])
    else:
        assert isinstance(content, bytes)
        p.write_bytes(content)
    with pytest.raises(DataError, match=said) as err:
        read_image_chw(p, (1, 8, 8))
    assert str(p) in str(err.value) and "\n" not in str(err.value)


def test_transparent_image_gives_training_and_prediction_the_same_pixels(tmp_path: Path) -> None:
    from PIL import Image

    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red ...
    rgba[:5, :, 3] = 0  # ... fully transparent on the top half: white, as a viewer shows it
    rgba[5:, :, 3] = 255
    for cls in ("a", "b"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        (tmp_path / "test" / cls).mkdir(parents=True)
        for split in ("train", "test"):
            Image.fromarray(rgba, "RGBA").save(tmp_path / split / cls / "0.png")
    ds = load_dataset(f"folder:{tmp_path}")
    seen_in_training = ds.test_x[0]  # (3, 10, 12)
    assert seen_in_training[:, 0, 0].tolist() == [255, 255, 255]  # transparent -> white, as a viewer shows it
    assert seen_in_training[:, 9, 0].tolist() == [200, 0, 0]

    from reslab.data.images import read_image_chw

    seen_by_predict = torch.from_numpy(read_image_chw(tmp_path / "test" / "a" / "0.png", (3, 10, 12)))
    assert torch.equal(seen_in_training, seen_by_predict)


def test_reader_converts_and_resizes(tmp_path: Path) -> None:
    from reslab.data.images import read_image, read_image_chw

    p = tmp_path / "x.jpg"
    p.write_bytes(image_bytes("JPEG", (20, 16)))
    assert read_image_chw(p, (1, 8, 10)).shape == (1, 8, 10)
    assert read_image_chw(p, (3, 16, 20)).dtype == np.uint8
    assert read_image(p, mode="RGB").shape == (16, 20, 3)
