"""``train(data=..., test_data=...)``: numpy arrays, tensors and torch Datasets through the same loaders
(resident, or a Dataset streamed by DataLoader workers when it exceeds the memory budget), recorded as
memory:<name>, resumed only with the same data; compare, ablate, evaluate and the studies take it too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset, TensorDataset

import reslab
from helpers import exit_code, one_line_error
from reslab.engine import TrainConfig, train
from reslab.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

RNG = np.random.default_rng(0)
# Two classes a net can tell apart: a bright or a dark square on noise, (N, H, W, C) uint8.
Y = np.arange(160) % 2
X = RNG.integers(0, 90, (160, 12, 12, 3), dtype=np.uint8)
X[Y == 1, 3:9, 3:9] = 230
X_TEST, Y_TEST = X[:40].copy(), Y[:40].copy()


def settings(out: Path, **kw: object) -> dict:
    base = dict(model="resnet8", iterations=12, batch_size=16, eval_every=6, device="cpu", precision="fp32",
                progress="off", num_threads=1, out=str(out))  # fmt: skip
    return {**base, **kw}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def same(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


class Pairs(Dataset):
    """A map-style Dataset of (float (C, H, W) in [0, 1], int) pairs, as torchvision's ToTensor yields."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.classes = ["dark", "bright"]
        self.x, self.y = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


@pytest.fixture(scope="module")
def arrays_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("memory") / "arrays"
    train(**settings(out), data=(X, Y), test_data=(X_TEST, Y_TEST))
    return out


def test_numpy_arrays_train_and_are_recorded_as_memory_data(arrays_run: Path) -> None:
    meta = json.loads((arrays_run / "config.json").read_text())
    assert meta["config"]["dataset"] == "memory:arrays" and meta["data"]["classes"] == ["0", "1"]
    assert meta["data"]["input_shape"] == [3, 12, 12] and meta["data"]["fingerprint"].startswith("sha256:")
    summary = json.loads((arrays_run / "summary.json").read_text())
    assert summary["iterations"] == 12 and summary["num_classes"] == 2
    assert summary["final_test_error"] < 0.5  # bright vs dark squares: learned in 12 steps


def test_tensors_and_a_dataset_in_any_form_give_the_same_run(arrays_run: Path, tmp_path: Path) -> None:
    """The same pixels as float tensors in [0, 1] (NCHW), or a torch Dataset of them: the same weights."""
    floats = torch.from_numpy(X).permute(0, 3, 1, 2).float() / 255  # (N, C, H, W)
    test = torch.from_numpy(X_TEST).permute(0, 3, 1, 2).float() / 255
    train(**settings(tmp_path / "t"), data=(floats, torch.from_numpy(Y)), test_data=(test, Y_TEST))
    assert same(arrays_run, tmp_path / "t")
    run = train(**settings(tmp_path / "d"), data=Pairs(X, Y), test_data=Pairs(X_TEST, Y_TEST))
    assert same(arrays_run, tmp_path / "d") and run.dataset == "memory:Pairs"
    assert json.loads((tmp_path / "d" / "config.json").read_text())["data"]["classes"] == ["dark", "bright"]
    # a TensorDataset of uint8 images, without a test split: a stratified 20% is held out
    held = train(**settings(tmp_path / "h"), data=TensorDataset(torch.from_numpy(X).permute(0, 3, 1, 2),
                                                                  torch.from_numpy(Y)))  # fmt: skip
    assert json.loads((held.run_dir / "summary.json").read_text())["iterations"] == 12


def test_a_dataset_over_the_memory_budget_streams_the_same_batches(tmp_path: Path, capsys) -> None:
    resident = tmp_path / "resident"
    train(**settings(resident), data=Pairs(X, Y), test_data=Pairs(X_TEST, Y_TEST))
    streamed = tmp_path / "streamed"
    kw = settings(streamed, data_memory_gib=1e-6, data_workers=1, progress="lines")
    run = train(**kw, data=Pairs(X, Y), test_data=Pairs(X_TEST, Y_TEST))
    assert "streaming from the Dataset with 1 worker(s)" in capsys.readouterr().err
    assert same(resident, streamed) and run.iterations == 12
    data = json.loads((streamed / "config.json").read_text())["data"]
    assert data["fingerprint"].startswith("labels-sha256:") and data["classes"] == ["dark", "bright"]


