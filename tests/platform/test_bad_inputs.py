"""The bad-input catalogue (issue 5, item 7): every row of docs/bad-inputs.md, run for real.

Each row is one bad input given the way a user gives it: `leoclr` argv, plus the files written
first (a YAML file, a broken image, a truncated checkpoint, ...). It runs in-process through
`leoclr_platform.cli.main(argv)` with the current directory set to the test's tmp_path (so the
messages show the short relative paths a user would type) and must:

- exit with the row's status (2: bad input) and print one `leoclr: error: ...` line matching the
  row's regex, which names the file / key / value and the reason;
- fail before any compute: `ray.init` is replaced by a guard that aborts the row if called (and
  Ray must not be initialised afterwards), `Trainer.train_epoch` and `Trainer.save_checkpoint`
  abort it too (no training step, no checkpoint), and no new checkpoint file appears on disk;
  so do opening a sweep's MLflow run, registering a model, downloading or evaluating an encoder,
  building a report and starting a process (`leoclr ui`'s server);
- use only its own folder's tracking store: LEOCLR_HOME is the row's folder, whose `mlflow.db`
  is a copy of a store built once (schema only), and MLFLOW_TRACKING_URI is unset unless the row
  sets it;
- return within seconds;
- print exactly the message that docs/bad-inputs.md shows for it (the doc may shorten long paths
  with `...`); `test_doc_and_table_agree` checks that both list the same rows.

To add a row: add a `Row` to `ROWS` and a line with the same id to docs/bad-inputs.md; a failing
row prints its actual message in doc form, ready to paste.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import ray
from PIL import Image

from leoclr_platform import cli, evaluation, tracking
import trainables.eval
from leoclr_platform.report import command as report_command
from trainables.config import TrainConfig
from trainables.loop import Trainer

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "bad-inputs.md"
#: Rows take well under a second (the --resume rows build a model first; the sweep rows that reach
#: the tracking check create the sweep's Optuna study first, a few seconds); 20 s leaves room for a
#: busy shared CI machine while still catching a row that started real work.
ROW_SECONDS = 20.0


# ---------------------------------------------------------------------------------------------
# Files the rows write before running
# ---------------------------------------------------------------------------------------------
def _png(color: tuple[int, int, int], size: int = 12) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


RED, BLUE, GREEN = _png((200, 30, 30)), _png((30, 30, 200)), _png((30, 200, 30))
#: A PNG signature followed by garbage: what a download cut short or a disk error leaves.
BROKEN_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"garbage" * 8


def _folder(layout: dict[str, list[str]], extra: dict[str, Any] | None = None,
            root: str = "imgs") -> dict[str, Any]:
    """ImageFolder files: {"train/a": ["r", "b"], ...} -> {"imgs/train/a/0.png": bytes, ...}."""
    colours = {"r": RED, "b": BLUE, "g": GREEN}
    files: dict[str, Any] = {}
    for folder, images in layout.items():
        for i, c in enumerate(images):
            files[f"{root}/{folder}/{i}.png"] = colours[c]
    files.update({f"{root}/{k}": v for k, v in (extra or {}).items()})
    return files


def _copy_checkpoint(dest: Path, ckpt: Path) -> None:
    shutil.copytree(ckpt, dest)


def _truncated_checkpoint(dest: Path, ckpt: Path) -> None:
    data = (ckpt / "checkpoint.pt").read_bytes()
    dest.write_bytes(data[: len(data) // 2])  # a copy cut short (disk full, killed rsync)


def _other_backbone_checkpoint(dest: Path, ckpt: Path) -> None:
    """The checkpoint with its config.json naming resnet18 while encoder.pt holds the small CNN."""
    import json

    shutil.copytree(ckpt, dest)
    config = json.loads((dest / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**config, "backbone": "resnet18"}))


def _store_with_model(dest: Path, ckpt: Path) -> None:
    """The row's own MLflow store (`dest`, already a copy of the schema-only template) with a
    registered model `leoclr-encoder`: version 1, alias @candidate (never loaded by any row)."""
    from leoclr_platform import tracking

    c = tracking.client(f"sqlite:///{dest}")
    c.create_registered_model("leoclr-encoder")
    version = c.create_model_version("leoclr-encoder", source=str(ckpt))
    c.set_registered_model_alias("leoclr-encoder", "candidate", version.version)


#: The tiny valid search space the space rows break one thing at a time.
SPACE = """\
name: tiny
mode: search
base:
  dataset: photo_patches
  image_size: 16
  photo_patches: {train_per_class: 8, test_per_class: 4}
  backbone: small_cnn
  batch_size: 32
  queue_size: 64
  bn_splits: 2
  knn_k: 10
space:
  attraction_strategy: {choice: [leoclr, moco_v2]}
  temperature: {loguniform: [0.1, 0.5]}
