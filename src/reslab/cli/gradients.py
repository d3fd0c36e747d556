"""``reslab gradients --models plain56,resnet56``: gradient norms per layer, at init and after K SGD steps."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "gradients",
        help="gradient norm per layer of plain vs residual nets (vanishing / exploding gradients)",
        description=(
            "For each model (registry name = fresh, or a run directory), record ||dL/dW|| per weight layer "
            "and ||dL/d(block output)|| per block at the start and after K SGD steps. Writes gradients.png "
            "and gradients.json to --out and prints the first/last-layer gradient ratio per model."
        ),
    )
    p.add_argument(
        "--models", required=True, help="comma-separated names or run dirs, e.g. plainmlp64,resmlp64"
    )
    p.add_argument("--dataset", help="default: the first run's dataset, else mnist5k")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument(
        "--steps", type=int, default=20, metavar="K", help="SGD steps after the first snapshot (20)"
    )
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="probe and step batch (64)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate, momentum 0.9 (0.01)")
    p.add_argument("--seed", type=int, default=0, help="init, data subset and minibatch order (0)")
    p.add_argument("--out", default="analysis/gradients", metavar="DIR", help="(analysis/gradients)")
    p.add_argument("--no-download", dest="download", action="store_false", help="stay offline")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reslab.analysis.gradients import gradient_profile, ratio_table
    from reslab.analysis.outputs import out_dir, write_json
    from reslab.analysis.subjects import fixed_batch, load_subjects, open_dataset, split_entries
    from reslab.errors import ConfigError
    from reslab.plots import gradients_figure

    for flag, value in (("--steps", args.steps + 1), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ConfigError(f"{flag} must be {'>= 0' if flag == '--steps' else '>= 1'}")
    if not args.lr > 0:
        raise ConfigError(f"--lr must be a positive number, got {args.lr}")
    entries = split_entries([args.models])
    ds = open_dataset(args.dataset, entries, args.data_dir, download=args.download)
    subjects = load_subjects(entries, ds, seed=args.seed)
    out = out_dir(args.out)
    profiles = []
    for s in subjects:
        # The SGD steps draw from 8 batches' worth of fixed training images: enough for K ~ 20 steps.
        x, y = fixed_batch(ds, s.norm, 8 * args.batch_size, seed=args.seed)
        profiles.append(
            gradient_profile(
                s.model,
                x,
                y,
                steps=args.steps,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                label=s.label,
                model_name=s.model_name,
                residual=s.residual,
                trained=s.trained,
            )
        )
    print(ratio_table(profiles))
    data = {
        "dataset": ds.name,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "thresholds": {"vanishing_below": 1e-2, "exploding_above": 1e2},
        "models": [dict(p.to_dict(), source=s.source) for p, s in zip(profiles, subjects)],
    }
    write_json(out / "gradients.json", data)
    png = gradients_figure(profiles, out / "gradients.png")
    print(f"wrote {png} and {out / 'gradients.json'}")
    return 0
