"""Model-only A/B: reslab's resnet50 against torchvision's, same weights, same SGD step, fp32 NCHW.

Isolates the model from the engine: both run the identical loop (forward, cross-entropy, backward, SGD), in
alternating order over several rounds. Also times reslab's net with in-place ReLUs (reslab keeps them out of
place so that a hook's saved branch output is never overwritten). Needs torchvision:

    PYTHONPATH=src python benchmarks/model_ab.py [--rounds 6] [--batch 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import reslab


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torchvision  # optional extra: pip install -e ".[bench]"

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tv = torchvision.models.resnet50()
    nets = {"torchvision": tv, "reslab": reslab.build_model("resnet50")}
    nets["reslab (in-place ReLU)"] = reslab.build_model("resnet50")
    for m in nets["reslab (in-place ReLU)"].modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = True
    for name in ("reslab", "reslab (in-place ReLU)"):
        nets[name].load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(args.batch, 3, 224, 224)  # (B, C, H, W)
    y = torch.randint(0, 1000, (args.batch,))
    opts = {k: torch.optim.SGD(v.parameters(), lr=0.01, momentum=0.9) for k, v in nets.items()}

    def step(k: str) -> None:
        loss = F.cross_entropy(nets[k](x), y)
        opts[k].zero_grad()
        loss.backward()
        opts[k].step()

    for k in nets:  # warm-up: oneDNN primitive caches, allocator
        step(k)
    rates: dict[str, list[float]] = {k: [] for k in nets}
    for r in range(args.rounds):
        for k in list(nets) if r % 2 == 0 else list(nets)[::-1]:
            t = time.perf_counter()
            step(k)
            step(k)
            rates[k].append(2 * args.batch / (time.perf_counter() - t))
    base = statistics.median(rates["torchvision"])
    for k, v in rates.items():
        med = statistics.median(v)
        print(f"{k:24s} {med:7.2f} img/s  x torchvision {med / base:.3f}  rounds {[round(a, 1) for a in v]}")


if __name__ == "__main__":
    main()
