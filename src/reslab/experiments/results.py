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

from reslab.evidence import ONE_SEED, RULE, Separation, separate

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

    @property
    def running_train_error(self) -> float | None:
        """The last evaluation's *running* training error (train mode, averaged over the interval's batches:
        metrics.jsonl's ``train_error``), not the eval-mode ``final_train_error``."""
        value = self.history[-1].get("train_error") if self.history else None
        return float(value) if isinstance(value, int | float) else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["history"]  # the curves stay in each run's metrics.jsonl
        return {**out, "running_train_error": self.running_train_error}


CSV_FIELDS = (*(f.name for f in fields(RunRecord) if f.name != "history"), "running_train_error")
# What the error columns of results.json / results.csv mean (results.json carries this as "columns").
COLUMNS = {
    "final_train_error": "eval mode, the whole training split, end of the run (the paper's training error)",
    "final_test_error": "eval mode, the whole test split, at the end of the run",
    "running_train_error": "train mode, averaged over the batches of the last evaluation interval "
    "(metrics.jsonl's train_error); for a diverged run, final_train_error is this figure too",
}


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
    train_errors: tuple[float, ...] = ()  # per seed, the runs that trained (the values of train_error)

    def effective_errors(self) -> list[float]:
        """Per seed, the training error the verdicts compare: a diverged seed counts as 100% (not trained).
        A row built without its per-seed values stands for its mean alone (one seed: nothing tested)."""
        trained = list(self.train_errors) or ([self.train_error.mean] if self.train_error.n else [])
        return trained + [1.0] * self.diverged

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
                    train_errors=tuple(r.final_train_error for r in ok),
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
    """The lecture's claims as yes/no facts: comparisons by :func:`reslab.evidence.separate` (every seed
    beyond every seed and a gap above 2 standard errors), ratios from the seed means."""

    plain_rises: bool  # (1) deepest plain above the shallowest under the rule, no neighbour pair below
    residual_fifth: bool  # deepest: mean residual training error <= 1/5 of the plain one
    residual_flat: bool  # deepest residual within 2 points of the shallowest residual (means)
    residual_improves: bool = False  # (2) deepest residual below the shallowest under the rule
    residual_tenth: bool = False  # deepest: mean residual training error <= 1/10 of the plain one
    residual_below_plain: bool = False  # deepest: residual below plain under the rule
    tested: bool = False  # every row compared has two seeds or more: the comparisons above were made
    plain_trend: Separation = "one seed"  # deepest plain against the shallowest
    residual_trend: Separation = "one seed"  # deepest residual against the shallowest
    deepest: Separation = "one seed"  # deepest residual against the deepest plain


def _depths(rows: Sequence[Row]) -> list[int]:
    """The depths with both a plain and a residual row, shallow to deep."""
    return sorted({r.depth for r in rows if _row(rows, "plain", r.depth) and _row(rows, "residual", r.depth)})


def checks(rows: Sequence[Row]) -> Checks | None:
    """None when the sweep has fewer than two depths with both kinds (nothing to compare)."""
    depths = _depths(rows)
    if len(depths) < 2:
        return None
    plain_rows = [_must(_row(rows, "plain", d)) for d in depths]
    res_rows = [_must(_row(rows, "residual", d)) for d in depths]
    plain = [_effective(r) for r in plain_rows]
    res = [_effective(r) for r in res_rows]
    seeds = [r.effective_errors() for r in (*plain_rows, *res_rows)]
    plain_trend = separate(plain_rows[-1].effective_errors(), plain_rows[0].effective_errors())
    # A plain net pinned at chance (90% on 10 classes) cannot rise further: only a fall between
    # neighbours, beyond the seed spread, breaks the trend.
    falls = any(
        separate(b.effective_errors(), a.effective_errors()) == "below"
        for a, b in itertools.pairwise(plain_rows)
    )
    residual_trend = separate(res_rows[-1].effective_errors(), res_rows[0].effective_errors())
    deepest = separate(res_rows[-1].effective_errors(), plain_rows[-1].effective_errors())
    return Checks(
        plain_rises=plain_trend == "above" and not falls,
        residual_fifth=res[-1] <= plain[-1] / 5,
        residual_flat=abs(res[-1] - res[0]) <= 0.02,
        residual_improves=not res_rows[-1].failed and residual_trend == "below",
        residual_tenth=res[-1] <= plain[-1] / 10,
        residual_below_plain=deepest == "below",
        tested=all(len(s) > 1 for s in seeds),
        plain_trend=plain_trend,
        residual_trend=residual_trend,
        deepest=deepest,
    )


def _must(row: Row | None) -> Row:
    assert row is not None
    return row


def _effective(row: Row | None) -> float:
    """The training error the ratios use: 100% for a depth whose runs diverged (not trained)."""
    assert row is not None
    return 1.0 if row.failed else row.train_error.mean