objective: {metric: val_knn_top1, mode: max}
budget: {trials: 2, max_epochs: 1, grace_period: 1}
resources: {workers: 1, cpus_per_worker: 1, gpus_per_worker: 0}
seeds: [0]
"""


def space(*edits: tuple[str, str]) -> str:
    """SPACE with each (old, new) replaced once (old must be there: the row breaks what it says)."""
    text = SPACE
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    id: str
    what: str  # the bad input, in words
    argv: tuple[str, ...]
    expect: str  # regex searched in the `leoclr: error: ...` line
    files: dict[str, Any] = field(default_factory=dict)  # relative path -> str | bytes | fn(dest, ckpt)
    env: dict[str, str] = field(default_factory=dict)  # environment variables set for the row
    code: int = 2
    seconds: float = ROW_SECONDS
    marks: tuple = ()


def train(*args: str) -> tuple[str, ...]:
    return ("train", *args)


def sweep(*args: str) -> tuple[str, ...]:
    return ("sweep", *args)


def promote(*args: str) -> tuple[str, ...]:
    return ("promote", *args)


def evaluate(*args: str) -> tuple[str, ...]:
    return ("evaluate", *args)


#: Nothing listens on port 9 (discard): the connection is refused at once, as by a stopped server.
DEAD_SERVER = "http://127.0.0.1:9"
#: The row's store holds model leoclr-encoder (version 1, @candidate).
MODEL_STORE = {"mlflow.db": _store_with_model}
CANDIDATE = "models:/leoclr-encoder@candidate"


# `--smoke-test --set dataset=digits`: what the rows that must reach the Trainer run (a small
# CNN on scikit-learn's digits: no download, no cache to build).
SMOKE_DIGITS = ("--smoke-test", "--set", "dataset=digits")
# an ImageFolder small enough for one batch
TINY_FOLDER = ("--smoke-test", "--set", "dataset=imagefolder", "--set", "data_root=imgs",
               "--set", "image_size=16", "--set", "batch_size=4", "--set", "queue_size=8",
               "--set", "bn_splits=2", "--set", "knn_k=2")
# val/ next to test/: val/ is the validation split, nothing is carved from the 3 images per class
GOOD_FOLDER = {"train/a": ["r", "r", "r"], "train/b": ["b", "b", "b"], "val/a": ["r"], "val/b": ["b"],
               "test/a": ["r"], "test/b": ["b"]}

ROWS: list[Row] = [
    # ---- training config: files ------------------------------------------------------------
    Row("config-file-missing", "--config names a file that does not exist",
        train("--config", "nope.yaml"), r"^leoclr: error: nope\.yaml: file not found$"),
    Row("config-yaml-syntax", "YAML syntax error (unclosed list)",
        train("--config", "bad.yaml"), r"bad\.yaml: malformed YAML: line 3, column \d+: ",
        files={"bad.yaml": "epochs: 2\ncrop_scale: [0.2, 1.0\nlr: 0.1\n"}),
    Row("config-duplicate-key", "the same key twice (plain YAML would keep the last one silently)",
        train("--config", "bad.yaml"),
        r"bad\.yaml: malformed YAML: line 3, column 1: duplicate key 'temperature' \(first given on line 1\)",
        files={"bad.yaml": "temperature: 0.1\nlr: 0.03\ntemperature: 0.2\n"}),
    Row("config-not-a-mapping", "the file is a YAML list, not a mapping",
        train("--config", "bad.yaml"), r"bad\.yaml: the top level must be a mapping of keys to values, got list",
        files={"bad.yaml": "- temperature: 0.1\n- lr: 0.03\n"}),
    Row("config-unknown-key", "a misspelt key",
        train("--config", "bad.yaml"),
        r"bad\.yaml: unknown key\(s\) 'tempreature' \(did you mean 'temperature'\?\)",
        files={"bad.yaml": "tempreature: 0.1\n"}),
    Row("config-int-expected", "a fractional value for an integer key",
        train("--config", "bad.yaml"), r"bad\.yaml: epochs=2\.5: expected an integer, got float",
        files={"bad.yaml": "epochs: 2.5\n"}),
    Row("config-number-expected", "a word for a number",
        train("--config", "bad.yaml"), r"bad\.yaml: lr='fast': expected a number, got str",
        files={"bad.yaml": "lr: fast\n"}),
    Row("config-yaml-off-is-bool", "an unquoted `off` (YAML 1.1 reads it as false) for a string key",
        train("--config", "bad.yaml"), r"bad\.yaml: amp=False: expected a string, got bool.*quote",
        files={"bad.yaml": "amp: off\n"}),
    Row("config-pair-expected", "a number where a [min, max] pair is expected",
        train("--config", "bad.yaml"), r"bad\.yaml: crop_scale=0\.2: expected a list of 2 numbers",
        files={"bad.yaml": "crop_scale: 0.2\n"}),
    # ---- training config: values out of range ----------------------------------------------
    Row("temperature-zero", "temperature <= 0",
        train("--set", "temperature=0"), r"--set: temperature=0\.0: must be a finite number > 0"),
    Row("key-momentum-one", "key_momentum >= 1 (the key encoder would never move)",
        train("--set", "key_momentum=1"), r"--set: key_momentum=1\.0: must be in \[0, 1\)"),
    Row("queue-smaller-than-batch", "queue_size smaller than the global batch",
        train("--set", "queue_size=128"), r"--set: queue_size=128: must be >= the global batch_size \(256\)"),
    Row("negative-epochs", "a negative number of epochs",
        train("--set", "epochs=-1"), r"--set: epochs=-1: must be >= 1"),
    Row("warmup-not-shorter-than-training", "warm-up as long as the run",
        train("--set", "epochs=2", "--set", "warmup_epochs=2"),
        r"--set: warmup_epochs=2\.0: must be smaller than epochs \(2\)"),
    Row("symmetric-not-moco", "symmetric loss with a LeOCLR strategy",
        train("--set", "symmetric=true"), r"--set: symmetric=True: only applies to attraction_strategy=moco_v2"),
    Row("batch-not-divisible-by-bn-splits", "a batch SplitBatchNorm cannot split evenly (bn_splits 0 = 8)",
        train("--set", "batch_size=100", "--set", "queue_size=1000"),
        r"batch_size=100: must be divisible by bn_splits=8 \(0 means 8 on one process\): SplitBatchNorm"),
    Row("batch-larger-than-dataset", "a global batch larger than the training set",
        train(*SMOKE_DIGITS, "--set", "batch_size=4096", "--set", "queue_size=4096"),
        r"batch_size=4096: the digits training set has \d+ images, fewer than one global batch"),
    # ---- training config: unknown names ----------------------------------------------------
    Row("unknown-attraction-strategy", "an attraction strategy that does not exist",
        train("--set", "attraction_strategy=leoclr_random"),
        r"--set: attraction_strategy='leoclr_random': must be one of moco_v2, leoclr, .*did you mean 'leoclr_random_original'"),
    Row("unknown-backbone", "a backbone that does not exist",
        train("--set", "backbone=resnet34"), r"--set: backbone='resnet34': must be one of small_cnn, resnet18_cifar"),
    Row("unknown-dataset", "a dataset that does not exist",
        train("--set", "dataset=imagenet"), r"--set: dataset='imagenet': must be one of photo_patches, .*imagefolder"),
    # ---- --set ------------------------------------------------------------------------------
    Row("set-no-equals", "--set without key=value",
        train("--set", "temperature"), r"--set 'temperature': expected key=value"),
    Row("set-bad-yaml-value", "--set value that is not valid YAML",
        train("--set", "crop_scale=[0.08,1"), r"--set 'crop_scale=\[0\.08,1': malformed YAML: line 1, column \d+"),
    Row("set-unknown-key", "--set of a key that does not exist",
        train("--set", "warmup=2"), r"--set: unknown key\(s\) 'warmup' \(did you mean 'warmup_epochs'\?\)"),
    # ---- data ------------------------------------------------------------------------------
    Row("data-root-not-given", "a file-backed dataset without data_root",
        train("--set", "dataset=cifar10"), r"--set: data_root=None: dataset 'cifar10' needs data_root"),
    Row("data-root-not-found", "data_root names a folder that does not exist",
        train("--smoke-test", "--set", "dataset=imagefolder", "--set", "data_root=no/such/folder"),
        r"imagefolder: data root no/such/folder does not exist"),
    Row("imagefolder-no-val-split", "an ImageFolder without a val/ (or test/) split",
        train(*TINY_FOLDER), r"imagefolder: no 'test/' or 'val/' folder under imgs",
        files=_folder({"train/a": ["r"], "train/b": ["b"]})),
    Row("imagefolder-no-images", "an ImageFolder whose class folders hold no images",
        train(*TINY_FOLDER), r"imagefolder: imgs/train has no usable class folders .*Found no valid file",
        files=_folder({}, {"train/a/README.txt": "to do\n", "val/a/README.txt": "to do\n"})),
    Row("imagefolder-class-mismatch", "train/ and val/ have different class folders",
        train(*TINY_FOLDER), r"imagefolder: the class folders of imgs/train and imgs/val differ",
        files=_folder({"train/a": ["r"], "train/b": ["b"], "val/a": ["r"], "val/c": ["g"]})),
    Row("imagefolder-corrupt-image", "an unreadable (corrupt) image in an ImageFolder",
        train(*TINY_FOLDER), r"cannot read the image file imgs/train/a/broken\.png: .*delete or replace that file",
        files=_folder(GOOD_FOLDER, {"train/a/broken.png": BROKEN_PNG})),
    # ---- checkpoints (--resume) ------------------------------------------------------------
    Row("resume-not-found", "--resume of a checkpoint that does not exist",
        train(*SMOKE_DIGITS, "--resume", "ckpt/epoch_0007"), r"ckpt/epoch_0007: checkpoint not found"),
    Row("resume-truncated", "--resume of a truncated checkpoint file",
        train(*SMOKE_DIGITS, "--resume", "checkpoint.pt"), r"checkpoint\.pt: unreadable checkpoint \(RuntimeError: .*\); truncated, corrupt",
        files={"checkpoint.pt": _truncated_checkpoint}),
    Row("resume-encoder-file", "--resume of the encoder-only file instead of the checkpoint",
        train(*SMOKE_DIGITS, "--resume", "ckpt/encoder.pt"),
        r"ckpt/encoder\.pt: not a leoclr checkpoint \(format 1 expected\)",
        files={"ckpt": _copy_checkpoint}),
    Row("resume-other-backbone", "--resume of a checkpoint of another backbone",
        train(*SMOKE_DIGITS, "--set", "backbone=resnet18_cifar", "--resume", "ckpt"),
        r"ckpt/checkpoint\.pt: checkpoint does not match this configuration \(backbone: checkpoint "
        r"'small_cnn' vs config 'resnet18_cifar'\)",
        files={"ckpt": _copy_checkpoint}),
    Row("train-out-unwritable", "--out under a path that is a file",
        train("--set", "temperature=0.1", "--out", "blocker/run"), r"--out blocker/run: cannot write there: Not a directory",
        files={"blocker": "a file, not a folder\n"}),
    # ---- search spaces: finding the file ---------------------------------------------------
    Row("sweep-no-space", "leoclr sweep without a space",
        sweep(), r"leoclr sweep: give a search space \(a shipped name or a YAML path\): ([a-z0-9_]+, )*demo, "),
    Row("space-unknown-name", "a misspelt shipped space name",
        sweep("demoo"), r"demoo: no such search space \(did you mean 'demo'\?\); shipped spaces: "),
    Row("space-file-missing", "a space file that does not exist",
        sweep("./nope.yaml"), r"\./nope\.yaml: file not found \(shipped spaces: "),
    # ---- search spaces: YAML and schema ----------------------------------------------------
    Row("space-yaml-syntax", "YAML syntax error in a space (bad indentation)",
        sweep("bad.yaml"), r"bad\.yaml: malformed YAML: line \d+, column \d+: ",
        files={"bad.yaml": space(("  temperature: {loguniform", "   temperature: {loguniform"))}),
    Row("space-duplicate-key", "the same searched key twice",
        sweep("bad.yaml"), r"bad\.yaml: malformed YAML: line 15, column 3: duplicate key 'temperature' "
                           r"\(first given on line 14\)",
        files={"bad.yaml": space(("  temperature: {loguniform: [0.1, 0.5]}\n",
                                  "  temperature: {loguniform: [0.1, 0.5]}\n  temperature: {uniform: [0.1, 0.5]}\n"))}),
    Row("space-unknown-top-key", "a misspelt top-level key",
        sweep("bad.yaml"), r"bad\.yaml: budjet: unknown key \(did you mean 'budget'\?\)",
        files={"bad.yaml": space(("budget:", "budjet:"))}),
    Row("space-unknown-distribution", "a distribution that does not exist",
        sweep("bad.yaml"), r"bad\.yaml: space\.temperature\.lognormal: unknown distribution \(did you mean 'loguniform'\?\)",
        files={"bad.yaml": space(("{loguniform: [0.1, 0.5]}", "{lognormal: [0.1, 0.5]}"))}),
    Row("space-low-above-high", "a range with low > high",
        sweep("bad.yaml"), r"bad\.yaml: space\.temperature\.loguniform: low must be < high, got \[0\.5, 0\.1\]",
        files={"bad.yaml": space(("[0.1, 0.5]", "[0.5, 0.1]"))}),
    Row("space-unknown-param", "a searched key that is not a TrainConfig key",
        sweep("bad.yaml"), r"bad\.yaml: space\.tempreture: unknown TrainConfig key \(did you mean 'temperature'\?\)",
        files={"bad.yaml": space(("  temperature: {log", "  tempreture: {log"))}),
    Row("space-when-unknown-key", "`when` on a key that does not exist",
        sweep("bad.yaml"), r"bad\.yaml: space\.temperature\.when\.strategy: unknown TrainConfig key",
        files={"bad.yaml": space(("0.5]}", "0.5], when: {strategy: [leoclr]}}"))}),
    Row("space-when-later-key", "`when` on a key searched later in the file",
        sweep("bad.yaml"), r"bad\.yaml: space\.attraction_strategy\.when\.temperature: temperature is searched later",
        files={"bad.yaml": space(("moco_v2]}", "moco_v2], when: {temperature: [0.1]}}"))}),
    Row("space-grid-over-range", "mode: grid with a continuous range",
        sweep("bad.yaml"), r"bad\.yaml: space\.temperature\.loguniform: grid mode needs a list of values",
        files={"bad.yaml": space(("mode: search", "mode: grid"))}),
    Row("space-choice-invalid-value", "a choice the config refuses",
        sweep("bad.yaml"), r"bad\.yaml: space\.attraction_strategy\.choice: attraction_strategy='simclr': must be one of",
        files={"bad.yaml": space(("[leoclr, moco_v2]", "[leoclr, simclr]"))}),
    Row("space-range-reaches-zero", "a temperature range that reaches 0",
        sweep("bad.yaml"), r"bad\.yaml: space\.temperature\.uniform: temperature=0\.0: must be a finite number > 0",
        files={"bad.yaml": space(("{loguniform: [0.1, 0.5]}", "{uniform: [0, 0.5]}"))}),
    Row("space-queue-below-batch", "a searched batch larger than the fixed queue",
        sweep("bad.yaml"), r"bad\.yaml: space\.batch_size\.choice: with batch_size=128: queue_size=64: must be >= "
                           r"the global batch_size \(128\)",
        files={"bad.yaml": space(("  batch_size: 32\n", ""), ("space:\n", "space:\n  batch_size: {choice: [32, 128]}\n"))}),
    Row("space-batch-vs-bn-splits", "a searched batch SplitBatchNorm cannot split",
        sweep("bad.yaml"), r"bad\.yaml: space\.batch_size\.choice: batch_size=33: must be divisible by bn_splits=2",
        files={"bad.yaml": space(("  batch_size: 32\n", ""), ("space:\n", "space:\n  batch_size: {choice: [32, 33]}\n"))}),
    Row("space-base-wrong-type", "a quoted number in base",
        sweep("bad.yaml"), r"bad\.yaml: base\.batch_size: batch_size='32': expected an integer, got str",
        files={"bad.yaml": space(("batch_size: 32", "batch_size: '32'"))}),
    Row("space-data-root-missing", "a file dataset whose data_root does not exist",
        sweep("bad.yaml"), r"bad\.yaml: base\.data_root: /.*/no/such/cifar does not exist \(dataset cifar10",
        files={"bad.yaml": space(("dataset: photo_patches", "dataset: cifar10\n  data_root: no/such/cifar"))}),
    # ---- search spaces: resources and budget -----------------------------------------------
    Row("resources-gpu-with-cpu-device", "GPUs requested for trials fixed to the CPU",
        sweep("bad.yaml"), r"bad\.yaml: resources\.gpus_per_worker: is 1 but base\.device is cpu",
        files={"bad.yaml": space(("gpus_per_worker: 0", "gpus_per_worker: 1"),
                                 ("backbone: small_cnn", "backbone: small_cnn\n  device: cpu"))}),
    Row("resources-zero-workers", "zero workers per trial",
        sweep("bad.yaml"), r"bad\.yaml: resources\.workers: must be an integer >= 1, got 0",
        files={"bad.yaml": space(("workers: 1", "workers: 0"))}),
    Row("resources-batch-vs-workers", "a global batch that does not divide by the workers",
        sweep("bad.yaml"), r"bad\.yaml: base\.batch_size: batch_size=32: must be divisible by resources\.workers=3",
        files={"bad.yaml": space(("workers: 1", "workers: 3"))}),
    Row("resources-more-than-the-machine", "one trial needs more CPUs than the machine has",
        sweep("bad.yaml", "--num-cpus", "2"), r"bad\.yaml: resources: one trial needs 1 worker\(s\) x \(64 CPU",
        files={"bad.yaml": space(("cpus_per_worker: 1", "cpus_per_worker: 64"))}),
    Row("budget-zero-trials", "budget.trials: 0",
        sweep("bad.yaml"), r"bad\.yaml: budget\.trials: must be an integer >= 1, got 0",
        files={"bad.yaml": space(("trials: 2", "trials: 0"))}),
    Row("budget-grace-above-max-epochs", "an ASHA grace period longer than the trials",
        sweep("bad.yaml"), r"bad\.yaml: budget\.grace_period: 3 must be <= budget\.max_epochs \(1\)",
        files={"bad.yaml": space(("grace_period: 1", "grace_period: 3"))}),
    Row("budget-cli-trials-zero", "--trials 0 on the command line",
        sweep("smoke", "--trials", "0"), r"smoke\.yaml: budget\.trials: must be an integer >= 1, got 0"),
    Row("budget-epochs-disagree", "base.epochs and budget.max_epochs both given, different",
        sweep("bad.yaml"), r"bad\.yaml: budget\.max_epochs: 1 disagrees with base\.epochs \(5\)",
        files={"bad.yaml": space(("  knn_k: 10\n", "  knn_k: 10\n  epochs: 5\n"))}),
    Row("objective-unknown-metric", "an objective the loop does not report",
        sweep("bad.yaml"), r"bad\.yaml: objective\.metric: 'knn_acc' is not reported by the training loop",
        files={"bad.yaml": space(("metric: val_knn_top1", "metric: knn_acc"))}),
    # ---- running a sweep -------------------------------------------------------------------
    Row("sweep-resume-unknown", "--resume of a sweep that does not exist",
        sweep("--resume", "nosuch", "--storage", "runs"),
        r"no sweep to resume at runs/nosuch \(sweep\.json not found\); check the name and --storage"),
    Row("sweep-name-taken", "a new sweep with the name of an existing one",
        sweep("smoke", "--name", "taken", "--storage", "runs"),
        r"sweep 'taken' already exists under runs: use --resume taken",
        files={"runs/taken/sweep.json": "{}\n"}),
    Row("sweep-storage-unwritable", "--storage under a path that is a file",
        sweep("smoke", "--storage", "blocker/runs"), r"storage path 'blocker/runs/smoke-\d+-\d+' is not writable: ",
        files={"blocker": "a file, not a folder\n"}),
    Row("sweep-ray-unreachable", "--address where no Ray cluster listens",
        sweep("smoke", "--address", "127.0.0.1:9", "--storage", "runs"),
        r"cannot connect to the Ray cluster at '127\.0\.0\.1:9': Connection refused"),
    Row("sweep-study-storage-bad", "--study-storage that is not a database URL",
        sweep("smoke", "--study-storage", "notaurl", "--storage", "runs"),
        r"--study-storage 'notaurl': cannot open the Optuna study storage: ArgumentError: Could not parse"),
    # ---- MLflow tracking and model registry ------------------------------------------------
    Row("sweep-tracking-unreachable", "--tracking-uri of an MLflow server that is not running",
        sweep("smoke", "--tracking-uri", DEAD_SERVER),
        r"^leoclr: error: MLflow tracking server http://127\.0\.0\.1:9 is not reachable \(.*Connection refused\); "
        r"start it \(`leoclr ui` serves the default store\) or fix --tracking-uri / MLFLOW_TRACKING_URI$"),
    Row("sweep-tracking-env-unreachable", "MLFLOW_TRACKING_URI (environment) names a server that is not running",
        sweep("smoke"), r"MLflow tracking server http://127\.0\.0\.1:9 is not reachable \(.*Connection refused\); "
                        r".* or fix or unset MLFLOW_TRACKING_URI \(set in the environment to this URI\)$",
        env={"MLFLOW_TRACKING_URI": DEAD_SERVER}),
    Row("sweep-tracking-file-store", "a `file:` tracking URI (MLflow's plain file store)",
        sweep("smoke", "--tracking-uri", "file:./mlruns"),
        r"--tracking-uri: 'file:\./mlruns': the plain file store is not supported \(MLflow 3 deprecates it\); "
        r"use sqlite:///<dir>/mlflow\.db or an MLflow server$"),
    Row("sweep-tracking-not-a-uri", "a folder name for --tracking-uri",
        sweep("smoke", "--tracking-uri", "mlruns"),
        r"--tracking-uri: 'mlruns' is not a tracking URI: use sqlite:///path/mlflow\.db, http://host:port"),
    Row("promote-no-source", "leoclr promote with neither --sweep nor --run-id",
        promote(), r"^leoclr: error: promote: give exactly one of --sweep NAME or --run-id ID$"),
    Row("promote-two-sources", "leoclr promote with both --sweep and --run-id",
        promote("--sweep", "demo-1", "--run-id", "0123456789abcdef0123456789abcdef"),
        r"^leoclr: error: promote: give exactly one of --sweep NAME or --run-id ID$"),
    Row("promote-unknown-sweep", "--sweep of a sweep the tracking store does not hold",
        promote("--sweep", "nosuch"),
        r"no sweep named 'nosuch' in the tracking store sqlite:///.*/mlflow\.db \(check the name, or --tracking-uri"),
    Row("promote-unknown-run", "--run-id of a run the tracking store does not hold",
        promote("--run-id", "0123456789abcdef0123456789abcdef"),
        r"--run-id 0123456789abcdef0123456789abcdef: no such run in sqlite:///.*/mlflow\.db$"),
    Row("promote-alias-latest", "--alias latest (reserved by MLflow)",
        promote("--sweep", "demo-1", "--alias", "latest"),
        r"--alias 'latest': an alias is a name like candidate or champion \(.*not 'latest' or v<number>\)$"),
    Row("promote-alias-version", "--alias v3 (reads as a version number)",
        promote("--sweep", "demo-1", "--alias", "v3"),
        r"--alias 'v3': an alias is a name like candidate or champion \(.*not 'latest' or v<number>\)$"),
    Row("evaluate-model-uri-malformed", "a model URI without models:/",
        evaluate("leoclr-encoder@candidate"),
        r"'leoclr-encoder@candidate' is not a registered model URI: use models:/<name>@<alias> or "
        r"models:/<name>/<version>$"),
    Row("evaluate-unknown-model", "a misspelt registered model name",
        evaluate("models:/leoclr-encodr@candidate"),
        r"models:/leoclr-encodr@candidate: no registered model named 'leoclr-encodr' \(registered: leoclr-encoder; ",
        files=MODEL_STORE),
    Row("evaluate-unknown-alias", "an alias the registered model does not have",
        evaluate("models:/leoclr-encoder@champion"),
        r"models:/leoclr-encoder@champion: model 'leoclr-encoder' has no alias @champion \(aliases: @candidate->v1\)$",
        files=MODEL_STORE),
    Row("evaluate-unknown-version", "a version the registered model does not have",
        evaluate("models:/leoclr-encoder/7"),
        r"models:/leoclr-encoder/7: model 'leoclr-encoder' has no version 7 \(versions: 1\)$",
        files=MODEL_STORE),
    Row("evaluate-protocol-unknown-field", "--set of a linear-protocol field that does not exist",
        evaluate(CANDIDATE, "--set", "lr_typo=3"),
        r"linear: unknown field\(s\) 'lr_typo' of LinearProtocol; known: amp, augment, batch_size, epochs, .*, lr, ",
        files=MODEL_STORE),
    Row("evaluate-protocol-bad-value", "--set of a linear-protocol value out of range",
        evaluate(CANDIDATE, "--set", "epochs=0"), r"linear: LinearProtocol\.epochs=0: must be an integer >= 1$",
        files=MODEL_STORE),
    Row("evaluate-protocol-unknown", "a misspelt protocol name",
        evaluate(CANDIDATE, "--protocols", "knn,linaer"),
        r"--protocols: protocol='linaer': unknown protocol \(did you mean 'linear'\?\); choose from ", files=MODEL_STORE),
    Row("evaluate-label-fraction", "a semi-supervised label fraction outside (0, 1]",
        evaluate(CANDIDATE, "--protocols", "semi:1.5"),
        r"--protocols: protocol='semi:1.5': the label fraction 1\.5 must be in \(0, 1\]", files=MODEL_STORE),
    Row("evaluate-setting-unused", "--set for a protocol that is not in --protocols",
        evaluate(CANDIDATE, "--protocols", "knn", "--set", "semi_10pct.epochs=3"),
        r"--set: protocol='semi_10pct': settings for a protocol that is not run", files=MODEL_STORE),
    Row("evaluate-setting-unknown-field", "--set of a field a semi-supervised protocol does not have",
        evaluate(CANDIDATE, "--protocols", "semi_10pct", "--set", "semi_10pct.epoch=3"),
        r"semi_10pct: unknown field\(s\) 'epoch' \(did you mean 'epochs'\?\) of FinetuneProtocol", files=MODEL_STORE),
    Row("evaluate-transfer-no-root", "transfer to a dataset without its folder",
        evaluate(CANDIDATE, "--protocols", "transfer:cifar100"),
        r"transfer:cifar100: TransferProtocol\.data_root=None: dataset 'cifar100' needs data_root", files=MODEL_STORE),
    Row("evaluate-transfer-missing", "transfer to a dataset whose folder does not exist",
        evaluate("--checkpoint", "ckpt", "--protocols", "knn,transfer:cifar100",
                 "--set", "transfer:cifar100.data_root=nope"),
        r"transfer:cifar100: TransferProtocol\.data_root='nope': cannot load the transfer dataset 'cifar100'",
        files={"ckpt": _copy_checkpoint}),
    Row("evaluate-no-model", "leoclr evaluate with neither a model URI nor --checkpoint",
        evaluate(), r"evaluate: give exactly one of MODEL_URI \(models:/<name>@<alias>\) or --checkpoint PATH$"),
    Row("evaluate-checkpoint-missing", "--checkpoint of a folder that does not exist",
        evaluate("--checkpoint", "nope"), r"nope: no such checkpoint folder \(give a `leoclr train` output folder"),
    Row("evaluate-checkpoint-backbone-mismatch", "--checkpoint whose config names another backbone than its weights",
        evaluate("--checkpoint", "ckpt"), r"ckpt/encoder\.pt: .*", files={"ckpt": _other_backbone_checkpoint}),
    Row("report-unknown-sweep", "leoclr report of a sweep the tracking store does not hold",
        ("report", "nosuch"),
        r"no sweep named 'nosuch' in the tracking store sqlite:///.*/mlflow\.db \(check the name, or --tracking-uri"),
    Row("sync-unknown-sweep", "leoclr sync of a sweep that is not on disk",
        ("sync", "nosuch"), r"no sweep to sync at /.*/runs/nosuch \(sweep\.json not found\); check the name and --storage"),
    Row("ui-file-store", "leoclr ui of a `file:` store",
        ("ui", "--tracking-uri", "file:./mlruns"), r"--tracking-uri: 'file:\./mlruns': the plain file store is not supported"),
    Row("confirm-one-seed", "a confirmation stage on one seed (no interval)",
        sweep("bad.yaml"), r"bad\.yaml: budget\.confirm\.seeds: must be an integer >= 2 \(an interval needs at least 2 seeds\), got 1",
        files={"bad.yaml": space(("grace_period: 1}", "grace_period: 1, confirm: {top: 1, seeds: 1}}"))}),
    Row("confirm-flag-malformed", "--confirm that is not N or K:N",
        sweep("smoke", "--confirm", "top3"), r"--confirm 'top3': must be N \(seeds\) or K:N"),
]

ROW_IDS = [r.id for r in ROWS]
assert len(set(ROW_IDS)) == len(ROW_IDS), "duplicate row id"


# ---------------------------------------------------------------------------------------------
# Running a row
# ---------------------------------------------------------------------------------------------
class ComputeStarted(BaseException):
    """Raised by the guards: a bad input reached Ray or training (BaseException: no handler in
    the code under test may swallow it)."""


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    """A real checkpoint (epoch 0, never trained) of the `--smoke-test --set dataset=digits` model."""
    cfg = TrainConfig.from_dict({**cli.SMOKE_OVERRIDES, "dataset": "digits"})
    return Trainer(cfg).save_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def store_template(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store (schema only): built once (seconds), copied into each row's folder."""
    from leoclr_platform import tracking

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    tracking.check_store(f"sqlite:///{db}")
    return db


