"""Safety on the training side: no code from checkpoints, non-finite gradients, out of memory, activation
checkpointing's memory, and environment faults (full disk, read-only output) that keep the last checkpoint."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from reslab.cli import main
from reslab.engine import load_run, train
from reslab.engine.devices.memory import estimate_training_memory, saved_tensor_bytes
from reslab.engine.store.checkpoint import list_checkpoints, load_checkpoint
from reslab.errors import CheckpointError, TrainingError
from reslab.models import build_model
from reslab.models.weights import read_state_dict

try:
    from tests.helpers import tiny
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    from helpers import tiny  # type: ignore[no-redef]

TINY = [
    "--model", "resnet8", "--dataset", "synthetic:1x12x12", "--iterations", "12", "--batch-size", "64",
    "--eval-every", "4", "--warmup-epochs", "0.5", "--precision", "fp32", "--device", "cpu",
    "--progress", "off", "--num-threads", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run that every resumed run must match bit for bit."""
    out = tmp_path_factory.mktemp("straight") / "run"
    train(tiny(out))
    return out


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("reslab") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---- no code from checkpoints ----------------------------------------------------------------------


class _Evil:
    """Pickles as ``os.system("touch <marker>")``: what a malicious .pt file does on plain torch.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_weights_file_with_a_pickled_callable_is_refused(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / f"model{suffix}"
    torch.save({"fc.weight": torch.zeros(2, 2), "extra": _Evil(marker)}, evil)
    with pytest.raises(CheckpointError, match=rf"model\{suffix} .*weights_only"):
        read_state_dict(evil)
    assert not marker.exists()  # refused before anything ran


def test_load_run_refuses_a_pickled_callable_next_to_a_run_config(tmp_path: Path, straight: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "config.json").write_bytes((straight / "config.json").read_bytes())
    torch.save({"state_dict": {"fc.weight": torch.zeros(10, 64)}, "hook": _Evil(marker)}, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"m\.pt"):
        load_run(tmp_path / "m.pt")
    assert not marker.exists()


def test_checkpoint_state_with_a_pickled_callable_is_refused_and_resume_falls_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A checkpoint whose manifest is consistent (so only weights_only stands between the file and a shell).
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    train(tiny(run, iterations=8))
    newest = list_checkpoints(run)[0]
    payload = torch.load(newest / "state.pt", weights_only=True)
    payload["rng"]["evil"] = _Evil(marker)
    torch.save(payload, newest / "state.pt")
    manifest = json.loads((newest / "manifest.json").read_text())
    data = (newest / "state.pt").read_bytes()
    manifest["files"]["state.pt"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (newest / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"ckpt-00000008/state\.pt .*weights_only"):
        load_checkpoint(newest)
    result = train(replace(tiny(run, iterations=8), resume=str(run), out=None))
    assert "ckpt-00000008" in capsys.readouterr().err  # warned, then used ckpt-00000004
    assert result.iterations == 8 and not marker.exists()


# ---- numerical failure -----------------------------------------------------------------------------


class _PoisonGrad(torch.autograd.Function):
    """Identity forward, inf/NaN backward: a finite loss whose gradients are not finite."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf")


def _loss_with(monkeypatch: pytest.MonkeyPatch, at_step: int, fault: object) -> None:
    """From step ``at_step`` on, the engine's cross-entropy applies ``fault`` (the step loop only)."""
    import reslab.engine.step as engine

    calls = [0]

    def cross_entropy(logits: torch.Tensor, y: torch.Tensor, **kw: object) -> torch.Tensor:
        calls[0] += 1
        if calls[0] >= at_step:
            if isinstance(fault, BaseException):
                raise fault
            logits = _PoisonGrad.apply(logits)
        return F.cross_entropy(logits, y, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "F", types.SimpleNamespace(cross_entropy=cross_entropy))


