"""Presets (trainables/presets.py) resolve to the paper's numbers: each value next to the sentence
of the LeOCLR paper (TMLR 2024) it comes from, or the choice made where the paper is silent.

The quotes are checked verbatim (whitespace and quote marks aside: the paper's text was
extracted from a PDF) against the paper when its text is at hand (``$LEOCLR_PAPER``, or
``../shared/seeds/004_c1dc4d8f2d60cb9f.txt`` next to the repository).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from trainables.config import ConfigError, TrainConfig
from trainables.presets import PRESET_SOURCES, PRESETS

SETUP = ("with a weight decay 0.0001, momentum of 0.9, and an initial learning rate of 0.03. "
         "The mini-batch size was 256")
TABLE6 = "We pre-trained all the approaches for 800 epochs with batch size 256 on both datasets"
AUG = "We use data augmentations similar to those employed in MoCo-v2"
MOMENTUM = "m is a coefficient set to 0.999"
MECH = "we use momentum contrastive learning in our approach"
SILENT = None  # the paper does not give the value: PRESET_SOURCES says what was chosen and why

# (key, value, quote) rows shared by the three paper recipes
PAPER_COMMON = [
    ("batch_size", 256, SETUP), ("lr", 0.03, SETUP), ("optimizer_momentum", 0.9, SETUP),
    ("weight_decay", 1e-4, SETUP), ("key_momentum", 0.999, MOMENTUM), ("mechanism", "momentum", MECH),
    ("augmentation", "v2", AUG), ("crop_scale", (0.2, 1.0), AUG),
    ("temperature", 0.2, SILENT), ("head", "mlp", SILENT), ("embedding_dim", 128, SILENT),
    ("warmup_epochs", 0.0, SILENT),
]
TABLE = {
    "paper_imagenet_r50": PAPER_COMMON + [
        ("dataset", "imagefolder", "ImageNet-1K with 1.28M training images"),
        ("backbone", "resnet50", "We used ResNet50 as the backbone"),
        ("view_size", 224, "X is not cropped (NC), but is resized to 224 x224"),
        ("image_size", 256, "resized to 256x256 and then randomly cropped and resized to 224x224"),
        ("epochs", 200, "after 200 epochs on ImageNet-1K"),
        ("blur_prob", 0.5, AUG),
        ("queue_size", 65536, SILENT),
    ],
    "paper_cifar10_r18": PAPER_COMMON + [
        ("dataset", "cifar10", "CIFAR-10 with 50K training images"),
        ("backbone", "resnet18_cifar", "using a ResNet-18 backbone"),
        ("epochs", 800, TABLE6),
        ("image_size", 32, SILENT), ("view_size", None, SILENT),
        ("blur_prob", 0.0, SILENT), ("queue_size", 4096, SILENT),
    ],
    "paper_stl10_r18": PAPER_COMMON + [
        ("dataset", "stl10", 'STL-10 "unlabeled" with 100K training images'),
        ("backbone", "resnet18", "using a ResNet-18 backbone"),
        ("epochs", 800, TABLE6),
        ("blur_prob", 0.5, AUG),
        ("image_size", 96, SILENT), ("view_size", None, SILENT), ("queue_size", 65536, SILENT),
    ],
    # the official MoCo CIFAR-10 demo (not the paper): its arguments, lr per 256 images
    "moco_cifar_demo": [
        ("dataset", "cifar10", None), ("image_size", 32, None), ("view_size", None, None),
        ("backbone", "resnet18_cifar", None), ("head", "linear", None), ("embedding_dim", 128, None),
        ("mechanism", "momentum", None), ("symmetric", False, None), ("batch_size", 512, None),
        ("lr", 0.03, None), ("optimizer_momentum", 0.9, None), ("weight_decay", 5e-4, None),
        ("warmup_epochs", 0.0, None), ("key_momentum", 0.99, None), ("temperature", 0.1, None),
        ("queue_size", 4096, None), ("epochs", 200, None), ("bn_splits", 8, None),
        ("augmentation", "v2", None), ("crop_scale", (0.08, 1.0), None), ("blur_prob", 0.0, None),
        ("knn_k", 200, None), ("knn_temperature", 0.1, None),
    ],
}


def squash(text: str) -> str:
    return re.sub(r"[\s\"'“”]", "", text).lower().replace("×", "x")


def paper_text() -> str | None:
    path = os.environ.get("LEOCLR_PAPER") or (
        Path(__file__).resolve().parents[2].parent / "shared" / "seeds" / "004_c1dc4d8f2d60cb9f.txt")
    path = Path(path)
    return path.read_text() if path.is_file() else None


def resolve(name: str) -> TrainConfig:
    return TrainConfig.from_dict({"preset": name, "data_root": "/data/placeholder"})


@pytest.mark.parametrize("name", sorted(TABLE))
def test_presets_resolve_to_the_table(name):
    cfg = resolve(name)
    rows = TABLE[name]
    assert {key for key, _, _ in rows} == set(PRESETS[name]), "every preset value has a row"
    for key, value, _ in rows:
        got = getattr(cfg, key)
        assert got == (pytest.approx(value) if isinstance(value, float) else value), (name, key)
    assert cfg.preset == name and cfg.to_dict()["preset"] == name  # the resolved config names it
    assert set(PRESET_SOURCES[name]) == set(PRESETS[name])  # and every value says where it is from


def test_quotes_are_the_papers_words():
    text = paper_text()
    if text is None:
        pytest.skip("the paper's text is not next to the repository (set LEOCLR_PAPER)")
    paper = squash(text)
    quotes = {q for rows in TABLE.values() for _, _, q in rows if q}
    for source in (s for sources in PRESET_SOURCES.values() for s in sources.values()):
        if source.startswith("LeOCLR"):  # "LeOCLR (TMLR 2024), Sec. N: "quoted sentence" ..."
            quotes.update(re.findall(r'"([^"]+)"', source))
    missing = [q for q in quotes if squash(q) not in paper]
    assert not missing, missing


def test_explicit_keys_override_the_preset_and_round_trip():
    cfg = TrainConfig.from_dict({"preset": "paper_cifar10_r18", "data_root": "/d", "epochs": 5, "lr": 0.1})
    assert (cfg.epochs, cfg.lr, cfg.key_momentum, cfg.backbone) == (5, 0.1, 0.999, "resnet18_cifar")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict({}).preset is None


def test_unknown_preset_is_refused_with_a_hint():
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"preset": "paper_cifar_r18"}, source="my.yaml")
    err = info.value
    assert (err.key, err.value) == ("preset", "paper_cifar_r18")
    assert str(err).startswith("my.yaml: preset='paper_cifar_r18': must be one of paper_imagenet_r50, ")
    assert "(did you mean 'paper_cifar10_r18'?)" in str(err)
    with pytest.raises(ConfigError, match="data_root=None: dataset 'imagefolder' needs data_root"):
        TrainConfig.from_dict({"preset": "paper_imagenet_r50"})


def test_defaults_are_the_papers_optimisation():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.key_momentum, cfg.weight_decay, cfg.temperature) == (0.03, 0.999, 1e-4, 0.2)
