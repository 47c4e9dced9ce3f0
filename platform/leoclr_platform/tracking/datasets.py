"""The data a run read, as MLflow dataset inputs (the runs table's Dataset column and filter).

One input per split the run read (train, validation, test), each an MLflow `Dataset` entity:
name `<dataset>:<split>`, a digest of what defines the data (dataset, folder, image size, the
validation carve, photo_patches options: the same data gets the same digest in every run),
the source (the data folder, or where a built-in set comes from) and a profile with the split's
size. The input's context tag (`mlflow.data.context`) says train / validation / test.

Public: `dataset_inputs(config, sizes)` builds them, `log_dataset_inputs(client, run_id, config,
sizes)` logs them (used for trial runs here and for evaluation runs by `evaluation.py`).
`split_sizes(result)` reads the sizes a trial reports with its first epoch (`data_*_images`).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

#: mlflow.data's tag for the role of an input (MLflow shows it next to the dataset's name).
CONTEXT_TAG = "mlflow.data.context"
#: split reported by the loop -> (split name in MLflow, context)
SPLITS = {"pretrain": ("train", "train"), "val": ("val", "validation"), "test": ("test", "test")}
#: What a built-in data set is made from, when the config names no folder.
BUILTIN_SOURCES = {
    "photo_patches": "scikit-image data photographs (skimage.data), cut into patches",
    "digits": "scikit-learn load_digits()",
    "cifar10": "torchvision.datasets.CIFAR10", "cifar100": "torchvision.datasets.CIFAR100",
    "stl10": "torchvision.datasets.STL10",
}
DEFINING_KEYS = ("dataset", "data_root", "image_size", "val_fraction", "val_seed", "photo_patches")


def split_sizes(result: Mapping[str, Any]) -> dict[str, int]:
    """{"pretrain": n, "memory": n, "val": n, "test": n} from a result's `data_<split>_images`."""
    out = {}
    for key, value in result.items():
        if key.startswith("data_") and key.endswith("_images") and isinstance(value, (int, float)):
            out[key[len("data_"):-len("_images")]] = int(value)
    return out


def data_digest(config: Mapping[str, Any], split: str = "") -> str:
    """16 hex digits naming the data a config reads (and the split)."""
    defining = {k: config.get(k) for k in DEFINING_KEYS}
    text = json.dumps({**defining, "split": split}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_source(config: Mapping[str, Any]) -> tuple[str, str]:
    """(source type, source) of the data: a local folder, or the built-in set's origin."""
    root = config.get("data_root")
    if root:
        return ("s3" if str(root).startswith("s3://") else "local"), (
            str(root) if "://" in str(root) else os.path.abspath(os.path.expanduser(str(root))))
    name = str(config.get("dataset"))
    return "code", BUILTIN_SOURCES.get(name, name)


def dataset_inputs(config: Mapping[str, Any], sizes: Mapping[str, int] | None = None,
                   splits: tuple[str, ...] = ("pretrain", "val", "test")) -> list:
    """MLflow DatasetInputs for the `splits` of the data `config` reads (`sizes`: images per
    split, from `split_sizes`; the profile says what is known)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    source_type, source = data_source(config)
    out = []
    for split in splits:
        shown, context = SPLITS.get(split, (split, split))
        profile = {"split": shown, "image_size": config.get("image_size")}
        if sizes and split in sizes:
            profile["num_images"] = int(sizes[split])
        if split == "pretrain" and sizes and "memory" in sizes:
            profile["labelled_train_images"] = int(sizes["memory"])
        dataset = Dataset(name=f"{config.get('dataset')}:{shown}", digest=data_digest(config, split),
                          source_type=source_type, source=json.dumps({"uri": source}),
                          profile=json.dumps(profile))
        out.append(DatasetInput(dataset, tags=[InputTag(CONTEXT_TAG, context)]))
    return out


def log_dataset_inputs(client, run_id: str, config: Mapping[str, Any], sizes: Mapping[str, int] | None = None,
                       splits: tuple[str, ...] = ("pretrain", "val", "test")) -> None:
    """Log the data `config` reads as dataset inputs of run `run_id` (MLflow keeps one link per
    dataset and run, so logging again adds nothing)."""
    client.log_inputs(run_id, datasets=dataset_inputs(config, sizes, splits))