def _clean_env(monkeypatch) -> None:
    """No cluster, storage or tracking store of the user's. Set, then deleted, so that the
    monkeypatch undoes whatever the code under test sets too (mlflow.set_tracking_uri exports
    MLFLOW_TRACKING_URI)."""
    for var in ("RAY_ADDRESS", "LEOCLR_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)


def _write(base: Path, files: dict[str, Any], ckpt: Path) -> None:
    for rel, content in files.items():
        dest = base / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(dest, ckpt)
        elif isinstance(content, bytes):
            dest.write_bytes(content)
        else:
            dest.write_text(content)


def _checkpoint_files(base: Path) -> set[Path]:
    return {p for name in ("checkpoint.pt", "encoder.pt") for p in base.rglob(name)}


def doc_form(line: str, tmp_path: Path) -> str:
    """How the doc shows a message: the test's own tmp folder becomes `...`."""
    return line.replace(str(tmp_path), "...")


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id, marks=r.marks) for r in ROWS])
def test_bad_input(row: Row, tmp_path, monkeypatch, capsys, checkpoint_dir, store_template):
    monkeypatch.chdir(tmp_path)
    _clean_env(monkeypatch)
    # the row's own default MLflow store, ./mlflow.db: a copy of the template (its schema built once)
    monkeypatch.setenv("LEOCLR_HOME", str(tmp_path))
    shutil.copyfile(store_template, tmp_path / "mlflow.db")
    monkeypatch.setenv("LEOCLR_CACHE", str(tmp_path / "cache"))
    for var, value in row.env.items():
        monkeypatch.setenv(var, value)
    _write(tmp_path, row.files, checkpoint_dir)
    planted = _checkpoint_files(tmp_path)

    def guard(what: str) -> Callable:
        def refuse(*args, **kwargs):
            raise ComputeStarted(f"{row.id}: {what} was called: the bad input was not caught before compute")
        return refuse

    monkeypatch.setattr(ray, "init", guard("ray.init"))
    monkeypatch.setattr(Trainer, "train_epoch", guard("Trainer.train_epoch"))
    monkeypatch.setattr(Trainer, "save_checkpoint", guard("Trainer.save_checkpoint"))
    # the MLflow commands' work: a sweep's parent run, a registration, an encoder download or
    # evaluation, a report, the UI server
    monkeypatch.setattr(tracking.SweepTracker, "open", guard("SweepTracker.open"))
    monkeypatch.setattr("mlflow.register_model", guard("mlflow.register_model"))
    monkeypatch.setattr(evaluation, "download_encoder", guard("evaluation.download_encoder"))
    monkeypatch.setattr(trainables.eval, "evaluate_encoder", guard("evaluate_encoder"))
    for name in ("run_protocols", "run_transfer", "recalibrated_random_backbone"):
        monkeypatch.setattr(trainables.eval, name, guard(name))
    monkeypatch.setattr(report_command, "build_report", guard("build_report"))
    monkeypatch.setattr(subprocess, "call", guard("subprocess.call"))

    start = time.perf_counter()
    code = cli.main(list(row.argv))
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("leoclr: error: ")]
    shown = doc_form(errors[0], tmp_path) if errors else None

    assert code == row.code, f"exit status {code}, expected {row.code}\nstderr:\n{err}"
    assert len(errors) == 1, f"expected one `leoclr: error:` line, got:\n{err}"
    assert re.search(row.expect, errors[0]), f"{errors[0]!r} does not match {row.expect!r}"
    assert not ray.is_initialized()
    assert _checkpoint_files(tmp_path) == planted, "a checkpoint was written"
    assert elapsed < row.seconds, f"took {elapsed:.1f} s"
    documented = doc_rows().get(row.id)
    assert documented is not None, f"{row.id} is not in {DOC.name}; add:\n{shown}"
    assert documented["exit"] == str(row.code), f"{DOC.name} says exit {documented['exit']} for {row.id}"
    command = "leoclr " + " ".join(row.argv)
    shown_commands = [c.strip() for c in re.findall(r"(?<!`)`([^`]+)`(?!`)", documented["how"])]
    assert command in shown_commands, f"{DOC.name} should show the command `{command}` for {row.id}"
    assert matches_doc(documented["message"], shown), (
        f"{DOC.name} shows for {row.id}:\n  {documented['message']}\nbut the message is now:\n  {shown}")


