"""Presets in search spaces (issue 13): `base: {preset: ...}` fills the trial configs, explicit keys
override it, the resolved config names it, and the shipped spaces that reproduce a paper table say
which table, preset and protocol, with the paper's numbers."""

from __future__ import annotations

import re

import pytest

from leoclr_platform import spaces as S
from leoclr_platform.errors import SpaceError
from space_files import REPO, write
from trainables.presets import PRESETS

GRID = {"name": "p", "mode": "grid", "base": {"preset": "paper_cifar10_r18", "data_root": "/nowhere", "lr": 0.06},
        "space": {"attraction_strategy": {"grid": ["leoclr", "moco_v2"]}}}


def test_a_preset_fills_the_trial_configs_and_explicit_keys_win(tmp_path):
    spec = S.load_space(write(tmp_path, GRID), check_data=False)
    assert spec.max_epochs == 800  # the preset's epochs, as budget.max_epochs's default
    configs = [S.trial_config(spec, cell) for cell in spec.cells()]
    assert [c.attraction_strategy for c in configs] == ["leoclr", "moco_v2"]
    for cfg in configs:
        assert cfg.preset == "paper_cifar10_r18"  # the resolved config names its recipe
        assert cfg.lr == 0.06  # base wins over the preset's 0.03
        assert (cfg.key_momentum, cfg.weight_decay, cfg.temperature, cfg.batch_size) == (0.999, 1e-4, 0.2, 256)
        assert (cfg.backbone, cfg.dataset, cfg.epochs) == ("resnet18_cifar", "cifar10", 800)


def test_the_data_check_sees_the_dataset_a_preset_names(tmp_path):
    with pytest.raises(SpaceError, match=r"base\.data_root: /nowhere does not exist \(dataset cifar10 reads"):
        S.load_space(write(tmp_path, GRID))


def test_an_unknown_preset_is_refused_with_a_hint(tmp_path):
    data = {**GRID, "base": {**GRID["base"], "preset": "paper_cifar_r18"}}
    with pytest.raises(SpaceError, match=r"base\.preset: preset='paper_cifar_r18': must be one of .*"
                                         r"\(did you mean 'paper_cifar10_r18'\?\)"):
        S.load_space(write(tmp_path, data), check_data=False)


def test_a_preset_can_be_a_grid_axis(tmp_path):
    data = {"name": "p", "mode": "grid", "base": {"data_root": "/nowhere", "epochs": 2},
            "space": {"preset": {"grid": ["paper_cifar10_r18", "moco_cifar_demo"]}}}
    spec = S.load_space(write(tmp_path, data), check_data=False)
    configs = {c.preset: c for c in (S.trial_config(spec, cell) for cell in spec.cells())}
    assert configs["paper_cifar10_r18"].key_momentum == 0.999 and configs["moco_cifar_demo"].key_momentum == 0.99


def test_the_dry_run_lists_what_the_preset_fills(tmp_path):
    spec = S.load_space(write(tmp_path, GRID), check_data=False)
    text = S.describe(spec)
    assert "filled by preset paper_cifar10_r18 (base and space keys override it):" in text
    assert re.search(r"^  key_momentum +=", text, re.M) and not re.search(r"^  lr += 0\.03", text, re.M)


#: The paper's numbers each reproducing space must carry (LeOCLR, TMLR 2024).
PAPER = {
    "table8": ("Table 8", "paper_cifar10_r18", ["71.7", "69.3", "67.7", "67.5"]),
    "mechanism": ("Table 5", "paper_cifar10_r18", ["62.0", "65.5"]),
    "augmentation_removal": ("Fig. 4", "paper_stl10_r18", ["67.5 -> 39.5", "71.7 -> 46.6"]),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_a_paper_space_names_its_table_preset_protocol_and_numbers(name):
    table, preset, numbers = PAPER[name]
    text = (REPO / "search_spaces" / f"{name}.yaml").read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert f"Reproduces: LeOCLR (TMLR 2024) {table}" in header
    assert f"Preset: {preset}" in header and "Protocol:" in header and "linear evaluation" in header
    for number in numbers:
        assert number in header, number
    spec = S.load_space(name, check_data=False)
    assert spec.base["preset"] == preset and preset in PRESETS
    assert S.trial_config(spec, spec.cells()[0]).preset == preset


def test_augmentation_removal_has_the_five_sets_of_fig_4():
    spec = S.load_space("augmentation_removal", check_data=False)
    sets = {(c["jitter_prob"], c["grayscale_prob"], c.get("blur_prob", 0.5))
            for c in spec.cells() if c["attraction_strategy"] == "leoclr"}
    # Baseline, R_grayscale, R_color, Crop + Blur, Crop_only
    assert sets == {(0.8, 0.2, 0.5), (0.8, 0.0, 0.5), (0.0, 0.2, 0.5), (0.0, 0.0, 0.5), (0.0, 0.0, 0.0)}
    crop_only = S.trial_config(spec, {"attraction_strategy": "moco_v2", "jitter_prob": 0.0,
                                      "grayscale_prob": 0.0, "blur_prob": 0.0})
    assert (crop_only.jitter_prob, crop_only.grayscale_prob, crop_only.blur_prob) == (0.0, 0.0, 0.0)
