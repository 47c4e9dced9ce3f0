"""`leoclr` command line: train, sweep, promote, evaluate, report, sync, ui."""

from __future__ import annotations

import argparse
import dataclasses
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
    from trainables.config import ConfigError, TrainConfig, load_yaml_mapping, parse_overrides

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
    try:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")
    except OSError as exc:
        raise ConfigError(f"--out {args.out or out}: cannot write there: {exc.strerror or exc}") from None
    print("resolved config:")
    print(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    print(f"output: {out}\n")

    from trainables.eval import baseline_metrics
    from trainables.loop import Trainer

    header = f"{'epoch':>5} {'loss':>8} {'val_knn':>8} {'rankme':>7} {'lr':>9} {'img/s':>8} {'time_s':>7}"
    print(header)

    def report(metrics: dict, checkpoint: str | None) -> None:
        knn, rank = metrics.get("val_knn_top1"), metrics.get("rankme")
        knn_s = f"{knn:8.2f}" if knn is not None else f"{'-':>8}"
        rank_s = f"{rank:7.1f}" if rank is not None else f"{'-':>7}"
        print(f"{metrics['epoch']:>5} {metrics['loss']:8.4f} {knn_s} {rank_s} {metrics['lr']:9.5f} "
              f"{metrics['images_per_s']:8.1f} {metrics['epoch_time_s']:7.1f}", flush=True)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")

    trainer = Trainer(cfg)
    if args.resume:
        trainer.resume(args.resume)
    final = trainer.fit(report, checkpoint_dir=str(out / "checkpoints"))
    trained = final.get("val_knn_top1")
    print()
    if trained is not None:  # the recalibrated random baseline, under the monitor's protocol
        base = baseline_metrics(cfg, trainer.data, trainer.device)["val_knn_top1"]
        print(f"val kNN top-1 ({cfg.backbone}, {cfg.attraction_strategy}, {cfg.dataset}): recalibrated "
              f"random baseline {base:.2f} % -> trained {trained:.2f} % ({trained - base:+.2f} points)")
    if "test_knn_top1" in final:
        print(f"test kNN top-1 (reported only, never selected on): {final['test_knn_top1']:.2f} %")
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
    p.add_argument("--confirm", metavar="[K:]N", help="override budget.confirm: after the search, re-run the best K "
                                                    "(default 1) configurations of each strategy on N fresh seeds "
                                                    "at the full budget; 0: no confirmation stage")
    _tracking_args(p)
    p.add_argument("--experiment", help="MLflow experiment (default: leoclr/<space name>)")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--tracking-timeout", type=float, default=300.0, metavar="S",
                   help="at the end, wait up to S seconds for an unreachable store (then: leoclr sync NAME)")
    p.add_argument("--dry-run", action="store_true", help="validate, print the resolved space and first configs")
    p.add_argument("--smoke-test", action="store_true",
                   help="shrink the space to seconds-long trials (tiny CNN and data, 2 trials, 1 epoch, no confirmation stage)")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from leoclr_platform import spaces
    from leoclr_platform.sweep import SweepRequest, print_outcome, run_sweep

    request = SweepRequest(name=args.name, storage=args.storage, study_storage=args.study_storage,
                           address=args.address, num_cpus=args.num_cpus, tracking_uri=args.tracking_uri,
                           experiment=args.experiment, track=not args.no_tracking,
                           tracking_timeout=args.tracking_timeout)
    if args.resume:
        if args.space:
            print("leoclr: note: SPACE is ignored with --resume (the sweep's own copy is used)")
        request = dataclasses.replace(request, name=args.resume, resume=True)
    else:
        if not args.space:
            raise spaces.SpaceError("give a search space (a shipped name or a YAML path): "
                                    + ", ".join(spaces.named_spaces()), source="leoclr sweep")
        spec = spaces.load_space(args.space)  # everything is validated here, before Ray starts
        if args.smoke_test:
            spec = smoke_space(spec)
        if args.confirm is not None:
            from leoclr_platform.sweep.confirm import parse_confirm_flag, with_confirm_flag

            spec = dataclasses.replace(spec, confirm=with_confirm_flag(spec, parse_confirm_flag(args.confirm)))
            spaces.validate_space(spec)
        if args.dry_run:
            print_dry_run(spec)
            return 0
        request = dataclasses.replace(request, space=spec, trials=args.trials, max_epochs=args.max_epochs)
    outcome = run_sweep(request)
    print_outcome(outcome)
    return 0 if outcome.best is not None else 1


def print_dry_run(spec) -> None:
    """`leoclr sweep --dry-run`: the resolved space and the first configurations it would run."""
    from leoclr_platform import spaces

    print(spaces.describe(spec))
    if spec.confirm:
        from leoclr_platform.sweep.confirm import confirm_seeds

        print(f"confirmation: the best {spec.confirm.get('top', 1)} finished configuration(s) of each strategy "
              f"re-run for {spec.max_epochs} epochs (no ASHA) on seeds {confirm_seeds(spec)}")
    print("\nfirst configurations:")
    for cfg in spaces.sample_configs(spec, min(5, spec.total_trials())):
        print("  " + json.dumps(cfg))


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
    from leoclr_platform import spaces

    base = {**spec.base, **{k: v for k, v in SWEEP_SMOKE_BASE.items() if spec.param(k) is None}}
    base.pop("epochs", None)
    # no confirmation stage (add one with --confirm N)
    spec = dataclasses.replace(spec, base=base, trials=2 if spec.mode == "search" else spec.trials,
                               max_epochs=1, grace_period=1, seeds=spec.seeds[:1], confirm=None)
    spaces.validate_space(spec)
    return spec


