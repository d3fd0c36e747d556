"""Loss and gradient norms of one training-mode step at init, fp32 and bf16 autocast (why plain1202 NaNs).

    python benchmarks/calibration/grad_at_init.py plain1202 resnet1202 [--batch 64] [--kw '{"zero_init_residual": true}']

One batch of normalised mnist5k training images (random, fixed seed), 1 thread. Prints the loss, the total
gradient norm, the norms of the stem conv's and the classifier's gradients, and whether all are finite.
"""

from __future__ import annotations

import argparse
import contextlib
import json

import torch

from reslab.data import load_dataset
from reslab.data.loader import Normalization
from reslab.models import build_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("models", nargs="+")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--kw", default="{}")
    a = p.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset("mnist5k")
    idx = torch.randperm(ds.train_x.shape[0], generator=torch.Generator().manual_seed(0))[: a.batch]
    x = Normalization.from_dataset(ds).apply(ds.train_x[idx])
    y = ds.train_y[idx].long()
    for name in a.models:
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            model = build_model(name, input_shape=(1, 28, 28), **json.loads(a.kw)).train()
            amp = (
                torch.autocast("cpu", dtype=torch.bfloat16)
                if precision == "bf16"
                else contextlib.nullcontext()
            )
            with amp:
                logits = model(x)
                loss = torch.nn.functional.cross_entropy(logits.float(), y)
            loss.backward()
            grads = [q.grad.float() for q in model.parameters() if q.grad is not None]
            total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            finite = all(torch.isfinite(g).all() for g in grads)
            print(
                f"{name} {a.kw} {precision}: logits RMS {logits.float().pow(2).mean().sqrt().item():.3g}, "
                f"loss {loss.item():.4g}, |grad| total {total.item():.3g}, stem conv "
                f"{model.conv1.weight.grad.norm().item():.3g}, fc {model.fc.weight.grad.norm().item():.3g}, "
                f"all finite {finite}",
                flush=True,
            )


if __name__ == "__main__":
    main()