def test_resume_needs_the_same_data_again(tmp_path: Path, arrays_run: Path) -> None:
    run = tmp_path / "run"

    def stop(m: dict) -> None:
        if m["iteration"] == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(**settings(run), data=(X, Y), test_data=(X_TEST, Y_TEST), callback=stop)
    resume = TrainConfig(resume=str(run), progress="off", num_threads=1)
    with pytest.raises(ConfigError, match=r"trained on data passed in memory \(memory:arrays\); resume it"):
        train(resume)
    other = X.copy()
    other[0, 0, 0, 0] ^= 1  # one pixel differs
    with pytest.raises(ConfigError, match="the data passed differs from the data"):
        train(resume, data=(other, Y), test_data=(X_TEST, Y_TEST))
    train(resume, data=(X, Y), test_data=(X_TEST, Y_TEST))
    assert same(run, arrays_run)  # stopped and resumed: the weights of the uninterrupted run


def test_naming_and_refusals(tmp_path: Path, capsys) -> None:
    run = train(**settings(tmp_path / "n"), dataset="memory:squares", data=(X, Y), test_data=(X_TEST, Y_TEST))
    assert run.dataset == "memory:squares"
    with pytest.raises(ConfigError, match="data= and dataset='cifar10' both name the training data"):
        train(**settings(tmp_path / "x"), dataset="cifar10", data=(X, Y))
    with pytest.raises(ConfigError, match="test_data= needs the training data too"):
        train(**settings(tmp_path / "x"), test_data=(X, Y))
    with pytest.raises(ConfigError, match="--image-size applies to folder"):
        train(**settings(tmp_path / "x"), image_size=8, data=(X, Y))
    named = _dataset_run(tmp_path)
    with pytest.raises(ConfigError, match="the run trained on synthetic:1x12x12; drop data="):
        train(TrainConfig(resume=str(named), progress="off"), data=(X, Y))
    capsys.readouterr()
    assert exit_code(["train", "--dataset", "memory:x", "--out", str(tmp_path / "cli")]) == 2
    assert "names data passed in memory: pass it with reslab.train" in one_line_error(capsys)


def _dataset_run(tmp_path: Path) -> Path:
    from helpers import tiny

    out = tmp_path / "named"
    train(tiny(out, iterations=4))
    return out


def test_evaluate_a_memory_run_with_its_data(arrays_run: Path, capsys) -> None:
    with pytest.raises(ConfigError, match=r"evaluate on it with reslab.evaluate\(RUN, data="):
        reslab.evaluate(arrays_run, save=False)
    report = reslab.evaluate(arrays_run, data=(X_TEST, Y_TEST), save=False)
    summary = json.loads((arrays_run / "summary.json").read_text())
    assert report.n == 40 and report.error == summary["final_test_error"] and report.split == "data"
    assert exit_code(["eval", str(arrays_run)]) == 2
    assert "data passed in memory to train()" in one_line_error(capsys)


def test_compare_and_a_study_take_the_data(tmp_path: Path, arrays_run: Path) -> None:
    grey = X.mean(3).astype(np.uint8)  # (N, H, W): the MLPs take any image shape
    sweep = reslab.compare(
        family="mlp", depths=(1,), iterations=4, out=str(tmp_path / "sweep"), progress="off",
        data=(grey, Y), test_data=(grey[:40], Y[:40]),
    )  # fmt: skip
    assert {r.model for r in sweep.runs} == {"plainmlp1", "resmlp1"}
    first = json.loads((Path(sweep.runs[0].path) / "config.json").read_text())
    assert first["config"]["dataset"] == "memory:arrays"
    recorded = json.loads((tmp_path / "sweep" / "compare.json").read_text())["settings"]
    assert recorded["data_fingerprint"] == first["data"]["fingerprint"]
    with pytest.raises(ConfigError, match="holds a sweep with data_fingerprint="):  # other data, same --out
        reslab.compare(family="mlp", depths=(1,), iterations=4, out=str(tmp_path / "sweep"), progress="off",
                       data=(255 - grey, Y), test_data=(grey[:40], Y[:40]))  # fmt: skip
    study = reslab.ablate(
        variants=("identity", "scaling"), depth=8, seeds=1, iterations=2, out=str(tmp_path / "ablate"),
        progress="off", data=(X, Y), test_data=(X_TEST, Y_TEST),
    )  # fmt: skip
    assert [r.kind for r in study.rows] == ["identity", "scaling"]
    with pytest.raises(ConfigError, match="devices= trains each run in a process of its own"):
        reslab.ablate(depth=8, seeds=1, iterations=2, devices=("cpu", "cpu"), data=(X, Y))
    with pytest.raises(ConfigError, match=r"pass it again with data=\(x, y\)"):
        reslab.responses(entries=(str(arrays_run),), out=str(tmp_path / "r"))
    study = reslab.responses(entries=(str(arrays_run),), out=str(tmp_path / "r"), samples=16, data=(X, Y))
    assert [p.model_name for p in study.profiles] == ["resnet8"]
