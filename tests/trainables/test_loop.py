"""The per-worker loop: every strategy and mechanism trains, resume is exact, failures are clear."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainables.checkpoint import CHECKPOINT_FILE, CheckpointError
from trainables.config import ConfigError, TrainConfig
from trainables.loop import (
    DivergenceError,
    Trainer,
    lr_at,
    run_training,
)

TINY = dict(
    dataset="photo_patches",
    photo_patches={"train_per_class": 8, "test_per_class": 4},
    image_size=16,
    backbone="small_cnn",
    batch_size=32,
    queue_size=64,
    epochs=2,
    knn_k=10,
    bn_splits=2,
)


def tiny(**kw) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, **kw})


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LEOCLR_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.mark.parametrize(
    "overrides",
    [
        {"attraction_strategy": "leoclr"},
        {"attraction_strategy": "leoclr", "enqueue": "first"},
        {"attraction_strategy": "moco_v2"},
        {"attraction_strategy": "moco_v2", "symmetric": True, "head": "linear", "augmentation": "v1"},
        {"attraction_strategy": "leoclr_random_original"},
        {"attraction_strategy": "attract_all"},
        {"attraction_strategy": "leoclr", "mechanism": "end_to_end"},
        {"attraction_strategy": "moco_v2", "mechanism": "end_to_end"},
    ],
)
def test_every_strategy_trains_and_reports(overrides, tmp_path):
    reports = []
    final = run_training(tiny(epochs=1, **overrides), lambda m, c: reports.append((m, c)),
                         checkpoint_dir=str(tmp_path))
    (metrics, ckpt), = reports
    for key in ("loss", "val_knn_top1", "val_knn_top5", "test_knn_top1", "test_knn_top5", "rankme", "lr",
                "images_per_s", "epoch_time_s", "epoch"):
        assert key in metrics, key
    assert metrics["epoch"] == 1 and final == metrics
    assert 0 <= metrics["val_knn_top1"] <= 100 and metrics["loss"] > 0
    assert 1 <= metrics["rankme"] <= 256  # small_cnn: 256 features
    assert {CHECKPOINT_FILE, "encoder.pt", "config.json", "metrics.json", "history.json"} <= set(os.listdir(ckpt))
    assert json.loads(open(os.path.join(ckpt, "history.json")).read()) == [metrics]
    assert json.loads(open(os.path.join(ckpt, "config.json")).read())["attraction_strategy"] == overrides["attraction_strategy"]


def test_queue_receives_the_right_number_of_keys():
    for enqueue, expected in (("both", 2 * 32), ("first", 32)):
        trainer = Trainer(tiny(enqueue=enqueue, queue_size=1000))
        images = trainer.data.pretrain.images[:32]
        g, s = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        trainer.train_step(images, g, s)
        assert trainer.queue.ptr.item() == expected


def test_key_encoder_is_ema_of_query_after_a_step():
    trainer = Trainer(tiny(key_momentum=0.5))
    before_k = {k: v.clone() for k, v in trainer.key_encoder.state_dict().items()}
    images = trainer.data.pretrain.images[:32]
    trainer.train_step(images, torch.Generator().manual_seed(0), torch.Generator().manual_seed(0))
    q, k = trainer.query_encoder.state_dict(), trainer.key_encoder.state_dict()
    name = "head.2.weight"
    torch.testing.assert_close(k[name], 0.5 * before_k[name] + 0.5 * q[name])
    assert not torch.equal(k[name], before_k[name])


def test_lr_schedule_warmup_then_cosine():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0) == pytest.approx(0.5)  # half-way through the cosine
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)
    cfg = tiny(lr=0.06, batch_size=32)
    assert Trainer(cfg).base_lr == pytest.approx(0.06 * 32 / 256)  # linear scaling rule


class Crash(Exception):
    pass


def test_monitor_metrics_per_epoch_test_only_at_the_last(tmp_path):
    """val kNN and RankMe at every monitor epoch, test kNN at the last epoch only; the init
    metrics of knn_at_start carry the val names."""
    reports = []
    run_training(tiny(epochs=3, knn_every=2, knn_at_start=True), lambda m, c: reports.append(m),
                 checkpoint_dir=str(tmp_path))
    monitor = {"val_knn_top1", "val_knn_top5", "rankme"}
    test = {"test_knn_top1", "test_knn_top5"}
    first, second, last = reports
    assert {"val_knn_top1_init", "val_knn_top5_init", "rankme_init"} <= set(first)
    assert not (monitor | test) & set(first)  # epoch 1 is no monitor epoch with knn_every=2
    assert monitor <= set(second) and not test & set(second)
    assert (monitor | test) <= set(last)
    assert not any(k.startswith("knn_top") for m in reports for k in m)  # the old names are gone


def test_monitor_reads_val_for_selection_and_test_only_to_report(tmp_path):
    """Permuting the test labels changes test_knn_* only; val_knn_* and RankMe are unchanged."""
    trainer = Trainer(tiny())
    before = trainer.knn_eval(test=True)
    test = trainer.data.test
    perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    trainer.data.test = type(test)(test.images, test.labels[perm], test.classes)
    after = trainer.knn_eval(test=True)
    for key in ("val_knn_top1", "val_knn_top5", "rankme"):
        assert after[key] == before[key], key
    assert after["test_knn_top1"] != before["test_knn_top1"]


def test_monitor_rankme_reads_the_first_rankme_samples_val_features():
    from trainables.rankme import rankme

    trainer = Trainer(tiny(rankme_samples=5))
    backbone = trainer.query_encoder.backbone.eval()  # the monitor measures in eval mode
    feats, labels = trainer.monitor.features(backbone, trainer.data.val)
    backbone.train()
    assert torch.equal(labels, trainer.data.val.labels)  # split order
    assert trainer.knn_eval()["rankme"] == rankme(feats[:5])
    trainer.data.memory = trainer.data.memory.__class__(trainer.data.memory.images[:0],
                                                        trainer.data.memory.labels[:0], [])
    assert set(trainer.knn_eval(test=True)) == {"rankme"}  # no labelled bank: RankMe only


def test_resume_is_bit_for_bit(tmp_path):
    cfg = tiny(epochs=3)
    straight = Trainer(cfg)
    straight.fit(checkpoint_dir=tmp_path / "a")

    def crash_after_first_epoch(metrics, ckpt):
        raise Crash(ckpt)

    with pytest.raises(Crash) as crashed:  # the process "dies" right after epoch 1's checkpoint
        Trainer(cfg).fit(crash_after_first_epoch, checkpoint_dir=tmp_path / "b")
    ckpt = crashed.value.args[0]
    assert ckpt.endswith("epoch_0001")

    reports = []
    resumed = Trainer(cfg)
    resumed.load_checkpoint(ckpt)
    assert resumed.epoch == 1 and resumed.global_step == straight.steps_per_epoch
    resumed.fit(lambda m, c: reports.append(m), checkpoint_dir=tmp_path / "c")
    assert [m["epoch"] for m in reports] == [2, 3]
    assert [m["epoch"] for m in resumed.history] == [1, 2, 3]
    for a, b in ((straight.query_encoder, resumed.query_encoder), (straight.key_encoder, resumed.key_encoder)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name
    assert torch.equal(straight.queue.keys, resumed.queue.keys)
    assert straight.history[-1]["loss"] == resumed.history[-1]["loss"]
    for key in ("val_knn_top1", "test_knn_top1", "rankme"):
        assert straight.history[-1][key] == resumed.history[-1][key]


def test_resuming_a_finished_run_reports_its_final_metrics(tmp_path):
    cfg = tiny(epochs=1)
    done = Trainer(cfg)
    done.fit(checkpoint_dir=tmp_path)
    again = Trainer(cfg)
    again.load_checkpoint(tmp_path / "epoch_0001")
    reports = []
    again.fit(lambda m, c: reports.append((m, c)), checkpoint_dir=tmp_path / "more")
    assert reports == [(done.history[-1], None)]  # the result once more, nothing retrained


def test_divergence_fails_clearly():
    with pytest.raises(DivergenceError, match=r"loss is not finite .* at epoch 1"):
        run_training(tiny(lr=1e12, epochs=1, finite_check_every=1))


def test_corrupt_and_incompatible_checkpoints(tmp_path):
    trainer = Trainer(tiny(epochs=1))
    trainer.fit(checkpoint_dir=tmp_path)
    ckpt = tmp_path / "epoch_0001"
    other = Trainer(tiny(epochs=1, backbone="resnet18_cifar"))
    with pytest.raises(CheckpointError, match=r"epoch_0001/checkpoint.pt: checkpoint does not match .*backbone"):
        other.load_checkpoint(ckpt)
    data = (ckpt / CHECKPOINT_FILE).read_bytes()
    (ckpt / CHECKPOINT_FILE).write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match=r"checkpoint.pt: unreadable checkpoint"):
        Trainer(tiny(epochs=1)).load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        Trainer(tiny(epochs=1)).load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_write_is_atomic_and_keeps_last_n(tmp_path):
    run_training(tiny(epochs=3), checkpoint_dir=str(tmp_path), keep_checkpoints=2)
    assert sorted(os.listdir(tmp_path)) == ["epoch_0002", "epoch_0003"]  # no temp dirs left


def test_batch_not_divisible_by_splits_is_a_config_error():
    with pytest.raises(ConfigError, match="bn_splits=3"):
        Trainer(tiny(bn_splits=3))


# ------------------------------------------------------------------------------------------
def _ddp_trainer_worker(rank: int, tmp: str, cache: str) -> None:
    os.environ["LEOCLR_CACHE"] = cache
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=2)
    reports = []
    run_training(tiny(epochs=2, attraction_strategy="leoclr"),
                 lambda m, c: reports.append((m, c)), checkpoint_dir=f"{tmp}/ckpt")
    trainer_state = torch.load(reports[-1][1] + "/checkpoint.pt", weights_only=True) if rank == 0 else None
    torch.save({"reports": [m for m, _ in reports], "ckpts": [c for _, c in reports], "state": trainer_state},
               f"{tmp}/out{rank}.pt")
    dist.destroy_process_group()


def test_two_process_training_agrees_across_ranks(tmp_path):
    cache = os.environ["LEOCLR_CACHE"]
    mp.spawn(_ddp_trainer_worker, args=(str(tmp_path), cache), nprocs=2, join=True)
    outs = [torch.load(tmp_path / f"out{r}.pt", weights_only=False) for r in range(2)]
    assert [m["epoch"] for m in outs[0]["reports"]] == [1, 2] == [m["epoch"] for m in outs[1]["reports"]]
    assert outs[1]["ckpts"] == [None, None] and all(outs[0]["ckpts"])  # rank 0 writes checkpoints
    for key in ("loss", "val_knn_top1", "test_knn_top1", "rankme"):  # all-reduced / gathered: equal
        assert outs[0]["reports"][-1][key] == pytest.approx(outs[1]["reports"][-1][key])
    assert [m["epoch"] for m in outs[0]["state"]["history"]] == [1, 2]


# ------------------------------------------------------------------------------------------
# faults: a corrupt latest checkpoint, a full disk
def test_resume_falls_back_to_the_previous_good_checkpoint(tmp_path, capsys):
    ckpts = tmp_path / "ckpts"
    straight = run_training(tiny(epochs=3), checkpoint_dir=str(ckpts), keep_checkpoints=None)
    latest = ckpts / "epoch_0003" / CHECKPOINT_FILE
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated (a crash mid-copy, a bad disk)
    trainer = Trainer(tiny(epochs=3))
    used = trainer.resume(ckpts)  # the folder: newest first
    assert used == ckpts / "epoch_0002" and trainer.epoch == 2
    assert f"{latest}: unreadable checkpoint" in capsys.readouterr().out
    # and it trains the lost epoch again to the very same result (bit-exact resume)
    assert trainer.fit(checkpoint_dir=str(tmp_path / "again"))["loss"] == straight["loss"]


def test_resume_names_the_file_when_no_checkpoint_is_good(tmp_path):
    ckpts = tmp_path / "ckpts"
    run_training(tiny(epochs=1), checkpoint_dir=str(ckpts))
    bad = ckpts / "epoch_0001" / CHECKPOINT_FILE
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"{bad}: unreadable checkpoint"):
        Trainer(tiny(epochs=1)).resume(ckpts)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=f"{empty}: no checkpoint found"):
        Trainer(tiny(epochs=1)).resume(empty)


def test_a_full_disk_never_leaves_a_partial_checkpoint(tmp_path, monkeypatch):
    import errno

    import trainables.loop as loop_module

    ckpts = tmp_path / "ckpts"
    trainer = Trainer(tiny(epochs=2))
    trainer.epoch = 1
    trainer.history = [{"epoch": 1, "loss": 1.0}]
    good = trainer.save_checkpoint(ckpts)
    real_save = torch.save

    def full_disk(obj, path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"partial")  # some bytes made it, then the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loop_module.torch, "save", full_disk)
    trainer.epoch = 2
    with pytest.raises(CheckpointError, match=r"epoch_0002: cannot write the checkpoint \(No space left on device\)"):
        trainer.save_checkpoint(ckpts)
    monkeypatch.setattr(loop_module.torch, "save", real_save)
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_0001"]  # no epoch_0002, no temp dir
    assert Trainer(tiny(epochs=2)).resume(ckpts) == good


def test_unwritable_checkpoint_folder_is_named(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(CheckpointError, match=f"{blocker / 'ckpts'}: cannot write checkpoints there"):
        Trainer(tiny(epochs=1)).save_checkpoint(blocker / "ckpts")
