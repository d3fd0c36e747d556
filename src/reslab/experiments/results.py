"""The results of a depth sweep: one record per run, mean ± std per depth and kind, the files, the verdict.

Everything here works on plain data (no torch), so the tables can be rebuilt from ``results.json`` alone.
Errors are fractions in the files (as in each run's ``summary.json``) and percentages in the Markdown table.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

KINDS = ("plain", "residual")


@dataclass(frozen=True)
class RunRecord:
    """One trained network of the sweep: its ``summary.json`` figures and its place in the grid."""

    kind: str  # "plain" | "residual"
    depth: int  # layers as the paper counts them (dense blocks for the mlp family)
    seed: int
    model: str  # registry name, e.g. plain20 / resnet20
    params: int
    final_train_error: float  # eval mode, whole train split: the paper's "training error" (Fig. 1, 6)
    final_test_error: float
    final_train_loss: float
    final_test_loss: float
    seconds: float  # wall time of the run (all its sessions)
    iterations: int
    path: str  # the run directory
    history: list[dict[str, Any]] = field(default_factory=list, compare=False)  # metrics.jsonl records
    status: str = "trained"  # "trained" | "diverged" (NaN/inf: its errors are the last finite ones, or NaN)
    diverged_at: int | None = None  # the iteration whose loss, gradients or weights were not finite

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["history"]  # the curves stay in each run's metrics.jsonl
        return out


CSV_FIELDS = tuple(f.name for f in fields(RunRecord) if f.name != "history")


@dataclass(frozen=True)
class Stat:
    """Mean and (sample) standard deviation over seeds; std is 0 for a single seed."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        n = len(values)
        if n == 0:
            return cls(math.nan, math.nan, 0)
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        return cls(mean, math.sqrt(var), n)

    def pct(self) -> str:
        """``"1.23 ± 0.45"`` (percent), or ``"1.23"`` for one seed."""
        if self.n == 0:
            return "–"
        return f"{100 * self.mean:.2f}" + (f" ± {100 * self.std:.2f}" if self.n > 1 else "")


@dataclass(frozen=True)
class Row:
    """One depth of one kind, aggregated over seeds."""

    kind: str
    depth: int
    params: int
    train_error: Stat  # over the runs that trained (not the diverged ones)
    test_error: Stat
    seconds: Stat
    diverged: int = 0  # runs of this depth and kind that diverged
    diverged_at: int | None = None  # the earliest iteration at which one did

    @property
    def failed(self) -> bool:
        """Counted as not trained by the checks: any seed diverged."""
        return self.diverged > 0

    def cell(self, which: str) -> str:
        """The table cell of ``train_error`` / ``test_error``: mean ± std, or where it diverged."""
        if self.train_error.n == 0:
            return f"diverged at it. {self.diverged_at}"
        text = getattr(self, which).pct()
        return text + (f" ({self.diverged} diverged at it. {self.diverged_at})" if self.diverged else "")


def aggregate(records: Sequence[RunRecord], *, kinds: Sequence[str] = KINDS) -> list[Row]:
    """Rows sorted by depth, then in the order of ``kinds`` (plain, residual; or an ablation's variants)."""
    rows = []
    for depth in sorted({r.depth for r in records}):
        for kind in kinds:
            group = [r for r in records if r.depth == depth and r.kind == kind]
            if not group:
                continue
            ok = [r for r in group if r.status != "diverged"]
            failed = [r.diverged_at or 0 for r in group if r.status == "diverged"]
            rows.append(
                Row(
                    kind=kind,
                    depth=depth,
                    params=group[0].params,
                    train_error=Stat.of([r.final_train_error for r in ok]),
                    test_error=Stat.of([r.final_test_error for r in ok]),
                    seconds=Stat.of([r.seconds for r in group]),
                    diverged=len(failed),
                    diverged_at=min(failed) if failed else None,
                )
            )
    return rows


