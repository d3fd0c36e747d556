"""What the why-tools study when given nothing, as ``reslab compare`` runs bare on its default sweep.

- ``reslab gradients``: plain56 and resnet56 at initialisation (no training: gradients at the start are
  the lecture's point, and 56 layers is the paper's Fig. 1 depth).
- ``reslab responses`` and ``reslab landscape``: the *default pair*, plain20 and resnet20 trained for one
  epoch on the embedded mnist5k digits with the recipe of ``reslab compare``, seeds 0 and 1 (responses
  compares all four runs, so its verdict is tested against seed noise; landscape draws seed 0's twins). The
  pair is an ordinary compare sweep (``runs/compare-cifar-mnist5k-<hash>``): it is trained once, reused by
  every later call, and resumed if interrupted. Training all four runs took about 30 s on a 2-core CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DEFAULT_GRADIENTS = ("plain56", "resnet56")
PAIR_DEPTH = 20  # 9 blocks per net: enough for Fig. 7's sorted responses, one epoch in ~6 s per run
PAIR_EPOCHS = 1
PAIR_SEEDS = 2  # the fewest that the verdicts' rule can test
PAIR_TEXT = f"plain{PAIR_DEPTH} and resnet{PAIR_DEPTH} trained {PAIR_EPOCHS} epoch on mnist5k"
GRID = 21  # landscape points per side by default
PAIR_GRID = 9  # the bare landscape: 81 points per net, ~10 s each on a 2-core CPU


def default_pair(seeds: int, say: Callable[[str], None], **settings: Any) -> list[str]:
    """The run directories of the default pair's first ``seeds`` seeds (plain, residual per seed), trained
    now when missing (only those runs), reused when finished. ``settings`` go to the compare sweep on top
    of the pair's own (a smaller dataset, say)."""
    from reslab.experiments import CompareConfig, compare, compare_runs

    pair = {"depths": (PAIR_DEPTH,), "epochs": PAIR_EPOCHS, "seeds": PAIR_SEEDS}
    cfg = CompareConfig(**{**pair, **settings})
    jobs = compare_runs(cfg.resolve())[: 2 * seeds]  # seed-major: plain-s0, residual-s0, plain-s1, ...
    which = "seed 0" if seeds == 1 else f"seeds 0..{seeds - 1}"
    say(f"no runs given: studying the default pair, {PAIR_TEXT}, {which}")
    if seeds >= cfg.resolve().seed_count:
        compare(cfg)  # the whole sweep: trains what is missing, reuses the rest
    else:
        for job in jobs:
            compare(cfg, run_index=job.index)
    return [str(job.run_dir) for job in jobs]
