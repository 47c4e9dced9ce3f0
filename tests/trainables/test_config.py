"""Strict config validation: every error names the source, key, value and reason."""

import pytest

from trainables.config import ConfigError, TrainConfig, parse_overrides


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = TrainConfig()
    cfg.validate()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    cfg.save(tmp_path / "c.json")
    import json

    assert TrainConfig.from_dict(json.loads((tmp_path / "c.json").read_text())) == cfg
    assert cfg.scaled_lr() == pytest.approx(cfg.lr * cfg.batch_size / 256)


@pytest.mark.parametrize(
    "values,needle",
    [
        ({"tempreature": 0.2}, "unknown key(s) 'tempreature' (did you mean 'temperature'?)"),
        ({"key_momentum": 1.0}, "key_momentum=1.0: must be in [0, 1)"),
        ({"key_momentum": -0.1}, "key_momentum=-0.1: must be in [0, 1)"),
        ({"temperature": 0}, "temperature=0.0: must be a finite number > 0"),
        ({"attraction_strategy": "simclr"}, "attraction_strategy='simclr': must be one of moco_v2, leoclr"),
        ({"queue_size": 128, "batch_size": 256}, "queue_size=128: must be >= the global batch_size (256)"),
        ({"batch_size": "256"}, "batch_size='256': expected an integer, got str"),
        ({"lr": True}, "lr=True: expected a number, got bool"),
        ({"symmetric": "yes"}, "symmetric='yes': expected true or false"),
        ({"crop_scale": [0.5, 0.2]}, "crop_scale=(0.5, 0.2): must be two numbers 0 < min <= max <= 1"),
        ({"crop_scale": [0.5]}, "crop_scale=[0.5]: expected a list of 2 numbers"),
        ({"symmetric": True, "attraction_strategy": "leoclr"}, "symmetric=True: only applies to attraction_strategy=moco_v2"),
        ({"dataset": "cifar10"}, "data_root=None: dataset 'cifar10' needs data_root"),
        ({"dataset": "imagenet22k"}, "dataset='imagenet22k': must be one of"),
        ({"warmup_epochs": 10, "epochs": 5}, "warmup_epochs=10.0: must be smaller than epochs (5)"),
        ({"enqueue": "all"}, "enqueue='all': must be one of both, first"),
        ({"val_fraction": 0}, "val_fraction=0.0: must be in (0, 1): the share of each class's labelled"),
        ({"val_fraction": 1}, "val_fraction=1.0: must be in (0, 1)"),
        ({"val_fraction": -0.2}, "val_fraction=-0.2: must be in (0, 1)"),
        ({"val_seed": -1}, "val_seed=-1: must be >= 0"),
        ({"rankme_samples": 0}, "rankme_samples=0: must be >= 1"),
        ({"jitter_prob": 1.5}, "jitter_prob=1.5: must be a probability in [0, 1] (or null for the augmentation base)"),
        ({"grayscale_prob": -0.1}, "grayscale_prob=-0.1: must be a probability in [0, 1]"),
        ({"flip_prob": 2}, "flip_prob=2.0: must be a probability in [0, 1]"),
        ({"jitter_brightness": -0.4}, "jitter_brightness=-0.4: must be a number >= 0"),
        ({"jitter_hue": 0.6}, "jitter_hue=0.6: must be in [0, 0.5]"),
        ({"blur_sigma": [2.0, 0.1]}, "blur_sigma=(2.0, 0.1): must be two numbers 0 < min <= max"),
        ({"preset": "paper"}, "preset='paper': must be one of paper_imagenet_r50"),
    ],
)
def test_bad_values_name_key_value_and_reason(values, needle):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict(values, source="my.yaml")
    assert str(err.value).startswith("my.yaml: ")
    assert needle in str(err.value)


def test_validation_split_defaults():
    cfg = TrainConfig()
    assert (cfg.val_fraction, cfg.val_seed, cfg.rankme_samples) == (0.1, 0, 2048)
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"val_fraction": 1.5}, source="--set")
    assert (err.value.source, err.value.key, err.value.value) == ("--set", "val_fraction", 1.5)


def test_end_to_end_ignores_queue_constraint():
    TrainConfig.from_dict({"mechanism": "end_to_end", "queue_size": 16, "batch_size": 64})


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("attraction_strategy: moco_v2\ntemperature: 0.1\nepochs: 3\n")
    cfg = TrainConfig.from_yaml(path, ["temperature=0.3", "crop_scale=[0.08, 1]", "view_size=null"])
    assert cfg.attraction_strategy == "moco_v2" and cfg.temperature == 0.3 and cfg.epochs == 3
    assert cfg.crop_scale == (0.08, 1.0) and cfg.view_size is None


@pytest.mark.parametrize(
    "text,needle",
    [
        ("a: [1, 2\n", "malformed YAML"),
        ("- 1\n- 2\n", "the top level must be a mapping"),
        ("epochs: three\n", "epochs='three': expected an integer"),
    ],
)
def test_bad_yaml_files_name_the_file(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_yaml(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        TrainConfig.from_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["temperature"])


def test_dataset_names_agree_with_the_data_module():
    from trainables import config, data

    assert config.DATASETS == data.DATASETS


def test_yaml_reads_exponent_floats_and_refuses_duplicate_keys(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("weight_decay: 1e-4\nlr: 3E-2\n")
    cfg = TrainConfig.from_yaml(path, ["temperature=5e-2"])
    assert cfg.weight_decay == 1e-4 and cfg.lr == 0.03 and cfg.temperature == 0.05
    path.write_text("lr: 0.1\nlr: 0.2\n")
    with pytest.raises(ConfigError, match=r"t.yaml: malformed YAML: line 2, column 1: duplicate key 'lr'"):
        TrainConfig.from_yaml(path)
