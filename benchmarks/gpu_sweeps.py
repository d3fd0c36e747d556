"""The GPU check's sections about correctness and sweeps (see :mod:`gpu` for the order and the budget).

- :func:`equivalence_section`: the captured step against the eager one, within eager's own run-to-run noise;
- :func:`deep_section` and :func:`widths_section`: ``reslab compare`` as a user runs it, in a subprocess
  with a hard timeout (its whole process group is killed past it), wall time and printed estimate;
- :func:`paper_section`: the paper preset's estimated time from timed steps of each depth and from the
  measured throughput of runs side by side.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import benchlib as bl
from reslab.data.loader import DeviceLoader, Normalization
from reslab.engine import TrainConfig
from reslab.engine.devices.runtime import Runtime
from reslab.models import build_model

NORM = Normalization("channel", torch.full((3, 1, 1), 0.5), torch.full((3, 1, 1), 0.25))
# CIFAR-10 under the paper recipe: 64 evaluations of the 5k validation images, then the final figures on
# the 45k training and 5k validation images (the estimate runs on synthetic data of CIFAR's shape).
PAPER_EVAL_IMAGES = 64 * 5000 + 45_000 + 5000
TINY_SWEEP = [
    "--dataset",
    "synthetic:1x12x12",
    "--depths",
    "8,14",
    "--iterations",
    "4",
    "--batch-size",
    "32",
    "--eval-every",
    "2",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--num-threads",
    "1",
]


def loader(images: torch.Tensor, labels: torch.Tensor, batch: int, device: torch.device) -> DeviceLoader:
    return DeviceLoader(
        images,
        labels,
        batch_size=batch,
        norm=NORM,
        device=device,
        shuffle=True,
        augment="crop_flip",
        drop_last=True,
        channels_last=True,
    )


def data(n: int, size: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)  # (N, 3, S, S)
    return images, torch.randint(0, classes, (n,), generator=g)


def equivalence_section(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Losses of the first steps and the final weights: captured vs eager, and eager vs eager (the noise)."""
    name, batch, steps = ("resnet8", 16, 8) if args.tiny else ("resnet20", 128, 30)
    print(f"\n== equivalence: {name}, {steps} steps of batch {batch}, bf16 + channels_last", flush=True)
    images = data(8 * batch, 32, 10)
    torch.manual_seed(0)
    base = build_model(name).to(device, memory_format=torch.channels_last)
    rt = Runtime(device, "bf16", True)

    def run(mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        model = copy.deepcopy(base)
        batches = bl.cycle(loader(*images, batch, device))  # the same batches each time: a fresh epoch 0
        step = bl.engine_stepper(model, bl.make_sgd(model), rt, batches, mode, lr=0.05)
        step.keep_losses = True  # type: ignore[attr-defined]
        for _ in range(steps):
            step()
        losses = torch.stack(step.losses).cpu()  # type: ignore[attr-defined]
        return losses, torch.cat([p.detach().float().flatten() for p in model.parameters()]).cpu()

    def gap(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        loss = ((a[0] - b[0]).abs() / a[0].abs().clamp_min(1e-6)).max().item()
        first = ((a[0][:10] - b[0][:10]).abs() / a[0][:10].abs().clamp_min(1e-6)).max().item()
        return {
            "loss_rel_max": loss,
            "loss_rel_max_first10": first,
            "weights_rel": ((a[1] - b[1]).norm() / a[1].norm()).item(),
        }

    eager = run("eager")
    noise, captured = gap(eager, run("eager")), gap(eager, run("capture"))
    ok = all(captured[k] <= max(10 * noise[k], 1e-2) for k in captured)
    for label, g in (("eager vs eager (the noise)", noise), ("captured vs eager", captured)):
        first, weights = g["loss_rel_max_first10"], g["weights_rel"]
        print(
            f"{label:28} max loss gap {g['loss_rel_max']:.2e} (first 10: {first:.2e}), weights {weights:.2e}"
        )
    print(f"equivalence: {'within' if ok else 'OUTSIDE'} 10x eager's own noise (or 1e-2)")
    return {
        "model": name,
        "steps": steps,
        "batch": batch,
        "noise": noise,
        "captured": captured,
        "within_noise": ok,
        "losses_eager": eager[0].tolist(),
    }


def run_reslab(argv: list[str], timeout: float, *, label: str) -> dict[str, Any]:
    """``python -m reslab ARGV`` with a hard timeout (its process group, workers included, is killed past
    it); wall time, exit code, the plan line and its estimate, the table it printed."""
    env = dict(os.environ)
    src = str(bl.REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "reslab", *argv]
    print(f"\n== {label}: reslab {' '.join(argv)} (timeout {timeout:.0f} s)", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=max(timeout, 1.0))
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # this command's own process group: the sweep and its workers
        out, err = proc.communicate()
        timed_out = True
    seconds = time.perf_counter() - t0
    lines = err.splitlines()
    plan = next((line for line in lines if re.match(r"(compare|ablate): \d+ runs", line)), None)
    slots = next((line for line in lines if line.startswith("sweep: ")), None)
    for line in (plan, slots):
        if line:
            print(line)
    print(out.strip() or "(no table)")
    status = "timed out" if timed_out else f"exit code {proc.returncode}"
    print(f"{label}: {seconds:.1f} s wall, {status}", flush=True)
    return {
        "command": ["reslab", *argv],
        "seconds": round(seconds, 2),
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "plan_line": plan,
        "estimate_s": _estimate_s(plan),
        "slots_line": slots,
        "stdout": out,
        "stderr_tail": lines[-20:],
    }


def _estimate_s(plan: str | None) -> float | None:
    """Seconds of ``estimated 2 h 05 min`` / ``3 min 20 s`` / ``45 s`` in a plan line; None without one."""
    m = re.search(r"estimated ((?:\d+ (?:h|min|s)\b ?)+)", plan or "")
    if m is None:
        return None
    unit = {"h": 3600, "min": 60, "s": 1}
    return float(sum(int(n) * unit[u] for n, u in re.findall(r"(\d+) (h|min|s)\b", m[1])))


def _keep(src: Path, dest: Path | None, names: tuple[str, ...]) -> None:
    """Copy a sweep's table, results and figures to ``dest`` (beside the JSON: they come back from the GPU,
    which returns 8 files at most)."""
    if dest is None:
        return
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)


def deep_section(args: argparse.Namespace, budget: Any, keep: Path | None = None) -> dict[str, Any]:
    """``reslab compare --preset deep --device cuda``: runs per GPU auto; on time to spare, one at a time."""
    out = Path(tempfile.mkdtemp(prefix="reslab-gpu-deep-"))
    flags = [*TINY_SWEEP, "--runs-per-device", "2"] if args.tiny else ["--preset", "deep", "--device", "cuda"]
    try:
        result = {
            "auto": run_reslab(
                ["compare", *flags, "--out", str(out / "auto"), "--progress", "lines"],
                120 if args.tiny else budget.needs["deep"] - 5,
                label="compare --preset deep",
            )
        }
        _keep(out / "auto", keep, ("results.md",))
        if not args.tiny and budget.spare("deep") > 60:
            one = [*flags, "--runs-per-device", "1", "--out", str(out / "one"), "--progress", "lines"]
            result["one_per_gpu"] = run_reslab(
                ["compare", *one], 60, label="compare --preset deep, one at a time"
            )
        return result
    finally:
        shutil.rmtree(out, ignore_errors=True)


def widths_section(args: argparse.Namespace, budget: Any, keep: Path | None = None) -> dict[str, Any]:
    """``reslab compare --preset full --device cuda`` (full width, 20/56/110/1202 layers, 10 epochs): the
    table and the wall time."""
    out = Path(tempfile.mkdtemp(prefix="reslab-gpu-widths-"))
    flags = TINY_SWEEP if args.tiny else ["--preset", "full", "--device", "cuda"]
    try:
        result = run_reslab(
            ["compare", *flags, "--out", str(out), "--progress", "lines"],
            # may borrow a minute from the later sections (they skip their optional parts, or themselves)
            max(budget.left() - budget.after("widths") + 55, 10),
            label="compare --preset full",
        )
        md = out / "results.md"
        result["results_md"] = md.read_text() if md.is_file() else None
        _keep(out, keep, ("results.md", "results.json", "error_vs_depth.png", "curves.png"))
        return result
    finally:
        shutil.rmtree(out, ignore_errors=True)


def paper_section(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The paper preset's whole Fig. 6 sweep, estimated: timed steps of each depth (one twin each: plain and
    residual nets have the same layers), then 1, 2, 4 runs side by side on one GPU."""
    from reslab.engine.probe import Probe
    from reslab.experiments.planning import (
        AUTO_MAX_RUNS_PER_GPU,
        Estimate,
        choose_count,
        clock,
        fit_by_memory,
    )
    from reslab.experiments.scheduler import measure_concurrency

    depths = (8, 14) if args.tiny else (20, 32, 44, 56, 110)
    shape = "synthetic:1x12x12" if args.tiny else "synthetic:3x32x32"
    base = TrainConfig.from_recipe("paper", dataset=shape, val_split=None, device=device.type, progress="off")
    print(f"\n== the paper preset: {len(depths) * 2} runs of {base.iterations} steps, estimated", flush=True)
    est, shared, per_depth = Estimate(), None, {}
    for d in depths:
        with Probe(replace(base, model=f"resnet{d}"), data=shared) as probe:
            shared = (probe.specs.data, probe.data)
            cost = replace(probe.cost(2), eval_images=PAPER_EVAL_IMAGES)
        per_depth[d] = {"step_s": cost.step_s, "run_s": cost.seconds(), "peak_bytes": cost.peak_bytes}
        print(f"resnet{d}/plain{d}: {cost.step_s * 1000:.2f} ms per step, {clock(cost.seconds())} per run")
        est.run_seconds.update(
            {2 * len(per_depth) - 2: cost.seconds(), 2 * len(per_depth) - 1: cost.seconds()}
        )
        est.peak_bytes = max(est.peak_bytes or 0, cost.peak_bytes or 0) or None
    counts = [1, 2] if args.tiny else [1, 2, 4]
    slot = "cpu" if device.type == "cpu" else "cuda:0"
    rates = measure_concurrency(
        replace(base, model=f"resnet{depths[0]}"), slot, counts, seconds=0.2 if args.tiny else 2.0
    )
    n = choose_count(rates)
    est.slowdown = n * rates[1] / rates[n]
    free = int(torch.cuda.mem_get_info(0)[0]) if device.type == "cuda" else None
    rule = fit_by_memory(free, est.peak_bytes, AUTO_MAX_RUNS_PER_GPU)
    alone, together = est.sweep_seconds(1), est.sweep_seconds(n)
    shown = ", ".join(f"{c}: {r:.1f}" for c, r in sorted(rates.items()))
    print(f"steps/s of resnet{depths[0]} side by side ({shown}): {n} at a time is the best measured")
    print(
        f"paper preset: {clock(alone)} one run at a time; {clock(together)} with {n} per GPU (measured); "
        f"auto without a measurement would take {rule} per GPU (memory and its cap)"
    )
    return {
        "depths": per_depth,
        "rates_steps_per_s": rates,
        "chosen_runs_per_gpu": n,
        "rule_runs_per_gpu": rule,
        "slowdown": est.slowdown,
        "seconds_one_at_a_time": alone,
        "seconds_chosen": together,
        "eval_images_per_run": PAPER_EVAL_IMAGES,
    }
