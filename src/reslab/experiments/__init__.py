"""Experiments built on the training engine: the plain-vs-residual depth sweep and what runs sweeps.

    from reslab.experiments import CompareConfig, compare
    result = compare()                                              # the README's main command: mnist5k
    result = compare(CompareConfig(preset="paper", data_dir="data"))   # He et al. 2015, Fig. 6 on CIFAR-10
    result = ablate()                           # He et al. 2016: identity vs scaled and dropout shortcuts

Modules: degradation (CompareConfig, presets, compare), ablation (AblateConfig, the variants of He et al.
2016, ablate), paper_tables (that paper's Tables 1-2), sweep (reuse, resume, divergence, one run of a
sweep), scheduler (worker processes per device slot), planning (runs per device, the time estimate),
results (records, mean ± std rows, tables, verdict).
"""

from __future__ import annotations

from reslab.experiments.ablation import VARIANTS, AblateConfig, AblateResult, ablate, ablate_runs
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
    "VARIANTS",
    "AblateConfig",
    "AblateResult",
    "Checks",
    "CompareConfig",
    "CompareResult",
    "Job",
    "Row",
    "RunRecord",
    "Stat",
    "ablate",
    "ablate_runs",
    "compare",
    "compare_runs",
    "model_name",
]
