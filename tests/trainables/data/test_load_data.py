"""load_data's own checks (dataset name, image size, data root) and the package's purity."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainables.data import DATASETS, DatasetError, load_data


def test_root_required(tmp_path):
    """The advice names the real key (data_root) and the real option (download)."""
    with pytest.raises(DatasetError) as err:
        load_data("cifar100", root=None, image_size=32)
    assert (err.value.key, err.value.value) == ("data_root", None)
    assert str(err.value) == ("data_root=None: dataset 'cifar100' needs the folder that holds (or will "
                              "receive, with download: true) its files")


def test_image_size_must_be_a_positive_integer():
    for bad in (0, 2.5, True):
        with pytest.raises(DatasetError) as err:
            load_data("digits", root=None, image_size=bad)
        assert (err.value.key, err.value.value) == ("image_size", bad)
        assert str(err.value) == f"image_size={bad!r}: must be a positive integer"


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DatasetError) as err:
        load_data("imagenet", root="/x", image_size=32)
    assert all(name in str(err.value) for name in DATASETS)
    assert (err.value.key, err.value.value) == ("dataset", "imagenet")


def test_module_stays_pure_pytorch():
    """trainables must never pull in ray, optuna or mlflow."""
    import subprocess
    import sys

    code = ("import sys, trainables.data; "
            "bad = [m for m in ('ray', 'optuna', 'mlflow') if m in sys.modules]; "
            "assert not bad, bad")
    repo_root = Path(__file__).resolve().parents[3]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo_root)