def _row(rows: Sequence[Row], kind: str, depth: int) -> Row | None:
    return next((r for r in rows if r.kind == kind and r.depth == depth), None)


def markdown_table(rows: Sequence[Row], *, layers_label: str = "layers") -> str:
    """Mean ± std (%) over seeds, one line per depth: training and test error of both twins."""
    seeds = max((r.train_error.n for r in rows), default=0)
    head = (
        f"| {layers_label} | params (plain / residual) | plain train err (%) | residual train err (%) "
        "| plain test err (%) | residual test err (%) | time per run (s) |"
    )
    lines = [head, "|---:|---:|---:|---:|---:|---:|---:|"]
    for depth in sorted({r.depth for r in rows}):
        p, r = _row(rows, "plain", depth), _row(rows, "residual", depth)
        params = " / ".join(f"{x.params:,}" if x else "–" for x in (p, r))
        cells = [x.cell("train_error") if x else "–" for x in (p, r)]
        cells += [x.cell("test_error") if x else "–" for x in (p, r)]
        secs = [x.seconds.mean for x in (p, r) if x]
        time_cell = f"{sum(secs) / len(secs):.0f}" if secs else "–"
        lines.append(f"| {depth} | {params} | " + " | ".join(cells) + f" | {time_cell} |")
    note = f"\nmean ± std over {seeds} seeds" if seeds > 1 else "\none seed (use --seeds N for mean ± std)"
    return "\n".join(lines) + note + "; training error in eval mode on the whole training split.\n"


@dataclass(kw_only=True)
class SweepResult:
    """What a sweep returns (:func:`~reslab.experiments.compare`, :func:`~reslab.experiments.ablate`); the
    same figures are in its ``results.json`` / ``results.md``."""

    out: Path
    config: Any  # the resolved sweep config: no None left where the preset has a value
    runs: list[RunRecord]
    rows: list[Row]  # mean ± std per row of the table
    table: str = ""  # the Markdown table of results.md ("" for one run of a distributed sweep)
    verdict: str = ""  # one line: what the sweep shows
    files: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)  # name -> matplotlib Figure
    seconds: float = 0.0  # wall time of this call (reused runs cost ~0)


@dataclass(frozen=True)
class Checks:
    """The lecture's claims as yes/no facts, from the seed means (and spreads)."""

    plain_rises: bool  # (1) plain training error never falls with depth and ends higher than it starts
    residual_fifth: bool  # deepest: residual training error <= 1/5 of the plain one
    residual_flat: bool  # deepest residual within 2 points of the shallowest residual
    residual_improves: bool = False  # (2) deepest residual below the shallowest, beyond the seed spread
    residual_tenth: bool = False  # deepest: residual training error <= 1/10 of the plain one


def checks(rows: Sequence[Row]) -> Checks | None:
    """None when the sweep has fewer than two depths with both kinds (nothing to compare)."""
    depths = sorted(
        {r.depth for r in rows if _row(rows, "plain", r.depth) and _row(rows, "residual", r.depth)}
    )
    if len(depths) < 2:
        return None
    plain = [_effective(_row(rows, "plain", d)) for d in depths]
    res = [_effective(_row(rows, "residual", d)) for d in depths]
    shallow, deep = _row(rows, "residual", depths[0]), _row(rows, "residual", depths[-1])
    assert shallow is not None and deep is not None
    spread = (0.0 if shallow.failed else shallow.train_error.std) + (
        0.0 if deep.failed else deep.train_error.std
    )
    return Checks(
        # Non-strict between neighbours: a plain net pinned at chance (90% on 10 classes) cannot rise further.
        plain_rises=all(b >= a for a, b in itertools.pairwise(plain)) and plain[-1] > plain[0],
        residual_fifth=res[-1] <= plain[-1] / 5,
        residual_flat=abs(res[-1] - res[0]) <= 0.02,
        residual_improves=not deep.failed and res[-1] + spread < res[0],
        residual_tenth=res[-1] <= plain[-1] / 10,
    )