def _tracking_args(p) -> None:
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                          "sqlite:///<project>/mlflow.db; an MLflow server: http://host:port)")


def _ui_parser(sub) -> None:
    p = sub.add_parser("ui", help="serve the MLflow UI for the tracking store on 127.0.0.1 and print its URL")
    _tracking_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)


def cmd_ui(args) -> int:
    import shutil
    import subprocess

    from leoclr_platform import tracking

    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    if not tracking.is_local_store(uri):
        print(f"the tracking store is already served: open {tracking.redact_uri(uri)} in a browser")
        return 0
    tracking.check_store(uri)  # creates the schema if this is a fresh store
    artifacts = tracking.sqlite_path(uri).parent / "mlartifacts"
    mlflow_bin = shutil.which("mlflow", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    command = [mlflow_bin or "mlflow", "server", "--backend-store-uri", uri, "--artifacts-destination", str(artifacts),
               "--host", args.host, "--port", str(args.port), "--workers", "1"]
    if args.host not in ("127.0.0.1", "localhost"):
        print(f"leoclr: note: binding {args.host}: anyone who can reach this port can read and change the store; "
              "MLflow also checks the Host header (add --allowed-hosts through `mlflow server` if needed)")
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"MLflow UI for {uri}\n  open http://{shown}:{args.port} in a browser (Ctrl-C stops it)", flush=True)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0


def _promote_parser(sub) -> None:
    p = sub.add_parser("promote", help="register a sweep's best encoder in the MLflow Model Registry and set an alias")
    p.add_argument("--sweep", help="pick the best finished trial of this sweep by its objective")
    p.add_argument("--run-id", help="promote this trial run instead")
    p.add_argument("--metric", help="rank by this metric (default: the sweep's objective)")
    p.add_argument("--mode", choices=("max", "min"), help="default: the sweep's objective mode")
    p.add_argument("--alias", default="candidate", help="alias to point at the version (default: candidate)")
    p.add_argument("--model-name", default="leoclr-encoder", help="registered model name (default: leoclr-encoder)")
    _tracking_args(p)
    p.set_defaults(func=cmd_promote)


def cmd_promote(args) -> int:
    from leoclr_platform.registry import promote
    from leoclr_platform.tracking import resolve_tracking_uri

    promote(resolve_tracking_uri(args.tracking_uri), sweep=args.sweep, run_id=args.run_id, metric=args.metric,
            mode=args.mode, alias=args.alias, model_name=args.model_name)
    return 0


def _evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="linear evaluation, kNN and random-crop test of a registered encoder",
                       description="MODEL is models:/<name>@<alias> or models:/<name>/<version>.")
    p.add_argument("model", help="e.g. models:/leoclr-encoder@candidate")
    p.add_argument("--dataset", help="labelled data set (default: the one the encoder was trained on)")
    p.add_argument("--data-root", help="its folder (ImageFolder / CIFAR / STL-10 / Parquet)")
    p.add_argument("--linear-epochs", type=int, help="linear classifier epochs (default 100, MoCo's protocol)")
    p.add_argument("--augment", choices=("crop_flip", "none"),
                   help="classifier train views: crop_flip (MoCo's protocol) or none (cached center-view features; fast)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any linear-protocol field, e.g. --set lr=10 (see docs/tracking.md)")
    p.add_argument("--device", help="cpu, cuda (default: cuda if available)")
    p.add_argument("--address", help="run the evaluation as a task on this Ray cluster (a GPU if it has one)")
    p.add_argument("--smoke-test", action="store_true", help="2 classifier epochs on cached features")
    _tracking_args(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from trainables.config import parse_overrides

    from leoclr_platform.evaluation import evaluate_model
    from leoclr_platform.tracking import resolve_tracking_uri

    overrides = parse_overrides(args.overrides)
    if args.smoke_test:
        overrides = {"epochs": 2, "augment": "none", **overrides}
    if args.linear_epochs is not None:
        overrides["epochs"] = args.linear_epochs
    if args.augment:
        overrides["augment"] = args.augment
    evaluate_model(resolve_tracking_uri(args.tracking_uri), args.model, dataset=args.dataset,
                   data_root=args.data_root, protocol_overrides=overrides, device=args.device, address=args.address)
    return 0


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help="ablation table and plots of a sweep, from MLflow")
    p.add_argument("name", help="sweep name")
    p.add_argument("--out", help="output folder (default: <storage>/<sweep>/report)")
    _tracking_args(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from leoclr_platform.report.command import report_sweep
    from leoclr_platform.tracking import resolve_tracking_uri

    report_sweep(resolve_tracking_uri(args.tracking_uri), args.name, args.out)
    return 0


def _sync_parser(sub) -> None:
    p = sub.add_parser("sync", help="replay a sweep's results on disk into MLflow (after the store was away)")
    p.add_argument("name", help="sweep name")
    p.add_argument("--storage", help="results root the sweep used (default: ./runs or $LEOCLR_STORAGE)")
    _tracking_args(p)
    p.set_defaults(func=cmd_sync)


def cmd_sync(args) -> int:
    from leoclr_platform.sweep import sync_sweep

    sync_sweep(args.name, storage=args.storage, tracking_uri=args.tracking_uri)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leoclr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _sweep_parser(sub)
    _promote_parser(sub)
    _evaluate_parser(sub)
    _report_parser(sub)
    _sync_parser(sub)
    _ui_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    args = build_parser().parse_args(argv)
    from trainables.eval import EvaluationError
    from trainables.loop import DivergenceError
    from trainables.validation import InputError

    try:
        return args.func(args)
    except (InputError, EvaluationError) as exc:  # every engine and platform refusal (errors.py)
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
