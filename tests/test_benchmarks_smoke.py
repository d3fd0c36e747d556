"""The benchmark scripts compile and their parts work; no timing is asserted (benchmarks are not tests)."""

from __future__ import annotations

import importlib
import json
import py_compile
import shutil
import subprocess
import sys
import types
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


def test_machine_estimate_is_a_printed_note_not_a_denominator(bench: ModuleType) -> None:
    m = bench.detect_machine(fma_units=2)
    assert m.physical_cores >= 1 and m.fp32_lanes in (4, 8, 16) and m.ghz > 0
    assert m.datasheet_fp32_gflops == pytest.approx(m.physical_cores * m.fp32_lanes * 2 * 2 * m.ghz)
    assert "not a denominator" in m.describe()
    assert not hasattr(m, "peak_fp32_gflops")


def test_roofline_is_the_best_probe_per_precision_and_asserts_at_most_100pct(bench: ModuleType) -> None:
    roofline = importlib.import_module("roofline")
    tiny = roofline.ProbeShape(gemm=32, conv=(1, 4, 6))
    lines: list[str] = []
    roof = roofline.measure_roofline(
        torch.device("cpu"),
        bench.Timer(torch.device("cpu")),
        shape=tiny,
        repeats=2,
        min_s=0.0,
        log=lines.append,
    )
    # per precision: a GEMM and the 3x3 conv in both layouts, forward and forward + backward
    assert [p.precision for p in roof.probes] == ["fp32"] * 5 + ["bf16"] * 5 and len(lines) == 10
    for prec in ("fp32", "bf16"):
        assert roof.peak(prec) == max(max(p.gflops) for p in roof.probes if p.precision == prec) > 0
    assert roof.probes[0].flops == 2 * 32**3
    assert roof.probes[2].flops == 3 * 2 * (1 * 4 * 6 * 6) * 4 * 9  # conv fwd+bwd: 3 x 2 x out x fan-in
    assert roof.fraction(roof.peak("bf16") / 2, "bf16") == pytest.approx(0.5)
    with pytest.raises(roofline.RooflineExceeded, match="of the measured fp32 roofline"):
        roof.fraction(roof.peak("fp32") * 1.01, "fp32", what="resnet50 fp32")
    with pytest.raises(AssertionError):  # RooflineExceeded is an AssertionError: a bug, not a result
        roof.fraction(roof.peak("fp32") * 1.01, "fp32")
    assert set(roof.to_dict()["peaks_gflops"]) == {"fp32", "bf16"} and "bf16 roofline" in roof.describe()


def test_training_flops_count_the_image_layer_twice(bench: ModuleType) -> None:
    from reslab.models import build_model

    r20 = build_model("resnet20", num_classes=10, device="meta")
    assert bench.first_layer_macs(r20, (3, 32, 32)) == 16 * 32 * 32 * 3 * 9  # the 3x3 stem conv
    r50 = build_model("resnet50", device="meta")
    assert bench.first_layer_macs(r50, (3, 224, 224)) == 64 * 112 * 112 * 3 * 49 and r50.training
    assert bench.gflops(10, 1e9, train=True, input_macs=2) == pytest.approx(2 * (30 - 2))
    assert bench.gflops(10, 1e9, train=False) == pytest.approx(20)


def test_torchvision_twin_is_returned_in_training_mode(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A twin left in eval mode trains BN on running statistics: a cheaper step than the contender's.
    from reslab.models import build_model

    fake = types.ModuleType("torchvision.models")
    fake.resnet18 = lambda weights, num_classes: build_model("resnet18", num_classes=num_classes)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.models", fake)
    mine = build_model("resnet18", num_classes=5)
    twin = bench.torchvision_twin("resnet18", mine, torch.randn(2, 3, 32, 32))
    assert twin is not None and twin.training and mine.training
    twin.eval()
    opt = bench.plain_sgd(twin)
    batches = iter([(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))])
    bench.plain_step(twin, opt, batches, device=torch.device("cpu"))()
    assert twin.training  # the step builders own the mode they time


