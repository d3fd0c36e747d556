"""How results show in Jupyter: small HTML pages with the table and the figures inline.

Each result class's ``_repr_html_`` calls one function here, so a notebook cell that ends with
``reslab.compare(...)`` shows the table, the verdict and both figures without any further code.
"""

from __future__ import annotations

import base64
import html
from typing import Any


def _img(fig: Any) -> str:
    from reslab.plots import png_bytes

    data = base64.b64encode(png_bytes(fig)).decode("ascii")
    return f'<img style="max-width:100%" src="data:image/png;base64,{data}"/>'


def _markdown_table(text: str) -> str:
    """A Markdown pipe table (as in results.md) as an HTML table; other lines become paragraphs."""
    rows, notes = [], []
    for line in text.strip().splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([html.escape(c.strip()) for c in line.strip("|").split("|")])
        elif line.strip() and not line.startswith("|"):
            notes.append(f"<p>{html.escape(line)}</p>")
    if not rows:
        return "".join(notes)
    head = "".join(f"<th>{c}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" + "".join(notes)


def compare_html(result: Any) -> str:
    """The depth sweep: title, table, verdict, the two figures, where the files are."""
    cfg = result.config
    return _sweep_html(result, f"Plain vs residual: {cfg.family} nets on {cfg.dataset}")


def ablate_html(result: Any) -> str:
    """The ablation sweep: title, table (with the paper's figures), verdict, the two figures, the files."""
    cfg = result.config
    return _sweep_html(
        result, f"Shortcut and activation ablations (He et al. 2016): {cfg.model} on {cfg.dataset}"
    )


def _sweep_html(result: Any, title: str) -> str:
    parts = [
        f"<h4>{html.escape(title)}</h4>",
        _markdown_table(result.table),
        f"<p><b>{html.escape(result.verdict)}</b></p>",
        *(_img(fig) for fig in result.figures.values()),
        f"<p>outputs in <code>{html.escape(str(result.out))}</code></p>",
    ]
    return "\n".join(parts)


def study_html(result: Any) -> str:
    """A why-tool: its table as preformatted text, its verdict and its figure."""
    parts = [f"<pre>{html.escape(result.table)}</pre>"]
    if result.verdict:
        parts.append(f"<p><b>{html.escape(result.verdict)}</b></p>")
    parts += [_img(fig) for fig in result.figures.values()]
    parts.append(f"<p>outputs in <code>{html.escape(str(result.out))}</code></p>")
    return "\n".join(parts)


def run_html(result: Any) -> str:
    """One training run: its final figures as a small table."""
    rows = [
        ("model", f"{result.model} ({result.params:,} parameters)"),
        ("dataset", result.dataset),
        ("iterations", f"{result.iterations} ({result.epochs:g} epochs) in {result.seconds:.1f} s"),
        ("final training error", f"{result.final_train_error:.2%} (loss {result.final_train_loss:.4f})"),
        (
            "final test error",
            f"{result.final_test_error:.2%} (loss {result.final_test_loss:.4f})"
            if result.measured_test
            else "not measured: no test images",
        ),
        ("run directory", str(result.run_dir)),
    ]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"
