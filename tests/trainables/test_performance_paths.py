"""The engine's performance paths compute exactly what the plain code computes.

- SplitBatchNorm without an autograd view on its output (NCHW) and with one batch_norm kernel
  per block writing into one output (channels_last, the default layout now);
- EmaUpdater (cached tensor lists, foreach lerp + copy);
- DevicePrefetcher and pinned batches: a pass-through on CPU (exercised here through the loader
  and through Trainer.train_epoch); the CUDA stream path runs only where a GPU is present;
- DDP options, and the per-epoch averaging of BN buffers that replaces the per-forward broadcast;
- on CUDA only: a training step makes no host-device synchronisation.
No timings are asserted here: speed is measured by benchmarks/train_step.py.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from test_loop import TINY as LOOP_TINY
from trainables.config import TrainConfig
from trainables.data import DevicePrefetcher, TensorImageDataset, iterate_batches
from trainables.distributed import ddp_options
from trainables.loop import Trainer
from trainables.models import (
    EmaUpdater,
    Encoder,
    SplitBatchNorm,
    convert_split_bn,
    ema_update_,
    make_key_encoder,
)

TINY = {**LOOP_TINY, "epochs": 1}  # test_loop's tiny photo_patches config


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LEOCLR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# ------------------------------------------------------------------------------------------
# SplitBatchNorm
class _OfficialSplitBN(nn.BatchNorm2d):
    """The official demo's formulation (output returned as a .view): the reference."""

    def __init__(self, c, g):
        super().__init__(c)
        self.g = g

    def forward(self, x):
        n, c, h, w = x.shape
        g = self.g
        rm, rv = self.running_mean.repeat(g), self.running_var.repeat(g)
        out = F.batch_norm(x.view(-1, c * g, h, w), rm, rv, self.weight.repeat(g), self.bias.repeat(g),
                           True, self.momentum, self.eps).view(n, c, h, w)
        self.running_mean.data.copy_(rm.view(g, c).mean(0))
        self.running_var.data.copy_(rv.view(g, c).mean(0))
        return out


def _fwd_bwd(bn, x, grad):
    x = x.clone().requires_grad_()
    out = bn(x)
    kept = out.detach().clone()
    out.relu_()  # an in-place op right after, as in ResNet blocks
    (out * grad).sum().backward()
    return kept, x.grad, bn.weight.grad, bn.bias.grad


def test_split_bn_nchw_equals_the_official_view_formulation_and_is_not_a_view():
    torch.manual_seed(0)
    x = torch.randn(12, 4, 5, 5, dtype=torch.float64) * 2 + 1
    grad = torch.randn_like(x)
    ours, ref = SplitBatchNorm(4, 3).double(), _OfficialSplitBN(4, 3).double()
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.normal_()
    ref.load_state_dict(ours.state_dict())
    for a, b in zip(_fwd_bwd(ours, x, grad), _fwd_bwd(ref, x, grad)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    assert ours(x)._base is None  # not an autograd view: in-place ops after it stay cheap


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_split_bn_channels_last_is_per_block_bn(dtype):
    torch.manual_seed(0)
    g, c = 4, 3
    x = (torch.randn(16, c, 6, 7, dtype=torch.float64) * 3 + 1).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(x.shape, dtype=torch.float64).to(dtype).contiguous(memory_format=torch.channels_last)
    pdtype = torch.float64 if dtype == torch.float64 else torch.float32  # bf16: fp32 params (AMP)
    split = SplitBatchNorm(c, g).to(pdtype)
    with torch.no_grad():
        split.weight.uniform_(0.5, 1.5)
        split.bias.normal_()
    rms = torch.zeros(g, c, dtype=pdtype)
    rvs = torch.ones(g, c, dtype=pdtype)

    class PerBlock(nn.Module):  # the definition: plain BN on each contiguous block, concatenated
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(split.weight.detach().clone())
            self.bias = nn.Parameter(split.bias.detach().clone())

        def forward(self, t):
            return torch.cat([F.batch_norm(part, rms[j], rvs[j], self.weight, self.bias, True, 0.1, 1e-5)
                              for j, part in enumerate(t.chunk(g))])

    out, gx, gw, gb = _fwd_bwd(split, x, grad)
    eout, egx, egw, egb = _fwd_bwd(PerBlock(), x, grad)
    tol = dict(atol=3e-2, rtol=3e-2) if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(out, eout, **tol)
    torch.testing.assert_close(gx, egx, **tol)
    torch.testing.assert_close(gw, egw, **tol)
    torch.testing.assert_close(gb, egb, **tol)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert gx.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(split.running_mean, rms.mean(0))
    torch.testing.assert_close(split.running_var, rvs.mean(0))


def test_split_bn_encoder_trains_in_channels_last():
    torch.manual_seed(0)
    enc = convert_split_bn(Encoder("resnet18_cifar", "mlp", 16), 4).to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    enc(x).square().sum().backward()  # BasicBlock: bn -> relu_ and out += identity after the BN
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())


# ------------------------------------------------------------------------------------------
# EMA
def test_ema_updater_matches_the_one_off_update_and_survives_load_state_dict():
    torch.manual_seed(0)
    q = convert_split_bn(Encoder("small_cnn", "mlp", 8), 2)
    k1, k2 = make_key_encoder(q), make_key_encoder(q)
    ema = EmaUpdater(k1, q)
    for step in range(3):
        with torch.no_grad():
            for p in q.parameters():
                p.add_(torch.randn_like(p))
        q(torch.randn(4, 3, 8, 8))  # moves BN running stats and num_batches_tracked
        ema(0.7)
        ema_update_(k2, q, 0.7)
        for (name, a), b in zip(k1.state_dict().items(), k2.state_dict().values()):
            assert torch.equal(a, b), name
    k1.load_state_dict(q.state_dict())  # copies into the same tensors: the cached lists hold
    ema(0.5)
    for a, b in zip(k1.state_dict().values(), q.state_dict().values()):
        assert torch.equal(a, b)
    assert int(k1.backbone.features[1].num_batches_tracked) == 3


