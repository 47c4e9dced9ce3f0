"""One epoch of batches per rank: a seeded permutation sharded across ranks, then batched.

``iterate_batches`` shards one permutation per epoch across ranks (identical on every rank, so
every rank sees a disjoint slice and the same number of batches); in-memory datasets are indexed
as whole tensors, others go through a ``DataLoader`` whose workers persist between epochs
(``release_loaders`` ends them, ``has_open_loaders`` tells whether any are open).
``DevicePrefetcher`` moves batches to the device one batch ahead.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from trainables.data.datasets import TensorImageDataset, collate_uint8


def epoch_permutation(n: int, *, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's permutation of range(n) (int64 n), from a torch.Generator seeded by
    (seed, epoch); identical on every rank and process."""
    mixed = int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF])
                .generate_state(1, np.uint64)[0])
    generator = torch.Generator()
    generator.manual_seed(mixed)
    return torch.randperm(n, generator=generator)


def shard_indices(n: int, batch_size: int, *, shuffle: bool, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1, drop_last: bool) -> torch.Tensor:
    """Indices rank ``rank`` reads this epoch (int64), in order.

    One permutation (or arange without shuffle) of all n indices, trimmed to a multiple of
    world_size; rank r takes perm[r::world_size]; with drop_last also trimmed to whole batches.
    Every rank gets the same count: n // world_size (drop_last: n // (world_size*batch) batches).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = epoch_permutation(n, seed=seed, epoch=epoch) if shuffle else torch.arange(n)
    per_rank = n // world_size
    mine = order[: per_rank * world_size][rank::world_size]
    if drop_last:
        mine = mine[: per_rank // batch_size * batch_size]
    return mine


def num_batches(ds: Dataset, batch_size: int, *, world_size: int = 1,
                drop_last: bool = True) -> int:
    """Batches per rank per epoch that ``iterate_batches`` yields."""
    per_rank = len(ds) // world_size
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


class _IndexSampler(torch.utils.data.Sampler):
    """A sampler whose indices are replaced each epoch (lets a persistent DataLoader be reused)."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _LoaderCache(dict):
    """Per-dataset cache of DataLoaders (so persistent workers survive between epochs).

    Pickles as empty: DataLoader workers started by spawn receive the dataset without it.
    """

    def __reduce__(self):
        return (_LoaderCache, ())


#: The dataset attribute that holds its persistent loaders; only this module reads it.
_LOADERS_ATTR = "_leoclr_loaders"


def _loader_for(ds: Dataset, batch_size: int, num_workers: int,
                pin_memory: bool) -> tuple[DataLoader, _IndexSampler]:
    key = (batch_size, num_workers, pin_memory)
    cache = getattr(ds, _LOADERS_ATTR, None)
    if cache is None:
        cache = _LoaderCache()
        try:
            setattr(ds, _LOADERS_ATTR, cache)
        except AttributeError:  # e.g. __slots__: work without the cache
            pass
    if key not in cache:
        sampler = _IndexSampler()
        loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                            collate_fn=collate_uint8, pin_memory=pin_memory,
                            persistent_workers=num_workers > 0, drop_last=False)
        cache[key] = (loader, sampler)
    return cache[key]


def has_open_loaders(ds: Dataset) -> bool:
    """Whether ``iterate_batches`` keeps DataLoaders (and their workers) open for ``ds``."""
    return bool(getattr(ds, _LOADERS_ATTR, None))


def release_loaders(ds: Dataset) -> None:
    """Shut down the persistent DataLoader workers ``iterate_batches`` keeps for ``ds``."""
    cache = getattr(ds, _LOADERS_ATTR, None)
    if cache:
        cache.clear()


def iterate_batches(ds: Dataset, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
                    rank: int = 0, world_size: int = 1, drop_last: bool, num_workers: int = 0,
                    pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield this rank's batches of one epoch: (uint8 B x 3 x S x S, int64 B).

    Sharding as in ``shard_indices`` (same permutation on every rank, disjoint slices, equal
    batch counts). A TensorImageDataset is indexed as whole tensors (no per-item loop, no
    DataLoader); any other dataset goes through a DataLoader over this shard's indices with
    ``num_workers`` workers (persistent, reused across epochs; ``release_loaders`` ends them).
    """
    indices = shard_indices(len(ds), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                            rank=rank, world_size=world_size, drop_last=drop_last)
    if isinstance(ds, TensorImageDataset):
        pin = pin_memory and torch.cuda.is_available()
        for start in range(0, len(indices), batch_size):
            idx = indices[start:start + batch_size]
            if pin:
                # gathered straight into page-locked memory (one copy, not gather + pin); the
                # caching host allocator does not hand a block out again before the
                # non_blocking copies that read it have finished
                images = torch.empty((len(idx), *ds.images.shape[1:]), dtype=ds.images.dtype,
                                     pin_memory=True)
                labels = torch.empty(len(idx), dtype=ds.labels.dtype, pin_memory=True)
                torch.index_select(ds.images, 0, idx, out=images)
                torch.index_select(ds.labels, 0, idx, out=labels)
            else:
                images, labels = ds.images.index_select(0, idx), ds.labels.index_select(0, idx)
            yield images, labels
        return
    loader, sampler = _loader_for(ds, batch_size, num_workers,
                                  pin_memory and torch.cuda.is_available())
    sampler.indices = indices.tolist()
    yield from loader


class DevicePrefetcher:
    """Moves ``(images, labels)`` batches to ``device``, one batch ahead of the consumer.

    On CUDA the host -> device copy of batch i + 1 is issued on a side stream (non_blocking,
    from the pinned memory ``iterate_batches(pin_memory=True)`` gives) before batch i is handed
    out, so it overlaps with the consumer's work on batch i; the consumer's stream waits for
    the copy (an event on the device, not a host synchronisation) and the tensors are marked
    as used by it (``record_stream``) so the allocator cannot recycle them early. Drawing batch
    i + 1 from ``batches`` (index_select or a DataLoader's queue) also overlaps with the GPU
    still running the kernels queued for step i - 1.

    On any other device it is a pass-through (``.to(device)``, a no-op on CPU).
    """

    def __init__(self, batches, device: torch.device | str):
        self.batches = batches
        self.device = torch.device(device)

    def __iter__(self):
        if self.device.type != "cuda":
            for images, labels in self.batches:
                yield images.to(self.device), labels.to(self.device)
            return
        stream = torch.cuda.Stream(self.device)
        source = iter(self.batches)

        def issue():
            try:
                images, labels = next(source)
            except StopIteration:
                return None
            with torch.cuda.stream(stream):
                return (images.to(self.device, non_blocking=True),
                        labels.to(self.device, non_blocking=True))

        ahead = issue()
        while ahead is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(stream)
            for t in ahead:
                t.record_stream(current)
            batch, ahead = ahead, issue()
            yield batch