def test_throughput_table_is_against_each_precisions_roofline(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    throughput = importlib.import_module("throughput")
    roofline = importlib.import_module("roofline")
    roof = roofline.Roofline(
        "cpu",
        2,
        [roofline.Probe("gemm", "fp32", 1.0, [100.0, 90.0]), roofline.Probe("gemm", "bf16", 1.0, [200.0])],
    )
    case = throughput.Case("resnet20", 32, 128)
    fp32 = {"precision": "fp32", "channels_last": False, "compile": False}
    bf16 = {"precision": "bf16", "channels_last": True, "compile": False}
    macs = (10**9, 0)  # 6 GFLOP per image in training: 10 img/s = 60 GFLOP/s
    timings = [
        bench.Timing("baseline", "baseline", fp32, [10.0], 0.0),
        bench.Timing("reslab bf16-cl", "reslab", bf16, [20.0], 0.0),
    ]
    rows = throughput.report(case, "train", timings, macs, roof, {})
    assert [r["pct_of_roofline"] for r in rows] == pytest.approx([60.0, 60.0])  # 60/100 and 120/200
    assert "%roof" in capsys.readouterr().out
    timings[1].images_per_s = [40.0]  # 240 GFLOP/s of bf16 work on a 200 GFLOP/s roofline
    with pytest.raises(roofline.RooflineExceeded, match="reslab bf16-cl"):
        throughput.report(case, "train", timings, macs, roof, {})


def test_gpu_script_runs_its_cpu_path(bench: ModuleType, tmp_path: Path) -> None:
    """Every section of the GPU check on tiny shapes, in seconds: nothing skipped, every figure there."""
    gpu = importlib.import_module("gpu")
    out = tmp_path / "gpu.json"
    assert gpu.main(["--tiny", "--device", "cpu", "--json", str(out), "--no-compile"]) == 0
    payload = json.loads(out.read_text())
    assert set(payload["roofline"]["peaks_gflops"]) == {"bf16"} and payload["datasheet_bf16_tflops"] == 989.0
    assert payload["skipped"] == []
    nets = [m for m in payload["throughput"].values() if isinstance(m, dict)]  # and section_seconds
    rows = payload["resnet50"]["rows"] + [r for m in nets for r in m["rows"]]
    assert len(nets) == 2 and rows and all(0 < r["of_roofline"] <= 1 for r in rows)
    steps = {r["settings"]["step"] for m in nets for r in m["rows"]}
    assert steps == {"eager", "capture"}  # compiled contenders need --compile (a GPU run has it)
    assert all(r["vs_eager"] > 0 for r in rows)
    # on a CPU the captured step's stand-in replays the same arithmetic: no gap at all
    eq = payload["equivalence"]
    assert eq["within_noise"] and eq["captured"]["loss_rel_max"] == 0.0 == eq["captured"]["weights_rel"]
    for sweep in (payload["deep"]["auto"], payload["widths"]):
        assert sweep["returncode"] == 0 and not sweep["timed_out"] and sweep["estimate_s"] > 0
        assert "| layers |" in sweep["stdout"]
    assert payload["deep"]["auto"]["slots_line"].startswith("sweep: 4 runs, 2 at a time")
    assert "| 14 |" in payload["widths"]["results_md"]
    paper = payload["paper"]
    assert paper["seconds_one_at_a_time"] >= paper["seconds_chosen"] > 0
    assert sorted(paper["rates_steps_per_s"]) == ["1", "2"] and paper["chosen_runs_per_gpu"] in (1, 2)


def test_gpu_budget_keeps_time_for_the_later_sections(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    gpu = importlib.import_module("gpu")
    budget = gpu.Budget(100.0, {"a": 30, "b": 50, "c": 40})
    assert budget.after("a") == 90 and budget.after("c") == 0
    assert not budget.allows("a")  # 30 + 90 kept for b and c > 100 s
    assert budget.allows("b") and budget.allows("c") and budget.skipped == ["a"]
    assert "skipped a" in capsys.readouterr().out
    sweeps = importlib.import_module("gpu_sweeps")
    line = "compare: 10 runs (...) in runs/x: estimated 2 h 05 min with 4 runs at a time"
    assert sweeps._estimate_s(line) == 2 * 3600 + 5 * 60
    assert sweeps._estimate_s("compare: ...: estimated 3 min 20 s") == 200
    assert sweeps._estimate_s("compare: ...: estimated 45 s") == 45 and sweeps._estimate_s(None) is None


def test_step_costs_script_times_every_part(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    step_costs = importlib.import_module("step_costs")
    args = ["--case", "resnet8:16:4", "--steps", "1", "--relu-ab", "2"]
    args.append("--channels-last")
    assert step_costs.main(args) == 0
    out = capsys.readouterr().out
    for part in (
        "finite check of the gradients",
        "label smoothing",
        "Interval.add",
        "DeviceLoader",
        "fused",
        "in place",
    ):
        assert part in out


def test_cli_defaults_parse(bench: ModuleType) -> None:
    throughput = importlib.import_module("throughput")
    args = throughput.parse_args(["--quick"])
    assert not args.compile and all(c.batch > 0 for c in args.case)
    assert throughput.Case.parse("resnet50") == throughput.Case("resnet50", 224, 8)
    assert throughput.Case.parse("resnet20:28:64") == throughput.Case("resnet20", 28, 64)
    gpu = importlib.import_module("gpu")
    tiny = gpu.parse_args(["--tiny", "--device", "cpu"])
    assert tiny.compile is False and tiny.steps == 1 and tiny.warmup >= 5  # eager steps, then the capture
    assert gpu.parse_args([]).budget_s + 25 <= 540  # 9 minutes with start-up and the JSON
    tta = importlib.import_module("time_to_accuracy")
    assert tta.parse_args(["--quick"]).target == pytest.approx(0.90)


def test_engine_step_trains_and_ratios_pair_rounds(bench: ModuleType) -> None:
    from reslab.engine.devices.runtime import Runtime
    from reslab.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet8", num_classes=10, in_channels=1)
    rt = Runtime(torch.device("cpu"), "fp32", True)
    images = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 10, (16,))
    norm = bench.Normalization("channel", torch.full((1, 1, 1), 0.5), torch.full((1, 1, 1), 0.25))
    loader = bench.DeviceLoader(images, labels, batch_size=8, norm=norm, shuffle=True, augment="crop_flip")
    opt = bench.make_sgd(model)
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


def test_model_ab_script_runs_and_profiles(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    model_ab = importlib.import_module("model_ab")
    assert (
        model_ab.main(["--model", "resnet18", "--size", "32", "--batch", "2", "--rounds", "2", "--profile"])
        == 0
    )
    out = capsys.readouterr().out
    assert "reslab, sum out of place" in out and "self CPU ms over 2 steps" in out and "aten::" in out
