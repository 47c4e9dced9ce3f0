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
    p = sub.add_parser("train", help="train one model in this process (world size 1, no Ray)",
                       description="Train one model in this process: the resolved config is printed first, "
                                   "then a progress bar within each epoch (steps, images/s, ETA; plain lines "
                                   "when stdout is not a terminal) and one line per epoch.")
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
    from trainables.progress import EpochProgress

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
    # within each epoch: a redrawn bar on a terminal, a line every ~10 % or 30 s in a log
    final = trainer.fit(report, checkpoint_dir=str(out / "checkpoints"), progress=EpochProgress(cfg.batch_size))
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
    p.add_argument("--no-system-metrics", action="store_true",
                   help="do not measure and log system/* metrics (CPU, memory, GPU) on the trial runs")
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
                           tracking_timeout=args.tracking_timeout, system_metrics=not args.no_system_metrics)
    if args.resume:
        if args.space:
            print("leoclr: note: SPACE is ignored with --resume (the sweep's own copy is used)")
        request = dataclasses.replace(request, name=args.resume, resume=True)
    else:
        if not args.space:
            raise spaces.SpaceError("give a search space (a shipped name or a YAML path): "
                                    + ", ".join(spaces.named_spaces()), source="leoclr sweep")
        # everything is validated here, before Ray starts (a dry run reports missing data as a note)
        spec = spaces.load_space(args.space, check_data=not args.dry_run)
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
    from leoclr_platform.sweep.preview import dry_run_text

    print(dry_run_text(spec))


def smoke_space(spec):
    """The same space on tiny settings (sweep/preview.py)."""
    from leoclr_platform.sweep.preview import smoke_space as smoke

    return smoke(spec)


def _tracking_args(p) -> None:
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                          "sqlite:///<project>/mlflow.db; an MLflow server: http://host:port)")


def _ui_parser(sub) -> None:
    p = sub.add_parser("ui", help="serve the MLflow UI for the tracking store on 127.0.0.1 and print its URL",
                       description="Serve the MLflow UI for the project's store; the printed link goes straight "
                                   "to the latest leoclr experiment's runs table (model-training view) and is "
                                   "printed once the server answers.")
    _tracking_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port to serve on (default 5000)")
    p.add_argument("--experiment", help="experiment the link opens (default: the latest leoclr/* experiment)")
    p.add_argument("--open", dest="open_browser", action="store_true",
                   help="also open the link in a web browser once the server answers")
    p.set_defaults(func=cmd_ui)


def cmd_ui(args) -> int:
    from leoclr_platform import tracking
    from leoclr_platform.ui import serve_ui

    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    if not tracking.is_local_store(uri):
        print(f"the tracking store is already served: open {tracking.redact_uri(uri)} in a browser")
        return 0
    return serve_ui(uri, host=args.host, port=args.port, open_browser=args.open_browser,
                    experiment=args.experiment)


def _promote_parser(sub) -> None:
    p = sub.add_parser("promote", help="register a sweep's best encoder in the MLflow Model Registry and set an alias",
                       description="Register the best finished trial of --sweep (or --run-id) as a version of "
                                   "the registered model and point --alias at it.")
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
    p = sub.add_parser("evaluate", help="the paper's evaluation protocols on a registered encoder or a checkpoint",
                       description="MODEL is models:/<name>@<alias> or models:/<name>/<version>; or give "
                                   "--checkpoint PATH (a `leoclr train` output folder, no registry). Every "
                                   "protocol also runs on the recalibrated random baseline (same backbone and "
                                   "seed), printed beside the encoder's numbers (docs/method.md, Evaluation).")
    p.add_argument("model", nargs="?", help="e.g. models:/leoclr-encoder@candidate")
    p.add_argument("--checkpoint", metavar="PATH", help="evaluate a `leoclr train` output folder (or one of its "
                                                        "checkpoints/epoch_NNNN folders) instead of a registered model")
    p.add_argument("--protocols", default="knn,linear,random_crop",
                   help="comma-separated: knn, linear, random_crop, semi_1pct, semi_10pct, semi_<N>pct, "
                        "semi:<fraction>, transfer:<dataset> (default: knn,linear,random_crop)")
    p.add_argument("--dataset", help="labelled data set (default: the one the encoder was trained on)")
    p.add_argument("--data-root", help="its folder (ImageFolder / CIFAR / STL-10 / Parquet)")
    p.add_argument("--linear-epochs", type=int, help="linear classifier epochs (default 100, MoCo's protocol); "
                                                     "same as --set linear.epochs=N")
    p.add_argument("--augment", choices=("crop_flip", "none"),
                   help="linear classifier train views: crop_flip (MoCo's protocol) or none (cached center-view "
                        "features; fast); same as --set linear.augment=...")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PROTOCOL.FIELD=VALUE",
                   help="a protocol's (or kind's) setting, e.g. --set linear.lr=10 --set semi_10pct.epochs=5 "
                        "--set transfer:cifar100.data_root=/data/c100; a bare FIELD is a linear field")
    p.add_argument("--device", help="cpu, cuda (default: cuda if available)")
    p.add_argument("--address", help="run the evaluation as a task on this Ray cluster (a GPU if it has one)")
    p.add_argument("--smoke-test", action="store_true",
                   help="seconds-long: 2 linear epochs on cached features, 1 fine-tuning epoch")
    _tracking_args(p)
    p.set_defaults(func=cmd_evaluate)


