"""`reslab models` and `reslab summary`."""

from __future__ import annotations

import pytest

from reslab.cli import main
from reslab.models import list_models


def test_models_lists_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for name in list_models():
        assert name in lines
    assert lines["resnet1202"][1:] == ["cifar", "1202", "residual", "19,421,274"]
    assert lines["plain20"][1:] == ["cifar", "20", "plain", "269,722"]
    assert lines["resnet50"][1:] == ["imagenet", "50", "residual", "25,557,032"]
    assert lines["preact_resnet1001"][1:] == ["cifar_preact", "1001", "residual", "10,327,706"]


def test_models_family_filter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--family", "imagenet"]) == 0
    out = capsys.readouterr().out
    assert "resnet152" in out and "resnet20 " not in out


def test_summary_resnet50(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "resnet50"]) == 0
    out = capsys.readouterr().out
    for needle in ("input 3x224x224", "layer1", "256x56x56", "2048x7x7", "25,557,032", "4.09G"):
        assert needle in out
    assert main(["summary", "resnet50", "--stride-in-1x1"]) == 0
    assert "3.86G" in capsys.readouterr().out


def test_summary_cifar_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "40.6M" in out and "64x8x8" in out and "269,722" in out
    assert main(["summary", "resnet20", "--shortcut", "B", "--num-classes", "100"]) == 0
    assert f"{269_722 + 2_752 + 64 * 90 + 90:,}" in capsys.readouterr().out
    assert main(["summary", "resnet18", "--input-size", "1", "28", "28", "--num-classes", "7"]) == 0
    assert "input 1x28x28" in capsys.readouterr().out
    assert main(["summary", "resmlp4", "--input-size", "1", "28", "28"]) == 0
    assert "84,170" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["summary", "nosuchnet"], "unknown model 'nosuchnet'"),
        (["summary", "resnet21"], "6n+2"),
        (["summary", "resnet20", "--input-size", "3", "32"], "C H W"),
        (["summary", "resmlp4", "--in-channels", "3"], "in_features"),
    ],
)
def test_summary_errors_are_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("reslab: error:") and needle in lines[0]
