"""Memory is checked before the data builders allocate, and the host-memory
figure they compare against (``reslab.resources``) is read correctly, container limits included."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from reslab import resources
from reslab.data import load_dataset
from reslab.errors import ConfigError

try:
    from tests.test_data_builders import make_folder
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    from test_data_builders import make_folder  # type: ignore[no-redef]

GiB = 1 << 30


def test_huge_synthetic_is_refused_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    # the example: 640 images of 3x2000x2000 (7.2 GiB of uint8, and 22.9 GiB of float32 before)
    monkeypatch.setattr(resources, "available_host_memory", lambda: 6 * GiB)
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as err:
            load_dataset("synthetic:3x2000x2000")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    msg = str(err.value)
    assert msg.startswith("synthetic:3x2000x2000 (640 images) needs ~7.78 GiB") and "\n" not in msg
    assert "only 6.00 GiB is free; use a smaller shape" in msg
    assert peak < 64 << 20  # refused from the estimate: nothing of that size was allocated


def test_absurd_synthetic_is_refused_on_this_machine() -> None:
    if resources.available_host_memory() is None:
        pytest.skip("no way to know the free memory here")
    with pytest.raises(ConfigError, match=r"synthetic:3x60000x60000 .* needs ~\d+\.\d\d GiB"):
        load_dataset("synthetic:3x60000x60000")


def test_synthetic_that_fits_is_built_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "available_host_memory", lambda: 64 << 20)
    ds = load_dataset("synthetic:3x16x16")
    assert ds.train_x.shape == (512, 3, 16, 16) and ds.test_x.shape == (128, 3, 16, 16)


def test_synthetic_estimate_covers_the_real_peak() -> None:
    from reslab.data.synthetic import make_synthetic, synthetic_bytes

    tracemalloc.start()
    try:
        make_synthetic(shape=(3, 64, 64), n_train=256, n_test=64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    est = synthetic_bytes(10, (3, 64, 64), 256, 64)
    assert peak <= est * 1.1 and est < 4 * peak  # an honest estimate: not under, not wildly over


def test_folder_too_large_to_decode_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reslab.data import folder

    make_folder(tmp_path, {"a": 3, "b": 3}, size=(64, 48))
    monkeypatch.setattr(resources, "available_host_memory", lambda: 64 << 10)  # 64 KiB free

    def must_not_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded an image before checking memory")

    monkeypatch.setattr(folder, "read_image", must_not_decode)
    with pytest.raises(ConfigError) as err:
        load_dataset(f"folder:{tmp_path}")
    msg = str(err.value)
    assert f"folder:{tmp_path} (6 images of 3x48x64) needs ~" in msg and "use fewer or smaller images" in msg


# ---------------------------------------------------------------------------------------------- resources


def _fake_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, meminfo_kb: int, cgroup: str) -> Path:
    proc, sys_cg = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(f"MemTotal: 99999999 kB\nMemAvailable: {meminfo_kb} kB\n")
    (proc / "self" / "cgroup").write_text(cgroup)
    monkeypatch.setattr(resources, "_PROC", proc)
    monkeypatch.setattr(resources, "_CGROUP", sys_cg)
    return sys_cg


def test_cgroup_v2_limit_lowers_the_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cg = _fake_system(tmp_path, monkeypatch, 20 * 1024 * 1024, "0::/box\n") / "box"
    cg.mkdir(parents=True)
    (cg / "memory.max").write_text(f"{2 * GiB}\n")
    (cg / "memory.current").write_text(f"{GiB}\n")
    (cg / "memory.stat").write_text(f"anon 1\ninactive_file {GiB // 4}\n")
    assert resources.available_host_memory() == GiB + GiB // 4  # limit - usage + reclaimable cache
    (cg / "memory.max").write_text("max\n")
    assert resources.available_host_memory() == 20 * GiB  # no limit: MemAvailable


def test_cgroup_v1_limit_and_parents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _fake_system(tmp_path, monkeypatch, 20 * 1024 * 1024, "4:memory:/a/b\n1:cpu:/a\n") / "memory"
    for d, limit, usage in ((root / "a", 3 * GiB, GiB), (root / "a" / "b", 1 << 62, GiB)):
        d.mkdir(parents=True, exist_ok=True)
        (d / "memory.limit_in_bytes").write_text(str(limit))
        (d / "memory.usage_in_bytes").write_text(str(usage))
    assert resources.available_host_memory() == 2 * GiB  # the parent's limit applies to the child


def test_unknown_memory_refuses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "_PROC", tmp_path / "nothing")
    monkeypatch.setattr(resources, "_CGROUP", tmp_path / "nothing")
    assert resources.available_host_memory() is None
    resources.check_host_memory(1 << 60, what="anything", fix="none")  # no figure: no refusal
    with pytest.raises(ConfigError, match=r"^job needs ~1.00 GiB of memory but only 1.0 MiB is free; fix$"):
        resources.check_host_memory(GiB, what="job", fix="fix", available=1 << 20)
