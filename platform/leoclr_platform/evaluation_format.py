"""What `leoclr evaluate` prints: each protocol's typed settings before the compute, and the
results table after it (the encoder beside the recalibrated random baseline, with the gain)."""

from __future__ import annotations

from typing import Any

#: Rows of the table per protocol kind: (label, metric key of the protocol's result).
_ROWS = {
    "knn": (("kNN", "top"),),
    "linear": (("linear (centre view)", "top"),),
    "random_crop": (("linear (random crops)", "top"), ("  drop from centre view (Table 7)", "drop")),
    "semi": (("fine-tune, {label}", "top"),),
    "transfer": (("{label}: linear", "linear_top"), ("{label}: fine-tune", "finetune_top")),
}


def format_settings(protocols: dict[str, dict[str, Any]]) -> str:
    """One line per protocol, its settings as resolved for the data (what is logged as params):
    `semi_10pct (semi): label_fraction=0.1, epochs=30, ...`."""
    lines = ["protocol settings (scaled to the labelled split; logged as params <protocol>.<field>):"]
    for name, entry in protocols.items():
        fields = ", ".join(f"{k}={v!r}" for k, v in entry["settings"].items())
        lines.append(f"  {name} ({entry['kind']}): {fields}")
    return "\n".join(lines)


def _value(metrics: dict[str, float] | None, key: str) -> float | None:
    return None if metrics is None else metrics.get(key)


def _cell(value: float | None, width: int = 8) -> str:
    return f"{value:{width}.2f}" if value is not None else f"{'-':>{width}}"


def _gain(value: float | None, base: float | None) -> str:
    return f"{value - base:+8.2f}" if value is not None and base is not None else f"{'-':>8}"


def format_table(outcome: dict[str, Any]) -> str:
    """The results: per protocol (and part) top-1 / top-5 of the encoder, the baseline's top-1
    and the gain in points."""
    lines = [f"{outcome['dataset']} on {outcome['device']} ({outcome['wall_s']:.1f} s); baseline: "
             + ("random weights, BatchNorm recalibrated (same backbone and seed)" if outcome["baseline"] else "none"),
             f"  {'':<36}{'top-1':>8}{'top-5':>8}{'random':>8}{'gain':>8}"]
    for name, entry in outcome["protocols"].items():
        metrics, base = entry["metrics"], (entry.get("baseline") or {}).get("metrics")
        for label, key in _ROWS[entry["kind"]]:
            label = label.format(label=name)
            if key == "drop":
                lines.append(f"  {label:<36}{_cell(metrics.get('drop'))}{'':>8}{_cell(_value(base, 'drop'))}")
                continue
            top1, top5 = metrics.get(f"{key}1"), metrics.get(f"{key}5")
            if top1 is None:
                continue
            base1 = _value(base, f"{key}1")
            lines.append(f"  {label:<36}{_cell(top1)}{_cell(top5)}{_cell(base1)}{_gain(top1, base1)}")
    return "\n".join(lines)


def format_results(results: dict[str, Any], outcome: dict[str, Any]) -> str:
    """The printed table (`results` is `outcome["results"]`, kept for older callers)."""
    return format_table(outcome)
