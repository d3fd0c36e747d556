"""``reslab compare`` on a tiny sweep: the output files and their contents, reuse, resume, refusals."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib.image
import pytest

from helpers import exit_code, read_report
from reslab.cli import main
from reslab.errors import ConfigError
from reslab.experiments import CompareConfig, RunRecord, compare
from reslab.experiments.results import CSV_FIELDS, Stat, aggregate, checks, verdict

DEPTHS = (8, 14)
MODELS = ("plain8", "resnet8", "plain14", "resnet14")
# The same tiny sweep as flags (CLI tests) and as a config (library tests): 8 steps of 64 synthetic 12x12
# images per run, a test evaluation (and checkpoint) every 4 steps.
FLAGS = [
    "--depths", "8,14", "--dataset", "synthetic:1x12x12", "--iterations", "8", "--batch-size", "64",
    "--eval-every", "4", "--device", "cpu", "--precision", "fp32", "--num-threads", "1", "--progress", "off",
]  # fmt: skip


def tiny(out: Path, **overrides: object) -> CompareConfig:
    base: dict = dict(
        depths=DEPTHS, dataset="synthetic:1x12x12", iterations=8, batch_size=64, eval_every=4, device="cpu",
        precision="fp32", num_threads=1, progress="off", out=str(out),
    )  # fmt: skip
    base.update(overrides)
    return CompareConfig(**base)


def sweep(out: Path, **overrides: object) -> tuple[object, list[tuple[str, str]]]:
    """Run the tiny sweep; returns (result, [(model, how)])."""
    seen: list[tuple[str, str]] = []
    result = compare(tiny(out, **overrides), on_run=lambda r, how: seen.append((r.model, how)))
    return result, seen


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny sweep; tests that change it work on a copy."""
    out = tmp_path_factory.mktemp("compare") / "sweep"
    _, seen = sweep(out)
    assert seen == [(m, "trained") for m in MODELS]
    return out


def copy_of(done: Path, tmp_path: Path) -> Path:
    out = tmp_path / "sweep"
    shutil.copytree(done, out)
    return out


def test_results_json_has_one_entry_per_run(done: Path) -> None:
    data = json.loads((done / "results.json").read_text())
    runs = data["runs"]
    assert data["columns"]["running_train_error"].startswith("train mode")
    assert [r["model"] for r in runs] == list(MODELS)
    assert [(r["kind"], r["depth"], r["seed"]) for r in runs] == [
        ("plain", 8, 0), ("residual", 8, 0), ("plain", 14, 0), ("residual", 14, 0),
    ]  # fmt: skip
    for r in runs:
        assert set(r) == set(CSV_FIELDS)
        assert 0 <= r["final_train_error"] <= 1 and 0 <= r["final_test_error"] <= 1
        assert r["final_train_loss"] > 0 and r["seconds"] > 0 and r["iterations"] == 8
        summary = json.loads((Path(r["path"]) / "summary.json").read_text())
        assert r["final_train_error"] == summary["final_train_error"]
        # two training errors, two names: eval mode at the end, and the last interval's running one
        last = json.loads((Path(r["path"]) / "metrics.jsonl").read_text().splitlines()[-1])
        assert r["running_train_error"] == last["train_error"]
        assert r["params"] == summary["params"]
    # twins have the same parameter count (option A shortcuts have none)
    assert runs[0]["params"] == runs[1]["params"] and runs[2]["params"] == runs[3]["params"]
    assert runs[2]["params"] > runs[0]["params"]


