"""The shape of the code: imports run one way, no function is too long to read, no name is reused."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "reslab"
# Lower layers never import higher ones: models/data -> engine -> experiments/analysis -> cli.
LAYER = {
    "errors": 0,
    "files": 0,
    "settings": 0,
    "version": 0,
    "resources": 0,
    "evidence": 0,
    "models": 1,
    "data": 1,
    "engine": 2,
    "plots": 2,
}
LAYER.update({"confusion": 2, "reports": 2, "experiments": 3, "analysis": 3, "cli": 4, "__main__": 5})
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _layer(path: Path) -> int:
    rel = path.relative_to(SRC).parts
    return LAYER[Path(rel[0]).stem] if rel[0] != "__init__.py" else 5


def _imports(path: Path) -> list[str]:
    """The reslab modules ``path`` imports at run time (``if TYPE_CHECKING:`` blocks are for readers)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return [n for n in names if n == "reslab" or n.startswith("reslab.")]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_run_one_way(path: Path) -> None:
    mine = _layer(path)
    for name in _imports(path):
        assert name != "reslab", f"{path.name} imports the package root; import the module that defines it"
        top = name.split(".")[1]
        assert LAYER[top] <= mine or top == path.relative_to(SRC).parts[0], f"{path} imports {name}"


def test_no_function_is_longer_than_a_screen() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


def test_no_comment_points_to_an_issue_number() -> None:
    # A reader has the code, not the issue tracker: a comment says the reason, not where it was asked for.
    for path in [
        *_modules(),
        *(SRC.parents[1] / "tests").glob("*.py"),
        *(SRC.parents[1] / "benchmarks").glob("*.py"),
    ]:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            assert "issue " not in line.lower() or not any(
                ch.isdigit() for ch in line.lower().split("issue ", 1)[1][:3]
            ), f"{path.name}:{i}: {line.strip()}"
