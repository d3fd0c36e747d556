"""The benchmark scripts compile and their parts work; no timing is asserted (benchmarks are not tests)."""

from __future__ import annotations

import importlib
import py_compile
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))  # the scripts import benchlib from their own folder
    return importlib.import_module("benchlib")


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_scripts_compile(script: str) -> None:
    py_compile.compile(str(BENCH / script), doraise=True)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_gpu_shell_wrapper_parses() -> None:
    subprocess.run(["bash", "-n", str(BENCH / "gpu.sh")], check=True)


def test_machine_peak_is_cores_lanes_fma_clock(bench: ModuleType) -> None:
    m = bench.detect_machine(fma_units=2)
    assert m.physical_cores >= 1 and m.fp32_lanes in (4, 8, 16) and m.ghz > 0
    assert m.peak_fp32_gflops == pytest.approx(m.physical_cores * m.fp32_lanes * 2 * 2 * m.ghz)


def test_cli_defaults_parse(bench: ModuleType) -> None:
    throughput = importlib.import_module("throughput")
    args = throughput.parse_args(["--quick"])
    assert not args.compile and all(c.batch > 0 for c in args.case)
    assert throughput.Case.parse("resnet50") == throughput.Case("resnet50", 224, 8)
    assert throughput.Case.parse("resnet20:28:64") == throughput.Case("resnet20", 28, 64)
    gpu = importlib.import_module("gpu")
    tiny = gpu.parse_args(["--tiny", "--device", "cpu"])
    assert tiny.compile is False and tiny.steps == 1
    tta = importlib.import_module("time_to_accuracy")
    assert tta.parse_args(["--quick"]).target == pytest.approx(0.90)


def test_engine_step_trains_and_ratios_pair_rounds(bench: ModuleType) -> None:
    from reslab.engine.runtime import Runtime
    from reslab.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet8", num_classes=10, in_channels=1)
    rt = Runtime(torch.device("cpu"), "fp32", True)
    images = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 10, (16,))
    norm = bench.Normalization("channel", torch.full((1, 1, 1), 0.5), torch.full((1, 1, 1), 0.25))
    loader = bench.DeviceLoader(images, labels, batch_size=8, norm=norm, shuffle=True, augment="crop_flip")
    opt = bench.make_sgd(model.parameters(), **bench.SGD_KW)
    before = model.fc.weight.detach().clone()
    step = bench.engine_step(model.to(memory_format=torch.channels_last), opt, rt, bench.cycle(loader))
    timings = bench.ab_rounds(
        [bench.Runner("a", step, 8)], device=rt.device, warmup=1, repeats=2, steps=1, log=lambda s: None
    )
    assert not torch.equal(before, model.fc.weight) and step.nonfinite == []
    assert len(timings[0].images_per_s) == 2 and timings[0].ratio_to(timings[0]) == 1.0
    assert bench.peak_step_bytes(step, rt.device) > 0


def test_benchmarks_are_not_collected() -> None:
    pyproject = (BENCH.parent / "pyproject.toml").read_text()
    assert 'testpaths = ["tests"]' in pyproject  # benchmarks/ stays outside the test run
