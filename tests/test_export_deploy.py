"""Deployable export: torch.export (.pt2), ONNX and TorchScript with the normalisation baked in take raw uint8
images and agree with ``reslab predict`` on the same image files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import exit_code, tiny
from reslab.data.images import read_image_chw
from reslab.engine import predict, train
from test_streaming import striped_folder

pytestmark = pytest.mark.usefixtures("one_thread")
TOLERANCE = 1e-5  # fp32 on CPU: the same arithmetic in another graph; only summation order differs


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A run on RGB images of 30x18 (scaled and center-cropped to 12x12), and four images of other sizes."""
    root = tmp_path_factory.mktemp("deploy")
    folder = striped_folder(root / "f")
    run = root / "run"
    train(tiny(run, dataset=f"folder:{folder}", image_size=12, iterations=8, batch_size=8, warmup_iters=0))
    rng = np.random.default_rng(3)
    images = []
    for i, (w, h, suffix) in enumerate(
        [(30, 18, ".png"), (17, 25, ".jpg"), (64, 64, ".png"), (12, 12, ".jpg")]
    ):
        path = root / f"img{i}{suffix}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        images.append(path)
    return run, images


def _predicted(run: Path, images: list[Path]) -> np.ndarray:
    """(N, K) probabilities from ``reslab predict``, in the run's class order."""
    out = predict(run, images, top_k=10, precision="fp32")
    classes = sorted({c for p in out for c, _ in p.top})
    return np.array([[dict(p.top)[c] for c in classes] for p in out])


def _pixels(images: list[Path]) -> torch.Tensor:
    """The uint8 (N, C, H, W) batch a deployer decodes: the same reader, crop and size as predict."""
    return torch.stack([torch.from_numpy(read_image_chw(p, (3, 12, 12), crop=True)) for p in images])


def test_torch_export_with_uint8_input_agrees_with_predict(deploy, tmp_path: Path) -> None:
    run, images = deploy
    out = tmp_path / "model.pt2"
    assert exit_code(["export", str(run), "--uint8-input", "--out", str(out)]) == 0  # torch-export: default
    extra = {"reslab.json": ""}
    program = torch.export.load(str(out), extra_files=extra)
    meta = json.loads(extra["reslab.json"])
    assert meta["classes"] == ["a", "b"] and meta["input"].startswith("uint8")
    with torch.no_grad():
        probs = program.module()(_pixels(images)).softmax(1).numpy()
    diff = np.abs(probs - _predicted(run, images)).max()
    print(f"torch.export .pt2 vs reslab predict: max abs diff of probabilities {diff:.2e}")
    assert diff < TOLERANCE
    with torch.no_grad():  # the batch dimension is dynamic
        assert program.module()(_pixels(images[:3])).shape == (3, 2)


def test_onnx_with_uint8_input_agrees_with_predict(deploy, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    run, images = deploy
    out = tmp_path / "model.onnx"
    assert exit_code(["export", str(run), "--format", "onnx", "--uint8-input", "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    meta = json.loads(session.get_modelmeta().custom_metadata_map["reslab"])
    assert meta["normalization"]["mode"] == "channel"
    (logits,) = session.run(None, {"images": _pixels(images).numpy()})
    probs = torch.from_numpy(logits).softmax(1).numpy()
    diff = np.abs(probs - _predicted(run, images)).max()
    print(f"ONNX (onnxruntime) vs reslab predict: max abs diff of probabilities {diff:.2e}")
    assert diff < TOLERANCE


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_is_legacy_and_agrees_too(deploy, tmp_path: Path, capsys) -> None:
    run, images = deploy
    out = tmp_path / "model.pt"
    assert exit_code(["export", str(run), "--format", "torchscript", "--uint8-input", "--out", str(out)]) == 0
    assert "(legacy format)" in capsys.readouterr().out
    with torch.no_grad():
        probs = torch.jit.load(str(out))(_pixels(images)).softmax(1).numpy()
    assert np.abs(probs - _predicted(run, images)).max() < TOLERANCE
