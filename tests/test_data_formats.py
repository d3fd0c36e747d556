"""Each dataset format, read from tiny files the tests build in the official layouts."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from reslab.data import ArrayDataset, load_dataset
from reslab.errors import ConfigError, DataError

try:
    from tests.test_data_builders import (
        image_bytes,
        make_cifar_bin,
        make_cifar_py,
        make_folder,
        make_idx,
        make_signs,
        py2_cifar_pickle,
        tar_dir,
    )
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    from test_data_builders import (  # type: ignore[no-redef]
        image_bytes,
        make_cifar_bin,
        make_cifar_py,
        make_folder,
        make_idx,
        make_signs,
        py2_cifar_pickle,
        tar_dir,
    )


def check_contract(ds: ArrayDataset, n_train: int, n_test: int, shape: tuple[int, int, int], k: int) -> None:
    assert ds.train_x.shape == (n_train, *shape) and ds.test_x.shape == (n_test, *shape)
    assert ds.train_x.dtype == torch.uint8 and ds.test_x.dtype == torch.uint8
    assert ds.train_y.dtype == torch.int64 and ds.train_y.shape == (n_train,)
    assert ds.train_x.device.type == "cpu" and ds.train_x.is_contiguous()
    assert ds.num_classes == k and ds.image_shape == shape
    assert int(ds.train_y.max()) < k and int(ds.train_y.min()) >= 0


# ---------------------------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_python_unpacked(tmp_path: Path, name: str) -> None:
    d = make_cifar_py(tmp_path, name, n=6)
    ds = load_dataset(name, tmp_path, download=False)
    n_batches = 5 if name == "cifar10" else 1
    check_contract(ds, 6 * n_batches, 6, (3, 32, 32), 10 if name == "cifar10" else 100)
    assert ds.augment == "crop_flip" and ds.classes[0] == "class0" and ds.meta["format"] == "python"
    # pixel layout: the 3072 bytes are the R, G, B planes of a 32x32 image, row-major
    import pickle

    first = pickle.loads((d / ("data_batch_1" if name == "cifar10" else "train")).read_bytes())
    assert np.array_equal(ds.train_x[0].numpy().reshape(-1), first[b"data"][0])


def test_cifar10_python2_pickles(tmp_path: Path) -> None:
    # the official files are Python 2 pickles with str keys and numpy.core.multiarray arrays
    d = make_cifar_py(tmp_path, "cifar10")
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (d / f).write_bytes(py2_cifar_pickle(data, [3, 9]))
    ds = load_dataset("cifar10", tmp_path, download=False)
    assert ds.train_x.shape == (10, 3, 32, 32) and ds.train_y.tolist() == [3, 9] * 5
    assert ds.train_x[1, 0, 0, 0].item() == 3072 % 256


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_python_packed(tmp_path: Path, name: str) -> None:
    src = make_cifar_py(tmp_path / "build", name)
    archive = "cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz"
    data = tmp_path / "data"
    data.mkdir()
    tar_dir(data / archive, src)
    ds = load_dataset(name, data, download=False)
    assert ds.train_x.shape[1:] == (3, 32, 32)
    assert (data / src.name).is_dir()  # unpacked next to the archive, like the official instructions
    assert not [p for p in data.iterdir() if p.name.startswith(".extract")]
    again = load_dataset(name, data, download=False)  # now from the unpacked folder
    assert torch.equal(again.train_x, ds.train_x)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("packed", [False, True])
def test_cifar_binary(tmp_path: Path, name: str, packed: bool) -> None:
    d = make_cifar_bin(tmp_path / "build", name, n=5)
    data = tmp_path / "data"
    if packed:
        data.mkdir()
        tar_dir(data / ("cifar-10-binary.tar.gz" if name == "cifar10" else "cifar-100-binary.tar.gz"), d)
    else:
        shutil.move(str(d.parent), str(data))
    ds = load_dataset(name, data, download=False)
    n_batches = 5 if name == "cifar10" else 1
    check_contract(ds, 5 * n_batches, 5, (3, 32, 32), 10 if name == "cifar10" else 100)
    assert ds.classes[1] == "c1" and ds.meta["format"] == "binary"


def test_cifar_binary_fine_label_of_cifar100(tmp_path: Path) -> None:
    d = tmp_path / "cifar-100-binary"
    d.mkdir()
    rec = np.zeros((2, 2 + 3072), dtype=np.uint8)
    rec[:, 0] = [3, 4]  # coarse labels
    rec[:, 1] = [77, 99]  # fine labels: the ones reslab uses
    rec[1, 2:] = 255
    for f in ("train.bin", "test.bin"):
        (d / f).write_bytes(rec.tobytes())
    ds = load_dataset("cifar100", tmp_path, download=False)
    assert (
        ds.train_y.tolist() == [77, 99] and int(ds.train_x[1].min()) == 255 and int(ds.train_x[0].max()) == 0
    )


def test_cifar_missing_names_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar10 not found in .*cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", tmp_path, download=False)


def test_cifar_incomplete_dir_names_missing_files(tmp_path: Path) -> None:
    d = make_cifar_py(tmp_path, "cifar10")
    (d / "data_batch_4").unlink()
    with pytest.raises(DataError, match=r"cifar-10-batches-py is incomplete \(missing data_batch_4\)"):
        load_dataset("cifar10", tmp_path, download=False)


def test_cifar_truncated_batch_is_data_error(tmp_path: Path) -> None:
    d = make_cifar_py(tmp_path, "cifar10")
    raw = (d / "data_batch_3").read_bytes()
    (d / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path, download=False)


# ---------------------------------------------------------------------------------------------- idx


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx(tmp_path: Path, name: str, gz: bool) -> None:
    make_idx(tmp_path / name, n_train=8, n_test=4, gz=gz)
    ds = load_dataset(name, tmp_path, download=False)
    check_contract(ds, 8, 4, (1, 28, 28), 10)
    assert ds.augment == "none"
    assert ds.classes[0] == ("0" if name == "mnist" else "T-shirt/top")
    opener = gzip.open if gz else open
    with opener(tmp_path / name / ("train-images-idx3-ubyte" + (".gz" if gz else "")), "rb") as f:
        raw = f.read()
    assert np.array_equal(ds.train_x[:, 0].numpy().reshape(-1), np.frombuffer(raw[16:], np.uint8))


def test_idx_torchvision_layout(tmp_path: Path) -> None:
    make_idx(tmp_path / "FashionMNIST" / "raw", gz=False)
    assert load_dataset("fashion-mnist", tmp_path, download=False).train_x.shape == (8, 1, 28, 28)


def test_idx_wrong_magic_and_count_mismatch(tmp_path: Path) -> None:
    d = make_idx(tmp_path / "mnist", gz=False)
    good = (d / "t10k-labels-idx1-ubyte").read_bytes()
    (d / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + good[4:])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path, download=False)
    make_idx(d, n_train=8, n_test=4, gz=False)
    (d / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))
    with pytest.raises(DataError, match=r"4 images but .* 3 labels"):
        load_dataset("mnist", tmp_path, download=False)


def test_idx_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="mnist not found"):
        load_dataset("mnist", tmp_path, download=False)


# ---------------------------------------------------------------------------------------------- signs


def test_signs_h5(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    make_signs(tmp_path, n_train=6, n_test=3)
    ds = load_dataset("signs", tmp_path)
    check_contract(ds, 6, 3, (3, 64, 64), 6)
    assert ds.classes == ["0", "1", "2", "3", "4", "5"] and ds.augment == "crop_flip"


def test_signs_without_h5py_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    (tmp_path / "train_signs.h5").touch()
    (tmp_path / "test_signs.h5").touch()
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py -> ImportError
    with pytest.raises(DataError, match=r'pip install "reslab\[h5\]"'):
        load_dataset("signs", tmp_path)


def test_signs_not_hdf5(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    make_signs(tmp_path)
    (tmp_path / "test_signs.h5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DataError, match=r"test_signs\.h5"):
        load_dataset("signs", tmp_path)


# ---------------------------------------------------------------------------------------------- folder


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_folder_split_80_20(tmp_path: Path, fmt: str) -> None:
    make_folder(tmp_path, {"cat": 10, "dog": 5}, fmt=fmt)
    ds = load_dataset(f"folder:{tmp_path}", seed=1)
    check_contract(ds, 12, 3, (3, 10, 12), 2)
    assert ds.classes == ["cat", "dog"] and ds.augment == "crop_flip"
    assert torch.bincount(ds.test_y).tolist() == [2, 1]
    same = load_dataset(f"folder:{tmp_path}", seed=1)
    assert torch.equal(same.test_x, ds.test_x)


def test_folder_train_test_dirs_resize_and_gray(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", {"a": 3, "b": 2}, mode="L", size=(20, 20))
    make_folder(tmp_path / "test", {"b": 2}, fmt="JPEG", mode="L", size=(30, 16))
    ds = load_dataset(f"folder:{tmp_path}", image_size=8)
    check_contract(ds, 5, 2, (1, 8, 8), 2)
    assert ds.test_y.tolist() == [1, 1] and ds.augment == "none"


def test_folder_mixed_modes_become_rgb(tmp_path: Path) -> None:
    make_folder(tmp_path, {"a": 2}, mode="L")
    make_folder(tmp_path, {"b": 2}, mode="RGB")
    assert load_dataset(f"folder:{tmp_path}").image_shape == (3, 10, 12)


@pytest.mark.parametrize("problem", ["empty_class", "non_image", "no_classes", "corrupt"])
def test_folder_errors_name_the_path(tmp_path: Path, problem: str) -> None:
    make_folder(tmp_path, {"a": 2, "b": 2})
    if problem == "empty_class":
        bad = tmp_path / "c"
        bad.mkdir()
    elif problem == "non_image":
        bad = tmp_path / "a" / "notes.txt"
        bad.write_text("hello")
    elif problem == "corrupt":
        bad = tmp_path / "b" / "1.png"
        bad.write_bytes(image_bytes()[:40])
    else:
        bad = tmp_path / "none"
        bad.mkdir()
    root = bad if problem == "no_classes" else tmp_path
    with pytest.raises(DataError, match=re.escape(str(bad))):
        load_dataset(f"folder:{root}")


def test_folder_needs_path() -> None:
    with pytest.raises(ConfigError, match="folder:PATH"):
        load_dataset("folder:")
