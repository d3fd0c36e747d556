"""Fuzzing the run files reslab reads back: config.json, metrics.jsonl and summary.json.

A tampered or corrupted file is either read as valid, or refused with a one-line :class:`CheckpointError`
naming the file; metrics lines that fail are dropped. Nothing else (TypeError, KeyError, UnicodeDecodeError,
a hang) may come out of the readers, whatever the bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reslab.engine.store.rundir import CONFIG, METRICS, SUMMARY, read_jsonl
from reslab.engine.store.runs import read_run_config, read_run_result
from reslab.errors import CheckpointError

try:
    from tests.helpers import FUZZ
except ImportError:  # run from tests/ itself
    from helpers import FUZZ  # type: ignore[no-redef]

# Any JSON value: what a careless edit or a tampering tool may put in place of a setting.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested dict (the places a tamperer may change)."""
    if not isinstance(obj, dict):
        return [prefix]
    out = [prefix] if prefix else []
    for k, v in obj.items():
        out += _paths(v, (*prefix, k))
    return out


def _replace(obj: dict, path: tuple, value: Any) -> dict:
    copy = json.loads(json.dumps(obj))
    node = copy
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return copy


def _write(run: Path, tmp: Path, name: str, data: bytes) -> Path:
    target = tmp / "run"
    target.mkdir(exist_ok=True)
    for f in (CONFIG, SUMMARY, METRICS):
        (target / f).write_bytes((run / f).read_bytes())
    (target / name).write_bytes(data)
    return target


def _read_config(run: Path) -> object:
    return read_run_config(run / CONFIG)


@pytest.mark.parametrize(("name", "read"), [(CONFIG, _read_config), (SUMMARY, read_run_result)])
@FUZZ
@given(data=st.data())
def test_fuzz_json_values(tiny_run: Path, tmp_path: Path, name: str, read: Any, data: st.DataObject) -> None:
    """Any JSON value in place of any key of config.json or summary.json: read, or one line naming it."""
    original = json.loads((tiny_run / name).read_text())
    path = data.draw(st.sampled_from(_paths(original)))
    tampered = _replace(original, path, data.draw(JSON_VALUES))
    target = _write(tiny_run, tmp_path, name, json.dumps(tampered).encode())
    try:
        read(target)
    except CheckpointError as err:
        assert "\n" not in str(err) and name in str(err)  # one line, naming the file


@FUZZ
@given(raw=st.binary(max_size=400), keep=st.integers(0, 2000))
def test_fuzz_config_json_bytes(tiny_run: Path, tmp_path: Path, raw: bytes, keep: int) -> None:
    original = (tiny_run / CONFIG).read_bytes()
    target = _write(tiny_run, tmp_path, CONFIG, original[:keep] + raw)
    try:
        read_run_config(target / CONFIG)
    except CheckpointError as err:
        assert "\n" not in str(err) and CONFIG in str(err)


@FUZZ
@given(lines=st.lists(st.binary(max_size=60) | JSON_VALUES.map(lambda v: json.dumps(v).encode()), max_size=6))
def test_fuzz_metrics_jsonl(tiny_run: Path, tmp_path: Path, lines: list[bytes]) -> None:
    original = (tiny_run / METRICS).read_bytes()
    target = _write(tiny_run, tmp_path, METRICS, original + b"\n".join(lines) + b"\n")
    warnings: list[str] = []
    records = read_jsonl(target / METRICS, warn=warnings.append)
    good = read_jsonl(tiny_run / METRICS)
    assert records[: len(good)] == good  # the valid lines are all kept
    for rec in records:
        assert isinstance(rec["iteration"], int) and rec["iteration"] >= 0
    assert len(warnings) <= 1  # one warning for the file, not one per line
    read_run_result(target)  # the summary still reads, whatever the metrics hold
