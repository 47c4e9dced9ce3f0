"""The confirmation stage of a search sweep (`budget.confirm: {top: K, seeds: N}`, `--confirm`).

After the search, the best K configurations of EACH strategy (`attraction_strategy`), ranked by
the validation objective among trials that ran every epoch, are re-run at the full budget
(`max_epochs`, no ASHA) on N fresh seeds. The seeds are deterministic, disjoint from the
search's `seeds` and the same for every strategy, so the report can pair runs by seed
(`confirm_seeds`). They run as a second Tune experiment, `<sweep>/confirm/`, whose trials are
the sweep's child runs tagged stage=confirm, seed, confirm_of (the search trial whose config is
re-run) and strategy (docs/tracking.md). What was selected is kept in sweep.json (so a resumed
sweep confirms the same configurations and Tune's restore skips finished confirm runs), the
confirm rows in summary.json under "confirm". Selection reads val_* only; test_* is copied
into the rows for the report.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from leoclr_platform.errors import SweepError
from leoclr_platform.spaces import SweepSpec, decode_sampled
from leoclr_platform.sweep.meta import write_meta
from leoclr_platform.sweep.paths import SUMMARY_FILE, is_uri, latest_checkpoint, trial_id_from_path
from leoclr_platform.sweep.results import SweepOutcome, disk_history, error_line

CONFIRM_DIR = "confirm"  # the Tune experiment of the confirm runs, under the sweep's folder
#: Confirmation seeds are CONFIRM_SEED_BASE, +1, ... skipping the search's seeds: the same for
#: every strategy and every sweep with the same search seeds.
CONFIRM_SEED_BASE = 1000
#: Metrics copied from a confirm trial's last result into its row.
ROW_METRICS = ("val_knn_top1", "val_knn_top5", "test_knn_top1", "test_knn_top5", "rankme", "loss")


def parse_confirm_flag(text: str) -> dict[str, int] | None:
    """`--confirm N` or `--confirm K:N` -> {"seeds": N} / {"top": K, "seeds": N}; `0` turns the
    space's budget.confirm off (None). Values are checked by validate_space like the file's."""
    parts = str(text).split(":")
    if len(parts) > 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
        reason = "must be N (seeds) or K:N (top configurations per strategy : seeds), e.g. 3 or 1:3"
        raise SweepError(reason, key="--confirm", value=text, message=f"--confirm {text!r}: {reason}")
    numbers = [int(p) for p in parts]
    if numbers == [0]:
        return None
    return {"seeds": numbers[0]} if len(numbers) == 1 else {"top": numbers[0], "seeds": numbers[1]}


def with_confirm_flag(spec: SweepSpec, flag: dict[str, int] | None) -> dict[str, int] | None:
    """The spec's budget.confirm with `--confirm` applied (top kept from the file unless given)."""
    if flag is None:
        return None
    return {"top": flag.get("top", (spec.confirm or {}).get("top", 1)), "seeds": flag["seeds"]}


def confirm_seeds(spec: SweepSpec) -> list[int]:
    """The N fresh seeds of the confirmation stage (see CONFIRM_SEED_BASE)."""
    n = int((spec.confirm or {}).get("seeds", 0))
    seeds, s = [], CONFIRM_SEED_BASE
    while len(seeds) < n:
        if s not in spec.seeds:
            seeds.append(s)
        s += 1
    return seeds


def strategy_of(spec: SweepSpec, params: dict[str, Any]) -> str:
    return str(params.get("attraction_strategy", spec.fixed_values().get("attraction_strategy")))


def select_configs(spec: SweepSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best `top` configurations of each strategy by the objective, one entry per distinct
    config: {confirm_of, strategy, params, <metric>}. A strategy's finished trials come first; a
    strategy whose every trial ASHA stopped is still confirmed, from the trials that went furthest
    (the headline compares every searched strategy at the full budget, which is what
    confirmation is for). Ties: the earlier row, i.e. the trial Tune created first, as for the
    best trial; never the random trial id. Strategies in order of their first appearance."""
    top = int((spec.confirm or {}).get("top", 1))
    sign = -1 if spec.metric_mode == "max" else 1
    ranked = [r for r in rows if r["status"] in ("COMPLETED", "STOPPED") and r.get(spec.metric) is not None]
    # stable sort: finished first, then the furthest epoch, then the objective; ties keep row order
    ranked.sort(key=lambda r: (r["status"] != "COMPLETED", -(r.get("epochs") or 0), sign * r[spec.metric]))
    chosen: dict[str, list[dict[str, Any]]] = {}
    for r in ranked:
        strategy = strategy_of(spec, r["params"])
        picks = chosen.setdefault(strategy, [])
        if len(picks) < top and all(p["params"] != r["params"] for p in picks):
            picks.append({"confirm_of": str(r["trial_id"]), "strategy": strategy, "params": dict(r["params"]),
                          spec.metric: r[spec.metric]})
    order = {strategy_of(spec, r["params"]): i for i, r in reversed(list(enumerate(rows)))}
    return [p for s in sorted(chosen, key=lambda s: order.get(s, 0)) for p in chosen[s]]


def trial_cells(spec: SweepSpec, selected: list[dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    """The confirm trials' configs ({"cell": ...} like a grid's): seeds outer, so a stage cut
    short still has every configuration on the first seeds. Every cell carries every searched
    key (None where not asked), as the progress table needs."""
    keys = {p.name: None for p in spec.params}
    return [{**keys, **sel["params"], "seed": s, "confirm_of": sel["confirm_of"]} for s in seeds for sel in selected]


def trial_stage_tags(config: dict[str, Any]) -> dict[str, str]:
    """The `stage` (and `confirm_of`) tags of a trial's run, from its Tune config."""
    cell = config.get("cell") if isinstance(config.get("cell"), dict) else {}
    if cell.get("confirm_of") is not None:
        return {"stage": "confirm", "confirm_of": str(cell["confirm_of"])}
    return {"stage": "search"}


