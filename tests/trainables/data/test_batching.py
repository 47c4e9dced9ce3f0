"""Sharded epochs (trainables.data.batching): every index once, equal batches per rank,
reproducible permutations, the DataLoader path equal to the tensor path, persistent loaders."""

from __future__ import annotations

import pytest
import torch

from trainables.data import (TensorImageDataset, has_open_loaders, iterate_batches, num_batches,
                             release_loaders)


def _toy(n: int) -> TensorImageDataset:
    """Image i is filled with value i % 256 and labelled i: batches reveal which indices came."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4)
    images = images.contiguous()
    return TensorImageDataset(images, torch.arange(n), ["x"])


def _epoch(ds, world: int, batch: int, *, drop_last: bool, epoch: int = 0, seed: int = 0,
           **kw) -> list[list[torch.Tensor]]:
    return [[y for _, y in iterate_batches(ds, batch, shuffle=True, seed=seed, epoch=epoch,
                                           rank=r, world_size=world, drop_last=drop_last, **kw)]
            for r in range(world)]


def test_sharding_covers_every_index_once():
    ds = _toy(48)
    per_rank = _epoch(ds, world=3, batch=5, drop_last=False)
    assert [len(b) for b in per_rank] == [4, 4, 4]
    assert num_batches(ds, 5, world_size=3, drop_last=False) == 4
    seen = torch.cat([torch.cat(b) for b in per_rank])
    assert sorted(seen.tolist()) == list(range(48))
    for images, labels in iterate_batches(ds, 5, shuffle=True, seed=0, epoch=0, drop_last=False):
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 4, 4)
        assert torch.equal(images[:, 0, 0, 0].long(), labels)


def test_sharding_drop_last_equal_batches():
    ds = _toy(50)
    per_rank = _epoch(ds, world=4, batch=4, drop_last=True)
    assert [len(b) for b in per_rank] == [3] * 4 == [50 // (4 * 4)] * 4
    assert all(len(y) == 4 for b in per_rank for y in b)
    seen = torch.cat([torch.cat(b) for b in per_rank])
    assert len(set(seen.tolist())) == len(seen)  # disjoint across ranks
    uneven = _epoch(ds, world=4, batch=5, drop_last=False)  # 50 -> 48 -> 12 per rank
    assert [sum(len(y) for y in b) for b in uneven] == [12] * 4
    assert num_batches(ds, 5, world_size=4, drop_last=False) == 3


def test_epochs_differ_and_are_reproducible():
    ds = _toy(64)
    e0 = torch.cat(_epoch(ds, 1, 8, drop_last=True, epoch=0)[0])
    e1 = torch.cat(_epoch(ds, 1, 8, drop_last=True, epoch=1)[0])
    assert not torch.equal(e0, e1) and sorted(e1.tolist()) == list(range(64))
    assert torch.equal(e0, torch.cat(_epoch(ds, 1, 8, drop_last=True, epoch=0)[0]))
    assert not torch.equal(e0, torch.cat(_epoch(ds, 1, 8, drop_last=True, epoch=0, seed=1)[0]))
    ordered = [y for _, y in iterate_batches(ds, 10, shuffle=False, seed=0, epoch=3,
                                             drop_last=False)]
    assert torch.equal(torch.cat(ordered), torch.arange(64)) and len(ordered[-1]) == 4


class _Streaming(torch.utils.data.Dataset):
    """Not a TensorImageDataset: forces the DataLoader path."""

    def __init__(self, inner: TensorImageDataset):
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        return self.inner[i]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_path_matches_tensor_path(num_workers):
    ds = _toy(40)
    streaming = _Streaming(ds)
    for epoch in (0, 1):  # the second epoch reuses the (persistent) loader with new indices
        for rank in (0, 1):
            kw = dict(shuffle=True, seed=4, epoch=epoch, rank=rank, world_size=2, drop_last=False)
            expected = list(iterate_batches(ds, 6, **kw))
            got = list(iterate_batches(streaming, 6, num_workers=num_workers, **kw))
            assert len(got) == len(expected) == 4
            for (xe, ye), (xg, yg) in zip(expected, got):
                assert torch.equal(xe, xg) and torch.equal(ye, yg)
                assert xg.dtype == torch.uint8 and yg.dtype == torch.int64
    release_loaders(streaming)


def test_persistent_loaders_are_reported_and_released():
    streaming = _Streaming(_toy(12))
    assert not has_open_loaders(streaming)
    list(iterate_batches(streaming, 4, shuffle=False, seed=0, epoch=0, drop_last=False))
    assert has_open_loaders(streaming)
    release_loaders(streaming)
    assert not has_open_loaders(streaming)
    in_memory = _toy(12)  # indexed as tensors: no loader is ever opened
    list(iterate_batches(in_memory, 4, shuffle=False, seed=0, epoch=0, drop_last=False))
    assert not has_open_loaders(in_memory)
