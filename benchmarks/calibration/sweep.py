"""One depth sweep of plain and residual twins, trained through the library, with its table and time.

    python benchmarks/calibration/sweep.py --family cifar --depths 20,56,110 --widen 0.25 --epochs 10 --seeds 2 \
        --procs 2 --out runs/benchmarks/calibration/deep-k025-e10
    python benchmarks/calibration/sweep.py --family mlp --depths 1,4,16,64,500 --kw '{"branch_scale": "rezero"}' \
        --epochs 10 --procs 1 --threads 1 --flush-denormal --out runs/benchmarks/calibration/mlp-rezero

Each run is ``TrainConfig.from_recipe("default")`` with the compare preset's overrides (batch 128, no label
smoothing) and the flags here; ``--kw`` goes to ``build_model`` through ``model_kwargs`` for both twins
(plain twins ignore the residual-only options). ``--procs 2`` trains two runs at a time in two processes
of one thread each, deepest first (``reslab.engine.devices.launch.train_on_devices``, what ``reslab compare
--devices cpu,cpu`` does); ``--procs 1`` trains them one after the other in this process with ``--threads``
threads (and ``--flush-denormal`` applies). Finished runs in ``--out`` are reused (their time is the one
recorded then). Prints per-run lines, the table (mean ± std over seeds, training error in eval mode on the
whole training split), the three checks of the deep preset and the wall time of this invocation.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch

from reslab.engine import TrainConfig, train
from reslab.experiments.scheduler import train_on_devices


def name(family: str, depth: int, residual: bool) -> str:
    if family == "mlp":
        return f"{'res' if residual else 'plain'}mlp{depth}"
    return f"{'resnet' if residual else 'plain'}{depth}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--family", default="cifar", choices=("cifar", "mlp"))
    p.add_argument("--depths", required=True)
    p.add_argument("--kinds", default="plain,residual")
    p.add_argument("--widen", type=float)
    p.add_argument("--kw", default="{}", help="build_model keywords (JSON) for both twins")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--precision", default="auto")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--flush-denormal", action="store_true")
    p.add_argument("--train", default="{}", help="more TrainConfig settings (JSON) for every run")
    p.add_argument("--out", required=True)
    a = p.parse_args()

    kwargs = json.loads(a.kw)
    if a.widen is not None:
        kwargs["widen"] = a.widen
    depths = sorted((int(d) for d in a.depths.split(",")), reverse=True)  # deepest first
    kinds = [k == "residual" for k in a.kinds.split(",")]
    out = Path(a.out)
    runs = []
    for d in depths:
        for residual in kinds:
            for s in range(a.first_seed, a.first_seed + a.seeds):
                model = name(a.family, d, residual)
                cfg = TrainConfig.from_recipe(
                    "default",
                    model=model,
                    seed=s,
                    out=str(out / f"{model}-s{s}"),
                    overwrite=True,
                    progress="off",
                    batch_size=a.batch,
                    lr=a.lr,
                    weight_decay=a.wd,
                    label_smoothing=0.0,
                    epochs=a.epochs,
                    warmup_epochs=a.warmup_epochs,
                    eval_every=a.eval_every,
                    precision=a.precision,
                    model_kwargs=dict(kwargs),
                    num_threads=1 if a.procs > 1 else a.threads,
                ).with_changes(**json.loads(a.train))
                runs.append((d, residual, s, cfg))
    todo = [cfg for _, _, _, cfg in runs if not (Path(cfg.out) / "summary.json").exists()]
    started = time.perf_counter()
    if a.procs > 1 and todo:
        train_on_devices(todo, ["cpu"] * a.procs)
    else:
        torch.set_flush_denormal(a.flush_denormal)
        for cfg in todo:
            try:
                train(cfg)
            except Exception as err:  # a diverged run is a result too
                print(f"{cfg.model} seed {cfg.seed}: {type(err).__name__}: {err}")
    wall = time.perf_counter() - started

    table: dict[tuple[int, bool], list[dict]] = {}
    for d, residual, s, cfg in runs:
        f = Path(cfg.out) / "summary.json"
        if not f.exists():
            table.setdefault((d, residual), []).append({"seed": s, "failed": True})
            continue
        r = json.loads(f.read_text())
        r["seed"] = s
        table.setdefault((d, residual), []).append(r)
        print(
            f"{cfg.model:<12} seed {s}: train err {100 * r['final_train_error']:6.2f}%  test err "
            f"{100 * r['final_test_error']:6.2f}%  {r['seconds']:6.1f} s  ({r['iterations']} it, "
            f"{r['params']:,} params)"
        )

    def stat(d: int, residual: bool) -> tuple[float, float, float, float, float]:
        rs = [r for r in table[d, residual] if not r.get("failed")]
        if not rs:
            return (float("nan"),) * 5  # type: ignore[return-value]
        tr = [100 * r["final_train_error"] for r in rs]
        te = [100 * r["final_test_error"] for r in rs]
        sec = [r["seconds"] for r in rs]
        sd = statistics.stdev(tr) if len(tr) > 1 else 0.0
        return statistics.mean(tr), sd, statistics.mean(te), max(tr), statistics.mean(sec)

    print(f"\nsettings: {vars(a)}")
    head = ("depth", "plain train err (%)", "residual train err (%)", "plain test (%)", "residual test (%)")
    print("| " + " | ".join(head) + " | s/run p/r |")
    print("|---:|---:|---:|---:|---:|---:|")
    for d in sorted(depths):
        cells = []
        for residual in (False, True):
            if (d, residual) in table:
                m, sd, te, _, sec = stat(d, residual)
                cells.append((f"{m:.2f} ± {sd:.2f}", f"{te:.2f}", f"{sec:.0f}"))
            else:
                cells.append(("-", "-", "-"))
        (pm, pt, ps), (rm, rt, rsec) = cells
        print(f"| {d} | {pm} | {rm} | {pt} | {rt} | {ps} / {rsec} |")
    total_run_s = sum(r.get("seconds", 0.0) for rs in table.values() for r in rs)
    print(
        f"sum of run times {total_run_s:.0f} s; this invocation: {wall:.0f} s wall, {len(todo)} runs trained"
    )
    if a.family == "cifar" and len(kinds) == 2:
        lo, hi = min(depths), max(depths)
        plain = [stat(d, False)[0] for d in sorted(depths)]
        mono = all(x < y for x, y in itertools.pairwise(plain))
        r_lo, r_hi = stat(lo, True), stat(hi, True)
        rs_lo = [100 * r["final_train_error"] for r in table[lo, True] if not r.get("failed")]
        rs_hi = [100 * r["final_train_error"] for r in table[hi, True] if not r.get("failed")]
        beyond = max(rs_hi) < min(rs_lo)
        beyond_sd = r_hi[0] + r_hi[1] < r_lo[0] - r_lo[1]
        ratio = r_hi[0] / stat(hi, False)[0]
        print(f"(1) plain rises monotonically: {mono} ({' -> '.join(f'{x:.2f}' for x in plain)})")
        print(
            f"(2) residual deepest < shallowest: every seed {beyond} "
            f"(max {max(rs_hi):.2f} vs min {min(rs_lo):.2f}); "
            f"mean+sd < mean-sd {beyond_sd} ({r_hi[0]:.2f}±{r_hi[1]:.2f} vs {r_lo[0]:.2f}±{r_lo[1]:.2f})"
        )
        print(f"(3) residual/plain at {hi}: {ratio:.3f} (<= 0.1: {ratio <= 0.1})")


if __name__ == "__main__":
    main()
