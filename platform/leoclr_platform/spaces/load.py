"""Reading a search space: a shipped name or a YAML path -> a `SweepSpec`, then validated.

`parse_space` checks the shape only (mappings, known keys, one distribution per key);
`load_space` adds the full validation (`validate.validate_space`), so a loaded spec is one a
sweep can run. The shipped files live in the `search_spaces` package (works from a wheel).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any, Mapping

from trainables.config import ConfigError, read_yaml
from trainables.validation import did_you_mean

from leoclr_platform.errors import SpaceError
from leoclr_platform.spaces.schema import (
    BUDGET_KEYS,
    KINDS,
    METRICS,
    OBJECTIVE_KEYS,
    PARAM_KEYS,
    RESOURCE_KEYS,
    TOP_LEVEL_KEYS,
    ParamSpec,
    SweepSpec,
    config_defaults,
    preset_fill,
    type_name,
)
from leoclr_platform.spaces.validate import validate_space


def named_spaces() -> list[str]:
    """Names of the YAML files shipped in the `search_spaces` package."""
    root = importlib.resources.files("search_spaces")
    return sorted(entry.name[: -len(".yaml")] for entry in root.iterdir()
                  if entry.name.endswith(".yaml") and entry.is_file())


def load_space(name_or_path: str | Path, *, check_data: bool = True) -> SweepSpec:
    """Load and fully validate a search space: a shipped name ("demo") or a path to a file.

    A bare name without a folder resolves to the shipped file of that name; a name ending in
    .yaml/.yml that is not an existing file but names a shipped space also resolves to it.
    """
    raw = str(name_or_path)
    path = Path(raw).expanduser()
    looks_like_path = isinstance(name_or_path, Path) or any(s in raw for s in ("/", "\\")) \
        or raw.endswith((".yaml", ".yml"))
    if looks_like_path and path.is_file():
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpaceError(f"cannot read the file: {exc.strerror}", source=raw) from None
        spec = parse_space(text, source=raw, path=path.resolve())
    else:
        spec = _load_shipped(raw, path, looks_like_path)
    validate_space(spec, check_data=check_data)
    return spec


def _load_shipped(raw: str, path: Path, looks_like_path: bool) -> SweepSpec:
    shipped = named_spaces()
    name = path.stem if (looks_like_path and path.parent == Path(".")) else raw
    if looks_like_path and (path.parent != Path(".") or name not in shipped):
        raise SpaceError(f"file not found (shipped spaces: {', '.join(shipped)})", source=raw)
    if name not in shipped:
        raise SpaceError(f"no such search space{did_you_mean(name, shipped)}; shipped spaces: "
                         f"{', '.join(shipped)}; or give the path to a YAML file", source=raw)
    resource = importlib.resources.files("search_spaces").joinpath(f"{name}.yaml")
    real = Path(str(resource)) if isinstance(resource, Path) else None
    return parse_space(resource.read_text(), source=f"{name}.yaml", path=real)


def parse_space(text: str, *, source: str = "space.yaml", path: Path | None = None) -> SweepSpec:
    """YAML text -> SweepSpec (shape only: mappings, known keys, one distribution per key).

    Values are checked by `validate_space`, which `load_space` calls.
    """
    try:
        data = read_yaml(text, source)
    except ConfigError as exc:
        raise SpaceError.from_input_error(exc) from None
    if data is None:
        raise SpaceError("the file is empty; it needs at least `space`", source=source, key="(top level)")
    if not isinstance(data, dict):
        raise SpaceError(f"must be a mapping of keys ({', '.join(TOP_LEVEL_KEYS)}), got {type_name(data)}",
                         source=source, key="(top level)")
    refuse_unknown(source, "", data, TOP_LEVEL_KEYS)
    base = _base(source, _section(source, data, "base", None))
    space = _section(source, data, "space", None)
    objective = _section(source, data, "objective", OBJECTIVE_KEYS)
    budget = _section(source, data, "budget", BUDGET_KEYS)
    resources = _section(source, data, "resources", RESOURCE_KEYS)
    metric = objective.get("metric", "val_knn_top1")
    max_epochs = budget.get("max_epochs")
    return SweepSpec(
        name=data.get("name", path.stem if path is not None else Path(source).stem),
        path=path, text=text, mode=data.get("mode", "search"),
        description="" if data.get("description") is None else data["description"],
        base=base, params=[parse_param(source, key, value) for key, value in space.items()],
        metric=metric,
        metric_mode=objective.get("mode", METRICS.get(metric, "max") if isinstance(metric, str) else "max"),
        trials=budget.get("trials"),
        max_epochs=max_epochs if max_epochs is not None else base.get(
            "epochs", preset_fill(base).get("epochs", config_defaults()["epochs"])),
        grace_period=budget.get("grace_period", 1), reduction_factor=budget.get("reduction_factor", 2),
        startup_trials=budget.get("startup_trials", 10), max_concurrent=budget.get("max_concurrent"),
        confirm=budget.get("confirm"),
        workers=resources.get("workers", 1), cpus_per_worker=resources.get("cpus_per_worker", 1),
        gpus_per_worker=resources.get("gpus_per_worker", 0), launcher=resources.get("launcher", "auto"),
        seeds=data.get("seeds", [0]), source=source,
    )


def _section(source: str, data: Mapping, key: str, allowed: tuple[str, ...] | None) -> dict:
    """A top-level mapping (empty if absent); `allowed` its keys, or None for any."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpaceError(f"must be a mapping, got {type_name(value)}", source=source, key=key)
    if allowed is not None:
        refuse_unknown(source, key + ".", value, allowed)
    return value


