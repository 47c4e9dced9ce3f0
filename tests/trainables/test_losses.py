"""Every loss of docs/method.md checked against a small hand computation (plain Python math)."""

import math

import pytest
import torch
import torch.nn.functional as F

from trainables.losses import (
    STRATEGIES,
    attract_all_loss,
    end_to_end_loss,
    info_nce,
    leoclr_loss,
    leoclr_random_original_loss,
    moco_v2_loss,
    nt_xent,
)


def unit(*v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def hand_info_nce(qs, ks, queue, t):
    """-mean_i log( exp(q_i.k_i/t) / (exp(q_i.k_i/t) + sum_j exp(q_i.n_j/t)) )."""
    total = 0.0
    for q, k in zip(qs, ks):
        pos = math.exp(dot(q, k) / t)
        neg = sum(math.exp(dot(q, n) / t) for n in queue)
        total += -math.log(pos / (pos + neg))
    return total / len(qs)


Q = [unit(1, 0, 0), unit(0, 1, 1)]
K1 = [unit(1, 1, 0), unit(0, 1, 0)]
K2 = [unit(1, 0, 1), unit(1, 1, 1)]
QUEUE = [unit(0, 0, 1), unit(-1, 0, 0), unit(1, -1, 2)]
T = 0.2


def tens(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_info_nce_matches_hand_computation():
    got = info_nce(tens(Q), tens(K1), tens(QUEUE), T).item()
    assert got == pytest.approx(hand_info_nce(Q, K1, QUEUE, T), rel=1e-6)
    # a worked single case in closed form: q = k, one orthogonal negative, t = 1
    got = info_nce(tens([[1.0, 0.0]]), tens([[1.0, 0.0]]), tens([[0.0, 1.0]]), 1.0).item()
    assert got == pytest.approx(-math.log(math.e / (math.e + 1.0)), rel=1e-9)


def test_info_nce_positive_at_index_zero_and_temperature():
    q = tens([[1.0, 0.0]])
    # the positive is identical to q, the negative opposite: loss falls as tau falls
    losses = [info_nce(q, q, tens([[-1.0, 0.0]]), t).item() for t in (1.0, 0.5, 0.1)]
    assert losses[0] > losses[1] > losses[2] > 0


def test_moco_v2_asymmetric_and_symmetric():
    asym = moco_v2_loss(tens(Q), tens(K2), tens(QUEUE), T).item()
    assert asym == pytest.approx(hand_info_nce(Q, K2, QUEUE, T), rel=1e-6)
    q2 = [unit(1, 2, 3), unit(3, 1, 0)]
    sym = moco_v2_loss(tens(Q), tens(K2), tens(QUEUE), T, q2=tens(q2), k1=tens(K1)).item()
    assert sym == pytest.approx(hand_info_nce(Q, K2, QUEUE, T) + hand_info_nce(q2, K1, QUEUE, T), rel=1e-6)
    with pytest.raises(ValueError):
        moco_v2_loss(tens(Q), tens(K2), tens(QUEUE), T, q2=tens(q2))


def test_leoclr_eq3_is_sum_over_both_crops():
    expected = hand_info_nce(Q, K1, QUEUE, T) + hand_info_nce(Q, K2, QUEUE, T)
    assert leoclr_loss(tens(Q), tens(K1), tens(K2), tens(QUEUE), T).item() == pytest.approx(expected, rel=1e-6)
    assert leoclr_random_original_loss(tens(Q), tens(K1), tens(K2), tens(QUEUE), T).item() == pytest.approx(
        expected, rel=1e-6)


def test_leoclr_never_attracts_the_two_crops():
    # d loss / d v2 would be the crop-crop attraction; keys are stop-gradient, and the loss has no
    # v1.v2 term: changing v1 and v2 jointly while keeping u.v1, u.v2 fixed leaves it unchanged.
    u = tens([[1.0, 0.0, 0.0]])
    v1a, v2a = tens([unit(1, 1, 0)]), tens([unit(1, -1, 0)])  # v1.v2 = 0
    v1b, v2b = tens([unit(1, 1, 0)]), tens([unit(1, 0, 1)])  # same u.v, v1.v2 = 0.5
    queue = tens(QUEUE)
    assert leoclr_loss(u, v1a, v2a, queue, T).item() == pytest.approx(leoclr_loss(u, v1b, v2b, queue, T).item())


def test_attract_all_sums_six_ordered_pairs():
    views_q = [Q, K1, K2]
    views_k = [K2, Q, K1]
    expected = sum(
        hand_info_nce(views_q[a], views_k[b], QUEUE, T) for a in range(3) for b in range(3) if a != b
    )
    got = attract_all_loss([tens(v) for v in views_q], [tens(v) for v in views_k], tens(QUEUE), T).item()
    assert got == pytest.approx(expected, rel=1e-6)


def hand_nt_xent(z1, z2, t):
    z = z1 + z2
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        partner = i + n if i < n else i - n
        denom = sum(math.exp(dot(z[i], z[j]) / t) for j in range(2 * n) if j != i)
        total += -math.log(math.exp(dot(z[i], z[partner]) / t) / denom)
    return total / (2 * n)


def test_nt_xent_matches_hand_computation():
    got = nt_xent(tens(Q), tens(K1), 0.5).item()
    assert got == pytest.approx(hand_nt_xent(Q, K1, 0.5), rel=1e-6)
    pairs = STRATEGIES["leoclr"].pairs
    got = end_to_end_loss([tens(Q), tens(K1), tens(K2)], pairs, 0.5).item()
    assert got == pytest.approx(hand_nt_xent(Q, K1, 0.5) + hand_nt_xent(Q, K2, 0.5), rel=1e-6)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_table_matches_spec(name):
    spec = STRATEGIES[name]
    expected_views = {
        "moco_v2": ("crop", "crop"),
        "leoclr": ("original", "crop", "crop"),
        "leoclr_random_original": ("crop", "crop", "crop"),
        "attract_all": ("original", "crop", "crop"),
    }[name]
    assert spec.views == expected_views
    if name in ("leoclr", "leoclr_random_original"):
        assert spec.query == (0,) and spec.key == (1, 2)  # query never among the keys
    # the loss dispatch computes the documented formula on random embeddings
    g = torch.Generator().manual_seed(0)
    embs = [F.normalize(torch.randn(4, 8, generator=g, dtype=torch.float64), dim=1) for _ in spec.views]
    queue = F.normalize(torch.randn(16, 8, generator=g, dtype=torch.float64), dim=1)
    qs = [embs[i] for i in spec.query]
    ks = [embs[i] for i in spec.key]
    if name == "moco_v2":
        expected = info_nce(embs[0], embs[1], queue, T)
    elif name == "attract_all":
        expected = sum(info_nce(embs[a], embs[b], queue, T) for a in range(3) for b in range(3) if a != b)
    else:
        expected = info_nce(embs[0], embs[1], queue, T) + info_nce(embs[0], embs[2], queue, T)
    assert spec.loss(qs, ks, queue, T).item() == pytest.approx(expected.item(), rel=1e-9)


def test_symmetric_moco_dispatch():
    spec = STRATEGIES["moco_v2"]
    assert spec.query_views(True) == (0, 1) and spec.key_views(True) == (0, 1)
    g = torch.Generator().manual_seed(1)
    q1, q2, k1, k2 = (F.normalize(torch.randn(3, 5, generator=g, dtype=torch.float64), dim=1) for _ in range(4))
    queue = F.normalize(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=1)
    expected = info_nce(q1, k2, queue, T) + info_nce(q2, k1, queue, T)
    assert spec.loss([q1, q2], [k1, k2], queue, T).item() == pytest.approx(expected.item())


def test_loss_goes_down_under_sgd_steps():
    """A query embedding trained on info_nce moves toward its key and away from the queue."""
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(8, 16, generator=g, requires_grad=True)
    k = F.normalize(torch.randn(8, 16, generator=g), dim=1)
    queue = F.normalize(torch.randn(64, 16, generator=g), dim=1)
    opt = torch.optim.SGD([raw], lr=2.0)
    losses = []
    for _ in range(60):
        loss = info_nce(F.normalize(raw, dim=1), k, queue, 0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
