"""Why the lecture's resmlp256/resmlp500 diverge: the residual stream at init and in the first SGD steps.

    python benchmarks/calibration/mlp_stream.py [--kw '{"branch_scale": "rezero"}'] [--depths 1,4,16,64,256,500]

On one random batch of 128 normalised mnist5k training images (1 thread, fp32), for the residual MLP
(``--kw`` options) and its plain twin at each depth: RMS of the stream a[0] (after the input layer) and
after blocks 1, L/4, L/2 and L, the mean growth per block, the logits' RMS, the loss, and the gradient norms
of the input layer and of the classifier at init; then 3 steps of the default recipe's SGD (lr 0.1 after
warm-up would be later: here the first step's lr of a 1-epoch linear warm-up, 0.1/31, and then 0.1) to
show what a step does to a net whose gradients are that large.
"""

from __future__ import annotations

import argparse
import json

import torch

from reslab.data import load_dataset
from reslab.data.loader import Normalization
from reslab.models import build_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kw", default="{}")
    p.add_argument("--depths", default="1,4,16,64,256,500")
    p.add_argument("--steps", action="store_true", help="also take 3 SGD steps per residual net")
    a = p.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset("mnist5k")
    norm = Normalization.from_dataset(ds)
    idx = torch.randperm(ds.train_x.shape[0], generator=torch.Generator().manual_seed(0))[:128]
    x = norm.apply(ds.train_x[idx])  # a random batch: the split is sorted by class
    y = ds.train_y[idx].long()
    kwargs = json.loads(a.kw)
    for depth in (int(d) for d in a.depths.split(",")):
        for kind in ("res", "plain"):
            torch.manual_seed(0)
            model = build_model(f"{kind}mlp{depth}", **kwargs)
            rms: list[float] = []

            def hook(m: torch.nn.Module, i: object, o: torch.Tensor, rms: list[float] = rms) -> None:
                rms.append(o.pow(2).mean().sqrt().item())

            for b in model.blocks():
                b.register_forward_hook(hook)
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            loss.backward()
            a0 = model.relu(model.fc_in(model.flatten(x))).pow(2).mean().sqrt().item()
            growth = (rms[-1] / a0) ** (1 / depth) if rms[-1] > 0 else 0.0
            picks = [rms[0], rms[max(depth // 4 - 1, 0)], rms[max(depth // 2 - 1, 0)], rms[-1]]
            tiny = min(
                (g.abs()[g != 0].min().item() for g in (q.grad for q in model.parameters()) if g.any()),
                default=0.0,
            )
            logits = out.pow(2).mean().sqrt().item()
            g_in, g_fc = model.fc_in.weight.grad.norm().item(), model.fc.weight.grad.norm().item()
            print(
                f"{kind}mlp{depth:<4} {kwargs} a0 {a0:.3g} | a after 1, L/4, L/2, L: "
                + " ".join(f"{v:.3g}" for v in picks)
                + f" | x{growth:.4f}/block | logits {logits:.3g} | loss {loss.item():.3g}"
                + f" | grad fc_in {g_in:.3g} fc {g_fc:.3g} | smallest nonzero |g| {tiny:.3g}",
                flush=True,
            )
            if a.steps and kind == "res":
                opt = torch.optim.SGD(model.parameters(), lr=0.1 / 31, momentum=0.9, nesterov=True)
                losses = []
                for step in range(3):
                    opt.zero_grad()
                    step_loss = torch.nn.functional.cross_entropy(model(x), y)
                    step_loss.backward()
                    losses.append(step_loss.item())
                    for g in opt.param_groups:
                        g["lr"] = 0.1 * (step + 2) / 31  # the warm-up's next steps
                    opt.step()
                print(f"    3 warm-up SGD steps: losses {', '.join(f'{v:.3g}' for v in losses)}")


if __name__ == "__main__":
    main()
