"""Data already in memory: numpy arrays, torch tensors or a ``torch.utils.data.Dataset``, as the
:class:`~reslab.data.ArrayDataset` every other source gives (uint8 ``(N, C, H, W)`` images, int64 labels).

    ds = in_memory_dataset((x_train, y_train), (x_test, y_test))          # arrays or tensors
    ds = in_memory_dataset(torchvision_train_set, torchvision_test_set)   # any map-style Dataset

**Images.** ``(N, C, H, W)`` or ``(N, H, W, C)`` (the channel axis is the one of size 1 to 4; when both could
be, NCHW, PyTorch's layout; ``layout=`` decides it explicitly) or grey ``(N, H, W)``. A Dataset may yield
each image as a tensor ``(C, H, W)`` or ``(H, W)`` (torchvision's ``ToTensor``), an ndarray ``(H, W, C)``,
``(C, H, W)`` or ``(H, W)``, or a PIL image.

**Pixel values.** The loaders keep images as uint8 and normalise each batch on the device with the training
split's statistics (:mod:`reslab.data.loader`), so every input is stored as uint8:

- uint8 as given; other integers must lie in 0..255.
- floats in [0, 1] (``ToTensor``'s range) are scaled by 255; floats in [0, 255] are pixel values already.
- floats outside both ranges (standardised data, say) are mapped linearly from the training split's
  [min, max] onto 0..255, the test split with the same map (values beyond it clipped, with a warning). Per-
  channel normalisation (the default) undoes any such map, so nothing is lost but 8-bit rounding; the
  ``pixel`` normalisation sees the mapped values. One warning line says so.
- rounding to 8 bits is announced in one warning line when it changes the values (float data that is
  not already on a 1/255 grid): at most half a step, 0.2% of the range, below sensor noise in most images.
- NaN or infinite values are refused, naming the first image that holds one.

**Labels.** Class indices 0..K-1 (integers, or integral floats), ``(N,)`` or ``(N, 1)``; the class count is
the largest label + 1, or ``len(classes)`` when names are given (a Dataset's own ``.classes`` is used when
it has one). One-hot labels are refused with the fix (``y.argmax(1)``). A class with no training image is
announced. Without a test split, a stratified 20% of the training data is held out (seeded), as for
``folder:PATH``. Every problem is a one-line :class:`~reslab.errors.DataError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from reslab.data.arrays import stratified_fraction, to_dataset
from reslab.data.types import ArrayDataset, Augment
from reslab.errors import DataError, warn_line

Layout = Literal["auto", "NCHW", "NHWC"]
Warn = Callable[[str], None]
TEST_FRACTION = 0.2  # held out when no test split is given, as folder:PATH does
MAX_CHANNELS = 4  # grey, grey + alpha, RGB, RGBA: a larger axis is height or width
_CHUNK = 4096  # images converted at a time


def in_memory_dataset(
    train: Any,
    test: Any = None,
    *,
    classes: Sequence[str] | None = None,
    name: str = "arrays",
    layout: Layout = "auto",
    seed: int = 0,
    warn: Warn | None = None,
) -> ArrayDataset:
    """The :class:`~reslab.data.ArrayDataset` of in-memory data.

    Args:
        train: ``(images, labels)`` (numpy arrays or torch tensors) or a ``torch.utils.data.Dataset`` of
            ``(image, label)`` pairs.
        test: the same for the test split; None holds out a stratified 20% of ``train`` (seeded).
        classes: one name per class; default the Dataset's ``.classes``, else ``"0" .. "K-1"``.
        name: the dataset's name in run directories and reports.
        layout: ``"NCHW"`` or ``"NHWC"`` for 4-D arrays whose channel axis is ambiguous (``"auto"``: the
            axis of size 1 to 4, NCHW when both are).
        seed: the held-out split's seed.
        warn: where the one-line notes go (default: stderr, ``reslab: warning: ...``).

    Raises:
        DataError: one line naming the problem and the fix (shapes, dtypes, NaN, label range, lengths).
    """
    say = warn or warn_line
    names = list(classes) if classes is not None else dataset_classes(train)
    x_tr, y_tr, form = _split(train, "train", layout)
    if test is None:
        x_te, y_te = x_tr[:0], y_tr[:0]
    else:
        x_te, y_te, _ = _split(test, "test", layout)
        if x_te.shape[1:] != x_tr.shape[1:]:
            raise DataError(
                f"{name}: train images are {_chw(x_tr)} but test images are {_chw(x_te)}; "
                "give both splits the same image shape and layout"
            )
    x_tr, x_te = to_uint8(x_tr, x_te, say)
    names = class_names(names, y_tr, y_te, say)
    meta = {"format": "in memory", "input": form}
    if test is None:
        keep, hold = stratified_fraction(y_tr, TEST_FRACTION, seed)
        x_tr, y_tr, x_te, y_te = x_tr[keep], y_tr[keep], x_tr[hold], y_tr[hold]
        meta["split"] = f"stratified {TEST_FRACTION:.0%} of the training data held out (seed {seed})"
    # as folder:PATH: no flips for grey digits
    augment: Augment = "crop_flip" if x_tr.shape[1] == 3 else "none"
    return to_dataset(name, (x_tr, y_tr), (x_te, y_te), names, augment=augment, source="memory", meta=meta)


def labelled_images(
    data: Any, *, classes: Sequence[str], layout: Layout = "auto", warn: Warn | None = None
) -> tuple[Any, Any]:
    """One split of in-memory data (``(images, labels)`` or a Dataset, as :func:`in_memory_dataset` takes)
    as uint8 ``(N, C, H, W)`` and int64 ``(N,)`` tensors, its labels checked against ``classes``; what a
    trained run is evaluated on."""
    import torch

    say = warn or warn_line
    x, y, _ = _split(data, "evaluation", layout)
    x, _ = to_uint8(x, x[:0], say)
    if y.max() >= len(classes):
        raise DataError(
            f"a label is {y.max()} but the run has {len(classes)} classes (0..{len(classes) - 1})"
        )
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


# --- one split: images and labels as numpy arrays -----------------------------------------------------------


def _split(data: Any, split: str, layout: Layout) -> tuple[np.ndarray, np.ndarray, str]:
    """(images (N, C, H, W) in their own dtype, labels (N,) int64, a description of the input form)."""
    if isinstance(data, tuple | list) and len(data) == 2 and not is_dataset(data):
        x, y = _array(data[0], f"{split} images"), _array(data[1], f"{split} labels")
        form = f"{type(data[0]).__module__.split('.')[0]} {x.dtype} {tuple(x.shape)}"
        images = _nchw(x, split, layout)
    elif is_dataset(data):
        images, y = _from_dataset(data, split)
        form = f"torch Dataset {type(data).__name__} of {len(images)} (image, label) pairs"
    else:
        raise DataError(
            f"{split} data is a {type(data).__name__}; pass (images, labels) as numpy arrays or torch "
            "tensors, or a torch.utils.data.Dataset of (image, label) pairs"
        )
    labels = labels_array(y, split)
    if len(images) != len(labels):
        raise DataError(
            f"{split} split has {len(images)} images but {len(labels)} labels; pass one label per image"
        )
    if len(images) == 0:
        raise DataError(f"{split} split is empty; pass at least one image")
    return images, labels, form


def is_dataset(data: Any) -> bool:
    import torch.utils.data

    return isinstance(data, torch.utils.data.Dataset)


def _array(value: Any, what: str) -> np.ndarray:
    """A numpy view of a numpy array or a (CPU or device) torch tensor."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise DataError(f"{what} are a {type(value).__name__}; pass a numpy array or a torch tensor")


