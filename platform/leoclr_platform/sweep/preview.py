"""What `leoclr sweep --dry-run` and `--smoke-test` show and run: a space's text preview, and the
same space shrunk to tiny settings. Imports neither Ray nor torch."""

from __future__ import annotations

import dataclasses
import json

from leoclr_platform import spaces

SWEEP_SMOKE_BASE = {
    "backbone": "small_cnn",
    "image_size": 16,
    "photo_patches": {"train_per_class": 8, "test_per_class": 4},
    "batch_size": 32,
    "queue_size": 64,
    "bn_splits": 2,
    "knn_k": 10,
    "max_steps_per_epoch": 2,
}


def dry_run_text(spec: spaces.SweepSpec) -> str:
    """The resolved space, a note if a real run here would refuse it (the data check), the
    confirmation stage, and the first configurations."""
    lines = [spaces.describe(spec)]
    try:
        spaces.validate_space(spec)  # with the data check a real run makes
    except spaces.SpaceError as exc:
        lines.append(f"note: a run here would refuse it: {exc}")
    if spec.confirm:
        from leoclr_platform.sweep.confirm import confirm_seeds

        lines.append(f"confirmation: the best {spec.confirm.get('top', 1)} configuration(s) of each "
                     f"strategy re-run for {spec.max_epochs} epochs (no ASHA) on seeds {confirm_seeds(spec)}")
    lines.append("\nfirst configurations:")
    lines += ["  " + json.dumps(cfg) for cfg in spaces.sample_configs(spec, min(5, spec.total_trials()))]
    return "\n".join(lines)


def smoke_space(spec: spaces.SweepSpec) -> spaces.SweepSpec:
    """The same space on tiny settings: keys it searches are kept, fixed ones are shrunk; one
    seed, one epoch, no confirmation stage (add one with --confirm N)."""
    base = {**spec.base, **{k: v for k, v in SWEEP_SMOKE_BASE.items() if spec.param(k) is None}}
    base.pop("epochs", None)
    spec = dataclasses.replace(spec, base=base, trials=2 if spec.mode == "search" else spec.trials,
                               max_epochs=1, grace_period=1, seeds=spec.seeds[:1], confirm=None)
    spaces.validate_space(spec)
    return spec
