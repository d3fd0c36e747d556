"""Wall time for resnet20 to reach 98% test accuracy on mnist5k, end to end: reslab vs the usual PyTorch loop.

    python benchmarks/time_to_accuracy.py            # ~5-8 min on a quiet 2-core CPU
    python benchmarks/time_to_accuracy.py --quick    # smoke check: 90% within 2 epochs

Both contenders follow the same recipe (reslab's ``default``: SGD + Nesterov 0.9, lr 0.1, wd 5e-4, label
smoothing 0.1, batch 64, 1 warm-up epoch then cosine over 8 epochs, seed 0) and evaluate the 1,000 test
images at the same points (every ``--eval-every`` steps). The clock starts before the dataset is loaded and
stops at the first evaluation at or above the target, so data preparation and evaluation time are included.

- ``reslab``: ``reslab.engine.train`` with its best CPU setting (precision and channels_last ``auto`` = bf16
  autocast + channels_last on a CPU with native bf16), stopped from the engine's callback;
- ``baseline``: a DataLoader over a TensorDataset of normalised float NCHW images, fp32, torch's default SGD,
  ``loss.item()`` each step, the learning rate from the same schedule function.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import benchlib as bl
from reslab.data import load_dataset
from reslab.data.loader import Normalization
from reslab.engine import TrainConfig, train
from reslab.engine.config import DEFAULT_BATCH
from reslab.engine.optim import lr_at, make_plan
from reslab.models import build_model, model_info


class _Reached(Exception):
    """Raised from the engine's callback to stop the run at the first evaluation on target."""


def _config(args: argparse.Namespace, out: str) -> TrainConfig:
    return TrainConfig.from_recipe(
        "default",
        model=args.model,
        dataset=args.dataset,
        epochs=args.epochs,
        eval_every=args.eval_every,
        seed=args.seed,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
        out=out,
        progress="off",
    )


def run_reslab(args: argparse.Namespace) -> dict[str, Any]:
    """``train()`` until the first evaluation at or above the target accuracy."""
    evals: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="reslab-tta-") as tmp:
        cfg = _config(args, f"{tmp}/run")
        started = time.perf_counter()

        def callback(m: dict[str, Any]) -> None:
            evals.append(
                {
                    "seconds": time.perf_counter() - started,
                    "iteration": m["iteration"],
                    "epoch": m["epoch"],
                    "test_accuracy": 1 - m["test_error"],
                    "train_images_per_s": m["images_per_s"],
                }
            )
            if 1 - m["test_error"] >= args.target:
                raise _Reached

        reached = False
        try:
            train(cfg, callback=callback)
        except _Reached:
            reached = True
        total = time.perf_counter() - started
    return _summary(
        "reslab",
        evals,
        reached,
        total,
        settings=f"precision={args.precision}, channels_last={args.channels_last}, compile={args.compile}",
    )


def run_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """The straightforward loop, same recipe and evaluation points."""
    evals: list[dict[str, Any]] = []
    cfg = _config(args, "unused")
    batch = cfg.batch_size or DEFAULT_BATCH
    started = time.perf_counter()
    # 1) data: normalised float NCHW tensors, as most tutorials prepare them
    ds = load_dataset(cfg.dataset, seed=cfg.split_seed)
    norm = Normalization.from_dataset(ds, cfg.normalize)
    train_dl = DataLoader(
        TensorDataset(norm.apply(ds.train_x), ds.train_y.long()),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
    )
    test_dl = DataLoader(TensorDataset(norm.apply(ds.test_x), ds.test_y.long()), batch_size=batch)
    # 2) model and optimiser
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes=ds.num_classes, input_shape=ds.image_shape)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = len(train_dl)
    total = cfg.epochs * steps_per_epoch  # type: ignore[operator]
    plan = make_plan(cfg, total=total, steps_per_epoch=steps_per_epoch, depth=model_info(cfg.model).depth)
    eval_every = cfg.eval_every or steps_per_epoch

    def accuracy() -> float:
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_dl:
                correct += int((model(x).argmax(1) == y).sum())
        model.train()
        return correct / len(test_dl.dataset)  # type: ignore[arg-type]

    # 3) the loop
    it, reached, train_s, interval_images = 0, False, 0.0, 0
    while it < total and not reached:
        t_interval = time.perf_counter()
        for x, y in train_dl:
            for group in opt.param_groups:
                group["lr"] = lr_at(it, plan)
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()  # what the usual loop logs
            it += 1
            interval_images += y.shape[0]
            if it % eval_every == 0 or it == total:
                train_s = time.perf_counter() - t_interval
                acc = accuracy()
                evals.append(
                    {
                        "seconds": time.perf_counter() - started,
                        "iteration": it,
                        "epoch": round(it / steps_per_epoch, 4),
                        "test_accuracy": acc,
                        "train_images_per_s": round(interval_images / max(train_s, 1e-9), 1),
                    }
                )
                interval_images, t_interval = 0, time.perf_counter()
                if acc >= args.target:
                    reached = True
                    break
            if it >= total:
                break
    return _summary(
        "baseline", evals, reached, time.perf_counter() - started, settings="fp32, NCHW, DataLoader"
    )