def _base(source: str, base: Mapping) -> dict[str, Any]:
    """`base` with string keys, its relative data_root made absolute (trials chdir into their
    own folders, so it is resolved here, once)."""
    base = dict(base)
    for key in base:
        if not isinstance(key, str):
            raise SpaceError(f"keys must be strings, got {key!r}", source=source, key="base")
    root = base.get("data_root")
    if isinstance(root, str) and root and not Path(root).expanduser().is_absolute():
        base["data_root"] = str(Path(root).expanduser().resolve())
    return base


def parse_param(source: str, key: Any, value: Any) -> ParamSpec:
    """One `space:` entry -> ParamSpec (its shape: one distribution, optional step and when)."""
    where = f"space.{key}"
    if not isinstance(key, str):
        raise SpaceError(f"keys must be TrainConfig key names, got {key!r}", source=source, key="space")
    if not isinstance(value, dict):
        hint = (f"; did you mean {{choice: {value!r}}}?" if isinstance(value, list)
                else "; a fixed value belongs in base")
        raise SpaceError(f"expected a mapping with one distribution, e.g. {{loguniform: [low, high]}} or "
                         f"{{choice: [a, b]}}, got {type_name(value)}{hint}", source=source, key=where)
    for k in value:
        if k not in PARAM_KEYS:
            raise SpaceError(f"unknown distribution{did_you_mean(str(k), PARAM_KEYS)}; use one of "
                             f"{', '.join(KINDS)} (plus optional step, when)", source=source, key=f"{where}.{k}")
    kinds = [k for k in value if k in KINDS]
    if len(kinds) != 1:
        got = f", got {' and '.join(kinds)}" if kinds else ""
        raise SpaceError(f"needs exactly one distribution ({', '.join(KINDS)}){got}", source=source, key=where)
    when = value.get("when") or {}
    if not isinstance(when, dict):
        raise SpaceError(f"must be a mapping {{key: [values]}}, got {type_name(when)}", source=source,
                         key=f"{where}.when")
    when = {k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in when.items()}
    return ParamSpec(name=key, kind=kinds[0], args=value[kinds[0]], step=value.get("step"), when=when)


def refuse_unknown(source: str, prefix: str, mapping: Mapping, allowed: tuple[str, ...]) -> None:
    """SpaceError for the first key of `mapping` not in `allowed`, with the did-you-mean hint."""
    for key in mapping:
        if key not in allowed:
            raise SpaceError(f"unknown key{did_you_mean(str(key), allowed)}; valid keys: {', '.join(allowed)}",
                             source=source, key=f"{prefix}{key}")