def test_nan_gradients_with_a_finite_loss_stop_at_that_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Step 6 is an evaluation point: without the gradient check its NaN weights would be checkpointed
    # and the loss would only turn NaN at step 7.
    _loss_with(monkeypatch, 6, "poison")
    with pytest.raises(
        TrainingError, match=r"gradients or weights became NaN/inf at iteration 6; try a lower --lr"
    ):
        train(tiny(tmp_path, eval_every=2))
    ckpts = list_checkpoints(tmp_path)
    assert [p.name for p in ckpts] == ["ckpt-00000004", "ckpt-00000002"]
    weights, _ = load_checkpoint(ckpts[0])
    assert all(torch.isfinite(t.float()).all() for t in weights.values())
    top = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.isfinite(t.float()).all() for t in top.values())


def test_grad_clip_flag_bounds_the_gradient_norm_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = torch.nn.utils.clip_grad_norm_
    seen: list[float] = []

    def spy(params, max_norm, *args, **kwargs):  # type: ignore[no-untyped-def]
        params = list(params)
        out = real(params, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        seen.append(float(after))
        assert float(after) <= max_norm * 1.0001
        return out

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    assert (
        main(["train", *TINY, "--iterations", "4", "--grad-clip", "0.25", "--out", str(tmp_path / "r")]) == 0
    )
    assert len(seen) == 4 and max(seen) == pytest.approx(0.25, rel=1e-3)  # every step, and it did clip
    assert json.loads((tmp_path / "r" / "config.json").read_text())["config"]["grad_clip"] == 0.25


# ---- resources -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes."),
        MemoryError(),
    ],
    ids=["cuda", "cpu-allocator", "python"],
)
def test_out_of_memory_is_one_line_with_the_fixes_and_keeps_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fault: BaseException
) -> None:
    _loss_with(monkeypatch, 7, fault)
    assert main(["train", *TINY, "--out", str(tmp_path / "r")]) == 3
    err = one_line(capsys)
    assert "out of memory" in err and "smaller --batch-size" in err and "--activation-checkpointing" in err
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["ckpt-00000004"]


def test_a_run_that_cannot_fit_is_refused_before_the_first_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import reslab.engine.net as engine

    monkeypatch.setattr(engine, "available_memory", lambda device: 2**20)  # 1 MiB free
    assert main(["train", *TINY, "--out", str(tmp_path / "r")]) == 2
    err = one_line(capsys)
    assert "GiB is free on cpu" in err and "--activation-checkpointing" in err
    assert not (tmp_path / "r" / "checkpoints").exists()  # refused before any step
    # The same run with a little more room than needed: a warning, and it trains.
    need = estimate_training_memory(
        lambda: build_model("resnet8", num_classes=10, input_shape=(1, 12, 12)), (1, 12, 12), 64
    )
    assert need is not None
    monkeypatch.setattr(engine, "available_memory", lambda device: int(need.total * 1.1))
    assert main(["train", *TINY, "--iterations", "4", "--out", str(tmp_path / "w")]) == 0
    assert "may run out of memory" in capsys.readouterr().err
    saved = json.loads((tmp_path / "w" / "config.json").read_text())["runtime"]["estimated_memory_bytes"]
    assert saved == need.total


@pytest.mark.parametrize("ckpt", [False, True])
def test_the_meta_estimate_is_the_real_saved_tensor_count(ckpt: bool) -> None:
    def build() -> torch.nn.Module:
        return build_model("resnet20", activation_checkpointing=ckpt)

    real = saved_tensor_bytes(build(), torch.randn(8, 3, 16, 16))
    est = estimate_training_memory(build, (3, 16, 16), 8)
    assert est is not None and est.activations == real
    params = sum(p.numel() for p in build().parameters())
    assert est.optimizer == 2 * 4 * params  # fp32 gradients + momentum
    bigger = estimate_training_memory(build, (3, 16, 16), 32)
    assert bigger is not None and bigger.activations == pytest.approx(4 * real, rel=0.01)  # linear in batch


