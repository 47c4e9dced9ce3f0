"""`leoclr sweep`: Ray Tune (Optuna TPE + ASHA, or a grid) over trials of the engine's loop.

    from leoclr_platform.sweep import SweepRequest, run_sweep
    outcome = run_sweep(SweepRequest("demo", name="demo-1"))

Modules: run (SweepRequest, run_sweep: the steps), trial (what runs inside Ray: the Tune
trainable `train_driver_fn`, the Ray Train `train_fn_per_worker`), tuner (the Tuner: searcher,
scheduler, reporter), optuna_search (SafeOptunaSearch), study (the Optuna study's storage),
runtime (connect to or start Ray, resources), compat (the one adapter for private Ray/Optuna
attributes), results (the outcome table), meta (sweep.json), paths (the sweep's folders),
console (printing), sync (MLflow in line with the results on disk; `leoclr sync`), confirm (the
confirmation stage), importance (parameter importance from the study), baseline (the
recalibrated-random baseline row), analysis (importance + baseline after the search).
Importing this package does not import Ray.
"""

from leoclr_platform.errors import SweepError
from leoclr_platform.sweep.console import print_outcome
from leoclr_platform.sweep.paths import default_storage
from leoclr_platform.sweep.results import SweepOutcome
from leoclr_platform.sweep.run import SweepRequest, run_sweep
from leoclr_platform.sweep.runtime import connect_ray, start_local_ray
from leoclr_platform.sweep.sync import sync_sweep

__all__ = ["SweepError", "SweepRequest", "SweepOutcome", "run_sweep", "sync_sweep", "print_outcome",
           "connect_ray", "start_local_ray", "default_storage"]
