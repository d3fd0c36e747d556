"""``write_sweep_report(result, title)``: a sweep's ``report.html`` (``reslab compare``, ``reslab ablate``).

The verdict, the results table, the figures (embedded), one row per run (with a link to the run's own
report.html where it has one) and the sweep's effective settings: the page reads alone, from disk, offline.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from reslab.reports import page as P

REPORT = "report.html"


def write_sweep_report(result: Any, title: str) -> Path:
    """Write ``<result.out>/report.html`` (atomically) and return its path.

    ``result``: a :class:`~reslab.experiments.SweepResult` (``out``, ``config``, ``runs``, ``table``,
    ``verdict``, ``figures``, ``files``).
    """
    from reslab.engine.store.rundir import atomic_write_bytes

    out = Path(result.out)
    sections = [
        P.verdict(result.verdict),
        P.section("Results", P.markdown_table(result.table)),
        P.section("Figures", *(P.figure(fig, name) for name, fig in result.figures.items())),
        P.section("Runs", _runs(out, result.runs)),
        P.section("Settings (every run's, the preset's included)", P.key_values(_settings(result.config))),
        P.section("Files", P.key_values((name, str(path)) for name, path in sorted(result.files.items()))),
    ]
    path = out / REPORT
    atomic_write_bytes(path, P.page(title, sections, subtitle=f"sweep {out}").encode("utf-8"))
    return path


def _runs(out: Path, runs: Any) -> str:
    head: tuple[str, ...] = (
        "run",
        "model",
        "depth",
        "seed",
        "status",
        "final training error (eval mode, whole split)",
    )
    head += ("final test error", "running training error, last evaluation (train mode)", "iterations", "s")
    rows = []
    for r in runs:
        run_dir = Path(r.path)
        name: Any = run_dir.name
        if (run_dir / REPORT).is_file():
            name = P.link(os.path.relpath(run_dir / REPORT, out), run_dir.name)
        status = r.status + (f" at it. {r.diverged_at}" if r.status == "diverged" else "")
        running = getattr(r, "running_train_error", None)
        errors = (P.pct(r.final_train_error), P.pct(r.final_test_error), P.pct(running))
        rows.append((name, r.model, r.depth, r.seed, status, *errors, r.iterations, f"{r.seconds:.0f}"))
    return P.table(head, rows, text_columns=2)


def _settings(config: Any) -> list[tuple[str, Any]]:
    """The effective settings of a resolved sweep config (every setting a run gets), else its own fields."""
    if hasattr(config, "effective"):
        config = config.effective()
    if not dataclasses.is_dataclass(config):
        return []
    return [(f.name, getattr(config, f.name)) for f in dataclasses.fields(config) if "help" in f.metadata]
