"""DeviceLoader: shapes, normalisation, whole-batch augmentation, seeded order, DDP shards."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reslab.data.loader import DeviceLoader, Normalization, crop_flip
from reslab.data.types import ArrayDataset

N, C, H, W = 50, 3, 8, 8


def _dataset(n: int = N) -> ArrayDataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, C, H, W), dtype=torch.uint8, generator=gen)
    x[:, 1] //= 2  # channels with different statistics
    ids = torch.arange(n)  # label = sample id, so batches tell which samples they hold
    return ArrayDataset("toy", x, ids, x[:10], ids[:10], classes=[str(i) for i in range(n)])


def _loader(ds: ArrayDataset, **kw: object) -> DeviceLoader:
    args: dict = dict(batch_size=16, norm=Normalization.from_dataset(ds), shuffle=True, seed=3)
    args.update(kw)
    return DeviceLoader(ds.train_x, ds.train_y, **args)


def test_shapes_dtypes_and_batch_count() -> None:
    ds = _dataset()
    loader = _loader(ds)
    batches = list(loader.epoch(0))
    assert len(loader) == len(batches) == 4  # ceil(50 / 16)
    assert [b[0].shape[0] for b in batches] == [16, 16, 16, 2]
    x, y = batches[0]
    assert x.shape == (16, C, H, W) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(_loader(ds, drop_last=True)) == 3


@pytest.mark.parametrize("mode", ["channel", "pixel"])
def test_normalisation_uses_train_statistics(mode: str) -> None:
    ds = _dataset()
    loader = _loader(ds, shuffle=False, batch_size=64, norm=Normalization.from_dataset(ds, mode))
    x = torch.cat([b[0] for b in loader.epoch(0)])  # (N, C, H, W)
    if mode == "channel":
        torch.testing.assert_close(x.mean((0, 2, 3)), torch.zeros(C), atol=1e-4, rtol=0)
        torch.testing.assert_close(x.std((0, 2, 3), unbiased=False), torch.ones(C), atol=1e-3, rtol=0)
    else:  # the paper's per-pixel mean subtraction: every pixel has mean 0, no scaling
        torch.testing.assert_close(x.mean(0), torch.zeros(C, H, W), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            x, ds.train_x.float() / 255 - ds.train_x.float().mean(0) / 255, atol=1e-5, rtol=0
        )


def test_each_sample_once_per_epoch_and_order_depends_on_seed_and_epoch_only() -> None:
    ds = _dataset()
    ids = [torch.cat([y for _, y in _loader(ds).epoch(e)]) for e in range(3)]
    for order in ids:
        assert sorted(order.tolist()) == list(range(N))
    assert not torch.equal(ids[0], ids[1])  # reshuffled every epoch
    assert torch.equal(torch.cat([y for _, y in _loader(ds).epoch(1)]), ids[1])  # a new loader: same order
    assert not torch.equal(torch.cat([y for _, y in _loader(ds, seed=4).epoch(1)]), ids[1])
    tail = torch.cat([y for _, y in _loader(ds).epoch(1, start=2)])  # resume mid-epoch
    assert torch.equal(tail, ids[1][32:])
    loader = _loader(ds)
    assert torch.equal(torch.cat([y for _, y in loader]), ids[0])  # iter() walks epochs 0, 1, ...
    assert torch.equal(torch.cat([y for _, y in loader]), ids[1])


@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_rank_shards_are_disjoint_and_cover_each_global_batch(world_size: int, drop_last: bool) -> None:
    ds = _dataset()
    single = list(_loader(ds, drop_last=drop_last).epoch(2))
    ranks = [
        list(_loader(ds, drop_last=drop_last, rank=r, world_size=world_size).epoch(2))
        for r in range(world_size)
    ]
    assert all(len(r) == len(single) for r in ranks)  # every rank takes the same number of steps
    for step, (_, y_single) in enumerate(single):
        parts = [ranks[r][step][1] for r in range(world_size)]
        assert torch.equal(torch.cat(parts), y_single)  # union of the shards = the single-process batch
    seen = torch.cat([y for r in ranks for _, y in r]).tolist()
    assert len(seen) == len(set(seen))  # disjoint
    if not drop_last:
        assert sorted(seen) == list(range(N))  # covering


def test_crop_flip_is_a_crop_and_a_flip() -> None:
    x = torch.randint(0, 256, (6, C, H, W), dtype=torch.uint8)
    center = torch.full((6,), 4)
    no, yes = torch.zeros(6, dtype=torch.bool), torch.ones(6, dtype=torch.bool)
    assert torch.equal(crop_flip(x, center, center, no, 4), x)
    assert torch.equal(crop_flip(x, center, center, yes, 4), x.flip(3))
    gen = torch.Generator().manual_seed(1)
    dy, dx = torch.randint(0, 9, (6,), generator=gen), torch.randint(0, 9, (6,), generator=gen)
    flip = torch.randint(0, 2, (6,), generator=gen).bool()
    out = crop_flip(x, dy, dx, flip, 4)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(6):  # reference: the per-sample loop the loader avoids
        ref = padded[i, :, dy[i] : dy[i] + H, dx[i] : dx[i] + W]
        assert torch.equal(out[i], ref.flip(2) if flip[i] else ref)
    assert out.shape == x.shape


def test_augmented_batches_keep_shape_and_memory_format() -> None:
    ds = _dataset()
    plain = list(_loader(ds, shuffle=False).epoch(0))
    aug = list(_loader(ds, shuffle=False, augment="crop_flip").epoch(0))
    assert [a[0].shape for a in aug] == [p[0].shape for p in plain]
    shifted = list(_loader(ds, shuffle=False, augment="crop").epoch(0))  # digits: shifts, never mirrored
    assert [a[0].shape for a in shifted] == [p[0].shape for p in plain]
    shuffled = list(_loader(ds, augment="crop_flip", channels_last=True).epoch(0))
    assert shuffled[0][0].is_contiguous(memory_format=torch.channels_last)
    again = list(_loader(ds, augment="crop_flip", channels_last=True).epoch(0))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(shuffled, again))  # augmentation is seeded too
