"""The on-disk checkpoint format (trainables.checkpoint): write, read, list, prune, load_encoder."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from trainables.checkpoint import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ENCODER_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    CheckpointError,
    checkpoint_epoch,
    checkpoints_newest_first,
    load_encoder,
    prune_checkpoints,
    read_checkpoint_file,
    read_history,
    read_metrics,
    remove_partial_writes,
)
from trainables.models import SplitBatchNorm, build_backbone


def fake_checkpoints(folder, scores: dict) -> None:
    """epoch_NNNN folders holding a placeholder checkpoint.pt and metrics {epoch, val_knn_top1}."""
    for epoch, score in scores.items():
        ckpt = folder / f"epoch_{epoch:04d}"
        ckpt.mkdir()
        (ckpt / CHECKPOINT_FILE).write_bytes(b"x")
        (ckpt / METRICS_FILE).write_text(json.dumps({"epoch": epoch, "val_knn_top1": score}))


# ------------------------------------------------------------------------------------------------
# a folder of checkpoints
# ------------------------------------------------------------------------------------------------


def test_prune_checkpoints_keeps_the_best_and_the_newest(tmp_path):
    """In-trial runs keep what Ray Train's CheckpointConfig(num_to_keep, score) keeps: the
    num_to_keep best-scoring checkpoints, plus the newest."""
    fake_checkpoints(tmp_path, {1: 30.0, 2: 50.0, 3: 40.0, 4: None, 5: 10.0})  # epoch 4: no kNN
    (tmp_path / ".tmp_epoch_0006_x").mkdir()  # a checkpoint being written is never touched
    prune_checkpoints(tmp_path, "val_knn_top1", "max", keep=2)  # best: 2 (50), 3 (40); newest: 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp_epoch_0006_x", "epoch_0002", "epoch_0003",
                                                          "epoch_0005"]
    prune_checkpoints(tmp_path, "val_knn_top1", "min", keep=1)  # lowest: 5 (10), also the newest
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["epoch_0005"]


def test_newest_first_skips_partial_writes_and_tries_unreadable_metrics_last(tmp_path):
    fake_checkpoints(tmp_path, {1: 1.0, 3: 3.0, 2: 2.0})
    (tmp_path / "checkpoint_000007").mkdir()  # Ray Train's naming, metrics cut off
    (tmp_path / "checkpoint_000007" / CHECKPOINT_FILE).write_bytes(b"x")
    (tmp_path / "checkpoint_000007" / METRICS_FILE).write_text("{\"epo")
    (tmp_path / "no_checkpoint").mkdir()
    (tmp_path / ".tmp_epoch_0004_abc").mkdir()
    (tmp_path / ".tmp_epoch_0004_abc" / CHECKPOINT_FILE).write_bytes(b"x")
    names = [p.name for p in checkpoints_newest_first(tmp_path)]
    assert names == ["epoch_0003", "epoch_0002", "epoch_0001", "checkpoint_000007"]
    assert [p.name for p in checkpoints_newest_first(tmp_path, below_epoch=3)] == ["epoch_0002", "epoch_0001",
                                                                                  "checkpoint_000007"]
    remove_partial_writes(tmp_path)
    assert not (tmp_path / ".tmp_epoch_0004_abc").exists() and (tmp_path / "epoch_0001").exists()


def test_metrics_and_history_readers(tmp_path):
    fake_checkpoints(tmp_path, {2: 7.5})
    ckpt = tmp_path / "epoch_0002"
    assert read_metrics(ckpt) == {"epoch": 2, "val_knn_top1": 7.5} and checkpoint_epoch(ckpt) == 2
    assert read_history(ckpt) == []  # no history.json
    (ckpt / HISTORY_FILE).write_text(json.dumps([{"epoch": 1}, {"epoch": 2}]))
    assert read_history(ckpt) == [{"epoch": 1}, {"epoch": 2}]
    (ckpt / METRICS_FILE).write_text("not json")
    assert read_metrics(ckpt) is None and checkpoint_epoch(ckpt) is None
    assert read_metrics(tmp_path / "missing") is None and read_history(tmp_path / "missing") == []


# ------------------------------------------------------------------------------------------------
# a written checkpoint
# ------------------------------------------------------------------------------------------------


def test_a_written_checkpoint_holds_every_file(trained_checkpoint):
    assert {CHECKPOINT_FILE, ENCODER_FILE, CONFIG_FILE, METRICS_FILE, HISTORY_FILE} <= {
        p.name for p in trained_checkpoint.iterdir()}
    state = read_checkpoint_file(trained_checkpoint / CHECKPOINT_FILE)
    assert state["epoch"] == 1 and state["config"]["backbone"] == "small_cnn"
    assert read_history(trained_checkpoint) == state["history"] == [read_metrics(trained_checkpoint)]
    assert checkpoint_epoch(trained_checkpoint) == 1


def test_read_checkpoint_file_errors_carry_the_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError) as info:
        read_checkpoint_file(missing)
    assert (info.value.source, info.value.reason) == (str(missing), "checkpoint not found")
    assert str(info.value) == f"{missing}: checkpoint not found"
    assert isinstance(info.value, ValueError) and isinstance(info.value, RuntimeError)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": 99}, foreign)
    with pytest.raises(CheckpointError, match="not a leoclr checkpoint"):
        read_checkpoint_file(foreign)


# ------------------------------------------------------------------------------------------------
# load_encoder
# ------------------------------------------------------------------------------------------------


def test_load_encoder_round_trip(trained_checkpoint):
    saved = torch.load(trained_checkpoint / "encoder.pt", map_location="cpu", weights_only=True)
    rng = torch.get_rng_state()
    enc = load_encoder(trained_checkpoint)
    assert torch.equal(torch.get_rng_state(), rng)
    assert enc.feature_dim == saved["feature_dim"] == 256 and enc.source == trained_checkpoint
    assert enc.config.backbone == "small_cnn" and enc.config.bn_splits == 2
    assert not enc.backbone.training
    # trained with SplitBatchNorm; loaded into the plain backbone with the same statistics
    assert not any(isinstance(m, SplitBatchNorm) for m in enc.backbone.modules())
    state = enc.backbone.state_dict()
    assert state.keys() == saved["state_dict"].keys()
    assert all(torch.equal(state[k], v) for k, v in saved["state_dict"].items())
    assert any(k.endswith("num_batches_tracked") and v.item() > 0 for k, v in state.items())
    assert load_encoder(trained_checkpoint / "encoder.pt").feature_dim == 256  # the file works too
    # features agree with a fresh backbone given the saved weights
    ref, _ = build_backbone("small_cnn")
    ref.load_state_dict(saved["state_dict"])
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(ref.eval()(x), enc.backbone(x))


def test_load_encoder_refuses_broken_folders(trained_checkpoint, tmp_path):
    def copy(name: str):
        dst = tmp_path / name
        shutil.copytree(trained_checkpoint, dst)
        return dst

    truncated = copy("truncated")
    blob = (truncated / "encoder.pt").read_bytes()
    (truncated / "encoder.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match=r"truncated[/\\]encoder\.pt: unreadable"):
        load_encoder(truncated)

    no_config = copy("no_config")
    (no_config / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"no_config[/\\]config\.json: file not found"):
        load_encoder(no_config)

    foreign = copy("foreign")
    torch.save({"weights": torch.zeros(2)}, foreign / "encoder.pt")
    with pytest.raises(CheckpointError, match=r"foreign[/\\]encoder\.pt: not a leoclr encoder"):
        load_encoder(foreign)

    mismatch = copy("mismatch")
    cfg = json.loads((mismatch / "config.json").read_text())
    cfg["backbone"] = "resnet18_cifar"
    (mismatch / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"encoder\.pt: backbone 'small_cnn' does not match.*resnet18_cifar"):
        load_encoder(mismatch)

    wrong_weights = copy("wrong_weights")
    state = torch.load(wrong_weights / "encoder.pt", weights_only=True)
    state["state_dict"].pop(next(iter(state["state_dict"])))
    torch.save(state, wrong_weights / "encoder.pt")
    with pytest.raises(CheckpointError, match=r"wrong_weights[/\\]encoder\.pt: the weights do not fit"):
        load_encoder(wrong_weights)

    with pytest.raises(CheckpointError, match="no such checkpoint folder") as info:
        load_encoder(tmp_path / "missing")
    assert info.value.source == str(tmp_path / "missing")

    bad_config = copy("bad_config")
    cfg = json.loads((bad_config / "config.json").read_text())
    cfg["temperature"] = -1
    (bad_config / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"^invalid run config: .*config\.json: temperature=-1\.0") as info:
        load_encoder(bad_config)
    assert info.value.source == str(bad_config / "config.json")
