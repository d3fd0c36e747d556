"""``reslab ablate`` on a tiny sweep: files, paper figures, reuse, divergence, the CLI, the presets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import matplotlib.image
import pytest
import torch

from helpers import exit_code, one_line_error, read_report
from reslab.experiments import AblateConfig, ablate, ablate_runs
from reslab.experiments.ablation import PRESETS, Separation, separation
from reslab.experiments.paper_tables import paper_error
from reslab.experiments.results import Row, Stat

# 8 steps of 64 synthetic 12x12 images per run, resnet8, a test evaluation (and checkpoint) every 4 steps.
TINY = dict(
    depth=8, dataset="synthetic:1x12x12", iterations=8, batch_size=64, eval_every=4, device="cpu",
    precision="fp32", num_threads=1, progress="off",
)  # fmt: skip
VARIANTS = ("identity", "scaling", "shortcut_gate:gate_bias=0")
FLAGS = [
    "--depth", "8", "--dataset", "synthetic:1x12x12", "--iterations", "8", "--batch-size", "64",
    "--eval-every", "4", "--device", "cpu", "--precision", "fp32", "--num-threads", "1", "--progress", "off",
]  # fmt: skip


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """One finished tiny ablation: 3 variants x 2 seeds."""
    out = tmp_path_factory.mktemp("ablate") / "sweep"
    seen: list[tuple[str, str]] = []
    result = ablate(
        AblateConfig(variants=VARIANTS, seeds=2, out=str(out), **TINY),  # type: ignore[arg-type]
        on_run=lambda r, how: seen.append((r.kind, how)),
    )
    assert seen == [(v, "trained") for v in VARIANTS] * 2
    return out, result


def test_outputs_name_each_variant_and_its_paper_figure(done: tuple[Path, object]) -> None:
    out, result = done
    data = json.loads((out / "results.json").read_text())
    assert [(r["kind"], r["seed"], r["model"]) for r in data["runs"]] == [
        (v, s, "resnet8") for s in (0, 1) for v in VARIANTS
    ]
    assert [Path(r["path"]).name for r in data["runs"][:3]] == [
        "identity-s0", "scaling-s0", "shortcut_gate_gate_bias=0-s0",
    ]  # fmt: skip
    paper = {v["variant"]: v["paper"] for v in data["variants"]}
    assert paper["identity"]["test_error"] == "6.61" and paper["scaling"]["test_error"] == "12.35"
    assert paper["shortcut_gate:gate_bias=0"]["test_error"] == "12.86"
    assert data["variants"][2]["build_model"] == {"shortcut_kind": "shortcut_gate", "gate_bias": 0}
    md = (out / "results.md").read_text()
    assert "| identity |" in md and "| 6.61 | Table 1 (original)" in md and "Identity Mappings" in md
    assert "not reproduced" in md.replace("has not reproduced", "not reproduced")
    assert [r.kind for r in result.rows] == list(VARIANTS)  # type: ignore[attr-defined]
    assert result.rows[0].params == result.rows[1].params < result.rows[2].params  # type: ignore[attr-defined]
    assert result.verdict.startswith("verdict: final training error at 8 layers (mean ± std over 2 seeds)")  # type: ignore[attr-defined]
    for png in ("curves.png", "errors.png"):
        assert matplotlib.image.imread(out / png).shape[0] > 100
    assert "<table>" in result._repr_html_()  # type: ignore[attr-defined]
    page = read_report(out / "report.html")
    assert page.verdict.strip() == result.verdict and len(page.images) == 2  # type: ignore[attr-defined]
    assert [row[0] for row in page.tables[0][1:]] == list(VARIANTS)


def test_same_command_twice_reuses_every_run(done: tuple[Path, object]) -> None:
    out, _ = done
    seen: list[str] = []
    ablate(
        AblateConfig(variants=VARIANTS, seeds=2, out=str(out), **TINY), on_run=lambda r, how: seen.append(how)
    )  # type: ignore[arg-type]
    assert seen == ["reused"] * 6


def test_another_sweep_in_the_same_out_is_refused(done: tuple[Path, object]) -> None:
    out, _ = done
    from reslab.errors import ConfigError

    with pytest.raises(ConfigError, match="holds a sweep with variants="):
        ablate(AblateConfig(variants=("identity",), seeds=2, out=str(out), **TINY))  # type: ignore[arg-type]


def test_variants_share_the_initialisation_of_every_layer_they_share() -> None:
    from reslab.models import build_model

    states = []
    for options in (
        {},
        {"shortcut_kind": "scaling"},
        {"shortcut_kind": "dropout"},
        {"placement": "relu_preact"},
    ):
        torch.manual_seed(3)  # what train() does with --seed before building the model
        states.append(build_model("resnet8", **options).state_dict())
    for other in states[1:]:
        assert other.keys() == states[0].keys()
        assert all(torch.equal(other[k], states[0][k]) for k in other)


def test_a_run_that_diverges_is_a_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # λ = 1000 on the shortcut, F unscaled: the stream grows 1000x per unit (eq. 7 with λ > 1), so the loss
    # overflows within a few steps, while the identity trains.
    variant = "scaling:shortcut_scale=1000:scale_branch=false"
    argv = ["ablate", *FLAGS, "--variants", f"identity,{variant}", "--seeds", "1", "--lr", "3"]
    argv += ["--out", str(tmp_path / "s")]
    assert exit_code(argv) == 0
    printed = capsys.readouterr().out
    runs = json.loads((tmp_path / "s" / "results.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["trained", "diverged"]
    assert "diverged at it." in printed and f"{variant} diverged" in printed.replace(" (", " ")


def test_list_runs_print_config_and_one_run_of_the_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    argv = ["ablate", *FLAGS, "--variants", "identity,dropout", "--seeds", "2", "--out", str(out)]
    assert exit_code([*argv, "--list-runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [
        f"{i}  {v}  {s}  {out / f'{v}-s{s}'}"
        for i, (s, v) in enumerate([(0, "identity"), (0, "dropout"), (1, "identity"), (1, "dropout")])
    ]
    assert exit_code([*argv, "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["variants"] == ["identity", "dropout"] and printed["depth"] == 8
    assert exit_code([*argv, "--run-index", "1"]) == 0
    assert "run 1 done" in capsys.readouterr().out
    assert (out / "dropout-s0" / "summary.json").is_file() and not (out / "identity-s0").exists()


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--variants", "identity,gating"], "unknown variant 'gating'"),
        (["--variants", "identity,scaling:gate_bias=-2"], "gate_bias applies to shortcut_kind="),
        (["--variants", "identity,identity"], "repeats a variant"),
        (["--depth", "21"], "depth 21 is impossible"),
        (["--depth", "-4"], "--depth must be a positive integer 6n+2"),
        (["--depth", "abc"], "argument --depth: invalid int value"),
        (["--widen", "0"], "widen must be a positive number"),
        (["--model-kwargs", "foo"], "--model-kwargs expects KEY=VALUE pairs, got 'foo'"),
        (["--variants", "identity,scaling:shortcut_scale=abc"], "shortcut_scale must be a number"),
        (["--variants", "identity,scaling:nope=1"], "unknown option 'nope'"),
        (["--variants", "identity,dropout:shortcut_dropout=1.5"], "shortcut_dropout must be in [0, 1)"),
        (["--variants", "identity,scaling:=3"], "NAME:KEY=VALUE"),
        (["--variants", ","], "--variants is empty"),
        (["--preset", "huge"], "unknown --preset"),
        (["--seeds", "0"], "--seeds must be a positive integer"),
        (["--variants", "identity,scaling:"], "NAME:KEY=VALUE"),
        (["--model-kwargs", "placement=full_preact"], "would change every variant"),
    ],
)
def test_bad_settings_are_one_line_errors(
    flags: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(["ablate", *FLAGS, *flags, "--out", str(tmp_path / "s"), "--print-config"]) == 2
    assert says in one_line_error(capsys)


def test_paper_preset_is_the_protocol_of_tables_1_and_2() -> None:
    cfg = AblateConfig(preset="paper").resolve()  # type: ignore[attr-defined]
    assert (cfg.depth, cfg.dataset, cfg.seeds, cfg.recipe) == (110, "cifar10", 5, "paper")
    tcfg = cfg.train_config("exclusive_gate", seed=4, out="x")
    assert tcfg.model == "resnet110" and tcfg.iterations == 64_000 and tcfg.batch_size == 128
    assert tcfg.weight_decay == 1e-4 and tcfg.warmup_lr == 0.01 and tcfg.val_split is None
    assert tcfg.model_kwargs == {"shortcut_kind": "exclusive_gate"}
    figures = [paper_error(cfg.build_options(v)) for v in cfg.variants]
    assert all(f is not None for f in figures)  # every variant of the preset is a row of the paper
    assert [f[0] for f in figures if f] == [
        "6.61", "12.35", "fail", "8.70", "6.91", "12.86", "12.22", "fail", "8.17", "7.84", "6.71", "6.37",
    ]  # fmt: skip
    assert len(ablate_runs(replace(cfg, out="runs/x"))) == 12 * 5


def test_paper_figures_match_on_the_unit_not_on_other_options() -> None:
    assert paper_error({}) == ("6.61", "Table 1 (original), Table 2 (a)")
    assert paper_error({"widen": 0.5, "zero_init_residual": True}) == paper_error({})
    assert paper_error({"shortcut_kind": "exclusive_gate", "gate_bias": -3})[0] == "fail"  # type: ignore[index]
    assert paper_error({"shortcut_kind": "exclusive_gate", "gate_bias": -7})[0] == "9.81"  # type: ignore[index]
    assert paper_error({"shortcut_kind": "scaling", "shortcut_scale": 0.8}) is None  # not in the paper
    assert paper_error({"shortcut_kind": "scaling", "placement": "full_preact"}) is None
    assert paper_error({"placement": "full_preact"}) == ("6.37", "Table 2 (e)")


def _row(kind: str, errors: list[float]) -> Row:
    s = Stat.of(errors)
    return Row(kind, 8, 1, s, s, Stat.of([1.0] * len(errors)))


@pytest.mark.parametrize(
    ("base", "other", "verdict"),
    [
        ([0.010, 0.012, 0.011], [0.030, 0.034, 0.029], "worse"),  # no overlap, gap 19 sd
        ([0.010, 0.012, 0.011], [0.013, 0.009, 0.012], "no clear difference"),  # overlap
        ([0.010, 0.050, 0.030], [0.051, 0.052, 0.053], "no clear difference"),  # apart, gap 2.2 < 2 SE 2.3
        ([0.030, 0.034, 0.029], [0.010, 0.012, 0.011], "better"),
        ([0.010], [0.030], "one seed"),
    ],
)
def test_separation_rule(base: list[float], other: list[float], verdict: str) -> None:
    sep = separation(_row("identity", base), _row("v", other), base, other)
    assert sep == Separation("v", verdict, pytest.approx(Stat.of(other).mean - Stat.of(base).mean))


def test_default_preset_runs_the_finding_on_the_embedded_digits() -> None:
    cfg = AblateConfig().resolve()  # type: ignore[attr-defined]
    preset = PRESETS["default"]
    assert cfg.dataset == "mnist5k" and cfg.variants[0] == "identity"
    assert {"scaling", "dropout"} <= set(cfg.variants) and cfg.seeds >= 2
    assert cfg.train_config("scaling", seed=0, out="x").epochs == preset["epochs"]


def test_help_shows_the_default_sweep(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["ablate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for shown in (
        "--variants V,V", "(default: identity,scaling,dropout)", "--depth D", "(default: 20)",
        "(paper preset: 5) (default: 3)", "(default: 6)", "(default: mnist5k)", "(default: 128)",
    ):  # fmt: skip
        assert shown in text, shown
