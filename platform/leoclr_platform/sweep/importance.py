"""Which searched parameters mattered: `optuna.importance` over the sweep's own study.

After the search, the study's COMPLETE trials (their objective values as OptunaSearch told them:
a trial ASHA stopped is told its value at the epoch it stopped) are handed to two evaluators
(Optuna 5.0): fANOVA (`FanovaImportanceEvaluator`, a random forest's functional ANOVA, seeded
with the sweep's sampler seed; parameters asked in every trial only) and PED-ANOVA
(`PedAnovaImportanceEvaluator`, how the top trials' parameter distribution differs from all
trials'; conditional parameters included). Importances are normalised to sum to 1 per method.
A `one_minus_log` parameter is searched as `<key>__one_minus` and reported under `<key>`.

The result (`importance.json`, contract in /docs/tracking.md) says how many trials it rests on;
fewer than MIN_TRIALS, or an evaluator's error, is recorded under "errors" with the reason and
never stops the sweep.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from leoclr_platform.spaces.schema import ONE_MINUS_SUFFIX

IMPORTANCE_FILE = "importance.json"
IMPORTANCE_PLOT = "importance.png"
#: Fewest completed trials an importance is computed from.
MIN_TRIALS = 2
METHODS = ("fanova", "ped_anova")


def _evaluator(method: str, n: int, seed: int):
    import optuna

    if method == "fanova":
        return optuna.importance.FanovaImportanceEvaluator(seed=seed)
    # the "top" set is the best target_quantile of the trials: at least ~2 trials at small n
    return optuna.importance.PedAnovaImportanceEvaluator(target_quantile=min(0.5, max(0.1, 2.0 / n)))


def study_importance(study, metric: str, seed: int = 0) -> dict[str, Any]:
    """{"n_trials", "metric", "methods": {method: {param: importance}}, "errors": {method: reason}}."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    out: dict[str, Any] = {"n_trials": len(trials), "metric": metric, "methods": {}, "errors": {}}
    if len(trials) < MIN_TRIALS:
        for method in METHODS:
            out["errors"][method] = f"needs at least {MIN_TRIALS} completed trials, the study has {len(trials)}"
        return out
    for method in METHODS:
        try:
            raw = _importances(study, _evaluator(method, len(trials), seed))
        except Exception as exc:  # noqa: BLE001 - any evaluator failure is recorded, never raised
            out["errors"][method] = f"{type(exc).__name__}: {exc}"
            continue
        out["methods"][method] = {_key(name): float(v) for name, v in raw.items()}
    return out


def _importances(study, evaluator) -> dict[str, float]:
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning, few-trials warnings: the count is reported
        return optuna.importance.get_param_importances(study, evaluator=evaluator)


def _key(optuna_name: str) -> str:
    return optuna_name[: -len(ONE_MINUS_SUFFIX)] if optuna_name.endswith(ONE_MINUS_SUFFIX) else optuna_name


def sweep_importance(rdb, study_name: str, metric: str, seed: int = 0) -> dict[str, Any]:
    """The importance of the sweep's study in `rdb` (a missing study is an error entry)."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=rdb)
    except Exception as exc:  # noqa: BLE001 - recorded, never raised
        reason = f"cannot load the study: {type(exc).__name__}: {exc}"
        return {"n_trials": 0, "metric": metric, "methods": {}, "errors": {m: reason for m in METHODS}}
    return study_importance(study, metric, seed)


def importance_metrics(result: dict[str, Any]) -> dict[str, float]:
    """`importance_<method>_<param>` for the parent run."""
    return {f"importance_{method}_{param}": value
            for method, values in result.get("methods", {}).items() for param, value in values.items()}


def write_importance(result: dict[str, Any], folder: str | Path) -> list[Path]:
    """importance.json and (when any method worked) importance.png in `folder`; the written paths."""
    folder = Path(folder)
    path = folder / IMPORTANCE_FILE
    path.write_text(json.dumps(result, indent=2))
    written = [path]
    if result.get("methods"):
        try:
            written.append(plot_importance(result, folder / IMPORTANCE_PLOT))
        except Exception as exc:  # noqa: BLE001 - the numbers are kept without the picture
            result["errors"]["plot"] = f"{type(exc).__name__}: {exc}"
            path.write_text(json.dumps(result, indent=2))
    return written


def plot_importance(result: dict[str, Any], path: Path) -> Path:
    """A horizontal bar chart per method, the number of trials in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(result["methods"])
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.2), squeeze=False)
    for ax, method in zip(axes[0], methods):
        values = result["methods"][method]
        names = sorted(values, key=values.get)
        ax.barh(names, [values[n] for n in names], color="#4c72b0")
        ax.set_title({"fanova": "fANOVA", "ped_anova": "PED-ANOVA"}.get(method, method))
        ax.set_xlabel("importance (sums to 1)")
    fig.suptitle(f"Parameter importance for {result['metric']} ({result['n_trials']} completed trials)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
