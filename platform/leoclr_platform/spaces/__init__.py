"""Search spaces as data: one YAML file per sweep, validated before any compute.

A search-space file says what every trial fixes (`base`), what is searched (`space`, one
distribution per `TrainConfig` key, in file order, optionally conditional with `when`), what is
optimised (`objective`), how much is spent (`budget`), what one trial holds (`resources`) and
which seeds run (`seeds`). The schema is documented in `search_spaces/README.md`; the files
shipped with the platform load by name (`load_space("demo")`), any other file by path.

Two modes:
- `search`: Optuna TPE (seeded with `seeds[0]`) proposes `budget.trials` configurations through
  the define-by-run function `define_by_run(spec)` (for `ray.tune.search.optuna.OptunaSearch`);
  ASHA stops weak trials early on the objective.
- `grid`: every cell of the categorical `space` (honouring `when`) runs once per seed
  (`grid_configs(spec)`), to build tables such as the paper's Table 8 with mean +- std.

Every error is a `SpaceError` ("<file>: <key.path>: <reason>", with those as fields), raised
by `load_space` before Ray, Optuna or torch do anything. The package imports neither ray nor
torch (torch only lazily, to check `photo_patches` options); optuna only where a study is built.

Modules: schema (ParamSpec, SweepSpec, constants), load (files -> spec), validate + corners
(the checks), trials (trial configs, grid cells, ASHA rungs), define_by_run (Optuna), describe.
"""

from leoclr_platform.errors import SpaceError
from leoclr_platform.spaces.define_by_run import (
    DefineByRun,
    decode_sampled,
    define_by_run,
    make_sampler,
    sample_configs,
)
from leoclr_platform.spaces.describe import describe
from leoclr_platform.spaces.load import load_space, named_spaces, parse_space
from leoclr_platform.spaces.schema import ONE_MINUS_SUFFIX, ParamSpec, SweepSpec
from leoclr_platform.spaces.trials import asha_rungs, grid_configs, trial_config
from leoclr_platform.spaces.validate import validate_space

__all__ = [
    "SpaceError",
    "ParamSpec",
    "SweepSpec",
    "DefineByRun",
    "named_spaces",
    "load_space",
    "parse_space",
    "validate_space",
    "trial_config",
    "asha_rungs",
    "define_by_run",
    "decode_sampled",
    "grid_configs",
    "sample_configs",
    "make_sampler",
    "describe",
    "ONE_MINUS_SUFFIX",
]
