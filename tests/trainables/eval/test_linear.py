"""Encoder evaluation (trainables.eval.linear): linear probe, kNN, random-crop test, frozen backbone.

Tiny hand-made data (uniform-colour images, a centre patch) and stub backbones whose features
are known, so every number can be checked by hand; one tiny training run (the
``trained_checkpoint`` fixture) for ``evaluate_checkpoint``.
"""

from __future__ import annotations


import pytest
import torch
import torch.nn as nn

from trainables.data import DataBundle, TensorImageDataset
from trainables.eval import (
    EvaluationError,
    LinearProtocol,
    evaluate_checkpoint,
    evaluate_encoder,
    make_linear_classifier,
    topk_accuracy,
)
from trainables.knn import extract_features, knn_accuracy
from trainables.models import SmallCNN
from trainables.views import ViewConfig, ViewMaker

COLOURS = torch.tensor([[220, 30, 30], [30, 200, 40], [40, 50, 210], [230, 220, 40]], dtype=torch.uint8)


def colour_bundle(n_train: int = 12, n_test: int = 6, size: int = 8, classes: int = 3,
                  noise: int = 20, seed: int = 0) -> DataBundle:
    """Class c = an image of colour COLOURS[c] plus uniform per-pixel noise (linearly separable
    by the mean colour)."""
    g = torch.Generator().manual_seed(seed)

    def split(per_class: int) -> TensorImageDataset:
        labels = torch.arange(classes).repeat_interleave(per_class)
        base = COLOURS[labels].float()[:, :, None, None].expand(-1, -1, size, size)
        jitter = torch.randint(-noise, noise + 1, base.shape, generator=g).float()
        images = (base + jitter).clamp(0, 255).to(torch.uint8)
        return TensorImageDataset(images, labels, [f"c{i}" for i in range(classes)])

    train, test = split(n_train), split(n_test)
    val = split(2)  # drawn after test: train and test do not depend on it
    return DataBundle(train, train, val, test, train.classes, size)


def centre_bundle(n_train: int = 16, n_test: int = 16, size: int = 16, seed: int = 0) -> DataBundle:
    """Class c = a 4 x 4 centre patch of colour COLOURS[c] on a background of another class's
    colour: only the centre tells the class."""
    g = torch.Generator().manual_seed(seed)
    classes = 4

    def split(per_class: int) -> TensorImageDataset:
        labels = torch.arange(classes).repeat_interleave(per_class)
        other = (labels + torch.randint(1, classes, labels.shape, generator=g)) % classes
        images = COLOURS[other][:, :, None, None].expand(-1, -1, size, size).clone()
        c0 = size // 2 - 2
        images[:, :, c0:c0 + 4, c0:c0 + 4] = COLOURS[labels][:, :, None, None]
        return TensorImageDataset(images, labels, [f"c{i}" for i in range(classes)])

    train, test = split(n_train), split(n_test)
    val = split(2)  # drawn after test: train and test do not depend on it
    return DataBundle(train, train, val, test, train.classes, size)


