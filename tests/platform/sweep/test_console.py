"""What `leoclr sweep` prints at the end."""

from __future__ import annotations

import io

from leoclr_platform.sweep import SweepOutcome, print_outcome


def rows():
    return [
        {"trial_id": "a1", "status": "COMPLETED", "epochs": 2, "val_knn_top1": 45.123, "error": None,
         "params": {"attraction_strategy": "leoclr", "temperature": 0.123456}, "seed": 0},
        {"trial_id": "a2", "status": "ERROR", "epochs": None, "val_knn_top1": None, "error": "loss is not finite",
         "params": {"attraction_strategy": "moco_v2", "temperature": 0.2}, "seed": 0},
    ]


def test_the_table_the_best_trial_and_what_to_run_next():
    best = {**rows()[0], "checkpoint": "/r/s1/train/trial_a1/epoch_0002"}
    tracking = {"uri": "http://user:pw@host:5000", "experiment": "leoclr/smoke", "parent_run_id": "p1",
                "undelivered": 3}
    out = io.StringIO()
    print_outcome(SweepOutcome("s1", "/r/s1", best, rows(), 1, tracking), file=out)
    assert out.getvalue().splitlines() == [
        "",
        "sweep s1: 2 trials, 1 failed; results in /r/s1",
        "          a1 COMPLETED  epochs=2 val_knn_top1=45.12  attraction_strategy=leoclr, temperature=0.1235",
        "          a2 ERROR      epochs=None val_knn_top1=-  attraction_strategy=moco_v2, temperature=0.2"
        "  [loss is not finite]",
        "",
        "best trial a1: val_knn_top1=45.12",
        '  config: {"attraction_strategy": "leoclr", "temperature": 0.123456} seed=0',
        "  checkpoint: /r/s1/train/trial_a1/epoch_0002",
        "  train it further: leoclr train --config /r/s1/train/trial_a1/epoch_0002/config.json --set "
        "epochs=<N> --resume /r/s1/train/trial_a1/epoch_0002",
        "",
        "MLflow: experiment 'leoclr/smoke', sweep run p1 in http://***@host:5000",
        "  WARNING: 3 tracking call(s) could not be delivered (store unreachable); when it is back: "
        "leoclr sync s1",
        "  promote the best encoder: leoclr promote --sweep s1",
        "  ablation report:          leoclr report s1",
        "  browse it:                leoclr ui",
    ]


def test_no_result_at_all_is_said():
    out = io.StringIO()
    print_outcome(SweepOutcome("s1", "/r/s1", None, rows()[1:], 1), file=out)
    assert out.getvalue().splitlines()[-1] == "no trial finished with a result"


def test_a_stopped_trial_shows_asha_s_reason():
    stopped = {"trial_id": "a3", "status": "STOPPED", "epochs": 1, "val_knn_top1": 39.8, "error": None,
               "params": {}, "seed": 0, "stop": {"mode": "max", "value": 39.8, "cutoff": 41.77}}
    out = io.StringIO()
    print_outcome(SweepOutcome("s1", "/r/s1", None, [stopped], 0), file=out)
    assert "a3 STOPPED    epochs=1 val_knn_top1=39.80    [ASHA: 39.8 < rung cutoff 41.77]" in out.getvalue()
