"""The calibration table of the full-width recipes: every candidate's runs, read back from their summaries.

    python benchmarks/calibration/recipes_table.py runs/calib23

Each sub-folder of the given folder is one candidate (``A-base-e5``, ``E-clip1-e5-s12``, ...; folders whose
names differ only by a ``-s12`` / ``-d1202`` suffix are the same candidate, more seeds or depths). Prints one
Markdown row per candidate and depth: plain and residual final training error (eval mode, whole training
split; mean ± std over the seeds there are, and the seeds' values), test error, the run time, and where a
run diverged, its iteration.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def candidate(folder: str) -> str:
    return re.sub(r"-(s\d+|d\d+)$", "", re.sub(r"-(s\d+|d\d+)$", "", folder))


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/calib23")
    table: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    for run in sorted(root.glob("*/*-s*")):
        m = re.fullmatch(r"(plain|resnet)(\d+)-s(\d+)", run.name)
        if not m:
            continue
        kind, depth, seed = m[1], int(m[2]), int(m[3])
        summary, diverged = run / "summary.json", run / "diverged.json"
        if summary.exists():
            r = json.loads(summary.read_text())
            rec = {"seed": seed, "train": 100 * r["final_train_error"], "test": 100 * r["final_test_error"]}
            rec["seconds"] = r["seconds"]
        elif diverged.exists():
            rec = {"seed": seed, "diverged": json.loads(diverged.read_text())["iteration"]}
        else:
            continue  # still training
        table[candidate(run.parent.name), depth, kind].append(rec)

    def cell(recs: list[dict]) -> str:
        if not recs:
            return "–"
        if any("diverged" in r for r in recs):
            return "diverged at it. " + ", ".join(str(r["diverged"]) for r in recs if "diverged" in r)
        tr = [r["train"] for r in sorted(recs, key=lambda r: r["seed"])]
        if len(tr) == 1:
            return f"{tr[0]:.2f}"
        seeds = " / ".join(f"{t:.2f}" for t in tr)
        return f"{statistics.mean(tr):.2f} ± {statistics.stdev(tr):.2f} ({seeds})"

    def test(recs: list[dict]) -> str:
        te = [r["test"] for r in recs if "test" in r]
        return f"{statistics.mean(te):.2f}" if te else "–"

    def secs(recs: list[dict]) -> str:
        s = [r["seconds"] for r in recs if "seconds" in r]
        return f"{statistics.mean(s):.0f}" if s else "–"

    print(
        "| candidate | layers | plain train err (%) | residual train err (%) | test err p / r (%) | s per run p / r |"
    )
    print("|:---|---:|---:|---:|---:|---:|")
    for name in sorted({k[0] for k in table}):
        for depth in sorted({k[1] for k in table if k[0] == name}):
            p, r = table[name, depth, "plain"], table[name, depth, "resnet"]
            print(
                f"| {name} | {depth} | {cell(p)} | {cell(r)} | {test(p)} / {test(r)} | {secs(p)} / {secs(r)} |"
            )


if __name__ == "__main__":
    main()
