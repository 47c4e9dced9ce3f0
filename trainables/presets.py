"""Named training recipes (``preset: <name>`` in a TrainConfig): the paper's settings and the
official MoCo CIFAR-10 demo's.

A preset is a mapping of TrainConfig keys. ``TrainConfig.from_dict`` fills every key the preset
names and the caller did not give; keys given explicitly win. The resolved config keeps
``preset`` so a run's parameters say which recipe they started from.

Every value comes with its source: a sentence of the LeOCLR paper (TMLR 2024), of the MoCo v2
paper or the official MoCo CIFAR-10 demo, or, where they are silent, the choice made here and
why (``PRESET_SOURCES``; docs/config.md prints the table, and
``tests/trainables/test_presets.py`` checks every value against it). Presets set the recipe,
not the method: ``attraction_strategy`` stays a key of its own (``leoclr`` by default), so one
preset serves the LeOCLR run and its MoCo-v2 baseline.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["PRESETS", "PRESET_SOURCES", "preset_values"]

# The paper's main training setup (Section 4, "Training Setup"), shared by its three recipes.
_PAPER_OPTIMISATION = {
    "batch_size": 256,
    "lr": 0.03,
    "optimizer_momentum": 0.9,
    "weight_decay": 1e-4,
    "key_momentum": 0.999,
    "temperature": 0.2,
    "head": "mlp",
    "embedding_dim": 128,
    "mechanism": "momentum",
    "augmentation": "v2",
    "crop_scale": (0.2, 1.0),
    "warmup_epochs": 0.0,
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper_imagenet_r50": {
        **_PAPER_OPTIMISATION,
        "dataset": "imagefolder",
        "image_size": 256,
        "view_size": 224,
        "backbone": "resnet50",
        "queue_size": 65536,
        "epochs": 200,
        "blur_prob": 0.5,
    },
    "paper_cifar10_r18": {
        **_PAPER_OPTIMISATION,
        "dataset": "cifar10",
        "image_size": 32,
        "view_size": None,
        "backbone": "resnet18_cifar",
        "queue_size": 4096,
        "epochs": 800,
        "blur_prob": 0.0,
    },
    "paper_stl10_r18": {
        **_PAPER_OPTIMISATION,
        "dataset": "stl10",
        "image_size": 96,
        "view_size": None,
        "backbone": "resnet18",
        "queue_size": 65536,
        "epochs": 800,
        "blur_prob": 0.5,
    },
    "moco_cifar_demo": {
        "dataset": "cifar10",
        "image_size": 32,
        "view_size": None,
        "backbone": "resnet18_cifar",
        "head": "linear",
        "embedding_dim": 128,
        "mechanism": "momentum",
        "symmetric": False,
        "batch_size": 512,
        "lr": 0.03,
        "optimizer_momentum": 0.9,
        "weight_decay": 5e-4,
        "warmup_epochs": 0.0,
        "key_momentum": 0.99,
        "temperature": 0.1,
        "queue_size": 4096,
        "epochs": 200,
        "bn_splits": 8,
        "augmentation": "v2",
        "crop_scale": (0.08, 1.0),
        "blur_prob": 0.0,
        "knn_k": 200,
        "knn_temperature": 0.1,
    },
}

_LEOCLR = "LeOCLR (TMLR 2024)"
_SETUP = (f"{_LEOCLR}, Sec. 4: \"the model was trained with the SGD optimizer, with a weight decay "
          "0.0001, momentum of 0.9, and an initial learning rate of 0.03. The mini-batch size was 256\"")
_M = f"{_LEOCLR}, Sec. 3: \"m is a coefficient set to 0.999\""
_AUG = (f"{_LEOCLR}, Sec. 3: \"We use data augmentations similar to those employed in MoCo-v2\" "
        "(MoCo v2 aug+: RandomResizedCrop(224, scale=(0.2, 1.)), ColorJitter(0.4, 0.4, 0.4, 0.1) "
        "p 0.8, RandomGrayscale 0.2, GaussianBlur sigma 0.1-2 p 0.5, flip)")
_TAU = ("paper silent; MoCo v2 (Chen et al., 2020) uses tau 0.2 with its MLP head, the "
        "baseline the paper builds on")
_HEAD = ("paper silent; MoCo v2's 2-layer MLP head (2048-d hidden for ResNet-50) to a 128-d "
         "embedding, the baseline the paper builds on")
_TABLE6 = (f"{_LEOCLR}, Sec. 5.2: \"We pre-trained all the approaches for 800 epochs with batch "
           "size 256 on both datasets\" (STL-10 and CIFAR-10, ResNet-18, Table 6)")
_DEMO = ("official MoCo CIFAR-10 demo (facebookresearch/moco, colab/moco_cifar10_demo.ipynb): "
         "arch resnet18 with a 3x3 stem, moco_dim 128, moco_k 4096, moco_m 0.99, moco_t 0.1, "
         "lr 0.06 at batch 512, wd 5e-4, cos, 200 epochs, bn_splits 8, symmetric False, "
         "knn_k 200, knn_t 0.1; RandomResizedCrop(32) (scale 0.08-1), ColorJitter(0.4, 0.4, "
         "0.4, 0.1) p 0.8, RandomGrayscale 0.2, flip, no blur; its fc layer is the 128-d head")

#: Where each preset value comes from: {preset: {key: source}}.
PRESET_SOURCES: dict[str, dict[str, str]] = {
    "paper_imagenet_r50": {
        "dataset": f"{_LEOCLR}, Sec. 4: \"ImageNet-1K with 1.28M training images\" (the ImageNet layout: imagefolder)",
        "image_size": ("paper silent on the load size; 256 is the size MoCo's ImageNet pipeline and "
                       "the paper's Table 7 random-crop test start from (\"resized to 256x256\"); "
                       "file-backed images keep their geometry and training views are cut from "
                       "the full image (data/geometry.py), so it only sets the in-memory/monitor size"),
        "view_size": f"{_LEOCLR}, Fig. 3: \"X is not cropped (NC), but is resized to 224x224\"",
        "backbone": f"{_LEOCLR}, Sec. 4: \"We used ResNet50 as the backbone\"",
        "batch_size": _SETUP, "lr": _SETUP, "optimizer_momentum": _SETUP, "weight_decay": _SETUP,
        "key_momentum": _M,
        "temperature": _TAU,
        "queue_size": "paper silent; MoCo's ImageNet queue K = 65536",
        "epochs": (f"{_LEOCLR}, Sec. 5.3: \"after 200 epochs on ImageNet-1K\" (Tables 5, 7, 8 and "
                   "Fig. 4; Table 1 trains \"up to 800 epochs\")"),
        "blur_prob": _AUG, "augmentation": _AUG, "crop_scale": _AUG,
        "head": _HEAD, "embedding_dim": _HEAD,
        "mechanism": f"{_LEOCLR}, Sec. 3.1: \"we use momentum contrastive learning in our approach\"",
        "warmup_epochs": "paper silent; MoCo v2 uses a cosine schedule without warm-up (the engine's schedule)",
    },
    "paper_cifar10_r18": {
        "dataset": _TABLE6 + "; Sec. 4: \"CIFAR-10 with 50K training images\"",
        "epochs": _TABLE6, "batch_size": _TABLE6,
        "backbone": (f"{_LEOCLR}, Sec. 5.2: \"using a ResNet-18 backbone\"; the paper does not say "
                     "which stem: the CIFAR stem (3x3 conv, no max-pool), as the MoCo CIFAR demo "
                     "and most 32 px work use"),
        "image_size": "CIFAR-10's own 32 x 32",
        "view_size": "CIFAR-10's own 32 x 32",
        "lr": _SETUP + " (stated for the main setup; the ablations give no other)",
        "optimizer_momentum": _SETUP, "weight_decay": _SETUP,
        "key_momentum": _M,
        "temperature": _TAU,
        "queue_size": ("paper silent; the MoCo CIFAR demo's K = 4096 (65536 keys would be 1.3 times "
                       "the 50k training images)"),
        "augmentation": _AUG, "crop_scale": _AUG,
        "blur_prob": ("paper silent for 32 px; off, as the MoCo CIFAR demo and SimCLR's CIFAR-10 "
                      "recipe do (a blur kernel of 10 % of 32 px erases most detail)"),
        "head": _HEAD, "embedding_dim": _HEAD,
        "mechanism": f"{_LEOCLR}, Sec. 3.1: \"we use momentum contrastive learning in our approach\"",
        "warmup_epochs": "paper silent; cosine without warm-up",
    },
    "paper_stl10_r18": {
        "dataset": (f"{_LEOCLR}, Sec. 4: \"STL-10 'unlabeled' with 100K training images\" (the "
                    "engine pre-trains on unlabeled + train)"),
        "epochs": _TABLE6, "batch_size": _TABLE6,
        "backbone": (f"{_LEOCLR}, Sec. 5.2: \"using a ResNet-18 backbone\"; stem not stated: the "
                     "standard ImageNet stem at STL-10's 96 px (a 3 x 3 final feature map)"),
        "image_size": "STL-10's own 96 x 96",
        "view_size": "STL-10's own 96 x 96",
        "lr": _SETUP + " (stated for the main setup; the ablations give no other)",
        "optimizer_momentum": _SETUP, "weight_decay": _SETUP,
        "key_momentum": _M,
        "temperature": _TAU,
        "queue_size": "paper silent; MoCo's K = 65536 (STL-10 pre-trains on 105k images)",
        "augmentation": _AUG, "crop_scale": _AUG, "blur_prob": _AUG + " (blur kept at 96 px)",
        "head": _HEAD, "embedding_dim": _HEAD,
        "mechanism": f"{_LEOCLR}, Sec. 3.1: \"we use momentum contrastive learning in our approach\"",
        "warmup_epochs": "paper silent; cosine without warm-up",
    },
    "moco_cifar_demo": {key: _DEMO + (" (0.06 at batch 512 = 0.03 per 256 images, the engine's "
                                      "per-256 convention)" if key == "lr" else "")
                        for key in PRESETS["moco_cifar_demo"]},
}


def preset_values(name: str) -> dict[str, Any]:
    """A copy of preset ``name``'s keys (``KeyError`` for an unknown name; TrainConfig turns
    that into a ConfigError with a did-you-mean)."""
    return dict(PRESETS[name])


def describe(name: str) -> Mapping[str, tuple[Any, str]]:
    """``{key: (value, source)}`` of preset ``name``, for documentation and `--help` output."""
    return {key: (value, PRESET_SOURCES[name][key]) for key, value in PRESETS[name].items()}