class MeanColour(nn.Module):
    """Stub backbone: B x 3 x R x R -> B x 3, the mean of each channel (no parameters)."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


class CentreColour(nn.Module):
    """Stub backbone that only looks at the central 4 x 4 pixels of its input view."""

    def forward(self, x):
        c0 = x.shape[-1] // 2 - 2
        return x[:, :, c0:c0 + 4, c0:c0 + 4].mean(dim=(2, 3))


class StreamingDataset(torch.utils.data.Dataset):
    """The same images as a TensorImageDataset, but item by item (the DataLoader path)."""

    def __init__(self, ds: TensorImageDataset):
        self.ds = ds
        self.classes = ds.classes

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds.images[i].clone(), int(self.ds.labels[i])


FAST = dict(epochs=4, batch_size=8, lr=1.0)


def without_time(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "eval_time_s"}


# ------------------------------------------------------------------------------------------------
# numbers by hand
# ------------------------------------------------------------------------------------------------


def test_topk_accuracy_by_hand():
    scores = torch.tensor([
        [0.9, 0.1, 0.0, 0.2, 0.3, 0.4],  # label 0: rank 1
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # label 0: rank 6 (last)
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # label 4: rank 5
        [0.0, 0.9, 0.8, 0.1, 0.2, 0.3],  # label 2: rank 2
    ])
    labels = torch.tensor([0, 0, 4, 2])
    assert topk_accuracy(scores, labels, 1) == 25.0  # only row 0
    assert topk_accuracy(scores, labels, 2) == 50.0  # rows 0, 3
    assert topk_accuracy(scores, labels, 5) == 75.0  # rows 0, 2, 3
    # fewer classes than k: every class is in the top k -> 100 %
    assert topk_accuracy(scores[:, :3], torch.tensor([0, 0, 1, 2]), 5) == 100.0
    assert topk_accuracy(scores[:, :3], torch.tensor([0, 0, 1, 2]), 1) == 25.0


def test_linearly_separable_features_reach_100_percent_and_knn_matches_hand_computation():
    data = colour_bundle()
    epochs_seen = []
    for augment in ("none", "crop_flip"):
        r = evaluate_encoder(MeanColour(), data, LinearProtocol(augment=augment, **FAST), image_size=8,
                             knn_k=5, progress=epochs_seen.append)
        assert r["linear_top1"] == 100.0 and r["linear_top5"] == 100.0
        assert r["random_crop_top1"] == 100.0 and r["random_crop_drop"] == 0.0  # colour survives crops
        assert r["linear_train_top1"] == 100.0 or augment == "crop_flip"
        assert (r["n_train"], r["n_test"], r["num_classes"], r["feature_dim"]) == (36, 18, 3, 3)
        assert r["eval_time_s"] > 0
    assert [s["epoch"] for s in epochs_seen] == [1, 2, 3, 4] * 2
    assert [s["lr"] for s in epochs_seen[:4]] == pytest.approx([1.0, 1.0, 0.1, 0.01])  # 60 %/80 % of 4

    # kNN: the same as trainables.knn on the eval view, computed independently here
    maker = ViewMaker(ViewConfig(size=8))
    batches = lambda ds: [(ds.images, ds.labels)]  # noqa: E731
    bank, bank_y = extract_features(MeanColour(), batches(data.memory), maker.eval_view)
    test, test_y = extract_features(MeanColour(), batches(data.test), maker.eval_view)
    # a wrong label on two test images: kNN top-1 must drop to 16/18
    test_y_bad = test_y.clone()
    test_y_bad[:2] = 2
    wrong = DataBundle(data.memory, data.memory, data.val,
                       TensorImageDataset(data.test.images, test_y_bad, data.classes), data.classes, 8)
    r = evaluate_encoder(MeanColour(), wrong, LinearProtocol(augment="none", **FAST), image_size=8, knn_k=5)
    expected = knn_accuracy(test, test_y_bad, bank, bank_y, 3, k=5, t=0.1)["knn_top1"]
    assert r["knn_top1"] == expected == pytest.approx(100.0 * 16 / 18)
    assert r["linear_top1"] == pytest.approx(100.0 * 16 / 18)
    assert r["knn_top5"] == 100.0  # 3 classes


def test_linear_classifier_init_is_mocos_and_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    layer = make_linear_classifier(512, 10, torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), before)
    assert layer.bias.abs().max().item() == 0.0
    assert layer.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert abs(layer.weight.mean().item()) < 0.001


# ------------------------------------------------------------------------------------------------
# the backbone stays frozen
# ------------------------------------------------------------------------------------------------


class ModeRecorder(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training or any(m.training for m in self.net.modules()))
        return self.net(x)


def test_backbone_parameters_and_bn_statistics_are_untouched():
    torch.manual_seed(0)
    net = SmallCNN(width=4)
    with torch.no_grad():  # move the BN running statistics away from their initial values
        net.train()
        net(torch.randn(8, 3, 16, 16) * 3 + 1)
    backbone = ModeRecorder(net).eval()
    saved = {k: v.clone() for k, v in backbone.state_dict().items()}
    assert any(k.endswith("running_mean") and v.abs().sum() > 0 for k, v in saved.items())
    data = colour_bundle(n_train=8, n_test=4, size=16)
    protocol = LinearProtocol(epochs=2, batch_size=16, lr=1.0)  # crop_flip: forwards while training
    evaluate_encoder(backbone, data, protocol, image_size=16)
    after = backbone.state_dict()
    assert saved.keys() == after.keys()
    for k, v in saved.items():
        assert torch.equal(v, after[k]), k
    assert not any(m.training for m in backbone.modules())
    assert all(p.grad is None for p in backbone.parameters())
    assert backbone.modes and not any(backbone.modes)  # eval mode at every forward

    # a backbone handed over in train mode is evaluated in eval mode and given back in train mode
    backbone.train()
    backbone.modes.clear()
    evaluate_encoder(backbone, data, protocol, image_size=16)
    assert not any(backbone.modes) and all(m.training for m in backbone.modules())
    for k, v in saved.items():
        assert torch.equal(v, backbone.state_dict()[k]), k


# ------------------------------------------------------------------------------------------------
# random-crop test, determinism, dataset types
# ------------------------------------------------------------------------------------------------


def test_random_crop_test_hurts_a_centre_only_backbone():
    data = centre_bundle()
    protocol = LinearProtocol(augment="none", random_crop_scale=(0.05, 0.25), random_crop_repeats=2,
                              epochs=6, batch_size=16, lr=1.0)
    r = evaluate_encoder(CentreColour(), data, protocol, image_size=16, knn_k=5)
    assert r["linear_top1"] == 100.0  # the eval view shows the centre patch
    assert r["random_crop_drop"] == r["linear_top1"] - r["random_crop_top1"]
    assert r["random_crop_drop"] > 30.0  # most small crops miss the centre
    # a backbone that averages the whole view does not care about the centre: worse, not 100 %
    flat = evaluate_encoder(MeanColour(), data, protocol, image_size=16, knn_k=5)
    assert flat["linear_top1"] < 90.0


def test_same_seed_same_result_and_both_dataset_types_agree():
    data = centre_bundle(n_train=8, n_test=8)  # hard for MeanColour: results depend on the seed
    protocol = LinearProtocol(**FAST, random_crop_repeats=2)
    rng = torch.get_rng_state()
    a = evaluate_encoder(MeanColour(), data, protocol, image_size=6)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is untouched
    torch.manual_seed(123)  # the global RNG does not matter
    b = evaluate_encoder(MeanColour(), data, protocol, image_size=6)
    assert without_time(a) == without_time(b)
    streaming = DataBundle(StreamingDataset(data.memory), StreamingDataset(data.memory),
                           StreamingDataset(data.val), StreamingDataset(data.test), data.classes, 8)
    c = evaluate_encoder(MeanColour(), streaming, protocol, image_size=6)
    assert without_time(c) == without_time(a)
    other = evaluate_encoder(MeanColour(), data, protocol.replace(seed=1), image_size=6)
    assert without_time(other) != without_time(a)  # the seed drives crops, order and init


def test_bad_inputs_are_refused():
    data = colour_bundle()
    with pytest.raises(EvaluationError, match="image_size"):
        evaluate_encoder(MeanColour(), data, LinearProtocol(), image_size=0)
    bad = DataBundle(data.memory, data.memory, data.val, data.test, data.classes[:2], 8)  # labels up to 2
    with pytest.raises(EvaluationError, match="labels in \\[0, 2\\]"):
        evaluate_encoder(MeanColour(), bad, LinearProtocol(**FAST), image_size=8)
    with pytest.raises(EvaluationError, match="diverged"):
        evaluate_encoder(lambda_backbone(float("nan")), data, LinearProtocol(**FAST), image_size=8)


def lambda_backbone(value: float) -> nn.Module:
    class Const(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 2), value)

    return Const()


# ------------------------------------------------------------------------------------------------
# a trained checkpoint
# ------------------------------------------------------------------------------------------------


def test_evaluate_checkpoint_runs_with_the_runs_settings(trained_checkpoint):
    # data=None: the run's own dataset (photo_patches, 16 classes x (7 train + 1 val + 4 test)):
    # the linear probe trains on memory, validation held out
    protocol = LinearProtocol.for_dataset_size(112, augment="none", epochs=10)
    assert (protocol.batch_size, protocol.lr) == (8, 0.9375)
    r = evaluate_checkpoint(trained_checkpoint, protocol, device="cpu")
    assert (r["n_train"], r["n_test"], r["num_classes"], r["feature_dim"]) == (112, 64, 16, 256)
    assert r["linear_top1"] > 20.0 and r["knn_top1"] > 20.0  # chance: 6.25 %
    assert r["linear_top5"] >= r["linear_top1"] and r["knn_top5"] >= r["knn_top1"]


def test_centre_crop_fraction_takes_the_centre():
    """test_crop_fraction=0.25 of a 16 px image is its central 4 x 4 square, exactly the class
    patch of centre_bundle; with R = 4 there is no resampling, so a MeanColour backbone sees the
    patch's colour only. The whole image (fraction 1) shows mostly the misleading background."""
    data = centre_bundle(n_train=4, n_test=4)
    protocol = LinearProtocol(augment="none", test_crop_fraction=0.25, **FAST)
    r = evaluate_encoder(MeanColour(), data, protocol, image_size=4, knn_k=3)
    assert r["linear_top1"] == 100.0 and r["knn_top1"] == 100.0  # only the patch is seen
    whole = evaluate_encoder(MeanColour(), data, protocol.replace(test_crop_fraction=1.0), image_size=4, knn_k=3)
    assert whole["linear_top1"] < 100.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_evaluation_gives_the_backbone_back_on_its_device():
    data = colour_bundle(size=16)
    r = evaluate_encoder(MeanColour(), data, LinearProtocol(**FAST), image_size=16, device="cuda")
    assert r["linear_top1"] == r["knn_top1"] == r["random_crop_top1"] == 100.0
    torch.manual_seed(0)
    net = SmallCNN(width=4).eval()
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    evaluate_encoder(net, data, LinearProtocol(**FAST, test_crop_fraction=0.5), image_size=16, device="cuda")
    assert all(t.device.type == "cpu" for t in net.state_dict().values())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in saved.items())
