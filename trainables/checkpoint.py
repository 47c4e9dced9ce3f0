"""The on-disk checkpoint format, one owner: writing, reading, listing and pruning checkpoints.

A training run writes one folder per checkpointed epoch, ``<dir>/epoch_NNNN/``, atomically (a
temporary ``.tmp_epoch_NNNN_*`` folder, then a rename), holding:

- ``checkpoint.pt``: everything a resume needs (``Trainer.state_dict``: format, epoch, step,
  config, both encoders, optimizer, queue, history, RNG), read with ``weights_only=True``;
- ``encoder.pt``: the query backbone alone, ``{"backbone": name, "state_dict": ..., "feature_dim":
  D}``, what evaluation and the model registry load (``load_encoder``);
- ``config.json``: the run's ``TrainConfig``; ``metrics.json``: the epoch's metrics;
  ``history.json``: every epoch's metrics so far (a tracker can replay a run from disk alone).

Ray Train's ``checkpoint_*`` folders hold the same files. Nothing outside this module opens
these files or parses their JSON: callers use the functions below.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from trainables.config import ConfigError, TrainConfig
from trainables.models import build_backbone
from trainables.validation import InputError

CHECKPOINT_FILE = "checkpoint.pt"
ENCODER_FILE = "encoder.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
#: Version of ``checkpoint.pt``'s layout; a file of another version is refused.
CHECKPOINT_FORMAT = 1
#: Settings that fix the shapes of the saved tensors: a checkpoint must agree on all of them.
STRUCTURAL_KEYS = ("backbone", "head", "embedding_dim", "mechanism", "queue_size")
#: Keys of ``encoder.pt``.
ENCODER_KEYS = ("backbone", "state_dict", "feature_dim")
_PARTIAL_PREFIX = ".tmp_epoch_"


class CheckpointError(InputError, RuntimeError):
    """A checkpoint that cannot be written, read, or used with this configuration. ``source`` is
    the file or folder, ``reason`` why; the message starts with the file."""


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def write_checkpoint(directory: str | Path, epoch: int, state: Mapping[str, Any], *,
                     encoder: nn.Module, config: TrainConfig,
                     history: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``directory/epoch_NNNN/`` atomically (temp dir + rename) and return it.

    state: ``checkpoint.pt``'s dict. encoder: the ``models.Encoder`` whose backbone becomes
    ``encoder.pt`` (``encoder.backbone``, ``encoder.feature_dim``; name ``config.backbone``).
    A write that fails (disk full, quota, storage gone) leaves no partial ``epoch_NNNN`` and
    raises ``CheckpointError``; an existing ``epoch_NNNN`` is replaced.
    """
    directory = Path(directory)
    final = directory / f"epoch_{epoch:04d}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_PARTIAL_PREFIX}{epoch:04d}_", dir=directory))
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoints there: {exc.strerror or exc}",
                              source=str(directory)) from None
    try:
        torch.save(dict(state), tmp / CHECKPOINT_FILE)
        torch.save({"backbone": config.backbone, "state_dict": encoder.backbone.state_dict(),
                    "feature_dim": encoder.feature_dim}, tmp / ENCODER_FILE)
        config.save(tmp / CONFIG_FILE)
        (tmp / METRICS_FILE).write_text(json.dumps(history[-1] if history else {}, indent=2))
        (tmp / HISTORY_FILE).write_text(json.dumps(list(history), indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot write the checkpoint ({exc.strerror or exc}); earlier "
                              "checkpoints are intact", source=str(final)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def remove_partial_writes(folder: str | Path) -> None:
    """Delete temporary folders of writes that were cut short (a kill during a save)."""
    for partial in Path(folder).glob(f"{_PARTIAL_PREFIX}*"):
        shutil.rmtree(partial, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint folder or its ``checkpoint.pt`` -> the ``checkpoint.pt`` path."""
    path = Path(path)
    return path / CHECKPOINT_FILE if path.is_dir() else path


def read_checkpoint_file(file: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True; unreadable/corrupt files raise CheckpointError naming it."""
    file = Path(file)
    if not file.exists():
        raise CheckpointError("checkpoint not found", source=str(file))
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle error, foreign object...
        text = str(exc).strip()
        # PyTorch's zip and weights-only errors run on for a paragraph: keep the first sentence
        reason = text.splitlines()[0].split(". ")[0].rstrip(".") if text else "no detail"
        raise CheckpointError(f"unreadable checkpoint ({type(exc).__name__}: {reason}); truncated, "
                              "corrupt or not written by leoclr", source=str(file)) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"not a leoclr checkpoint (format {CHECKPOINT_FORMAT} expected)",
                              source=str(file))
    return state


def check_structure(state: Mapping[str, Any], config: TrainConfig, file: str | Path) -> None:
    """Refuse a checkpoint whose saved config differs from ``config`` in a STRUCTURAL_KEYS
    setting (its tensors would not fit the model)."""
    saved = state.get("config", {})
    mismatched = [k for k in STRUCTURAL_KEYS if saved.get(k) != getattr(config, k)]
    if mismatched:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs config {getattr(config, k)!r}"
                           for k in mismatched)
        raise CheckpointError(f"checkpoint does not match this configuration ({detail})", source=str(file))


def _read_json(file: Path) -> Any:
    """The file's JSON, or None if it is missing or unreadable."""
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return None


def read_metrics(ckpt_dir: str | Path) -> dict[str, Any] | None:
    """The checkpointed epoch's metrics (``metrics.json``), or None if missing or unreadable."""
    metrics = _read_json(Path(ckpt_dir) / METRICS_FILE)
    return metrics if isinstance(metrics, dict) else None


def read_history(ckpt_dir: str | Path) -> list[dict[str, Any]]:
    """Every epoch's metrics up to the checkpointed one (``history.json``); [] if missing."""
    history = _read_json(Path(ckpt_dir) / HISTORY_FILE)
    return [e for e in history if isinstance(e, dict)] if isinstance(history, list) else []


def checkpoint_epoch(ckpt_dir: str | Path) -> int | None:
    """The epoch a checkpoint folder holds, or None if its metrics cannot be read."""
    epoch = (read_metrics(ckpt_dir) or {}).get("epoch")
    return int(epoch) if isinstance(epoch, (int, float)) else None


# ------------------------------------------------------------------------------------------------
# A folder of checkpoints
# ------------------------------------------------------------------------------------------------


def checkpoints_newest_first(folder: str | Path, below_epoch: int | None = None) -> list[Path]:
    """Checkpoint folders under `folder` (any that holds checkpoint.pt), newest epoch first;
    `below_epoch` keeps only older ones. Temporary folders of unfinished writes are skipped;
    a checkpoint whose metrics cannot be read counts as epoch -1 (tried last)."""
    found = []
    for ckpt in Path(folder).iterdir():
        if ckpt.is_dir() and not ckpt.name.startswith(".") and (ckpt / CHECKPOINT_FILE).exists():
            epoch = checkpoint_epoch(ckpt)
            epoch = -1 if epoch is None else epoch
            if below_epoch is None or epoch < below_epoch:
                found.append((epoch, ckpt.name, ckpt))
    return [c for _, _, c in sorted(found, reverse=True)]


def prune_checkpoints(folder: str | Path, metric: str, mode: str, keep: int) -> None:
    """Keep a run's `keep` best-scoring checkpoints plus its newest one, as Ray Train's
    CheckpointConfig(num_to_keep, checkpoint_score_attribute) does for Train runs.
    Checkpoints without the metric score last; ties keep the newer one."""
    found = checkpoints_newest_first(folder)
    sign = 1 if mode == "max" else -1

    def score(ckpt: Path) -> float:
        value = (read_metrics(ckpt) or {}).get(metric)
        return sign * value if isinstance(value, (int, float)) else float("-inf")

    kept = set(sorted(found, key=score, reverse=True)[:keep]) | set(found[:1])  # stable: newer first
    for ckpt in found:
        if ckpt not in kept:
            shutil.rmtree(ckpt, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# The trained encoder
# ------------------------------------------------------------------------------------------------


@dataclass
class LoadedEncoder:
    """A pre-trained backbone read back from a checkpoint folder.

    backbone: the module (``B x 3 x R x R -> B x feature_dim``), on the CPU, in eval mode, with
    plain BatchNorm2d layers (a SplitBatchNorm used in training has the same state dict).
    config: the run's ``TrainConfig`` (``config.resolved_view_size`` is the resolution R the
    backbone was trained at). source: the checkpoint folder.
    """

    backbone: nn.Module
    feature_dim: int
    config: TrainConfig
    source: Path


def load_encoder(directory: str | Path) -> LoadedEncoder:
    """Read ``encoder.pt`` + ``config.json`` of a checkpoint folder (``.../epoch_NNNN``, or its
    ``encoder.pt``).

    ``encoder.pt`` is read with ``torch.load(weights_only=True)`` only (no pickled code runs).
    The backbone is rebuilt with ``trainables.models.build_backbone`` (with the global RNG saved
    and restored, so loading does not change a caller's random stream) and loaded strictly.
    Missing, truncated or foreign files and a backbone that does not match raise
    ``CheckpointError`` naming the file.
    """
    path = Path(directory)
    folder = path.parent if path.is_file() and path.name == ENCODER_FILE else path
    if not folder.is_dir():
        raise CheckpointError(f"no such checkpoint folder (expected a folder holding {ENCODER_FILE} "
                              f"and {CONFIG_FILE}, as written by a training run)", source=str(folder))
    enc_file, cfg_file = folder / ENCODER_FILE, folder / CONFIG_FILE
    for file in (enc_file, cfg_file):
        if not file.is_file():
            raise CheckpointError(f"file not found; is {folder} a complete checkpoint folder?",
                                  source=str(file))
    config = _read_config(cfg_file)

    def bad(reason: str) -> CheckpointError:
        return CheckpointError(reason, source=str(enc_file))

    try:
        state = torch.load(enc_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, not a torch file, a pickled foreign object...
        raise bad(f"unreadable encoder file ({type(exc).__name__}: {exc}); the file is truncated "
                  "or was not written by a training run") from None
    if not isinstance(state, dict) or not all(k in state for k in ENCODER_KEYS):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise bad(f"not a leoclr encoder file (expected a dict with keys {', '.join(ENCODER_KEYS)}; "
                  f"found {found})")
    name = state["backbone"]
    if name != config.backbone:
        raise bad(f"backbone {name!r} does not match backbone={config.backbone!r} in {cfg_file}")
    try:
        with torch.random.fork_rng(devices=[]):  # random init we overwrite: keep the global RNG
            backbone, dim = build_backbone(name)
    except ValueError as exc:
        raise bad(str(exc)) from None
    if state["feature_dim"] != dim:
        raise bad(f"feature_dim={state['feature_dim']!r} but a {name} backbone has {dim} features")
    try:
        backbone.load_state_dict(state["state_dict"], strict=True)
    except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
        raise bad(f"the weights do not fit a {name} backbone: {exc}") from None
    backbone.eval()
    return LoadedEncoder(backbone=backbone, feature_dim=dim, config=config, source=folder)


def _read_config(cfg_file: Path) -> TrainConfig:
    """A checkpoint's ``config.json`` as a validated TrainConfig; errors name the file."""
    try:
        values = json.loads(cfg_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"unreadable run config ({type(exc).__name__}: {exc})",
                              source=str(cfg_file)) from None
    try:
        return TrainConfig.from_dict(values, source=str(cfg_file))
    except ConfigError as exc:  # its message already starts with the file name
        raise CheckpointError(exc.detail, source=str(cfg_file),
                              message=f"invalid run config: {exc}") from None
