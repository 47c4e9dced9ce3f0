"""Every corner of a search space must be a trial config that can run.

A corner is one combination of every categorical value and both ends of every numeric range
(`when` honoured). Building the `TrainConfig` at each corner catches a bad choice, a queue too
small for the largest batch or a temperature range reaching 0 before any compute, and the
failing corner is blamed on the searched parameter(s) that cause it. Above CORNER_LIMIT corners
each parameter is checked on its own, plus the queue-vs-batch interaction.
"""

from __future__ import annotations

from typing import Any, Mapping

from trainables.config import ConfigError, TrainConfig

from leoclr_platform.errors import SpaceError
from leoclr_platform.spaces.schema import CORNER_LIMIT, ParamSpec, SweepSpec, combinations

#: (the failing TrainConfig key, "key=value: reason")
Problem = tuple[str, str]


def check_corners(spec: SweepSpec) -> None:
    """Build the TrainConfig at every corner of the space; blame the first bad one precisely."""
    fixed = spec.fixed_values()
    for checked, corner in enumerate(combinations(spec.params, fixed, ParamSpec.corner_values)):
        if checked >= CORNER_LIMIT:
            break
        _raise_if_bad(spec, corner)
    else:
        return
    for p in spec.params:  # too many corners: each parameter's values on their own
        for v in p.corner_values():
            _raise_if_bad(spec, {**_conditions_met(spec, p), p.name: v})
    _check_queue_against_batch(spec, fixed)


def _raise_if_bad(spec: SweepSpec, corner: dict[str, Any]) -> None:
    problem = config_problem(spec, corner)
    if problem is not None:
        raise blame(spec, corner, problem)


def _conditions_met(spec: SweepSpec, p: ParamSpec) -> dict[str, Any]:
    """Values of p's searched `when` keys that let p be asked (the first allowed of each)."""
    corner = {}
    for key, allowed in p.when.items():
        cond = spec.param(key)
        if cond is not None:
            corner[key] = next(a for a in allowed if a in cond.args)
    return corner


def _check_queue_against_batch(spec: SweepSpec, fixed: Mapping[str, Any]) -> None:
    """The interaction that matters most when corners are not all tried: every momentum trial's
    queue must hold the largest batch."""
    queue, batch = spec.param("queue_size"), spec.param("batch_size")
    if queue is None and batch is None:
        return
    q_min = min(queue.corner_values()) if queue else fixed["queue_size"]
    b_max = max(batch.corner_values()) if batch else fixed["batch_size"]
    mech = spec.param("mechanism")
    momentum = "momentum" in (mech.args if mech else [fixed["mechanism"]])
    if momentum and q_min < b_max:
        at = f"space.queue_size.{queue.kind}" if queue else f"space.batch_size.{batch.kind}"
        raise SpaceError(f"the smallest queue_size that can be sampled ({q_min}) must be >= the largest "
                         f"batch_size ({b_max}) for momentum trials", source=spec.label, key=at)


def config_problem(spec: SweepSpec, applied: Mapping[str, Any]) -> Problem | None:
    """What stops base + applied from being a trial config that can run, else None."""
    values = {**spec.base, "epochs": spec.max_epochs, "seed": spec.seeds[0], **applied}
    try:
        cfg = TrainConfig.from_dict(values)
    except ConfigError as exc:
        return exc.key or "?", exc.detail  # "key=value: reason", without the source
    return _batch_problem(spec, cfg, applied)


def _batch_problem(spec: SweepSpec, cfg: TrainConfig, applied: Mapping[str, Any]) -> Problem | None:
    """What needs the trial's resources, not only the config: the global batch must split
    evenly over the workers (or, on one worker, over SplitBatchNorm's groups)."""
    divisor, bn_note = spec.workers, ""
    if spec.workers == 1 and cfg.mechanism == "momentum" and cfg.shuffle_bn:
        splits = cfg.bn_splits or 8
        if splits > 1:
            divisor = splits
            bn_note = (f" by bn_splits={splits}" + (" (0 means 8 on one worker)" if not cfg.bn_splits else "")
                       + ": SplitBatchNorm needs equal groups")
    if cfg.batch_size % divisor:
        reason = bn_note or f" by resources.workers={spec.workers} (it is the global batch)"
        return "batch_size", f"batch_size={cfg.batch_size}: must be divisible{reason}"
    batch = spec.param("batch_size")
    if batch is not None and "batch_size" in applied and batch.kind in ("int", "log_int"):
        step = batch.step or 1
        if step % divisor:
            reason = bn_note or f" by resources.workers={spec.workers}"
            return "batch_size", (f"batch_size: every value in [{batch.args[0]}, {batch.args[1]}] "
                                  f"step {step} must be divisible{reason}; use a step that is a "
                                  f"multiple of {divisor} (or a choice list)")
    return None


def blame(spec: SweepSpec, corner: dict[str, Any], problem: Problem) -> SpaceError:
    """The error naming the searched parameter(s) that make `corner` fail, as precisely as
    possible: the failing key itself if it is searched, else the searched keys one of whose
    other values would have avoided the problem, else the fixed key."""
    key, msg = problem
    keep = _keys_taking_part(spec, corner, key)
    combo = ", ".join(f"{k}={corner[k]!r}" for k in keep)

    def error(at: str, reason: str) -> SpaceError:
        return SpaceError(reason, source=spec.label, key=at)

    if key in corner:  # the failing key is itself searched and applied here
        p = spec.param(key)
        return error(f"space.{key}.{p.kind}", msg + (f" (with {combo})" if combo else ""))
    if keep:
        p = spec.param(keep[0])
        origin = "from base" if key in spec.base else "the TrainConfig default"
        return error(f"space.{p.name}.{p.kind}", f"with {combo}: {msg} ({key} is {origin})")
    if key == "epochs":
        return error("budget.max_epochs", msg)
    if key in spec.base:
        return error(f"base.{key}", msg)
    return error("base", f"{msg} ({key} is the TrainConfig default: set it in base)")


def _keys_taking_part(spec: SweepSpec, corner: dict[str, Any], key: str) -> list[str]:
    """The other searched keys of `corner` with a value that would have avoided `key`'s problem."""
    keep = []
    for k in corner:
        if k == key:
            continue
        for alt in spec.param(k).corner_values():
            if alt != corner[k]:
                again = config_problem(spec, {**corner, k: alt})
                if again is None or again[0] != key:
                    keep.append(k)
                    break
    return keep
