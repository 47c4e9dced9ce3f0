"""A readable, resolved summary of a spec: what `leoclr sweep --dry-run` prints."""

from __future__ import annotations

import textwrap

from leoclr_platform.spaces.schema import MONITOR_METRICS, ParamSpec, SweepSpec, fmt, preset_fill
from leoclr_platform.spaces.trials import asha_rungs

METRICS_VERB = {"max": "maximise", "min": "minimise"}


def describe_param(p: ParamSpec) -> str:
    """`loguniform [0.1, 0.5]  when attraction_strategy in [leoclr]` and the like."""
    if p.categorical:
        text = f"{p.kind} [{', '.join(fmt(v) for v in p.args)}]"
    else:
        low, high = p.args
        text = f"{p.kind} [{fmt(low)}, {fmt(high)}]"
        if p.step is not None:
            text += f" step {fmt(p.step)}"
        if p.kind == "one_minus_log":
            text += f"  (1 - m log-uniform in [{fmt(1 - high)}, {fmt(1 - low)}])"
    if p.when:
        conds = "; ".join(f"{k} in [{', '.join(fmt(v) for v in vals)}]" for k, vals in p.when.items())
        text += f"  when {conds}"
    return text


def describe(spec: SweepSpec) -> str:
    """The space, its objective, budget, resources, seeds, fixed and searched keys."""
    lines = [f"sweep {spec.name!r} ({spec.mode}) from {spec.path or spec.label}"]
    if spec.description:
        lines += textwrap.wrap(" ".join(spec.description.split()), width=96,
                               initial_indent="  ", subsequent_indent="  ")
    lines.append(f"objective: {METRICS_VERB[spec.metric_mode]} {spec.metric}")
    lines += _budget_lines(spec)
    lines.append(f"max concurrent trials: {spec.max_concurrent if spec.max_concurrent else 'auto (cluster)'}")
    launcher = ("Ray Train (DDP)" if spec.needs_ray_train
                else "in the Tune trial (local storage) or Ray Train (URI storage)")
    lines.append(f"resources per trial: {spec.workers} worker(s) x ({fmt(spec.cpus_per_worker)} CPU, "
                 f"{fmt(spec.gpus_per_worker)} GPU), trained {launcher}")
    if spec.mode == "search":
        lines.append(f"seeds: {spec.seeds} (every trial trains with seed {spec.sampler_seed})")
    else:
        lines.append(f"seeds: {spec.seeds} (each cell once per seed)")
    lines += _keys_lines(spec)
    if spec.metric == "loss":
        lines.append("note: the loss scale depends on temperature and strategy; comparing trials by "
                     "loss is only fair when neither is searched")
    return "\n".join(lines)


def _budget_lines(spec: SweepSpec) -> list[str]:
    if spec.mode != "search":
        cells = len(spec.cells())
        ignored = f" (budget.trials={spec.trials} ignored)" if spec.trials is not None else ""
        return [f"budget: {cells} cells x {len(spec.seeds)} seeds = {spec.total_trials()} "
                f"trials x {spec.max_epochs} epochs, no early stopping{ignored}"]
    lines = [f"budget: {spec.trials} trials (TPE, sampler seed {spec.sampler_seed}, "
             f"{spec.startup_trials} random start-up trials) x up to "
             f"{spec.max_epochs} epochs; ASHA grace {spec.grace_period}, "
             f"reduction factor {fmt(spec.reduction_factor)}"]
    knn_every = spec.fixed_values().get("knn_every", 1)
    if spec.metric in MONITOR_METRICS and knn_every != 1:
        lines.append(f"kNN monitor: every {knn_every} epochs, at the ASHA rungs {asha_rungs(spec)} "
                     f"and at epoch {spec.max_epochs}")
    return lines


def _keys_lines(spec: SweepSpec) -> list[str]:
    lines = ["fixed (base):"]
    width = max([len(k) for k in spec.base] + [len(p.name) for p in spec.params] + [6])
    for key, value in spec.base.items():
        if key != "epochs":
            lines.append(f"  {key:<{width}} = {fmt(value)}")
    lines.append(f"  {'epochs':<{width}} = {spec.max_epochs}  (budget.max_epochs)")
    filled = {k: v for k, v in preset_fill(spec.base).items() if k not in spec.base and k != "epochs"}
    if filled:
        lines.append(f"filled by preset {spec.base['preset']} (base and space keys override it):")
        lines.extend(f"  {key:<{width}} = {fmt(value)}" for key, value in filled.items()
                     if spec.param(key) is None)
    lines.append("searched (file order):")
    for p in spec.params:
        lines.append(f"  {p.name:<{width}}   {describe_param(p)}")
    return lines
