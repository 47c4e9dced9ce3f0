"""Contrastive losses of MoCo v2 and LeOCLR, as pure functions.

Every equation of the method (docs/method.md) that is a loss lives here:
- `info_nce`: LeOCLR Eq. 2 / MoCo's InfoNCE with a queue of negatives.
- `moco_v2_loss`: l(q1, k2) (+ l(q2, k1) when symmetric).
- `leoclr_loss`: LeOCLR Eq. 3, l(u, sg(v1)) + l(u, sg(v2)); the two crops never attract.
- `leoclr_random_original_loss`: Table 8, the same loss with a random crop as the query.
- `attract_all_loss`: Table 8, every ordered pair of distinct views (our reading).
- `nt_xent`, `end_to_end_loss`: the SimCLR-style mechanism (Table 5), in-batch negatives.

Shapes: N = batch size, C = embedding dim (128), K = queue length. Query/key embeddings are
L2-normalised by the caller. Per-batch losses are means over the N samples (the paper's Eq. 3
writes a sum over i; the mean only rescales the gradient, as in the official MoCo code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Logits under bf16/fp16 autocast are upcast: the softmax over K+1 terms needs fp32."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with a queue of negatives (LeOCLR Eq. 2).

    q: N x C query embeddings, k: N x C positive keys (no gradient is taken through k by the
    callers of the momentum mechanism), queue: K x C negatives; all L2-normalised.
    logits = [q.k+, q.queue^T] / tau  (N x (1 + K)); target index 0; returns mean cross-entropy.
    """
    l_pos = (q * k).sum(dim=1, keepdim=True)  # N x 1
    l_neg = q @ queue.t()  # N x K
    logits = _at_least_fp32(torch.cat([l_pos, l_neg], dim=1)) / temperature
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target)


def moco_v2_loss(q1, k2, queue, temperature, *, q2=None, k1=None) -> torch.Tensor:
    """MoCo v2: query = crop 1, key = crop 2. Symmetric (q2, k1 given): l(q1,k2) + l(q2,k1)."""
    loss = info_nce(q1, k2, queue, temperature)
    if (q2 is None) != (k1 is None):
        raise ValueError("symmetric MoCo needs both q2 and k1")
    if q2 is not None:
        loss = loss + info_nce(q2, k1, queue, temperature)
    return loss


def leoclr_loss(u, v1, v2, queue, temperature) -> torch.Tensor:
    """LeOCLR Eq. 3: u = f_q(original X) (N x C); v1, v2 = f_k(crops) (N x C, stop-gradient).

    l = l(u, v1) + l(u, v2): the uncropped image attracts each crop; the crops never attract
    each other, so two crops showing different objects are never pulled together.
    """
    return info_nce(u, v1, queue, temperature) + info_nce(u, v2, queue, temperature)


def leoclr_random_original_loss(u_crop, v1, v2, queue, temperature) -> torch.Tensor:
    """Table 8 ablation: as `leoclr_loss`, but the query is a third random crop of X."""
    return leoclr_loss(u_crop, v1, v2, queue, temperature)


def attract_all_loss(qs: Sequence[torch.Tensor], ks: Sequence[torch.Tensor], queue, temperature) -> torch.Tensor:
    """Table 8 ablation: views (X, X1, X2); sum of l(f_q(a), f_k(b)) over ordered pairs a != b."""
    if len(qs) != len(ks):
        raise ValueError("attract_all needs the same views on both encoders")
    return sum(
        info_nce(qs[a], ks[b], queue, temperature)
        for a in range(len(qs))
        for b in range(len(ks))
        if a != b
    )


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR): z1, z2: N x C L2-normalised embeddings of two views of the same N images.

    Over the 2N embeddings, each one's positive is its partner; the other 2N - 2 are negatives.
    Returns the mean over the 2N anchors of -log softmax(sim / tau)[partner].
    """
    n = z1.shape[0]
    z = torch.cat([z1, z2], dim=0)  # 2N x C
    sim = _at_least_fp32(z @ z.t()) / temperature  # 2N x 2N
    sim.fill_diagonal_(float("-inf"))  # an anchor is never its own negative
    # built on the device: a host tensor .to(cuda) would be a synchronising copy every step
    target = torch.arange(2 * n, device=z.device).add_(n).remainder_(2 * n)  # partner index
    return F.cross_entropy(sim, target)


def end_to_end_loss(zs: Sequence[torch.Tensor], pairs: Sequence[tuple[int, int]], temperature) -> torch.Tensor:
    """End-to-end mechanism (Table 5): one encoder, gradients through every view.

    zs: embeddings of each view (N x C); pairs: unordered view pairs to attract.
    """
    return sum(nt_xent(zs[a], zs[b], temperature) for a, b in pairs)


# ------------------------------------------------------------------------------------------
# The attraction strategies (docs/method.md): which views each encoder sees and the loss.
@dataclass(frozen=True)
class Strategy:
    """views: view kinds generated per image, in order (see trainables.views);
    query: indices into views fed to f_q; key: indices fed to f_k (momentum mechanism);
    loss: f(q_list, k_list, queue, tau) -> scalar; pairs: views attracted end-to-end."""

    name: str
    views: tuple[str, ...]
    query: tuple[int, ...]
    key: tuple[int, ...]
    loss: Callable[..., torch.Tensor]
    pairs: tuple[tuple[int, int], ...]
    symmetric_query: tuple[int, ...] = ()
    symmetric_key: tuple[int, ...] = ()

    def query_views(self, symmetric: bool = False) -> tuple[int, ...]:
        return self.symmetric_query if symmetric and self.symmetric_query else self.query

    def key_views(self, symmetric: bool = False) -> tuple[int, ...]:
        return self.symmetric_key if symmetric and self.symmetric_key else self.key


def _moco(qs, ks, queue, t):
    if len(qs) == 2:  # symmetric: qs = (q1, q2), ks = (k1, k2)
        return moco_v2_loss(qs[0], ks[1], queue, t, q2=qs[1], k1=ks[0])
    return moco_v2_loss(qs[0], ks[0], queue, t)


def _leoclr(qs, ks, queue, t):
    return leoclr_loss(qs[0], ks[0], ks[1], queue, t)


def _leoclr_random_original(qs, ks, queue, t):
    return leoclr_random_original_loss(qs[0], ks[0], ks[1], queue, t)


STRATEGIES: dict[str, Strategy] = {
    "moco_v2": Strategy(
        "moco_v2", views=("crop", "crop"), query=(0,), key=(1,), loss=_moco, pairs=((0, 1),),
        symmetric_query=(0, 1), symmetric_key=(0, 1),
    ),
    "leoclr": Strategy(
        "leoclr", views=("original", "crop", "crop"), query=(0,), key=(1, 2), loss=_leoclr,
        pairs=((0, 1), (0, 2)),
    ),
    "leoclr_random_original": Strategy(
        "leoclr_random_original", views=("crop", "crop", "crop"), query=(0,), key=(1, 2),
        loss=_leoclr_random_original, pairs=((0, 1), (0, 2)),
    ),
    "attract_all": Strategy(
        "attract_all", views=("original", "crop", "crop"), query=(0, 1, 2), key=(0, 1, 2),
        loss=attract_all_loss, pairs=((0, 1), (0, 2), (1, 2)),
    ),
}