# ---------------------------------------------------------------------------------------------
# The doc
# ---------------------------------------------------------------------------------------------
_DOC_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`([a-z0-9-]+)`\s*\|")


def _cells(line: str) -> list[str]:
    """Split a markdown table row on unescaped `|`."""
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [c.strip().replace("\\|", "|") for c in cells]


def _code_span(cell: str) -> str:
    match = re.fullmatch(r"(`+)\s?(.*?)\s?\1", cell)
    return match.group(2) if match else cell


def doc_rows() -> dict[str, dict[str, str]]:
    """{id: {number, what, how, message, exit}} of every catalogue row in docs/bad-inputs.md."""
    rows: dict[str, dict[str, str]] = {}
    for line in DOC.read_text().splitlines():
        if not _DOC_ROW.match(line):
            continue
        number, ident, what, how, message, exit_status = _cells(line)
        assert _code_span(ident) not in rows, f"{ident} twice in {DOC.name}"
        rows[_code_span(ident)] = {"number": number, "what": what, "how": how,
                                   "message": _code_span(message), "exit": exit_status}
    return rows


def matches_doc(documented: str, actual: str | None) -> bool:
    """The doc's message, with `...` standing for any text, is the whole actual message."""
    if actual is None:
        return False
    pattern = ".*?".join(re.escape(part) for part in documented.split("..."))
    return re.fullmatch(pattern, actual) is not None


