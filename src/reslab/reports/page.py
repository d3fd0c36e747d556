"""A static, self-contained HTML page: inline CSS, figures as base64 PNG, no script and no external resource,
so ``report.html`` opens from disk in any browser, offline, with no server.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1180px;
       padding: 0 1.5em; color: #1f2328; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
.meta { color: #59636e; }
.verdict { background: #f1f8ff; border-left: 4px solid #1b6ac9; padding: 0.6em 1em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 13px; }
th, td { border: 1px solid #d1d9e0; padding: 0.25em 0.6em; text-align: right; vertical-align: top; }
th { background: #f6f8fa; } td.text, th.text { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
code { background: #f6f8fa; padding: 0.1em 0.3em; border-radius: 3px; }
details summary { cursor: pointer; color: #1b6ac9; }
"""


class Raw(str):
    """Markup built here (a link), put into a table cell as is."""


def esc(value: Any) -> str:
    return value if isinstance(value, Raw) else html.escape(str(value))


def link(href: str, text: str) -> Raw:
    """A relative link to a file beside the report (a run's own report)."""
    return Raw(f'<a href="{html.escape(href, quote=True)}">{html.escape(text)}</a>')


def page(title: str, sections: Iterable[str], *, subtitle: str = "") -> str:
    """The whole document: the title, a line of provenance, then the sections in order."""
    from reslab.version import __version__

    when = time.strftime("%Y-%m-%d %H:%M:%S")
    meta = f"{esc(subtitle)}{' · ' if subtitle else ''}written by reslab {esc(__version__)} on {when}"
    head = f'<meta charset="utf-8"><title>{esc(title)}</title><style>{CSS}</style>'
    body = f'<h1>{esc(title)}</h1><p class="meta">{meta}</p>' + "\n".join(sections)
    return f'<!DOCTYPE html>\n<html lang="en"><head>{head}</head>\n<body>\n{body}\n</body></html>\n'


def section(heading: str, *parts: str) -> str:
    return f"<h2>{esc(heading)}</h2>\n" + "\n".join(p for p in parts if p)


def verdict(text: str) -> str:
    return f'<p class="verdict"><b>{esc(text)}</b></p>' if text else ""


def png(data: bytes, alt: str) -> str:
    """An ``<img>`` whose source is the PNG itself (base64): the page needs no other file."""
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{encoded}"/>'


def figure(fig: Any, alt: str) -> str:
    from reslab.plots import png_bytes

    return png(png_bytes(fig), alt)


def png_file(path: Path, alt: str) -> str:
    """A PNG written beside the report (a figure drawn by another command), embedded; "" if missing."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return png(data, alt) if data[:8] == b"\x89PNG\r\n\x1a\n" else ""


def table(head: Sequence[str], rows: Iterable[Sequence[Any]], *, text_columns: int = 1) -> str:
    """A table; the first ``text_columns`` columns left-aligned (names), the rest right-aligned (numbers)."""

    def cells(tag: str, values: Sequence[Any]) -> str:
        return "".join(
            f"<{tag}{' class=text' if k < text_columns else ''}>{esc(v)}</{tag}>"
            for k, v in enumerate(values)
        )

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><thead><tr>{cells('th', head)}</tr></thead><tbody>{body}</tbody></table>"


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of settings or facts."""
    return table(("setting", "value"), ((k, _show(v)) for k, v in pairs), text_columns=2)


def markdown_table(text: str) -> str:
    """A Markdown pipe table (as in results.md) as an HTML table; the lines after it become paragraphs."""
    rows, notes = [], []
    for line in text.strip().splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif line.strip() and not line.startswith("|"):
            notes.append(f"<p>{esc(line)}</p>")
    if not rows:
        return "".join(notes)
    return table(rows[0], rows[1:]) + "".join(notes)


def _show(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "–"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "–"
    return str(value)


def pct(value: Any) -> str:
    """A fraction as a percentage with two decimals; "–" for a missing or non-finite figure."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{100 * v:.2f}%" if v == v and abs(v) != float("inf") else "–"
