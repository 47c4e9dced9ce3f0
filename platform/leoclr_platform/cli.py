"""`leoclr` command line: train (one process, no Ray); later sweep / promote / evaluate / report."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

SMOKE_OVERRIDES = {
    "backbone": "small_cnn",
    "epochs": 1,
    "batch_size": 32,
    "queue_size": 256,
    "max_steps_per_epoch": 3,
    "photo_patches": {"train_per_class": 16, "test_per_class": 8},
    "knn_k": 20,
}


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train one model in this process (world size 1, no Ray)")
    p.add_argument("--config", help="YAML file of TrainConfig keys (see docs/config.md)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable), e.g. --set temperature=0.1")
    p.add_argument("--out", help="output folder for checkpoints and the resolved config "
                                 "(default: runs/train-<time>)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="resume from a checkpoint folder or file")
    p.add_argument("--smoke-test", action="store_true", help="a seconds-long run on tiny settings")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from trainables.config import TrainConfig, load_yaml_mapping, parse_overrides

    values: dict = dict(SMOKE_OVERRIDES) if args.smoke_test else {}
    source = "defaults"
    if args.config:
        values.update(load_yaml_mapping(args.config))
        source = args.config
    values.update(parse_overrides(args.overrides))
    if args.overrides:  # errors name where the value came from
        source = f"{args.config} + --set" if args.config else "--set"
    values.setdefault("knn_at_start", True)
    cfg = TrainConfig.from_dict(values, source=source)  # fails here, before any compute

    out = Path(args.out or f"runs/train-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.json")
    print("resolved config:")
    print(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    print(f"output: {out}\n")

    from trainables.loop import train_fn_per_worker

    header = f"{'epoch':>5} {'loss':>8} {'knn_top1':>9} {'lr':>9} {'img/s':>8} {'time_s':>7}"
    print(header)

    def report(metrics: dict, checkpoint: str | None) -> None:
        knn = metrics.get("knn_top1")
        knn_s = f"{knn:9.2f}" if knn is not None else f"{'-':>9}"
        print(f"{metrics['epoch']:>5} {metrics['loss']:8.4f} {knn_s} {metrics['lr']:9.5f} "
              f"{metrics['images_per_s']:8.1f} {metrics['epoch_time_s']:7.1f}", flush=True)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")

    final = train_fn_per_worker(cfg, report, resume_from=args.resume,
                                checkpoint_dir=str(out / "checkpoints"))
    trained = final.get("knn_top1")
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    init = next((m["knn_top1_init"] for m in history if "knn_top1_init" in m), None)
    print()
    if init is not None and trained is not None:
        print(f"kNN top-1 ({cfg.backbone}, {cfg.attraction_strategy}, {cfg.dataset} test split): "
              f"random init {init:.2f} % -> trained {trained:.2f} % ({trained - init:+.2f} points)")
    print(f"checkpoints: {out / 'checkpoints'}")
    return 0


def _sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a hyperparameter search or ablation grid with Ray Tune",
                       description="Run a sweep: SPACE is a shipped name (demo, table8, ...) or a YAML path.")
    p.add_argument("space", nargs="?", help="search space: shipped name or path (not needed with --resume)")
    p.add_argument("--name", help="sweep name (default: <space>-<time>); names the results folder and study")
    p.add_argument("--resume", metavar="NAME", help="continue sweep NAME: unfinished trials and the same study")
    p.add_argument("--storage", help="results/checkpoint root (default: ./runs, or $LEOCLR_STORAGE); "
                                     "any pyarrow URI such as s3://bucket/path")
    p.add_argument("--study-storage", help="RDB URL of the Optuna study (default: SQLite next to the results)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else an in-process runtime)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the in-process Ray runtime (default: all)")
    p.add_argument("--trials", type=int, help="override budget.trials")
    p.add_argument("--max-epochs", type=int, help="override budget.max_epochs")
    p.add_argument("--dry-run", action="store_true", help="validate, print the resolved space and first configs")
    p.add_argument("--smoke-test", action="store_true",
                   help="shrink the space to seconds-long trials (tiny CNN and data, 2 trials, 1 epoch)")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from leoclr_platform import spaces
    from leoclr_platform.sweep import print_outcome, run_sweep

    if args.resume:
        if args.space:
            print("leoclr: note: SPACE is ignored with --resume (the sweep's own copy is used)")
        outcome = run_sweep(None, name=args.resume, storage=args.storage, study_storage=args.study_storage,
                            address=args.address, resume=True, num_cpus=args.num_cpus)
    else:
        if not args.space:
            raise spaces.SpaceError("leoclr sweep: give a search space (a shipped name or a YAML path): "
                                    + ", ".join(spaces.named_spaces()))
        spec = spaces.load_space(args.space)  # everything is validated here, before Ray starts
        if args.smoke_test:
            spec = smoke_space(spec)
        if args.dry_run:
            print(spaces.describe(spec))
            print("\nfirst configurations:")
            for cfg in spaces.sample_configs(spec, min(5, spec.total_trials())):
                print("  " + json.dumps(cfg))
            return 0
        outcome = run_sweep(spec, name=args.name, storage=args.storage, study_storage=args.study_storage,
                            address=args.address, num_cpus=args.num_cpus, trials=args.trials,
                            max_epochs=args.max_epochs)
    print_outcome(outcome, outcome_metric(outcome))
    if outcome.best is None:
        return 1
    return 0


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


def smoke_space(spec):
    """The same space on tiny settings: keys it searches are kept, fixed ones are shrunk."""
    import dataclasses

    from leoclr_platform import spaces

    base = {**spec.base, **{k: v for k, v in SWEEP_SMOKE_BASE.items() if spec.param(k) is None}}
    base.pop("epochs", None)
    spec = dataclasses.replace(spec, base=base, trials=2 if spec.mode == "search" else spec.trials,
                               max_epochs=1, grace_period=1, seeds=spec.seeds[:1])
    spaces.validate_space(spec)
    return spec


def outcome_metric(outcome) -> str:
    from leoclr_platform.spaces import parse_space

    meta = json.loads((Path(outcome.root) / "sweep.json").read_text())
    return parse_space(meta["space_text"], source=meta["space_source"]).metric


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leoclr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _sweep_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    args = build_parser().parse_args(argv)
    from trainables.config import ConfigError
    from trainables.data import DatasetError
    from trainables.loop import CheckpointError, DivergenceError
    from leoclr_platform.spaces import SpaceError
    from leoclr_platform.sweep import SweepError

    try:
        return args.func(args)
    except (ConfigError, DatasetError, CheckpointError, SpaceError, SweepError) as exc:
        print(f"leoclr: error: {exc}", file=sys.stderr)
        return 2
    except DivergenceError as exc:
        print(f"leoclr: training failed: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("leoclr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