def _nchw(x: np.ndarray, split: str, layout: Layout) -> np.ndarray:
    """``x`` as (N, C, H, W): grey (N, H, W) gains a channel axis, NHWC is transposed (a view)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        hint = " (flat vectors: reshape them, e.g. x.reshape(-1, 28, 28))" if x.ndim == 2 else ""
        raise DataError(
            f"{split} images have shape {tuple(x.shape)}; pass (N, C, H, W), (N, H, W, C) or grey (N, H, W)"
            + hint
        )
    if layout == "auto":
        first, last = x.shape[1] <= MAX_CHANNELS, x.shape[3] <= MAX_CHANNELS
        if not first and not last:
            raise DataError(
                f"{split} images have shape {tuple(x.shape)}: no axis of 1 to {MAX_CHANNELS} channels; pass "
                "(N, C, H, W) or (N, H, W, C) images"
            )
        layout = "NCHW" if first else "NHWC"
    return x if layout == "NCHW" else x.transpose(0, 3, 1, 2)


def labels_array(y: Any, split: str) -> np.ndarray:
    """Class indices (N,) int64 from (N,) or (N, 1) integers, bools or integral floats."""
    y = _array(y, f"{split} labels")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        raise DataError(
            f"{split} labels have shape {tuple(y.shape)} (one-hot or scores); pass class indices: y.argmax(1)"
        )
    if y.ndim != 1:
        raise DataError(f"{split} labels have shape {tuple(y.shape)}; pass one class index per image, (N,)")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise DataError(f"{split} labels hold non-integer values; pass class indices 0..K-1")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{split} labels are {y.dtype}; pass integer class indices 0..K-1")
    labels = y.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise DataError(f"{split} labels include {labels.min()}; class indices start at 0")
    return labels


# --- a torch Dataset ----------------------------------------------------------------------------------------


def _from_dataset(ds: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Every (image, label) of a map-style or iterable Dataset, stacked as (N, C, H, W) and (N,)."""
    from reslab.resources import check_host_memory

    try:
        n = len(ds)
    except TypeError:
        n = None
    items = iter(ds) if n is None else (ds[i] for i in range(n))
    images: list[np.ndarray] = []
    labels: list[Any] = []
    for i, item in enumerate(items):
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise DataError(
                f"{split} Dataset item {i} is not an (image, label) pair; make it yield two values"
            )
        image = item_image(item[0], split, i)
        if images and image.shape != images[0].shape:
            raise DataError(
                f"{split} Dataset image {i} is {_chw(image[None])} but image 0 is {_chw(images[0][None])}; "
                "resize them to one size (e.g. torchvision's Resize) first"
            )
        if not images and n:  # the whole split, stacked, must fit: refuse before the copy
            check_host_memory(
                2 * n * image.nbytes, what=f"{split} Dataset of {n} images", fix="use smaller images"
            )
        images.append(image)
        labels.append(item_label(item[1], split, i))
    if not images:
        raise DataError(f"{split} Dataset is empty; pass at least one image")
    return np.stack(images), np.array(labels)


