"""What a researcher reads first in the MLflow UI: run names, params rounded for display and
run descriptions (the `mlflow.note.content` tag MLflow shows as the run's description).

Every function here is pure (config in, text out): the live tracker and `leoclr sync` call the
same ones, so a synced run reads exactly like a live one.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

#: The tag MLflow shows (and edits) as a run's description.
DESCRIPTION_TAG = "mlflow.note.content"
#: Short names of searched keys in run names (others: the last dotted part of the key).
ABBREVIATIONS = {"temperature": "t", "key_momentum": "m", "queue_size": "q", "weight_decay": "wd",
                 "batch_size": "b", "enqueue": "enq", "seed": "s", "optimizer_momentum": "om",
                 "warmup_epochs": "wu", "embedding_dim": "d"}
STRATEGY_KEY = "attraction_strategy"


def display_value(value: Any) -> str:
    """A value as a param shows it: floats with 4 significant digits; a value above 0.99 and
    under 1 (a key momentum) keeps 4 significant digits of 1 - value (0.99873421 -> '0.9987'
    would hide the 1 - m that matters, so -> '0.998734'). Everything else as str()."""
    if isinstance(value, bool) or not isinstance(value, float) or not math.isfinite(value):
        return "None" if value is None else str(value)
    if 0.99 < value < 1.0:
        decimals = min(15, -math.floor(math.log10(1.0 - value)) + 3)
        return f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return f"{value:.4g}"


def display_params(flat: Mapping[str, Any]) -> dict[str, str]:
    """Flattened params with floats rounded for display (the full values go to config.json)."""
    return {key: display_value(value) for key, value in flat.items()}


def lookup(config: Mapping[str, Any], key: str) -> Any:
    """config["a"]["b"] for key "a.b" (None when absent)."""
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def short_trial_id(trial_id: str) -> str:
    """The part of a Tune trial id that differs between trials: a search's ids are 8 random hex
    digits (kept whole: 4 collide in ~7 % of 100-trial sweeps); a grid's are
    <experiment>_<index> (the index, without leading zeros)."""
    _, _, index = trial_id.partition("_")
    if index.isdigit():
        return index.lstrip("0") or "0"
    return trial_id


def searched_values(config: Mapping[str, Any], searched: Sequence[str]) -> list[tuple[str, str]]:
    """(key, display value) of the searched keys the config holds, strategy excluded."""
    out = []
    for key in searched:
        value = lookup(config, key)
        if key != STRATEGY_KEY and key != "seed" and value is not None:
            out.append((key, display_value(value)))
    return out


def trial_run_name(config: Mapping[str, Any], searched: Sequence[str], trial_id: str,
                   show_seed: bool = False) -> str:
    """`leoclr t=0.17 m=0.947 #99e6ea60`: strategy, searched values, the trial's short id (which
    makes the name unique within its sweep; it depends on nothing else, so a resumed or synced
    trial keeps it)."""
    parts = [str(config.get(STRATEGY_KEY, "trial"))]
    parts += [f"{ABBREVIATIONS.get(k, k.rsplit('.', 1)[-1])}={v}" for k, v in searched_values(config, searched)]
    if show_seed:
        parts.append(f"s={config.get('seed')}")
    parts.append(f"#{short_trial_id(trial_id)}")
    return " ".join(parts)


def trial_description(sweep: str, config: Mapping[str, Any], searched: Sequence[str], max_epochs: int) -> str:
    """The trial run's description: strategy, searched values, seed, epochs, data."""
    values = ", ".join(f"{k} = {v}" for k, v in searched_values(config, searched)) or "none (fixed config)"
    return (f"Trial of sweep **{sweep}**: attraction strategy `{config.get(STRATEGY_KEY)}`, "
            f"{config.get('backbone')} on {config.get('dataset')} at {config.get('image_size')} px.\n\n"
            f"- searched values: {values}\n- seed: {config.get('seed')}\n"
            f"- epochs: {config.get('epochs', max_epochs)} (sweep budget {max_epochs})\n"
            "- full config: the `config.json` artifact (params are rounded for display)")


def stop_text(stop: Mapping[str, Any] | None, epoch: int | None, max_epochs: int) -> str:
    """Why ASHA stopped a trial: 'stopped by ASHA at epoch 1: val_knn_top1 39.8 < rung cutoff
    41.8' when the scheduler's decision is known, else the epoch alone."""
    if stop and stop.get("cutoff") is not None and stop.get("value") is not None:
        op = "<" if stop.get("mode", "max") == "max" else ">"
        return (f"stopped by ASHA at epoch {stop.get('epoch', epoch)} of {max_epochs}: {stop.get('metric')} "
                f"{stop['value']:.4g} {op} rung cutoff {stop['cutoff']:.4g} (rung at epoch {stop.get('rung')})")
    return f"stopped by ASHA after epoch {epoch} of {max_epochs}"


def sweep_description(described: str) -> str:
    """The sweep run's description: the space as `leoclr sweep --dry-run` describes it (objective,
    budget, resources, seeds, fixed and searched keys)."""
    return ("Sweep parent run: one child run per trial (expand this row). Summary metrics "
            "(`best_*`, `<strategy>_best_*`, `<strategy>_mean_*`) and the `best_trial` tag are "
            "written when the sweep ends.\n\n```\n" + described.strip() + "\n```")