def _summary(
    name: str, evals: list[dict[str, Any]], reached: bool, total: float, settings: str
) -> dict[str, Any]:
    hit = evals[-1] if reached else None
    speeds = [e["train_images_per_s"] for e in evals]
    return {
        "contender": name,
        "settings": settings,
        "reached": reached,
        "seconds_to_target": hit["seconds"] if hit else None,
        "epoch_at_target": hit["epoch"] if hit else None,
        "iteration_at_target": hit["iteration"] if hit else None,
        "best_test_accuracy": max((e["test_accuracy"] for e in evals), default=None),
        "train_images_per_s_median": statistics.median(speeds) if speeds else None,
        "seconds_total": total,
        "evals": evals,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--target", type=float, default=0.98, help="test accuracy to reach")
    p.add_argument("--epochs", type=int, default=8, help="the recipe's length (the cosine schedule spans it)")
    p.add_argument(
        "--eval-every", type=int, default=31, help="steps between evaluations (31 = half an epoch)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="A/B pairs (order alternates)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="reslab's precision")
    p.add_argument(
        "--channels-last",
        default=None,
        type=lambda s: s.lower() in ("1", "true", "yes"),
        help="reslab's memory format (default: auto)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile reslab's model (costs ~1-2 min)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = physical cores)")
    p.add_argument("--quick", action="store_true", help="target 0.90 within 2 epochs: a smoke check")
    p.add_argument("--json", default="bench-results/time_to_accuracy.json")
    args = p.parse_args(argv)
    if args.quick:
        args.target, args.epochs = min(args.target, 0.90), 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = bl.detect_machine()
    torch.set_num_threads(args.threads or machine.physical_cores)
    machine.torch_threads = torch.get_num_threads()
    env = bl.environment(sys.argv)
    print(machine.describe())
    print(
        f"torch {env['torch']}, {env['date']}; target {args.target:.0%} test accuracy, {args.model} on "
        f"{args.dataset}, {args.epochs} epochs max"
    )
    runs: list[dict[str, Any]] = []
    for k in range(args.repeats):
        order = (run_reslab, run_baseline) if k % 2 == 0 else (run_baseline, run_reslab)
        for fn in order:
            res = fn(args)
            res["repeat"] = k
            runs.append(res)
            at = f"{res['seconds_to_target']:.1f} s" if res["reached"] else "not reached"
            print(
                f"  {res['contender']:8} repeat {k}: {at} (best {res['best_test_accuracy']:.2%})", flush=True
            )

    print(
        f"\n{'contender':10} {'to target s':>11} {'epoch':>6} {'train img/s':>11} {'best acc':>8}  settings"
    )
    out: dict[str, Any] = {}
    for name in ("reslab", "baseline"):
        mine = [r for r in runs if r["contender"] == name]
        times = [r["seconds_to_target"] for r in mine if r["reached"]]
        med = statistics.median(times) if len(times) == len(mine) else None
        ips = statistics.median(r["train_images_per_s_median"] for r in mine)
        epochs = [r["epoch_at_target"] for r in mine if r["reached"]]
        best = max(r["best_test_accuracy"] for r in mine)
        out[name] = {"median_seconds_to_target": med, "median_train_images_per_s": ips}
        t = f"{med:11.1f}" if med is not None else f"{'not reached':>11}"
        e = f"{statistics.median(epochs):6.2f}" if epochs else f"{'-':>6}"
        print(f"{name:10} {t} {e} {ips:11.1f} {best:8.2%}  {mine[0]['settings']}")
    r, b = out["reslab"], out["baseline"]
    speedup = (
        b["median_seconds_to_target"] / r["median_seconds_to_target"]
        if r["median_seconds_to_target"] and b["median_seconds_to_target"]
        else None
    )
    ips_ratio = r["median_train_images_per_s"] / b["median_train_images_per_s"]
    print(
        f"\nreslab vs baseline: time to target x{speedup:.2f}" if speedup else "\ntime-to-target ratio: n/a",
        f"| training images/s x{ips_ratio:.2f}",
    )
    payload = {
        "environment": env,
        "machine": asdict(machine),
        "args": vars(args),
        "runs": runs,
        "summary": {**out, "speedup_time_to_target": speedup, "speedup_train_images_per_s": ips_ratio},
    }
    print(f"JSON: {bl.write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