def test_csv_and_markdown_tables(done: Path) -> None:
    with open(done / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_FIELDS
    assert [r["model"] for r in rows] == list(MODELS)
    md = (done / "results.md").read_text()
    assert "| layers |" in md and "plain train err (%)" in md and "residual train err (%)" in md
    table = [line for line in md.splitlines() if line.startswith("| 8 |") or line.startswith("| 14 |")]
    assert len(table) == 2
    assert "verdict:" in md


def test_report_html_beside_the_sweep(done: Path) -> None:
    page = read_report(done / "report.html")
    md = (done / "results.md").read_text()
    assert page.verdict.strip() == next(line for line in md.splitlines() if line.startswith("verdict"))
    results = page.tables[0]
    assert results[0][0] == "layers" and [row[0] for row in results[1:]] == ["8", "14"]
    assert len(page.images) == 2  # curves and error vs depth, embedded
    runs = next(t for t in page.tables if t[0][0] == "run")
    assert [row[1] for row in runs[1:]] == list(MODELS) and all(row[4] == "trained" for row in runs[1:])
    assert "running training error, last evaluation (train mode)" in runs[0]
    assert ["depths", "8, 14"] in [row for t in page.tables for row in t]  # the settings


def test_figures_are_valid_pngs(done: Path) -> None:
    for name in ("curves.png", "error_vs_depth.png"):
        data = (done / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        img = matplotlib.image.imread(done / name)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300


def test_compare_json_holds_the_settings(done: Path) -> None:
    settings = json.loads((done / "compare.json").read_text())["settings"]
    assert settings["family"] == "cifar" and settings["depths"] == [8, 14] and settings["seeds"] == 1
    assert settings["iterations"] == 8 and settings["batch_size"] == 64
    assert settings["label_smoothing"] == 0.0  # the compare preset: honest training error


def test_rerun_reuses_finished_runs(done: Path, tmp_path: Path) -> None:
    out = copy_of(done, tmp_path)
    before = {m: (out / f"{m}-s0" / "summary.json").stat().st_mtime_ns for m in MODELS}
    result, seen = sweep(out)
    assert seen == [(m, "reused") for m in MODELS]
    assert {m: (out / f"{m}-s0" / "summary.json").stat().st_mtime_ns for m in MODELS} == before
    first = json.loads((done / "results.json").read_text())["runs"]
    again = json.loads((out / "results.json").read_text())["runs"]
    assert [r["final_train_error"] for r in again] == [r["final_train_error"] for r in first]
    assert result.runs[0].history  # curves come back from metrics.jsonl


def test_interrupted_run_resumes_from_its_checkpoint(done: Path, tmp_path: Path) -> None:
    """A sweep killed in plain14 after its first evaluation point: resume there, end where it would have."""
    out = copy_of(done, tmp_path)
    run = out / "plain14-s0"
    (run / "summary.json").unlink()
    shutil.rmtree(run / "checkpoints" / "ckpt-00000008")  # the last checkpoint was never written
    (out / "results.json").unlink()
    _, seen = sweep(out)
    assert seen == [
        ("plain8", "reused"),
        ("resnet8", "reused"),
        ("plain14", "resumed"),
        ("resnet14", "reused"),
    ]
    first = {r["model"]: r for r in json.loads((done / "results.json").read_text())["runs"]}
    again = {r["model"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    # the engine's exact resume: the same final figures as the uninterrupted run
    assert again["plain14"]["final_train_loss"] == pytest.approx(
        first["plain14"]["final_train_loss"], rel=1e-6
    )
    assert again["plain14"]["final_test_error"] == first["plain14"]["final_test_error"]
    iterations = [json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert iterations == [4, 8]


def test_run_killed_before_its_first_checkpoint_starts_over(done: Path, tmp_path: Path) -> None:
    out = copy_of(done, tmp_path)
    run = out / "resnet14-s0"
    (run / "summary.json").unlink()
    shutil.rmtree(run / "checkpoints")
    (run / "metrics.jsonl").unlink()
    _, seen = sweep(out)
    assert seen[-1] == ("resnet14", "trained") and all(how == "reused" for _, how in seen[:-1])


def test_different_settings_in_the_same_out_are_refused(done: Path, tmp_path: Path, capsys) -> None:
    out = copy_of(done, tmp_path)
    args = list(FLAGS)
    args[args.index("--iterations") + 1] = "9"
    assert exit_code(["compare", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "iterations=8, not 9" in err and "another --out" in err
    # the same settings through the CLI: everything reused, table and verdict printed
    assert exit_code(["compare", *FLAGS, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 14 |" in printed and "verdict:" in printed


def test_a_run_dir_with_other_training_settings_is_refused(done: Path, tmp_path: Path) -> None:
    out = copy_of(done, tmp_path)
    path = out / "plain8-s0" / "config.json"
    meta = json.loads(path.read_text())
    meta["config"]["lr"] = 0.5
    path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"lr=0\.5"):
        sweep(out)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--depths", "9"], "valid depths are 6n+2"),
        (["--family", "imagenet", "--depths", "20"], "not an ImageNet ResNet"),
        (["--family", "mlp", "--depths", "0"], "dense block"),
        (["--family", "transformer"], "invalid choice"),
        (["--depths", "20,20"], "repeats"),
        (["--seeds", "0"], "--seeds"),
        (["--preset", "default", "--lr", "-1"], "--lr"),
        (["--depths", "20,x"], "comma-separated list of int"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, flags: list[str], message: str) -> None:
    assert exit_code(["compare", *flags, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_resolve_fills_the_preset() -> None:
    cfg = CompareConfig().resolve()
    assert cfg.depths == (20, 38, 44) and cfg.epochs == 5 and cfg.dataset == "mnist5k"
    assert cfg.out and cfg.out.startswith("runs/compare-cifar-mnist5k-")
    assert CompareConfig().resolve().out == cfg.out  # the same command, the same --out: re-runs reuse
    assert CompareConfig(epochs=7).resolve().out != cfg.out
    assert CompareConfig(batch_size=128).resolve().out == cfg.out  # the preset's value, given explicitly
    train = cfg.train_config("plain56", seed=3, out="x")
    assert (train.batch_size, train.label_smoothing, train.epochs, train.seed) == (128, 0.0, 5, 3)
    paper = CompareConfig(preset="paper").resolve()
    assert paper.depths == (20, 32, 44, 56, 110) and paper.dataset == "cifar10"
    t = paper.train_config("resnet110", seed=0, out="x")
    assert (t.iterations, t.val_split, t.schedule) == (64_000, 5000, "step")
    mlp = CompareConfig(family="mlp", model_kwargs={"norm": "batch"}).resolve()
    t = mlp.train_config("plainmlp4", seed=0, out="x")
    assert mlp.depths == (1, 4, 16, 64, 500) and t.lr == 0.1  # the same recipe as the conv nets
    assert t.model_kwargs == {"branch_scale": "rezero", "norm": "batch"}  # the user's options merged in
    assert (t.precision, t.num_threads) == ("fp32", 1)  # tiny matrices: one thread, no bf16
    assert replace(cfg, family="cifar", depths=(50,)).resolve()  # 6n+2 that is also an ImageNet depth


def test_the_deep_preset() -> None:
    deep = CompareConfig(preset="deep").resolve()
    assert (deep.depths, deep.seeds, deep.devices, deep.epochs) == ((20, 56, 110), 2, ("cpu", "cpu"), 8)
    t = deep.train_config("plain110", seed=1, out="x")
    assert t.model_kwargs == {"widen": 0.25} and t.batch_size == 128 and t.seed == 1
    assert CompareConfig(preset="deep", devices=("cpu",)).resolve().devices == ("cpu",)  # given wins
    assert CompareConfig(preset="deep", seeds=3).resolve().seeds == 3


def record(kind: str, depth: int, train_error: float, seed: int = 0) -> RunRecord:
    return RunRecord(kind, depth, seed, f"{kind}{depth}", 1, train_error, 0.1, 0.1, 0.1, 1.0, 8, "x")


def seeds(kind: str, depth: int, *errors: float) -> list[RunRecord]:
    return [record(kind, depth, e, s) for s, e in enumerate(errors)]


def test_checks_and_verdict_on_known_numbers() -> None:
    # separated seeds: plain rises, residual far below it at the deepest
    good = seeds("plain", 20, 0.004, 0.005, 0.006) + seeds("residual", 20, 0.0025, 0.003, 0.002)
    good += seeds("plain", 38, 0.02, 0.025, 0.03) + seeds("residual", 38, 0.002, 0.003, 0.0025)
    good += seeds("plain", 56, 0.18, 0.17, 0.19) + seeds("residual", 56, 0.004, 0.005, 0.0045)
    rows = aggregate(good)
    c = checks(rows)
    assert c is not None and c.tested and c.plain_rises and c.residual_fifth and c.residual_flat
    assert c.residual_below_plain and c.residual_trend == "above"
    line = verdict(rows)
    assert line.startswith("verdict: degradation reproduced: plain training error rises with depth")
    assert "(40.0x lower)" in line and "Residual training error rises with depth" in line
    # overlapping seeds: no claim either way
    flat = seeds("plain", 20, 0.01, 0.02) + seeds("residual", 20, 0.01, 0.012)
    flat += seeds("plain", 56, 0.015, 0.025) + seeds("residual", 56, 0.011, 0.009)
    c = checks(aggregate(flat))
    assert c is not None and c.tested and not c.plain_rises and c.plain_trend == "overlap"
    line = verdict(aggregate(flat))
    assert "no clear degradation" in line and "shows no clear difference with depth" in line
    claims = line.split(" ('rises'")[0]  # the rule, stated at the end, names the words it allows
    assert "rises" not in claims and "falls" not in claims and "lower)" not in claims
    assert "residual 1.00% vs plain 2.00%: no clear difference" in line
    # the lecture's claim (2), beyond the seed spread: the deep preset's measured figures
    deep = seeds("plain", 20, 0.0101, 0.0211) + seeds("residual", 20, 0.0085, 0.0145)
    deep += seeds("plain", 110, 0.87, 0.81) + seeds("residual", 110, 0.0015, 0.0025)
    c = checks(aggregate(deep))
    assert c is not None and c.plain_rises and c.residual_improves and c.residual_tenth
    assert "Residual training error falls with depth" in verdict(aggregate(deep))
    s = Stat.of([0.01, 0.03])
    assert s.mean == pytest.approx(0.02) and s.std == pytest.approx(0.0141421356) and s.pct() == "2.00 ± 1.41"


def test_one_seed_never_rises_or_falls() -> None:
    # the README's main job (one seed): the numbers are stated, no claim is made
    one = [record("plain", 20, 0.0075), record("residual", 20, 0.0035), record("plain", 38, 0.05575)]
    one += [record("residual", 38, 0.005), record("plain", 44, 0.06625), record("residual", 44, 0.00625)]
    c = checks(aggregate(one))
    assert c is not None and not c.tested and not c.plain_rises and not c.residual_below_plain
    line = verdict(aggregate(one))
    assert line.startswith("verdict: one seed: not tested against noise (use --seeds 3); plain training")
    for claim in ("rises", "falls", "reproduced", "lower", "no clear"):
        assert claim not in line, (claim, line)
    assert "0.75% → 5.58% → 6.62%" in line and "(plain/residual 10.6)" in line
    # one seed on one side only is still one seed; a dense-block sweep says "1 dense block"
    mixed = [*seeds("plain", 1, 0.01, 0.02), record("residual", 1, 0.01)]
    mixed += seeds("plain", 4, 0.9, 0.9) + seeds("residual", 4, 0.001, 0.002)
    line = verdict(aggregate(mixed), layers_label="dense blocks")
    assert "one seed" in line and "falls" not in line and "rises" not in line
    assert "from 1 to 4 dense blocks" in line


def test_devices_runs_one_run_per_device_then_reuses(tmp_path: Path) -> None:
    """--devices cpu,cpu: the four runs train in two worker processes; a re-run reuses all of them."""
    out = tmp_path / "par"
    argv = ["compare", "--dataset", "synthetic", "--depths", "8,14", "--iterations", "3", "--num-threads",
            "1", "--devices", "cpu,cpu", "--out", str(out), "--progress", "off"]  # fmt: skip
    assert main(argv) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert sorted(r["model"] for r in runs) == ["plain14", "plain8", "resnet14", "resnet8"]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
    assert len(stamps) == 4
    serial = [a for a in argv if a not in ("--devices", "cpu,cpu")]
    assert main(serial) == 0  # the same sweep without --devices: everything is reused
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")} == stamps


DIVERGE = [
    "--family", "mlp", "--depths", "1,16", "--dataset", "synthetic:1x12x12", "--iterations", "8",
    "--batch-size", "64", "--eval-every", "4", "--lr", "3", "--warmup-epochs", "0", "--device", "cpu",
    "--precision", "fp32", "--num-threads", "1", "--progress", "off", "--model-kwargs", "branch_scale=null",
]  # fmt: skip


def test_a_run_that_diverges_is_a_result_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # lr 3 on a 16-block residual MLP of the lecture's equations (no ReZero scalar, no normalisation): its
    # activations blow up within a few steps, while the plain twins (whose signal shrinks) and 1 block train.
    out = tmp_path / "sweep"
    assert exit_code(["compare", *DIVERGE, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "diverged at it. 4" in printed and "1 run(s) diverged" in printed
    runs = {r["model"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert runs["resmlp16"]["status"] == "diverged" and runs["resmlp16"]["diverged_at"] == 4
    assert {runs[m]["status"] for m in ("plainmlp1", "resmlp1", "plainmlp16")} == {"trained"}
    with open(out / "results.csv", newline="") as f:
        assert {row["model"]: row["status"] for row in csv.DictReader(f)}["resmlp16"] == "diverged"
    for png in ("curves.png", "error_vs_depth.png"):
        assert matplotlib.image.imread(out / png).shape[0] > 100
    assert (out / "resmlp16-s0" / "diverged.json").is_file() and not (
        out / "resmlp16-s0" / "summary.json"
    ).exists()
    # a re-run keeps the diverged run as a result; --retry-diverged trains it again (and it diverges again)
    seen: list[tuple[str, str]] = []
    cfg = CompareConfig(
        family="mlp", depths=(1, 16), dataset="synthetic:1x12x12", iterations=8, batch_size=64,
        eval_every=4, lr=3.0, warmup_epochs=0.0, device="cpu", precision="fp32", num_threads=1,
        progress="off", out=str(out), model_kwargs={"branch_scale": None},
    )  # fmt: skip
    compare(cfg, on_run=lambda r, how: seen.append((r.model, how)))
    assert dict(seen)["resmlp16"] == "reused" and dict(seen)["plainmlp16"] == "reused"
    seen.clear()
    compare(replace(cfg, retry_diverged=True), on_run=lambda r, how: seen.append((r.model, how)))
    assert dict(seen)["resmlp16"] == "diverged" and dict(seen)["plainmlp1"] == "reused"


def test_a_single_train_still_stops_on_nan_with_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--model", "resmlp16", *DIVERGE[4:], "--out", str(tmp_path / "r")]
    assert exit_code(argv) == 3
    err = capsys.readouterr().err
    assert "NaN/inf at iteration 4" in err and "no checkpoint was written yet" in err


def test_runs_of_one_sweep_in_separate_processes_then_gathered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "shared"
    assert exit_code(["compare", *FLAGS, "--out", str(out), "--list-runs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].startswith("index") and [line.split()[1] for line in listed[1:]] == list(MODELS)
    # two "machines" (processes) train runs 0 and 3 of the sweep at the same time, in the shared folder
    env = {**os.environ, "MPLBACKEND": "Agg"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "reslab", "compare", *FLAGS, "--out", str(out), "--run-index", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in (0, 3)
    ]
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-2000:]
        assert "gathers the sweep" in stdout
    assert (out / "plain8-s0" / "summary.json").is_file() and (out / "resnet14-s0" / "summary.json").is_file()
    assert not (out / "results.json").exists()  # a single run writes no tables
    _, seen = sweep(out)  # the gather: trains what is missing, reuses the rest, draws everything
    assert dict(seen) == {
        "plain8": "reused",
        "resnet8": "trained",
        "plain14": "trained",
        "resnet14": "reused",
    }
    assert (out / "curves.png").is_file() and len(json.loads((out / "results.json").read_text())["runs"]) == 4


def test_a_run_index_outside_the_sweep_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(["compare", *FLAGS, "--out", str(tmp_path / "x"), "--run-index", "4"]) == 2
    assert "outside this sweep's runs 0..3" in capsys.readouterr().err


def test_a_run_with_a_corrupt_config_is_named_not_silently_retrained(
    done: Path, tmp_path: Path, capsys
) -> None:
    out = copy_of(done, tmp_path)
    (out / "resnet8-s0" / "config.json").write_text('{"config": {"lr": "fast"}, "data": {}}')
    assert exit_code(["compare", *FLAGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "resnet8-s0" in err and "delete" in err
    assert (out / "resnet8-s0" / "summary.json").is_file()  # nothing deleted
