"""The Python API: plain functions, no name both a module and a function, settings declared once, config
files, resume from Python as from the CLI, results that display in notebooks, figures without pyplot."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import reslab
from helpers import exit_code, one_line_error, tiny
from reslab.cli import build_parser
from reslab.cli.options import add_setting_flags, given
from reslab.engine import TrainConfig, train
from reslab.engine.store.resume import resume_settings
from reslab.errors import ConfigError
from reslab.experiments import AblateConfig, CompareConfig
from reslab.experiments.sweep_config import PER_RUN, TrainOverrides
from reslab.settings import fields_of, setting, type_hints, unwrap_optional

pytestmark = pytest.mark.usefixtures("one_thread")


def test_no_public_name_is_also_a_module() -> None:
    for name in reslab.__all__:
        assert importlib.util.find_spec(f"reslab.{name}") is None, name
        assert not isinstance(getattr(reslab, name), type(sys)), name


def test_train_stays_a_function_after_touching_everything(tmp_path: Path) -> None:
    # The bug this guards: touching reslab.TrainConfig imported a subpackage that shadowed reslab.train.
    code = f"""
import reslab, reslab.engine, reslab.engine.config, reslab.experiments, reslab.analysis
cfg = reslab.TrainConfig(model="resnet8", dataset="synthetic:1x12x12", iterations=2, batch_size=64,
    precision="fp32", device="cpu", progress="off", num_threads=1, out={str(tmp_path / "a")!r})
for out in ("a", "b"):
    cfg.out = {str(tmp_path)!r} + "/" + out
    result = reslab.train(cfg)
    assert callable(reslab.train) and callable(reslab.compare) and callable(reslab.gradients)
print(result.iterations)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "2"


def test_every_train_setting_reaches_train_compare_and_resume() -> None:
    """The structural check that a setting is declared once: each TrainConfig field has a flag on `train`
    and `compare` with its default in the help, a CompareConfig field that reaches the per-run config,
    and a resume rule."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train_help, compare_help = sub.choices["train"].format_help(), sub.choices["compare"].format_help()
    compare_fields = {f.name for f in dataclasses.fields(CompareConfig)}
    for f in fields_of(TrainConfig):
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        assert flag in train_help, flag
        assert f.metadata["resume"] in ("frozen", "inherit", "session")
        if f.name in ("model", "seed", "out", "resume", "overwrite"):
            continue  # set per run by the sweep
        assert f.name in compare_fields and flag in compare_help, flag
    assert train_help.count("(default:") >= len([f for f in fields_of(TrainConfig) if f.metadata["cli"]])
    # a value given to compare reaches every run of the sweep
    cfg = CompareConfig(depths=(8,), dataset="synthetic:1x12x12", warmup_lr=0.001, grad_clip=2.0).resolve()
    run = cfg.train_config("plain8", seed=1, out="x")
    assert (run.warmup_lr, run.grad_clip, run.seed, run.model) == (0.001, 2.0, 1, "plain8")


def test_a_new_setting_appears_in_the_flags_and_the_sweep_config() -> None:
    @dataclasses.dataclass
    class Extended(TrainConfig):
        stochastic_depth: float = setting(0.0, help="drop-path rate of each residual branch")

    p = argparse.ArgumentParser()
    add_setting_flags(p, Extended)
    args = p.parse_args(["--stochastic-depth", "0.2", "--lr", "0.05"])
    assert given(args, Extended) == {"stochastic_depth": 0.2, "lr": 0.05}
    assert "(default: 0.0)" in p.format_help()


def test_the_sweeps_take_every_train_setting_as_an_optional_override() -> None:
    """TrainOverrides is declared field by field (typed configs); this keeps it in step with TrainConfig:
    the same names but the per-run ones, each type ``T | None``, TrainConfig's help and default."""
    train_hints, override_hints = type_hints(TrainConfig), type_hints(TrainOverrides)
    names = [f.name for f in fields_of(TrainConfig) if f.name not in PER_RUN]
    assert [f.name for f in fields_of(TrainOverrides)] == names
    for f in fields_of(TrainOverrides):
        tp, _ = unwrap_optional(train_hints[f.name])
        assert override_hints[f.name] == tp | None, f.name
        assert f.default is None and f.metadata["help"] == next(
            t.metadata["help"] for t in fields_of(TrainConfig) if t.name == f.name
        )
    for cls in (CompareConfig, AblateConfig):
        assert set(names) <= {f.name for f in dataclasses.fields(cls)}