#: What --smoke-test sets, per protocol kind (only for the kinds that run).
EVALUATE_SMOKE = {"linear": {"epochs": 2, "augment": "none"}, "semi": {"epochs": 1},
                  "transfer": {"linear": {"epochs": 2, "augment": "none"}, "finetune": {"epochs": 1}}}


def evaluate_settings(args) -> dict:
    """--set PROTOCOL.FIELD=VALUE (and the shorthands) -> {protocol or kind: {field: value}}."""
    from trainables.config import parse_overrides

    settings: dict = {}
    for key, value in parse_overrides(args.overrides).items():
        protocol, dot, field = key.rpartition(".")
        settings.setdefault(protocol if dot else "linear", {})[field] = value
    linear = settings.setdefault("linear", {})
    if args.linear_epochs is not None:
        linear["epochs"] = args.linear_epochs
    if args.augment:
        linear["augment"] = args.augment
    if not linear:
        del settings["linear"]
    if args.smoke_test:
        names = [n.strip() for n in args.protocols.split(",")]  # checked with the settings, later
        kinds = {("linear" if n == "random_crop" else n.split(":")[0].split("_")[0] if n.startswith(("semi", "transfer"))
                  else n) for n in names}
        for kind in kinds & set(EVALUATE_SMOKE):
            settings[kind] = {**EVALUATE_SMOKE[kind], **settings.get(kind, {})}
    return settings


def cmd_evaluate(args) -> int:
    from leoclr_platform.evaluation import evaluate_model
    from leoclr_platform.tracking import resolve_tracking_uri

    evaluate_model(resolve_tracking_uri(args.tracking_uri), args.model, checkpoint=args.checkpoint,
                   protocols=args.protocols, settings=evaluate_settings(args), dataset=args.dataset,
                   data_root=args.data_root, device=args.device, address=args.address)
    return 0


def _report_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="citable report of a sweep: intervals, paired comparisons, baseline, importance, plots",
        description="Write the report of sweep NAME from the MLflow tracking store: per strategy (or grid cell) "
                    "n, mean, std and 95 % intervals; paired comparisons with the baseline strategy (moco_v2) on "
                    "shared seeds, confirmation runs as the headline when the sweep has them; the random-weights "
                    "baseline row with every gain; parameter importance; RankMe against the validation kNN; "
                    "learning curves; the evaluations of versions promoted from the sweep. Writes ablation.md, "
                    "ablation.html, ablation.csv, runs.csv and the PNGs, logs them to the sweep's MLflow run "
                    "under report/ and prints the Markdown.",
        epilog="An unknown NAME is answered at once with the sweeps the store holds.")
    p.add_argument("name", metavar="NAME", help="sweep name (as given to leoclr sweep --name, or its default)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: report/ in the sweep's results folder, "
                                                "as recorded on its MLflow run; ./report-NAME when that folder "
                                                "is not a local path)")
    _tracking_args(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from leoclr_platform.report.lookup import check_sweep
    from leoclr_platform.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    check_sweep(uri, args.name)  # before MLflow and matplotlib are imported: an unknown name in a second
    from leoclr_platform.report.command import report_sweep

    report_sweep(uri, args.name, args.out)
    return 0


def _sync_parser(sub) -> None:
    p = sub.add_parser("sync", help="replay a sweep's results on disk into MLflow (after the store was away)",
                       description="Replay sweep NAME from <storage>/NAME/ into the tracking store: what is "
                                   "there already is not logged twice; the result equals the live record.")
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
    from trainables.validation import InputError

    try:
        return args.func(args)
    except InputError as exc:  # every engine and platform refusal (errors.py)
        print(f"leoclr: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # imported here, not before the command: trainables.eval loads torchvision (seconds), which a
        # command such as `leoclr report NO-SUCH` must not wait for
        from trainables.eval import EvaluationError
        from trainables.loop import DivergenceError

        if isinstance(exc, EvaluationError):
            print(f"leoclr: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, DivergenceError):
            print(f"leoclr: training failed: {exc}", file=sys.stderr)
            return 3
        raise
    except KeyboardInterrupt:
        print("leoclr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
