"""Every collective of the engine, behind one flag: every function works unchanged on one process.

- `rank`, `world_size`, `is_distributed`: where this worker stands (0 / 1 / False alone).
- `barrier`, `rank0_first`: ordering (rank 0 builds data caches, the others then read them).
- `all_reduce_sum_`, `all_reduce_mean_`, `broadcast_`: in place on a tensor, no-ops alone.
- `average_float_buffers`: BN running statistics averaged over workers (once per epoch).
- `concat_all_gather`: keys from all workers, rank order, no gradient (MoCo's queue update).
- `all_gather_with_grad`: embeddings from all workers with gradient (end-to-end negatives).
- `all_gather_variable`: rows of a different count per worker (padded, then trimmed).
- `ddp_options`, `wrap_ddp`: the query encoder under DistributedDataParallel.
- `shuffle_bn_forward`: the key encoder sees a batch shuffled across workers (shuffle-BN, MoCo
  Sec. 3.3) so BN statistics cannot leak which key is the positive; on one process the batch is
  shuffled within itself and SplitBatchNorm splits it into groups, as in the official demo.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    """Wait for every worker (a no-op on one process)."""
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def rank0_first() -> Iterator[None]:
    """Rank 0 runs the body first (building caches, downloading), the others after it is done
    (reading what rank 0 wrote). One process: just the body."""
    if rank() != 0:
        barrier()
    yield
    if rank() == 0:
        barrier()


def all_reduce_sum_(x: torch.Tensor) -> torch.Tensor:
    """x <- sum of x over the workers, in place (every worker gets the same tensor); returns x."""
    if is_distributed():
        dist.all_reduce(x)
    return x


def all_reduce_mean_(x: torch.Tensor) -> torch.Tensor:
    """x <- mean of x over the workers, in place; returns x."""
    if is_distributed():
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def broadcast_(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """x <- rank ``src``'s x, in place; returns x."""
    if is_distributed():
        dist.broadcast(x, src=src)
    return x


def ddp_options() -> dict[str, Any]:
    """DistributedDataParallel settings of the query encoder (see docs/performance.md).

    - gradient_as_bucket_view: gradients live in the all-reduce buckets (no copy into and out of
      them, one gradient-sized buffer less); the training step zeroes instead of dropping them.
    - no buffer broadcast before every forward: BN buffers (running statistics) never affect a
      training step (batch statistics are used; with shuffle-BN each rank's BN sees its own
      shuffled share of the keys, exactly as in the official MoCo code), so the per-forward
      broadcast is pure overhead; `average_float_buffers` aligns them once per epoch, before the
      kNN monitor and the checkpoint read them. Parameters are still broadcast from rank 0 at
      construction (all ranks also initialise from the same seed).
    """
    import inspect

    options: dict[str, Any] = {"gradient_as_bucket_view": True}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        options["forward_sync_buffers"] = False  # torch >= 2.13 (broadcast_buffers deprecated)
    else:
        options["broadcast_buffers"] = False
    return options


def wrap_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` under DistributedDataParallel (``ddp_options``) when distributed, else itself."""
    if not is_distributed():
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, **ddp_options())


@torch.no_grad()
def average_float_buffers(module: torch.nn.Module) -> None:
    """Make ``module``'s buffers equal on every worker: floating-point buffers (BN running mean
    and variance) become their mean over the workers, the others (num_batches_tracked, equal on
    every worker) rank 0's value."""
    if not is_distributed():
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            all_reduce_mean_(buffer)
        else:
            broadcast_(buffer, src=0)


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """x: N x ... on each rank (same N) -> (world * N) x ..., rank 0's rows first."""
    if not is_distributed():
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Like concat_all_gather but gradients flow back to each rank's own slice."""
    if not is_distributed():
        return x
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(x.contiguous()), dim=0)


def all_gather_variable(x: torch.Tensor) -> torch.Tensor:
    """Gather tensors whose first dimension differs between ranks (padded, then trimmed)."""
    if not is_distributed():
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    padded = torch.zeros((max(sizes),) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes)], dim=0)


def _host_to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on `device` without a host synchronisation: a plain `.to(cuda)` from
    pageable memory waits for the GPU; from pinned memory with non_blocking it is queued on the
    stream (the caching host allocator keeps the pinned block until the copy has run)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@torch.no_grad()
def shuffle_bn_forward(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Compute fn(x) (x: N x ...) with the batch shuffled across all workers before fn and
    unshuffled after, so the i-th output row still belongs to the i-th input row.

    The permutation is drawn on rank 0 and broadcast (`generator` must live on the CPU).
    Single process: a shuffle within the batch (meaningful with SplitBatchNorm).
    """
    if not is_distributed():
        perm = _host_to_device(torch.randperm(x.shape[0], generator=generator), x.device)
        out = fn(x[perm])
        return out[torch.argsort(perm)]
    world, r = dist.get_world_size(), dist.get_rank()
    n = x.shape[0]
    x_all = concat_all_gather(x)  # (world*N) x ...
    perm = _host_to_device(torch.randperm(world * n, generator=generator), x.device)
    dist.broadcast(perm, src=0)
    unperm = torch.argsort(perm)
    out_this = fn(x_all[perm.view(world, n)[r]])  # this rank's share of the shuffled batch
    out_all = concat_all_gather(out_this)  # rows in shuffled order
    return out_all[unperm.view(world, n)[r]]
