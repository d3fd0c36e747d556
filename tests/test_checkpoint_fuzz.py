"""Fuzzing the checkpoint loaders: every malformed file ends in CheckpointError, nothing else.

A real checkpoint directory (safetensors weights, ``weights_only`` state, manifest) is damaged one file at a
time: random bytes, truncation, one-byte mutations, overwritten headers, trailing junk, and lying manifests.
Half of the damaged weights/state files get a manifest that matches them, so the parsers themselves (not
just the checksum) meet the malformed bytes. A mutation may leave a file valid; then the loader must return
a well-formed result.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import torch
from hypothesis import given
from hypothesis import strategies as st

from reslab.engine.store.checkpoint import (
    MANIFEST,
    STATE,
    load_checkpoint,
    save_checkpoint,
    weights_bytes,
)
from reslab.engine.store.rundir import WEIGHTS
from reslab.errors import CheckpointError
from reslab.models import build_model
from reslab.models.weights import read_state_dict

try:
    from tests.helpers import FUZZ
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    from helpers import FUZZ  # type: ignore[no-redef]


def _valid_checkpoint(root: Path) -> tuple[Path, bytes]:
    """A checkpoint as the engine writes it (resnet8 weights, SGD momentum, RNG, position), and a .pt."""
    torch.manual_seed(0)
    model = build_model("resnet8", num_classes=3, input_shape=(1, 8, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    state = {
        "format": 1, "iteration": 4, "epoch": 0, "batch_in_epoch": 4, "seconds": 1.5,
        "optimizer": opt.state_dict(), "scaler": {}, "rng": {"torch": torch.get_rng_state()},
        "interval": {"loss_sum": torch.tensor(1.0), "correct": torch.tensor(3), "images": 8, "steps": 4},
    }  # fmt: skip
    pt = io.BytesIO()
    torch.save({"state_dict": model.state_dict()}, pt)  # the torchvision-style wrapper load_weights unwraps
    return save_checkpoint(root, 4, weights_bytes(model), state), pt.getvalue()


_tmp = Path(tempfile.mkdtemp(prefix="reslab-ckpt-fuzz-"))
_CKPT, VALID_PT = _valid_checkpoint(_tmp)
VALID = {name: (_CKPT / name).read_bytes() for name in (WEIGHTS, STATE, MANIFEST)}
shutil.rmtree(_tmp, ignore_errors=True)


def malformed(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, truncations, one-byte mutations, overwritten header bytes and trailing junk."""
    n = len(valid)
    return st.one_of(
        st.binary(max_size=2048),
        st.integers(0, n - 1).map(lambda k: valid[:k]),
        st.tuples(st.integers(0, n - 1), st.integers(0, 255)).map(
            lambda t: valid[: t[0]] + bytes([t[1]]) + valid[t[0] + 1 :]
        ),
        st.tuples(st.integers(0, min(n - 1, 400)), st.binary(min_size=1, max_size=8)).map(
            lambda t: valid[: t[0]] + t[1] + valid[t[0] + len(t[1]) :]
        ),
        st.binary(min_size=1, max_size=64).map(lambda b: valid + b),
    )


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(), st.text(max_size=8)),
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.dictionaries(st.sampled_from(["files", "bytes", "sha256", WEIGHTS, STATE, "iteration"]), kids),
    ),
    max_leaves=10,
)
_lying_manifest = st.one_of(
    malformed(VALID[MANIFEST]),
    _json.map(lambda obj: json.dumps(obj).encode()),
    _json.map(lambda obj: json.dumps({"iteration": 4, "files": obj}).encode()),
)


def _manifest_for(weights: bytes, state: bytes) -> bytes:
    entry = {
        n: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()}
        for n, d in ((WEIGHTS, weights), (STATE, state))
    }
    return json.dumps({"iteration": 4, "files": entry}).encode()


def _check_one_line(err: CheckpointError, *names: str) -> None:
    msg = str(err)
    assert msg and "\n" not in msg and any(n in msg for n in names), msg  # names the file it refuses


@FUZZ
@given(
    target=st.sampled_from([WEIGHTS, STATE]),
    data=st.data(),
    matching_manifest=st.booleans(),
)
def test_fuzz_checkpoint_files(
    tmp_path: Path, target: str, data: st.DataObject, matching_manifest: bool
) -> None:
    files = dict(VALID)
    files[target] = data.draw(malformed(VALID[target]))
    if matching_manifest:
        files[MANIFEST] = _manifest_for(files[WEIGHTS], files[STATE])
    ckpt = tmp_path / "ckpt-00000004"
    shutil.rmtree(ckpt, ignore_errors=True)
    ckpt.mkdir()
    for name, raw in files.items():
        (ckpt / name).write_bytes(raw)
    try:
        weights, state = load_checkpoint(ckpt)
    except CheckpointError as err:
        _check_one_line(err, str(ckpt))
        return
    assert all(isinstance(v, torch.Tensor) for v in weights.values()) and isinstance(state, dict)


@FUZZ
@given(raw=_lying_manifest)
def test_fuzz_checkpoint_manifest(tmp_path: Path, raw: bytes) -> None:
    ckpt = tmp_path / "ckpt-00000004"
    ckpt.mkdir(exist_ok=True)
    for name in (WEIGHTS, STATE):
        (ckpt / name).write_bytes(VALID[name])
    (ckpt / MANIFEST).write_bytes(raw)
    try:
        load_checkpoint(ckpt)
    except CheckpointError as err:
        _check_one_line(err, str(ckpt))


@FUZZ
@given(
    suffix=st.sampled_from([".safetensors", ".pt", ".pth"]),
    data=st.data(),
)
def test_fuzz_weights_file(tmp_path: Path, suffix: str, data: st.DataObject) -> None:
    valid = VALID[WEIGHTS] if suffix == ".safetensors" else VALID_PT
    path = tmp_path / f"model{suffix}"
    path.write_bytes(data.draw(malformed(valid)))
    try:
        state, _, _ = read_state_dict(path)
    except CheckpointError as err:
        _check_one_line(err, str(path))
        return
    assert all(isinstance(v, torch.Tensor) for v in state.values())