def item_image(image: Any, split: str, i: int) -> np.ndarray:
    """One image as (C, H, W): tensors are CHW (or HW), PIL images and HWC arrays are transposed."""
    import torch

    if isinstance(image, torch.Tensor):
        arr, chw = image.detach().cpu().numpy(), True
    elif isinstance(image, np.ndarray):
        arr, chw = image, None
    elif hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image: (H, W) or (H, W, C)
        arr, chw = np.asarray(image), False
    else:
        raise DataError(
            f"{split} Dataset image {i} is a {type(image).__name__}; yield a tensor, ndarray or PIL image"
        )
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim != 3:
        raise DataError(
            f"{split} Dataset image {i} has shape {tuple(arr.shape)}; yield (C, H, W) or (H, W) images"
        )
    if chw is None:  # an ndarray: the channel axis is the small one, CHW when both are
        chw = arr.shape[0] <= MAX_CHANNELS
    return arr if chw else arr.transpose(2, 0, 1)


def item_label(label: Any, split: str, i: int) -> Any:
    value = label.item() if hasattr(label, "item") else label
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DataError(f"{split} Dataset label {i} is {label!r}; yield a class index (an integer)")
    return value


def dataset_classes(data: Any) -> list[str] | None:
    names = getattr(data, "classes", None) if is_dataset(data) else None
    return [str(c) for c in names] if isinstance(names, list | tuple) and names else None


def _chw(x: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in x.shape[1:])


