"""``write_run_report(run_dir)``: one run's ``report.html``, built from its run directory alone.

It reads ``config.json`` (settings, data facts, versions), ``metrics.jsonl`` (every evaluation: the curves
and the table), ``summary.json`` (the final figures; absent while the run trains) or ``diverged.json``, and
``class_errors.json`` / ``confusion.png`` when ``reslab eval`` wrote them. Top-5 error is shown only for
more than 5 classes (below that it is 0 by construction). Two training errors are told apart by name: the
*running* training error of each evaluation interval (train mode, the batches as they were trained) and the
*final* training error (eval mode, the whole training split) of the summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reslab.errors import CheckpointError, ConfigError
from reslab.reports import page as P

REPORT = "report.html"
TOP5_ABOVE = 5  # classes: with 5 or fewer, top-5 error is 0 whatever the model does
COLLAPSE_ABOVE = 30  # evaluations: a longer table is folded (<details>), still all in the file


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/report.html`` (atomically) from the run's own files; returns its path.

    Works on a finished run, a diverged one and one still training (the figures so far).

    Raises:
        ConfigError: ``run_dir`` is not a reslab run directory (no readable config.json).
    """
    from reslab.engine.store.rundir import atomic_write_bytes

    run_dir = Path(run_dir).expanduser()
    text = run_report_html(run_dir)
    path = run_dir / REPORT
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def run_report_html(run_dir: Path) -> str:
    """The page of :func:`write_run_report`."""
    from reslab.engine.store.rundir import CONFIG, METRICS, read_jsonl
    from reslab.engine.store.runs import read_run_config

    if not (run_dir / CONFIG).is_file():
        raise ConfigError(f"{run_dir} has no {CONFIG}; pass a reslab run directory")
    try:
        meta = read_run_config(run_dir / CONFIG)
    except CheckpointError as err:
        raise ConfigError(str(err)) from None
    cfg, data = meta["config"], meta.get("data", {})
    history = read_jsonl(run_dir / METRICS) if (run_dir / METRICS).is_file() else []
    summary, diverged = _json(run_dir / "summary.json"), _json(run_dir / "diverged.json")
    top5 = len(data.get("classes", [])) > TOP5_ABOVE
    title = f"{cfg.get('model')} on {data.get('dataset', cfg.get('dataset'))}"
    sections = [
        P.verdict(_status(summary, diverged, history, top5)),
        _final(summary, meta, top5),
        _curves(run_dir.name, history),
        _classes(run_dir),
        _evaluations(history, top5),
        P.section("Data", P.key_values(_data_facts(data))),
        P.section("Settings (config.json)", P.key_values(cfg.items())),
        P.section("Versions", P.key_values((meta.get("versions") or {}).items())),
    ]
    return P.page(title, sections, subtitle=f"run {run_dir}")


def _json(path: Path) -> dict[str, Any] | None:
    from reslab.files import MAX_JSON_BYTES, read_text_bounded

    if not path.is_file():
        return None
    try:
        value = json.loads(read_text_bounded(path, MAX_JSON_BYTES, path.name, error=ConfigError))
    except (ConfigError, ValueError):
        return None  # a torn or foreign file: the report says what it can from the rest
    return value if isinstance(value, dict) else None


def _status(summary: Any, diverged: Any, history: list[dict[str, Any]], top5: bool) -> str:
    if summary is not None:
        text = (
            f"finished: final training error {P.pct(summary.get('final_train_error'))} (eval mode, whole "
            f"training split), test error {P.pct(summary.get('final_test_error'))}"
        )
        if top5:
            text += f", test top-5 error {P.pct(summary.get('final_test_top5_error'))}"
        return text
    last = history[-1] if history else {}
    if diverged is not None:
        return f"diverged at iteration {diverged.get('iteration', '?')}: the loss, a gradient or a weight " \
            "was not finite; the last good checkpoint was kept"  # fmt: skip
    if last:
        return f"in progress (or stopped): last evaluation at iteration {last['iteration']}, test error " \
            f"{P.pct(last.get('test_error'))}"  # fmt: skip
    return "no evaluation yet"


