"""``folder:PATH`` datasets: one sub-folder per class of PNG/JPEG files, as people keep their own images.

``PATH/CLASS/*.png|jpg|jpeg`` becomes one dataset; if ``PATH/train`` and ``PATH/test`` both exist they are
used as the two splits, otherwise a seeded stratified 80/20 split is drawn. All images are brought to one
size and converted to one mode: ``L`` when every image is grayscale, else ``RGB``; transparent pixels are put
on white. With ``image_size=N`` each image's shorter side is scaled to N and the centre NxN cut out (the
aspect ratio is kept); without it every image is stretched to the first image's size. Every image is read by
:func:`reslab.data.images.read_image`, the reader ``predict`` shares, with its guards. Hidden files
(``.DS_Store``) are ignored; any other non-image is an error. The decoded dataset's size is checked against
free memory before the first image is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reslab.data.arrays import stratified_fraction, to_dataset
from reslab.data.images import GRAY_MODES, SUFFIXES, probe_image, read_image
from reslab.data.types import ArrayDataset, Augment
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
    try:
        dirs = _class_dirs(root)
        items = [(f, i) for i, d in enumerate(dirs) for f in _list_images(d)]
    except OSError as err:  # an unreadable class folder (PermissionError), a folder gone meanwhile
        where = err.filename or root
        raise DataError(
            f"cannot read folder {where}: {err.strerror or err}; make it readable or move it out of {root}"
        ) from None
    return [d.name for d in dirs], items


def decode_items(
    items: list[tuple[Path, int]], size: tuple[int, int], mode: str, *, crop: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, C, H, W) uint8 and labels (N,) int64 of ``items``, each read by the one image reader."""
    c = 1 if mode == "L" else 3
    x = np.empty((len(items), c, size[1], size[0]), dtype=np.uint8)  # (N, C, H, W)
    for n, (path, _) in enumerate(items):
        arr = read_image(path, mode=mode, size=size, crop=crop)
        x[n] = arr[None] if c == 1 else arr.transpose(2, 0, 1)
    return x, np.array([lab for _, lab in items], dtype=np.int64)


def _probe(items: list[tuple[Path, int]]) -> tuple[tuple[int, int], str, int, set[tuple[int, int]]]:
    """The first image's size, the common mode, the largest image's pixel count and every (width, height)
    met, from headers only."""
    first_size, gray, largest, sizes = None, True, 0, set()
    for path, _ in items:
        size, mode = probe_image(path)
        first_size = first_size or size
        gray = gray and mode in GRAY_MODES
        largest = max(largest, size[0] * size[1])
        sizes.add(size)
    assert first_size is not None
    return first_size, "L" if gray else "RGB", largest, sizes


