"""``folder:PATH`` datasets: one sub-folder per class of PNG/JPEG files, as people keep their own images.

``PATH/CLASS/*.png|jpg|jpeg`` becomes one dataset; if ``PATH/train`` and ``PATH/test`` both exist they are
used as the two splits, otherwise a seeded stratified 80/20 split is drawn. All images are resized to one
size (``image_size``, or the first image's size) and converted to one mode: ``L`` when every image is
grayscale, else ``RGB``; transparent pixels are put on white. Every image is read by
:func:`reslab.data.images.read_image`, the reader ``predict`` shares, with its guards. Hidden files
(``.DS_Store``) are ignored; any other non-image is an error. The decoded dataset's size is checked against
free memory before the first image is decoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reslab.data.arrays import stratified_fraction, to_dataset
from reslab.data.images import GRAY_MODES, SUFFIXES, probe_image, read_image
from reslab.data.types import ArrayDataset
from reslab.errors import DataError
from reslab.resources import check_host_memory

IMAGE_SUFFIXES = SUFFIXES
TEST_FRACTION = 0.2
_MAX_SIDE = 4096
_DECODE_BYTES_PER_PIXEL = 16  # one image while it is decoded: RGBA, composited on white, converted, resized


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


def _decode(items: list[tuple[Path, int]], size: tuple[int, int], mode: str) -> tuple[np.ndarray, np.ndarray]:
    c = 1 if mode == "L" else 3
    x = np.empty((len(items), c, size[1], size[0]), dtype=np.uint8)  # (N, C, H, W)
    for n, (path, _) in enumerate(items):
        arr = read_image(path, mode=mode, size=size)
        x[n] = arr[None] if c == 1 else arr.transpose(2, 0, 1)
    return x, np.array([lab for _, lab in items], dtype=np.int64)


def _probe(items: list[tuple[Path, int]]) -> tuple[tuple[int, int], str, int]:
    """The first image's size, the common mode and the largest image's pixel count, from headers only."""
    first_size, gray, largest = None, True, 0
    for path, _ in items:
        size, mode = probe_image(path)
        first_size = first_size or size
        gray = gray and mode in GRAY_MODES
        largest = max(largest, size[0] * size[1])
    assert first_size is not None
    return first_size, "L" if gray else "RGB", largest


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
    size, mode, largest = _probe(all_items)
    if image_size is not None:
        size = (image_size, image_size)
    if max(size) > _MAX_SIDE:
        raise DataError(
            f"{all_items[0][0]} is {size[0]}x{size[1]}; pass an image_size of at most {_MAX_SIDE}"
        )
    split_folders = (root / "train").is_dir() and (root / "test").is_dir()
    # (N, C, H, W) uint8 once, twice when the 80/20 split copies it out, plus one image being decoded
    c = 1 if mode == "L" else 3
    decoded = len(all_items) * c * size[0] * size[1]
    check_host_memory(
        decoded * (1 if split_folders else 2) + _DECODE_BYTES_PER_PIXEL * largest,
        what=f"{name} ({len(all_items):,} images of {c}x{size[1]}x{size[0]})",
        fix="use fewer or smaller images (image_size= resizes them)",
    )
    x, y = _decode(all_items, size, mode)
    if split_folders:
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
