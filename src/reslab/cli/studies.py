"""``reslab compare | ablate | gradients | responses | landscape``: the experiments and the why-tools.

Every flag is generated from the command's config dataclass (``CompareConfig`` and ``AblateConfig``, whose
training flags come from ``TrainConfig``, and the studies' configs); ``--config FILE`` reads the same
settings from a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from reslab.cli.options import add_config_flags, add_setting_flags, as_json, build, from_file, given
from reslab.errors import ConfigError

_STUDIES = {
    "gradients": (
        "gradient norm per layer of plain vs residual nets (vanishing / exploding gradients)",
        "For each model (registry name = fresh, or a run directory), record ||dL/dW|| per weight layer and "
        "||dL/d(block output)|| per block at the start and after K SGD steps. Writes gradients.png and "
        "gradients.json to --out and prints the first/last-layer gradient ratio per model. With no models: "
        "plain56 and resnet56 at initialisation (about 20 s on a 2-core CPU). --models M,M is the old "
        "spelling of the positional models (deprecated, still accepted).",
    ),
    "responses": (
        "layer responses of plain vs residual nets (paper Fig. 7) and closeness to the identity",
        "For each run directory (trained) or model name (fresh), the std of each block's branch output F(x) "
        "(after its last BN, before the addition) over a batch of training images, in eval mode, and the "
        "relative norm ||F(x)||/||x||. Writes responses.png and responses.json to --out. With no runs: the "
        "default pair, plain20 and resnet20 trained one epoch on mnist5k with seeds 0 and 1 (a compare "
        "sweep in runs/, trained once in about 30 s on a 2-core CPU, then reused).",
    ),
    "landscape": (
        "2D loss contour and 1D slice along filter-normalised random directions (Li et al. 2018)",
        "Evaluate the training loss at w0 + a*d1 + b*d2 on a grid, in eval mode, on a fixed subset of the "
        "training images. Plain and residual runs of the same depth are drawn side by side on one colour "
        "scale. Writes landscape.png and landscape.json to --out. With no runs: seed 0 of the default pair "
        "of `reslab responses` (trained if missing) on a 9x9 grid.",
    ),
}


def _compare_default(f: dataclasses.Field[Any]) -> str:
    """What a compare flag defaults to: the default preset's value, else TrainConfig's."""
    from reslab.cli.options import _show
    from reslab.engine.config import AUTO_DEFAULTS
    from reslab.experiments import PRESETS
    from reslab.settings import field_default

    preset = PRESETS["default"]
    if f.name == "epochs":
        return ", ".join(f"{v} ({k})" for k, v in preset["epochs"].items())
    if f.name == "dataset":
        return preset["dataset"]
    if f.name in preset["train"]:
        return _show(preset["train"][f.name])
    value = f.metadata["train_default"] if "train_default" in f.metadata else field_default(f)
    return _show(value) or AUTO_DEFAULTS.get(f.name, "")


def _ablate_default(f: dataclasses.Field[Any]) -> str:
    """What an ablate flag defaults to: the default preset's value, else TrainConfig's."""
    from reslab.cli.options import _show
    from reslab.engine.config import AUTO_DEFAULTS
    from reslab.experiments.ablation import PRESETS
    from reslab.settings import field_default

    preset = PRESETS["default"]
    if f.name in preset and f.name != "train":
        return _show(preset[f.name])
    if f.name in preset["train"]:
        return _show(preset["train"][f.name])
    value = f.metadata["train_default"] if "train_default" in f.metadata else field_default(f)
    return _show(value) or AUTO_DEFAULTS.get(f.name, "")


def register(sub: Any) -> None:
    from reslab.analysis import GradientsConfig, LandscapeConfig, ResponsesConfig
    from reslab.experiments import AblateConfig, CompareConfig

    p = sub.add_parser(
        "compare",
        help="the degradation experiment: plain vs residual nets over depths (He et al. 2015, Fig. 6)",
        description=(
            "For each depth, train a plain net and its residual twin with the same recipe, init and seeds; "
            "write curves.png, error_vs_depth.png, results.json/.csv/.md to --out and print the table. "
            "With no arguments: CIFAR-style nets of 20, 38 and 44 layers on the embedded mnist5k digits, "
            "5 epochs each, about 3.5 minutes on a 2-core CPU. Re-running the same command reuses finished "
            "runs and resumes an interrupted one. Training flags override the preset's values."
        ),
    )
    add_config_flags(p, what="sweep settings")
    p.add_argument(
        "--list-runs", action="store_true", help="print the sweep's runs (index, model, seed, run dir)"
    )
    add_setting_flags(p, CompareConfig, default_text=_compare_default)
    p.set_defaults(func=run_compare)
    a = sub.add_parser(
        "ablate",
        help="why the identity: shortcut and BN/ReLU ablations at one depth (He et al. 2016, Tables 1-2)",
        description=(
            "Train the residual net once per variant (a shortcut function of He et al. 2016, Fig. 2, or an "
            "order of BN and ReLU, Fig. 4) and seed, with the same recipe, init and seeds; write curves.png, "
            "errors.png, results.json/.csv/.md to --out and print the table, with the paper's CIFAR-10 "
            "figures beside each variant. With no arguments: identity vs constant scaling vs dropout "
            "shortcut, resnet20 on the embedded mnist5k digits, 6 epochs, 3 seeds, about 4 minutes on a "
            "2-core CPU. Re-running the same command reuses finished runs and resumes an interrupted one. "
            "--preset paper: ResNet-110 on CIFAR-10 with the paper's recipe (a GPU job). Training flags "
            "override the preset's values."
        ),
    )
    add_config_flags(a, what="sweep settings")
    a.add_argument(
        "--list-runs", action="store_true", help="print the sweep's runs (index, variant, seed, run dir)"
    )
    add_setting_flags(a, AblateConfig, default_text=_ablate_default)
    a.set_defaults(func=run_ablate)
    for name, cls in (
        ("gradients", GradientsConfig),
        ("responses", ResponsesConfig),
        ("landscape", LandscapeConfig),
    ):
        help_, description = _STUDIES[name]
        s = sub.add_parser(name, help=help_, description=description)
        add_config_flags(s)
        add_setting_flags(s, cls)
        s.set_defaults(func=run_study, study=name, config_class=cls)


def run_compare(args: argparse.Namespace) -> int:
    from reslab.experiments import CompareConfig, compare, compare_runs

    return _run_sweep(args, "compare", CompareConfig, compare, compare_runs, column="model")


def run_ablate(args: argparse.Namespace) -> int:
    from reslab.experiments import AblateConfig, ablate, ablate_runs

    return _run_sweep(args, "ablate", AblateConfig, ablate, ablate_runs, column="variant")


def _run_sweep(args: argparse.Namespace, name: str, cls: type, run: Any, runs: Any, *, column: str) -> int:
    """``--print-config``, ``--list-runs``, one ``--run-index``, or the whole sweep with its table."""
    cfg = build(cls, {**from_file(args, cls), **given(args, cls)})
    if args.print_config:
        print(as_json(cfg.resolve().effective()))
        return 0
    if args.list_runs:
        jobs = runs(cfg.resolve())  # every refusal before the first line of the list
        print(f"index  {column}  seed  run directory")
        for job in jobs:
            print(f"{job.index}  {job.model if column == 'model' else job.kind}  {job.seed}  {job.run_dir}")
        return 0
    result = run(cfg)
    if result.config.run_index is not None:
        print(f"run {result.config.run_index} done; `reslab {name}` with the same settings gathers the sweep")
        return 0
    print(result.table)
    print(result.verdict)
    print(f"outputs in {result.out}: " + ", ".join(sorted(result.files)))
    return 0


def run_study(args: argparse.Namespace) -> int:
    import reslab.analysis as analysis

    cls = args.config_class
    cfg = build(cls, {**from_file(args, cls), **given(args, cls)})
    if getattr(cfg, "models", None) is not None:  # the old flag: one line, then as if given positionally
        if cfg.entries:
            raise ConfigError("models given twice, positionally and with --models; drop --models")
        sys.stderr.write(
            "reslab: warning: --models is deprecated; pass the models as arguments: "
            f"reslab gradients {' '.join(cfg.models)}\n"
        )
        cfg = dataclasses.replace(cfg, entries=cfg.models, models=None)
    if args.print_config:
        print(as_json(cfg))
        return 0
    print(getattr(analysis, args.study)(cfg))
    return 0
