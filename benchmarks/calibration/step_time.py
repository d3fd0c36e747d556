"""Milliseconds per training step (forward + backward + SGD) of one model, for planning the sweeps.

    python benchmarks/calibration/step_time.py MODEL [--widen K] [--batch B] [--precision fp32|bf16] [--channels-last]
        [--threads N] [--flush-denormal] [--steps S] [--kw '{"branch_scale": "rezero"}']

Input: random (B, 1, 28, 28) batches shaped like mnist5k. Prints the median and the mean over S steps after
3 warm-up steps. Time it alone: flock /tmp/reslab-cpu.lock python benchmarks/calibration/step_time.py ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch

from reslab.models import build_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--widen", type=float)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--flush-denormal", action="store_true")
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--kw", default="{}", help="more build_model keywords, as JSON")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(a.flush_denormal)
    torch.manual_seed(0)
    kwargs = json.loads(a.kw)
    if a.widen is not None:
        kwargs["widen"] = a.widen
    model = build_model(a.model, input_shape=(1, 28, 28), activation_checkpointing=a.checkpointing, **kwargs)
    fmt = torch.channels_last if a.channels_last else torch.preserve_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(a.batch, 1, 28, 28).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (a.batch,))
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if a.precision == "bf16" else contextlib.nullcontext()
    times = []
    for i in range(3 + a.steps):
        t = time.perf_counter()
        with amp:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t)
    ms = [1000 * s for s in times]
    print(
        f"{a.model} widen={a.widen} kw={kwargs} batch={a.batch} {a.precision} cl={a.channels_last} "
        f"threads={a.threads} ftz={a.flush_denormal} ckpt={a.checkpointing}: "
        f"median {statistics.median(ms):.1f} ms/step, mean {statistics.mean(ms):.1f}, "
        f"{a.batch / statistics.median(times):.0f} img/s"
    )


if __name__ == "__main__":
    main()
