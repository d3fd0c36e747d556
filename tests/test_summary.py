"""reslab.models.summary: multiply-adds as the paper counts them (He et al. 2015, Table 1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reslab.models import build_model, count_parameters, summarize
from reslab.models.summary import human


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machine: avoid OpenMP contention
    yield
    torch.set_num_threads(threads)


# shared/REFERENCE.md: multiply-adds at 224x224, v1 (stride in the first 1x1) and v1.5 (torchvision).
IMAGENET_V1 = {"resnet18": 1.81, "resnet34": 3.66, "resnet50": 3.86, "resnet101": 7.57, "resnet152": 11.28}
IMAGENET_V15 = {"resnet50": 4.09, "resnet101": 7.80, "resnet152": 11.51}
CIFAR_32 = {"resnet20": 40.6, "resnet32": 68.9, "resnet44": 97.2, "resnet56": 125.5, "resnet110": 252.9}


@pytest.mark.parametrize("name", list(IMAGENET_V1))
def test_imagenet_macs_v1(name: str) -> None:
    v1 = name in ("resnet50", "resnet101", "resnet152") or None
    s = summarize(build_model(name, stride_in_1x1=v1, device="meta"))
    assert s.input_size == (3, 224, 224)
    assert round(s.total_macs / 1e9, 2) == IMAGENET_V1[name]


@pytest.mark.parametrize("name", list(IMAGENET_V15))
def test_imagenet_macs_v15(name: str) -> None:
    s = summarize(build_model(name, device="meta"))
    assert round(s.total_macs / 1e9, 2) == IMAGENET_V15[name]


@pytest.mark.parametrize("name", list(CIFAR_32))
def test_cifar_macs(name: str) -> None:
    s = summarize(build_model(name, device="meta"), (3, 32, 32))
    assert round(s.total_macs / 1e6, 1) == CIFAR_32[name]
    assert (
        round(summarize(build_model(name.replace("resnet", "plain"), device="meta")).total_macs / 1e6, 1)
        == (CIFAR_32[name])
    )


def test_resnet20_macs_by_hand() -> None:
    # stem 16x32x32 outputs x 3x3x3; stage 1: 6 convs of 16x32x32 x 16x3x3; stages 2-3: one conv reading
    # half the channels, five full ones; fc 64x10.
    stage = 16 * 32 * 32 * 16 * 9
    expected = 16 * 32 * 32 * 27 + 6 * stage + 2 * (stage // 2 + 5 * stage) + 640
    assert summarize(build_model("resnet20", device="meta")).total_macs == expected == 40_551_040


def test_resnet50_rows_like_table1() -> None:
    model = build_model("resnet50", device="meta")
    s = summarize(model)
    assert [r.name for r in s.rows] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert [r.output_size for r in s.rows] == [
        (64, 56, 56),
        (256, 56, 56),
        (512, 28, 28),
        (1024, 14, 14),
        (2048, 7, 7),
        (1000,),
    ]
    assert [r.blocks for r in s.rows] == [0, 3, 4, 6, 3, 0]
    assert s.total_params == count_parameters(model) == 25_557_032
    assert s.rows[0].macs == 64 * 112 * 112 * 3 * 49  # the 7x7 stem conv; max-pool is free
    assert s.rows[-1].macs == 2048 * 1000
    text = s.table("resnet50")
    assert "layer4" in text and "2048x7x7" in text and "25,557,032" in text and "4.09G" in text


def test_generic_module_and_training_mode_restored() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(100, 2))
    model.train()
    s = summarize(model, (3, 5, 5))
    assert [r.name for r in s.rows] == ["0", "1", "2", "3"]
    assert [r.macs for r in s.rows] == [4 * 5 * 5 * 3 * 9, 0, 0, 200]
    assert s.rows[2].output_size == (100,)
    assert model.training


def test_mlp_summary() -> None:
    s = summarize(build_model("resmlp4"), (1, 28, 28))
    assert s.total_macs == 784 * 64 + 4 * 2 * 64 * 64 + 64 * 10
    assert s.total_blocks == 4


def test_human() -> None:
    assert human(4_089_184_256) == "4.09G" and human(40_551_040) == "40.6M" and human(640) == "640"
