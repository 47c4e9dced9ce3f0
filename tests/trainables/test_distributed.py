"""Distributed pieces with 2 CPU processes (gloo): key gathering, shuffle-BN, DDP gradients.

Each test spawns 2 processes that write their results to files; the parent checks them against
a single-process computation of the same thing.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from trainables import distributed as D
from trainables.losses import leoclr_loss
from trainables.models import Encoder, KeyQueue, convert_split_bn, make_key_encoder

WORLD = 2


def _init(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=WORLD)


def _run(fn, tmp_path, *args):
    mp.spawn(fn, args=(str(tmp_path), *args), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"out{r}.pt", weights_only=True) for r in range(WORLD)]


# ------------------------------------------------------------------------------------------
def _gather_and_shuffle_worker(rank: int, tmp: str) -> None:
    _init(rank, tmp)
    x = torch.arange(8, dtype=torch.float32).view(4, 2) + 100 * rank  # rank-tagged rows
    gathered = D.concat_all_gather(x)
    seen = {}

    def record(batch):  # a per-sample function that also records what it was given
        seen["batch"] = batch.clone()
        return batch * 2

    gen = torch.Generator().manual_seed(123)
    out = D.shuffle_bn_forward(record, x, gen)
    # BN in train mode on the shuffled sub-batch: the statistics come from a mixed group
    bn = nn.BatchNorm1d(2)
    gen = torch.Generator().manual_seed(123)
    bn_out = D.shuffle_bn_forward(bn, x, gen)
    queue = KeyQueue(6, 2, torch.Generator().manual_seed(0))
    queue.enqueue(D.concat_all_gather(x))
    torch.save({"x": x, "gathered": gathered, "out": out, "seen": seen["batch"], "bn_out": bn_out,
                "queue": queue.keys.clone()}, f"{tmp}/out{rank}.pt")
    dist.destroy_process_group()


def test_concat_all_gather_and_shuffle_bn(tmp_path):
    outs = _run(_gather_and_shuffle_worker, tmp_path)
    x_all = torch.cat([o["x"] for o in outs])
    for r, o in enumerate(outs):
        torch.testing.assert_close(o["gathered"], x_all)  # rank order, on every rank
        torch.testing.assert_close(o["out"], o["x"] * 2)  # unshuffled back to this rank's rows
        torch.testing.assert_close(o["queue"], outs[0]["queue"])  # queue identical on all ranks
    # the key encoder saw a shuffled mix of both ranks' samples, not its own batch
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(123))
    for r, o in enumerate(outs):
        torch.testing.assert_close(o["seen"], x_all[perm.view(WORLD, 4)[r]])
    assert any(((o["seen"] >= 100).any() and (o["seen"] < 100).any()) for o in outs)
    # BN statistics: hand computation of BN over each rank's shuffled group, then unshuffled
    expected = torch.empty_like(x_all)
    for r in range(WORLD):
        idx = perm.view(WORLD, 4)[r]
        group = x_all[idx]
        expected[idx] = (group - group.mean(0)) / torch.sqrt(group.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(torch.cat([o["bn_out"] for o in outs]), expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------
def _collectives_worker(rank: int, tmp: str) -> None:
    import time

    _init(rank, tmp)
    marker = f"{tmp}/built_by_rank0"
    with D.rank0_first():  # rank 0 "builds a cache" slowly; rank 1 must only then read it
        if rank == 0:
            time.sleep(0.5)
            open(marker, "w").write("cache")
        found = os.path.exists(marker)
    total = D.all_reduce_sum_(torch.tensor([1.0, 2.0]) * (rank + 1))
    mean = torch.tensor([1.0, 2.0]) * (rank + 1)
    same = D.all_reduce_mean_(mean)
    sent = D.broadcast_(torch.full((3,), float(rank + 7)), src=1)
    bn = nn.BatchNorm1d(2)
    bn.running_mean.fill_(2.0 * rank)  # rank 0: 0, rank 1: 2
    bn.num_batches_tracked.fill_(5 + rank)
    D.average_float_buffers(bn)
    rows = D.all_gather_variable(torch.full((rank + 1, 2), float(rank)))  # 1 row, then 2 rows
    D.barrier()
    torch.save({"found": found, "total": total, "mean": mean, "in_place": same is mean, "sent": sent,
                "bn_mean": bn.running_mean.clone(), "tracked": bn.num_batches_tracked.clone(),
                "rows": rows, "rank": D.rank(), "world": D.world_size()}, f"{tmp}/out{rank}.pt")
    dist.destroy_process_group()


def test_collective_helpers_on_two_processes(tmp_path):
    outs = _run(_collectives_worker, tmp_path)
    for r, o in enumerate(outs):
        assert o["found"]  # rank 1 entered the body after rank 0 had left it
        assert (o["rank"], o["world"]) == (r, WORLD)
        torch.testing.assert_close(o["total"], torch.tensor([3.0, 6.0]))  # 1x + 2x
        torch.testing.assert_close(o["mean"], torch.tensor([1.5, 3.0]))
        assert o["in_place"]
        torch.testing.assert_close(o["sent"], torch.full((3,), 8.0))  # rank 1's value
        torch.testing.assert_close(o["bn_mean"], torch.full((2,), 1.0))  # (0 + 2) / 2
        assert int(o["tracked"]) == 5  # integer buffers: rank 0's value
        torch.testing.assert_close(o["rows"], torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]))


def test_collective_helpers_alone_are_identities():
    """One process, no process group: every helper leaves its input as it is."""
    assert not D.is_distributed() and (D.rank(), D.world_size()) == (0, 1)
    x = torch.tensor([1.0, 2.0])
    assert D.all_reduce_sum_(x) is x and D.all_reduce_mean_(x) is x and D.broadcast_(x) is x
    torch.testing.assert_close(x, torch.tensor([1.0, 2.0]))
    assert D.concat_all_gather(x) is x and D.all_gather_variable(x) is x
    bn = nn.BatchNorm1d(2)
    bn.running_mean.fill_(3.0)
    D.average_float_buffers(bn)
    D.barrier()
    with D.rank0_first():
        pass
    torch.testing.assert_close(bn.running_mean, torch.full((2,), 3.0))


# ------------------------------------------------------------------------------------------
N = 4  # per-rank batch


def _inputs():
    g = torch.Generator().manual_seed(7)
    return [torch.randn(WORLD * N, 3, 16, 16, generator=g) for _ in range(3)]  # X, X1, X2 (global)


def _loss_and_grads(query, key, views, queue):
    u = F.normalize(query(views[0]), dim=1)
    with torch.no_grad():
        v1, v2 = (F.normalize(key(v), dim=1) for v in views[1:])
    loss = leoclr_loss(u, v1, v2, queue, 0.2)
    loss.backward()
    return loss.detach(), (v1, v2)


def _ddp_worker(rank: int, tmp: str) -> None:
    _init(rank, tmp)
    torch.manual_seed(0)
    encoder = Encoder("small_cnn", "mlp", 16)
    key = make_key_encoder(encoder)
    ddp = nn.parallel.DistributedDataParallel(encoder)
    views = [v[rank::WORLD] for v in _inputs()]  # this rank's share of the global batch
    queue = KeyQueue(32, 16, torch.Generator().manual_seed(1))
    loss, keys = _loss_and_grads(ddp, key, views, queue.keys)
    queue.enqueue(D.concat_all_gather(torch.cat(keys)))
    grads = {n: p.grad.clone() for n, p in encoder.named_parameters()}
    torch.save({"grads": grads, "loss": loss, "queue": queue.keys.clone()}, f"{tmp}/out{rank}.pt")
    dist.destroy_process_group()


def test_ddp_gradients_match_single_process_on_the_global_batch(tmp_path):
    outs = _run(_ddp_worker, tmp_path)
    # single process: same init, the whole global batch, SplitBatchNorm(2) reproducing per-rank BN
    # (split j = samples j, j+2, ... = rank j's share above)
    torch.manual_seed(0)
    encoder = Encoder("small_cnn", "mlp", 16)
    key = make_key_encoder(encoder)
    convert_split_bn(encoder, WORLD)
    convert_split_bn(key, WORLD)
    queue = KeyQueue(32, 16, torch.Generator().manual_seed(1))
    loss, _ = _loss_and_grads(encoder, key, _inputs(), queue.keys)
    assert loss.item() == pytest.approx(float(sum(o["loss"] for o in outs) / WORLD), rel=1e-5)
    for name, p in encoder.named_parameters():
        for o in outs:  # DDP averaged the gradients: identical on both ranks and equal to ours
            torch.testing.assert_close(o["grads"][name], p.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(outs[0]["queue"], outs[1]["queue"])


# ------------------------------------------------------------------------------------------
def _bn_sync_worker(rank: int, tmp: str) -> None:
    from types import SimpleNamespace

    from trainables.loop import Trainer

    _init(rank, tmp)
    query = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))
    key = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))
    bn, kbn = query[1], key[1]
    bn.running_mean.fill_(rank + 1.0)  # rank 0: 1, rank 1: 2
    bn.running_var.fill_(2.0 * rank + 1.0)  # rank 0: 1, rank 1: 3
    kbn.running_mean.fill_(4.0 * rank)  # rank 0: 0, rank 1: 4
    bn.num_batches_tracked.fill_(7 + rank)  # integer buffers: rank 0's value everywhere
    Trainer.sync_bn_statistics(SimpleNamespace(query_encoder=query, key_encoder=key, world=WORLD))
    torch.save({"mean": bn.running_mean.clone(), "var": bn.running_var.clone(),
                "key_mean": kbn.running_mean.clone(), "tracked": bn.num_batches_tracked.clone()},
               f"{tmp}/out{rank}.pt")
    dist.destroy_process_group()


def test_bn_statistics_are_averaged_over_workers(tmp_path):
    for o in _run(_bn_sync_worker, tmp_path):
        torch.testing.assert_close(o["mean"], torch.full((2,), 1.5))  # (1 + 2) / 2
        torch.testing.assert_close(o["var"], torch.full((2,), 2.0))  # (1 + 3) / 2
        torch.testing.assert_close(o["key_mean"], torch.full((2,), 2.0))  # (0 + 4) / 2
        assert int(o["tracked"]) == 7


MONITOR_KEYS = ("val_knn_top1", "val_knn_top5", "test_knn_top1", "test_knn_top5", "rankme")


def _train_worker(rank: int, tmp: str, config: dict) -> None:
    from trainables.loop import run_training

    _init(rank, tmp)
    reports = []
    run_training(config, lambda m, c: reports.append(m), checkpoint_dir=f"{tmp}/ckpt")
    torch.save({k: reports[-1][k] for k in MONITOR_KEYS}, f"{tmp}/out{rank}.pt")
    dist.destroy_process_group()


def test_two_worker_knn_monitor_is_the_checkpointed_encoder(tmp_path, monkeypatch):
    """The monitor the workers report (val / test kNN, RankMe on the val features put back in
    split order) is what a single process computes from rank 0's checkpoint."""
    from trainables.config import TrainConfig
    from trainables.loop import Trainer

    monkeypatch.setenv("LEOCLR_CACHE", str(tmp_path / "cache"))
    config = {"dataset": "photo_patches", "image_size": 16, "backbone": "small_cnn", "batch_size": 32,
              "queue_size": 64, "epochs": 1, "max_steps_per_epoch": 3, "knn_k": 10, "warmup_epochs": 0,
              "photo_patches": {"train_per_class": 8, "test_per_class": 4}}
    outs = _run(_train_worker, tmp_path, config)
    assert outs[0] == outs[1]
    trainer = Trainer(TrainConfig.from_dict(config))
    trainer.load_checkpoint(tmp_path / "ckpt" / "epoch_0001")
    single = trainer.knn_eval(test=True)
    for key in MONITOR_KEYS[:4]:
        assert single[key] == outs[0][key], key
    assert single["rankme"] == pytest.approx(outs[0]["rankme"], rel=1e-5)
