"""Encoders, EMA key encoder (Eq. 1), queue and SplitBatchNorm, checked numerically."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.models import (
    Encoder,
    KeyQueue,
    SplitBatchNorm,
    build_backbone,
    convert_split_bn,
    ema_update_,
    make_key_encoder,
)


@pytest.mark.parametrize(
    "name,dim,size", [("small_cnn", 256, 32), ("resnet18_cifar", 512, 32), ("resnet18", 512, 64), ("resnet50", 2048, 64)]
)
def test_backbones_shapes(name, dim, size):
    net, d = build_backbone(name)
    assert d == dim
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, size, size)).shape == (2, dim)


def test_cifar_stem_keeps_resolution():
    net, _ = build_backbone("resnet18_cifar")
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)


def test_heads_v1_linear_v2_mlp():
    v1 = Encoder("small_cnn", "linear", 128)
    v2 = Encoder("small_cnn", "mlp", 128)
    assert isinstance(v1.head, nn.Linear) and v1.head.out_features == 128
    assert [type(m) for m in v2.head] == [nn.Linear, nn.ReLU, nn.Linear]
    assert v2.head[0].in_features == v2.head[0].out_features == 256 and v2.head[2].out_features == 128


def test_ema_update_matches_formula_for_params_and_buffers():
    torch.manual_seed(0)
    q = Encoder("small_cnn", "mlp", 16)
    k = make_key_encoder(q)
    assert all(not p.requires_grad for p in k.parameters())
    with torch.no_grad():  # move q away from k, including BN running stats
        for p in q.parameters():
            p.add_(torch.randn_like(p))
        for b in q.buffers():
            if b.is_floating_point():
                b.add_(torch.rand_like(b))
            else:
                b.add_(5)
    before_k = {n: t.clone() for n, t in k.state_dict().items()}
    m = 0.9
    ema_update_(k, q, m)
    qs = q.state_dict()
    for name, kt in k.state_dict().items():
        if kt.is_floating_point():
            torch.testing.assert_close(kt, m * before_k[name] + (1 - m) * qs[name])
        else:
            assert torch.equal(kt, qs[name])  # integer buffers (num_batches_tracked) copied
    # hand check on one scalar: 0.9 * a + 0.1 * b
    name = "head.2.bias"
    a, b = before_k[name][0].item(), qs[name][0].item()
    assert k.state_dict()[name][0].item() == pytest.approx(0.9 * a + 0.1 * b, rel=1e-5)


def test_ema_momentum_zero_copies_and_near_one_barely_moves():
    q = Encoder("small_cnn", "linear", 8)
    k = make_key_encoder(q)
    with torch.no_grad():
        for p in q.parameters():
            p.add_(1.0)
    ema_update_(k, q, 0.0)
    for pk, pq in zip(k.parameters(), q.parameters()):
        torch.testing.assert_close(pk, pq)


def test_queue_fifo_wraps_and_handles_any_batch_size():
    queue = KeyQueue(size=5, dim=2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(5))  # initialised normalised
    batch = lambda *vals: torch.tensor([[v, 0.0] for v in vals])  # noqa: E731
    queue.enqueue(batch(1, 2, 3))
    assert queue.keys[:3, 0].tolist() == [1, 2, 3] and queue.ptr.item() == 3
    queue.enqueue(batch(4, 5, 6))  # 3 % 5 != 0: wraps around, overwriting the oldest key
    assert queue.keys[:, 0].tolist() == [6, 2, 3, 4, 5] and queue.ptr.item() == 1
    queue.enqueue(batch(7, 8, 9, 10, 11, 12, 13))  # more keys than the queue: keep the last 5
    assert queue.keys[:, 0].tolist() == [9, 10, 11, 12, 13] and queue.ptr.item() == 0


def test_split_batchnorm_equals_bn_per_chunk():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4) * 3 + 1
    split = SplitBatchNorm(3, num_splits=2)
    plain = nn.BatchNorm2d(3)
    out = split(x)
    # split j holds samples j, j + g, j + 2g, ... (the official demo's layout): plain BN on each
    expected = torch.empty_like(x)
    expected[0::2], expected[1::2] = plain(x[0::2]), plain(x[1::2])
    torch.testing.assert_close(out, expected)
    # running stats: mean of the per-split updates (momentum 0.1 from 0 / 1)
    m0, m1 = x[0::2].mean(dim=(0, 2, 3)), x[1::2].mean(dim=(0, 2, 3))
    torch.testing.assert_close(split.running_mean, 0.1 * (m0 + m1) / 2)
    split.eval()
    plain_eval = nn.BatchNorm2d(3).eval()
    plain_eval.load_state_dict({k: v for k, v in split.state_dict().items()})
    torch.testing.assert_close(split(x), plain_eval(x))


def test_convert_split_bn_keeps_weights():
    enc = Encoder("small_cnn", "mlp", 8)
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    convert_split_bn(enc, 4)
    assert sum(isinstance(m, SplitBatchNorm) for m in enc.modules()) == 4
    assert not any(type(m) is nn.BatchNorm2d for m in enc.modules())
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(v, state[k])


def test_encoder_features_vs_embedding():
    enc = Encoder("resnet18_cifar", "mlp", 128).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert enc.features(x).shape == (2, 512)
        z = enc(x)
    assert z.shape == (2, 128)
    assert not torch.allclose(F.normalize(z, dim=1), z)  # normalisation is the caller's job
