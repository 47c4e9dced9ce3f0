"""Run names, display values and descriptions (pure functions shared by live tracking and sync)."""

from __future__ import annotations

from leoclr_platform.tracking import run_text as T
from leoclr_platform.tracking.trial_values import epoch_metrics, start_from_history, trial_params


def test_display_values_keep_four_significant_digits_and_what_matters_of_a_momentum():
    assert T.display_value(0.9187929886101887) == "0.9188"
    assert T.display_value(0.17123456) == "0.1712" and T.display_value(3.0e-4) == "0.0003"
    assert T.display_value(0.99873421) == "0.998734"  # 4 digits of 1 - m
    assert T.display_value(0.95) == "0.95" and T.display_value(64) == "64" and T.display_value(True) == "True"
    assert T.display_value(None) == "None" and T.display_value("leoclr") == "leoclr"


def test_a_run_name_says_strategy_searched_values_and_a_short_unique_id():
    config = {"attraction_strategy": "leoclr", "temperature": 0.17234, "key_momentum": 0.94712, "seed": 3,
              "photo_patches": {"side_px": 96}}
    searched = ["attraction_strategy", "temperature", "key_momentum", "photo_patches.side_px"]
    assert T.trial_run_name(config, searched, "99e6ea60") == "leoclr t=0.1723 m=0.9471 side_px=96 #99e6ea60"
    assert T.trial_run_name(config, searched[:2], "a5b3c_00012", show_seed=True) == "leoclr t=0.1723 s=3 #12"
    assert T.trial_run_name(config, [], "a5b3c_00000") == "leoclr #0"
    # the id alone makes it unique: two trials with the same rounded values differ by it
    assert T.trial_run_name(config, searched, "99e6ea61") != T.trial_run_name(config, searched, "99e6ea60")


def test_descriptions_name_the_searched_values_seed_epochs_and_why_asha_stopped():
    config = {"attraction_strategy": "moco_v2", "temperature": 0.2, "seed": 7, "epochs": 20,
              "backbone": "resnet18", "dataset": "photo_patches", "image_size": 32}
    text = T.trial_description("demo-1", config, ["temperature"], 20)
    assert "moco_v2" in text and "temperature = 0.2" in text and "seed: 7" in text and "epochs: 20" in text
    stop = {"epoch": 1, "rung": 1.0, "metric": "val_knn_top1", "mode": "max", "value": 39.81, "cutoff": 41.77}
    assert T.stop_text(stop, 1, 4) == \
        "stopped by ASHA at epoch 1 of 4: val_knn_top1 39.81 < rung cutoff 41.77 (rung at epoch 1.0)"
    assert " > rung cutoff " in T.stop_text({**stop, "mode": "min"}, 1, 4)
    assert T.stop_text(None, 2, 4) == "stopped by ASHA after epoch 2 of 4"


def test_trial_params_are_rounded_with_the_scaled_lr_and_metrics_renamed():
    params = trial_params({"lr": 0.0312345, "batch_size": 512, "photo_patches": {"scale": [0.2, 1.0]}})
    assert params == {"lr": "0.03123", "batch_size": "512", "photo_patches.scale": "[0.2, 1.0]", "lr_scaled": "0.06247"}
    result = {"lr": 0.05, "loss": 2.0, "system/cpu_percent": 50.0, "time_total_s": 3.0, "epoch": 1}
    assert epoch_metrics(result) == {"lr_actual": 0.05, "loss": 2.0, "system/cpu_percent": 50.0}
    assert epoch_metrics(result, system=False) == {"lr_actual": 0.05, "loss": 2.0}
    assert start_from_history({2: {"timestamp": 110, "time_total_s": 20}, 1: {"timestamp": 100, "time_total_s": 9}}) == 91
    assert start_from_history({1: {"loss": 1.0}}) is None
