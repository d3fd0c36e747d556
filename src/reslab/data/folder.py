"""``folder:PATH`` datasets: one sub-folder per class of PNG/JPEG files, as people keep their own images.

``PATH/CLASS/*.png|jpg|jpeg`` becomes one dataset; if ``PATH/train`` and ``PATH/test`` both exist they are
used as the two splits, otherwise a seeded stratified 80/20 split is drawn. All images are resized to one
size (``image_size``, or the first image's size) and converted to one mode: ``L`` when every image is
grayscale, else ``RGB``. Hidden files (``.DS_Store``) are ignored; any other non-image is an error.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from reslab.data.arrays import stratified_fraction, to_dataset
from reslab.data.types import ArrayDataset
from reslab.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TEST_FRACTION = 0.2
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
_MAX_SIDE = 4096
_MAX_PIXELS = 1 << 26  # 64 Mpixel: refuse before decoding, so a lying header cannot eat memory or time


def _pil():  # type: ignore[no-untyped-def]
    from PIL import Image

    return Image


def _class_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass folder:PATH with one sub-folder per class")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataError(f"{root} has no class folders; put each class's images in its own sub-folder")
    return dirs


def _list_images(d: Path) -> list[Path]:
    files = []
    for p in sorted(d.iterdir()):
        if p.name.startswith("."):
            continue
        if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{p} is not a PNG/JPEG image; remove it or move it out of {d}")
        files.append(p)
    if not files:
        raise DataError(f"class folder {d} is empty; add PNG/JPEG images or remove the folder")
    return files


def _scan(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    dirs = _class_dirs(root)
    items = [(f, i) for i, d in enumerate(dirs) for f in _list_images(d)]
    return [d.name for d in dirs], items


def _check_pixels(path: Path, size: tuple[int, int]) -> None:
    if size[0] * size[1] > _MAX_PIXELS or min(size) < 1:
        raise DataError(f"image {path} claims to be {size[0]}x{size[1]} pixels; replace or remove it")


def _read(path: Path, size: tuple[int, int], mode: str) -> np.ndarray:
    """Decode one image, convert it to ``mode`` and resize it to ``size``: (H, W) or (H, W, 3) uint8."""
    Image = _pil()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_pixels(path, img.size)
                out = img.convert(mode)
                if out.size != size:
                    out = out.resize(size, Image.Resampling.BILINEAR)
                return np.asarray(out, dtype=np.uint8)
    except DataError:
        raise
    except Exception as e:  # UnidentifiedImageError, OSError (truncated), DecompressionBomb*, SyntaxError...
        raise DataError(f"cannot read image {path} ({type(e).__name__}: {e}); replace or remove it") from e


def _decode(items: list[tuple[Path, int]], size: tuple[int, int], mode: str) -> tuple[np.ndarray, np.ndarray]:
    c = 1 if mode == "L" else 3
    x = np.empty((len(items), c, size[1], size[0]), dtype=np.uint8)  # (N, C, H, W)
    for n, (path, _) in enumerate(items):
        arr = _read(path, size, mode)
        x[n] = arr[None] if c == 1 else arr.transpose(2, 0, 1)
    return x, np.array([lab for _, lab in items], dtype=np.int64)


def _probe(items: list[tuple[Path, int]]) -> tuple[tuple[int, int], str]:
    """The first image's size and the common mode, from headers only."""
    Image = _pil()
    first_size, gray = None, True
    for path, _ in items:
        try:
            with Image.open(path) as img:
                size, mode = img.size, img.mode
            _check_pixels(path, size)
        except DataError:
            raise
        except Exception as e:
            raise DataError(
                f"cannot read image {path} ({type(e).__name__}: {e}); replace or remove it"
            ) from e
        first_size = first_size or size
        gray = gray and mode in _GRAY_MODES
    assert first_size is not None
    return first_size, "L" if gray else "RGB"


def load_folder(
    path: str | Path, *, seed: int = 0, image_size: int | None = None, name: str | None = None
) -> ArrayDataset:
    """Load a class-per-folder image tree (see the module docstring).

    Args:
        path: the root folder: ``PATH/CLASS/img.png`` or ``PATH/{train,test}/CLASS/img.png``.
        seed: seeds the stratified 80/20 split when there are no ``train/``/``test/`` folders.
        image_size: resize every image to ``image_size x image_size``; default: the first image's size.
        name: the dataset name recorded in the result (default ``folder:PATH``).

    Raises:
        DataError: no classes, an empty class, a non-image or unreadable file, or a test class unknown
            to the train split.
    """
    root = Path(path).expanduser()
    name = name or f"folder:{path}"
    if image_size is not None and not 0 < image_size <= _MAX_SIDE:
        raise DataError(f"image_size {image_size} is out of range; pick 1..{_MAX_SIDE}")
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes, train_items = _scan(root / "train")
        test_classes, test_raw = _scan(root / "test")
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise DataError(
                f"{root / 'test'} has classes {unknown} missing from {root / 'train'}; rename them"
            )
        remap = [classes.index(c) for c in test_classes]
        test_items = [(p, remap[i]) for p, i in test_raw]
        all_items = train_items + test_items
    else:
        classes, all_items = _scan(root)
    size, mode = _probe(all_items)
    if image_size is not None:
        size = (image_size, image_size)
    if max(size) > _MAX_SIDE:
        raise DataError(
            f"{all_items[0][0]} is {size[0]}x{size[1]}; pass an image_size of at most {_MAX_SIDE}"
        )
    x, y = _decode(all_items, size, mode)
    if (root / "train").is_dir() and (root / "test").is_dir():
        n_train = len(train_items)
        train, test = (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
        split = "folders"
    else:
        keep, hold = stratified_fraction(y, TEST_FRACTION, seed)
        train, test = (x[keep], y[keep]), (x[hold], y[hold])
        split = f"stratified {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} seed {seed}"
    augment = "crop_flip" if mode == "RGB" else "none"
    meta = {"format": "folder", "mode": mode, "split": split}
    return to_dataset(name, train, test, classes, augment=augment, source=str(root), meta=meta)