@dataclass(frozen=True)
class FolderPlan:
    """What a folder holds, from file names and image headers only: nothing decoded yet."""

    name: str  # folder:PATH as given
    root: Path
    classes: list[str]
    train: list[tuple[Path, int]]  # (file, label) of the train split, in order
    test: list[tuple[Path, int]]
    mode: str  # "L" when every image is grey, else "RGB"
    size: tuple[int, int]  # (width, height) every image is brought to
    crop: bool  # True: scale + center-crop (image_size given); False: stretch to the first image's size
    split: str  # how train and test were told apart
    largest: int  # pixels of the largest image (its decoding is the peak)
    sizes: int = 1  # distinct image sizes in the folder
    size_range: str = ""  # "60x50 to 120x96" when they differ

    @property
    def resize_note(self) -> str:
        """One line when images of several sizes are stretched to the first one's (no image_size)."""
        if self.crop or self.sizes <= 1:
            return ""
        w, h = self.size
        return (
            f"{self.name}: images of {self.sizes} sizes ({self.size_range}), each stretched to the first "
            f"one's, {w}x{h}; --image-size N scales the shorter side to N and center-crops NxN instead"
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the decoded images."""
        return (1 if self.mode == "L" else 3, self.size[1], self.size[0])

    @property
    def decoded_bytes(self) -> int:
        """Bytes of both splits decoded as uint8 (N, C, H, W)."""
        c, h, w = self.shape
        return (len(self.train) + len(self.test)) * c * h * w

    @property
    def augment(self) -> Augment:
        return "crop_flip" if self.mode == "RGB" else "none"

    @property
    def meta(self) -> dict[str, str]:
        out = {"format": "folder", "mode": self.mode, "split": self.split}
        if self.crop:
            out["resize"] = f"shorter side to {self.size[0]}, center crop"
        elif self.sizes > 1:
            out["resize"] = f"stretched to the first image's {self.size[0]}x{self.size[1]}"
            out["note"] = self.resize_note
        return out


def _items(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]] | None]:
    """(classes, items, test items or None): ``root/{train,test}/CLASS`` or ``root/CLASS``."""
    if not ((root / "train").is_dir() and (root / "test").is_dir()):
        classes, items = _scan(root)
        return classes, items, None
    classes, train_items = _scan(root / "train")
    test_classes, test_raw = _scan(root / "test")
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise DataError(f"{root / 'test'} has classes {unknown} missing from {root / 'train'}; rename them")
    remap = [classes.index(c) for c in test_classes]
    return classes, train_items, [(p, remap[i]) for p, i in test_raw]


def plan_folder(
    path: str | Path, *, seed: int = 0, image_size: int | None = None, name: str | None = None
) -> FolderPlan:
    """List a class-per-folder image tree and read its image headers (see :func:`load_folder`)."""
    root = Path(path).expanduser()
    name = name or f"folder:{path}"
    if image_size is not None and not 0 < image_size <= _MAX_SIDE:
        raise DataError(f"image_size {image_size} is out of range; pick 1..{_MAX_SIDE}")
    classes, items, test = _items(root)
    size, mode, largest, sizes = _probe(items + (test or []))
    by_area = sorted(sizes, key=lambda s: (s[0] * s[1], s))
    size_range = f"{by_area[0][0]}x{by_area[0][1]} to {by_area[-1][0]}x{by_area[-1][1]}"
    if image_size is not None:
        size = (image_size, image_size)
    if max(size) > _MAX_SIDE:
        raise DataError(f"{items[0][0]} is {size[0]}x{size[1]}; pass an image_size of at most {_MAX_SIDE}")
    if test is not None:
        train, split = items, "folders"
    else:
        keep, hold = stratified_fraction(np.array([lab for _, lab in items]), TEST_FRACTION, seed)
        train, test = [items[i] for i in keep], [items[i] for i in hold]
        split = f"stratified {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} seed {seed}"
    return FolderPlan(
        name, root, classes, train, test, mode, size, image_size is not None, split, largest, len(sizes),
        size_range if len(sizes) > 1 else "",
    )  # fmt: skip


def load_folder(
    path: str | Path, *, seed: int = 0, image_size: int | None = None, name: str | None = None
) -> ArrayDataset:
    """Load a class-per-folder image tree (see the module docstring).

    Args:
        path: the root folder: ``PATH/CLASS/img.png`` or ``PATH/{train,test}/CLASS/img.png``.
        seed: seeds the stratified 80/20 split when there are no ``train/``/``test/`` folders.
        image_size: scale each image's shorter side to ``image_size`` and cut out the centre
            ``image_size x image_size``; default: stretch every image to the first image's size.
        name: the dataset name recorded in the result (default ``folder:PATH``).

    Raises:
        DataError: no classes, an empty class, a non-image or unreadable file, or a test class unknown
            to the train split.
    """
    plan = plan_folder(path, seed=seed, image_size=image_size, name=name)
    c, h, w = plan.shape
    n = len(plan.train) + len(plan.test)
    # (N, C, H, W) uint8 once, plus one image being decoded
    check_host_memory(
        plan.decoded_bytes + _DECODE_BYTES_PER_PIXEL * plan.largest,
        what=f"{plan.name} ({n:,} images of {c}x{h}x{w})",
        fix="use fewer or smaller images (image_size= resizes them)",
    )
    train = decode_items(plan.train, plan.size, plan.mode, crop=plan.crop)
    test = decode_items(plan.test, plan.size, plan.mode, crop=plan.crop)
    return to_dataset(
        plan.name, train, test, plan.classes, augment=plan.augment, source=str(plan.root), meta=plan.meta
    )
