"""Whole-network fine-tuning (trainables.eval.finetune): the semi-supervised protocols on a tiny
trained encoder (the ``trained_checkpoint`` fixture: small CNN, photo_patches at 16 px)."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.checkpoint import load_encoder
from trainables.data import load_data
from trainables.data.subsets import dataset_labels
from trainables.eval import (
    FinetuneProtocol,
    KnnProtocol,
    LinearProtocol,
    ProtocolError,
    RandomCropProtocol,
    TransferProtocol,
    run_finetune,
    run_knn,
    run_linear,
)


@pytest.fixture(scope="module")
def encoder_and_data(trained_checkpoint):
    encoder = load_encoder(trained_checkpoint)
    cfg = encoder.config
    data = load_data(cfg.dataset, root=None, image_size=cfg.image_size, photo_patches=cfg.photo_patches)
    return encoder, data


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_fine_tuning_moves_the_backbone_and_linear_evaluation_does_not(encoder_and_data):
    encoder, data = encoder_and_data
    before = state(encoder.backbone)
    settings = FinetuneProtocol.semi_supervised(0.25, dataset_labels(data.memory), epochs=3)
    assert (settings.label_fraction, settings.batch_size) == (0.25, 4)  # 32 images: 8 steps of 4
    assert settings.lr == pytest.approx(0.05 * 4 / 256) and settings.head_lr == pytest.approx(0.5 * 4 / 256)
    epochs = []
    tuned = run_finetune(encoder.backbone, data, settings, image_size=16, device="cpu", progress=epochs.append)

    # the caller's backbone is untouched; the fine-tuned copy moved, its BN statistics too
    assert all(torch.equal(v, encoder.backbone.state_dict()[k]) for k, v in before.items())
    after = tuned.model.backbone.state_dict()
    moved = [k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after[k])]
    assert any(k.endswith("weight") and "conv" in k or k.startswith("features.0") for k in moved)
    assert any(k.endswith("running_mean") for k in moved)
    assert len(moved) >= 0.9 * sum(v.is_floating_point() for v in before.values())

    m = tuned.metrics
    assert (m["n_labelled"], m["per_class_min"], m["per_class_max"], m["n_train"], m["n_test"]) == (32, 2, 2, 112, 64)  # 7 train + 1 val per class
    assert 0 <= m["top1"] <= m["top5"] <= 100 and m["num_classes"] == 16
    assert [e["epoch"] for e in epochs] == [1, 2, 3] and tuned.history == epochs
    assert set(epochs[0]) == {"epoch", "lr", "head_lr", "train_loss", "train_top1"}
    assert epochs[0]["lr"] > epochs[-1]["lr"] > 0  # cosine decay over the steps
    assert epochs[0]["head_lr"] == pytest.approx(10 * epochs[0]["lr"])
    assert all(math.isfinite(e["train_loss"]) for e in epochs)

    # the same seed gives the same numbers; linear evaluation leaves the backbone untouched
    again = run_finetune(encoder.backbone, data, settings, image_size=16, device="cpu")
    assert again.metrics["top1"] == m["top1"] and torch.equal(again.indices, tuned.indices)
    probe = run_linear(encoder.backbone, data, LinearProtocol.for_dataset_size(128, epochs=2), image_size=16,
                       device="cpu")
    assert 0 <= probe.metrics["top1"] <= 100
    assert all(torch.equal(v, encoder.backbone.state_dict()[k]) for k, v in before.items())


def test_knn_protocol_reports_test_top1_and_top5(encoder_and_data):
    encoder, data = encoder_and_data
    r = run_knn(encoder.backbone, data, KnnProtocol(k=10), image_size=16, device="cpu")
    assert 100 / 16 < r["top1"] <= r["top5"] <= 100  # above chance
    assert (r["n_train"], r["n_test"], r["num_classes"], r["feature_dim"]) == (112, 64, 16, 256)  # 7 train per class (1 held out for val)


def test_for_dataset_size_keeps_epochs_and_scales_the_learning_rates():
    assert FinetuneProtocol.for_dataset_size(1_281_167 // 10) == FinetuneProtocol()
    small = FinetuneProtocol.for_dataset_size(100, epochs=60)
    assert (small.batch_size, small.epochs) == (8, 60)
    assert (small.lr, small.head_lr) == (pytest.approx(0.05 * 8 / 256), pytest.approx(0.5 * 8 / 256))
    assert FinetuneProtocol.for_dataset_size(3).batch_size == 2  # never 1: BatchNorm in train mode
    assert FinetuneProtocol.for_dataset_size(100, batch_size=16).lr == 0.05  # explicit batch: lr as given
    assert FinetuneProtocol.semi_supervised(0.01).epochs == 60 and FinetuneProtocol.semi_supervised(0.1).epochs == 30
    with pytest.raises(ProtocolError, match=r"FinetuneProtocol\.label_fraction=1\.5: must be in \(0, 1\]"):
        FinetuneProtocol.semi_supervised(1.5)


@pytest.mark.parametrize(
    "cls, field, value",
    [
        (FinetuneProtocol, "label_fraction", 0.0),
        (FinetuneProtocol, "label_fraction", 1.2),
        (FinetuneProtocol, "epochs", 0),
        (FinetuneProtocol, "batch_size", 1),
        (FinetuneProtocol, "lr", -0.1),
        (FinetuneProtocol, "head_lr", 0.0),
        (FinetuneProtocol, "momentum", 1.0),
        (FinetuneProtocol, "nesterov", "yes"),
        (FinetuneProtocol, "weight_decay", -1.0),
        (FinetuneProtocol, "train_crop_scale", (0.9, 0.1)),
        (FinetuneProtocol, "flip_prob", 2.0),
        (FinetuneProtocol, "subset_seed", -1),
        (FinetuneProtocol, "amp", "fp16"),
        (KnnProtocol, "k", 0),
        (KnnProtocol, "temperature", 0.0),
        (KnnProtocol, "test_crop_fraction", 1.5),
        (KnnProtocol, "eval_batch_size", 0),
        (RandomCropProtocol, "crop_scale", (0.0, 1.0)),
        (RandomCropProtocol, "repeats", 0),
        (RandomCropProtocol, "loader_workers", -1),
        (TransferProtocol, "dataset", "cifar1000"),
        (TransferProtocol, "modes", ("linear", "probe")),
        (TransferProtocol, "image_size", 4),
    ],
)
def test_every_protocols_settings_name_the_bad_field(cls, field, value):
    base = {"data_root": "/d"} if cls is TransferProtocol and field != "data_root" else {}
    with pytest.raises(ProtocolError) as info:
        cls.from_dict({**base, field: value}, source="eval.yaml")
    err = info.value
    assert (err.source, err.key, err.value) == ("eval.yaml", f"{cls.__name__}.{field}", value)
    assert str(err).startswith(f"eval.yaml: {cls.__name__}.{field}={value!r}: ")


def test_unknown_fields_are_refused_with_a_hint():
    with pytest.raises(ProtocolError, match=r"unknown field\(s\) 'epoch' \(did you mean 'epochs'\?\) of FinetuneProtocol"):
        FinetuneProtocol.from_dict({"epoch": 3})
    with pytest.raises(ProtocolError, match=r"^TransferProtocol\.finetune: unknown field\(s\) 'head_learning_rate'"):
        TransferProtocol(dataset="digits", finetune={"head_learning_rate": 1.0})
    with pytest.raises(ProtocolError, match=r"TransferProtocol\.data_root=None: dataset 'cifar100' needs data_root"):
        TransferProtocol(dataset="cifar100")
    assert FinetuneProtocol.from_dict(FinetuneProtocol().to_dict()) == FinetuneProtocol()