# --- pixel values and class names ---------------------------------------------------------------------------


def to_uint8(train: np.ndarray, test: np.ndarray, warn: Warn) -> tuple[np.ndarray, np.ndarray]:
    """Both splits as uint8 under one rule (see the module's docstring), decided on the training split."""
    if train.dtype == np.uint8 and test.dtype == np.uint8:
        return train, test
    for x, split in ((train, "train"), (test, "test")):
        if x.dtype.kind not in "uif" or x.dtype == np.bool_:
            raise DataError(f"{split} images are {x.dtype}; pass uint8, integer or float images")
        if x.dtype.kind == "f" and x.size and not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(1))[0])
            raise DataError(f"{split} image {bad} holds NaN or inf values; fix or drop those images")
    lo, hi = float(train.min()), float(train.max())
    if train.dtype.kind in "iu" and test.dtype.kind in "iu":
        if lo < 0 or hi > 255 or (test.size and (test.min() < 0 or test.max() > 255)):
            raise DataError("integer images must lie in 0..255; scale them to 0..255 or pass floats")
        return train.astype(np.uint8), test.astype(np.uint8)
    scale, shift = pixel_map(lo, hi, warn)
    out, step = [], 0.0
    for x, split in ((train, "train"), (test, "test")):
        converted, clipped, worst = _scaled(x, scale, shift)
        if clipped:
            warn(f"{split} images beyond the training split's range were clipped to it")
        out.append(converted)
        step = max(step, worst)
    if step > 1e-3:
        warn(f"float images stored as 8-bit for the loaders: rounded by up to {step / 255:.2%} of the range")
    return out[0], out[1]


def pixel_map(lo: float, hi: float, warn: Warn) -> tuple[float, float]:
    """``(scale, shift)`` taking float pixel values of the training split's range ``[lo, hi]`` onto 0..255
    (``x * scale + shift``): the rule of the module's docstring."""
    if lo >= 0 and hi <= 1:
        return 255.0, 0.0
    if lo >= 0 and hi <= 255:
        return 1.0, 0.0
    scale = 255.0 / (hi - lo) if hi > lo else 1.0
    warn(
        f"float images span [{lo:.4g}, {hi:.4g}], not [0, 1] or [0, 255]: mapped linearly onto 0..255 "
        "for the uint8 loaders (per-channel normalisation undoes the map; only 8-bit rounding is lost)"
    )
    return scale, -lo * scale


def _scaled(x: np.ndarray, scale: float, shift: float) -> tuple[np.ndarray, bool, float]:
    """``round(x * scale + shift)`` as uint8, in chunks (a float64 copy of a whole split would be 8x its
    uint8 size); whether anything was clipped, and the largest rounding step (in 0..255 units)."""
    out = np.empty(x.shape, dtype=np.uint8)
    clipped, worst = False, 0.0
    for i in range(0, len(x), _CHUNK):
        y = x[i : i + _CHUNK].astype(np.float64) * scale + shift
        clipped = clipped or bool(y.min() < -0.5 or y.max() > 255.5)
        y = np.clip(y, 0.0, 255.0)
        r = np.round(y)
        worst = max(worst, float(np.abs(r - y).max()))
        out[i : i + _CHUNK] = r
    return out, clipped, worst


def class_names(names: list[str] | None, y_train: np.ndarray, y_test: np.ndarray, warn: Warn) -> list[str]:
    top = int(max(y_train.max(), y_test.max() if y_test.size else 0))
    if names is None:
        names = [str(k) for k in range(top + 1)]
    elif top >= len(names):
        raise DataError(f"a label is {top} but {len(names)} class names were given; give one name per class")
    if len(set(names)) != len(names):
        raise DataError("class names repeat; give each class its own name")
    if len(names) < 2:
        raise DataError("the labels hold one class; a classifier needs at least two")
    missing = sorted(set(range(len(names))) - set(np.unique(y_train).tolist()))
    if missing:
        shown = ", ".join(names[k] for k in missing[:5]) + (" …" if len(missing) > 5 else "")
        warn(f"{len(missing)} class(es) have no training image: {shown}")
    return names
