"""The docs run as written: every Python snippet of the README (twice, in one interpreter) and the tutorial
notebook, top to bottom in a real Jupyter kernel (on tiny settings)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_snippets() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readme_has_python_snippets() -> None:
    assert len(readme_snippets()) >= 3


def test_readme_python_snippets_run_twice_in_one_interpreter(tmp_path: Path) -> None:
    # Twice: the first call of an API must not break the second (a module shadowing a function did).
    run_twice = "for _ in range(2):\n    exec(compile(snippet, {name!r}, 'exec'), {{}})"
    program = "\n".join(
        f"snippet = {code!r}\n" + run_twice.format(name=f"README snippet {i}")
        for i, code in enumerate(readme_snippets(), 1)
    )
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_tutorial_notebook_runs_top_to_bottom(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "docs" / "tutorial.ipynb", as_version=4)
    os.environ["RESLAB_TUTORIAL_FAST"] = "1"  # the kernel inherits it: tiny settings
    try:
        client = nbclient.NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        )
        client.execute()  # raises CellExecutionError, naming the cell, on any error
    finally:
        os.environ.pop("RESLAB_TUTORIAL_FAST", None)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any(
        "image/png" in o.get("data", {}) or "<img" in o.get("data", {}).get("text/html", "") for o in outputs
    )
    assert (tmp_path / "runs" / "tutorial" / "compare" / "error_vs_depth.png").is_file()
