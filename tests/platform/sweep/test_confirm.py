"""The confirmation stage's pure parts: the flag, the seeds, which configurations are re-run,
the trial configs and their tags, and the refusals of a malformed budget.confirm."""

from __future__ import annotations

import dataclasses
import json

import pytest

from leoclr_platform import spaces
from leoclr_platform.errors import SpaceError, SweepError
from leoclr_platform.sweep import confirm as C


def smoke(**changes):
    return dataclasses.replace(spaces.load_space("smoke"), **changes)


def row(trial_id, strategy, value, status="COMPLETED", temperature=0.2):
    return {"trial_id": trial_id, "status": status, "epochs": 2, "val_knn_top1": value,
            "params": {"attraction_strategy": strategy, "temperature": temperature}, "seed": 0}


def test_flag_forms():
    assert C.parse_confirm_flag("3") == {"seeds": 3}
    assert C.parse_confirm_flag("2:4") == {"top": 2, "seeds": 4}
    assert C.parse_confirm_flag("0") is None
    for bad in ("x", "1:2:3", "", "2.5"):
        with pytest.raises(SweepError, match="--confirm"):
            C.parse_confirm_flag(bad)
    spec = smoke(confirm={"top": 2, "seeds": 3})
    assert C.with_confirm_flag(spec, {"seeds": 5}) == {"top": 2, "seeds": 5}  # top kept from the file
    assert C.with_confirm_flag(smoke(), {"seeds": 2}) == {"top": 1, "seeds": 2}


def test_seeds_are_fresh_deterministic_and_shared():
    spec = smoke(seeds=[0, 1000, 1002], confirm={"top": 1, "seeds": 3})
    seeds = C.confirm_seeds(spec)
    assert seeds == [1001, 1003, 1004]
    assert not set(seeds) & set(spec.seeds)
    assert C.confirm_seeds(spec) == seeds


def test_best_finished_configs_of_each_strategy_by_validation():
    """A strategy's finished trials come before its stopped ones (an earlier epoch's value);
    failed trials never qualify; a duplicate config is confirmed once; each strategy gets its own
    top K."""
    spec = smoke(confirm={"top": 2, "seeds": 2})
    rows = [row("a", "moco_v2", 50.0), row("b", "leoclr", 99.0, status="STOPPED"),
            row("c", "leoclr", 40.0), row("d", "moco_v2", 70.0), row("e", "moco_v2", 60.0),
            row("f", "moco_v2", 70.0, temperature=0.2), row("g", "leoclr", 41.0, temperature=0.3),
            row("h", "leoclr", None), row("i", "moco_v2", 80.0, status="ERROR", temperature=0.4)]
    rows[4]["params"]["temperature"] = 0.25
    rows[0]["params"]["temperature"] = 0.3
    picked = C.select_configs(spec, rows)
    assert [(p["strategy"], p["confirm_of"]) for p in picked] == [
        ("moco_v2", "d"), ("moco_v2", "e"), ("leoclr", "g"), ("leoclr", "c")]
    one = C.select_configs(dataclasses.replace(spec, confirm={"top": 1, "seeds": 2}), rows)
    assert [p["confirm_of"] for p in one] == ["d", "g"]
    # a tie goes to the earlier row (Tune's creation order), whatever the (random) trial ids say
    tied = [row("zz", "moco_v2", 70.0), row("aa", "moco_v2", 70.0, temperature=0.4)]
    assert [p["confirm_of"] for p in C.select_configs(spec, tied)] == ["zz", "aa"]