def test_config_files_json_yaml_toml_and_flags_win(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"model": "plain8", "lr": 0.05, "milestones": [0.3, 0.6]}))
    (tmp_path / "c.yaml").write_text("model: plain8\nlr: 0.05\nmilestones: [0.3, 0.6]\n")
    (tmp_path / "c.toml").write_text('model = "plain8"\nlr = 0.05\nmilestones = [0.3, 0.6]\n')
    for name in ("c.json", "c.yaml", "c.toml"):
        assert exit_code(["train", "--config", str(tmp_path / name), "--seed", "3", "--print-config"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert (printed["model"], printed["lr"], printed["milestones"], printed["seed"]) == (
            "plain8",
            0.05,
            [0.3, 0.6],
            3,
        )
    # what --print-config prints is a config file too
    (tmp_path / "printed.json").write_text(json.dumps(printed))
    assert TrainConfig.from_file(tmp_path / "printed.json") == TrainConfig.from_dict(printed)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"learning_rate": 0.1}', "unknown key 'learning_rate'; did you mean"),
        ('{"lr": "0.1"}', "lr must be a number"),
        ('{"lr": 0.1,', "is not valid JSON"),
        ("[1, 2]", "mapping"),
    ],
)
def test_bad_config_files_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, needle: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert exit_code(["train", "--config", str(path)]) == 2
    err = one_line_error(capsys)
    assert needle in err and "bad.json" in err


def test_flags_are_never_abbreviated(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["train", "--conf", "x.json"]) == 2  # once, argparse expanded this to --config-json
    assert "unrecognized arguments: --conf x.json (see `reslab train --help`)" in one_line_error(capsys)