def _final(summary: Any, meta: dict[str, Any], top5: bool) -> str:
    if summary is None:
        return ""
    rows = [
        ("parameters", f"{meta.get('params', summary.get('params', 0)):,}"),
        ("iterations", f"{summary.get('iterations')} ({summary.get('epochs')} epochs)"),
        ("time", f"{summary.get('seconds')} s on {summary.get('device')}, {summary.get('precision')}"),
        ("final training error (eval mode, whole training split)", P.pct(summary.get("final_train_error"))),
        ("final training loss (eval mode, plain cross-entropy)", _num(summary.get("final_train_loss"))),
        ("final test error", P.pct(summary.get("final_test_error"))),
        ("final test loss", _num(summary.get("final_test_loss"))),
    ]
    if top5:
        rows.append(("final test top-5 error", P.pct(summary.get("final_test_top5_error"))))
    best = summary.get("best")
    if isinstance(best, dict):  # --keep-best
        rows.append((
            f"best weights ({best.get('file')}), on {best.get('val_images')} held-out training images",
            f"iteration {best.get('iteration')}, error {P.pct(best.get('val_error'))}",
        ))  # fmt: skip
    return P.section("Final figures (summary.json)", P.table(("figure", "value"), rows, text_columns=2))


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else "–"


def _curves(name: str, history: list[dict[str, Any]]) -> str:
    if not history:
        return ""
    from reslab.plots import run_curves_figure

    fig = run_curves_figure([(name, history)])
    return P.section("Curves", P.figure(fig, f"training and test error and loss of {name}"))


def _classes(run_dir: Path) -> str:
    report = _json(run_dir / "class_errors.json")
    if report is None or not isinstance(report.get("per_class"), list):
        return ""
    rows = [
        (r.get("class"), r.get("images"), P.pct(r.get("error")), r.get("most_confused_with") or "–")
        for r in report["per_class"]
        if isinstance(r, dict)
    ]
    head = ("class", "images", "error", "most confused with")
    return P.section(
        f"Per-class errors ({report.get('split', 'test')} split, from reslab eval)",
        P.png_file(run_dir / "confusion.png", "confusion matrix and per-class error"),
        P.table(head, rows, text_columns=1),
    )


def _evaluations(history: list[dict[str, Any]], top5: bool) -> str:
    if not history:
        return ""
    head = ["iteration", "epoch", "lr", "running training loss", "running training error (train mode)"]
    head += ["test loss", "test error"] + (["test top-5 error"] if top5 else []) + ["images/s", "seconds"]

    def num(v: Any, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    rows = []
    for h in history:
        row = [
            h["iteration"],
            num(h.get("epoch"), ".2f"),
            num(h.get("lr"), ".4g"),
            num(h.get("train_loss"), ".4f"),
        ]
        row += [P.pct(h.get("train_error")), num(h.get("test_loss"), ".4f"), P.pct(h.get("test_error"))]
        row += [P.pct(h.get("test_top5_error"))] if top5 else []
        rows.append([*row, num(h.get("images_per_s"), ".0f"), num(h.get("seconds"), ".1f")])
    body = P.table(head, rows, text_columns=0)
    if len(history) > COLLAPSE_ABOVE:
        body = f"<details><summary>all {len(history)} evaluations</summary>{body}</details>"
    return P.section("Evaluations (metrics.jsonl)", body)


def _data_facts(data: dict[str, Any]) -> list[tuple[str, Any]]:
    classes = list(data.get("classes", []))
    shown = ", ".join(map(str, classes[:20])) + (f", … ({len(classes)} in all)" if len(classes) > 20 else "")
    norm = data.get("normalization") or {}
    return [
        ("dataset", data.get("dataset")),
        ("classes", f"{len(classes)}: {shown}"),
        ("input shape (C, H, W)", data.get("input_shape")),
        ("augmentation", data.get("augment")),
        ("normalisation", norm.get("mode")),
        ("source", data.get("source")),
    ]