def test_a_strategy_whose_trials_asha_all_stopped_is_still_confirmed():
    """The headline compares every searched strategy: with no finished trial, the one that went
    furthest (then the best value there) is confirmed at the full budget."""
    spec = smoke(confirm={"top": 1, "seeds": 2})
    rows = [row("a", "moco_v2", 60.0), row("b", "leoclr", 90.0, status="STOPPED"),
            row("c", "leoclr", 70.0, status="STOPPED", temperature=0.3),
            row("d", "leoclr", 99.0, status="ERROR", temperature=0.4)]
    rows[0]["epochs"] = 4
    rows[1]["epochs"], rows[2]["epochs"] = 1, 2   # c went further than b
    assert [(p["strategy"], p["confirm_of"]) for p in C.select_configs(spec, rows)] == [
        ("moco_v2", "a"), ("leoclr", "c")]


def test_trial_cells_and_stage_tags():
    spec = smoke(confirm={"top": 1, "seeds": 2})
    selected = [{"confirm_of": "d", "strategy": "moco_v2", "params": {"attraction_strategy": "moco_v2",
                                                                       "temperature": 0.3}}]
    cells = C.trial_cells(spec, selected, [1000, 1001])
    assert [c["seed"] for c in cells] == [1000, 1001]
    assert all(c["confirm_of"] == "d" and c["temperature"] == 0.3 for c in cells)
    assert set(spec.fixed_values()) >= {k for k in cells[0] if k not in ("confirm_of",)}
    assert C.trial_stage_tags({"cell": cells[0]}) == {"stage": "confirm", "confirm_of": "d"}
    assert C.trial_stage_tags({"temperature": 0.2}) == {"stage": "search"}
    assert C.trial_stage_tags({"cell": {"temperature": 0.2, "seed": 0}}) == {"stage": "search"}
    # the resolved config of a confirm trial trains the confirm seed at the full budget
    from leoclr_platform.sweep.trial import resolved_config

    cfg = resolved_config(spec, {"cell": cells[1]})
    assert cfg.seed == 1001 and cfg.temperature == 0.3 and cfg.epochs == spec.max_epochs


def test_plan_is_kept_in_sweep_json_and_reused(tmp_path):
    spec = smoke(confirm={"top": 1, "seeds": 2})
    meta = {"name": "s"}
    plan = C.plan_confirmation(spec, meta, str(tmp_path), [row("a", "moco_v2", 50.0)])
    assert plan["selected"][0]["confirm_of"] == "a" and plan["seeds"] == [1000, 1001]
    assert json.loads((tmp_path / "sweep.json").read_text())["confirm"]["selected"][0]["confirm_of"] == "a"
    # resumed: whatever the rows say now, the kept plan is used
    again = C.plan_confirmation(spec, meta, str(tmp_path), [row("z", "moco_v2", 90.0)])
    assert again["selected"][0]["confirm_of"] == "a"


@pytest.mark.parametrize("confirm, key, reason", [
    ({"top": 1, "seeds": 1}, "budget.confirm.seeds", "must be an integer >= 2"),
    ({"top": 0, "seeds": 3}, "budget.confirm.top", "must be an integer >= 1"),
    ({"top": 5, "seeds": 3}, "budget.confirm.top", "must be <= budget.trials"),
    ({"seeds": 3, "runs": 2}, "budget.confirm.runs", "unknown key"),
    ([1, 3], "budget.confirm", "must be a mapping"),
])
def test_malformed_confirm_is_refused(confirm, key, reason):
    with pytest.raises(SpaceError, match=reason) as info:
        spaces.validate_space(smoke(confirm=confirm), check_data=False)
    assert info.value.key == key


def test_confirm_in_grid_mode_is_refused():
    grid = dataclasses.replace(spaces.load_space("table8", check_data=False), confirm={"seeds": 3})
    with pytest.raises(SpaceError, match="only applies to mode: search") as info:
        spaces.validate_space(grid, check_data=False)
    assert info.value.key == "budget.confirm"


def test_confirm_parses_from_yaml(tmp_path):
    text = spaces.load_space("smoke").text.replace("budget:", "budget:\n  confirm: {top: 1, seeds: 3}", 1)
    spec = spaces.parse_space(text, source="x.yaml")
    assert spec.confirm == {"top": 1, "seeds": 3}