def test_a_runs_config_json_trains_the_same_run(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    again = tmp_path / "again"
    assert exit_code(["train", "--config", str(tiny_run / "config.json"), "--out", str(again)]) == 0
    old, new = (json.loads((d / "config.json").read_text())["config"] for d in (tiny_run, again))
    assert {**old, "out": None} == {**new, "out": None}
    a, b = load_file(str(tiny_run / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # CPU, same seed: the very same weights


def test_resume_from_python_is_the_clis(tmp_path: Path) -> None:
    straight = train(tiny(tmp_path / "straight", model="plain8", iterations=8))
    first = tiny(tmp_path / "resumed", model="plain8", iterations=4)
    train(first)
    # only resume= and a longer schedule: the model (plain8, not the default resnet20) comes from the run
    result = train(TrainConfig(resume=str(tmp_path / "resumed"), iterations=8, progress="off"))
    assert result.model == "plain8" and result.iterations == 8
    a, b = (
        load_file(str(straight.run_dir / "model.safetensors")),
        load_file(str(result.run_dir / "model.safetensors")),
    )
    # 4 + 4 steps with a schedule recomputed for 8 is not bit-identical to 8 straight: the lr differs
    assert a.keys() == b.keys()
    merged, _, notes = resume_settings(TrainConfig(resume=str(tmp_path / "resumed"), iterations=12))
    assert (
        merged.model == "plain8" and merged.iterations == 12 and any("iterations 8 -> 12" in n for n in notes)
    )
    with pytest.raises(ConfigError, match="the run used model='plain8', not 'resnet8'"):
        resume_settings(TrainConfig(resume=str(tmp_path / "resumed"), model="resnet8"))
    with pytest.raises(ConfigError, match="--overwrite"):
        resume_settings(TrainConfig(resume=str(tmp_path / "resumed"), overwrite=True))


def test_eval_uses_the_runs_own_precision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = train(tiny(tmp_path / "bf16", precision="bf16", iterations=4)).run_dir
    summary = json.loads((run / "summary.json").read_text())
    report = reslab.evaluate(run)
    assert report.precision == "bf16" and report.error == summary["final_test_error"]
    assert report.loss == pytest.approx(summary["final_test_loss"], abs=0)
    assert reslab.evaluate(run, precision="fp32").precision == "fp32"
    assert exit_code(["eval", str(run), "--precision", "fp32"]) == 0
    assert "fp32" in capsys.readouterr().out


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_run_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        run = train(tiny(tmp_path / "run", iterations=4)).run_dir
    finally:
        os.umask(old)
    for name in ("config.json", "summary.json", "model.safetensors", "metrics.jsonl"):
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_figures_leave_the_users_backend_and_style_alone() -> None:
    code = """
import matplotlib
before = (matplotlib.rcParams._get_backend_or_none(), matplotlib.rcParams["axes.grid"])
import reslab.plots
from reslab.analysis.gradient_flow import GradientProfile, GradientSnapshot
snap = GradientSnapshot(0, 1.0, ["a", "b"], [1.0, 2.0], [1.0])
fig = reslab.plots.gradients_figure([GradientProfile("m", "m", True, False, [snap])])
assert type(fig).__name__ == "Figure" and fig.axes[0].xaxis._major_tick_kw.get("gridOn", True)
after = (matplotlib.rcParams._get_backend_or_none(), matplotlib.rcParams["axes.grid"])
assert before == after, (before, after)
"""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_progress_is_a_bar_in_a_notebook_and_lines_in_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import types

    from reslab.engine.progress import resolve_mode

    assert resolve_mode("auto", io.StringIO()) == "lines"
    shell = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    assert resolve_mode("auto", io.StringIO()) == "bar"
    assert resolve_mode("off", io.StringIO()) == "off"


def test_compare_result_displays_its_table_and_figures(tmp_path: Path) -> None:
    result = reslab.compare(
        family="mlp", depths=(1, 2), dataset="synthetic:1x12x12", iterations=4, batch_size=64,
        precision="fp32", device="cpu", progress="off", num_threads=1, out=str(tmp_path / "sweep"),
    )  # fmt: skip
    html = result._repr_html_()
    assert html.count("<img") == 2 and "<table>" in html and "verdict" in html
    assert {type(f).__name__ for f in result.figures.values()} == {"Figure"}
    assert (tmp_path / "sweep" / "curves.png").is_file()


def test_studies_are_functions_with_results(tiny_run: Path, tmp_path: Path) -> None:
    g = reslab.gradients(
        entries="plainmlp4,resmlp4", dataset="synthetic:1x12x12", steps=2, out=str(tmp_path / "g")
    )
    assert len(g.profiles) == 2 and "plainmlp4" in g.table and "<img" in g._repr_html_()
    with pytest.warns(FutureWarning, match="deprecated"):  # the old keyword still works
        old = reslab.gradients(models=("resmlp4",), dataset="synthetic:1x12x12", steps=0, out=str(tmp_path))
    assert [p.model_name for p in old.profiles] == ["resmlp4"]
    # --grad-clip 0 is no clipping, as in training: the same steps as no clip at all
    kw = {"entries": ("resmlp4",), "dataset": "synthetic:1x12x12", "steps": 3, "lr": 0.5}
    free = reslab.gradients(**kw, out=str(tmp_path / "free")).profiles[0]
    off = reslab.gradients(**kw, grad_clip=0.0, out=str(tmp_path / "off")).profiles[0]
    tight = reslab.gradients(**kw, grad_clip=1e-6, out=str(tmp_path / "tight")).profiles[0]
    assert off.losses == free.losses and tight.losses != free.losses
    r = reslab.responses(entries=[str(tiny_run)], samples=64, out=str(tmp_path / "r"))
    assert r.files["responses.png"].is_file() and "resnet8" in str(r.profiles[0].model_name)
    with pytest.raises(reslab.ReslabError, match="gradients\\(\\): unknown setting 'no_such_setting'"):
        reslab.gradients(entries=("resmlp4",), no_such_setting=1)


def test_compare_reads_a_config_file_and_prints_its_settings(tmp_path: Path, capsys) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text("family: mlp\ndepths: [1, 4]\nepochs: 2\nlr: 0.05\n")
    assert exit_code(["compare", "--config", str(path), "--seeds", "2", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["family"], printed["depths"], printed["seeds"], printed["lr"]) == ("mlp", [1, 4], 2, 0.05)
    path.write_text("famly: mlp\n")
    assert exit_code(["compare", "--config", str(path)]) == 2
    assert "unknown key 'famly'; did you mean 'family'?" in one_line_error(capsys)