def confirm_row(spec: SweepSpec, result) -> dict[str, Any]:
    """One confirm trial's row: status, epochs, the ROW_METRICS of its last result, its config."""
    config = (result.config or {}).get("cell", {})
    params = decode_sampled(spec, config)
    seed = params.pop("seed", None)
    metrics = result.metrics or {}
    epochs = metrics.get("epoch")
    status = "ERROR" if result.error else ("COMPLETED" if epochs is not None and epochs >= spec.max_epochs
                                           else "STOPPED")
    return {"trial_id": metrics.get("trial_id") or trial_id_from_path(result.path), "stage": "confirm",
            "status": status, "epochs": epochs, **{m: metrics.get(m) for m in ROW_METRICS},
            "params": params, "seed": seed, "confirm_of": config.get("confirm_of"),
            "strategy": strategy_of(spec, params), "error": error_line(result.error), "path": result.path}


def plan_confirmation(spec: SweepSpec, meta: dict[str, Any], root: str, rows: list[dict[str, Any]]) -> dict:
    """What the stage runs, chosen once and kept in sweep.json["confirm"] (a resumed sweep reads
    it back: the same configurations and seeds, whatever Tune's row order is)."""
    kept = meta.get("confirm")
    if kept and kept.get("selected") is not None:
        return kept
    plan = {"top": int(spec.confirm.get("top", 1)), "seeds": confirm_seeds(spec),
            "metric": spec.metric, "selected": select_configs(spec, rows), "status": "running"}
    meta["confirm"] = plan
    write_meta(root, meta)
    return plan


def run_confirmation(ctx, meta: dict[str, Any], outcome: SweepOutcome, *, concurrency: int, resume: bool,
                     verbose: int, callbacks: list) -> dict[str, Any] | None:
    """Run (or, after a stopped driver, finish) the confirmation stage; returns the summary
    section {top, seeds, metric, selected, trials} (None without budget.confirm)."""
    from leoclr_platform.sweep.tuner import build_confirm_tuner

    spec = ctx.spec
    if spec.mode != "search" or not spec.confirm:
        return None
    plan = plan_confirmation(spec, meta, ctx.root, outcome.trials)
    rows: list[dict[str, Any]] = []
    if plan["selected"]:
        cells = trial_cells(spec, plan["selected"], plan["seeds"])
        tuner = build_confirm_tuner(ctx, cells, concurrency, resume=resume, verbose=verbose, callbacks=callbacks)
        rows = [confirm_row(spec, r) for r in tuner.fit()]
    section = {**plan, "status": "done", "trials": rows}
    meta["confirm"] = {k: v for k, v in section.items() if k != "trials"}
    write_meta(ctx.root, meta)
    outcome.confirm = section
    if not is_uri(ctx.root):
        (Path(ctx.root) / SUMMARY_FILE).write_text(json.dumps(dataclasses.asdict(outcome), indent=2, default=str))
    return section


def track_confirm_rows(tracker, spec: SweepSpec, root: str, rows: list[dict[str, Any]]) -> None:
    """Bring the confirm runs in line with disk (every epoch, the final status, the encoder), as
    sync.finish_tracking does for the search trials; a run the live callback never opened (a
    store that was away) is created here with its confirm tags."""
    from leoclr_platform.sweep.trial import resolved_config

    status_of = {"COMPLETED": "FINISHED", "STOPPED": "KILLED", "ERROR": "FAILED"}
    for row in rows:
        trial_id = row["trial_id"]
        cell = {**row["params"], "seed": row["seed"], "confirm_of": row["confirm_of"]}
        tracker.trial_started(trial_id, resolved_config(spec, {"cell": cell}).to_dict(),
                              tags=trial_stage_tags({"cell": cell}), history=disk_history(root, trial_id))
        status = status_of[row["status"]]
        checkpoint = latest_checkpoint(root, trial_id) if status == "FINISHED" else None
        tracker.trial_ended(trial_id, status=status, reason=row["error"], checkpoint=checkpoint)


def confirm_root(root: str) -> str:
    return os.path.join(root, CONFIRM_DIR)
