"""``reslab responses RUN_OR_MODEL ...``: std of each block's branch output (He et al. 2015, Fig. 7)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "responses",
        help="layer responses of plain vs residual nets (paper Fig. 7) and closeness to the identity",
        description=(
            "For each run directory (trained) or model name (fresh), the std of each block's branch output "
            "F(x) (after its last BN, before the addition) over a batch of training images, in eval mode, "
            "and the relative norm ||F(x)||/||x||. Writes responses.png and responses.json to --out."
        ),
    )
    p.add_argument("entries", nargs="+", metavar="RUN_OR_MODEL", help="run directories or model names")
    p.add_argument("--dataset", help="default: the first run's dataset, else mnist5k")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument("--samples", type=int, default=512, metavar="N", help="training images used (512)")
    p.add_argument("--batch-size", type=int, default=256, metavar="B", help="images per forward pass (256)")
    p.add_argument("--seed", type=int, default=0, help="fresh models' init and the image subset (0)")
    p.add_argument("--out", default="analysis/responses", metavar="DIR", help="(analysis/responses)")
    p.add_argument("--no-download", dest="download", action="store_false", help="stay offline")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reslab.analysis.outputs import out_dir, write_json
    from reslab.analysis.responses import response_profile, response_table, response_verdict
    from reslab.analysis.subjects import fixed_batch, load_subjects, open_dataset, split_entries
    from reslab.errors import ConfigError
    from reslab.plots import responses_figure

    if args.batch_size < 1 or args.samples < 1:
        raise ConfigError("--samples and --batch-size must be positive integers")
    entries = split_entries(args.entries)
    ds = open_dataset(args.dataset, entries, args.data_dir, download=args.download)
    subjects = load_subjects(entries, ds, seed=args.seed)
    out = out_dir(args.out)
    profiles = []
    for s in subjects:
        x, _ = fixed_batch(ds, s.norm, args.samples, seed=args.seed)
        profiles.append(
            response_profile(
                s.model,
                x,
                label=s.label,
                model_name=s.model_name,
                residual=s.residual,
                trained=s.trained,
                batch_size=args.batch_size,
            )
        )
    holds, sentence = response_verdict(profiles)
    print(response_table(profiles))
    print(sentence)
    write_json(
        out / "responses.json",
        {
            "dataset": ds.name,
            "samples": args.samples,
            "holds": holds,
            "verdict": sentence,
            "models": [dict(p.to_dict(), source=s.source) for p, s in zip(profiles, subjects)],
        },
    )
    png = responses_figure(profiles, out / "responses.png")
    print(f"wrote {png} and {out / 'responses.json'}")
    return 0
