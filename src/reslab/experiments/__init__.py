"""Experiments built on the training engine: ``run_compare``, the plain-vs-residual depth sweep (issue 4).

from reslab.experiments import CompareConfig, run_compare
result = run_compare(CompareConfig())                        # the README's main command: mnist5k, ~5 min
result = run_compare(CompareConfig(preset="paper", data_dir="data"))   # He et al. 2015, Fig. 6 on CIFAR-10
"""

from __future__ import annotations

from reslab.experiments.compare import CompareResult, run_compare
from reslab.experiments.config import FAMILIES, PRESETS, CompareConfig, model_name
from reslab.experiments.results import Checks, Row, RunRecord, Stat

__all__ = [
    "FAMILIES",
    "PRESETS",
    "Checks",
    "CompareConfig",
    "CompareResult",
    "Row",
    "RunRecord",
    "Stat",
    "model_name",
    "run_compare",
]