def test_doc_and_table_agree():
    documented = doc_rows()
    assert sorted(documented) == sorted(ROW_IDS), (
        f"only in the test: {sorted(set(ROW_IDS) - set(documented))}; "
        f"only in {DOC.name}: {sorted(set(documented) - set(ROW_IDS))}")
    numbers = [int(r["number"]) for r in documented.values()]
    assert numbers == list(range(1, len(numbers) + 1)), f"{DOC.name}: rows must be numbered 1..N in order"
    assert len(ROWS) >= 30


def test_unreachable_ray_address_leaves_nothing_behind(tmp_path, monkeypatch, capsys, home):
    """`leoclr sweep smoke --address 127.0.0.1:9` starts nothing and writes nothing (no sweep
    folder, study or tracking run for a sweep that never ran)."""
    monkeypatch.chdir(tmp_path)
    _clean_env(monkeypatch)
    monkeypatch.setenv("LEOCLR_HOME", str(home))  # outside tmp_path: tmp_path must stay empty
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init was called"))
    assert cli.main(["sweep", "smoke", "--address", "127.0.0.1:9"]) == 2
    assert "cannot connect to the Ray cluster at '127.0.0.1:9'" in capsys.readouterr().err
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == []


@pytest.mark.parametrize("uri", [DEAD_SERVER, "mlruns"])
def test_refused_tracking_store_leaves_nothing_behind(uri, tmp_path, monkeypatch, capsys, home):
    """`leoclr sweep smoke --tracking-uri URI` with a store it refuses writes nothing: no sweep
    folder, no Optuna study (the exit status and message are the rows' business)."""
    monkeypatch.chdir(tmp_path)
    _clean_env(monkeypatch)
    monkeypatch.setenv("LEOCLR_HOME", str(home))  # outside tmp_path: tmp_path must stay empty
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init was called"))
    cli.main(["sweep", "smoke", "--tracking-uri", uri])
    capsys.readouterr()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == []
