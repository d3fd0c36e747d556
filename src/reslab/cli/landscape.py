"""``reslab landscape RUN [RUN ...]``: loss surfaces around trained weights (Li et al. 2018)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "landscape",
        help="2D loss contour and 1D slice along filter-normalised random directions (Li et al. 2018)",
        description=(
            "Evaluate the training loss at w0 + a*d1 + b*d2 on a grid, in eval mode, on a fixed subset of "
            "the training images. Plain and residual runs of the same depth are drawn side by side on one "
            "colour scale. Writes landscape.png and landscape.json to --out."
        ),
    )
    p.add_argument(
        "entries", nargs="+", metavar="RUN", help="run directories (or model names: fresh weights)"
    )
    p.add_argument("--dataset", help="default: the first run's dataset, else mnist5k")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument("--grid", type=int, default=21, metavar="G", help="G x G points, odd (21)")
    p.add_argument("--span", type=float, default=1.0, help="coordinates run over [-span, span] (1.0)")
    p.add_argument(
        "--samples", type=int, default=256, metavar="N", help="fixed training images per point (256)"
    )
    p.add_argument("--batch-size", type=int, default=256, metavar="B", help="images per forward pass (256)")
    p.add_argument("--seed", type=int, default=0, help="the directions and the image subset (0)")
    p.add_argument("--out", default="analysis/landscape", metavar="DIR", help="(analysis/landscape)")
    p.add_argument("--no-download", dest="download", action="store_false", help="stay offline")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from reslab.analysis.landscape import grid_coords, loss_landscape, progress_bar
    from reslab.analysis.outputs import out_dir, write_json
    from reslab.analysis.subjects import fixed_batch, load_subjects, open_dataset, split_entries
    from reslab.errors import ConfigError
    from reslab.plots import landscape_figure

    grid_coords(args.grid, args.span)  # validate before any loading
    if args.batch_size < 1 or args.samples < 1:
        raise ConfigError("--samples and --batch-size must be positive integers")
    entries = split_entries(args.entries)
    ds = open_dataset(args.dataset, entries, args.data_dir, download=args.download)
    subjects = load_subjects(entries, ds, seed=args.seed)
    kinds = {s.residual for s in subjects}
    if len(kinds) == 2 and len({s.depth for s in subjects}) > 1:
        depths = ", ".join(f"{s.label}={s.depth}" for s in subjects)
        raise ConfigError(
            f"plain and residual runs must have the same depth to be compared ({depths}); "
            "pass twins such as plain20 and resnet20"
        )
    out = out_dir(args.out)
    maps = []
    for s in subjects:
        model = s.model
        if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
            model = model.to(memory_format=torch.channels_last)  # faster CPU convs: ~1.3x on the scan
        x, y = fixed_batch(ds, s.norm, args.samples, seed=args.seed)
        update, close = progress_bar(args.grid**2, s.label)
        try:
            m = loss_landscape(
                model,
                x,
                y,
                grid=args.grid,
                span=args.span,
                seed=args.seed,
                batch_size=args.batch_size,
                label=s.label,
                model_name=s.model_name,
                residual=s.residual,
                depth=s.depth,
                progress=update,
            )
        finally:
            close()
        print(
            f"{s.label}: loss at w0 {m.center_loss:.4g}, min {min(map(min, m.losses)):.4g}, "
            f"max {max(map(max, m.losses)):.4g} on {args.grid}x{args.grid} points, {m.seconds:.1f}s"
        )
        maps.append(m)
    write_json(
        out / "landscape.json",
        {
            "dataset": ds.name,
            "grid": args.grid,
            "span": args.span,
            "samples": args.samples,
            "directions_seed": args.seed,
            "models": [m.to_dict() for m in maps],
        },
    )
    png = landscape_figure(maps, out / "landscape.png")
    print(f"wrote {png} and {out / 'landscape.json'}")
    return 0