# ------------------------------------------------------------------------------------------
# Loading: pinned batches + prefetcher (CPU path; the CUDA path below when a GPU is present)
def _toy(n: int) -> TensorImageDataset:
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return TensorImageDataset(images, torch.arange(n), ["x"])


def test_prefetcher_is_an_ordered_pass_through_on_cpu():
    ds = _toy(30)
    kw = dict(shuffle=True, seed=1, epoch=0, drop_last=False)
    expected = list(iterate_batches(ds, 7, **kw))
    pulled = []

    def source():
        for batch in iterate_batches(ds, 7, pin_memory=True, **kw):  # pinning is CUDA-only
            pulled.append(batch)
            yield batch

    got = []
    for images, labels in DevicePrefetcher(source(), torch.device("cpu")):
        assert len(pulled) == len(got) + 1  # nothing drawn ahead on CPU
        got.append((images, labels))
    assert len(got) == len(expected) == 5
    for (xe, ye), (xg, yg) in zip(expected, got):
        assert torch.equal(xe, xg) and torch.equal(ye, yg) and xg.device.type == "cpu"


def test_train_epoch_feeds_steps_through_the_prefetcher(monkeypatch):
    import trainables.loop as loop

    seen = []

    class Spy(DevicePrefetcher):
        def __iter__(self):
            for batch in super().__iter__():
                seen.append(batch[0].shape[0])
                yield batch

    monkeypatch.setattr(loop, "DevicePrefetcher", Spy)
    trainer = Trainer(TrainConfig.from_dict({**TINY, "max_steps_per_epoch": 3}))
    metrics = trainer.train_epoch()
    assert metrics["steps"] == 3 and seen[:3] == [32, 32, 32]
    assert trainer.global_step == 3 and torch.isfinite(torch.tensor(metrics["loss"]))


@pytest.mark.parametrize("channels_last", ["on", "off"])
def test_both_layouts_train_and_views_come_in_the_encoders_layout(channels_last):
    trainer = Trainer(TrainConfig.from_dict({**TINY, "channels_last": channels_last,
                                             "max_steps_per_epoch": 2}))
    assert trainer.channels_last == (channels_last == "on")
    images = trainer.data.pretrain.images[:32]
    views = trainer.views(images, trainer.strategy.views, torch.Generator().manual_seed(0))
    cl = [v.is_contiguous(memory_format=torch.channels_last) for v in views]
    assert cl == [channels_last == "on"] * len(views)
    assert trainer.train_epoch()["steps"] == 2


def test_channels_last_is_the_default_layout():
    assert Trainer(TrainConfig.from_dict(TINY)).channels_last


# ------------------------------------------------------------------------------------------
# DDP
def test_ddp_options():
    opts = ddp_options()
    assert opts["gradient_as_bucket_view"] is True
    assert opts.get("forward_sync_buffers", opts.get("broadcast_buffers")) is False


def _ddp_worker(rank: int, tmp: str, cache: str) -> None:
    os.environ["LEOCLR_CACHE"] = cache
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=2)
    trainer = Trainer(TrainConfig.from_dict({**TINY, "max_steps_per_epoch": 2}))
    trainer.train_epoch()
    trainer.sync_bn_statistics()  # what fit() does after every epoch
    state = {f"q.{k}": v for k, v in trainer.query_encoder.state_dict().items()}
    state.update({f"k.{k}": v for k, v in trainer.key_encoder.state_dict().items()})
    torch.save(state, f"{tmp}/out{rank}.pt")
    dist.destroy_process_group()


def test_ddp_ranks_agree_on_parameters_and_bn_buffers_after_an_epoch(tmp_path):
    mp.spawn(_ddp_worker, args=(str(tmp_path), os.environ["LEOCLR_CACHE"]), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"out{r}.pt", weights_only=True) for r in range(2))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert any("running_mean" in n for n in a)


# ------------------------------------------------------------------------------------------
# CUDA only (skipped without a GPU)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_prefetcher_and_pinned_batches_deliver_the_same_batches():
    ds = _toy(30)
    kw = dict(shuffle=True, seed=1, epoch=0, drop_last=False)
    expected = list(iterate_batches(ds, 7, **kw))
    got = list(DevicePrefetcher(iterate_batches(ds, 7, pin_memory=True, **kw), torch.device("cuda")))
    for (xe, ye), (xg, yg) in zip(expected, got):
        assert xg.is_cuda and torch.equal(xe, xg.cpu()) and torch.equal(ye, yg.cpu())


@cuda
def test_cuda_training_step_does_not_synchronise_with_the_host():
    trainer = Trainer(TrainConfig.from_dict({**TINY, "device": "cuda", "amp": "bf16",
                                             "channels_last": "on"}))
    images = trainer.data.pretrain.images[:32].cuda()
    view_gen = torch.Generator("cuda").manual_seed(0)
    shuffle_gen = torch.Generator().manual_seed(0)
    trainer.train_step(images, view_gen, shuffle_gen)  # warm-up (allocations, pinned blocks)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = trainer.train_step(images, view_gen, shuffle_gen)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()
