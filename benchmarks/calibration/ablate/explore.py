"""Calibration of `reslab ablate`'s CPU default: one TrainConfig per (variant, seed), final errors, time.

Usage: python benchmarks/calibration/ablate/explore.py DEPTH EPOCHS SEEDS VARIANT[,VARIANT...] [KEY=VALUE ...]
(the KEY=VALUEs are extra TrainConfig settings; widen=K goes to the model). Prints one line per run.
"""

from __future__ import annotations

import sys
import tempfile
import time

import yaml

from reslab.engine import TrainConfig, train
from reslab.models.options import parse_entry

VARIANTS = {
    "identity": {},
    "scaling": {"shortcut_kind": "scaling"},
    "scaling_only": {"shortcut_kind": "scaling", "scale_branch": False},
    "exclusive_gate": {"shortcut_kind": "exclusive_gate"},
    "shortcut_gate": {"shortcut_kind": "shortcut_gate"},
    "conv1x1": {"shortcut_kind": "conv1x1"},
    "dropout": {"shortcut_kind": "dropout"},
    "bn_after_add": {"placement": "bn_after_add"},
    "relu_before_add": {"placement": "relu_before_add"},
    "relu_preact": {"placement": "relu_preact"},
    "full_preact": {"placement": "full_preact"},
}


def main() -> None:
    depth, epochs, seeds, names = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    extra = {k: yaml.safe_load(v) for k, _, v in (a.partition("=") for a in sys.argv[5:])}
    model_kwargs = {"widen": extra.pop("widen")} if "widen" in extra else {}
    base = dict(
        dataset="mnist5k", epochs=epochs, batch_size=128, label_smoothing=0.0, progress="off",
        eval_every=10_000,
    )  # fmt: skip
    base.update(extra)
    start = time.perf_counter()
    for name in names.split(","):
        variant, options = parse_entry(name)
        for seed in range(seeds):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = TrainConfig(
                    model=f"resnet{depth}", seed=seed, out=tmp, overwrite=True,
                    model_kwargs={**model_kwargs, **VARIANTS[variant], **options}, **base,
                )  # fmt: skip
                t = time.perf_counter()
                try:
                    r = train(cfg)
                    line = f"train {r.final_train_error:.2%} test {r.final_test_error:.2%}"
                except Exception as err:  # a diverged run is a result here
                    line = f"FAILED {type(err).__name__}: {err}"
                took = time.perf_counter() - t
                print(f"d{depth} e{epochs} {name:<32} s{seed} {line} {took:.1f}s", flush=True)
    print(f"total {time.perf_counter() - start:.1f}s", flush=True)


if __name__ == "__main__":
    main()