def _pct(row: Row | None) -> str:
    assert row is not None
    return "diverged" if row.failed else f"{100 * row.train_error.mean:.2f}%"


def _pct_spread(row: Row) -> str:
    return "diverged" if row.failed else row.train_error.pct() + "%"


def count(n: int, unit: str) -> str:
    """``"1 dense block"``, ``"4 dense blocks"``, ``"20 layers"``: ``unit`` is given in the plural."""
    return f"{n} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"


_TREND = {"above": "rises", "below": "falls", "overlap": "shows no clear difference"}


def _claim_two(rows: Sequence[Row], depths: list[int], c: Checks) -> str:
    """The lecture's second claim, as measured: does residual training error fall as the net deepens?"""
    first, last = _must(_row(rows, "residual", depths[0])), _must(_row(rows, "residual", depths[-1]))
    trend = f"{_pct_spread(first)} at {depths[0]} -> {_pct_spread(last)} at {depths[-1]}"
    if not c.tested:
        return f"Residual training error {trend}."
    return f"Residual training error {_TREND[c.residual_trend]} with depth ({trend})."


def _deepest(rows: Sequence[Row], deep: str, c: Checks) -> str:
    """The twins at the deepest depth: the numbers, and their ratio or the comparison under the rule."""
    depths = _depths(rows)
    p, r = _must(_row(rows, "plain", depths[-1])), _must(_row(rows, "residual", depths[-1]))
    head = f"at {deep} residual {_pct(r)} vs plain {_pct(p)}"
    if p.failed or r.failed:
        return head
    pe, re_ = _effective(p), _effective(r)
    if not c.tested:
        return head + (f" (plain/residual {pe / re_:.1f})" if re_ > 0 else "")
    if c.deepest == "below":
        return head + (f" ({pe / re_:.1f}x lower)" if re_ > 0 else " (residual at zero)")
    return head + (" (residual higher)" if c.deepest == "above" else ": no clear difference")


def verdict(rows: Sequence[Row], *, layers_label: str = "layers") -> str:
    """One line: does plain training error rise with depth, and how do the twins compare at the deepest.

    Comparisons follow :mod:`reslab.evidence`: "rises", "falls", "lower" only when every seed of one side
    is beyond every seed of the other and the gap exceeds 2 standard errors; with one seed the numbers are
    stated and the verdict says they were not tested against noise. A depth whose runs diverged counts as
    not trained (100% error) and reads "diverged".
    """
    depths = _depths(rows)
    c = checks(rows)
    if c is None:
        return "verdict: needs at least two depths with both a plain and a residual run"
    trend = " → ".join(_pct(_row(rows, "plain", d)) for d in depths)
    deep = count(depths[-1], layers_label)
    deepest = _deepest(rows, deep, c)
    n_div = sum(x.diverged for x in rows)
    tail = " " + _claim_two(rows, depths, c)
    tail += f" {n_div} run(s) diverged (counted as not trained)." if n_div else ""
    if not c.tested:
        span = f"from {depths[0]} to {deep}"
        return f"verdict: {ONE_SEED} (use --seeds 3); plain training error {trend} {span}; {deepest}.{tail}"
    tail += f" ('rises'/'falls'/'lower': {RULE}.)"
    rises = f"plain training error rises with depth ({trend})"
    if c.plain_rises and c.residual_below_plain and c.residual_fifth:
        return f"verdict: degradation reproduced: {rises}; {deepest}.{tail}"
    if c.plain_rises:
        failed = _must(_row(rows, "residual", depths[-1])).failed
        but = "the residual net diverged" if failed else "the residual gain is small"
        return f"verdict: {rises}, but {but}: {deepest}.{tail}"
    how = "does not rise at every step" if c.plain_trend == "above" else _TREND[c.plain_trend]
    return (
        f"verdict: no clear degradation at these settings: plain training error {trend} {how} with "
        f"depth; {deepest}. Try deeper nets or more --epochs.{tail}"
    )


def write_results(
    out: Path, records: Sequence[RunRecord], *, extra: dict[str, Any] | None = None
) -> dict[str, Path]:
    """``results.json`` (one entry per run, NaN as null, then ``extra``'s keys), ``results.csv`` (the runs'
    fields); their paths."""
    from reslab.engine.store.rundir import strict_json
    from reslab.files import write_atomic

    paths = {"results.json": out / "results.json", "results.csv": out / "results.csv"}
    entries = [r.to_dict() for r in records]
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(entries)
    # through the one writer: atomic, and never through a link onto a file of the user's
    write_atomic(
        paths["results.json"],
        strict_json({"runs": entries, "columns": COLUMNS, **(extra or {})}).encode(),
        "results",
    )
    write_atomic(paths["results.csv"], table.getvalue().encode(), "results")
    return paths