def _effective(row: Row | None) -> float:
    """The training error the checks use: 100% for a depth whose runs diverged (not trained)."""
    assert row is not None
    return 1.0 if row.failed else row.train_error.mean


def _pct(row: Row | None) -> str:
    assert row is not None
    return "diverged" if row.failed else f"{100 * row.train_error.mean:.2f}%"


def _claim_two(rows: Sequence[Row], depths: list[int], c: Checks) -> str:
    """The lecture's second claim, as measured: does residual training error fall as the net deepens?"""
    first, last = _row(rows, "residual", depths[0]), _row(rows, "residual", depths[-1])
    assert first is not None and last is not None
    trend = f"{_pct_spread(first)} at {depths[0]} -> {_pct_spread(last)} at {depths[-1]}"
    if c.residual_improves:
        seeds = "beyond the seed spread" if last.train_error.n > 1 else "one seed: no spread measured"
        return f"Residual training error falls with depth ({trend}; {seeds})."
    return f"Residual training error does not fall with depth here ({trend})."


def _pct_spread(row: Row) -> str:
    return "diverged" if row.failed else row.train_error.pct() + "%"


def verdict(rows: Sequence[Row], *, layers_label: str = "layers") -> str:
    """One line: does plain training error rise with depth, and how do the twins compare at the deepest.

    A depth whose runs diverged counts as not trained (100% error) and reads "diverged".
    """
    depths = sorted(
        {r.depth for r in rows if _row(rows, "plain", r.depth) and _row(rows, "residual", r.depth)}
    )
    c = checks(rows)
    if c is None:
        return "verdict: needs at least two depths with both a plain and a residual run"
    deep = depths[-1]
    p, r = _row(rows, "plain", deep), _row(rows, "residual", deep)
    trend = " → ".join(_pct(_row(rows, "plain", d)) for d in depths)
    pe, re_ = _effective(p), _effective(r)
    assert p is not None and r is not None
    if p.failed or r.failed:
        deepest = f"at {deep} {layers_label} residual {_pct(r)} vs plain {_pct(p)}"
    else:
        ratio = f"{pe / re_:.1f}x lower" if re_ > 0 else "residual at zero"
        deepest = f"at {deep} {layers_label} residual {_pct(r)} vs plain {_pct(p)} ({ratio})"
    n_div = sum(x.diverged for x in rows)
    tail = " " + _claim_two(rows, depths, c)
    tail += f" {n_div} run(s) diverged (counted as not trained)." if n_div else ""
    rises = f"plain training error rises with depth ({trend})"
    if c.plain_rises and c.residual_fifth:
        return f"verdict: degradation reproduced: {rises}; {deepest}.{tail}"
    if c.plain_rises:
        but = "the residual net diverged" if r.failed else "the residual gain is small"
        return f"verdict: {rises}, but {but}: {deepest}.{tail}"
    return (
        f"verdict: no clear degradation at these settings: plain training error {trend} does not rise with "
        f"depth; {deepest}. Try deeper nets or more --epochs.{tail}"
    )


def write_results(
    out: Path, records: Sequence[RunRecord], *, extra: dict[str, Any] | None = None
) -> dict[str, Path]:
    """``results.json`` (one entry per run, NaN as null, then ``extra``'s keys), ``results.csv`` (the runs'
    fields); their paths."""
    from reslab.engine.rundir import strict_json
    from reslab.files import write_atomic

    paths = {"results.json": out / "results.json", "results.csv": out / "results.csv"}
    entries = [r.to_dict() for r in records]
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(entries)
    # through the one writer: atomic, and never through a link onto a file of the user's
    write_atomic(paths["results.json"], strict_json({"runs": entries, **(extra or {})}).encode(), "results")
    write_atomic(paths["results.csv"], table.getvalue().encode(), "results")
    return paths
