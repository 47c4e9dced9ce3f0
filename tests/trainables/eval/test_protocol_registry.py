"""The protocol registry (trainables.eval.registry): parsing ``--protocols``, bad inputs named
before any compute, and every protocol run end to end on a tiny trained encoder, including
``transfer`` to a second dataset (photo_patches -> digits, and -> an ImageFolder of non-square
photographs, which the loader workers view with their true geometry)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from trainables.checkpoint import CheckpointError, load_encoder
from trainables.data import load_data
from trainables.eval import (
    FinetuneProtocol,
    KnnProtocol,
    LinearProtocol,
    ProtocolError,
    RandomCropProtocol,
    TransferProtocol,
    evaluate_protocols,
    parse_protocols,
    run_protocols,
    run_transfer,
)

SMALL = {  # a few epochs each: these tests check the plumbing, not the numbers
    "linear": {"epochs": 2, "augment": "none"},
    "semi": {"epochs": 2},
    "transfer": {"linear": {"epochs": 2, "augment": "none"}, "finetune": {"epochs": 1}},
}


def test_parse_gives_typed_validated_settings_in_order():
    specs = parse_protocols("knn, linear,semi_10pct ,semi_1pct,transfer:cifar100,semi:0.05,semi_20pct",
                            {"transfer": {"data_root": "/data/c100"}, "semi_1pct": {"epochs": 5}})
    assert [s.name for s in specs] == ["knn", "linear", "semi_10pct", "semi_1pct", "transfer:cifar100",
                                       "semi:0.05", "semi_20pct"]
    kinds = [type(s.settings) for s in specs]
    assert kinds == [KnnProtocol, LinearProtocol, FinetuneProtocol, FinetuneProtocol, TransferProtocol,
                     FinetuneProtocol, FinetuneProtocol]
    semi10, semi1 = specs[2].settings, specs[3].settings
    assert (semi10.label_fraction, semi10.epochs, semi1.label_fraction, semi1.epochs) == (0.1, 30, 0.01, 5)
    assert specs[5].settings.epochs == 60 and specs[6].settings.epochs == 30
    assert specs[4].settings.dataset == "cifar100" and specs[4].settings.data_root == "/data/c100"
    assert specs[2].to_dict()["protocol"] == "semi_10pct" and specs[2].to_dict()["settings"] == "FinetuneProtocol"
    assert specs[1].describe().startswith("linear: LinearProtocol(epochs=100, batch_size=256, lr=30.0")
    json.dumps([s.to_dict() for s in specs])  # loggable as is
    # random_crop tests the linear classifier: linear is run first
    assert [s.name for s in parse_protocols("random_crop,knn")] == ["linear", "random_crop", "knn"]
    assert [s.name for s in parse_protocols(["random_crop", "linear"])] == ["linear", "random_crop"]


@pytest.mark.parametrize(
    "text, settings, message",
    [
        ("knnn", None, "--protocols: protocol='knnn': unknown protocol (did you mean 'knn'?); choose from knn, "
                       "linear, random_crop, semi_1pct, semi_10pct, semi_<N>pct, semi:<fraction>, transfer:<dataset>"),
        ("semi_100pct,semi:0", None, "--protocols: protocol='semi:0': the label fraction 0 must be in (0, 1] "
                                     "(the share of the labelled train images that fine-tuning uses)"),
        ("semi_150pct", None, "--protocols: protocol='semi_150pct': the label fraction 1.5 must be in (0, 1]"),
        ("semi:ten", None, "--protocols: protocol='semi:ten': the label fraction 'ten' is not a number"),
        ("transfer:cifar1000", None, "--protocols: protocol='transfer:cifar1000': unknown dataset 'cifar1000' "
                                     "(did you mean 'cifar100'?); one of photo_patches, digits, cifar10"),
        ("transfer", None, "--protocols: protocol='transfer': needs a dataset: transfer:<name>, one of"),
        ("transfer:cifar100", None, "transfer:cifar100: TransferProtocol.data_root=None: dataset 'cifar100' "
                                    "needs data_root (the folder holding its files)"),
        ("knn,linear,knn", None, "--protocols: protocol='knn': listed twice"),
        ("", None, "--protocols: no protocol given; choose from knn, linear"),
        ("linear", {"linear": {"epoch": 3}}, "linear: unknown field(s) 'epoch' (did you mean 'epochs'?) of "
                                             "LinearProtocol"),
        ("semi_10pct", {"semi": {"lr": 0}}, "semi_10pct: FinetuneProtocol.lr=0: must be a finite number > 0"),
        ("semi_10pct", {"semi_10pct": {"label_fraction": 0.5}},
         "semi_10pct: FinetuneProtocol.label_fraction=0.5: is set by the protocol's name (semi_10pct = 0.1)"),
        ("knn", {"knnn": {"k": 5}}, "--protocols: settings='knnn': settings for an unknown protocol "
                                   "(did you mean 'knn'?)"),
        ("random_crop", {"random_crop": {"crop_scale": [0.5, 0.1]}},
         "random_crop: RandomCropProtocol.crop_scale=(0.5, 0.1): must be two numbers 0 < min <= max <= 1"),
    ],
)
def test_bad_protocol_inputs_are_named_before_compute(text, settings, message):
    with pytest.raises(ProtocolError) as info:
        parse_protocols(text, settings)
    assert str(info.value).startswith(message), str(info.value)


def test_settings_scale_to_the_data(trained_checkpoint):
    data = load_data("photo_patches", root=None, image_size=16, photo_patches={"train_per_class": 8, "test_per_class": 4})
    specs = parse_protocols("linear,semi_10pct,semi_1pct", data=data)
    linear, semi10, semi1 = (s.settings for s in specs)
    assert (linear.batch_size, linear.lr) == (8, 0.9375)  # 112 images (8 per class minus 1 for val): LinearProtocol.for_dataset_size
    # 10 % of 7 training images per class rounds to 1 (1 % too: at least one): 16 images, batch 2
    assert (semi10.batch_size, semi10.epochs, semi1.batch_size, semi1.epochs) == (2, 30, 2, 60)
    assert semi10.lr == pytest.approx(0.05 * 2 / 256)


def test_every_protocol_runs_and_reports_test_top1_top5(trained_checkpoint):
    """knn, linear, random_crop, semi_10pct and transfer:digits on the tiny photo_patches encoder,
    with per-epoch progress under each protocol's name."""
    encoder = load_encoder(trained_checkpoint)
    before = {k: v.clone() for k, v in encoder.backbone.state_dict().items()}
    seen: list[tuple[str, dict]] = []
    results = evaluate_protocols(trained_checkpoint, "knn,random_crop,semi_10pct,transfer:digits", SMALL,
                                 device="cpu", progress=lambda name, stats: seen.append((name, stats)))
    assert list(results) == ["knn", "linear", "random_crop", "semi_10pct", "transfer:digits"]
    for name, r in results.items():
        assert 0 <= r.metrics["top1"] <= r.metrics["top5"] <= 100, name
        assert r.name == name and isinstance(r.settings, dict)
    assert results["knn"].settings["k"] == 10  # the run's knn_k
    crop = results["random_crop"].metrics
    assert crop["linear_top1"] == results["linear"].metrics["top1"]
    assert crop["drop"] == pytest.approx(crop["linear_top1"] - crop["top1"])
    assert results["semi_10pct"].metrics["n_labelled"] == 16
    transfer = results["transfer:digits"].metrics
    assert transfer["num_classes"] == 10 and transfer["n_train"] > 1000  # the digits, not photo_patches
    assert transfer["top1"] == transfer["finetune_top1"] and "linear_top1" in transfer
    names = [n for n, _ in seen]
    assert names.count("linear") == 2 and names.count("semi_10pct") == 2
    assert names.count("transfer:digits/linear") == 2 and names.count("transfer:digits/finetune") == 1
    assert all(set(s) >= {"epoch", "lr", "train_loss", "train_top1"} for _, s in seen)
    assert [h["mode"] for h in results["transfer:digits"].history] == ["linear", "linear", "finetune"]
    assert all(torch.equal(v, encoder.backbone.state_dict()[k]) for k, v in before.items())


