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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leoclr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    args = build_parser().parse_args(argv)
    from trainables.config import ConfigError
    from trainables.data import DatasetError
    from trainables.loop import CheckpointError, DivergenceError

    try:
        return args.func(args)
    except (ConfigError, DatasetError, CheckpointError) as exc:
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
