"""LinearProtocol (trainables.eval.protocol): the schedule, the small-data scaling, validation."""

from __future__ import annotations

import json
import math

import pytest

from trainables.eval import EvaluationError, LinearProtocol, ProtocolError


def test_lr_schedule_steps_at_60_and_80_percent():
    p = LinearProtocol()
    assert (p.epochs, p.batch_size, p.lr, p.momentum, p.weight_decay) == (100, 256, 30.0, 0.9, 0.0)
    assert p.milestone_epochs() == (60, 80)
    assert [p.lr_at(e) for e in (0, 59)] == [30.0, 30.0]
    assert p.lr_at(60) == pytest.approx(3.0) and p.lr_at(79) == pytest.approx(3.0)
    assert p.lr_at(80) == pytest.approx(0.3) and p.lr_at(99) == pytest.approx(0.3)
    short = LinearProtocol(epochs=10)
    assert short.milestone_epochs() == (6, 8)
    assert [short.lr_at(e) for e in range(10)] == pytest.approx([30.0] * 6 + [3.0] * 2 + [0.3] * 2)


def test_for_dataset_size_scales_batch_and_lr_linearly():
    assert LinearProtocol.for_dataset_size(1_281_167) == LinearProtocol()
    assert LinearProtocol.for_dataset_size(2048) == LinearProtocol()  # 8 steps of 256
    digits = LinearProtocol.for_dataset_size(1437)
    assert (digits.batch_size, digits.lr, digits.epochs) == (128, 15.0, 100)
    tiny = LinearProtocol.for_dataset_size(128)
    assert (tiny.batch_size, tiny.lr) == (16, 1.875)
    assert LinearProtocol.for_dataset_size(3).batch_size == 1
    cheap = LinearProtocol.for_dataset_size(1437, epochs=10, augment="none")
    assert (cheap.batch_size, cheap.lr, cheap.epochs, cheap.augment) == (128, 15.0, 10, "none")
    explicit = LinearProtocol.for_dataset_size(1437, batch_size=64)
    assert (explicit.batch_size, explicit.lr) == (64, 30.0)


@pytest.mark.parametrize(
    "field, value",
    [
        ("epochs", 0),
        ("epochs", True),
        ("batch_size", 2.5),
        ("lr", 0.0),
        ("lr", math.nan),
        ("momentum", 1.0),
        ("weight_decay", -1e-4),
        ("lr_milestones", (0.8, 0.6)),
        ("lr_milestones", (0.6, 1.5)),
        ("lr_decay", 0.0),
        ("augment", "jitter"),
        ("train_crop_scale", (0.5, 0.2)),
        ("random_crop_scale", (0.0, 1.0)),
        ("flip_prob", 1.5),
        ("test_crop_fraction", 0.0),
        ("random_crop_repeats", 0),
        ("seed", -1),
        ("amp", "fp8"),
        ("loader_workers", -2),
    ],
)
def test_protocol_validation_names_the_field(field, value):
    with pytest.raises(ProtocolError) as info:
        LinearProtocol(**{field: value})
    assert f"LinearProtocol.{field}={value!r}" in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, EvaluationError)


def test_protocol_from_dict_and_to_dict():
    p = LinearProtocol.from_dict({"epochs": 10, "lr_milestones": [0.5], "train_crop_scale": [0.2, 1.0]})
    assert p.lr_milestones == (0.5,) and p.train_crop_scale == (0.2, 1.0)
    assert LinearProtocol.from_dict(p.to_dict()) == p
    assert json.loads(json.dumps(p.to_dict()))["lr_milestones"] == [0.5]
    with pytest.raises(ProtocolError, match="unknown field.*'epoch'"):
        LinearProtocol.from_dict({"epoch": 10})
    with pytest.raises(ProtocolError, match=r"^evaluate: LinearProtocol\.epochs=0: must be an integer"):
        LinearProtocol.from_dict({"epochs": 0}, source="evaluate")
    with pytest.raises(ProtocolError, match="n_train=0"):
        LinearProtocol.for_dataset_size(0)


def test_protocol_errors_carry_their_fields():
    with pytest.raises(ProtocolError) as info:
        LinearProtocol.from_dict({"lr": -1.0}, source="evaluate --set")
    err = info.value
    assert (err.source, err.key, err.value) == ("evaluate --set", "LinearProtocol.lr", -1.0)
    assert err.reason == "must be a finite number > 0"
    assert str(err) == "evaluate --set: LinearProtocol.lr=-1.0: must be a finite number > 0"