def test_a_missing_transfer_dataset_fails_before_compute(trained_checkpoint, tmp_path):
    calls = []
    settings = {"transfer:cifar100": {"data_root": str(tmp_path / "nowhere")}}
    with pytest.raises(ProtocolError) as info:
        evaluate_protocols(trained_checkpoint, "knn,linear,transfer:cifar100", settings, device="cpu",
                           progress=lambda *a: calls.append(a))
    message = str(info.value)
    assert message.startswith(f"transfer:cifar100: TransferProtocol.data_root='{tmp_path / 'nowhere'}': "
                              "cannot load the transfer dataset 'cifar100': ")
    assert "CIFAR-100 not found under" in message and not calls  # nothing was trained


def test_a_checkpoint_whose_backbone_does_not_match_is_refused(trained_checkpoint, tmp_path):
    bad = tmp_path / "epoch_0001"
    shutil.copytree(trained_checkpoint, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["backbone"] = "resnet18_cifar"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as info:
        evaluate_protocols(bad, "knn", device="cpu")
    assert str(info.value) == (f"{bad / 'encoder.pt'}: backbone 'small_cnn' does not match "
                               f"backbone='resnet18_cifar' in {bad / 'config.json'}")


def test_transfer_to_an_imagefolder_of_photos_reads_them_with_their_geometry(trained_checkpoint, tmp_path,
                                                                           photo_folder):
    photo_folder(tmp_path, copies=4)
    encoder = load_encoder(trained_checkpoint)
    settings = TransferProtocol(dataset="imagefolder", data_root=str(tmp_path),
                                linear={"epochs": 2}, finetune={"epochs": 2})
    r = run_transfer(encoder.backbone, settings, image_size=16, device="cpu")
    assert (r["num_classes"], r["n_train"], r["n_test"]) == (2, 8, 8)
    assert 0 <= r["linear_top1"] <= 100 and 0 <= r["finetune_top1"] <= 100
    # a random-crop test on file-backed data runs on the same worker-cut views
    data = load_data("imagefolder", root=str(tmp_path), image_size=16)
    specs = parse_protocols("random_crop", {"linear": {"epochs": 1}, "random_crop": {"repeats": 2}}, data=data)
    out = run_protocols(encoder.backbone, data, specs, image_size=16, device="cpu")
    assert out["random_crop"].metrics["top1"] in {0.0, 12.5, 25.0, 37.5, 50.0, 62.5, 75.0, 87.5, 100.0}
    assert isinstance(specs[1].settings, RandomCropProtocol)
