"""Loading search spaces: shipped names and paths, the shapes of the shipped files, what the
package imports."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from leoclr_platform import spaces as S
from leoclr_platform.spaces import SpaceError, load_space
from space_files import LOCAL, REPO, SHIPPED, write
from trainables.config import TrainConfig


def test_named_spaces_lists_the_shipped_files():
    assert set(SHIPPED) <= set(S.named_spaces())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_loads_and_yields_valid_configs(name):
    spec = load_space(name, check_data=name in LOCAL)
    assert spec.name == name and spec.text.lstrip().startswith("#")  # header comment
    assert spec.description
    configs = S.grid_configs(spec) if spec.mode == "grid" else S.sample_configs(spec, 8)
    assert configs
    for values in configs:
        cfg = S.trial_config(spec, values)
        assert isinstance(cfg, TrainConfig)
        assert cfg.epochs == spec.max_epochs
        for key, value in spec.base.items():
            if key not in ("crop_scale",):
                assert getattr(cfg, key) == value
    assert spec.total_trials() >= 1
    text = S.describe(spec)
    assert spec.name in text and spec.metric in text
    for p in spec.params:
        assert p.name in text


def test_cluster_spaces_refuse_a_missing_data_root():
    with pytest.raises(SpaceError, match=r"^table8\.yaml: base\.data_root: /data/cifar10 does not exist"):
        load_space("table8")


def test_demo_and_smoke_shapes():
    demo = load_space("demo")
    assert demo.mode == "search" and demo.base["dataset"] == "photo_patches"
    assert demo.base["backbone"] == "small_cnn" and demo.base["image_size"] == 32
    assert demo.confirm == {"top": 1, "seeds": 3}
    assert {p.name for p in demo.params} >= {"attraction_strategy", "temperature", "key_momentum"}
    assert set(demo.param("attraction_strategy").args) == {"leoclr", "moco_v2"}
    assert demo.param("key_momentum").kind == "one_minus_log"
    assert demo.workers == 1 and demo.gpus_per_worker == 0
    smoke = load_space("smoke")
    assert smoke.total_trials() == 3 and smoke.max_epochs == 2
    assert smoke.base["photo_patches"] == {"train_per_class": 8, "test_per_class": 4}


def test_name_and_path_resolve_to_the_same_space(tmp_path, monkeypatch):
    by_name = load_space("smoke")
    by_path = load_space(str(REPO / "search_spaces" / "smoke.yaml"))
    assert by_name.params == by_path.params and by_name.base == by_path.base
    assert by_name.source == "smoke.yaml"
    copy_path = write(tmp_path, by_name.text, "my_sweep.yaml")
    mine = load_space(copy_path)
    assert mine.name == "smoke"  # `name:` in the file wins over the file stem
    assert mine.path == copy_path.resolve() and mine.text == by_name.text
    monkeypatch.chdir(tmp_path)  # "smoke.yaml" is not a file here: falls back to the shipped one
    assert load_space("smoke.yaml").params == by_name.params
    assert load_space("my_sweep.yaml").path == copy_path.resolve()


def test_name_defaults_to_the_file_stem(tmp_path):
    spec = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    del spec["name"]
    assert load_space(write(tmp_path, spec, "tiny_run.yaml")).name == "tiny_run"


def test_unknown_name_lists_the_shipped_spaces(tmp_path):
    with pytest.raises(SpaceError) as err:
        load_space("smok")
    msg = str(err.value)
    assert msg.startswith("smok: no such search space") and "did you mean 'smoke'" in msg
    for name in SHIPPED:
        assert name in msg
    with pytest.raises(SpaceError, match="file not found"):
        load_space(str(tmp_path / "nope.yaml"))


def test_yaml_exponent_floats_and_relative_data_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cifar").mkdir()
    text = ("base: {dataset: cifar10, data_root: cifar, weight_decay: 1e-4}\n"
            "space: {lr: {loguniform: [1e-3, 1e-1]}}\nbudget: {trials: 2, max_epochs: 1}\n")
    spec = load_space(write(tmp_path, text))
    assert spec.base["weight_decay"] == 1e-4 and spec.param("lr").args == [1e-3, 1e-1]
    assert spec.base["data_root"] == str((tmp_path / "cifar").resolve())  # trials chdir: absolute


def test_the_readme_example_is_a_valid_space(tmp_path):
    import re

    text = (REPO / "search_spaces" / "README.md").read_text()
    block = re.search(r"## A complete file\n\n```yaml\n(.*?)```", text, re.S).group(1)
    spec = load_space(write(tmp_path, block, "demo.yaml"))
    assert [p.name for p in spec.params][:2] == ["attraction_strategy", "temperature"]
    assert spec.param("queue_size").when == {"mechanism": ["momentum"]}


def test_spaces_module_imports_neither_ray_nor_torch():
    code = ("import sys, leoclr_platform.spaces as s; s.load_space('demo', check_data=False); "
            "bad = [m for m in ('ray', 'torch') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