def test_activation_checkpointing_cuts_memory_and_keeps_gradients() -> None:
    torch.manual_seed(0)
    base = build_model("resnet56")
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    twin = build_model("resnet56", activation_checkpointing=True)
    twin.load_state_dict(base.state_dict())
    full, cut = saved_tensor_bytes(base, x), saved_tensor_bytes(twin, x)
    assert cut < 0.35 * full, (cut, full)  # measured: 0.27 (one saved input per block instead of ~6 tensors)
    for model in (base, twin):
        F.cross_entropy(model(x), y).backward()
    for (name, a), b in zip(base.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)
    for (name, a), b in zip(base.named_buffers(), twin.buffers()):
        torch.testing.assert_close(a, b, msg=name)


def test_activation_checkpointing_flag_reaches_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, straight: Path
) -> None:
    built: list[bool] = []
    real = build_model

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        model = real(*args, **kwargs)
        built.append(model.activation_checkpointing)
        return model

    monkeypatch.setattr("reslab.models.build_model", spy)  # train() imports it from there at call time
    assert main(["train", *TINY, "--activation-checkpointing", "--out", str(tmp_path / "r")]) == 0
    assert built and all(built)
    assert_same_weights(straight, tmp_path / "r")  # recomputation changes memory, never the result


# ---- environment faults ----------------------------------------------------------------------------


def test_read_only_out_dir_exits_2_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import reslab.engine.store.rundir as rundir

    out = tmp_path / "ro"
    out.mkdir()

    # root ignores chmod, so the read-only file system is simulated where reslab probes it
    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(rundir.tempfile, "mkstemp", read_only)
    assert main(["train", *TINY, "--out", str(out)]) == 2
    assert "Read-only file system" in one_line(capsys)
    assert list(out.iterdir()) == []


def test_too_little_disk_exits_2_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import reslab.engine.store.rundir as rundir

    usage = types.SimpleNamespace(total=10**9, used=10**9, free=4096)
    monkeypatch.setattr(rundir.shutil, "disk_usage", lambda path: usage)
    assert main(["train", *TINY, "--out", str(tmp_path / "r")]) == 2
    assert "free some disk space" in one_line(capsys)
    assert not (tmp_path / "r" / "checkpoints").exists() and not (tmp_path / "r" / "metrics.jsonl").exists()


def _fail_writes_after_first_checkpoint(monkeypatch: pytest.MonkeyPatch, where: str, code: int) -> None:
    """Once the first checkpoint is complete, the disk is full (or read-only) for ``where``."""
    import reslab.engine.store.checkpoint as checkpoint

    armed = [False]
    real_fsync, real_write = os.fsync, checkpoint.atomic_write_bytes

    def ckpt_write(path: Path, data: bytes) -> None:
        if armed[0] and where == "checkpoint" and path.name == "state.pt":
            raise OSError(code, os.strerror(code))  # after this checkpoint's weights: a half-written one
        real_write(path, data)
        if path.name == "model.safetensors" and path.parent.name == "run":  # a checkpoint's last write
            armed[0] = True

    def fsync(fd: int) -> None:  # every durable write ends in fsync: the metrics line is the next one
        if armed[0] and where == "metrics":
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", ckpt_write)
    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize(
    ("where", "code", "needle"),
    [
        ("checkpoint", errno.ENOSPC, "No space left on device; free some disk space"),
        ("metrics", errno.ENOSPC, "No space left on device; free some disk space"),
        ("metrics", errno.EROFS, "Read-only file system; make it writable"),
    ],
)
def test_disk_fault_mid_run_exits_2_keeps_the_checkpoint_and_resume_is_exact(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    straight: Path,
    where: str,
    code: int,
    needle: str,
) -> None:
    run = tmp_path / "run"
    _fail_writes_after_first_checkpoint(monkeypatch, where, code)
    assert main(["train", *TINY, "--out", str(run)]) == 2
    assert needle in one_line(capsys)
    assert [p.name for p in list_checkpoints(run)] == ["ckpt-00000004"]
    assert load_checkpoint(run / "checkpoints" / "ckpt-00000004")[1]["iteration"] == 4  # whole and readable
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no half copy left
    monkeypatch.undo()  # the disk has room again
    assert main(["train", "--resume", str(run)]) == 0
    assert_same_weights(straight, run)
