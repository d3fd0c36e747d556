"""Experiments built on the training engine: the plain-vs-residual depth sweep and what runs sweeps.

    from reslab.experiments import CompareConfig, compare
    result = compare()                                              # the README's main command: mnist5k
    result = compare(CompareConfig(preset="paper", data_dir="data"))   # He et al. 2015, Fig. 6 on CIFAR-10

Modules: degradation (CompareConfig, presets, compare), sweep (reuse, resume, divergence, one run of a
sweep), scheduler (one run per device), results (records, mean ± std rows, tables, verdict).
"""

from __future__ import annotations

from reslab.experiments.degradation import (
    FAMILIES,
    PRESETS,
    CompareConfig,
    CompareResult,
    compare,
    compare_runs,
    model_name,
)
from reslab.experiments.results import Checks, Row, RunRecord, Stat
from reslab.experiments.sweep import Job

__all__ = [
    "FAMILIES",
    "PRESETS",
    "Checks",
    "CompareConfig",
    "CompareResult",
    "Job",
    "Row",
    "RunRecord",
    "Stat",
    "compare",
    "compare_runs",
    "model_name",
]
