"""What several test files import: the tiny training config, the CLI's exit code, the fuzzing settings."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

from reslab.engine import TrainConfig

# At least 200 generated inputs per fuzz test, reproducible on every run and machine.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same inputs on every run and every machine
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def tiny(out: Path, **overrides: object) -> TrainConfig:
    """resnet8 on 512 synthetic 1x12x12 images: 8 steps per epoch of 64, 12 steps, a checkpoint every 4."""
    base: dict = dict(
        model="resnet8", dataset="synthetic:1x12x12", iterations=12, epochs=None, batch_size=64,
        eval_every=4, warmup_epochs=0.5, precision="fp32", device="cpu", progress="off", num_threads=1,
        out=str(out),
    )  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)


def exit_code(argv: list[str]) -> int:
    """``reslab ARGV``'s exit code: main()'s return value, or argparse's SystemExit for a flag it rejects."""
    from reslab.cli import main

    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def one_line_error(capsys: Any) -> str:
    """The error the last command printed, checked to be exactly one line starting with ``reslab``."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("reslab") and len(err.splitlines()) == 1, err
    return err


PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """What a report holds: its tables (rows of cell texts), image sources, links, the verdict's text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.verdict = ""
        self._cell: list[str] | None = None
        self._in_verdict = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a.get("src") or "")
        elif tag == "a":
            self.links.append(a.get("href") or "")
        elif tag == "p" and a.get("class") == "verdict":
            self._in_verdict = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "p":
            self._in_verdict = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_verdict:
            self.verdict += data


def read_report(path: Path) -> Page:
    """A report.html, checked to be self-contained: no script, no external resource, every image a PNG."""
    page = Page(path.read_text(encoding="utf-8"))
    assert "script" not in page.tags and "link" not in page.tags  # nothing runs, nothing is fetched
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG
    assert all(not href.startswith(("http:", "https:", "//")) for href in page.links)
    return page
